"""GPU measurements of Sparse DETR: the deformable-attention kernel and the whole model (one JSON).

Kernel: forward and forward+backward time of the compiled kernel ("extension") and of the PyTorch path
(grid_sample), float32, batch 1 and 4, at the shapes of ``bench_msda.py`` (an 800x1216 image: dense
encoder 20,197 queries, sparse encoder rho = 0.1 and decoder 300; 8 heads x 32 channels, 4 levels,
4 points), timed with CUDA events after warm-up (median).

Model, the paper's protocol: inference FPS at batch 4 (images / median time of one call) and latency at
batch 1 of 800x1216 images, ResNet-50, dense Deformable DETR+ and Sparse DETR at rho 0.1-0.5 (one model,
``set_keep_ratio``), float32 and AMP (float16 autocast), peak GPU memory; one training step (forward,
backward, AdamW step) at batch 2, float32 and AMP (GradScaler), its time and peak memory. Models are built
from the repository's configs through the public API (random weights: the work does not depend on them).

    python -m benchmarks.bench_gpu --json output/gpu_check/bench.json          # on a GPU
    python -m benchmarks.bench_gpu --small --device cpu --json /tmp/bench.json  # seconds, any machine

``--small`` shrinks every size (kernel levels / 8; images 64x96 at batch 1 through a 1+1-layer, 32-wide
transformer; one repeat) so that the script itself can be checked on a CPU; its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from functools import partial
from pathlib import Path

import torch

from benchmarks.bench_msda import CASES, LEVEL_SHAPES, make_inputs  # the kernel shapes, defined once

REPO = Path(__file__).resolve().parents[1]

DENSE_CONFIG = REPO / "configs" / "deformable_detr_plus_r50_50ep.py"
SPARSE_CONFIG = REPO / "configs" / "sparse_detr_r50_rho0.1_50ep.py"
KEEP_RATIOS = (0.1, 0.2, 0.3, 0.4, 0.5)
IMAGE_SIZE = (800, 1216)


class Timer:
    """Wall time of a callable: CUDA events on a GPU (after a synchronize), perf_counter on the CPU."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    def __call__(self, function, warmup: int, repeats: int) -> list[float]:
        for _ in range(warmup):
            function()
        times = []
        for _ in range(repeats):
            if self.cuda:
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                torch.cuda.synchronize()
                start.record()
                function()
                end.record()
                torch.cuda.synchronize()
                times.append(start.elapsed_time(end) / 1e3)
            else:
                start = time.perf_counter()
                function()
                times.append(time.perf_counter() - start)
        return times


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mib(device: torch.device) -> float | None:
    """Peak GPU memory allocated since the last reset (None on the CPU, where it is not tracked here)."""
    if device.type != "cuda":
        return None
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated(device) / 2**20


# ---------------------------------------------------------------------------------------------- kernel
def attention_call(attention, inputs: list, backend: str, backward: bool) -> None:
    output = attention(*inputs, backend=backend)
    if backward:
        torch.autograd.grad(output, [inputs[0], inputs[3], inputs[4]], torch.ones_like(output))


