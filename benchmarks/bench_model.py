"""End-to-end CPU inference latency and peak memory of Sparse DETR for several keeping ratios.

One 800x1216 RGB image, ResNet-50, 6 encoder + 6 decoder layers, 300 queries, the paper's R-50 config
(``configs/common/models/sparse_detr_r50.py``, random weights: the work done does not depend on them),
called through the Detectron2 interface ``model([{"image": ...}])`` in eval mode under ``no_grad``:
normalisation, backbone, neck, scorer, encoder, two-stage selection, decoder, top-100 post-processing.
rho = 1.0 is the dense Deformable DETR+ encoder (no scorer run). The model runs as configured: FrozenBN
folded into the convolutions, channels-last backbone; ``--backbone-dtypes`` adds rows with the backbone under
bfloat16 autocast where the CPU runs bfloat16 natively (``model.backbone.dtype="auto"``, float32 elsewhere;
everything from the neck on stays float32).

Every rho runs in a fresh subprocess (``--threads`` intra-op threads):
  * time = median (and min) wall time of ``--repeats`` calls after ``--warmup`` calls, and the median
    process CPU time (all threads), steadier than wall time when other jobs share the cores;
  * peak memory = growth of the process's peak RSS (``ru_maxrss``) over the model and input already
    in memory, i.e. what inference allocates at its peak (activations, temporaries);
  * backbone = median time of the ResNet-50 stage alone, as the model runs it (same precision and memory
    format), on the same image; also a yardstick for the machine's load.

    .venv/bin/python benchmarks/bench_model.py [--threads 2] [--repeats 5] [--warmup 2] \
        [--backbone-dtypes float32 auto]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BASE_CONFIG = REPO / "configs" / "common" / "models" / "sparse_detr_r50.py"
KEEP_RATIOS = (1.0, 0.5, 0.3, 0.2, 0.1)
IMAGE_SIZE = (800, 1216)


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def run_worker(keep_ratio: float, backbone_dtype: str, threads: int, repeats: int, warmup: int) -> dict:
    import torch
    from detectron2.config import LazyConfig, instantiate

    from sparse_detr._ext import extension_available

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    cfg = LazyConfig.load(str(BASE_CONFIG))
    if keep_ratio >= 1.0:
        cfg.model.token_scorer = None  # dense Deformable DETR+
    else:
        cfg.model.token_scorer.keep_ratio = keep_ratio
    cfg.model.backbone.dtype = backbone_dtype
    model = instantiate(cfg.model).eval()
    image = torch.randint(0, 256, (3, *IMAGE_SIZE), generator=torch.Generator().manual_seed(0)).float()
    inputs = [{"image": image}]
    baseline = peak_rss_mib()
    times, cpu_times = [], []
    with torch.no_grad():
        for i in range(warmup + repeats):
            start, cpu_start = time.perf_counter(), time.process_time()
            results = model(inputs)
            if i >= warmup:
                times.append(time.perf_counter() - start)
                cpu_times.append(time.process_time() - cpu_start)
        kept = model.inference(inputs)[1].num_kept
        images, _ = model.preprocess_image(inputs)
        backbone_times = []
        for _ in range(repeats):
            start = time.perf_counter()
            model.backbone(images.tensor)
            backbone_times.append(time.perf_counter() - start)
    assert len(results[0]["instances"]) == 100
    return {
        "keep_ratio": keep_ratio,
        "backbone_dtype": backbone_dtype,
        "median_s": statistics.median(times),
        "min_s": min(times),
        "cpu_s": statistics.median(cpu_times),
        "backbone_s": statistics.median(backbone_times),
        "peak_mib": peak_rss_mib() - baseline,
        "tokens_refined": int(kept[0]),
        "extension": extension_available(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument(
        "--backbone-dtypes", nargs="+", default=["float32", "auto"], choices=["float32", "auto", "bfloat16"]
    )
    parser.add_argument("--worker", type=float, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--worker-dtype", default="float32", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker is not None:
        print(json.dumps(run_worker(args.worker, args.worker_dtype, args.threads, args.repeats, args.warmup)))
        return

    tables = {dtype: [run_subprocess(args, keep_ratio, dtype) for keep_ratio in KEEP_RATIOS]
              for dtype in args.backbone_dtypes}
    print(
        f"Sparse DETR R-50 6+6, 300 queries, one {IMAGE_SIZE[0]}x{IMAGE_SIZE[1]} image, CPU, "
        f"{args.threads} threads, median of {args.repeats} after {args.warmup} warm-up, "
        f"MSDA extension: {tables[args.backbone_dtypes[0]][0]['extension']}"
    )
    for dtype, rows in tables.items():
        print_table(dtype, rows)
    load = os.getloadavg()
    print(f"load average at the end (1/5/15 min): {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}")


def run_subprocess(args, keep_ratio: float, backbone_dtype: str) -> dict:
    command = [
        sys.executable,
        __file__,
        "--worker",
        str(keep_ratio),
        "--worker-dtype",
        backbone_dtype,
        "--threads",
        str(args.threads),
        "--repeats",
        str(args.repeats),
        "--warmup",
        str(args.warmup),
    ]
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    if result.returncode != 0:
        sys.exit(f"worker for rho={keep_ratio}, backbone {backbone_dtype} failed:\n{result.stderr[-3000:]}")
    row = json.loads(result.stdout.strip().splitlines()[-1])
    print(f"rho={keep_ratio} backbone {backbone_dtype}: {row['median_s']:.3f} s", file=sys.stderr, flush=True)
    return row


def print_table(backbone_dtype: str, rows: list[dict]) -> None:
    dense = rows[0]
    print(f"\nbackbone in {backbone_dtype}:\n")
    print(
        "| rho | tokens refined | median latency (s) | min latency (s) | speed-up vs dense | CPU time (s) "
        "| CPU speed-up | peak memory (MiB) | memory vs dense | backbone (s) | rest (s) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        label = "1.0 (dense)" if row["keep_ratio"] >= 1.0 else f"{row['keep_ratio']}"
        print(
            f"| {label} | {row['tokens_refined']} | {row['median_s']:.3f} | {row['min_s']:.3f} | "
            f"{dense['median_s'] / row['median_s']:.2f}x | {row['cpu_s']:.3f} | "
            f"{dense['cpu_s'] / row['cpu_s']:.2f}x | {row['peak_mib']:.0f} | "
            f"{row['peak_mib'] / dense['peak_mib']:.2f} | {row['backbone_s']:.3f} | "
            f"{row['median_s'] - row['backbone_s']:.3f} |"
        )


if __name__ == "__main__":
    main()
