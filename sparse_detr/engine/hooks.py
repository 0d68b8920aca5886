"""Training hooks for Detectron2's trainers: gradient clipping and per-iteration seeding."""
from __future__ import annotations

import random

import numpy as np
import torch
from detectron2.engine import HookBase
from detectron2.utils import comm

__all__ = ["GradientClipper", "IterationSeeder"]


class GradientClipper(HookBase):
    """Clips the gradient norm of all model parameters together after backward (official ``clip_max_norm``).

    Works with ``AMPTrainer``: the gradients are unscaled first (``GradScaler.unscale_``), so the clipping
    threshold applies to the true gradients. The pre-clipping norm is logged as ``grad_norm``.
    """

    def __init__(self, max_norm: float, norm_type: float = 2.0):
        if max_norm <= 0:
            raise ValueError(f"train.clip_grad.max_norm must be > 0, got {max_norm}")
        self.max_norm = max_norm
        self.norm_type = norm_type

    def after_backward(self):
        grad_scaler = getattr(self.trainer, "grad_scaler", None)
        if grad_scaler is not None:
            grad_scaler.unscale_(self.trainer.optimizer)
        parameters = [
            p for group in self.trainer.optimizer.param_groups for p in group["params"] if p.grad is not None
        ]
        total_norm = torch.nn.utils.clip_grad_norm_(parameters, self.max_norm, self.norm_type)
        self.trainer.storage.put_scalar("grad_norm", float(total_norm), smoothing_hint=True)


class IterationSeeder(HookBase):
    """Seeds torch / NumPy / Python RNGs from ``(seed, iteration, rank)`` before every step.

    The model's randomness (dropout, the random token scorer) then depends only on the iteration, so a run
    resumed from a checkpoint at iteration k reproduces the uninterrupted run exactly.
    """

    def __init__(self, seed: int):
        self.seed = seed

    def before_step(self):
        sequence = np.random.SeedSequence([self.seed, self.trainer.iter, comm.get_rank()])
        step_seed = int(sequence.generate_state(1)[0])
        torch.manual_seed(step_seed)
        np.random.seed(step_seed)
        random.seed(step_seed)