def bench_kernel(device: torch.device, small: bool, warmup: int, repeats: int) -> list[dict]:
    """One row per (case, batch, mode): median milliseconds of both backends and the speed-up."""
    from sparse_detr._ext import extension_available
    from sparse_detr.layers import multi_scale_deform_attn

    scale = 8 if small else 1
    level_shapes = [(max(1, h // scale), max(1, w // scale)) for h, w in LEVEL_SHAPES]
    tokens = sum(h * w for h, w in level_shapes)
    backends = ["pytorch"] + (["extension"] if extension_available() else [])
    timer = Timer(device)
    rows = []
    for case, queries in CASES.items():
        if queries == sum(h * w for h, w in LEVEL_SHAPES):  # the dense encoder: every token
            queries = tokens
        elif small:
            queries = max(1, queries // scale**2)
        for batch in (1, 4):
            for mode in ("forward", "forward+backward"):
                backward = mode == "forward+backward"
                value, shapes, starts, locations, weights = make_inputs(torch, level_shapes, queries, False)
                inputs = [value.repeat(batch, 1, 1, 1), shapes, starts,
                          locations.repeat(batch, 1, 1, 1, 1, 1), weights.repeat(batch, 1, 1, 1, 1)]
                inputs = [tensor.to(device) for tensor in inputs]
                for index in (0, 3, 4):
                    inputs[index].requires_grad_(backward)
                row = {"case": case, "queries": queries, "batch": batch, "mode": mode}
                for backend in backends:
                    call = partial(attention_call, multi_scale_deform_attn, inputs, backend, backward)
                    row[f"{backend}_ms"] = 1e3 * statistics.median(timer(call, warmup, repeats))
                if "extension_ms" in row:
                    row["speedup"] = row["pytorch_ms"] / row["extension_ms"]
                rows.append(row)
                print(f"[bench_gpu] kernel {case} batch {batch} {mode}: "
                      + ", ".join(f"{k} {v:.3f}" for k, v in row.items() if k.endswith("_ms")), flush=True)
    return rows


# ---------------------------------------------------------------------------------------------- model
def build_model(config: Path, device: torch.device, small: bool):
    """The model of a config file in eval mode, random weights (seed 0); ``small``: a 32-wide transformer
    of one encoder and one decoder layer with 30 queries (the ResNet-50 stays)."""
    from sparse_detr.model_zoo.model_zoo import build_model_from_config
    from sparse_detr.model_zoo.tool_configs import load_tool_config

    cfg = load_tool_config(str(config))
    if small:
        cfg.model.neck.hidden_dim = 32
        cfg.model.encoder.num_layers = cfg.model.decoder.num_layers = 1
        cfg.model.encoder.ffn_dim = cfg.model.decoder.ffn_dim = 64
        cfg.model.query_init.num_queries = 30
    torch.manual_seed(0)
    return build_model_from_config(cfg, device=str(device))


def make_images(count: int, image_size: tuple[int, int], device: torch.device, targets: bool) -> list[dict]:
    from detectron2.structures import Boxes, Instances

    generator = torch.Generator().manual_seed(0)
    height, width = image_size
    batch = []
    for _ in range(count):
        item = {"image": torch.randint(0, 256, (3, height, width), generator=generator).float().to(device),
                "height": height, "width": width}
        if targets:
            corners = torch.rand(6, 2, 2, generator=generator) * torch.tensor([width, height])
            boxes = torch.cat([corners.min(1).values, corners.max(1).values + 8], dim=1)
            instances = Instances((height, width))
            instances.gt_boxes = Boxes(boxes.to(device))
            instances.gt_classes = torch.randint(0, 80, (6,), generator=generator).to(device)
            item["instances"] = instances
        batch.append(item)
    return batch


def inference_call(model, inputs: list[dict], device: torch.device, amp: bool) -> None:
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.float16, enabled=amp):
        model(inputs)


def training_step(model, inputs: list[dict], device: torch.device, amp: bool, optimizer, scaler,
                  losses: list[float]) -> None:
    """Forward (losses), backward and optimizer step, under float16 autocast with loss scaling for AMP."""
    with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
        loss = sum(model(inputs).values())
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    losses.append(float(loss.detach()))


def bench_inference(model, label: str, device: torch.device, image_size, batch_sizes, amp_modes, warmup,
                    repeats) -> list[dict]:
    timer = Timer(device)
    rows = []
    model.eval()
    for amp in amp_modes:
        for batch_size in batch_sizes:
            call = partial(inference_call, model, make_images(batch_size, image_size, device, targets=False),
                           device, amp)
            reset_peak_memory(device)
            seconds = statistics.median(timer(call, warmup, repeats))
            rows.append({"model": label, "precision": "amp" if amp else "float32", "batch": batch_size,
                         "latency_ms": 1e3 * seconds, "fps": batch_size / seconds,
                         "peak_mib": peak_memory_mib(device)})
            print(f"[bench_gpu] inference {label} {rows[-1]['precision']} batch {batch_size}: "
                  f"{1e3 * seconds:.1f} ms, {batch_size / seconds:.1f} FPS", flush=True)
    return rows


def bench_training_step(model, label: str, device: torch.device, image_size, batch_size, amp_modes, warmup,
                        repeats) -> list[dict]:
    timer = Timer(device)
    rows = []
    inputs = make_images(batch_size, image_size, device, targets=True)
    model.train()
    for amp in amp_modes:
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
        scaler = torch.amp.GradScaler(device.type, enabled=amp)
        losses = []
        step = partial(training_step, model, inputs, device, amp, optimizer, scaler, losses)
        reset_peak_memory(device)
        seconds = statistics.median(timer(step, warmup, repeats))
        rows.append({"model": label, "precision": "amp" if amp else "float32", "batch": batch_size,
                     "step_ms": 1e3 * seconds, "peak_mib": peak_memory_mib(device),
                     "loss_finite": all(math.isfinite(loss) for loss in losses)})
        print(f"[bench_gpu] training step {label} {rows[-1]['precision']} batch {batch_size}: "
              f"{1e3 * seconds:.1f} ms", flush=True)
    model.eval()
    return rows


def bench_model(device: torch.device, small: bool, warmup: int, repeats: int) -> dict:
    image_size = (64, 96) if small else IMAGE_SIZE
    keep_ratios = KEEP_RATIOS[:1] if small else KEEP_RATIOS
    batch_sizes = (1,) if small else (4, 1)
    amp_modes = (False, True) if device.type == "cuda" else (False,)
    inference, training = [], []
    dense = build_model(DENSE_CONFIG, device, small)
    inference += bench_inference(dense, "dense", device, image_size, batch_sizes, amp_modes, warmup, repeats)
    training += bench_training_step(dense, "dense", device, image_size, 2, amp_modes, warmup, repeats)
    del dense
    sparse = build_model(SPARSE_CONFIG, device, small)
    for keep_ratio in keep_ratios:
        sparse.set_keep_ratio(keep_ratio)
        inference += bench_inference(sparse, f"rho={keep_ratio}", device, image_size, batch_sizes, amp_modes,
                                     warmup, repeats)
    sparse.set_keep_ratio(KEEP_RATIOS[0])
    training += bench_training_step(sparse, f"rho={KEEP_RATIOS[0]}", device, image_size, 2, amp_modes, warmup,
                                    repeats)
    return {"image_size": list(image_size), "inference": inference, "training": training}


# ---------------------------------------------------------------------------------------------- main
def environment(device: torch.device) -> dict:
    from sparse_detr import _ext

    info = {"device": str(device), "torch": torch.__version__, "torch_cuda": torch.version.cuda,
            "extension": _ext.extension_info()}
    if device.type == "cuda":
        properties = torch.cuda.get_device_properties(device)
        info.update(gpu=properties.name, capability=f"{properties.major}.{properties.minor}",
                    gpu_memory_gib=round(properties.total_memory / 2**30, 1),
                    multiprocessors=properties.multi_processor_count)
    return info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", required=True, help="where to write the results")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--small", action="store_true", help="tiny sizes, one repeat (checks the script)")
    parser.add_argument("--parts", nargs="+", default=["kernel", "model"], choices=["kernel", "model"])
    parser.add_argument("--warmup", type=int, default=None, help="default 3 (0 with --small)")
    parser.add_argument("--repeats", type=int, default=None, help="default 10 (1 with --small)")
    args = parser.parse_args()
    device = torch.device(args.device)
    warmup = args.warmup if args.warmup is not None else (0 if args.small else 3)
    repeats = args.repeats if args.repeats is not None else (1 if args.small else 10)
    results = {"environment": environment(device), "small": args.small, "warmup": warmup, "repeats": repeats}
    output = Path(args.json)
    output.parent.mkdir(parents=True, exist_ok=True)
    # each part is written as soon as it is done, so that a later failure keeps the earlier numbers
    if "kernel" in args.parts:
        results["kernel"] = bench_kernel(device, args.small, warmup, repeats)
        output.write_text(json.dumps(results, indent=1))
    if "model" in args.parts:
        results["model"] = bench_model(device, args.small, warmup, repeats)
        output.write_text(json.dumps(results, indent=1))
    print(f"[bench_gpu] wrote {output}")


if __name__ == "__main__":
    main()
