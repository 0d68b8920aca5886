"""The optimiser of Deformable / Sparse DETR (official ``main.py``): parameter groups and clipped AdamW.

Three groups, matched on parameter names: the backbone at ``backbone_lr_factor`` x the base lr, the sampling
offset and reference point projections of the deformable attention at ``linear_proj_lr_factor`` x, and the
rest at the base lr. Weight decay applies to every parameter, as in the official code.

The official training clips the gradient norm of all parameters together (``--clip_max_norm 0.1``) before
every step. :class:`ClippedAdamW` does it inside ``step()``, so the clipping travels with the optimizer that
the config builds and any Detectron2 trainer (``SimpleTrainer``, ``AMPTrainer``, through ``train_net.py`` or
Detectron2's ``tools/lazyconfig_train_net.py``) trains the same model.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence

import torch
from detectron2.utils.events import get_event_storage, has_event_storage
from torch import nn

__all__ = ["ClippedAdamW", "detr_param_groups"]


def detr_param_groups(
    model: nn.Module,
    base_lr: float,
    backbone_lr_factor: float = 0.1,
    linear_proj_lr_factor: float = 0.1,
    backbone_keywords: Sequence[str] = ("backbone.",),
    linear_proj_keywords: Sequence[str] = ("reference_points", "sampling_offsets"),
) -> list[dict]:
    """Parameter groups for ``torch.optim`` (frozen parameters are left out, empty groups dropped).

    A parameter whose name contains one of ``backbone_keywords`` goes to the backbone group; otherwise one
    containing one of ``linear_proj_keywords`` goes to the projection group (the official substring match).

    Returns:
        list of ``{"params": [...], "lr": float, "name": str}``; ``name`` is one of "backbone",
        "linear_proj", "default" (kept in the optimizer's state for logging).
    """
    groups: dict[str, list[torch.nn.Parameter]] = {"default": [], "backbone": [], "linear_proj": []}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        if any(keyword in name for keyword in backbone_keywords):
            groups["backbone"].append(parameter)
        elif any(keyword in name for keyword in linear_proj_keywords):
            groups["linear_proj"].append(parameter)
        else:
            groups["default"].append(parameter)
    factors = {"default": 1.0, "backbone": backbone_lr_factor, "linear_proj": linear_proj_lr_factor}
    return [
        {"params": params, "lr": base_lr * factors[name], "name": name}
        for name, params in groups.items()
        if params
    ]


class ClippedAdamW(torch.optim.AdamW):
    """``torch.optim.AdamW`` that clips the gradient norm of all its parameters together before each step.

    With ``AMPTrainer`` the ``GradScaler`` unscales the gradients before it calls ``step()``, so the threshold
    applies to the true gradients. The clipping itself never waits for the device; inside a Detectron2 trainer
    the norm before clipping is read and logged as ``grad_norm`` every ``log_period`` iterations only (the
    iterations whose metrics the writers record with ``train.log_period``).

    Args:
        params: parameters or parameter groups (e.g. :func:`detr_param_groups`).
        clip_max_norm: the maximum total norm (the paper's 0.1); None or 0 turns clipping off.
        clip_norm_type: the p of the p-norm.
        log_period: log ``grad_norm`` at the iterations i with (i + 1) % log_period == 0.
        **adamw_kwargs: ``lr``, ``betas``, ``weight_decay``, ... of ``torch.optim.AdamW``.
    """

    def __init__(
        self,
        params: Iterable,
        *,
        clip_max_norm: float | None = 0.1,
        clip_norm_type: float = 2.0,
        log_period: int = 20,
        **adamw_kwargs,
    ):
        if clip_max_norm is not None and not (math.isfinite(clip_max_norm) and clip_max_norm >= 0):
            raise ValueError(
                f"optimizer.clip_max_norm must be None, 0 (no clipping) or a finite positive norm, got "
                f"{clip_max_norm}"
            )
        super().__init__(params, **adamw_kwargs)
        self.clip_max_norm = clip_max_norm or None
        self.clip_norm_type = clip_norm_type
        self.log_period = log_period

    def step(self, closure: Callable[[], torch.Tensor] | None = None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        if self.clip_max_norm is not None:
            parameters = [p for group in self.param_groups for p in group["params"] if p.grad is not None]
            total_norm = torch.nn.utils.clip_grad_norm_(parameters, self.clip_max_norm, self.clip_norm_type)
            if has_event_storage() and (get_event_storage().iter + 1) % self.log_period == 0:
                get_event_storage().put_scalar("grad_norm", float(total_norm), smoothing_hint=True)
        super().step()
        return loss
