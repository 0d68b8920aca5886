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
