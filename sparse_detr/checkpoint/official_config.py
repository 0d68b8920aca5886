"""Official Sparse DETR / Deformable DETR arguments -> a LazyConfig of the same architecture.

Everything comes from the checkpoint's ``args`` (argparse values of kakaobrain/sparse-detr or
fundamentalvision/Deformable-DETR ``main.py``, told apart by the Sparse DETR-only keys);
arguments the model cannot express are refused with :class:`UnsupportedOfficialArgs`.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping

from detectron2.config import LazyCall as L
from detectron2.data.datasets.builtin_meta import COCO_CATEGORIES
from detectron2.modeling.backbone import BasicStem, ResNet
from omegaconf import DictConfig

from sparse_detr.modeling.backbone import SwinBackbone
from sparse_detr.modeling.backbone.frozen_bn import frozen_bn_as_affine
from sparse_detr.modeling.meta_arch import sparse_detr_graph

__all__ = [
    "UnsupportedOfficialArgs",
    "OFFICIAL_PIXEL_MEAN",
    "OFFICIAL_PIXEL_STD",
    "COCO_CONTIGUOUS_CATEGORY_IDS",
    "official_num_classes",
    "official_model_config",
]

# ImageNet mean / std of the official transforms, in 0-255 RGB pixels
OFFICIAL_PIXEL_MEAN = [0.485 * 255, 0.456 * 255, 0.406 * 255]
OFFICIAL_PIXEL_STD = [0.229 * 255, 0.224 * 255, 0.225 * 255]
# COCO category ids of the 80 thing classes, in Detectron2's contiguous order
COCO_CONTIGUOUS_CATEGORY_IDS = [c["id"] for c in COCO_CATEGORIES if c["isthing"]]
RESNET_DEPTHS = {"resnet50": 50, "resnet101": 101}
# official --backbone -> (SwinBackbone variant, embedding dim, stochastic depth rate of its official yaml);
# the official swin-l has no SwinBackbone variant
SWIN_BACKBONES = {"swin-t": ("T", 96, 0.2), "swin-s": ("S", 96, 0.3), "swin-b": ("B", 128, 0.5)}
# argparse keys only kakaobrain/sparse-detr has (absent from fundamentalvision/Deformable-DETR checkpoints)
SPARSE_DETR_ONLY_ARGS = ("rho", "use_enc_aux_loss", "eff_query_init", "eff_specific_head")


class UnsupportedOfficialArgs(ValueError):
    """The official checkpoint's arguments describe an architecture this converter cannot express."""


def _as_dict(args) -> dict:
    if isinstance(args, argparse.Namespace):
        return vars(args)
    if isinstance(args, Mapping):
        return dict(args)
    raise TypeError(f"official args must be an argparse.Namespace or a dict, got {type(args).__name__}")


def official_num_classes(args) -> int:
    """Number of logits of the official model (91 for COCO, as official ``build``)."""
    dataset = _as_dict(args).get("dataset_file", "coco")
    return {"coco": 91, "coco_panoptic": 250}.get(dataset, 20)


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise UnsupportedOfficialArgs(message)


def _check_supported(a: dict, coco_contiguous: bool) -> None:
    backbone = a.get("backbone")
    supported = sorted(RESNET_DEPTHS) + sorted(SWIN_BACKBONES)
    _require(backbone in supported, f"args.backbone={backbone!r} is not supported (supported: {supported})")
    _require(not a.get("dilation", False), "args.dilation=True (DC5 ResNet) is not supported")
    _require(not a.get("masks", False), "args.masks=True (segmentation head) is not supported")
    _require(
        a.get("position_embedding", "sine") in ("sine", "v2"),
        f"args.position_embedding={a.get('position_embedding')!r} is not supported (only 'sine')",
    )
    levels = a.get("num_feature_levels", 4)
    _require(levels == 1 or levels >= 3, f"args.num_feature_levels={levels} is not supported (1 or >= 3)")
    _require(
        levels != 1 or backbone not in SWIN_BACKBONES,
        f"args.num_feature_levels=1 with args.backbone={backbone!r} is not supported (the official Swin "
        "backbone fails on a single level)",
    )
    rho = float(a.get("rho", 0.0) or 0.0)
    _require(0.0 <= rho <= 1.0, f"args.rho={rho} is outside [0, 1]")
    _require(
        rho < 1.0,
        "args.rho=1.0 is not supported: the official code then still runs its scorer and sparse encoder "
        "path and refines valid + 1 tokens per image (one padding token among them), which no model here "
        "reproduces, and no official checkpoint uses it (rho = 0 is its dense Deformable DETR)",
    )
    _require(
        rho == 0.0 or a.get("two_stage", False),
        "args.rho > 0 needs args.two_stage=True (as the official code)",
    )
    _require(
        a.get("hidden_dim", 256) % 32 == 0, f"args.hidden_dim={a.get('hidden_dim')} must be a multiple of 32"
    )
    if coco_contiguous:
        _require(
            a.get("dataset_file", "coco") == "coco",
            "--coco-contiguous needs a COCO checkpoint (dataset_file=coco)",
        )
        _require(
            not a.get("two_stage", False) or a.get("eff_specific_head", False),
            "--coco-contiguous needs args.eff_specific_head=True with two_stage (the class-agnostic "
            "two-stage "
            "head scores proposals with logit 0, which is not a COCO category)",
        )


def _is_sparse_detr(a: dict) -> bool:
    """Args of kakaobrain/sparse-detr (vs fundamentalvision/Deformable-DETR, which lacks these keys)."""
    return any(key in a for key in SPARSE_DETR_ONLY_ARGS)


