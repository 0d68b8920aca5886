"""Convert an official Sparse DETR / Deformable DETR checkpoint into a Detectron2 checkpoint + LazyConfig."""

from __future__ import annotations

import argparse
import os
import pickle
from dataclasses import dataclass

import torch
from detectron2.config import LazyConfig, instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from ..utils.files import atomic_output, atomic_write, refuse_overwriting_inputs
from ..utils.safe_pickle import check_checkpoint_file, unreadable_checkpoint_error
from ..utils.zip_integrity import check_zip_members
from .key_map import convert_official_state_dict
from .official_config import COCO_CONTIGUOUS_CATEGORY_IDS, _as_dict, official_model_config
from .safe_loading import refuse_unfit_state_dict

__all__ = ["convert_official_checkpoint"]


@dataclass
class OfficialCheckpoint:
    """An official checkpoint: its ``model`` state_dict and its ``args`` (as a dict)."""

    state_dict: dict
    args: dict


def load_official_checkpoint(path: str) -> OfficialCheckpoint:
    """Load ``{"model": state_dict, "args": Namespace, ...}`` safely (weights_only + Namespace allow-list)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"official checkpoint not found: {path}")
    check_checkpoint_file(path)  # an empty file is named, not a bare EOFError
    check_zip_members(path)
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise pickle.UnpicklingError(
            f"{path}: refused to load (weights-only loading allows tensors, containers and "
            f"argparse.Namespace only): {error}"
        ) from error
    except (RuntimeError, EOFError, OSError, IndexError, KeyError, ValueError) as error:  # e.g. truncated
        raise unreadable_checkpoint_error(path, error) from error
    if not isinstance(checkpoint, dict) or "model" not in checkpoint or "args" not in checkpoint:
        keys = sorted(checkpoint) if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise ValueError(f"{path}: expected an official checkpoint with 'model' and 'args', got {keys}")
    return OfficialCheckpoint(state_dict=checkpoint["model"], args=_as_dict(checkpoint["args"]))


def build_converted_model(
    checkpoint: OfficialCheckpoint, coco_contiguous: bool = False
) -> tuple[nn.Module, DictConfig]:
    """Model built from the checkpoint's args with the converted weights; returns (model, model config).

    Raises:
        CheckpointMismatchError: converted weights that do not fit the model built from the args (by name).
    """
    model_cfg = official_model_config(checkpoint.args, coco_contiguous=coco_contiguous)
    model = instantiate(model_cfg)
    state_dict = convert_official_state_dict(
        checkpoint.state_dict,
        share_heads=model.heads.share,
        class_rows=COCO_CONTIGUOUS_CATEGORY_IDS if coco_contiguous else None,
    )
    refuse_unfit_state_dict(model, state_dict, "converted official checkpoint")
    model.load_state_dict(state_dict, strict=True)
    return model, model_cfg


def convert_official_checkpoint(input_path: str, output_dir: str, coco_contiguous: bool = False) -> dict:
    """Write ``output_dir/model_final.pth`` (Detectron2 checkpoint) and ``output_dir/config.yaml``.

    Returns a summary dict (paths, number of tensors, the official args used).
    """
    refuse_overwriting_inputs(
        {"--output-dir's model_final.pth": os.path.join(output_dir, "model_final.pth"),
         "--output-dir's config.yaml": os.path.join(output_dir, "config.yaml")},
        {"--input": input_path},
    )
    checkpoint = load_official_checkpoint(input_path)
    model, model_cfg = build_converted_model(checkpoint, coco_contiguous=coco_contiguous)
    os.makedirs(output_dir, exist_ok=True)
    weights_path = os.path.join(output_dir, "model_final.pth")
    config_path = os.path.join(output_dir, "config.yaml")
    # each file under a temporary name, renamed when complete: a kill or a full disk keeps an earlier one
    converted = {"model": model.state_dict(), "__author__": "sparse_detr.checkpoint (converted official)"}
    atomic_write(weights_path, lambda f: torch.save(converted, f))
    config = OmegaConf.create(
        {"model": model_cfg, "train": {"init_checkpoint": os.path.abspath(weights_path)}}
    )
    with atomic_output(config_path) as tmp:
        LazyConfig.save(config, str(tmp))
    return {
        "weights": weights_path,
        "config": config_path,
        "num_tensors": len(model.state_dict()),
        "official_args": checkpoint.args,
        "label_space": "coco-contiguous-80" if coco_contiguous else "official",
    }
