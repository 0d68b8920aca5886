"""Swin-T/S/B from timm as a Detectron2 ``Backbone`` (paper section 4: Swin-T backbone).

The timm model is built with ``features_only=True`` and ``dynamic_img_size=True`` (attention masks
built per forward, so any input size works) and never downloads weights. Like the detection Swin used
by the official Sparse DETR, every returned stage gets its own LayerNorm and the input is only padded
to a multiple of the patch size (patch merging pads odd sizes, window attention pads to whole
windows), so the feature maps have the sizes ResNet gives: ``ceil`` of the input size over the stride.

Window attention follows the detection Swin of the official code by default: every stage shifts its
odd blocks (timm's ``always_partition``) and a block pads its map to whole windows *before* the
cyclic shift. timm shifts first and pads after, which puts tokens in other windows whenever a map
side is not a multiple of the window; ``pad_before_shift=False`` keeps timm's own behaviour.
"""

from __future__ import annotations

import os
import types

import timm
import torch
import torch.nn.functional as F
from detectron2.config import CfgNode, configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, Backbone
from timm.models.swin_transformer import PatchMerging, SwinTransformerBlock
from torch import Tensor, nn

from ...utils.safe_pickle import check_checkpoint_file

__all__ = ["SWIN_VARIANTS", "SwinBackbone", "add_swin_config"]

# variant -> (timm model name, stochastic depth rate of the official Swin configs)
SWIN_VARIANTS = {
    "T": ("swin_tiny_patch4_window7_224", 0.2),
    "S": ("swin_small_patch4_window7_224", 0.3),
    "B": ("swin_base_patch4_window7_224", 0.5),
}
# Detectron2 names of the four Swin stages (strides 4, 8, 16, 32), as for ResNet.
STAGE_NAMES = ("res2", "res3", "res4", "res5")


def add_swin_config(cfg: CfgNode) -> None:
    """Add ``cfg.MODEL.SWIN`` (the yacs keys read by :class:`SwinBackbone`)."""
    cfg.MODEL.SWIN = CfgNode()
    cfg.MODEL.SWIN.VARIANT = "T"  # T, S or B
    cfg.MODEL.SWIN.OUT_FEATURES = ["res3", "res4", "res5"]
    cfg.MODEL.SWIN.DROP_PATH_RATE = -1.0  # < 0: the official rate of the variant (0.2 / 0.3 / 0.5)
    cfg.MODEL.SWIN.NORM_OUTPUTS = True
    cfg.MODEL.SWIN.PRETRAINED_PATH = ""  # local Swin classification checkpoint; "" = random init
    cfg.MODEL.SWIN.PAD_BEFORE_SHIFT = True  # window attention in the official detection-Swin order


