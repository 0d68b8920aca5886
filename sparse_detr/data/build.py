"""A training loader whose batches depend only on (seed, iteration, rank): resumable exactly.

Detectron2's ``build_detection_train_loader`` draws its sample order and its augmentation randomness from
process-global state that a restarted job does not recover, so a job resumed at iteration k sees other
images than an uninterrupted one. Here the batch of iteration ``i`` on rank ``r`` is a pure function:

- sample positions ``i * total_batch_size + r * per_rank + j`` (``j < per_rank``) of an endless stream;
- position ``p`` is image ``perm_e[p % N]`` with ``e = p // N`` and ``perm_e`` a permutation seeded by
  ``(seed, e)`` (one shuffled pass over the N images per epoch, like DETR's sampler);
- its augmentation runs with NumPy's global generator (which Detectron2 augmentations use) seeded by
  ``(seed, p, attempt)``.

A loader started at ``start_iter = k`` therefore continues exactly where an uninterrupted run would be,
whatever the number of data-loading workers. Left at None, the start is the iteration of the Detectron2
trainer that first iterates the loader (its ``EventStorage``), which is how a trainer that builds the loader
before resuming (Detectron2's ``tools/lazyconfig_train_net.py``) resumes exactly too.
"""
from __future__ import annotations

import contextlib
import itertools
import logging
from collections.abc import Callable, Iterator

import numpy as np
import torch
import torch.utils.data as torchdata
from detectron2.config import CfgNode, instantiate
from detectron2.data.common import DatasetFromList
from detectron2.utils import comm
from detectron2.utils.events import get_event_storage, has_event_storage
from omegaconf import OmegaConf

__all__ = ["IterationBatches", "build_dataset_test_loader", "build_resumable_train_loader"]

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def _numpy_global_seed(seed: list[int]) -> Iterator[None]:
    """Seed ``np.random`` inside the block and restore its previous state afterwards."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


class IterationBatches(torchdata.Dataset):
    """Map-style dataset: item ``i`` is the list of mapped dataset dicts of iteration ``i`` on one rank."""

    def __init__(
        self,
        dataset: list[dict],
        mapper: Callable[[dict], dict | None],
        total_batch_size: int,
        seed: int,
        rank: int,
        world_size: int,
        max_attempts: int = 20,
    ):
        if total_batch_size % world_size != 0:
            raise ValueError(
                f"total_batch_size ({total_batch_size}) must be divisible by the number of processes "
                f"({world_size})"
            )
        if len(dataset) == 0:
            raise ValueError("the training dataset is empty")
        self.dataset = DatasetFromList(dataset, copy=False, serialize=True)
        self.mapper = mapper
        self.total_batch_size = total_batch_size
        self.batch_size_per_rank = total_batch_size // world_size
        self.seed = seed
        self.rank = rank
        self.max_attempts = max_attempts
        self._permutation_epoch = -1
        self._permutation = np.arange(len(self.dataset))

    def dataset_index(self, position: int) -> int:
        """Index in the dataset of stream position ``position``."""
        epoch, offset = divmod(position, len(self.dataset))
        if epoch != self._permutation_epoch:
            self._permutation = np.random.default_rng([self.seed, epoch]).permutation(len(self.dataset))
            self._permutation_epoch = epoch
        return int(self._permutation[offset])

    def _map_position(self, position: int) -> dict:
        """The mapped sample at a stream position; a sample the mapper skips is replaced deterministically."""
        index = self.dataset_index(position)
        for attempt in range(self.max_attempts):
            with _numpy_global_seed([self.seed, position, attempt]):
                mapped = self.mapper(self.dataset[index])
            if mapped is not None:
                return mapped
            index = int(np.random.default_rng([self.seed, position, attempt, 1]).integers(len(self.dataset)))
        raise RuntimeError(
            f"the mapper skipped {self.max_attempts} samples in a row at stream position {position} "
            "(are most images unreadable?)"
        )

    def __getitem__(self, iteration: int) -> list[dict]:
        first = iteration * self.total_batch_size + self.rank * self.batch_size_per_rank
        return [self._map_position(first + j) for j in range(self.batch_size_per_rank)]


class _IterationsFrom(torchdata.Sampler):
    """Yields start, start + 1, ... forever; a None start is the running trainer's iteration (else 0)."""

    def __init__(self, start: int | None):
        self.start = start

    def __iter__(self) -> Iterator[int]:
        start = self.start
        if start is None:
            start = get_event_storage().iter if has_event_storage() else 0
            logger.info(f"Resumable train loader: starting at iteration {start}")
        return itertools.count(start)


def _as_list(batch: list[dict]) -> list[dict]:
    return batch


def build_resumable_train_loader(
    dataset: list[dict],
    mapper: Callable[[dict], dict | None],
    total_batch_size: int,
    num_workers: int = 0,
    seed: int = 0,
    start_iter: int | None = None,
) -> torchdata.DataLoader:
    """An endless loader of per-rank batches (lists of mapped dicts) starting at iteration ``start_iter``.

    Args:
        dataset: Detectron2 dataset dicts (e.g. from ``get_detection_dataset_dicts``).
        mapper: dataset dict -> model input dict, or None to skip the sample.
        total_batch_size: images per iteration over all processes.
        num_workers: data-loading worker processes per training process (0 = in the main process).
        seed: seed of the sample order and of the augmentations.
        start_iter: the first iteration to produce (the resume point); None: the iteration of the trainer
            when it starts iterating the loader (0 outside a trainer).
    """
    batches = IterationBatches(
        dataset, mapper, total_batch_size, seed, rank=comm.get_rank(), world_size=comm.get_world_size()
    )
    logger.info(
        f"Resumable train loader: {len(batches.dataset)} images, {batches.batch_size_per_rank} per process"
        + ("" if start_iter is None else f", starting at iteration {start_iter}")
    )
    return torchdata.DataLoader(
        batches,
        batch_size=None,
        sampler=_IterationsFrom(start_iter),
        num_workers=num_workers,
        collate_fn=_as_list,
        # a private generator: creating the iterator must not consume the global torch RNG, which drives
        # dropout (seeded per iteration by train_net.py's IterationSeeding)
        generator=torch.Generator().manual_seed(seed),
    )


def build_dataset_test_loader(cfg, dataset: str):
    """The config's test data loader, reading ``dataset`` in the main process."""
    if isinstance(cfg, CfgNode):
        from detectron2.data import build_detection_test_loader

        return build_detection_test_loader(cfg, dataset)
    if OmegaConf.select(cfg, "dataloader.test") is None:
        raise ValueError(f"dataset {dataset!r}: the config has no dataloader.test to read it with")
    test = cfg.dataloader.test
    test.dataset.names = dataset
    if "num_classes" in test.dataset:
        test.dataset.num_classes = None  # images only: any dataset, whatever the model's classes
    test.num_workers = 0
    return instantiate(test)
