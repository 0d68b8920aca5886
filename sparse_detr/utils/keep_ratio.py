"""The keep ratio rho's domain, defined once: a finite number in (0, 1] (1 = dense encoder).

Every door that takes a rho (the scorer's setter, the config check, the tools' ``--rho``, an exported
session's input) reads it through :func:`check_keep_ratio`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

__all__ = ["KEEP_RATIO_KEY", "KEEP_RATIO_RANGE", "check_keep_ratio"]

KEEP_RATIO_RANGE = "(0, 1]"
KEEP_RATIO_KEY = "MODEL.SPARSE_DETR.KEEP_RATIO (LazyConfig: model.token_scorer.keep_ratio)"


def check_keep_ratio(value: Any, key: str = KEEP_RATIO_KEY) -> float:
    """``value`` as a Python float if it is one finite number in (0, 1], else ValueError naming ``key``.

    A boolean is refused (``True`` is not 1.0); a one-element tensor or array is read without its autograd
    graph (``.detach()``), so a tensor that requires grad is accepted like any other number.
    """
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    if isinstance(value, (bool, np.bool_)) or getattr(value, "dtype", None) == np.bool_:
        raise ValueError(f"{key} must be a number in {KEEP_RATIO_RANGE}, got the boolean {value!r}")
    try:
        array = np.asarray(value)
        if array.dtype.kind not in "iuf":  # strings, objects
            raise TypeError
        number = float(array.astype(np.float64).reshape(()))
    except (TypeError, ValueError):
        raise ValueError(f"{key} must be one number in {KEEP_RATIO_RANGE}, got {value!r}") from None
    if not math.isfinite(number) or not 0.0 < number <= 1.0:
        raise ValueError(f"{key} must be in {KEEP_RATIO_RANGE}, got {number}")
    return number
