import pytest
import torch
from detectron2.config import instantiate
from detectron2.solver import LRMultiplier

from sparse_detr.engine.schedule import COCO_TRAIN2017_IMAGES, epoch_step_schedule, iterations_per_epoch


def test_paper_schedule_in_iterations():
    assert iterations_per_epoch(COCO_TRAIN2017_IMAGES, 16) == 7393
    max_iter, multiplier = epoch_step_schedule(50, [40], COCO_TRAIN2017_IMAGES, 16)
    assert max_iter == 50 * 7393
    assert list(multiplier.milestones) == [40 * 7393]


def _lrs(max_iter, multiplier_cfg, run_iter):
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=1.0)
    scheduler = LRMultiplier(optimizer, instantiate(multiplier_cfg), run_iter)
    lrs = []
    for _ in range(run_iter):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


def test_lr_drops_by_ten_at_the_drop_epoch():
    max_iter, multiplier = epoch_step_schedule(5, [4], dataset_size=20, total_batch_size=4)
    lrs = _lrs(max_iter, multiplier, max_iter)
    assert max_iter == 25
    assert lrs[19] == pytest.approx(1.0) and lrs[20] == pytest.approx(0.1) and lrs[-1] == pytest.approx(0.1)
    # a shortened run keeps the drop at the same fraction of the run (80 %)
    short = _lrs(max_iter, multiplier, 10)
    assert short[7] == pytest.approx(1.0) and short[8] == pytest.approx(0.1)


def test_bad_drop_epochs_are_rejected():
    with pytest.raises(ValueError, match="drop_epochs"):
        epoch_step_schedule(5, [6], dataset_size=20, total_batch_size=4)
    with pytest.raises(ValueError, match="total_batch_size"):
        iterations_per_epoch(10, 0)
