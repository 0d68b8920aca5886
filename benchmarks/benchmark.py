#!/usr/bin/env python
"""GFLOPs (fvcore) and inference latency of Sparse DETR models, over keeping ratios and configs.

    # the paper's Table 1 rows: R-50 dense baseline and Sparse DETR at rho 0.1-0.5 (dynamic sparsification)
    python benchmarks/benchmark.py --flops \\
        --config-file deformable_detr_plus_r50_50ep sparse_detr_r50_rho0.1_50ep \\
        --rho 0.1 0.2 0.3 0.4 0.5 --json out/flops_r50.json --plot out/flops_r50.png
    # CPU latency, 2 threads, median of 10 runs after 2 warm-up runs
    python benchmarks/benchmark.py --latency --config-file sparse_detr_r50_rho0.1_50ep \\
        --device cpu --threads 2 --num-runs 10 --warmup 2

FLOPs are counted as the official code (kakaobrain/sparse-detr ``util/benchmark.py``) counts them: fvcore
``FlopCountAnalysis`` on one random 3x850x1040 image in eval mode (``--image-size`` changes it;
``--dataset NAME --num-images K`` averages over dataset images instead), one fused multiply-add = one
FLOP, the deformable attention counted by the handle of ``sparse_detr.layers`` (the official grid_sample
count), and:

* ``aten::batch_norm`` is not counted: the official FrozenBatchNorm2d is an elementwise affine that fvcore
  ignores, while Detectron2's FrozenBatchNorm2d calls ``batch_norm`` under ``no_grad``;
* ``aten::scaled_dot_product_attention`` (the decoder's self-attention, timm's Swin windows) is counted as
  its two matrix products, as fvcore counts the explicit ``bmm``/``matmul`` of the official attention.

A config is a file (LazyConfig ``.py``/``.yaml`` or yacs ``.yaml``) or a model-zoo name; ``--rho`` sets the
inference keeping ratio of each model (dense models, without a scorer, give one row at rho = 1).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import re
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from detectron2.utils.analysis import FlopCountAnalysis
from detectron2.utils.logger import setup_logger
from fvcore.nn.jit_handles import get_shape
from tqdm import tqdm

from sparse_detr.config.arguments import keep_ratio, non_negative_int, positive_int
from sparse_detr.config.validation import check_option_order
from sparse_detr.data.build import build_dataset_test_loader
from sparse_detr.evaluation.size_groups import SameSizeBatches
from sparse_detr.layers.flops import add_msda_flop_handle
from sparse_detr.model_zoo.model_zoo import build_model_from_config
from sparse_detr.model_zoo.tool_configs import config_label, load_tool_config
from sparse_detr.utils.cli import run_tool
from sparse_detr.utils.files import atomic_output, atomic_write, refuse_overwriting_inputs

logger = logging.getLogger("sparse_detr.benchmark")

# the image the official benchmark counts FLOPs on (``compute_gflops(approximated=True)``)
OFFICIAL_IMAGE_SIZE = (850, 1040)

# paper GFLOPs at 3x850x1040 (Table 1; Table 3 for the R-50 scorer ablations), for 6-layer encoders:
# (backbone, scorer, rho) -> GFLOPs. "dense" = Deformable DETR+ (rho = 1), "no_encoder" = rho 0.
PAPER_GFLOPS = {
    ("r50", "dense", 1.0): 177.0,
    ("r50", "no_encoder", 0.0): 91.0,
    **{("r50", "dam", rho): g for rho, g in zip((0.1, 0.2, 0.3, 0.4, 0.5), (105, 113, 121, 128, 136))},
    **{("r50", "objectness", rho): g for rho, g in zip((0.1, 0.2, 0.3, 0.4, 0.5), (106, 114, 121, 129, 136))},
    **{("r50", "random", rho): g for rho, g in zip((0.1, 0.2, 0.3, 0.4, 0.5), (102, 110, 117, 125, 133))},
    ("swint", "dense", 1.0): 185.0,
    **{("swint", "dam", rho): g for rho, g in zip((0.1, 0.2, 0.3, 0.4, 0.5), (113, 121, 129, 136, 144))},
}
PAPER_ENCODER_LAYERS = 6
SCORER_KINDS = {"DAMScorer": "dam", "ObjectnessScorer": "objectness", "RandomScorer": "random"}

# top-level child of SparseDETR -> row of the by-module table
MODULE_GROUPS = {
    "backbone": "backbone",
    "neck": "input_projection",
    "token_scorer": "scorer",
    "encoder": "encoder",
    "decoder": "decoder",
    "query_init": "heads",
    "heads": "heads",
}
GROUP_NAMES = ("backbone", "input_projection", "scorer", "encoder", "decoder", "heads")
SHARED_PROJECTION = "token_projection"
USAGE = f"{Path(__file__).name} --config-file CONFIG [--flops] [--latency] [options]"


# ---------------------------------------------------------------------------------------------- FLOPs
def sdpa_flop_jit(inputs, outputs) -> int:
    """fvcore handle for ``aten::scaled_dot_product_attention``: the two matmuls, Q K^T and A V.

    query (..., L, E), key (..., S, E), value (..., S, Ev) -> prod(...) * L * S * (E + Ev).
    """
    query, key, value = (get_shape(inputs[i]) for i in range(3))
    return math.prod(query[:-2]) * query[-2] * key[-2] * (query[-1] + value[-1])


def _not_counted(inputs, outputs) -> int:
    return 0


def official_flop_analysis(model: torch.nn.Module, batched_inputs: list[dict]) -> FlopCountAnalysis:
    """A Detectron2 ``FlopCountAnalysis`` set up to count like the official benchmark (module docstring)."""
    analysis = FlopCountAnalysis(model, batched_inputs)
    add_msda_flop_handle(analysis)
    analysis.set_op_handle(
        **{"aten::batch_norm": _not_counted, "aten::scaled_dot_product_attention": sdpa_flop_jit}
    )
    analysis.unsupported_ops_warnings(False)
    analysis.uncalled_modules_warnings(False)
    analysis.tracer_warnings("none")
    return analysis


class _CallOrder:
    """Records, during a forward, the order of calls to the shared token projection and to the encoder."""

    def __init__(self, model: torch.nn.Module):
        self.events: list[tuple[str, int]] = []
        self.handles = []
        for name in (SHARED_PROJECTION, "encoder"):
            module = getattr(model, name, None)
            if module is not None:
                self.handles.append(module.register_forward_hook(self._hook(name)))

    def _hook(self, name):
        def record(module, inputs, output):
            # int(): under the JIT tracer numel() is a traced value
            numel = int(output.numel()) if isinstance(output, torch.Tensor) else 0
            self.events.append((name, numel))

        return record

    def projection_share_before_encoder(self) -> float:
        """Share of the projection's work done before the encoder ran (i.e. feeding the scorer)."""
        before, total, encoder_seen = 0, 0, False
        for name, numel in self.events:
            if name == "encoder":
                encoder_seen = True
            else:
                total += numel
                before += 0 if encoder_seen else numel
        return before / total if total else 0.0

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def count_gflops(model: torch.nn.Module, batched_inputs: list[dict]) -> tuple[float, dict[str, float]]:
    """GFLOPs of one inference on ``batched_inputs``: (total, by module group).

    The token projection is shared: its calls before the encoder feed the token scorer ("scorer"), the call
    after it feeds the two-stage head ("heads"). FLOPs outside the known modules go to "other".
    """
    order = _CallOrder(model)
    try:
        with torch.no_grad():
            analysis = official_flop_analysis(model, batched_inputs)
            total = analysis.total()
            by_module = analysis.by_module()
    finally:
        order.remove()
    # fvcore names modules relative to the traced wrapper ("model.backbone", ...)
    prefix = "model." if "model" in by_module else ""
    groups = dict.fromkeys(GROUP_NAMES, 0.0)
    attributed = 0
    for name, _ in model.named_children():
        flops = by_module.get(prefix + name, 0)
        attributed += flops
        if name == SHARED_PROJECTION:
            share = order.projection_share_before_encoder()
            groups["scorer"] += flops * share
            groups["heads"] += flops * (1.0 - share)
        else:
            group = MODULE_GROUPS.get(name, "other")
            groups[group] = groups.get(group, 0.0) + flops
    if total - attributed:
        groups["other"] = groups.get("other", 0.0) + (total - attributed)
    return total / 1e9, {name: flops / 1e9 for name, flops in groups.items()}


