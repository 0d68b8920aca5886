"""argparse ``type=`` functions for the numeric options of the command-line tools.

A count of 0 or below (``--top-k 0``, ``--num-images -1``) otherwise draws nothing or slices a list from its
end, a threshold outside [0, 1] (``--confidence-threshold 1.5``) silently keeps no detection or all of them,
and ``nan`` passes every comparison. With these types argparse refuses the value before anything is loaded,
naming the option (``argument --top-k: must be a whole number >= 1, got '0'``).
"""

from __future__ import annotations

import argparse
import math

from ..utils.keep_ratio import KEEP_RATIO_RANGE, check_keep_ratio

__all__ = ["keep_ratio", "non_negative_int", "positive_int", "unit_interval"]


def _integer(text: str, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or value < minimum:
        raise argparse.ArgumentTypeError(f"must be a whole number >= {minimum}, got {text!r}")
    return value


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """A count of at least 1 (images, queries, runs, threads, pixels)."""
    return _integer(text, 1)


def non_negative_int(text: str) -> int:
    """A count that may be 0 (e.g. warm-up runs)."""
    return _integer(text, 0)


def unit_interval(text: str) -> float:
    """A score threshold in [0, 1] (the model's scores are sigmoid probabilities)."""
    value = _number(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(
            f"must be in [0, 1] (detection scores are probabilities), got {text!r}"
        )
    return value


def keep_ratio(text: str) -> float:
    """An encoder keeping ratio rho (:mod:`sparse_detr.utils.keep_ratio`; 1 = dense)."""
    try:
        return check_keep_ratio(_number(text))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be in {KEEP_RATIO_RANGE} (the share of tokens the encoder refines; 1 = all), got {text!r}"
        ) from None
