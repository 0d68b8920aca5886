import math
import re

import pytest
import timm
import torch
from detectron2.config import LazyCall as L
from detectron2.config import get_cfg, instantiate
from detectron2.layers import ShapeSpec
from detectron2.modeling import build_backbone

from sparse_detr.modeling.backbone import SwinBackbone
from sparse_detr.modeling.backbone.swin import add_swin_config


@pytest.fixture(scope="module")
def swin_t():
    torch.manual_seed(0)
    return SwinBackbone(variant="T")


def last_drop_path_rate(backbone):
    return [m.drop_prob for m in backbone.body.modules() if hasattr(m, "drop_prob")][-1]


@pytest.mark.parametrize("height, width", [(65, 97), (17, 130), (100, 33)])
def test_any_image_size_gives_ceil_sized_maps(swin_t, height, width):
    shapes = swin_t.output_shape()
    assert {name: (s.channels, s.stride) for name, s in shapes.items()} == {
        "res3": (192, 8),
        "res4": (384, 16),
        "res5": (768, 32),
    }
    with torch.no_grad():
        features = swin_t(torch.randn(2, 3, height, width))
    assert list(features) == ["res3", "res4", "res5"]
    for name, feature in features.items():
        stride = shapes[name].stride
        assert feature.shape == (
            2,
            shapes[name].channels,
            math.ceil(height / stride),
            math.ceil(width / stride),
        )
        assert feature.is_contiguous() and torch.isfinite(feature).all()


def test_output_norm_normalises_channels(swin_t):
    with torch.no_grad():
        feature = swin_t(torch.randn(1, 3, 64, 64))["res4"]
    # Fresh LayerNorm (weight 1, bias 0): zero mean, unit variance over channels at every position.
    torch.testing.assert_close(feature.mean(1), torch.zeros(1, 4, 4), atol=1e-4, rtol=0)
    torch.testing.assert_close(feature.var(1, unbiased=False), torch.ones(1, 4, 4), atol=1e-2, rtol=0)


def test_gradients_reach_every_trainable_parameter():
    torch.manual_seed(0)
    backbone = SwinBackbone(variant="T", out_features=["res2", "res3", "res4", "res5"], freeze_at=2)
    assert backbone.output_shape()["res2"] == ShapeSpec(channels=96, stride=4)
    features = backbone(torch.randn(1, 3, 40, 24))
    assert features["res2"].shape == (1, 96, 10, 6)
    sum(f.square().mean() for f in features.values()).backward()
    frozen = {n for n, p in backbone.named_parameters() if not p.requires_grad}
    # official frozen_stages=2: patch embedding, stage 1 and the patch merging after it
    prefixes = ("body.patch_embed.", "body.layers_0.", "body.layers_1.downsample.")
    assert all(n.startswith(prefixes) for n in frozen)
    assert all(any(n.startswith(p) for n in frozen) for p in prefixes)
    for name, parameter in backbone.named_parameters():
        if parameter.requires_grad:
            assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), name
        else:
            assert parameter.grad is None, name


@pytest.mark.parametrize(
    "variant, channels, drop_path", [("S", (192, 384, 768), 0.3), ("b", (256, 512, 1024), 0.5)]
)
def test_small_and_base_variants(variant, channels, drop_path):
    # Shapes only: built and run on the meta device (no weight initialisation, no arithmetic).
    with torch.device("meta"):
        backbone = SwinBackbone(variant=variant)
        features = backbone(torch.randn(1, 3, 36, 44))
    assert tuple(s.channels for s in backbone.output_shape().values()) == channels
    assert last_drop_path_rate(backbone) == pytest.approx(drop_path)
    expected = [(channels[0], 5, 6), (channels[1], 3, 3), (channels[2], 2, 2)]
    assert [tuple(f.shape[1:]) for f in features.values()] == expected


def test_built_from_yacs_and_lazy_config():
    cfg = get_cfg()
    add_swin_config(cfg)
    cfg.MODEL.BACKBONE.NAME = "SwinBackbone"
    cfg.MODEL.BACKBONE.FREEZE_AT = 1
    cfg.MODEL.SWIN.OUT_FEATURES = ["res4", "res5"]
    cfg.MODEL.SWIN.DROP_PATH_RATE = 0.05
    with torch.device("meta"):  # configuration checks only: skip the weight initialisation
        backbone = build_backbone(cfg)
        lazy = instantiate(L(SwinBackbone)(variant="T", norm_outputs=False, pad_before_shift=False))
    assert isinstance(backbone, SwinBackbone) and list(backbone.output_shape()) == ["res4", "res5"]
    assert last_drop_path_rate(backbone) == pytest.approx(0.05)
    assert not any(p.requires_grad for p in backbone.body.patch_embed.parameters())
    assert all(p.requires_grad for p in backbone.body.layers_1.parameters())

    assert last_drop_path_rate(lazy) == pytest.approx(0.2)
    assert all(isinstance(m, torch.nn.Identity) for m in lazy.output_norms.values())
    assert all("_attn" not in block.__dict__ for block in lazy.body.layers_3.blocks)  # timm's own order
    assert all("_attn" in block.__dict__ for block in backbone.body.layers_3.blocks)


