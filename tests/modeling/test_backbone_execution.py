"""How the backbone runs: FrozenBN folded or in the official affine form, channels-last, reduced precision."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
from detectron2.layers import FrozenBatchNorm2d
from detectron2.modeling.backbone import BasicStem, ResNet

from sparse_detr.modeling.backbone import precision
from sparse_detr.modeling.backbone.frozen_bn import (
    AffineFrozenBatchNorm2d,
    FrozenBNFoldedConv2d,
    fold_frozen_batchnorm,
    frozen_bn_as_affine,
)
from tests.helpers.tiny_sparse_detr import build_tiny_model, tiny_batch

# CPUs as torch describes them: ATen's vector ISA and the reduced-precision matrix units
AVX2_ONLY = {"isa": "AVX2", "avx512_bf16": False, "amx_bf16": False, "amx_fp16": False}
AVX512_WITHOUT_BF16 = {"isa": "AVX512", "avx512_bf16": False, "amx_bf16": False, "amx_fp16": False}
AVX512_BF16 = {"isa": "AVX512", "avx512_bf16": True, "amx_bf16": False, "amx_fp16": False}
AVX512_BF16_CAPPED_TO_AVX2 = dict(AVX512_BF16, isa="AVX2")  # ATEN_CPU_CAPABILITY=avx2
SAPPHIRE_RAPIDS = {"isa": "AVX512", "avx512_bf16": True, "amx_bf16": True, "amx_fp16": False}


@pytest.fixture
def simulated_cpu(monkeypatch):
    def simulate(capability):
        monkeypatch.setattr(precision, "cpu_capability", lambda: capability)

    return simulate


def _resnet18(seed: int = 0) -> ResNet:
    torch.manual_seed(seed)
    net = ResNet(
        BasicStem(in_channels=3, out_channels=64, norm="FrozenBN"),
        ResNet.make_default_stages(depth=18, norm="FrozenBN"),
        out_features=["res3", "res5"],
    )
    for module in net.modules():  # statistics far from the identity, as in a trained network
        if isinstance(module, FrozenBatchNorm2d):
            module.weight.uniform_(0.5, 1.5)
            module.bias.normal_()
            module.running_mean.normal_()
            module.running_var.uniform_(0.5, 2.0)
    return net


@pytest.mark.parametrize("convert", [fold_frozen_batchnorm, frozen_bn_as_affine])
def test_frozen_bn_forms_are_the_same_function_with_the_same_checkpoint(convert):
    reference, converted = _resnet18(), convert(_resnet18())
    assert list(converted.state_dict()) == list(reference.state_dict())
    new_class = FrozenBNFoldedConv2d if convert is fold_frozen_batchnorm else AffineFrozenBatchNorm2d
    assert sum(type(m) is new_class for m in converted.modules()) == 20  # stem + 8 blocks x 2 + 3 shortcuts
    x = torch.randn(2, 3, 64, 96)
    expected, actual = reference(x), converted(x)
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=1e-4, atol=1e-4)
    # the conv weights get the gradients of the unfolded network
    expected["res5"].square().mean().backward()
    actual["res5"].square().mean().backward()
    for (name, p_ref), p_new in zip(reference.named_parameters(), converted.parameters()):
        torch.testing.assert_close(p_new.grad, p_ref.grad, rtol=1e-3, atol=1e-5, msg=name)


def test_folding_leaves_convolutions_without_frozen_bn_alone():
    net = ResNet(
        BasicStem(in_channels=3, out_channels=64, norm="BN"),
        ResNet.make_default_stages(depth=18, norm="BN"),
        out_features=["res5"],
    )
    fold_frozen_batchnorm(net)
    assert not any(isinstance(m, FrozenBNFoldedConv2d) for m in net.modules())


def test_channels_last_model_gives_the_same_detections():
    batch = tiny_batch(with_targets=False)
    nchw, nhwc = build_tiny_model().eval(), build_tiny_model(channels_last=True).eval()
    stem = nhwc.backbone.stem.conv1.weight
    assert stem.is_contiguous(memory_format=torch.channels_last) and not stem.is_contiguous()
    nhwc.load_state_dict(nchw.state_dict())  # copies into the existing weights: still channels-last
    assert nhwc.backbone.stem.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    images, padding_mask = _inputs(nchw, batch)  # NCHW images: the convolutions follow the weights
    with torch.no_grad():
        maps = nhwc.backbone(images)
        expected, actual = nchw.predict(images, padding_mask), nhwc.predict(images, padding_mask)
    for name, feature in maps.items():  # the backbone's maps come out channels-last
        assert feature.is_contiguous(memory_format=torch.channels_last) and not feature.is_contiguous(), name
    for key in ("pred_logits", "pred_boxes"):
        torch.testing.assert_close(actual.predictions[key], expected.predictions[key], rtol=1e-4, atol=1e-4)
    # and it trains: every used parameter gets a gradient
    nhwc.train()
    losses = nhwc(tiny_batch())
    sum(losses.values()).backward()
    assert all(p.grad is not None for p in nhwc.backbone.parameters() if p.requires_grad)


def test_bfloat16_backbone_keeps_the_rest_in_float32(simulated_cpu):
    simulated_cpu(AVX512_BF16)
    batch = tiny_batch(with_targets=False)
    full, reduced = build_tiny_model().eval(), build_tiny_model(backbone_dtype="bfloat16").eval()
    images, padding_mask = _inputs(full, batch)
    with torch.no_grad():
        expected, actual = full.backbone(images), reduced.backbone(images)
        outputs = reduced.predict(images, padding_mask)
    for name in expected:  # bfloat16 keeps ~3 significant digits of the maps: close, not equal
        assert actual[name].dtype == torch.float32 and not torch.equal(actual[name], expected[name])
        error = (actual[name] - expected[name]).norm() / expected[name].norm()
        assert error < 0.02, f"{name}: relative error {error:.4f}"
    assert all(p.dtype == torch.float32 for p in outputs.predictions.values())
    reduced.train()
    sum(reduced(tiny_batch()).values()).backward()
    assert all(p.grad is not None for p in reduced.backbone.parameters() if p.requires_grad)


def test_execution_settings_keep_the_checkpoint_and_survive_copies(simulated_cpu):
    simulated_cpu(AVX512_BF16)
    plain = build_tiny_model().eval()
    tuned = build_tiny_model(channels_last=True, backbone_dtype="bfloat16").eval()
    assert list(tuned.state_dict()) == list(plain.state_dict())
    assert isinstance(tuned.backbone, ResNet) and type(tuned.backbone) is not ResNet
    assert type(build_tiny_model(backbone_dtype="auto").backbone) is type(tuned.backbone)  # cached class
    copied, unpickled = copy.deepcopy(tuned), pickle.loads(pickle.dumps(tuned))
    images, _ = _inputs(plain, tiny_batch(with_targets=False))
    with torch.no_grad():
        expected = tuned.backbone(images)
        for model in (copied, unpickled):
            assert type(model.backbone) is type(tuned.backbone)
            assert model.backbone.backbone_dtype == "bfloat16"
            assert model.backbone.stem.conv1.weight.is_contiguous(memory_format=torch.channels_last)
            actual = model.backbone(images)
            for name in expected:
                torch.testing.assert_close(actual[name], expected[name], rtol=0, atol=0)
        # applied again it changes the setting, not the class: float32 runs the plain forward
        precision.set_backbone_execution(copied.backbone, dtype="float32")
        assert type(copied.backbone) is type(tuned.backbone)
        full = build_tiny_model(channels_last=True).backbone(images)["res5"]
        assert torch.equal(copied.backbone(images)["res5"], full)


@pytest.mark.parametrize(
    "capability, expected",
    [
        (AVX2_ONLY, torch.float32),
        (AVX512_WITHOUT_BF16, torch.float32),
        (AVX512_BF16_CAPPED_TO_AVX2, torch.float32),
        (AVX512_BF16, torch.bfloat16),
        (SAPPHIRE_RAPIDS, torch.bfloat16),
    ],
)
def test_reduced_precision_only_where_the_cpu_runs_it_natively(simulated_cpu, capability, expected, recwarn):
    simulated_cpu(capability)
    assert precision.resolve_backbone_dtype("auto", "cpu") is expected
    assert precision.resolve_backbone_dtype("float32", "cpu") is torch.float32
    assert not recwarn.list  # "auto" and "float32" decide silently
    if expected is torch.bfloat16:
        assert precision.resolve_backbone_dtype("bfloat16", "cpu") is torch.bfloat16
        assert not recwarn.list
    else:
        message = rf"BACKBONE_DTYPE.*'bfloat16'.*capability {capability['isa']}.*runs in float32"
        with pytest.warns(UserWarning, match=message):
            assert precision.resolve_backbone_dtype("bfloat16", "cpu") is torch.float32
    with pytest.warns(UserWarning, match="no native float16"):  # no AMX-FP16 in any of them
        assert precision.resolve_backbone_dtype("float16", "cpu") is torch.float32


def test_bfloat16_backbone_without_native_bfloat16_runs_float32_with_a_warning(simulated_cpu):
    simulated_cpu(AVX2_ONLY)
    batch = tiny_batch(with_targets=False)
    full, requested = build_tiny_model().eval(), build_tiny_model(backbone_dtype="bfloat16").eval()
    automatic = build_tiny_model(backbone_dtype="auto").eval()
    images, _ = _inputs(full, batch)
    with torch.no_grad():
        expected = full.backbone(images)
        with pytest.warns(UserWarning, match="MODEL.SPARSE_DETR.BACKBONE_DTYPE"):
            actual = requested.backbone(images)
        chosen = automatic.backbone(images)
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=0, atol=0)
        torch.testing.assert_close(chosen[name], expected[name], rtol=0, atol=0)


def test_unknown_backbone_dtype_is_refused_by_config_key():
    key = r"MODEL.SPARSE_DETR.BACKBONE_DTYPE \(LazyConfig: model.backbone.dtype\)"
    with pytest.raises(ValueError, match=key):
        build_tiny_model(backbone_dtype="int8")


def _inputs(model, batch):
    images, padding_mask = model.preprocess_image(batch)
    return images.tensor, padding_mask
