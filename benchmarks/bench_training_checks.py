#!/usr/bin/env python
"""What the project's checks cost in the training step of the quickstart model: time and host syncs.

    python benchmarks/bench_training_checks.py                  # sync count + timing (run it alone)
    python benchmarks/bench_training_checks.py --syncs-only     # the sync count only (needs no quiet)

Two trainers run the quickstart model (``configs/quickstart_shapes.py``) on the same fixed batch of 8
synthetic 256-px images:

- ``off``: Detectron2's ``SimpleTrainer`` on the bare model, ``ClippedAdamW`` that never reads its norm;
- ``on``: what ``train_net.py`` adds per iteration: the loss guard (wrapper + its after-backward hook), the
  per-iteration seeding hook, ``grad_norm`` read every ``train.log_period`` iterations.

Both include Detectron2's own loss logging (``SimpleTrainer`` reads every loss term with ``.item()``).

Host syncs are counted on the CPU, where nothing waits: every call that would make a CUDA host wait for the
device is counted instead. A ``TorchDispatchMode`` counts the ops that copy a device value to the host
(``aten::_local_scalar_dense``, behind ``.item()``, ``float()``, ``int()``, ``bool()``; ``aten::nonzero`` and
the ops whose output size depends on values), and ``Tensor.tolist`` / ``.numpy()`` / ``.cpu()`` are patched
to count their Python calls. Each count is attributed to the first caller frame in ``sparse_detr/``,
``detectron2/`` or ``train_net.py`` (and the torch module the read happens in: ``torch/optim`` reads of
AdamW's step counters are host-side values under CUDA too, not device syncs). The timing alternates
``off`` / ``on`` runs of ``--steps`` steps from the same initial weights, ``--repeats`` times, and reports
the median time per step of each.
"""
from __future__ import annotations

import argparse
import collections
import copy
import itertools
import os
import platform
import statistics
import sys
import time
import traceback
from pathlib import Path

import torch
from detectron2.config import LazyConfig, instantiate
from detectron2.engine import SimpleTrainer
from detectron2.structures import Boxes, Instances
from torch.utils._python_dispatch import TorchDispatchMode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sparse_detr.engine import ClippedAdamW, detr_param_groups  # noqa: E402
from sparse_detr.engine.loss_guard import FiniteLossGuard  # noqa: E402
from sparse_detr.engine.seeding import IterationSeeding  # noqa: E402

CONFIG = ROOT / "configs/quickstart_shapes.py"
# ops whose result a CUDA host must wait for (a scalar read, or an output sized by values)
SYNC_OPS = {"_local_scalar_dense", "nonzero", "masked_select", "unique", "_unique2", "repeat_interleave"}
PATCHED_METHODS = ("tolist", "numpy", "cpu")
# frames of the counting itself (the dispatch mode, torch's wrappers around it)
DISPATCH_MACHINERY = (
    "_python_dispatch.py", "_compile.py", "_contextlib.py", "eval_frame.py", "bench_training_checks.py"
)
OWN_CODE = (f"{os.sep}sparse_detr{os.sep}", f"{os.sep}detectron2{os.sep}", "train_net.py")


def quickstart_batch(num_images: int = 8, size: int = 256, seed: int = 0) -> list[dict]:
    """A fixed training batch shaped like the quickstart's: uint8 images, 1-4 boxes of 5 classes each."""
    generator = torch.Generator().manual_seed(seed)
    batch = []
    for _ in range(num_images):
        image = torch.randint(0, 256, (3, size, size), generator=generator, dtype=torch.uint8)
        count = int(torch.randint(1, 5, (), generator=generator))
        corner = torch.rand(count, 2, generator=generator) * (size * 0.6)
        extent = torch.rand(count, 2, generator=generator) * (size * 0.3) + 16
        instances = Instances((size, size))
        instances.gt_boxes = Boxes(torch.cat([corner, corner + extent], 1))
        instances.gt_classes = torch.randint(0, 5, (count,), generator=generator)
        batch.append({"image": image, "height": size, "width": size, "instances": instances})
    return batch


def build_trainer(cfg, initial_model, batch, checks: bool) -> SimpleTrainer:
    model = copy.deepcopy(initial_model).train()
    backbone_lr_factor = cfg.optimizer.params.backbone_lr_factor
    params = detr_param_groups(model, cfg.optimizer.lr, backbone_lr_factor=backbone_lr_factor)
    log_period = cfg.train.log_period if checks else sys.maxsize
    optimizer = ClippedAdamW(params, lr=cfg.optimizer.lr, weight_decay=1e-4, log_period=log_period)
    if not checks:
        return SimpleTrainer(model, itertools.repeat(batch), optimizer)
    guard = FiniteLossGuard(model)
    trainer = SimpleTrainer(guard, itertools.repeat(batch), optimizer)
    trainer.register_hooks([IterationSeeding(cfg.train.seed), guard.hook()])
    return trainer


