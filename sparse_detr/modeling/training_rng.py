"""Per-iteration seeding of the training randomness, for an exact resume under any Detectron2 trainer.

The model's randomness in training (dropout, the random token scorer) draws from the global RNGs. Seeded from
``(seed, iteration, rank)`` at the start of every training forward, it depends on the iteration alone, so a
run resumed from a checkpoint at iteration k reproduces the uninterrupted run exactly. The iteration is the
one of the running trainer (Detectron2's ``EventStorage``, kept equal to ``trainer.iter`` by every
``TrainerBase``), so nothing but the model is needed: ``train_net.py`` and Detectron2's
``tools/lazyconfig_train_net.py`` seed the same way.
"""
from __future__ import annotations

import random

import numpy as np
import torch
from detectron2.utils import comm
from detectron2.utils.events import get_event_storage, has_event_storage

__all__ = ["seed_for_trainer_iteration", "trainer_iteration"]


def trainer_iteration() -> int | None:
    """The iteration of the running Detectron2 trainer, or None outside one."""
    return get_event_storage().iter if has_event_storage() else None


def seed_for_trainer_iteration(seed: int) -> bool:
    """Seed torch / NumPy / Python RNGs from ``(seed, trainer iteration, rank)``; False outside a trainer."""
    iteration = trainer_iteration()
    if iteration is None:
        return False
    sequence = np.random.SeedSequence([seed, iteration, comm.get_rank()])
    step_seed = int(sequence.generate_state(1)[0])
    torch.manual_seed(step_seed)
    np.random.seed(step_seed)
    random.seed(step_seed)
    return True
