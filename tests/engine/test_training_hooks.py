import math

import pytest
import torch
from detectron2.engine import HookBase, SimpleTrainer
from torch import nn

from sparse_detr.engine import FiniteLossGuard, GradientClipper, IterationSeeder, NonFiniteLossError


class NoisyRegression(nn.Module):
    """Loss uses torch's global RNG (like dropout) so seeding is observable."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(4, 1)
        self.noise_seen = []

    def forward(self, batch):
        noise = torch.rand(())
        self.noise_seen.append(float(noise))
        return {"loss_fit": ((self.linear(batch) - 100.0) ** 2).mean() * (1 + noise)}


def _endless(batch):
    while True:
        yield batch


class RecordGradNorm(HookBase):
    def __init__(self):
        self.norms = []

    def after_backward(self):
        grads = [p.grad for p in self.trainer.model.parameters() if p.grad is not None]
        self.norms.append(float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))))


def test_gradient_clipper_bounds_the_total_norm():
    model = NoisyRegression()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    trainer = SimpleTrainer(model, _endless(torch.ones(8, 4)), optimizer)
    recorder = RecordGradNorm()
    trainer.register_hooks([GradientClipper(max_norm=0.1), recorder])
    trainer.train(0, 3)
    assert all(n <= 0.1 + 1e-6 for n in recorder.norms)
    assert trainer.storage.history("grad_norm").latest() > 1.0  # the pre-clipping norm is logged
    with pytest.raises(ValueError, match="max_norm"):
        GradientClipper(max_norm=0)


def test_iteration_seeder_makes_randomness_depend_on_the_iteration_only():
    def run(start_iter):
        model = NoisyRegression()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
        trainer = SimpleTrainer(model, _endless(torch.ones(2, 4)), optimizer)
        trainer.register_hooks([IterationSeeder(seed=3)])
        torch.rand(5)  # unrelated history must not matter
        trainer.train(start_iter, 5)
        return model.noise_seen

    assert run(0)[2:] == run(2)


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