# -------------------------------------------------------------------------------------------- latency
@dataclass
class LatencyStats:
    """Wall seconds per inference call over ``runs`` timed runs, and the median process CPU seconds.

    On a shared machine the CPU time (all threads of this process) is the steadier of the two.
    """

    median: float
    p25: float
    p75: float
    minimum: float
    maximum: float
    cpu_median: float
    runs: int


def measure_latency(
    model: torch.nn.Module, batches: list[list[dict]], num_runs: int, warmup: int, desc: str = "latency"
) -> LatencyStats:
    """Time ``model(batch)`` ``num_runs`` times (cycling over ``batches``) after ``warmup`` untimed runs."""
    if num_runs < 1 or warmup < 0:
        raise ValueError(f"--num-runs must be >= 1 and --warmup >= 0, got {num_runs} and {warmup}")
    cuda = next(model.parameters()).device.type == "cuda"
    times, cpu_times = [], []
    with torch.no_grad():
        for step in tqdm(range(warmup + num_runs), desc=desc, leave=False, file=sys.stderr):
            batch = batches[step % len(batches)]
            if cuda:
                torch.cuda.synchronize()
            start, cpu_start = time.perf_counter(), time.process_time()
            model(batch)
            if cuda:
                torch.cuda.synchronize()
            if step >= warmup:
                times.append(time.perf_counter() - start)
                cpu_times.append(time.process_time() - cpu_start)
    quartiles = statistics.quantiles(times, n=4, method="inclusive") if len(times) > 1 else [times[0]] * 3
    return LatencyStats(
        median=statistics.median(times),
        p25=quartiles[0],
        p75=quartiles[2],
        minimum=min(times),
        maximum=max(times),
        cpu_median=statistics.median(cpu_times),
        runs=len(times),
    )


