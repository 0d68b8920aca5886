"""CPU latency of an exported Sparse DETR in ONNX Runtime and OpenVINO against the project's PyTorch path.

One 800x1216 RGB image, the paper's R-50 config (``configs/common/models/sparse_detr_r50.py``: ResNet-50,
6 encoder + 6 decoder layers, 300 queries; random weights, the work done does not depend on them), dense
(no scorer) and rho = 0.1 (DAM scorer), ``--threads`` threads everywhere:

  * ``pytorch``: ``model([{"image": ...}])`` in eval mode under ``no_grad``, as configured (C++ MSDA kernel
    when ``sparse_detr._C`` is built, FrozenBN folded, channels-last backbone);
  * ``onnxruntime``: the ``.onnx`` written by ``sparse_detr.export.export_model`` opened with
    ``sparse_detr.export.load_exported(path, threads=--threads)`` (CPU provider,
    ``intra_op_num_threads``, all graph optimisations) and run with its checked ``run``;
  * ``openvino``: the same ``.onnx`` through ``load_exported(path, "openvino", threads=--threads)``
    (CPU, ``INFERENCE_NUM_THREADS``, ``INFERENCE_PRECISION_HINT = f32``; on CPUs with bf16 units OpenVINO
    would otherwise run in bf16: ``--openvino-bf16`` adds a plain ``compile_model`` row in bf16 for the
    grid_sample file, outputs then differ by ~1e-2).

Each ONNX row is measured for both forms of deformable attention (``--deform-attn``): ``grid_sample``
(standard ops) and ``plugin`` (one ``MultiscaleDeformableAttnPlugin_TRT`` node per attention, run by the
project's C++ kernel in both runtimes).

Each (model, runtime) runs in a fresh subprocess: median and min wall time of ``--repeats`` calls after
``--warmup`` calls, median process CPU time, and the largest score difference to the PyTorch outputs on the
same image (a check that the runtimes compute the same detections). ``--tiny`` runs a small model on a
small image, to check the script itself in seconds.

    .venv/bin/python benchmarks/bench_export.py [--threads 2] [--repeats 5] [--warmup 2] [--tiny]
        [--deform-attn grid_sample plugin]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BASE_CONFIG = REPO / "configs" / "common" / "models" / "sparse_detr_r50.py"
IMAGE_SIZE = (800, 1216)
TINY_IMAGE_SIZE = (96, 128)
MODELS = {"dense": None, "rho 0.1": 0.1}
RUNTIMES = ("pytorch", "onnxruntime", "openvino", "openvino-bf16")
DEFORM_ATTN = ("grid_sample", "plugin")


def build_model(keep_ratio: float | None, tiny: bool):
    import torch
    from detectron2.config import LazyConfig, instantiate

    torch.manual_seed(0)
    cfg = LazyConfig.load(str(BASE_CONFIG))
    if keep_ratio is None:
        cfg.model.token_scorer = None  # dense Deformable DETR+
    else:
        cfg.model.token_scorer.keep_ratio = keep_ratio
    if tiny:
        cfg.model.encoder.num_layers = cfg.model.decoder.num_layers = 1
        cfg.model.query_init.num_queries = 30
    return instantiate(cfg.model).eval()


def make_image(tiny: bool):
    import torch

    size = TINY_IMAGE_SIZE if tiny else IMAGE_SIZE
    return torch.randint(0, 256, (3, *size), generator=torch.Generator().manual_seed(0)).float()


def run_worker(args) -> dict:
    """Time one runtime on one model; returns the timings and the outputs' scores."""
    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    image = make_image(args.tiny)
    keep_ratio = MODELS[args.model]
    if args.worker == "pytorch":
        model = build_model(keep_ratio, args.tiny)

        def call():
            with torch.no_grad():
                return model([{"image": image}])[0]["instances"].scores.numpy()

    else:
        from sparse_detr.export import load_exported

        if args.worker == "openvino-bf16":
            import openvino as ov

            feed = {"image": image.numpy()}
            if keep_ratio is not None:
                feed["keep_ratio"] = np.array(keep_ratio, dtype=np.float32)
            config = {"INFERENCE_NUM_THREADS": args.threads, "INFERENCE_PRECISION_HINT": "bf16"}
            compiled = ov.Core().compile_model(args.onnx, "CPU", config)

            def call():
                return compiled(feed)[compiled.output("scores")]

        else:
            detector = load_exported(args.onnx, args.worker, threads=args.threads)
            pixels = image.numpy()

            def call():
                return detector.run(pixels, keep_ratio)[1]

    times, cpu_times = [], []
    for i in range(args.warmup + args.repeats):
        start, cpu_start = time.perf_counter(), time.process_time()
        scores = call()
        if i >= args.warmup:
            times.append(time.perf_counter() - start)
            cpu_times.append(time.process_time() - cpu_start)
    return {
        "median_s": statistics.median(times),
        "min_s": min(times),
        "cpu_s": statistics.median(cpu_times),
        "scores": np.asarray(scores).tolist(),
    }


