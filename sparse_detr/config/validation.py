"""Checks of a LazyConfig and its command-line overrides, run before anything is built.

A wrong value otherwise fails late and without its name: ``train.checkpointer.period=0`` divides by zero
after the first iteration, ``dataloader.train.total_batch_size=0`` is a bare ``AssertionError``,
``train.max_iter=0`` evaluates an untrained model and exits 0, ``model.token_scorer.keep_ratio=abc`` reaches
a ``float()`` deep inside the model. Each check here names the config key, its value and what is expected.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Sequence
from typing import Any

import torch
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, ListConfig, OmegaConf

from ..utils.keep_ratio import KEEP_RATIO_RANGE, check_keep_ratio

__all__ = [
    "check_command_line_overrides",
    "check_option_order",
    "check_override_keys",
    "check_override_types",
    "check_yacs_override_keys",
    "lazy_target_accepts",
    "validate_config",
]

_MISSING = object()


def check_option_order(
    opts: Sequence[str], usage: str = "train_net.py --config-file CONFIG [options]"
) -> None:
    """Refuse a command-line option (``--x``) among the ``key=value`` overrides, which must come last.

    argparse hands everything after the first override to the overrides, so ``key=v --eval-only`` would
    otherwise treat ``--eval-only`` as an override (or silently ignore it).
    """
    for position, opt in enumerate(opts):
        if opt.startswith("--") and len(opt) > 2:
            before = " ".join(opts[:position])
            raise ValueError(
                f"Option {opt!r} comes after the config overrides ({before!r}): options go first, "
                f"key=value overrides last: {usage} key=value ..."
            )


def lazy_target_accepts(node: Any, name: str) -> bool:
    """Whether a LazyCall node's target takes a keyword argument ``name``."""
    target = node.get("_target_") if isinstance(node, DictConfig) else None
    if target is None:
        return False
    if isinstance(target, str):
        from detectron2.utils.registry import locate

        target = locate(target)
    try:
        parameters = inspect.signature(target).parameters
    except (TypeError, ValueError):
        return False
    return name in parameters or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())


def check_override_keys(cfg: DictConfig, overrides: Sequence[str]) -> None:
    """Refuse ``key=value`` overrides of keys that neither exist nor are arguments of a LazyCall target.

    Without this, ``LazyConfig.apply_overrides`` adds a misspelt key (``model.neck.hiden_dim=64``) and the
    run goes on with the default. The error lists the keys that exist where the misspelt one was looked
    for; ``+key=value`` adds a new key on purpose.
    """
    for override in OverridesParser.create().parse_overrides(list(overrides)):
        key = override.key_or_group
        if override.is_add() or OmegaConf.select(cfg, key, default=_MISSING) is not _MISSING:
            continue
        parent_key, _, leaf = key.rpartition(".")
        parent = OmegaConf.select(cfg, parent_key, default=None) if parent_key else cfg
        if parent is not None and lazy_target_accepts(parent, leaf):
            continue
        if isinstance(parent, DictConfig):
            known = ", ".join(sorted(str(k) for k in parent if k != "_target_"))
            where = f"Keys under {parent_key or 'the config root'!r}: {known}."
        else:
            where = f"{parent_key!r} does not exist either." if parent_key else ""
        raise KeyError(
            f"Unknown config key {key!r} in override {override.input_line!r}. {where} "
            f"Use '+{override.input_line}' to add a new key on purpose."
        )


def check_yacs_override_keys(cfg: Any, opts: Sequence[str]) -> None:
    """Refuse yacs ``KEY VALUE`` overrides of unknown keys (or a key without its value), listing the keys
    that exist under the misspelt key's parent (yacs itself names only the key)."""
    if len(opts) % 2:
        raise ValueError(
            f"yacs config overrides come in KEY VALUE pairs; got {len(opts)} items: {' '.join(opts)!r}"
        )
    for key in opts[0::2]:
        node, path = cfg, []
        for part in key.split("."):
            if not hasattr(node, "keys") or part not in node:
                where = ".".join(path) or "the config root"
                known = ", ".join(sorted(node.keys())) if hasattr(node, "keys") else f"{where} is a value"
                raise KeyError(f"Unknown config key {key!r} in the overrides. Keys under {where!r}: {known}.")
            node = node[part]
            path.append(part)


def check_command_line_overrides(cfg: Any, opts: Sequence[str], usage: str) -> None:
    """The checks of a tool's trailing overrides, before they are applied to ``cfg``.

    Options among the overrides (``key=v --rho 0.2``) are refused with the ``usage`` line; for a
    LazyConfig, unknown keys (with the keys that exist) and values of the wrong kind; for a yacs
    ``CfgNode``, unknown keys.
    """
    check_option_order(opts, usage)
    if isinstance(cfg, DictConfig):
        check_override_keys(cfg, opts)
        check_override_types(cfg, opts)
    else:
        check_yacs_override_keys(cfg, opts)


def _default_of(parent: Any, name: str) -> Any:
    """The default of argument ``name`` of a LazyCall node's target, or ``_MISSING``."""
    target = parent.get("_target_") if isinstance(parent, DictConfig) else None
    if target is None:
        return _MISSING
    if isinstance(target, str):
        from detectron2.utils.registry import locate

        try:
            target = locate(target)
        except Exception:  # an unknown target is reported when the config is built
            return _MISSING
    try:
        parameter = inspect.signature(target).parameters.get(name)
    except (TypeError, ValueError):
        return _MISSING
    if parameter is None or parameter.default is inspect.Parameter.empty:
        return _MISSING
    return parameter.default