# ---------------------------------------------------------------------------------------------- inputs
def random_images(height: int, width: int, count: int, seed: int = 0) -> list[dict]:
    """``count`` Detectron2 inputs holding random 0-255 images of (height, width)."""
    generator = torch.Generator().manual_seed(seed)
    return [
        {"image": torch.randint(0, 256, (3, height, width), generator=generator).float()}
        for _ in range(count)
    ]


def dataset_images(cfg, dataset: str, count: int) -> list[dict]:
    """The first ``count`` test inputs of ``dataset`` through the config's test loader (resize included)."""
    loader = build_dataset_test_loader(cfg, dataset)
    images = []
    for batch in loader:
        images.extend({"image": x["image"].float()} for x in batch)
        if len(images) >= count:
            break
    if not images:
        raise ValueError(f"--dataset {dataset}: no images")
    return images[:count]


# -------------------------------------------------------------------------------------------- the runs
@dataclass
class BenchmarkRow:
    """One line of the results (the ``--json`` schema); absent measurements are None."""

    config: str
    rho: float
    image_size: list[int]
    gflops_total: float | None
    gflops_by_module: dict[str, float] | None
    latency_s_median: float | None
    params_m: float
    paper_gflops: float | None = field(default=None, repr=False)  # printed, not part of the JSON schema

    def to_json(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "paper_gflops"}


