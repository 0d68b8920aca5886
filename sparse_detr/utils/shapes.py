"""Decisions on tensor sizes that hold in eager mode, under ``torch.jit.trace`` and under ``torch.export``."""

from __future__ import annotations

import torch
from torch.fx.experimental.symbolic_shapes import statically_known_true

__all__ = ["known_true"]


def known_true(condition) -> bool:
    """Whether a condition on sizes certainly holds.

    A Python bool is itself; a symbolic condition (``torch.export``, dynamic sizes) only when provable, so the
    branch taken does not depend on the example's sizes; a tensor (``torch.jit.trace``, e.g. fvcore's FLOP
    count, traces sizes as tensors) by its value at the traced size.
    """
    if isinstance(condition, torch.Tensor):
        return bool(condition)
    return statically_known_true(condition)
