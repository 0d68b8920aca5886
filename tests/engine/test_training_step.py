"""What every Detectron2 trainer gets from the optimizer and the model: clipping, per-iteration seeding; and
the loss guard of train_net.py."""
import math

import pytest
import torch
from detectron2.engine import SimpleTrainer
from torch import nn

from sparse_detr.engine import ClippedAdamW
from sparse_detr.engine.loss_guard import FiniteLossGuard, NonFiniteLossError
from sparse_detr.modeling.training_rng import seed_for_trainer_iteration


class NoisyRegression(nn.Module):
    """Loss uses torch's global RNG (like dropout) so seeding is observable."""

    def __init__(self, seed: int | None = None):
        super().__init__()
        self.linear = nn.Linear(4, 1)
        self.seed = seed
        self.noise_seen = []

    def forward(self, batch):
        if self.seed is not None:
            seed_for_trainer_iteration(self.seed)
        noise = torch.rand(())
        self.noise_seen.append(float(noise))
        return {"loss_fit": ((self.linear(batch) - 100.0) ** 2).mean() * (1 + noise)}


def _endless(batch):
    while True:
        yield batch


def test_clipped_adamw_clips_the_total_norm_before_the_adamw_step():
    torch.manual_seed(0)
    model, reference = NoisyRegression(), NoisyRegression()
    reference.load_state_dict(model.state_dict())
    optimizer = ClippedAdamW(model.parameters(), lr=1e-2, weight_decay=1e-4, clip_max_norm=0.1)
    expected = torch.optim.AdamW(reference.parameters(), lr=1e-2, weight_decay=1e-4)
    batch = torch.ones(8, 4)
    for _ in range(3):
        for module, optim in ((model, optimizer), (reference, expected)):
            optim.zero_grad()
            torch.manual_seed(1)
            module(batch)["loss_fit"].backward()
        norm = torch.nn.utils.clip_grad_norm_(list(reference.parameters()), 0.1)
        assert norm > 1.0  # clipping is active
        optimizer.step()
        expected.step()
    for ours, theirs in zip(model.parameters(), reference.parameters()):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=0)


def test_clipped_adamw_logs_the_norm_inside_a_trainer_and_refuses_bad_norms():
    model = NoisyRegression()
    trainer = SimpleTrainer(model, _endless(torch.ones(8, 4)), ClippedAdamW(model.parameters(), lr=1e-3))
    trainer.train(0, 2)
    assert trainer.storage.history("grad_norm").latest() > 1.0  # the pre-clipping norm
    with pytest.raises(ValueError, match="optimizer.clip_max_norm"):
        ClippedAdamW(model.parameters(), clip_max_norm=-1.0)
    unclipped = ClippedAdamW(model.parameters(), clip_max_norm=None)
    assert unclipped.clip_max_norm is None


def test_the_model_seeding_makes_randomness_depend_on_the_trainer_iteration_only():
    def run(start_iter):
        model = NoisyRegression(seed=3)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
        trainer = SimpleTrainer(model, _endless(torch.ones(2, 4)), optimizer)
        torch.rand(5)  # unrelated history must not matter
        trainer.train(start_iter, 5)
        return model.noise_seen

    assert run(0)[2:] == run(2)
    assert not seed_for_trainer_iteration(3)  # outside a trainer: nothing to seed from


def test_non_finite_losses_stop_training_before_the_step_naming_the_terms():
    class Diverging(nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.ones(()))

        def forward(self, batch):
            return {
                "loss_ok": self.weight * 1.0,
                "loss_nan": self.weight * math.nan,
                "loss_inf": self.weight * math.inf,
            }

    model = Diverging()
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    trainer = SimpleTrainer(FiniteLossGuard(model), _endless(None), optimizer)
    with pytest.raises(NonFiniteLossError, match="at iteration 0: loss_inf, loss_nan") as error:
        trainer.train(0, 2)
    assert "loss_ok" not in str(error.value)
    assert float(model.weight.detach()) == 1.0  # the optimizer never stepped