def apply_inference_keep_ratio(model: torch.nn.Module, rho: float | None) -> float:
    """Set the inference keeping ratio (None = the config's own) and return the ratio in effect.

    Dense models (no scorer) run at 1.0, the "no encoder" model at 0.0; asking them for another rho fails.
    """
    scorer = getattr(model, "token_scorer", None)
    encoder_layers = getattr(getattr(model, "encoder", None), "num_layers", 1)
    if scorer is None:
        effective = 0.0 if encoder_layers == 0 else 1.0
        if rho is not None and not math.isclose(rho, effective):
            raise ValueError(f"--rho {rho}: this model has no token scorer (it runs at rho = {effective})")
        return effective
    if rho is not None:
        model.set_keep_ratio(rho)
    return scorer.keep_ratio if encoder_layers else 0.0


def trainable_params_m(model: torch.nn.Module) -> float:
    """Millions of trainable parameters (the official benchmark's #Params)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad) / 1e6


def check_benchmark_images(model: torch.nn.Module, images: list[dict], source: str) -> None:
    """Refuse images too small for the model (named by ``source``) before FLOPs and latency: the FLOP count
    traces the model, which skips the model's own size check."""
    if not hasattr(model, "check_image_size"):
        return
    for x in images:
        try:
            model.check_image_size(*x["image"].shape[-2:], source)
        except ValueError as error:
            raise SystemExit(str(error)) from error


def benchmark_config(path_or_name: str, args) -> list[BenchmarkRow]:
    """All rows of one config: one per ``--rho`` value (or one at the config's own rho)."""
    cfg = load_tool_config(path_or_name, args.opts, usage=USAGE)
    torch.manual_seed(0)
    model = build_model_from_config(cfg, device="cpu")
    label = config_label(path_or_name)
    if args.dataset:
        images = dataset_images(cfg, args.dataset, args.num_images)
        check_benchmark_images(model, images, f"an image of --dataset {args.dataset}")
    else:
        images = random_images(*args.image_size, count=max(args.batch_size, 1))
        check_benchmark_images(model, images, f"--image-size {args.image_size[0]} {args.image_size[1]}")
    image_size = [
        round(statistics.mean(x["image"].shape[-2] for x in images)),
        round(statistics.mean(x["image"].shape[-1] for x in images)),
    ]
    has_scorer = getattr(model, "token_scorer", None) is not None
    rhos = args.rho if (args.rho and has_scorer) else [None]
    rows = []
    for rho in rhos:
        effective_rho = apply_inference_keep_ratio(model, rho)
        gflops_total, by_module = None, None
        if args.flops:
            model.to("cpu")
            counts = [count_gflops(model, [x]) for x in tqdm(images, desc=f"{label} flops", leave=False)]
            gflops_total = statistics.mean(total for total, _ in counts)
            by_module = {k: statistics.mean(c[1].get(k, 0.0) for c in counts) for k in counts[0][1]}
        latency = None
        if args.latency:
            model.to(args.device)
            batches = [
                [{"image": x["image"].to(args.device)} for x in images[i : i + args.batch_size]]
                for i in range(0, len(images), args.batch_size)
            ]
            latency = measure_latency(  # mixed sizes: one pass per size, as evaluation runs them
                SameSizeBatches(model), batches, args.num_runs, args.warmup,
                desc=f"{label} rho={effective_rho:g}",
            )
            model.to("cpu")
        row = BenchmarkRow(
            config=label,
            rho=effective_rho,
            image_size=image_size,
            gflops_total=gflops_total,
            gflops_by_module=by_module,
            latency_s_median=latency.median if latency else None,
            params_m=trainable_params_m(model),
            paper_gflops=paper_gflops(model, label, effective_rho, image_size),
        )
        rows.append(row)
        print_row(row, latency)
    return rows


# -------------------------------------------------------------------------------------------- reports
def backbone_key(config: str) -> str | None:
    match = re.search(r"_(r50|swint)_", config)
    return match.group(1) if match else None


