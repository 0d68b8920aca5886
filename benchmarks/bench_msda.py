"""Benchmark multi-scale deformable attention: C++ extension vs PyTorch (grid_sample) path on the CPU.

Shapes of Sparse DETR for an 800x1216 image: levels 100x152, 50x76, 25x38, 13x19 (S = 20,197 tokens),
8 heads x 32 channels, 4 points, batch 1; queries: dense encoder (20,197), sparse encoder at
rho = 0.1 (2,020) and decoder (300).

Every (case, backend, mode) runs in a fresh subprocess:
  * peak memory = growth of the process's peak RSS (``ru_maxrss``) during the first timed call, after
    the inputs exist and after a warm-up on a tiny shape (thread pool, lazy initialisation). It counts
    the output, the gradients and every temporary the call allocates.
  * time = median wall time of ``--repeats`` calls (after that first call).

    .venv/bin/python benchmarks/bench_msda.py [--threads 2] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

LEVEL_SHAPES = [(100, 152), (50, 76), (25, 38), (13, 19)]
HEADS, HEAD_DIM, POINTS = 8, 32, 4
CASES = {"dense encoder": 20197, "sparse encoder (rho=0.1)": 2020, "decoder": 300}
BACKENDS = ("pytorch", "extension")
MODES = ("forward", "forward+backward")


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def make_inputs(torch, level_shapes, queries, requires_grad):
    generator = torch.Generator().manual_seed(0)
    spatial_shapes = torch.tensor(level_shapes, dtype=torch.int64)
    sizes = spatial_shapes.prod(1)
    level_start_index = torch.cat([sizes.new_zeros(1), sizes.cumsum(0)[:-1]])
    levels = len(level_shapes)
    value = torch.randn(1, int(sizes.sum()), HEADS, HEAD_DIM, generator=generator)
    # mostly inside the maps, some points beyond the borders as in a trained model
    locations = torch.rand(1, queries, HEADS, levels, POINTS, 2, generator=generator) * 1.1 - 0.05
    weights = torch.rand(1, queries, HEADS, levels, POINTS, generator=generator).softmax(-1)
    for tensor in (value, locations, weights):
        tensor.requires_grad_(requires_grad)
    return value, spatial_shapes, level_start_index, locations, weights


def run_worker(queries: int, backend: str, mode: str, threads: int, repeats: int) -> dict:
    import torch

    from sparse_detr.layers import multi_scale_deform_attn

    torch.set_num_threads(threads)
    backward = mode == "forward+backward"

    def call(inputs):
        output = multi_scale_deform_attn(*inputs, backend=backend)
        if backward:
            output.backward(torch.ones_like(output))
        return output

    call(make_inputs(torch, [(4, 5), (2, 3), (1, 2), (1, 1)], 8, backward))  # warm-up, tiny
    inputs = make_inputs(torch, LEVEL_SHAPES, queries, backward)
    before = peak_rss_mib()
    call(inputs)
    peak = peak_rss_mib() - before
    times = []
    for _ in range(repeats):
        for tensor in (inputs[0], inputs[3], inputs[4]):
            tensor.grad = None
        start = time.perf_counter()
        call(inputs)
        times.append(time.perf_counter() - start)
    return {"median_ms": 1e3 * statistics.median(times), "peak_mib": peak}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--worker", nargs=3, metavar=("QUERIES", "BACKEND", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        queries, backend, mode = args.worker
        print(json.dumps(run_worker(int(queries), backend, mode, args.threads, args.repeats)))
        return

    rows = []
    for case, queries in CASES.items():
        for mode in MODES:
            result = {}
            for backend in BACKENDS:
                command = [sys.executable, __file__, "--threads", str(args.threads), "--repeats",
                           str(args.repeats), "--worker", str(queries), backend, mode]
                completed = subprocess.run(command, capture_output=True, text=True, check=True)
                result[backend] = json.loads(completed.stdout.strip().splitlines()[-1])
            rows.append((case, queries, mode, result))

    print(f"threads={args.threads} repeats={args.repeats} (median time; peak = RSS growth during one call)")
    header = ("| case | Q | mode | PyTorch ms | extension ms | speed-up | PyTorch peak MiB | "
              "extension peak MiB | memory ratio |")
    print(header)
    print("|" + "---|" * 9)
    for case, queries, mode, result in rows:
        torch_result, ext_result = result["pytorch"], result["extension"]
        speedup = torch_result["median_ms"] / ext_result["median_ms"]
        memory_ratio = torch_result["peak_mib"] / max(ext_result["peak_mib"], 0.1)
        print(f"| {case} | {queries:,} | {mode} | {torch_result['median_ms']:.1f} | {ext_result['median_ms']:.1f} "
              f"| {speedup:.1f}x | {torch_result['peak_mib']:.1f} | {ext_result['peak_mib']:.1f} "
              f"| {memory_ratio:.1f}x |")


if __name__ == "__main__":
    main()
