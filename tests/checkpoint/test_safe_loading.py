"""Loading weights: no code runs from a file, wrong weights are refused by name where loading is strict."""

import logging
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from detectron2.config import LazyConfig
from torch import nn

from sparse_detr.engine import (
    AtomicDetectionCheckpointer,
    CheckpointMismatchError,
    SafeDetectionCheckpointer,
    UntrainedModelError,
)
from sparse_detr.engine.predictor import Predictor
from sparse_detr.utils.safe_pickle import UnsafeCheckpointError, load_restricted_pickle
from tests.helpers.tiny_sparse_detr import build_tiny_model, tiny_yacs_config

ROOT = Path(__file__).resolve().parents[2]


class _RunsCode:
    """Unpickling this creates a marker file: proof that code ran."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _evil_pickle(tmp_path: Path, suffix: str = ".pkl") -> tuple[Path, Path]:
    marker = tmp_path / "code_ran"
    path = tmp_path / f"evil{suffix}"
    with open(path, "wb") as f:
        pickle.dump({"model": {"weight": _RunsCode(marker)}, "__author__": "x"}, f)
    return path, marker


def test_pkl_that_runs_code_is_refused_naming_file_and_global(tmp_path):
    path, marker = _evil_pickle(tmp_path)
    with pytest.raises(UnsafeCheckpointError, match=r"evil\.pkl.*'(io|builtins)\.open'"):
        SafeDetectionCheckpointer(nn.Linear(3, 2)).load(str(path))
    with pytest.raises(UnsafeCheckpointError):
        SafeDetectionCheckpointer(nn.Linear(3, 2), strict=False).load(str(path))
    assert not marker.exists()


def test_pth_that_runs_code_is_refused(tmp_path):
    marker = tmp_path / "code_ran"
    path = tmp_path / "evil.pth"
    torch.save({"model": {"weight": _RunsCode(marker)}}, path)
    with pytest.raises(UnsafeCheckpointError, match=r"evil\.pth.*open"):
        SafeDetectionCheckpointer(nn.Linear(3, 2), strict=True).load(str(path))
    assert not marker.exists()


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_pkl_of_numpy_weights_still_loads(tmp_path, protocol):
    """Detectron2's ImageNet backbones: {"model": numpy arrays, "__author__", "matching_heuristics"}."""
    weight = np.arange(6, dtype=np.float32).reshape(2, 3)
    bias = np.array([0.5, -0.5], dtype=np.float32)
    path = tmp_path / "backbone.pkl"
    with open(path, "wb") as f:
        data = {
            "model": {"weight": weight, "bias": bias},
            "__author__": "torchvision",
            "matching_heuristics": True,
        }
        pickle.dump(data, f, protocol=protocol)
    model = nn.Linear(3, 2)
    SafeDetectionCheckpointer(model, strict=True).load(str(path))
    torch.testing.assert_close(model.weight.detach(), torch.from_numpy(weight))
    # a Caffe2-style file (no "__author__"): the dict itself holds the arrays
    with open(path, "wb") as f:
        pickle.dump({"weight": weight * 2, "bias": bias, "weight_momentum": weight}, f, protocol=protocol)
    SafeDetectionCheckpointer(model, strict=True).load(str(path))
    torch.testing.assert_close(model.weight.detach(), torch.from_numpy(weight * 2))


def test_restricted_unpickler_reads_strings_numbers_and_containers():
    data = {"a": [1, 2.5, "x", (3, None)], "b": {1, 2}, "c": np.int64(7), "d": b"bytes"}
    assert load_restricted_pickle(__import__("io").BytesIO(pickle.dumps(data, protocol=2)), "d.pkl") == data


@pytest.mark.parametrize("suffix", [".pth", ".pkl"])
def test_empty_and_truncated_files_are_named(tmp_path, suffix):
    empty = tmp_path / f"empty{suffix}"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match=rf"empty{suffix}.*empty \(0 bytes\)"):
        SafeDetectionCheckpointer(nn.Linear(3, 2), strict=True).load(str(empty))
    complete = tmp_path / f"complete{suffix}"
    if suffix == ".pth":
        torch.save({"model": nn.Linear(3, 2).state_dict()}, complete)
    else:
        complete.write_bytes(pickle.dumps({"weight": np.zeros((2, 3))}))
    truncated = tmp_path / f"truncated{suffix}"
    truncated.write_bytes(complete.read_bytes()[:-7])
    with pytest.raises(ValueError, match=rf"truncated{suffix}"):
        SafeDetectionCheckpointer(nn.Linear(3, 2), strict=True).load(str(truncated))
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        SafeDetectionCheckpointer(nn.Linear(3, 2), strict=True).load(str(tmp_path / "missing.pth"))


def _save(model: nn.Module, path: Path) -> str:
    torch.save({"model": model.state_dict()}, path)
    return str(path)