def paper_gflops(model: torch.nn.Module, config: str, rho: float, image_size: list[int]) -> float | None:
    """The paper's GFLOPs for this model at this rho (same backbone, scorer, 6 encoder layers), else None."""
    num_layers = getattr(getattr(model, "encoder", None), "num_layers", None)
    if tuple(image_size) != OFFICIAL_IMAGE_SIZE or num_layers not in (0, PAPER_ENCODER_LAYERS):
        return None
    if num_layers == 0:
        kind = "no_encoder"
    elif math.isclose(rho, 1.0):
        kind = "dense"
    else:
        kind = SCORER_KINDS.get(type(getattr(model, "token_scorer", None)).__name__)
    return PAPER_GFLOPS.get((backbone_key(config), kind, round(rho, 3)))


def _fmt(value: float | None, spec: str | None = None) -> str:
    """``spec`` or, by default, one decimal from 10 up and three significant digits below."""
    if value is None:
        return "-"
    return format(value, spec or (".1f" if abs(value) >= 10 else ".3g"))


def print_row(row: BenchmarkRow, latency: LatencyStats | None) -> None:
    parts = [f"{row.config}  rho={row.rho:g}  image={row.image_size[0]}x{row.image_size[1]}"]
    if row.gflops_total is not None:
        modules = ", ".join(f"{k} {v:.2f}" for k, v in row.gflops_by_module.items())
        parts.append(f"GFLOPs {row.gflops_total:.2f} ({modules})")
        paper = row.paper_gflops
        if paper:
            parts.append(f"paper {paper:.0f} G ({100 * (row.gflops_total / paper - 1):+.1f}%)")
    if latency is not None:
        parts.append(
            f"latency median {latency.median:.3f} s (p25 {latency.p25:.3f}, p75 {latency.p75:.3f}, "
            f"min {latency.minimum:.3f}, max {latency.maximum:.3f}, {latency.runs} runs; "
            f"process CPU time median {latency.cpu_median:.3f} s)"
        )
    parts.append(f"params {row.params_m:.1f} M")
    print(" | ".join(parts), flush=True)


def markdown_table(rows: list[BenchmarkRow]) -> str:
    """Rows as a Markdown table, with the paper's GFLOPs and the encoder's reduction against rho = 1."""
    dense_encoder = {
        backbone_key(r.config): r.gflops_by_module["encoder"]
        for r in rows
        if r.gflops_by_module and math.isclose(r.rho, 1.0)
    }
    header = (
        "| config | rho | GFLOPs | paper | diff | backbone | input proj. | scorer | encoder | "
        "enc. vs dense | decoder | heads | latency (s) | params (M) |"
    )
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for r in rows:
        m = r.gflops_by_module or {}
        paper = r.paper_gflops
        diff = f"{100 * (r.gflops_total / paper - 1):+.1f}%" if paper and r.gflops_total else "-"
        dense = dense_encoder.get(backbone_key(r.config))
        reduction = "-"
        if dense and m and not math.isclose(r.rho, 1.0):
            reduction = f"-{100 * (1 - m['encoder'] / dense):.1f}%"
        lines.append(
            f"| {r.config} | {r.rho:g} | {_fmt(r.gflops_total)} | {_fmt(paper, '.0f')} | {diff} | "
            f"{_fmt(m.get('backbone'))} | {_fmt(m.get('input_projection'))} | {_fmt(m.get('scorer'))} | "
            f"{_fmt(m.get('encoder'))} | {reduction} | {_fmt(m.get('decoder'))} | {_fmt(m.get('heads'))} | "
            f"{_fmt(r.latency_s_median, '.3f')} | {r.params_m:.1f} |"
        )
    return "\n".join(lines)