def _decoder_refines_boxes(a: dict) -> bool:
    """Whether the official decoder refines its boxes layer by layer.

    Deformable DETR hooks the box heads into the decoder iff ``--with_box_refine``; Sparse DETR's code
    hooks them iff ``--two_stage`` (shared heads when ``--with_box_refine`` is off).
    """
    if _is_sparse_detr(a):
        return bool(a.get("two_stage", False))
    return bool(a.get("with_box_refine", False))


def _backbone_config(a: dict, in_features: list[str]) -> tuple[DictConfig, list[int]]:
    """LazyConfig of the official backbone and the channels of its ``in_features`` maps."""
    # official: the early layers are frozen unless trained from scratch / fine-tuned early layers
    train_early_layers = a.get("backbone_from_scratch", False) or a.get("finetune_early_layers", False)
    if a["backbone"] in SWIN_BACKBONES:
        variant, embed_dim, drop_path_rate = SWIN_BACKBONES[a["backbone"]]
        # official frozen_stages=2 (patch embedding, stage 1, its patch merging) or -1; args.lr_backbone
        # freezes nothing in the official Swin
        backbone = L(SwinBackbone)(
            variant=variant,
            out_features=in_features,
            drop_path_rate=drop_path_rate,
            norm_outputs=True,
            freeze_at=0 if train_early_layers else 2,
            pretrained_path=None,
            pad_before_shift=True,
        )
        channels = {"res3": 2 * embed_dim, "res4": 4 * embed_dim, "res5": 8 * embed_dim}
        return backbone, [channels[f] for f in in_features]
    freeze_at = 0 if train_early_layers else 2  # conv1 + layer1
    if a.get("lr_backbone", 1.0) <= 0:
        freeze_at = 5
    # FrozenBN in the official affine form so features match the official model to the last bits
    backbone = L(frozen_bn_as_affine)(
        module=L(ResNet)(
            stem=L(BasicStem)(in_channels=3, out_channels=64, norm="FrozenBN"),
            stages=L(ResNet.make_default_stages)(
                depth=RESNET_DEPTHS[a["backbone"]], stride_in_1x1=False, norm="FrozenBN"
            ),
            out_features=in_features,
            freeze_at=freeze_at,
        )
    )
    channels = {"res3": 512, "res4": 1024, "res5": 2048}
    return backbone, [channels[f] for f in in_features]


def official_model_config(args, coco_contiguous: bool = False) -> DictConfig:
    """LazyConfig ``model`` node of the architecture described by the official ``args``.

    Args:
        args: the checkpoint's ``argparse.Namespace`` (or a dict of its values).
        coco_contiguous: 80 COCO classes in Detectron2's contiguous order instead of the 91 official logits.
    Raises:
        UnsupportedOfficialArgs: for arguments the model cannot express.
    """
    a = _as_dict(args)
    _check_supported(a, coco_contiguous)
    levels = a.get("num_feature_levels", 4)
    rho = float(a.get("rho", 0.0) or 0.0)
    enc_aux = bool(a.get("use_enc_aux_loss", False))
    in_features = ["res5"] if levels == 1 else ["res3", "res4", "res5"]
    backbone, in_channels = _backbone_config(a, in_features)
    return sparse_detr_graph(
        backbone=backbone,
        in_channels=in_channels,
        in_features=in_features,
        num_classes=len(COCO_CONTIGUOUS_CATEGORY_IDS) if coco_contiguous else official_num_classes(a),
        hidden_dim=a.get("hidden_dim", 256),
        num_feature_levels=levels,
        num_heads=a.get("nheads", 8),
        dim_feedforward=a.get("dim_feedforward", 1024),
        dropout=a.get("dropout", 0.1),
        enc_layers=a.get("enc_layers", 6),
        enc_points=a.get("enc_n_points", 4),
        dec_layers=a.get("dec_layers", 6),
        dec_points=a.get("dec_n_points", 4),
        num_queries=a.get("num_queries", 300),
        two_stage=bool(a.get("two_stage", False)),
        query_init_from_memory=bool(a.get("eff_query_init", False)),
        two_stage_class_agnostic=not a.get("eff_specific_head", False),
        box_refine=_decoder_refines_boxes(a),
        share_heads=not (a.get("with_box_refine", False) or enc_aux),
        encoder_aux_loss=enc_aux,
        aux_loss=bool(a.get("aux_loss", True)),
        token_scorer="dam" if rho > 0 else None,  # rho = 0 is the dense Deformable DETR
        keep_ratio=rho,
        matcher_cost_class=float(a.get("set_cost_class", 2)),
        matcher_cost_bbox=float(a.get("set_cost_bbox", 5)),
        matcher_cost_giou=float(a.get("set_cost_giou", 2)),
        focal_alpha=float(a.get("focal_alpha", 0.25)),
        matcher_focal_alpha=0.25,  # hard-coded in the official matcher (args.focal_alpha: loss only)
        class_loss_weight=float(a.get("cls_loss_coef", 2)),
        bbox_loss_weight=float(a.get("bbox_loss_coef", 5)),
        giou_loss_weight=float(a.get("giou_loss_coef", 2)),
        mask_prediction_loss_weight=float(a.get("mask_prediction_coef", 1)),
        pixel_mean=OFFICIAL_PIXEL_MEAN,
        pixel_std=OFFICIAL_PIXEL_STD,
        channels_last=False,  # NCHW matches the official outputs to the last bits
    )
