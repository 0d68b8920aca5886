"""Per-iteration seeding of the training randomness: a trainer hook, for an exact resume.

The model's randomness in training (dropout, the random token scorer) draws from the global RNGs. Seeded from
``(seed, iteration, rank)`` before every training step, it depends on the iteration alone, so a run resumed
from a checkpoint at iteration k reproduces the uninterrupted run exactly. ``train_net.py`` registers
:class:`IterationSeeding`; other trainers (Detectron2's ``tools/lazyconfig_train_net.py``) seed once per
process (``train.seed`` in ``default_setup``), as for Detectron2's own models.
"""
from __future__ import annotations

import random

import numpy as np
import torch
from detectron2.engine import HookBase
from detectron2.utils import comm

__all__ = ["IterationSeeding", "seed_for_iteration"]


def seed_for_iteration(seed: int, iteration: int) -> None:
    """Seed torch / NumPy / Python RNGs from ``(seed, iteration, this process's rank)``."""
    sequence = np.random.SeedSequence([seed, iteration, comm.get_rank()])
    step_seed = int(sequence.generate_state(1)[0])
    torch.manual_seed(step_seed)
    np.random.seed(step_seed)
    random.seed(step_seed)


class IterationSeeding(HookBase):
    """Before each training step, seed the global RNGs from ``(seed, trainer.iter, rank)``.

    Register it first, so that no other hook's ``before_step`` draws from the RNGs before it.
    """

    def __init__(self, seed: int):
        self.seed = seed

    def before_step(self):
        seed_for_iteration(self.seed, self.trainer.iter)
