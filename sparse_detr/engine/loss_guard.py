"""Stops training on non-finite losses, naming the offending loss terms."""
from __future__ import annotations

import torch
from detectron2.utils import comm
from detectron2.utils.events import get_event_storage
from torch import nn

__all__ = ["FiniteLossGuard", "NonFiniteLossError"]


class NonFiniteLossError(FloatingPointError):
    """A loss term became NaN or infinite (``iteration``: the training iteration; None outside a trainer)."""

    def __init__(self, message: str, iteration: int | None = None):
        super().__init__(message)
        self.iteration = iteration


class FiniteLossGuard(nn.Module):
    """Wraps the (possibly DDP) training model: checks its loss dict before backward.

    Detectron2's trainer only notices a non-finite *total* on the main process after backward; this guard
    raises on every process, before the optimizer step, with the names and values of the offending terms
    (gathered from all processes).
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, batched_inputs):
        loss_dict = self.model(batched_inputs)
        values = torch.stack([v.detach().float().reshape(()) for v in loss_dict.values()])
        finite = torch.isfinite(values)
        bad = {} if bool(finite.all()) else {
            k: float(v) for k, v, ok in zip(loss_dict, values.tolist(), finite.tolist()) if not ok
        }
        per_rank = comm.all_gather(bad) if comm.get_world_size() > 1 else [bad]
        if any(per_rank):
            try:
                iteration_number = get_event_storage().iter
                iteration = f" at iteration {iteration_number}"
            except AssertionError:  # used outside a trainer
                iteration_number, iteration = None, ""
            details = "; ".join(
                f"rank {rank}: " + ", ".join(f"{k}={v}" for k, v in sorted(terms.items()))
                for rank, terms in enumerate(per_rank)
                if terms
            )
            names = sorted({k for terms in per_rank for k in terms})
            raise NonFiniteLossError(
                f"Non-finite loss{iteration}: {', '.join(names)} ({details}). Training stopped; "
                "lower the learning rate or check the inputs.",
                iteration_number,
            )
        return loss_dict