def _caller() -> str:
    """``path:line function`` of the innermost frame in the project, Detectron2 or train_net.py (and the
    torch module it called into, if the read happens there)."""
    stack = [f for f in traceback.extract_stack() if not f.filename.endswith(DISPATCH_MACHINERY)]
    for index in range(len(stack) - 1, -1, -1):
        path = stack[index].filename
        if any(part in path for part in OWN_CODE):
            path = path.split(f"site-packages{os.sep}")[-1].replace(str(ROOT) + os.sep, "")
            inner = stack[index + 1].filename if index + 1 < len(stack) else ""
            inner = f" [in torch/{inner.rsplit(f'{os.sep}torch{os.sep}', 1)[1]}]" if "torch" in inner else ""
            return f"{Path(path).as_posix()}:{stack[index].lineno} {stack[index].name}{inner}"
    return "(other)"


class SyncCounter(TorchDispatchMode):
    """Counts device-to-host waits (see the module docstring), by caller."""

    def __init__(self):
        super().__init__()
        self.counts: collections.Counter[str] = collections.Counter()
        self._originals = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.overloadpacket.__name__ in SYNC_OPS:
            self.counts[f"{func.overloadpacket.__name__} <- {_caller()}"] += 1
        return func(*args, **(kwargs or {}))

    def __enter__(self):
        for name in PATCHED_METHODS:
            original = getattr(torch.Tensor, name)
            self._originals[name] = original

            def counted(tensor, *args, _name=name, _original=original, **kwargs):
                self.counts[f"{_name} <- {_caller()}"] += 1
                return _original(tensor, *args, **kwargs)

            setattr(torch.Tensor, name, counted)
        return super().__enter__()

    def __exit__(self, *exc):
        for name, original in self._originals.items():
            setattr(torch.Tensor, name, original)
        return super().__exit__(*exc)


def count_syncs(cfg, initial_model, batch) -> dict[str, collections.Counter]:
    """Host syncs of one training step (the second: the first may set things up), per variant."""
    counts = {}
    for name, checks in (("off", False), ("on", True)):
        trainer = build_trainer(cfg, initial_model, batch, checks)
        trainer.train(0, 1)  # warm up: one step, outside the counter
        # a step where the writers read grad_norm (iteration log_period - 1) and one where they do not
        counter = SyncCounter()
        start = cfg.train.log_period - 1
        with counter:
            trainer.train(start, start + 2)
        counts[name] = counter.counts
    return counts


def time_steps(cfg, initial_model, batch, steps: int, repeats: int) -> dict[str, list[float]]:
    seconds: dict[str, list[float]] = {"off": [], "on": []}
    for _ in range(repeats):
        for name, checks in (("off", False), ("on", True)):
            trainer = build_trainer(cfg, initial_model, batch, checks)
            trainer.train(0, 2)  # warm-up steps (allocator, oneDNN kernels)
            begin = time.perf_counter()
            trainer.train(2, 2 + steps)
            seconds[name].append((time.perf_counter() - begin) / steps)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=10, help="timed training steps per run")
    parser.add_argument("--repeats", type=int, default=5, help="alternating off/on runs")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--syncs-only", action="store_true", help="count host syncs, do not time")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    import logging

    logging.getLogger("detectron2").setLevel(logging.WARNING)
    cfg = LazyConfig.load(str(CONFIG))
    cfg.train.device = "cpu"
    torch.manual_seed(cfg.train.seed)
    initial_model = instantiate(cfg.model)
    batch = quickstart_batch()

    counts = count_syncs(cfg, initial_model, batch)
    period = cfg.train.log_period
    print(f"Host syncs in 2 training steps (iterations {period - 1} and {period}; "
          f"train.log_period={period}), by caller:")
    for site in sorted(set(counts["off"]) | set(counts["on"])):
        off, on = counts["off"][site], counts["on"][site]
        print(f"  off {off:4d}  on {on:4d}  {site}")
    total_off, total_on = sum(counts["off"].values()), sum(counts["on"].values())
    added = total_on - total_off
    print(f"  total: off {total_off}, on {total_on}; added by the checks in these 2 steps: {added}")
    if args.syncs_only:
        return

    seconds = time_steps(cfg, initial_model, batch, args.steps, args.repeats)
    off, on = statistics.median(seconds["off"]), statistics.median(seconds["on"])
    print(f"\nTraining step of the quickstart model (batch 8 x 256 px), median of {args.repeats} runs of "
          f"{args.steps} steps, torch threads {torch.get_num_threads()}, {platform.processor() or 'cpu'}:")
    for name, median in (("off", off), ("on", on)):
        runs = ", ".join(f"{s * 1e3:.1f}" for s in seconds[name])
        print(f"  checks {name:3s}: {median * 1e3:8.1f} ms/step   (runs: {runs})")
    print(f"  on / off: {on / off:.4f}")


if __name__ == "__main__":
    main()