def _type_problem(current: Any, value: Any) -> str | None:
    """Why ``value`` cannot replace ``current`` (None when it can)."""
    if current is None or current is _MISSING or value is None:
        return None
    if isinstance(value, str) and "${" in value:  # an interpolation, resolved later
        return None
    if isinstance(current, bool):
        return None if isinstance(value, bool) else "expected true or false"
    if isinstance(current, (int, float)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return "expected a number"
        if isinstance(current, int) and isinstance(value, float) and not value.is_integer():
            return "expected a whole number"
        return None
    if isinstance(current, (list, tuple, ListConfig)) and not isinstance(value, (list, tuple)):
        return "expected a list, e.g. [1,2]"
    return None


def check_override_types(cfg: DictConfig, overrides: Sequence[str]) -> None:
    """Refuse ``key=value`` overrides whose value has the wrong kind for the key (a word for a number...).

    The kind expected is that of the key's current value, or of the default of the LazyCall argument it sets.
    """
    for override in OverridesParser.create().parse_overrides(list(overrides)):
        if override.is_delete():
            continue
        key = override.key_or_group
        value = override.value()
        current = OmegaConf.select(cfg, key, default=_MISSING, throw_on_resolution_failure=False)
        if current is _MISSING:
            parent_key, _, leaf = key.rpartition(".")
            parent = OmegaConf.select(cfg, parent_key, default=None) if parent_key else cfg
            current = _default_of(parent, leaf)
        if isinstance(current, DictConfig):
            continue
        problem = _type_problem(current, value)
        if problem:
            raise ValueError(
                f"Config override {override.input_line!r}: {key} {problem} (its current value is "
                f"{current!r}), got {value!r}"
            )


def _get(cfg: DictConfig, key: str) -> Any:
    return OmegaConf.select(cfg, key, default=_MISSING, throw_on_resolution_failure=False)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def validate_config(cfg: DictConfig, eval_only: bool = False, world_size: int = 1) -> None:
    """Raise one ``ValueError`` listing every invalid value (key, value, expectation) of a training config.

    Keys absent from the config are not checked. ``eval_only`` skips the training-only settings and
    requires weights.
    """
    problems: list[str] = []

    def check(key: str, ok, expectation: str, training_only: bool = False) -> None:
        if training_only and eval_only:
            return
        value = _get(cfg, key)
        if value is _MISSING:
            return
        try:
            fine = ok(value)
        except (TypeError, ValueError, RuntimeError):  # e.g. torch.device("gpu")
            fine = False
        if not fine:
            problems.append(f"{key}={value!r}: {expectation}")

    positive_int = lambda v: _is_int(v) and v > 0  # noqa: E731
    non_negative_int = lambda v: _is_int(v) and v >= 0  # noqa: E731
    check("train.max_iter", positive_int, "must be a positive number of iterations", training_only=True)
    check("train.checkpointer.period", positive_int, "must be a positive number of iterations", True)
    check(
        "train.checkpointer.max_to_keep",
        lambda v: v is None or positive_int(v),
        "must be a positive number of files or None (keep all)",
        True,
    )
    check("train.eval_period", non_negative_int, "must be 0 (evaluate at the end only) or positive", True)
    check("train.log_period", positive_int, "must be a positive number of iterations", True)
    check("train.seed", _is_int, "must be an integer")
    check("train.amp.enabled", lambda v: isinstance(v, bool), "must be true or false")
    check(
        "train.device",
        lambda v: isinstance(v, str) and torch.device(v) is not None,
        "must be 'cpu' or 'cuda'",
    )
    check(
        "dataloader.train.total_batch_size",
        lambda v: positive_int(v) and v % world_size == 0,
        f"must be a positive number of images divisible by the number of processes ({world_size})",
        True,
    )
    check("dataloader.train.num_workers", non_negative_int, "must be 0 or a positive number of workers", True)
    check("dataloader.test.num_workers", non_negative_int, "must be 0 or a positive number of workers")
    check(
        "optimizer.lr",
        lambda v: _is_number(v) and math.isfinite(v) and v > 0,
        "must be a finite positive number",
        True,
    )
    check(
        "optimizer.clip_max_norm",
        lambda v: v is None or (_is_number(v) and math.isfinite(v) and v >= 0),
        "must be None or 0 (no clipping) or a finite positive gradient norm",
        True,
    )
    check(
        "train.clip_grad",
        lambda v: False,
        "gradient clipping moved into the optimizer: set optimizer.clip_max_norm (0.1 in the paper; None "
        "turns it off) and delete train.clip_grad",
        True,
    )
    check("model.token_scorer.keep_ratio", check_keep_ratio, f"must be a number in {KEEP_RATIO_RANGE}")
    check("model.input_format", lambda v: v in ("RGB", "BGR"), "must be 'RGB' or 'BGR'")
    check(
        "model.top_detections.score_threshold",
        lambda v: _is_number(v) and 0 <= v <= 1,
        "must be a number in [0, 1] (0 keeps the top max_detections)",
    )
    check("model.heads.num_classes", positive_int, "must be a positive number of classes")
    if eval_only:
        check(
            "train.init_checkpoint",
            lambda v: isinstance(v, str) and v != "",
            "--eval-only needs weights: set train.init_checkpoint=PATH",
        )
    if problems:
        raise ValueError("Invalid config value(s):\n  " + "\n  ".join(problems))