def _round_up(size: int, multiple: int) -> int:
    """The smallest multiple of ``multiple`` >= ``size``, written so that a symbolic size (torch.export)
    stays provably divisible by ``multiple``."""
    return multiple * ((size + multiple - 1) // multiple)


def _pad_to_multiples(x: Tensor, multiple_h: int, multiple_w: int, channels_last: bool = True) -> Tensor:
    """Float[B, H, W, C] (or Float[B, C, H, W] with ``channels_last=False``) zero-padded at the bottom and
    right to whole multiples of the two sizes; always padded (by 0 when whole): no branch on the size."""
    height, width = x.shape[1:3] if channels_last else x.shape[2:4]
    pad_h, pad_w = _round_up(height, multiple_h) - height, _round_up(width, multiple_w) - width
    return F.pad(x, (0, 0, 0, pad_w, 0, pad_h) if channels_last else (0, pad_w, 0, pad_h))


def _window_partition(x: Tensor, window: tuple[int, int]) -> Tensor:
    """Float[B, H, W, C] (whole windows) -> Float[B * num_windows, window_h * window_w, C], as timm's
    ``window_partition``. The permuted map is always copied: ``contiguous()`` would copy only when a side
    has more than one window, a branch that export would fix to the traced size."""
    batch, height, width, channels = x.shape
    x = x.view(batch, height // window[0], window[0], width // window[1], window[1], channels)
    x = x.permute(0, 1, 3, 2, 4, 5).clone(memory_format=torch.contiguous_format)
    return x.view(-1, window[0] * window[1], channels)


def _window_reverse(windows: Tensor, window: tuple[int, int], height: int, width: int) -> Tensor:
    """Float[B * num_windows, window_h * window_w, C] -> Float[B, H, W, C]: the inverse of
    :func:`_window_partition`."""
    channels = windows.shape[-1]
    x = windows.view(-1, height // window[0], width // window[1], window[0], window[1], channels)
    x = x.permute(0, 1, 3, 2, 4, 5).clone(memory_format=torch.contiguous_format)
    return x.view(-1, height, width, channels)


def _shifted_window_mask(x: Tensor, window: tuple[int, int], shift: tuple[int, int]) -> Tensor:
    """The attention mask of shifted windows over the padded, shifted map ``x`` (Float[B, H, W, C], H and W
    whole windows): 0 between tokens of the same region of the map before the shift, -100 otherwise, as
    timm's ``get_attn_mask`` and the official BasicLayer; built without in-place writes (export-friendly).

    Returns:
        Float[num_windows, window_h * window_w, window_h * window_w].
    """
    height, width = x.shape[1:3]
    # region of a row (column): 0 before the last window, 1 in it before the shift band, 2 in the band
    rows = torch.arange(height, device=x.device)
    cols = torch.arange(width, device=x.device)
    row_region = (rows >= height - window[0]).long() + (rows >= height - shift[0]).long()
    col_region = (cols >= width - window[1]).long() + (cols >= width - shift[1]).long()
    region = row_region[:, None] * 3 + col_region[None, :]
    region = _window_partition(region[None, :, :, None], window)[..., 0]
    different = region[:, None, :] != region[:, :, None]
    return torch.zeros(different.shape, dtype=x.dtype, device=x.device).masked_fill(different, -100.0)


def _window_attention_pad_before_shift(block: SwinTransformerBlock, x: Tensor) -> Tensor:
    """(Shifted) window attention of one timm Swin block, padding to whole windows before the shift.

    Replaces ``SwinTransformerBlock._attn``. x: Float[B, H, W, C] (after ``norm1``) -> Float[B, H, W, C].
    """
    padded = _pad_to_multiples(x, *block.window_size)
    (_, height, width, _), (_, padded_h, padded_w, _) = x.shape, padded.shape
    shift = block.shift_size
    shifted = any(shift)
    mask = None
    if shifted:
        padded = torch.roll(padded, shifts=(-shift[0], -shift[1]), dims=(1, 2))
        mask = _shifted_window_mask(padded, block.window_size, shift)
    windows = block.attn(_window_partition(padded, block.window_size), mask=mask)
    x = _window_reverse(windows, block.window_size, padded_h, padded_w)
    if shifted:
        x = torch.roll(x, shifts=shift, dims=(1, 2))
    # cropped by negative padding: its size is exactly the input's, also when symbolic (a slice is a min)
    return F.pad(x, (0, 0, 0, width - padded_w, 0, height - padded_h))


def _patch_merging(merging: PatchMerging, x: Tensor) -> Tensor:
    """timm's ``PatchMerging.forward`` with the odd-size padding in a form torch.export can reason about.

    x: Float[B, H, W, C] -> Float[B, ceil(H / 2), ceil(W / 2), out_dim].
    """
    x = _pad_to_multiples(x, 2, 2)
    batch, height, width, channels = x.shape
    x = x.reshape(batch, height // 2, 2, width // 2, 2, channels).permute(0, 1, 3, 4, 2, 5).flatten(3)
    return merging.reduction(merging.norm(x))


@BACKBONE_REGISTRY.register()
class SwinBackbone(Backbone):
    """timm Swin Transformer returning Detectron2-named NCHW maps.

    Args:
        variant: "T", "S" or "B" (Swin-T/S/B, patch 4, window 7).
        out_features: stages to return among ``res2`` .. ``res5`` (strides 4 .. 32).
        in_channels: input image channels.
        drop_path_rate: stochastic depth rate; None = the official rate of the variant.
        norm_outputs: a LayerNorm on every returned map (as in the detection Swin).
        freeze_at: 0 trains everything, 1 freezes the patch embedding, ``k`` >= 2 also the first ``k - 1``
            stages with their patch merging (Detectron2's FREEZE_AT convention; the official Sparse DETR
            freezes 2: patch embedding, stage 1 and the merging to stride 8).
        pretrained_path: a local Swin classification checkpoint loaded through timm; None = random init.
        pad_before_shift: window attention in the official detection-Swin order (see the module doc).
    """

    @configurable
    def __init__(
        self,
        *,
        variant: str = "T",
        out_features: tuple[str, ...] | list[str] = ("res3", "res4", "res5"),
        in_channels: int = 3,
        drop_path_rate: float | None = None,
        norm_outputs: bool = True,
        freeze_at: int = 0,
        pretrained_path: str | None = None,
        pad_before_shift: bool = True,
    ):
        super().__init__()
        variant = variant.upper()
        if variant not in SWIN_VARIANTS:
            raise ValueError(f"SwinBackbone: variant must be one of {sorted(SWIN_VARIANTS)}, got {variant!r}")
        unknown = [name for name in out_features if name not in STAGE_NAMES]
        if unknown or not out_features:
            raise ValueError(
                f"SwinBackbone: out_features must be a non-empty subset of {STAGE_NAMES}, got {out_features}"
            )
        if not 0 <= freeze_at <= len(STAGE_NAMES) + 1:
            raise ValueError(
                f"SwinBackbone: freeze_at must be in [0, {len(STAGE_NAMES) + 1}], got {freeze_at}"
            )
        if pretrained_path and not os.path.isfile(pretrained_path):
            raise FileNotFoundError(f"SwinBackbone: pretrained_path {pretrained_path!r} is not a file")
        if pretrained_path:
            check_checkpoint_file(pretrained_path)  # an empty file is named, not a bare loader error
        model_name, official_drop_path = SWIN_VARIANTS[variant]
        self._out_features = sorted(out_features, key=STAGE_NAMES.index)
        stage_indices = tuple(STAGE_NAMES.index(name) for name in self._out_features)
        self.body = timm.create_model(
            model_name,
            pretrained=bool(pretrained_path),
            pretrained_cfg_overlay={"file": pretrained_path} if pretrained_path else None,
            features_only=True,
            out_indices=stage_indices,
            in_chans=in_channels,
            dynamic_img_size=True,
            always_partition=pad_before_shift,
            drop_path_rate=official_drop_path if drop_path_rate is None else drop_path_rate,
        )
        channels = self.body.feature_info.channels()
        strides = self.body.feature_info.reduction()
        self._out_feature_channels = dict(zip(self._out_features, channels))
        self._out_feature_strides = dict(zip(self._out_features, strides))
        self.patch_size = strides[0] // 2 ** stage_indices[0]
        self._body_is_nhwc = self.body.output_fmt == "NHWC"
        self.output_norms = nn.ModuleDict(
            {
                name: nn.LayerNorm(c) if norm_outputs else nn.Identity()
                for name, c in zip(self._out_features, channels)
            }
        )
        self._freeze(freeze_at)
        for module in self.body.modules():
            if isinstance(module, PatchMerging):
                module.forward = types.MethodType(_patch_merging, module)
            elif pad_before_shift and isinstance(module, SwinTransformerBlock):
                module._attn = types.MethodType(_window_attention_pad_before_shift, module)

    @classmethod
    def from_config(cls, cfg, input_shape: ShapeSpec | None = None):
        swin = cfg.MODEL.SWIN
        return {
            "variant": swin.VARIANT,
            "out_features": list(swin.OUT_FEATURES),
            "in_channels": input_shape.channels if input_shape is not None else len(cfg.MODEL.PIXEL_MEAN),
            "drop_path_rate": None if swin.DROP_PATH_RATE < 0 else swin.DROP_PATH_RATE,
            "norm_outputs": swin.NORM_OUTPUTS,
            "freeze_at": cfg.MODEL.BACKBONE.FREEZE_AT,
            "pretrained_path": swin.PRETRAINED_PATH or None,
            "pad_before_shift": swin.PAD_BEFORE_SHIFT,
        }

    def _freeze(self, freeze_at: int) -> None:
        # As in the official Swin, a frozen stage includes the patch merging that follows it, which
        # timm keeps at the start of the next stage.
        frozen = ("patch_embed.",) if freeze_at >= 1 else ()
        frozen += tuple(f"layers_{i}." for i in range(freeze_at - 1))
        if freeze_at >= 2:
            frozen += (f"layers_{freeze_at - 1}.downsample.",)
        for name, parameter in self.body.named_parameters():
            if name.startswith(frozen):
                parameter.requires_grad_(False)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """
        Args:
            x: Float[B, C, H, W], any H and W.
        Returns:
            ``{name: Float[B, C_s, ceil(H / s), ceil(W / s)]}`` for each out feature of stride s.
        """
        if x.dim() != 4:
            raise ValueError(f"SwinBackbone: input must be Float[B, C, H, W], got shape {tuple(x.shape)}")
        maps = self.body(_pad_to_multiples(x, self.patch_size, self.patch_size, channels_last=False))
        if not self._body_is_nhwc:
            maps = [m.permute(0, 2, 3, 1) for m in maps]
        # always copied to NCHW: ``contiguous()`` copies or not depending on the sizes, a branch that
        # torch.export would fix to the traced size
        return {
            name: self.output_norms[name](m).permute(0, 3, 1, 2).clone(memory_format=torch.contiguous_format)
            for name, m in zip(self._out_features, maps)
        }

    def output_shape(self) -> dict[str, ShapeSpec]:
        return {
            name: ShapeSpec(channels=self._out_feature_channels[name], stride=self._out_feature_strides[name])
            for name in self._out_features
        }
