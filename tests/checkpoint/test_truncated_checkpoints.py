"""A truncated checkpoint is named by every loader: convert_official.py as train_net.py's loader does."""

from __future__ import annotations

import argparse
import pickle
import re
from pathlib import Path

import pytest
import torch

from sparse_detr.engine import SafeDetectionCheckpointer
from tests.helpers.project_scripts import load_script

convert_official = load_script("convert_official")

# cut points: inside the header, the pickled structure, the tensor data, just before the end
CUTS = (0.02, 0.1, 0.5, 0.99)


@pytest.fixture(params=[True, False], ids=["zip", "legacy"])
def truncated(request, tmp_path):
    """``make(fraction) -> path`` of an official-style checkpoint cut to ``fraction`` of its bytes."""
    full = tmp_path / "full.pth"
    checkpoint = {"model": {"backbone.weight": torch.arange(4000.0)}, "args": argparse.Namespace(lr=1e-4)}
    torch.save(checkpoint, full, _use_new_zipfile_serialization=request.param)
    data = full.read_bytes()

    def make(fraction: float) -> Path:
        path = tmp_path / f"cut_{fraction}.pth"
        path.write_bytes(data[: max(1, int(len(data) * fraction))])
        return path

    return make


def _refusal(path: Path) -> str:
    """What both loaders say: the file is unreadable, or (a legacy pickle cut inside a global's name, e.g.
    'collections.OrderedD') it asks for a global the loader refuses; the file is named either way."""
    return rf"'?{path}'?: |Checkpoint file '{path}' is not a readable checkpoint \(truncated|to load '{path}'"


@pytest.mark.parametrize("fraction", CUTS)
def test_convert_official_names_a_truncated_file(truncated, fraction, tmp_path, capsys):
    path = truncated(fraction)
    assert convert_official.main(["--input", str(path), "--output-dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert re.search(_refusal(path), err) and err.startswith("convert_official.py: error: ")
    assert "Traceback" not in err and len(err.strip().splitlines()) <= 2


@pytest.mark.parametrize("fraction", CUTS)
def test_the_training_loader_names_a_truncated_file(truncated, fraction):
    path = truncated(fraction)
    with pytest.raises((ValueError, pickle.UnpicklingError), match=_refusal(path)):
        SafeDetectionCheckpointer(torch.nn.Linear(2, 2), strict=True).load(str(path))
