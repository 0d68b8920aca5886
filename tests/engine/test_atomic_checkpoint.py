import os

import pytest
import torch
from torch import nn

from sparse_detr.engine import AtomicDetectionCheckpointer


def test_save_writes_complete_files_and_tags_the_last(tmp_path):
    model = nn.Linear(3, 2)
    optimizer = torch.optim.SGD(model.parameters(), 0.1)
    checkpointer = AtomicDetectionCheckpointer(model, str(tmp_path), extra=optimizer)
    checkpointer.save("model_0000009", iteration=9)
    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_0000009.pth"]  # no temporary files
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000009.pth"
    data = torch.load(tmp_path / "model_0000009.pth", weights_only=True)
    assert data["iteration"] == 9 and set(data) == {"model", "extra", "iteration"}
    torch.testing.assert_close(data["model"]["weight"], model.weight.detach())


def test_an_interrupted_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    model = nn.Linear(3, 2)
    checkpointer = AtomicDetectionCheckpointer(model, str(tmp_path))
    checkpointer.save("model_final")
    before = (tmp_path / "model_final.pth").read_bytes()

    def crash_midway(obj, f, *args, **kwargs):
        f.write(b"partial")
        raise KeyboardInterrupt("killed while saving")

    monkeypatch.setattr(torch, "save", crash_midway)
    with torch.no_grad():
        model.weight.add_(1.0)
    with pytest.raises(KeyboardInterrupt):
        checkpointer.save("model_final")
    assert (tmp_path / "model_final.pth").read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_final.pth"]


def _dead_pid() -> int:
    import subprocess
    import sys

    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_temporary_files_of_killed_runs_are_removed(tmp_path):
    stale = tmp_path / f".model_0000004.pth.tmp{_dead_pid()}"
    stale.write_bytes(b"partial")
    alive = tmp_path / f".model_0000005.pth.tmp{os.getpid()}"  # a save in progress in this process
    alive.write_bytes(b"partial")
    AtomicDetectionCheckpointer(nn.Linear(3, 2), str(tmp_path))
    assert not stale.exists() and alive.exists()


def test_non_finite_weights_are_never_saved(tmp_path):
    from sparse_detr.engine.checkpoint import NonFiniteWeightsError

    model = nn.Linear(3, 2)
    checkpointer = AtomicDetectionCheckpointer(model, str(tmp_path))
    checkpointer.save("model_0000001")
    with torch.no_grad():
        model.bias[0] = float("nan")
    with pytest.raises(
        NonFiniteWeightsError, match=r"model_0000003.*1 weight tensor.*bias.*model_0000001\.pth"
    ):
        checkpointer.save("model_0000003")
    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_0000001.pth"]
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000001.pth"


def test_max_to_keep_counts_the_files_of_earlier_runs(tmp_path):
    from sparse_detr.engine.checkpoint import PersistentPeriodicCheckpointer

    model = nn.Linear(3, 2)
    for restart in range(4):  # a job killed and resumed several times, 3 checkpoints per run
        hook = PersistentPeriodicCheckpointer(
            AtomicDetectionCheckpointer(model, str(tmp_path)), period=1, max_to_keep=3
        )
        for iteration in range(3 * restart, 3 * restart + 3):
            hook.step(iteration)
    assert sorted(p.name for p in tmp_path.glob("*.pth")) == [
        "model_0000009.pth",
        "model_0000010.pth",
        "model_0000011.pth",
    ]
    # a restart from scratch rewriting iteration 0 keeps the newest three, the rewritten one included
    hook = PersistentPeriodicCheckpointer(
        AtomicDetectionCheckpointer(model, str(tmp_path)), period=1, max_to_keep=3
    )
    hook.step(0)
    assert sorted(p.name for p in tmp_path.glob("*.pth")) == [
        "model_0000000.pth",
        "model_0000010.pth",
        "model_0000011.pth",
    ]


@pytest.mark.parametrize(
    "settings, key", [({"period": 0}, "period"), ({"period": 5, "max_to_keep": 0}, "max_to_keep")]
)
def test_checkpoint_settings_are_validated(tmp_path, settings, key):
    from sparse_detr.engine.checkpoint import PersistentPeriodicCheckpointer

    with pytest.raises(ValueError, match=rf"train\.checkpointer\.{key}"):
        PersistentPeriodicCheckpointer(
            AtomicDetectionCheckpointer(nn.Linear(3, 2), str(tmp_path)), **settings
        )


def test_the_checkpoint_of_a_diverged_step_is_set_aside(tmp_path):
    from sparse_detr.engine.checkpoint import set_aside_diverged_checkpoint

    checkpointer = AtomicDetectionCheckpointer(nn.Linear(3, 2), str(tmp_path))
    checkpointer.save("model_0000001")
    checkpointer.save("model_0000003")
    assert set_aside_diverged_checkpoint(checkpointer, failed_iteration=9) is None  # an older checkpoint
    assert set_aside_diverged_checkpoint(checkpointer, failed_iteration=4).endswith(
        "model_0000003.pth.diverged"
    )
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000001.pth"
    assert (tmp_path / "model_0000003.pth.diverged").is_file()
