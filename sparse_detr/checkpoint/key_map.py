"""Official (kakaobrain/sparse-detr) state_dict names -> this project's names, in one table.

Each rule is ``(pattern, replacement, extra)``: the replacement is a format string over the named match
groups plus the fields ``extra(match)`` adds (``stage``: torchvision ResNet ``layerN`` is Detectron2's
``res{N+1}``). Class/box heads are mapped by site (``class_embed.i`` -> ``heads.class_heads.i``).
Alias keys (the official model registers the shared class/box heads
a second time under ``transformer.decoder`` / ``transformer.encoder``) are checked to equal their
canonical tensor and dropped.

Swin backbones (official detection Swin -> :class:`~sparse_detr.modeling.backbone.SwinBackbone`, a timm
``features_only`` Swin): stage ``layers.i`` is timm's ``layers_i``, but the patch merging the official
code runs at the *end* of stage ``i`` (``layers.i.downsample``) is timm's ``layers_{i+1}.downsample`` (start
of the next stage; both concatenate the 2x2 neighbours in the same order, so its weights map unchanged);
the official per-output LayerNorm ``norm{i}`` (stride ``2 ** (i + 2)``) is ``output_norms.res{i+2}``. The
official ``relative_position_index`` buffers are not learned (timm rebuilds them): they are checked to be
the standard index of their window and dropped.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import torch
from timm.models.swin_transformer import get_relative_position_index
from torch import Tensor

__all__ = ["UnknownOfficialKeys", "KEY_RULES", "map_official_key", "convert_official_state_dict"]


class UnknownOfficialKeys(KeyError):
    """Official keys that no rule maps (the checkpoint holds parts this model does not have)."""


def _resnet_stage(match: re.Match) -> dict:
    return {"stage": int(match.group("layer")) + 1}


def _next_swin_stage(match: re.Match) -> dict:
    return {"next": int(match.group("stage")) + 1}


def _swin_output_level(match: re.Match) -> dict:
    return {"level": int(match.group("stage")) + 2}


# (pattern, replacement, extra-fields function or None)
KEY_RULES: list[tuple[str, str, Callable[[re.Match], dict] | None]] = [
    # ResNet body (torchvision names) -> Detectron2 ResNet
    (r"backbone\.0\.body\.conv1\.weight", "backbone.stem.conv1.weight", None),
    (r"backbone\.0\.body\.bn1\.(?P<p>\w+)", "backbone.stem.conv1.norm.{p}", None),
    (
        r"backbone\.0\.body\.layer(?P<layer>\d)\.(?P<b>\d+)\.conv(?P<c>\d)\.weight",
        "backbone.res{stage}.{b}.conv{c}.weight",
        _resnet_stage,
    ),
    (
        r"backbone\.0\.body\.layer(?P<layer>\d)\.(?P<b>\d+)\.bn(?P<c>\d)\.(?P<p>\w+)",
        "backbone.res{stage}.{b}.conv{c}.norm.{p}",
        _resnet_stage,
    ),
    (
        r"backbone\.0\.body\.layer(?P<layer>\d)\.(?P<b>\d+)\.downsample\.0\.weight",
        "backbone.res{stage}.{b}.shortcut.weight",
        _resnet_stage,
    ),
    (
        r"backbone\.0\.body\.layer(?P<layer>\d)\.(?P<b>\d+)\.downsample\.1\.(?P<p>\w+)",
        "backbone.res{stage}.{b}.shortcut.norm.{p}",
        _resnet_stage,
    ),
    # Swin body (official detection Swin) -> timm features_only Swin (SwinBackbone.body)
    (
        r"backbone\.0\.body\.patch_embed\.(?P<p>(proj|norm)\.(weight|bias))",
        "backbone.body.patch_embed.{p}",
        None,
    ),
    (
        r"backbone\.0\.body\.layers\.(?P<stage>\d)\.blocks\.(?P<b>\d+)\."
        r"(?P<p>(norm[12]|attn\.qkv|attn\.proj|mlp\.fc[12])\.(weight|bias)|attn\.relative_position_bias_table)",
        "backbone.body.layers_{stage}.blocks.{b}.{p}",
        None,
    ),
    (
        r"backbone\.0\.body\.layers\.(?P<stage>\d)\.downsample\.(?P<p>norm\.(weight|bias)|reduction\.weight)",
        "backbone.body.layers_{next}.downsample.{p}",
        _next_swin_stage,
    ),
    (
        r"backbone\.0\.body\.norm(?P<stage>\d)\.(?P<p>weight|bias)",
        "backbone.output_norms.res{level}.{p}",
        _swin_output_level,
    ),
    # multi-scale input projections and level embedding
    (r"input_proj\.(?P<l>\d+)\.(?P<i>[01])\.(?P<p>\w+)", "neck.level_projections.{l}.{i}.{p}", None),
    (r"transformer\.level_embed", "neck.level_embed", None),
    # DAM scoring network (official MaskPredictor)
    (r"transformer\.enc_mask_predictor\.layer1\.(?P<i>\d)\.(?P<p>\w+)", "token_scorer.stem.{i}.{p}", None),
    (r"transformer\.enc_mask_predictor\.layer2\.(?P<i>\d)\.(?P<p>\w+)", "token_scorer.head.{i}.{p}", None),
    # encoder layers
    (
        r"transformer\.encoder\.layers\.(?P<n>\d+)\.self_attn\.(?P<p>.+)",
        "encoder.layers.{n}.self_attn.{p}",
        None,
    ),
    (
        r"transformer\.encoder\.layers\.(?P<n>\d+)\.norm1\.(?P<p>\w+)",
        "encoder.layers.{n}.attn_norm.{p}",
        None,
    ),
    (
        r"transformer\.encoder\.layers\.(?P<n>\d+)\.linear(?P<i>[12])\.(?P<p>\w+)",
        "encoder.layers.{n}.ffn.linear{i}.{p}",
        None,
    ),
    (r"transformer\.encoder\.layers\.(?P<n>\d+)\.norm2\.(?P<p>\w+)", "encoder.layers.{n}.ffn_norm.{p}", None),
    # decoder layers
    (
        r"transformer\.decoder\.layers\.(?P<n>\d+)\.cross_attn\.(?P<p>.+)",
        "decoder.layers.{n}.cross_attn.{p}",
        None,
    ),
    (
        r"transformer\.decoder\.layers\.(?P<n>\d+)\.norm1\.(?P<p>\w+)",
        "decoder.layers.{n}.cross_attn_norm.{p}",
        None,
    ),
    (
        r"transformer\.decoder\.layers\.(?P<n>\d+)\.self_attn\.(?P<p>.+)",
        "decoder.layers.{n}.self_attn.{p}",
        None,
    ),
    (
        r"transformer\.decoder\.layers\.(?P<n>\d+)\.norm2\.(?P<p>\w+)",
        "decoder.layers.{n}.self_attn_norm.{p}",
        None,
    ),
    (
        r"transformer\.decoder\.layers\.(?P<n>\d+)\.linear(?P<i>[12])\.(?P<p>\w+)",
        "decoder.layers.{n}.ffn.linear{i}.{p}",
        None,
    ),
    (r"transformer\.decoder\.layers\.(?P<n>\d+)\.norm3\.(?P<p>\w+)", "decoder.layers.{n}.ffn_norm.{p}", None),
    # two-stage token projection and query initialisation
    (r"transformer\.enc_output\.(?P<p>\w+)", "token_projection.linear.{p}", None),
    (r"transformer\.enc_output_norm\.(?P<p>\w+)", "token_projection.norm.{p}", None),
    (r"transformer\.pos_trans\.(?P<p>\w+)", "query_init.pos_proj.{p}", None),
    (r"transformer\.pos_trans_norm\.(?P<p>\w+)", "query_init.pos_norm.{p}", None),
    (r"transformer\.reference_points\.(?P<p>\w+)", "query_init.reference_points.{p}", None),
    (r"query_embed\.weight", "query_init.query_embed.weight", None),
]

HEAD_PATTERN = re.compile(r"(?P<kind>class_embed|bbox_embed)\.(?P<site>\d+)\.(?P<rest>.+)")
ALIAS_PATTERN = re.compile(
    r"transformer\.(?P<owner>decoder|encoder)\.(?P<kind>class_embed|bbox_embed)\.(?P<site>\d+)\.(?P<rest>.+)"
)
IGNORED_SUFFIXES = ("num_batches_tracked",)
SWIN_POSITION_INDEX_PATTERN = re.compile(
    r"backbone\.0\.body\.layers\.\d\.blocks\.\d+\.attn\.relative_position_index"
)


def map_official_key(key: str) -> str | None:
    """Our name of an official non-head key, or None when no rule matches."""
    for pattern, replacement, extra in KEY_RULES:
        match = re.fullmatch(pattern, key)
        if match:
            fields = dict(match.groupdict())
            if extra is not None:
                fields.update(extra(match))
            return replacement.format(**fields)
    return None


def _check_swin_position_index(key: str, index: Tensor) -> None:
    """The official buffer must be the standard relative position index of a square window (timm's)."""
    side = round(index.shape[0] ** 0.5) if index.dim() == 2 else 0
    expected = get_relative_position_index(side, side)
    if index.shape != expected.shape or not torch.equal(index.to(expected.dtype), expected):
        raise ValueError(
            f"official {key} (shape {tuple(index.shape)}) is not the relative position index of a square "
            "Swin window, which the converted (timm) Swin rebuilds"
        )


def _head_key(kind: str, site: int, rest: str, share: bool) -> str:
    ours = {"class_embed": "class_heads", "bbox_embed": "box_heads"}[kind]
    return f"heads.{ours}.{0 if share else site}.{rest}"


def convert_official_state_dict(
    state_dict: dict[str, Tensor], share_heads: bool, class_rows: list[int] | None = None
) -> dict[str, Tensor]:
    """Rename an official state_dict to this project's names.

    Args:
        state_dict: the official ``model.state_dict()``.
        share_heads: the official model shares one class/box head across all sites (no box refinement and
            no encoder aux loss); all its copies must then be equal.
        class_rows: keep only these logits (rows of every class head), e.g. the 80 COCO category ids.
    Returns:
        the converted state_dict (float tensors, cloned).
    Raises:
        UnknownOfficialKeys: keys no rule maps, by name.
        ValueError: aliased / shared tensors that are not equal.
    """
    converted: dict[str, Tensor] = {}
    unknown: list[str] = []
    head_sites = sorted({int(m["site"]) for k in state_dict if (m := HEAD_PATTERN.fullmatch(k))})
    num_sites = len(head_sites)
    aliases: list[tuple[str, str]] = []
    for key, value in state_dict.items():
        if key.endswith(IGNORED_SUFFIXES):
            continue
        if SWIN_POSITION_INDEX_PATTERN.fullmatch(key):
            _check_swin_position_index(key, value)
            continue
        if m := ALIAS_PATTERN.fullmatch(key):
            site = int(m["site"])
            if m["owner"] == "encoder":
                num_aux = sum(
                    1
                    for k in state_dict
                    if re.fullmatch(rf"transformer\.encoder\.{m['kind']}\.\d+\.{re.escape(m['rest'])}", k)
                )
                # official: encoder heads = class_embed[-num_aux:] (the whole list when num_aux == 0)
                site = site + (num_sites - num_aux if num_aux < num_sites else 0)
            aliases.append((key, f"{m['kind']}.{site}.{m['rest']}"))
            continue
        if m := HEAD_PATTERN.fullmatch(key):
            ours = _head_key(m["kind"], int(m["site"]), m["rest"], share_heads)
            if ours in converted:
                if not torch.equal(converted[ours], value):
                    raise ValueError(
                        f"official heads are not shared as the args say: {key} differs from site 0"
                    )
                continue
            converted[ours] = value
            continue
        ours = map_official_key(key)
        if ours is None:
            unknown.append(key)
        else:
            converted[ours] = value
    if unknown:
        raise UnknownOfficialKeys(f"{len(unknown)} official keys have no mapping: {unknown}")
    for alias, canonical in aliases:
        if canonical not in state_dict:
            raise UnknownOfficialKeys(f"alias {alias} points to {canonical}, which is not in the checkpoint")
        if not torch.equal(state_dict[alias], state_dict[canonical]):
            raise ValueError(f"official alias {alias} differs from {canonical}")
    if class_rows is not None:
        rows = torch.as_tensor(class_rows, dtype=torch.long)
        for key in [k for k in converted if k.startswith("heads.class_heads.")]:
            converted[key] = converted[key][rows]
    return {
        k: v.detach().clone().float() if v.is_floating_point() else v.detach().clone()
        for k, v in converted.items()
    }