def plot_rows(rows: list[BenchmarkRow], path: str) -> None:
    """GFLOPs and latency against rho, one line per config."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = [("gflops_total", "GFLOPs"), ("latency_s_median", "latency (s, median)")]
    metrics = [(key, title) for key, title in metrics if any(getattr(r, key) is not None for r in rows)]
    if not metrics:
        raise ValueError("--plot needs --flops and/or --latency")
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.5 * len(metrics), 4), squeeze=False)
    for ax, (key, title) in zip(axes[0], metrics):
        for config in dict.fromkeys(r.config for r in rows):
            points = sorted((r.rho, getattr(r, key)) for r in rows if r.config == config)
            points = [(x, y) for x, y in points if y is not None]
            ax.plot(*zip(*points), marker="o", label=config)
        if key == "gflops_total":
            for backbone in dict.fromkeys(backbone_key(r.config) for r in rows):
                paper = sorted(
                    (rho, g)
                    for (b, kind, rho), g in PAPER_GFLOPS.items()
                    if b == backbone and kind in ("dense", "dam")
                )
                if paper and all(tuple(r.image_size) == OFFICIAL_IMAGE_SIZE for r in rows):
                    ax.plot(*zip(*paper), "k--", marker="x", alpha=0.5, label=f"paper ({backbone})")
        ax.set_xlabel("keeping ratio rho (inference)")
        ax.set_ylabel(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("Sparse DETR: cost against the keeping ratio")
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path) as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)


# ------------------------------------------------------------------------------------------------ CLI
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--config-file", nargs="+", required=True, metavar="CONFIG", help="config files or model-zoo names"
    )
    parser.add_argument("--flops", action="store_true", help="count GFLOPs with fvcore")
    parser.add_argument("--latency", action="store_true", help="time inference")
    parser.add_argument("--rho", type=keep_ratio, nargs="+", help="inference keeping ratios to sweep")
    parser.add_argument(
        "--image-size", type=positive_int, nargs=2, metavar=("H", "W"), default=OFFICIAL_IMAGE_SIZE
    )
    parser.add_argument("--dataset", help="use the first --num-images test images of this registered dataset")
    parser.add_argument("--num-images", type=positive_int, default=100)
    parser.add_argument("--batch-size", type=positive_int, default=1, help="images per latency call")
    parser.add_argument("--num-runs", type=positive_int, default=10, help="timed latency runs")
    parser.add_argument("--warmup", type=non_negative_int, default=2, help="untimed latency runs first")
    parser.add_argument("--threads", type=positive_int, help="torch CPU threads (default: torch's)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--json", help="write all rows to this JSON file")
    parser.add_argument("--plot", help="write GFLOPs/latency against rho to this PNG")
    parser.add_argument(
        "opts", nargs=argparse.REMAINDER, help="config overrides: key=value (LazyConfig) or KEY VALUE"
    )
    return parser


def main(argv: list[str] | None = None) -> list[BenchmarkRow]:
    args = build_parser().parse_args(argv)
    setup_logger(name="sparse_detr")  # the project's log messages on the console
    check_option_order(args.opts, USAGE)  # before the other checks: a misplaced option looks absent
    if not (args.flops or args.latency):
        raise SystemExit("nothing to measure: pass --flops and/or --latency")
    inputs = {f"--config-file {c}": c for c in args.config_file}
    refuse_overwriting_inputs({"--json": args.json, "--plot": args.plot}, inputs)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: CUDA is not available")
    if args.threads:
        torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, device {args.device}", flush=True
    )
    rows = [row for config in args.config_file for row in benchmark_config(config, args)]
    print(markdown_table(rows))
    if args.json:
        atomic_write(args.json, (json.dumps({"rows": [r.to_json() for r in rows]}, indent=2) + "\n").encode())
        print(f"wrote {args.json}")
    if args.plot:
        plot_rows(rows, args.plot)
        print(f"wrote {args.plot}")
    return rows


if __name__ == "__main__":
    sys.exit(run_tool(main, None, "benchmark.py"))
