import numpy as np
import pytest
import torch

from sparse_detr.data.build import IterationBatches, build_resumable_train_loader

DATASET = [{"index": i} for i in range(10)]


def noisy_mapper(record):
    """Uses NumPy's global generator like Detectron2's augmentations do."""
    return {"index": record["index"], "noise": float(np.random.uniform()), "image": torch.zeros(1)}


def _summary(batch):
    return [(x["index"], x["noise"]) for x in batch]


@pytest.mark.parametrize("num_workers", [0, 1])
def test_a_loader_started_at_k_continues_the_uninterrupted_stream(num_workers):
    def loader(**kwargs):
        return iter(build_resumable_train_loader(DATASET, noisy_mapper, total_batch_size=3, **kwargs))

    full = loader(num_workers=num_workers, seed=7)
    uninterrupted = [_summary(next(full)) for _ in range(8)]
    resumed = loader(num_workers=0, seed=7, start_iter=5)
    assert [_summary(next(resumed)) for _ in range(3)] == uninterrupted[5:]
    other_seed = loader(seed=8)
    assert _summary(next(other_seed)) != uninterrupted[0]


def test_every_epoch_is_a_permutation_of_the_dataset():
    batches = IterationBatches(DATASET, noisy_mapper, total_batch_size=2, seed=0, rank=0, world_size=1)
    epochs = [[batches.dataset_index(p) for p in range(e * 10, (e + 1) * 10)] for e in range(3)]
    assert all(sorted(epoch) == list(range(10)) for epoch in epochs)
    assert epochs[0] != epochs[1]


def test_ranks_get_disjoint_parts_of_each_iteration():
    rank_batches = [
        IterationBatches(DATASET, noisy_mapper, total_batch_size=4, seed=0, rank=rank, world_size=2)[3]
        for rank in (0, 1)
    ]
    single = IterationBatches(DATASET, noisy_mapper, total_batch_size=4, seed=0, rank=0, world_size=1)[3]
    assert _summary(rank_batches[0]) + _summary(rank_batches[1]) == _summary(single)
    with pytest.raises(ValueError, match="divisible"):
        IterationBatches(DATASET, noisy_mapper, total_batch_size=3, seed=0, rank=0, world_size=2)


def test_skipped_samples_are_replaced_deterministically():
    def skip_odd(record):
        return None if record["index"] % 2 else noisy_mapper(record)

    batches = IterationBatches(DATASET, skip_odd, total_batch_size=4, seed=0, rank=0, world_size=1)
    first = _summary(batches[2])
    assert len(first) == 4 and all(index % 2 == 0 for index, _ in first)
    assert _summary(batches[2]) == first

    never = IterationBatches(DATASET, lambda record: None, total_batch_size=1, seed=0, rank=0, world_size=1)
    with pytest.raises(RuntimeError, match="skipped"):
        never[0]


def test_global_numpy_state_is_restored():
    batches = IterationBatches(DATASET, noisy_mapper, total_batch_size=2, seed=0, rank=0, world_size=1)
    np.random.seed(123)
    expected = np.random.uniform()
    np.random.seed(123)
    batches[0]
    assert np.random.uniform() == expected


def test_creating_the_loader_iterator_leaves_the_global_torch_rng_alone():
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    next(iter(build_resumable_train_loader(DATASET, noisy_mapper, total_batch_size=2, seed=1)))
    torch.testing.assert_close(torch.rand(3), expected)
