"""The official Sparse DETR and this project's, timed in one process on the CPU: inference, a training step.

Both models are the paper's R-50 configuration with random weights (the work does not depend on them):
Deformable DETR+ (two-stage, box refinement) dense, and Sparse DETR (Efficient-DETR query init, DAM
scorer, encoder auxiliary heads) at each ``--rhos`` value. The official code (kakaobrain/sparse-detr,
given by ``--official-repo``) runs its pure-PyTorch deformable attention (its compiled
``MultiScaleDeformableAttention`` op is replaced by an empty module at import: it is never called); no
weights are downloaded. Ours runs as configured (``configs/common/models/sparse_detr_r50.py``: FrozenBN
folded, channels-last backbone, float32), with the C++ deformable attention kernel.

* inference: one ``--size`` RGB image, model + post-processing (official ``PostProcess``; ours
  ``model([{"image": ...}])``: top-100 ``Instances``), eval mode, ``no_grad``;
* training step (``--train``): one ``--train-size`` image with 5 boxes, forward + weighted loss +
  backward, train mode (dropout on), gradients set to None before each step.

The two models alternate call by call (A/B interleaved, ``--warmup`` + ``--repeats`` calls each), so a
change of the machine's load hits both; the tables give medians. Per stage: wall time between forward
hooks on the modules of each stage (inference only; "other" = the rest of the call: normalisation,
masks, position encodings, heads, post-processing, the official code's token bookkeeping). The CPU
model, its ISA flags, ATen's CPU capability and the load average are printed first.

    .venv/bin/python -m benchmarks.compare_official --official-repo /path/to/sparse-detr \
        [--rhos 1.0 0.5 0.2 0.1] [--train] [--threads 2] [--repeats 5] [--warmup 2]

An AVX2-only CPU is simulated with ``ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2`` (ATen's kernels
and oneDNN's convolutions and matrix products limited to AVX2).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import platform
import statistics
import sys
import time
import types
from collections import defaultdict
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
BASE_CONFIG = REPO / "configs" / "common" / "models" / "sparse_detr_r50.py"
ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_tile")
# official flags of configs/r50_deformable_detr_plus... (dense) and r50_sparse_detr_rho_*.sh
OFFICIAL_DENSE = ["--with_box_refine", "--two_stage"]
OFFICIAL_SPARSE = ["--eff_query_init", "--eff_specific_head", "--use_enc_aux_loss"]


def machine_summary() -> str:
    """CPU model, the ISA flags that decide the kernels, ATen's capability, the simulation switches, load."""
    model, flags = platform.processor() or "?", set()
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
                break
    env = {k: os.environ[k] for k in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA") if k in os.environ}
    return (
        f"CPU: {model}, {os.cpu_count()} cores; flags: {' '.join(f for f in ISA_FLAGS if f in flags)}\n"
        f"torch {torch.__version__}, ATen CPU capability {torch.backends.cpu.get_cpu_capability()}, "
        f"threads {torch.get_num_threads()}, simulation env {env or 'none'}\n"
        f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )


class StageTimer:
    """Wall time spent inside given modules (forward pre/post hooks), summed per stage name."""

    def __init__(self, stages: dict[str, list[torch.nn.Module]]):
        self.totals: dict[str, float] = defaultdict(float)
        self._start: dict[int, float] = {}
        for name, modules in stages.items():
            for module in modules:
                module.register_forward_pre_hook(self._enter)
                module.register_forward_hook(self._exit(name))

    def _enter(self, module, args):
        self._start[id(module)] = time.perf_counter()

    def _exit(self, name):
        def hook(module, args, output):
            self.totals[name] += time.perf_counter() - self._start.pop(id(module))

        return hook

    def take(self) -> dict[str, float]:
        totals, self.totals = dict(self.totals), defaultdict(float)
        return totals


# ---------------------------------------------------------------------------------------------- official
def import_official(repo: Path):
    """The official ``models`` package and ``main.get_args_parser``, without its compiled op or downloads."""
    import torchvision

    sys.modules.setdefault("MultiScaleDeformableAttention", types.ModuleType("MultiScaleDeformableAttention"))
    sys.path.insert(0, str(repo))
    # util/misc.py reads float(torchvision.__version__[:3]) ("0.2" for 0.2x) to pick a torchvision 0.4 shim
    version, torchvision.__version__ = torchvision.__version__, "1.0"
    try:
        # the official repository's modules, found on the path given (not distributions of this project)
        official_main = importlib.import_module("main")  # its main.py: the argument parser
        official_models = importlib.import_module("models")
        official_backbone = importlib.import_module("models.backbone")
    finally:
        torchvision.__version__ = version

    official_backbone.is_main_process = lambda: False  # no ImageNet download; early layers still frozen
    return official_models, official_main.get_args_parser


def build_official(repo: Path, keep_ratio: float):
    models, get_args_parser = import_official(repo)
    flags = [*OFFICIAL_DENSE]
    if keep_ratio < 1.0:
        flags += [*OFFICIAL_SPARSE, "--rho", str(keep_ratio)]
    args = get_args_parser().parse_args([*flags, "--device", "cpu"])
    with contextlib.redirect_stdout(sys.stderr):
        model, criterion, postprocessors = models.build_model(args)
    for module in model.modules():
        if hasattr(module, "python_ops_for_test"):
            module.python_ops_for_test = True  # the pure-PyTorch attention
    transformer = model.transformer
    stages = {
        "backbone": [model.backbone[0].body],
        "neck": list(model.input_proj),
        "scorer": [transformer.enc_mask_predictor] if transformer.enc_mask_predictor is not None else [],
        "encoder": [transformer.encoder],
        "decoder": [transformer.decoder],
    }
    return model, criterion, postprocessors["bbox"], stages


def official_inputs(image: torch.Tensor, boxes: torch.Tensor | None = None, labels=None):
    """ImageNet-normalised NestedTensor of one RGB 0-255 image, and official targets (cxcywh in [0, 1])."""
    nested_tensor_from_tensor_list = importlib.import_module("util.misc").nested_tensor_from_tensor_list

    mean = torch.tensor([123.675, 116.28, 103.53]).view(3, 1, 1)
    std = torch.tensor([58.395, 57.12, 57.375]).view(3, 1, 1)
    samples = nested_tensor_from_tensor_list([(image - mean) / std])
    if boxes is None:
        return samples, None
    height, width = image.shape[-2:]
    scale = torch.tensor([width, height, width, height], dtype=torch.float32)
    xyxy = boxes / scale
    cxcywh = torch.cat([(xyxy[:, :2] + xyxy[:, 2:]) / 2, xyxy[:, 2:] - xyxy[:, :2]], dim=1)
    return samples, [{"boxes": cxcywh, "labels": labels, "orig_size": torch.tensor([height, width])}]


# ---------------------------------------------------------------------------------------------- ours
def build_ours(keep_ratio: float, backbone_dtype: str = "float32"):
    from detectron2.config import LazyConfig, instantiate

    cfg = LazyConfig.load(str(BASE_CONFIG))
    cfg.model.backbone.dtype = backbone_dtype
    if keep_ratio >= 1.0:
        cfg.model.token_scorer = None  # dense Deformable DETR+
    else:
        cfg.model.token_scorer.keep_ratio = keep_ratio
    model = instantiate(cfg.model)
    scorer = [m for m in (model.token_projection, model.token_scorer) if m is not None and keep_ratio < 1.0]
    stages = {
        "backbone": [model.backbone],
        "neck": [model.neck],
        "scorer": scorer,
        "encoder": [model.encoder],
        "decoder": [model.decoder],
    }
    return model, stages


def our_inputs(image: torch.Tensor, boxes: torch.Tensor | None = None, labels=None):
    from detectron2.structures import Boxes, Instances

    item = {"image": image}
    if boxes is not None:
        instances = Instances(tuple(image.shape[-2:]))
        instances.gt_boxes, instances.gt_classes = Boxes(boxes), labels
        item["instances"] = instances
    return [item]


# ---------------------------------------------------------------------------------------------- timing
def interleaved(calls: dict, repeats: int, warmup: int, timers: dict | None = None) -> dict:
    """Median wall time (s) per call name, calls alternating; with ``timers`` also median per stage."""
    times, stages = defaultdict(list), defaultdict(lambda: defaultdict(list))
    for i in range(warmup + repeats):
        for name, call in calls.items():
            if timers:
                timers[name].take()
            start = time.perf_counter()
            call()
            elapsed = time.perf_counter() - start
            if i < warmup:
                continue
            times[name].append(elapsed)
            if timers:
                per_stage = timers[name].take()
                per_stage["other"] = elapsed - sum(per_stage.values())
                for stage, seconds in per_stage.items():
                    stages[name][stage].append(seconds)
    return {
        name: {
            "median": statistics.median(values),
            "stages": {s: statistics.median(v) for s, v in stages[name].items()},
        }
        for name, values in times.items()
    }


def random_image(size: tuple[int, int], seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (3, *size), generator=torch.Generator().manual_seed(seed)).float()


def random_boxes(size: tuple[int, int], count: int = 5, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    height, width = size
    corner = torch.rand(count, 2, generator=generator) * torch.tensor([width * 0.6, height * 0.6])
    extent = (0.1 + 0.3 * torch.rand(count, 2, generator=generator)) * torch.tensor([width, height])
    labels = torch.randint(1, 80, (count,), generator=generator)
    return torch.cat([corner, corner + extent], dim=1), labels


def compare_inference(repo: Path, keep_ratio: float, size, repeats: int, warmup: int, dtype: str) -> dict:
    torch.manual_seed(0)
    official, _, postprocess, official_stages = build_official(repo, keep_ratio)
    ours, our_stages = build_ours(keep_ratio, dtype)
    official.eval(), ours.eval()
    image = random_image(size)
    samples, _ = official_inputs(image)
    target_sizes = torch.tensor([list(size)])
    inputs = our_inputs(image)

    def run_official():
        postprocess(official(samples), target_sizes)

    def run_ours():
        ours(inputs)

    timers = {"official": StageTimer(official_stages), "ours": StageTimer(our_stages)}
    with torch.no_grad():
        return interleaved({"official": run_official, "ours": run_ours}, repeats, warmup, timers)


def compare_training(repo: Path, keep_ratio: float, size, repeats: int, warmup: int, dtype: str) -> dict:
    torch.manual_seed(0)
    official, criterion, _, _ = build_official(repo, keep_ratio)
    ours, _ = build_ours(keep_ratio, dtype)
    official.train(), ours.train()
    image = random_image(size)
    boxes, labels = random_boxes(size)
    samples, targets = official_inputs(image, boxes, labels)
    inputs = our_inputs(image, boxes, labels)
    weights = criterion.weight_dict

    def run_official():
        official.zero_grad(set_to_none=True)
        losses = criterion(official(samples), targets)
        sum(losses[k] * weights[k] for k in losses if k in weights).backward()

    def run_ours():
        ours.zero_grad(set_to_none=True)
        sum(ours(inputs).values()).backward()

    return interleaved({"official": run_official, "ours": run_ours}, repeats, warmup)


def print_row(label: str, result: dict) -> None:
    official, ours = result["official"], result["ours"]
    print(
        f"| {label} | {official['median']:.3f} | {ours['median']:.3f} | "
        f"{official['median'] / ours['median']:.2f}x |"
    )


def print_stages(label: str, result: dict) -> None:
    names = ["backbone", "neck", "scorer", "encoder", "decoder", "other"]
    for who in ("official", "ours"):
        stages = result[who]["stages"]
        cells = " | ".join(f"{stages.get(n, 0.0):.3f}" for n in names)
        print(f"| {label} | {who} | {cells} | {result[who]['median']:.3f} |")


def parse_size(text: str) -> tuple[int, int]:
    height, width = (int(v) for v in text.lower().split("x"))
    return height, width


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--official-repo", type=Path, required=True, help="a checkout of kakaobrain/sparse-detr"
    )
    parser.add_argument("--rhos", type=float, nargs="+", default=[1.0, 0.5, 0.2, 0.1])
    parser.add_argument("--size", type=parse_size, default=(800, 1216), help="inference image, HxW")
    parser.add_argument("--train", action="store_true", help="also the training step (rho = the last --rhos)")
    parser.add_argument("--train-only", action="store_true", help="only the training step")
    parser.add_argument("--train-size", type=parse_size, default=(640, 960), help="training image, HxW")
    parser.add_argument(
        "--backbone-dtype", default="float32", help="ours: model.backbone.dtype (float32, auto, bfloat16)"
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args()
    if not (args.official_repo / "models" / "deformable_transformer.py").is_file():
        sys.exit(f"--official-repo {args.official_repo}: not a kakaobrain/sparse-detr checkout")
    torch.set_num_threads(args.threads)
    print(machine_summary(), f"\nours: model.backbone.dtype = {args.backbone_dtype!r}", flush=True)

    results = {}
    if not args.train_only:
        for rho in args.rhos:
            results[rho] = compare_inference(
                args.official_repo, rho, args.size, args.repeats, args.warmup, args.backbone_dtype
            )
            label = "dense" if rho >= 1.0 else f"rho {rho}"
            print(f"{label}: official {results[rho]['official']['median']:.3f} s, ours "
                  f"{results[rho]['ours']['median']:.3f} s", file=sys.stderr, flush=True)
    training = None
    if args.train or args.train_only:
        training = compare_training(
            args.official_repo, args.rhos[-1], args.train_size, args.repeats, args.warmup, args.backbone_dtype
        )

    print(f"\nload average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    height, width = args.size
    print(f"\nInference, one {height}x{width} image, median of {args.repeats} (s):\n")
    print("| model | official | ours | speed-up |\n|---|---|---|---|")
    for rho, result in results.items():
        print_row("dense" if rho >= 1.0 else f"rho {rho}", result)
    if training is not None:
        height, width = args.train_size
        print_row(f"training step, rho {args.rhos[-1]}, {height}x{width}, 5 boxes", training)
    if results:
        print("\nPer stage (s, median):\n")
        print("| model | code | backbone | neck | scorer | encoder | decoder | other | total |")
        print("|---|---|---|---|---|---|---|---|---|")
        for rho, result in results.items():
            print_stages("dense" if rho >= 1.0 else f"rho {rho}", result)


if __name__ == "__main__":
    main()
