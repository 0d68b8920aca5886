"""train_net.py never writes its output directory's files over the run's own inputs."""

import argparse

import pytest
from omegaconf import OmegaConf

import train_net  # the repository root is on the test path (pyproject.toml)
from sparse_detr.utils.files import OverwritesInputError


def _run(tmp_path, config_file, init_checkpoint="", eval_only=False):
    cfg = OmegaConf.create({"train": {"output_dir": str(tmp_path), "init_checkpoint": init_checkpoint}})
    args = argparse.Namespace(config_file=str(config_file), eval_only=eval_only)
    train_net.refuse_overwriting_training_inputs(cfg, args)


def test_the_config_saved_into_the_output_directory_cannot_be_the_run_s_config(tmp_path):
    (tmp_path / "config.yaml").write_text("model: {}\n")
    with pytest.raises(OverwritesInputError, match=r"config.yaml .* is the file --config-file"):
        _run(tmp_path, tmp_path / "config.yaml")


def test_fine_tuning_from_the_output_directory_s_model_final_is_refused(tmp_path):
    (tmp_path / "model_final.pth").write_bytes(b"weights")
    with pytest.raises(OverwritesInputError, match=r"model_final.pth .* is the file train.init_checkpoint"):
        _run(tmp_path, "configs/quickstart_shapes.py", str(tmp_path / "model_final.pth"))
    # evaluating it writes no model_final.pth: allowed
    _run(tmp_path, "configs/quickstart_shapes.py", str(tmp_path / "model_final.pth"), eval_only=True)
