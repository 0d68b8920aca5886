"""Measure the two exact orders of a deformable attention layer: project the values, then sample (the
usual order), or sample the raw values, then project (``MSDeformAttn.projects_after_sampling``).

One ``MSDeformAttn`` (256 channels, 8 heads, 4 levels, 4 points) over the tokens of an image, with
rho * S queries (the sparse encoder's), in inference (no autograd) and as a training step (forward +
backward). The ratio folded / usual says where the layer's cost model should switch: its
``_SAMPLING_COST_PER_MAC`` constants put the switch where this ratio crosses 1.

    .venv/bin/python benchmarks/bench_projection_order.py [--threads 2] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from sparse_detr.layers import MSDeformAttn
from sparse_detr.modeling.input_size import level_sizes

RHOS = (0.05, 0.1, 0.15, 0.2, 0.3)


def median_ms(call, repeats: int) -> float:
    call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def layer_call(attn: MSDeformAttn, level_shapes, num_queries: int, train: bool, folded: bool):
    generator = torch.Generator().manual_seed(0)
    spatial_shapes = torch.tensor(level_shapes)
    sizes = spatial_shapes.prod(1)
    level_start_index = torch.cat([sizes.new_zeros(1), sizes.cumsum(0)[:-1]])
    value = torch.randn(1, int(sizes.sum()), attn.embed_dim, generator=generator, requires_grad=train)
    query = torch.randn(1, num_queries, attn.embed_dim, generator=generator, requires_grad=train)
    reference_points = torch.rand(1, num_queries, attn.num_levels, 2, generator=generator)

    def call():
        attn.projects_after_sampling = lambda *sizes: folded  # instance attribute: this call's order
        with torch.set_grad_enabled(train):
            output = attn(query, reference_points, value, spatial_shapes, level_start_index)
            if train:
                output.sum().backward()

    return call


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--sizes", nargs="+", default=["800x1216", "512x640"], help="images, HxW")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    attn = MSDeformAttn(256, 4, 8, 4)
    print(f"threads {args.threads}, CPU capability {torch.backends.cpu.get_cpu_capability()}")
    print("| mode | image | tokens | rho | usual ms | folded ms | folded / usual |")
    print("|---|---|---|---|---|---|---|")
    for mode in ("inference", "training"):
        for size in args.sizes:
            height, width = (int(v) for v in size.split("x"))
            level_shapes = level_sizes(height, width, strides=(8, 16, 32, 64))
            tokens = sum(h * w for h, w in level_shapes)
            for rho in RHOS:
                queries = max(1, int(rho * tokens))
                train = mode == "training"
                usual, folded = (
                    median_ms(layer_call(attn, level_shapes, queries, train, order), args.repeats)
                    for order in (False, True)
                )
                row = [mode, size, tokens, rho, f"{usual:.1f}", f"{folded:.1f}", f"{folded / usual:.2f}"]
                print("| " + " | ".join(map(str, row)) + " |", flush=True)


if __name__ == "__main__":
    main()