def test_strict_loading_names_the_keys_of_another_architecture(tmp_path):
    model = build_tiny_model()
    other_classes = build_tiny_model(num_queries=10)
    other_classes.heads.class_heads[0] = nn.Linear(32, 7)  # another number of classes
    path = _save(other_classes, tmp_path / "seven_classes.pth")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(
        CheckpointMismatchError, match=r"seven_classes\.pth.*with another shape.*class_heads\.0"
    ):
        SafeDetectionCheckpointer(model, strict=True).load(path)
    for key, value in model.state_dict().items():  # nothing was loaded
        torch.testing.assert_close(value, before[key], msg=key)

    torchvision_resnet = {
        f"layer{i}.conv{j}.weight": torch.zeros(1) for i in range(1, 5) for j in range(1, 4)
    }
    path = _save_state(torchvision_resnet, tmp_path / "resnet.pth")
    with pytest.raises(CheckpointMismatchError) as error:
        SafeDetectionCheckpointer(model, strict=True).load(path)
    message = str(error.value)
    assert "12 checkpoint key(s) the model does not have" in message and "and 7 more" in message
    assert "model key(s) missing from the checkpoint" in message


def _save_state(state: dict, path: Path) -> str:
    torch.save(state, path)
    return str(path)


def test_permissive_loading_keeps_what_fits_and_logs_skipped_keys_once(tmp_path, caplog):
    source = build_tiny_model(seed=1)
    source.heads.class_heads[0] = nn.Linear(32, 7)
    path = _save(source, tmp_path / "init.pth")
    model = build_tiny_model(seed=2)
    with caplog.at_level(logging.WARNING):
        AtomicDetectionCheckpointer(model).resume_or_load(path, resume=False)
    torch.testing.assert_close(model.neck.state_dict(), source.neck.state_dict())
    warnings = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert len(warnings) == 1 and "class_heads.0.weight" in warnings[0] and "init.pth" in warnings[0]


def test_resume_is_strict(tmp_path):
    source = build_tiny_model()
    source.heads.class_heads[0] = nn.Linear(32, 7)
    AtomicDetectionCheckpointer(source, str(tmp_path)).save("model_0000001")
    with pytest.raises(CheckpointMismatchError, match="model_0000001.pth"):
        AtomicDetectionCheckpointer(build_tiny_model(), str(tmp_path)).resume_or_load("", resume=True)


def test_lazy_predictor_and_eval_only_refuse_wrong_weights(tmp_path):
    cfg = LazyConfig.load(str(ROOT / "tests/configs/tiny_shapes.py"))
    cfg.model.heads.num_classes = 9
    from detectron2.config import instantiate

    path = _save(instantiate(cfg.model), tmp_path / "nine.pth")
    cfg.model.heads.num_classes = 3
    # the class heads do not fit: refused as weights that leave them untrained, the mismatch named
    with pytest.raises(UntrainedModelError, match=r"nine\.pth holds no weights .*nine\.pth.*another shape"):
        Predictor(cfg, path, device="cpu")
    import train_net

    cfg.train.init_checkpoint = path
    cfg.train.device = "cpu"
    with pytest.raises(CheckpointMismatchError, match=r"nine\.pth"):
        train_net.do_eval_only(cfg)


def test_default_predictor_loads_through_the_safe_loader(tmp_path):
    from sparse_detr.engine.predictor import Predictor

    cfg = tiny_yacs_config()
    path, marker = _evil_pickle(tmp_path)
    cfg.MODEL.WEIGHTS = str(path)
    with pytest.raises(UnsafeCheckpointError, match="evil.pkl"):
        Predictor(cfg)
    assert not marker.exists()
    assert os.path.getsize(path) > 0


def test_strict_loading_refuses_nan_weights(tmp_path):
    model = nn.Linear(3, 2)
    state = model.state_dict()
    state["bias"] = torch.tensor([0.0, float("nan")])
    path = _save_state({"model": state}, tmp_path / "nan.pth")
    with pytest.raises(CheckpointMismatchError, match=r"nan\.pth.*1 tensor\(s\) hold NaN/inf values: bias"):
        SafeDetectionCheckpointer(model, strict=True).load(path)


def test_official_converter_names_an_empty_file(tmp_path):
    from sparse_detr.checkpoint.convert import load_official_checkpoint

    (tmp_path / "official.pth").write_bytes(b"")
    with pytest.raises(ValueError, match=r"official\.pth.*empty"):
        load_official_checkpoint(str(tmp_path / "official.pth"))


def test_a_directory_given_as_weights_is_named(tmp_path):
    with pytest.raises(IsADirectoryError, match=str(tmp_path)):
        SafeDetectionCheckpointer(nn.Linear(3, 2), strict=True).load(str(tmp_path))


def test_a_checkpoint_of_a_ddp_wrapped_model_loads_strictly(tmp_path):
    source = nn.Linear(3, 2)
    path = _save_state(
        {"model": {f"module.{k}": v for k, v in source.state_dict().items()}}, tmp_path / "ddp.pth"
    )
    model = nn.Linear(3, 2)
    SafeDetectionCheckpointer(model, strict=True).load(path)
    torch.testing.assert_close(model.weight, source.weight)
