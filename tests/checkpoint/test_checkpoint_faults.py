"""Damaged and unfit checkpoints named by file and cause: CRC-32 failures, NaN/inf initialisations, layer
stacks of another depth, an unreadable ``last_checkpoint``, a full disk while saving."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import pytest
import torch
from detectron2.config import LazyConfig, instantiate
from torch import nn

from sparse_detr.checkpoint.convert import load_official_checkpoint
from sparse_detr.engine import AtomicDetectionCheckpointer, CheckpointMismatchError, SafeDetectionCheckpointer
from sparse_detr.engine.checkpoint import NonFiniteWeightsError, NoSpaceLeftError
from sparse_detr.engine.predictor import Predictor
from sparse_detr.utils.zip_integrity import CorruptedCheckpointError
from tests.helpers.tiny_sparse_detr import build_tiny_model

ROOT = Path(__file__).resolve().parents[2]


def flip_one_bit(path: Path, member_suffix: str) -> str:
    """Flip one bit in the middle of the data of the zip member whose name ends with ``member_suffix``."""
    with zipfile.ZipFile(path) as archive:
        info = next(i for i in archive.infolist() if i.filename.endswith(member_suffix))
    data = bytearray(path.read_bytes())
    header = info.header_offset
    name_length = int.from_bytes(data[header + 26 : header + 28], "little")
    extra_length = int.from_bytes(data[header + 28 : header + 30], "little")
    start = header + 30 + name_length + extra_length
    data[start + info.compress_size // 2] ^= 0x10
    path.write_bytes(bytes(data))
    return info.filename


@pytest.mark.parametrize("member", ["data/0", "data/1", "data.pkl"])
def test_a_flipped_bit_in_any_member_is_named_with_the_file(tmp_path, member):
    model = nn.Linear(64, 32)
    path = tmp_path / "weights.pth"
    torch.save({"model": model.state_dict(), "iteration": 7}, path)
    flipped = flip_one_bit(path, member)
    expected = rf"weights\.pth.*corrupted: the checksum \(CRC-32\) of its member '{flipped}'"
    with pytest.raises(CorruptedCheckpointError, match=expected):
        SafeDetectionCheckpointer(nn.Linear(64, 32), strict=True).load(str(path))  # evaluation, predictors
    with pytest.raises(CorruptedCheckpointError, match=expected):
        SafeDetectionCheckpointer(nn.Linear(64, 32)).resume_or_load(str(path), resume=False)  # training init


def test_the_official_converter_checks_the_crc_too(tmp_path):
    path = tmp_path / "official.pth"
    torch.save({"model": {"w": torch.arange(1000.0)}, "args": {"backbone": "resnet50"}}, path)
    member = flip_one_bit(path, "data/0")
    with pytest.raises(CorruptedCheckpointError, match=rf"official\.pth.*member '{member}'"):
        load_official_checkpoint(str(path))


def test_an_intact_checkpoint_loads_exactly(tmp_path):
    source = nn.Linear(64, 32)
    path = tmp_path / "weights.pth"
    torch.save({"model": source.state_dict()}, path)
    model = nn.Linear(64, 32)
    SafeDetectionCheckpointer(model, strict=True).load(str(path))
    assert torch.equal(model.weight, source.weight)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_an_initialisation_with_non_finite_weights_is_refused_before_training(tmp_path, value):
    source = build_tiny_model()
    state = source.state_dict()
    state["encoder.layers.1.ffn.linear1.weight"][3, 5] = value
    torch.save({"model": state}, tmp_path / "init.pth")
    with pytest.raises(NonFiniteWeightsError, match=r"init\.pth.*NaN/inf.*encoder\.layers\.1\.ffn\.linear1"):
        AtomicDetectionCheckpointer(build_tiny_model()).resume_or_load(str(tmp_path / "init.pth"),
                                                                       resume=False)


def test_non_finite_values_in_tensors_the_initialisation_skips_do_not_matter(tmp_path):
    source = build_tiny_model()
    source.heads.class_heads[0] = nn.Linear(32, 9)  # another number of classes: not loaded
    with torch.no_grad():
        source.heads.class_heads[0].weight.fill_(float("nan"))
    torch.save({"model": source.state_dict()}, tmp_path / "other_classes.pth")
    model = build_tiny_model(seed=3)
    AtomicDetectionCheckpointer(model).resume_or_load(str(tmp_path / "other_classes.pth"), resume=False)
    assert torch.equal(model.neck.state_dict()["level_projections.0.0.weight"],
                       source.neck.state_dict()["level_projections.0.0.weight"])


@pytest.mark.parametrize("checkpoint_layers, model_layers", [((1, 2), (2, 2)), ((2, 3), (2, 2))])
def test_other_layer_counts_are_named_as_another_architecture(tmp_path, checkpoint_layers, model_layers):
    enc, dec = checkpoint_layers
    torch.save({"model": build_tiny_model(enc_layers=enc, dec_layers=dec).state_dict()}, tmp_path / "x.pth")
    model = build_tiny_model(enc_layers=model_layers[0], dec_layers=model_layers[1])
    with pytest.raises(CheckpointMismatchError, match=r"x\.pth.*another architecture.*layer counts") as error:
        SafeDetectionCheckpointer(model, strict=True).load(str(tmp_path / "x.pth"))
    stacks = {line.split(":")[0] for line in error.value.architecture}
    assert ("encoder.layers" in stacks) == (enc != model_layers[0])
    assert ("decoder.layers" in stacks) == (dec != model_layers[1])
    assert f"encoder.layers: {enc} in the checkpoint" in str(error.value) or enc == model_layers[0]


def test_predictors_say_the_architecture_differs_not_that_class_heads_are_missing(tmp_path):
    cfg = LazyConfig.load(str(ROOT / "tests/configs/tiny_shapes.py"))
    cfg.model.decoder.num_layers = 1
    torch.save({"model": instantiate(cfg.model).state_dict()}, tmp_path / "one_layer.pth")
    cfg.model.decoder.num_layers = 2
    expected = r"decoder\.layers: 1 in the checkpoint, 2 in the model"
    with pytest.raises(CheckpointMismatchError, match=expected):
        Predictor(cfg, str(tmp_path / "one_layer.pth"), device="cpu")


@pytest.mark.parametrize("content, problem", [(b"\xff\xfemodel_1.pth", "not UTF-8"), (b"\n", "is empty")])
def test_an_unreadable_last_checkpoint_is_named(tmp_path, content, problem):
    (tmp_path / "last_checkpoint").write_bytes(content)
    checkpointer = AtomicDetectionCheckpointer(nn.Linear(3, 2), str(tmp_path))
    with pytest.raises(ValueError, match=rf"{tmp_path / 'last_checkpoint'} .*{problem}"):
        checkpointer.resume_or_load("", resume=True)


def test_a_full_disk_while_saving_names_the_directory_and_keeps_the_previous_checkpoint(tmp_path):
    model = nn.Linear(3, 2)
    checkpointer = AtomicDetectionCheckpointer(model, str(tmp_path))
    checkpointer.save("model_0000001")
    before = (tmp_path / "model_0000001.pth").read_bytes()
    # the next save's temporary file lands on a device that is always full
    (tmp_path / f".model_0000003.pth.tmp{os.getpid()}").symlink_to("/dev/full")
    with torch.no_grad():
        model.weight.add_(1)
    with pytest.raises(NoSpaceLeftError, match=rf"no space left in {tmp_path}.*model_0000001\.pth is intact"):
        checkpointer.save("model_0000003")
    assert (tmp_path / "model_0000001.pth").read_bytes() == before
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000001.pth"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last_checkpoint", "model_0000001.pth"]
