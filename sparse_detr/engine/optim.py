"""Optimiser parameter groups of Deformable / Sparse DETR (official ``main.py``).

Three groups, matched on parameter names: the backbone at ``backbone_lr_factor`` x the base lr, the sampling
offset and reference point projections of the deformable attention at ``linear_proj_lr_factor`` x, and the
rest at the base lr. Weight decay applies to every parameter, as in the official code.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["detr_param_groups"]


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
