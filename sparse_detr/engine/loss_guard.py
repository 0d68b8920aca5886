"""Stops training on non-finite losses on every process, naming the offending loss terms.

Per iteration the guard adds one all-reduce of a small flag tensor (one byte per loss term) and reads it once,
after the backward pass, where Detectron2's own loss logging reads the loss values anyway; only when a term is
not finite does it gather the values of every process to name them.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
from detectron2.engine import HookBase
from detectron2.utils import comm
from torch import Tensor, nn

__all__ = ["FiniteLossGuard", "NonFiniteLossError"]


class NonFiniteLossError(FloatingPointError):
    """A loss term became NaN or infinite (``iteration``: the training iteration; None outside a trainer)."""

    def __init__(self, message: str, iteration: int | None = None):
        super().__init__(message)
        self.iteration = iteration


class FiniteLossGuard(nn.Module):
    """Wraps the (possibly DDP) training model; its :meth:`hook` stops the step before the optimizer.

    Detectron2's trainer only notices a non-finite *total* on the main process; the guard raises
    :class:`NonFiniteLossError` on every process, before the optimizer step, with the names and values of the
    offending terms (of every process)::

        guard = FiniteLossGuard(ddp_model)
        trainer = SimpleTrainer(guard, data_loader, optimizer)
        trainer.register_hooks([guard.hook(), ...])
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self._unchecked: tuple[list[str], Tensor, Tensor, Tensor] | None = None

    def forward(self, batched_inputs):
        if self._unchecked is not None:
            raise RuntimeError(
                "FiniteLossGuard: the losses of the previous step were never checked; register "
                "guard.hook() with the trainer"
            )
        loss_dict = self.model(batched_inputs)
        values = torch.stack([v.detach().float().reshape(()) for v in loss_dict.values()])
        local_bad = ~torch.isfinite(values)
        any_bad = local_bad.to(torch.int32)
        if comm.get_world_size() > 1:
            dist.all_reduce(any_bad, op=dist.ReduceOp.MAX)  # the one collective: which terms failed anywhere
        self._unchecked = (list(loss_dict), values, local_bad, any_bad)
        return loss_dict

    def check(self, iteration: int | None = None) -> None:
        """Raise :class:`NonFiniteLossError` if the last forward's losses were not finite on any process."""
        if self._unchecked is None:
            return
        names, values, local_bad, any_bad = self._unchecked
        self._unchecked = None
        if not bool(any_bad.any()):  # the one host read per iteration
            return
        bad = {k: v for k, v, b in zip(names, values.tolist(), local_bad.tolist()) if b}
        per_rank = comm.all_gather(bad) if comm.get_world_size() > 1 else [bad]  # the failing step only
        details = "; ".join(
            f"rank {rank}: " + ", ".join(f"{k}={v}" for k, v in sorted(terms.items()))
            for rank, terms in enumerate(per_rank)
            if terms
        )
        failed = sorted({k for terms in per_rank for k in terms})
        where = "" if iteration is None else f" at iteration {iteration}"
        raise NonFiniteLossError(
            f"Non-finite loss{where}: {', '.join(failed)} ({details}). Training stopped; lower the learning "
            "rate or check the inputs.",
            iteration,
        )

    def hook(self) -> HookBase:
        """The trainer hook that checks each step's losses after the backward pass."""
        return _CheckAfterBackward(self)


class _CheckAfterBackward(HookBase):
    def __init__(self, guard: FiniteLossGuard):
        self.guard = guard

    def after_backward(self):
        self.guard.check(self.trainer.iter)