def export(keep_ratio: float | None, tiny: bool, path: Path, deform_attn: str) -> Path:
    from sparse_detr.export import export_model

    size = TINY_IMAGE_SIZE if tiny else IMAGE_SIZE
    return export_model(build_model(keep_ratio, tiny), path, image_size=size, deform_attn=deform_attn)


def run_subprocess(args, model: str, runtime: str, onnx_path: Path | None) -> dict:
    command = [
        sys.executable, __file__, "--worker", runtime, "--model", model, "--threads", str(args.threads),
        "--repeats", str(args.repeats), "--warmup", str(args.warmup),
    ]  # fmt: skip
    if onnx_path is not None:
        command += ["--onnx", str(onnx_path)]
    if args.tiny:
        command.append("--tiny")
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=env)
    if result.returncode != 0:
        sys.exit(f"worker {runtime} on {model} failed:\n{result.stderr[-3000:]}")
    row = json.loads(result.stdout.strip().splitlines()[-1])
    form = f" ({onnx_path.stem})" if onnx_path is not None else ""
    print(f"{model} / {runtime}{form}: {row['median_s']:.3f} s", file=sys.stderr, flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--tiny", action="store_true", help="1+1 layers, 30 queries, 96x128 image")
    parser.add_argument("--openvino-bf16", action="store_true", help="also time OpenVINO in bf16")
    parser.add_argument(
        "--deform-attn", nargs="+", choices=DEFORM_ATTN, default=list(DEFORM_ATTN),
        help="forms of deformable attention exported (ONNX rows)",
    )
    parser.add_argument("--worker", choices=RUNTIMES, help=argparse.SUPPRESS)
    parser.add_argument("--model", choices=sorted(MODELS), help=argparse.SUPPRESS)
    parser.add_argument("--onnx", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker is not None:
        print(json.dumps(run_worker(args)))
        return

    import numpy as np
    import torch

    from sparse_detr._ext import extension_available

    torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory() as directory:
        for index, (model, keep_ratio) in enumerate(MODELS.items()):
            results = {("pytorch", "-"): run_subprocess(args, model, "pytorch", None)}
            for deform_attn in args.deform_attn:
                start = time.perf_counter()
                onnx_path = export(keep_ratio, args.tiny, Path(directory) / f"m{index}_{deform_attn}.onnx",
                                   deform_attn)
                print(f"{model} ({deform_attn}): exported in {time.perf_counter() - start:.0f} s",
                      file=sys.stderr, flush=True)
                runtimes = ["onnxruntime", "openvino"]
                if args.openvino_bf16 and deform_attn == "grid_sample":
                    runtimes.append("openvino-bf16")
                for runtime in runtimes:
                    results[(runtime, deform_attn)] = run_subprocess(args, model, runtime, onnx_path)
            reference = np.asarray(results[("pytorch", "-")]["scores"])
            for (runtime, deform_attn), row in results.items():
                scores = np.asarray(row["scores"])
                diff = np.abs(scores - reference).max() if scores.shape == reference.shape else float("nan")
                rows.append({"model": model, "runtime": runtime, "deform_attn": deform_attn,
                             "score_diff": diff, **row})

    size = TINY_IMAGE_SIZE if args.tiny else IMAGE_SIZE
    print(
        f"\nSparse DETR R-50{' (tiny)' if args.tiny else ''}, one {size[0]}x{size[1]} image, CPU, "
        f"{args.threads} threads, median of {args.repeats} after {args.warmup} warm-up; "
        f"PyTorch MSDA extension: {extension_available()}\n"
    )
    print(
        "| model | runtime | deform attn | median latency (s) | min latency (s) | CPU time (s) "
        "| vs PyTorch | max score diff |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        pytorch = next(r for r in rows if r["model"] == row["model"] and r["runtime"] == "pytorch")
        print(
            f"| {row['model']} | {row['runtime']} | {row['deform_attn']} | {row['median_s']:.3f} | "
            f"{row['min_s']:.3f} | "
            f"{row['cpu_s']:.3f} | {pytorch['median_s'] / row['median_s']:.2f}x | {row['score_diff']:.1e} |"
        )
    load = os.getloadavg()
    print(f"\nload average at the end (1/5/15 min): {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}")


if __name__ == "__main__":
    main()
