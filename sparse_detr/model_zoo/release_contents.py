"""What an official release file holds, checked against what its name promises before it is cached.

A release name (``sparse_detr_<backbone>_<rho percent>``, e.g. ``sparse_detr_swint_30``) promises a backbone,
a keep ratio rho and the official 6 encoder + 6 decoder layers. A file of another architecture served under
a right name (a mirror's mix-up, a wrong ``SPARSE_DETR_OFFICIAL_URL``, a hand download saved under the wrong
name) would otherwise convert fine and be cached and returned as that release. The backbone and the layer
counts are read from the weights (state_dict key structure and shapes) and from the saved ``args``; rho, which
changes no weight, from ``args`` only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = [
    "ReleaseMismatch",
    "ReleasePromise",
    "check_release_contents",
    "describe_weights",
    "release_promise",
]

_RELEASE_NAME = re.compile(r"^sparse_detr_(?P<backbone>r50_scrl|r50|swint)_(?P<percent>\d+)$")
# release file backbone -> official --backbone (the SCRL release differs from R-50 by its initialisation only)
_RELEASE_BACKBONES = {"r50": "resnet50", "r50_scrl": "resnet50", "swint": "swin-t"}
# every release of the official README was trained with main.py's 6 encoder and 6 decoder layers
_RELEASE_LAYERS = 6
# (bottleneck blocks?, blocks of layer3) -> ResNet depth; (embedding dim, blocks of stage 3) -> Swin variant
_RESNETS = {
    (True, 6): "resnet50",
    (True, 23): "resnet101",
    (True, 36): "resnet152",
    (False, 2): "resnet18",
    (False, 6): "resnet34",
}
_SWINS = {(96, 6): "swin-t", (96, 18): "swin-s", (128, 18): "swin-b", (192, 18): "swin-l"}


class ReleaseMismatch(ValueError):
    """A release file holds another model than its name promises."""


@dataclass(frozen=True)
class ReleasePromise:
    """What a release name promises: official ``--backbone``, ``--rho``, encoder and decoder layers."""

    backbone: str
    rho: float
    enc_layers: int = _RELEASE_LAYERS
    dec_layers: int = _RELEASE_LAYERS


def release_promise(stem: str) -> ReleasePromise:
    """The architecture the release ``stem`` (e.g. ``sparse_detr_r50_10``) stands for."""
    match = _RELEASE_NAME.match(stem)
    if match is None:
        raise ValueError(
            f"{stem!r} is not an official release name (sparse_detr_<r50|r50_scrl|swint>_<percent>)"
        )
    return ReleasePromise(_RELEASE_BACKBONES[match["backbone"]], int(match["percent"]) / 100)


def _indices(keys: list[str], pattern: str) -> set[int]:
    compiled = re.compile(pattern)
    return {int(m.group(1)) for key in keys if (m := compiled.match(key))}


def describe_weights(state_dict: dict) -> dict:
    """Backbone and layer counts of an official state_dict, from its keys and shapes (absent when unknown)."""
    keys = [str(key) for key in state_dict]
    found: dict = {}
    encoder = _indices(keys, r"transformer\.encoder\.layers\.(\d+)\.")
    decoder = _indices(keys, r"transformer\.decoder\.layers\.(\d+)\.")
    if encoder:
        found["enc_layers"] = len(encoder)
    if decoder:
        found["dec_layers"] = len(decoder)
    layer3 = _indices(keys, r"backbone\.0\.body\.layer3\.(\d+)\.")
    if layer3:
        bottleneck = any(key.startswith("backbone.0.body.layer1.0.conv3.") for key in keys)
        found["backbone"] = _RESNETS.get(
            (bottleneck, len(layer3)), f"a ResNet with {len(layer3)} layer3 blocks"
        )
    patch_embed = state_dict.get("backbone.0.body.patch_embed.proj.weight")
    if patch_embed is not None and hasattr(patch_embed, "shape"):
        stage3 = len(_indices(keys, r"backbone\.0\.body\.layers\.2\.blocks\.(\d+)\."))
        dim = int(patch_embed.shape[0])
        found["backbone"] = _SWINS.get((dim, stage3), f"a Swin of width {dim} with {stage3} stage-3 blocks")
    return found


def check_release_contents(stem: str, args: dict, state_dict: dict, source: str) -> None:
    """Raise :class:`ReleaseMismatch` naming every way the file differs from what ``stem`` promises.

    Args:
        stem: the release name asked for.
        args: the file's saved official ``args`` (as a dict).
        state_dict: the file's official ``model`` state_dict.
        source: how the message names the file (its URL or path).
    """
    promise = release_promise(stem)
    weights = describe_weights(state_dict)
    rho = float(args.get("rho", 0.0) or 0.0)  # a Deformable DETR file has no rho: dense
    held = {
        "backbone": (weights.get("backbone", args.get("backbone")), promise.backbone),
        "rho": (rho, promise.rho),
        "encoder layers": (weights.get("enc_layers", args.get("enc_layers")), promise.enc_layers),
        "decoder layers": (weights.get("dec_layers", args.get("dec_layers")), promise.dec_layers),
    }
    problems = [
        f"no {what} (the name promises {promised})"
        for what, (value, promised) in held.items()
        if value is None
    ]
    problems += [
        f"{what} {value} (the name promises {promised})"
        for what, (value, promised) in held.items()
        if value is not None and (abs(value - promised) > 1e-9 if what == "rho" else value != promised)
    ]
    # the saved args against the weights themselves
    for key in ("backbone", "enc_layers", "dec_layers"):
        if key in weights and key in args and args[key] != weights[key]:
            problems.append(f"its args say {key}={args[key]!r} but its weights hold {weights[key]!r}")
    if problems:
        raise ReleaseMismatch(
            f"{source} is not the release {stem} (backbone {promise.backbone}, rho {promise.rho}, "
            f"{promise.enc_layers} encoder + {promise.dec_layers} decoder layers): it holds "
            + "; ".join(problems)
            + ". Nothing was cached: check SPARSE_DETR_OFFICIAL_URL, or the file put in place by hand"
        )
