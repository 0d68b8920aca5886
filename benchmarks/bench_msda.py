"""Benchmark multi-scale deformable attention: C++ extension vs PyTorch (grid_sample) path on the CPU.

Shapes of Sparse DETR for an 800x1216 image: levels 100x152, 50x76, 25x38, 13x19 (S = 20,197 tokens),
8 heads x 32 channels, 4 points, batch 1; queries: dense encoder (20,197), sparse encoder at
rho = 0.1 (2,020) and decoder (300); sampling geometry as in the layer (see ``make_inputs``).

Every (case, backend, mode) runs in a fresh subprocess:
  * peak memory = peak RSS during the first call minus the RSS before it (Linux VmHWM, reset through
    /proc/self/clear_refs), after the inputs exist and after a warm-up on a tiny shape (thread pool,
    lazy initialisation). It counts the output, the gradients and every temporary the call allocates;
    glibc is told to mmap large blocks and return them on free so that RSS follows live memory.
    The kernel updates the mark lazily, so values under ~1 MiB are not resolved (printed as "<1").
  * time = median wall time and median process CPU time (all threads) of ``--repeats`` calls after
    that first call. On a shared machine the CPU time is the steadier measure.

    .venv/bin/python benchmarks/bench_msda.py [--threads 2] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time

LEVEL_SHAPES = [(100, 152), (50, 76), (25, 38), (13, 19)]
HEADS, HEAD_DIM, POINTS = 8, 32, 4
CASES = {"dense encoder": 20197, "sparse encoder (rho=0.1)": 2020, "decoder": 300}
BACKENDS = ("pytorch", "extension")
MODES = ("forward", "forward+backward")


# Large blocks are mmap-ed and returned to the OS on free (no dynamic threshold), so RSS follows the
# memory that is live; set for the worker processes.
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "65536"}


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def reset_peak_rss() -> float:
    """Reset the peak-RSS mark (VmHWM) to the current RSS (Linux >= 4.0); returns the current RSS MiB."""
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")
    return _status_kib("VmRSS") / 1024


def peak_rss_mib() -> float:
    return _status_kib("VmHWM") / 1024


def token_centres(torch, level_shapes):
    """(S, 2) normalised (x, y) centre of every token, level after level (the encoder's references)."""
    centres = []
    for height, width in level_shapes:
        rows, columns = torch.arange(height), torch.arange(width)
        ys, xs = torch.meshgrid((rows + 0.5) / height, (columns + 0.5) / width, indexing="ij")
        centres.append(torch.stack([xs, ys], dim=-1).reshape(-1, 2))
    return torch.cat(centres)


def make_inputs(torch, level_shapes, queries, requires_grad):
    """Inputs with the sampling geometry of a Deformable/Sparse DETR layer.

    References: every token centre in raster order when Q = S (dense encoder), Q token centres in
    random order otherwise (the sparse encoder's top-k by score; decoder proposals). Offsets: the
    layer's initial pattern (head m along angle 2*pi*m/M, point p at p + 1 pixels) plus N(0, 1)
    pixels, normalised by each level's (W, H); some points fall outside the maps.
    """
    generator = torch.Generator().manual_seed(0)
    spatial_shapes = torch.tensor(level_shapes, dtype=torch.int64)
    sizes = spatial_shapes.prod(1)
    level_start_index = torch.cat([sizes.new_zeros(1), sizes.cumsum(0)[:-1]])
    levels, tokens = len(level_shapes), int(sizes.sum())
    value = torch.randn(1, tokens, HEADS, HEAD_DIM, generator=generator)
    centres = token_centres(torch, level_shapes)
    if queries != tokens:
        centres = centres[torch.randperm(tokens, generator=generator)[:queries]]
    angles = torch.arange(HEADS) * (2 * math.pi / HEADS)
    directions = torch.stack([angles.cos(), angles.sin()], dim=-1)
    directions = directions / directions.abs().max(-1, keepdim=True).values
    distances = torch.arange(1, POINTS + 1)
    pattern = directions[:, None, None, :] * distances[None, None, :, None]  # (M, 1, P, 2)
    offsets = pattern + torch.randn(1, queries, HEADS, levels, POINTS, 2, generator=generator)
    level_sizes_xy = spatial_shapes.flip(-1).float()[None, None, None, :, None, :]
    locations = centres[None, :, None, None, None, :] + offsets / level_sizes_xy
    weights = torch.rand(1, queries, HEADS, levels * POINTS, generator=generator).softmax(-1)
    weights = weights.view(1, queries, HEADS, levels, POINTS)
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
    before = reset_peak_rss()
    call(inputs)
    peak = peak_rss_mib() - before
    wall, cpu = [], []
    for _ in range(repeats):
        for tensor in (inputs[0], inputs[3], inputs[4]):
            tensor.grad = None
        start_wall, start_cpu = time.perf_counter(), time.process_time()
        call(inputs)
        wall.append(time.perf_counter() - start_wall)
        cpu.append(time.process_time() - start_cpu)
    return {"wall_ms": 1e3 * statistics.median(wall), "cpu_ms": 1e3 * statistics.median(cpu),
            "peak_mib": peak}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
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
                completed = subprocess.run(command, capture_output=True, text=True, check=True,
                                           env={**os.environ, **MALLOC_ENV})
                result[backend] = json.loads(completed.stdout.strip().splitlines()[-1])
            rows.append((case, queries, mode, result))

    print(f"threads={args.threads} repeats={args.repeats}: median wall / CPU ms; "
          "peak = RSS growth during one call")
    print("| case | Q | mode | PyTorch wall ms | ext. wall ms | speed-up (wall) | PyTorch CPU ms "
          "| ext. CPU ms | speed-up (CPU) | PyTorch peak MiB | ext. peak MiB | memory ratio |")
    print("|" + "---|" * 12)
    for case, queries, mode, result in rows:
        ours, theirs = result["extension"], result["pytorch"]
        cells = [case, f"{queries:,}", mode]
        for key in ("wall_ms", "cpu_ms"):
            cells += [f"{theirs[key]:.1f}", f"{ours[key]:.1f}", f"{theirs[key] / ours[key]:.1f}x"]
        peaks = [theirs["peak_mib"], ours["peak_mib"]]
        cells += [f"{peak:.1f}" if peak >= 1 else "<1" for peak in peaks]
        cells.append(f"{peaks[0] / peaks[1]:.1f}x" if min(peaks) >= 1 else "n/a")
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