def test_loads_a_local_classification_checkpoint_in_the_original_swin_format(tmp_path):
    """An ImageNet Swin checkpoint as Microsoft released it (downsample at the end of a stage, ``head``)."""
    torch.manual_seed(1)
    classifier = timm.create_model("swin_tiny_patch4_window7_224", pretrained=False)
    original = {}
    for key, value in classifier.state_dict().items():
        key = re.sub(r"layers\.(\d+)\.downsample", lambda m: f"layers.{int(m.group(1)) - 1}.downsample", key)
        original[key.replace("head.fc.", "head.")] = value
    assert "layers.0.downsample.reduction.weight" in original
    path = tmp_path / "swin_tiny_patch4_window7_224.pth"
    torch.save({"model": original}, path)
    loaded = SwinBackbone(variant="T", pretrained_path=str(path)).body.state_dict()
    for key in (
        "layers_2.blocks.3.attn.qkv.weight",
        "layers_1.downsample.reduction.weight",
        "patch_embed.proj.weight",
    ):
        torch.testing.assert_close(
            loaded[key], classifier.state_dict()[re.sub(r"^layers_", "layers.", key)], rtol=0, atol=0
        )
    with pytest.raises(FileNotFoundError, match="pretrained_path"):
        SwinBackbone(variant="T", pretrained_path=str(tmp_path / "missing.pth"))
    (tmp_path / "empty.pth").write_bytes(b"")
    with pytest.raises(ValueError, match=r"empty\.pth.*empty \(0 bytes\)"):
        SwinBackbone(variant="T", pretrained_path=str(tmp_path / "empty.pth"))


def test_bad_arguments_name_the_culprit():
    with pytest.raises(ValueError, match="variant"):
        SwinBackbone(variant="L")
    with pytest.raises(ValueError, match="out_features"):
        SwinBackbone(out_features=["res6"])
    with pytest.raises(ValueError, match="freeze_at"):
        SwinBackbone(freeze_at=9)


def official_window_attention(block, x):
    """Window attention in the official detection-Swin order, written out window by window.

    Pad to whole windows, cyclic shift by -shift, attend inside each window of the shifted map with
    tokens of different shift regions masked (-100), shift back, crop. x: Float[B, H, W, C].
    """
    window = block.window_size[0]
    shift = block.shift_size[0]
    batch, height, width, channels = x.shape
    padded_h, padded_w = math.ceil(height / window) * window, math.ceil(width / window) * window
    padded = x.new_zeros(batch, padded_h, padded_w, channels)
    padded[:, :height, :width] = x
    out = torch.zeros_like(padded)

    def region(coord, size):
        if shift == 0:
            return 0
        return 0 if coord < size - window else (1 if coord < size - shift else 2)

    for top in range(0, padded_h, window):
        for left in range(0, padded_w, window):
            shifted = [(r, c) for r in range(top, top + window) for c in range(left, left + window)]
            source = [((r + shift) % padded_h, (c + shift) % padded_w) for r, c in shifted]
            labels = torch.tensor([3 * region(r, padded_h) + region(c, padded_w) for r, c in shifted])
            mask = torch.where(labels[:, None] == labels[None, :], 0.0, -100.0)[None]
            rows, cols = torch.tensor([s[0] for s in source]), torch.tensor([s[1] for s in source])
            out[:, rows, cols] = block.attn(padded[:, rows, cols], mask=mask if shift else None)
    return out[:, :height, :width]


def test_window_attention_uses_the_official_pad_then_shift_order(swin_t):
    blocks = list(swin_t.body.layers_1.blocks)  # stride-8 stage: block 0 plain, block 1 shifted
    assert [b.shift_size for b in blocks] == [(0, 0), (3, 3)]
    last_stage = list(swin_t.body.layers_3.blocks)
    assert last_stage[1].shift_size == (3, 3)  # shifted even on maps smaller than a window, as official
    torch.manual_seed(0)
    x = torch.randn(2, 10, 12, 192)  # a 10 x 12 map of the 192-channel stage: not whole windows
    with torch.no_grad():
        for block in blocks:
            torch.testing.assert_close(
                block._attn(x), official_window_attention(block, x), rtol=1e-4, atol=1e-5
            )
        # timm's own order (shift, then pad) puts tokens in other windows on this 10 x 12 map.
        timm_order = type(blocks[1])._attn(blocks[1], x)
        assert (timm_order - official_window_attention(blocks[1], x)).abs().max() > 1e-2
