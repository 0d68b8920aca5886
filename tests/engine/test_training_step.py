"""What every Detectron2 trainer gets from the optimizer: clipping; and what train_net.py adds: per-iteration
seeding (a trainer hook) and the loss guard."""
import math

import pytest
import torch
from detectron2.engine import SimpleTrainer
from torch import nn

from sparse_detr.engine import ClippedAdamW
from sparse_detr.engine.loss_guard import FiniteLossGuard, NonFiniteLossError
from sparse_detr.engine.seeding import IterationSeeding


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


def test_clipped_adamw_logs_the_norm_every_log_period_and_refuses_bad_norms():
    model = NoisyRegression()
    optimizer = ClippedAdamW(model.parameters(), lr=1e-3, log_period=2)
    trainer = SimpleTrainer(model, _endless(torch.ones(8, 4)), optimizer)
    trainer.train(0, 5)
    logged = trainer.storage.history("grad_norm").values()
    assert [iteration for _, iteration in logged] == [1, 3]  # read only where the writers write
    assert min(norm for norm, _ in logged) > 1.0  # the pre-clipping norm
    with pytest.raises(ValueError, match="optimizer.clip_max_norm"):
        ClippedAdamW(model.parameters(), clip_max_norm=-1.0)
    unclipped = ClippedAdamW(model.parameters(), clip_max_norm=None)
    assert unclipped.clip_max_norm is None


def test_the_seeding_hook_makes_randomness_depend_on_the_trainer_iteration_only():
    def run(start_iter, seed=3):
        model = NoisyRegression()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
        trainer = SimpleTrainer(model, _endless(torch.ones(2, 4)), optimizer)
        trainer.register_hooks([IterationSeeding(seed)])
        torch.rand(5)  # unrelated history must not matter
        trainer.train(start_iter, 5)
        return model.noise_seen

    assert run(0)[2:] == run(2)
    assert len(set(run(0))) == 5 and run(0, seed=4) != run(0)


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
    guard = FiniteLossGuard(model)
    trainer = SimpleTrainer(guard, _endless(None), optimizer)
    trainer.register_hooks([guard.hook()])
    with pytest.raises(NonFiniteLossError, match="at iteration 0: loss_inf, loss_nan") as error:
        trainer.train(0, 2)
    assert "loss_ok" not in str(error.value) and "rank 0: loss_inf=inf, loss_nan=nan" in str(error.value)
    assert float(model.weight.detach()) == 1.0  # the optimizer never stepped


def test_a_guard_without_its_hook_refuses_to_train_unchecked():
    model = nn.Linear(4, 1)
    guard = FiniteLossGuard(lambda batch: {"loss": model(batch).sum()})
    trainer = SimpleTrainer(guard, _endless(torch.ones(2, 4)), torch.optim.SGD(model.parameters(), lr=0.1))
    with pytest.raises(RuntimeError, match=r"register guard\.hook\(\)"):
        trainer.train(0, 2)


def _train_two_ranks(rank: int, port: int, results) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    weight = nn.Parameter(torch.ones(()))

    def model(iteration):  # rank 1 diverges at iteration 2
        diverged = rank == 1 and iteration >= 2
        return {"loss_ok": weight * 1.0, "loss_nan": weight * (math.nan if diverged else 1.0)}

    guard = FiniteLossGuard(model)
    trainer = SimpleTrainer(guard, iter(range(10)), torch.optim.SGD([weight], lr=0.1))
    trainer.register_hooks([guard.hook()])
    try:
        trainer.train(0, 5)
        results[rank] = "trained on"
    except NonFiniteLossError as error:
        results[rank] = (str(error), error.iteration, float(weight.detach()))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_a_non_finite_loss_on_one_rank_stops_every_rank_before_the_step():
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    results = mp.Manager().dict()
    mp.spawn(_train_two_ranks, args=(port, results), nprocs=2)
    for rank in (0, 1):
        message, iteration, weight = results[rank]
        assert iteration == 2 and "loss_nan (rank 1: loss_nan=nan)" in message
        assert weight == pytest.approx(1.0 - 2 * 0.1 * 2)  # two steps taken, the third stopped
