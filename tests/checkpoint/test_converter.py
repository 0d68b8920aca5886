"""Official checkpoint conversion: key map, args -> config, safe loading, refusals with names."""

from __future__ import annotations

import argparse
import collections

import pytest
import torch
from detectron2.config import instantiate

from sparse_detr.checkpoint.convert import (
    OfficialCheckpoint,
    build_converted_model,
    load_official_checkpoint,
)
from sparse_detr.checkpoint.key_map import UnknownOfficialKeys, convert_official_state_dict, map_official_key
from sparse_detr.checkpoint.official_config import (
    COCO_CONTIGUOUS_CATEGORY_IDS,
    UnsupportedOfficialArgs,
    official_model_config,
)
from sparse_detr.checkpoint.safe_loading import CheckpointMismatchError
from tests.helpers.official_args import SPARSE_ARGS


class ArbitraryObject:
    """A pickled class that the weights-only loader must refuse."""


@pytest.mark.parametrize(
    "official_key,ours",
    [
        ("backbone.0.body.conv1.weight", "backbone.stem.conv1.weight"),
        ("backbone.0.body.bn1.running_var", "backbone.stem.conv1.norm.running_var"),
        ("backbone.0.body.layer1.0.conv2.weight", "backbone.res2.0.conv2.weight"),
        ("backbone.0.body.layer4.2.bn3.bias", "backbone.res5.2.conv3.norm.bias"),
        ("backbone.0.body.layer2.0.downsample.0.weight", "backbone.res3.0.shortcut.weight"),
        ("backbone.0.body.layer3.0.downsample.1.running_mean", "backbone.res4.0.shortcut.norm.running_mean"),
        ("input_proj.3.1.weight", "neck.level_projections.3.1.weight"),
        ("transformer.enc_output_norm.bias", "token_projection.norm.bias"),
        ("transformer.enc_output.weight", "token_projection.linear.weight"),
        ("transformer.decoder.layers.1.norm2.weight", "decoder.layers.1.self_attn_norm.weight"),
        (
            "transformer.decoder.layers.0.self_attn.in_proj_weight",
            "decoder.layers.0.self_attn.in_proj_weight",
        ),
        ("transformer.encoder.layers.5.linear2.bias", "encoder.layers.5.ffn.linear2.bias"),
        ("transformer.enc_mask_predictor.layer2.4.weight", "token_scorer.head.4.weight"),
        ("query_embed.weight", "query_init.query_embed.weight"),
        ("something.else", None),
    ],
)
def test_key_map(official_key, ours):
    assert map_official_key(official_key) == ours


def test_unknown_keys_are_reported_by_name():
    state = {"transformer.level_embed": torch.zeros(4, 8), "transformer.mystery.weight": torch.zeros(2)}
    with pytest.raises(UnknownOfficialKeys, match="transformer.mystery.weight"):
        convert_official_state_dict(state, share_heads=False)


def test_shared_heads_collapse_and_aliases_are_checked():
    head = {"weight": torch.randn(3, 4), "bias": torch.randn(3)}
    state = collections.OrderedDict()
    for site in range(3):
        for name, value in head.items():
            state[f"class_embed.{site}.{name}"] = value
            state[f"transformer.decoder.class_embed.{site}.{name}"] = value
    converted = convert_official_state_dict(state, share_heads=True)
    assert set(converted) == {"heads.class_heads.0.weight", "heads.class_heads.0.bias"}
    state["transformer.decoder.class_embed.1.bias"] = torch.randn(3)
    with pytest.raises(ValueError, match="transformer.decoder.class_embed.1.bias"):
        convert_official_state_dict(state, share_heads=True)


def test_coco_contiguous_keeps_the_80_category_rows():
    weight = torch.arange(91.0).view(91, 1).repeat(1, 4)
    converted = convert_official_state_dict(
        {"class_embed.0.weight": weight}, share_heads=False, class_rows=COCO_CONTIGUOUS_CATEGORY_IDS
    )
    rows = converted["heads.class_heads.0.weight"][:, 0].long().tolist()
    assert rows == COCO_CONTIGUOUS_CATEGORY_IDS and len(rows) == 80


@pytest.mark.parametrize(
    "change,message",
    [
        (dict(backbone="swin-l"), "backbone"),
        (dict(dilation=True), "dilation"),
        (dict(masks=True), "masks"),
        (dict(position_embedding="learned"), "position_embedding"),
        (dict(num_feature_levels=2), "num_feature_levels"),
        (dict(rho=1.5), "rho"),
        (dict(rho=1.0), "rho=1.0"),
        (dict(rho=0.2, two_stage=False), "two_stage"),
    ],
)
def test_unsupported_args_are_refused(change, message):
    with pytest.raises(UnsupportedOfficialArgs, match=message):
        official_model_config(argparse.Namespace(**{**SPARSE_ARGS, **change}))


def test_config_follows_the_args():
    cfg = official_model_config(
        {
            **SPARSE_ARGS,
            "rho": 0.3,
            "enc_layers": 3,
            "dec_layers": 4,
            "enc_n_points": 2,
            "num_queries": 50,
            "hidden_dim": 64,
            "nheads": 4,
            "backbone": "resnet101",
        }
    )
    assert cfg.token_scorer.keep_ratio == 0.3
    assert cfg.encoder.num_layers == 3 and cfg.encoder.num_points == 2 and cfg.decoder.num_layers == 4
    assert cfg.query_init.num_queries == 50 and cfg.neck.hidden_dim == 64 and cfg.encoder.num_heads == 4
    assert cfg.backbone.module.module.stages.depth == 101 and cfg.heads.num_classes == 91
    dense = official_model_config(
        {**SPARSE_ARGS, "rho": 0.0, "use_enc_aux_loss": False, "with_box_refine": False}
    )
    assert dense.token_scorer is None and dense.heads.share and not dense.heads.encoder_aux
    deformable = official_model_config(
        {**SPARSE_ARGS, "rho": 0.0, "two_stage": False, "use_enc_aux_loss": False}
    )
    assert not deformable.heads.box_refine and not deformable.heads.two_stage
    assert official_model_config(SPARSE_ARGS, coco_contiguous=True).heads.num_classes == 80


def test_learned_query_variant_builds_small():
    cfg = official_model_config(
        {
            **SPARSE_ARGS,
            "rho": 0.0,
            "two_stage": False,
            "use_enc_aux_loss": False,
            "with_box_refine": False,
            "enc_layers": 1,
            "dec_layers": 1,
            "hidden_dim": 64,
            "nheads": 2,
            "num_queries": 5,
            "dim_feedforward": 32,
        }
    )
    model = instantiate(cfg).eval()
    images, mask = torch.randn(1, 3, 64, 64), torch.zeros(1, 64, 64, dtype=torch.bool)
    with torch.no_grad():
        out = model.predict(images, mask)
    assert out.predictions["pred_logits"].shape == (1, 5, 91) and out.two_stage_predictions is None


def test_loader_refuses_arbitrary_pickles(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"model": {}, "args": argparse.Namespace(rho=0.1), "payload": ArbitraryObject()}, path)
    with pytest.raises(Exception, match="ArbitraryObject"):
        load_official_checkpoint(str(path))
    torch.save({"model": {}}, tmp_path / "no_args.pth")
    with pytest.raises(ValueError, match="args"):
        load_official_checkpoint(str(tmp_path / "no_args.pth"))


def test_loader_accepts_official_namespace(official, tmp_path):
    path = tmp_path / "official.pth"
    torch.save({"model": official["state_dict"], "args": argparse.Namespace(**official["args"])}, path)
    checkpoint = load_official_checkpoint(str(path))
    assert checkpoint.args["rho"] == 0.1 and len(checkpoint.state_dict) == 448


@pytest.mark.parametrize(
    "change,culprit",
    [
        (dict(enc_layers=3), "encoder.layers.2"),
        (dict(dec_n_points=8), "decoder.layers.0.cross_attn.sampling_offsets.weight"),
        (dict(use_enc_aux_loss=False), "heads.class_heads: 4 in the checkpoint"),
    ],
)
def test_checkpoint_of_another_architecture_lists_mismatched_keys(official, change, culprit):
    with pytest.raises((CheckpointMismatchError, UnknownOfficialKeys), match=culprit.replace(".", r"\.")):
        build_converted_model(OfficialCheckpoint(official["state_dict"], {**official["args"], **change}))


def test_dynamic_rho_on_the_converted_model(official):
    """Another rho than trained: the same weights run with more kept tokens per image."""
    model, _ = build_converted_model(
        OfficialCheckpoint(official["state_dict"], {**official["args"], "rho": 0.3})
    )
    inputs = official["inputs"]
    with torch.no_grad():
        out = model.eval().predict(inputs["padded_images"], inputs["padded_mask"])
    valid = (~official["outputs"]["mask_flatten"]).sum(1)
    assert out.num_kept.tolist() == [int(v * 0.3) + 1 for v in valid.tolist()]


def test_conversion_never_destroys_its_input_nor_an_earlier_conversion(official, tmp_path):
    import os

    from sparse_detr.checkpoint.convert import convert_official_checkpoint
    from sparse_detr.utils.files import NoSpaceLeftError, OverwritesInputError

    source = tmp_path / "out" / "model_final.pth"  # a downloaded file kept where the conversion goes
    source.parent.mkdir()
    torch.save({"model": official["state_dict"], "args": argparse.Namespace(**official["args"])}, source)
    before = source.read_bytes()
    with pytest.raises(OverwritesInputError, match=r"model_final\.pth is the file --input reads"):
        convert_official_checkpoint(str(source), str(tmp_path / "out"))
    assert source.read_bytes() == before
    # an earlier conversion survives a full disk: the new file goes to a temporary name first
    out = tmp_path / "converted"
    convert_official_checkpoint(str(source), str(out))
    earlier = (out / "model_final.pth").read_bytes()
    (out / f".model_final.pth.tmp{os.getpid()}").symlink_to("/dev/full")
    with pytest.raises(NoSpaceLeftError, match=rf"no space left in {out} while writing model_final\.pth"):
        convert_official_checkpoint(str(source), str(out), coco_contiguous=True)
    assert (out / "model_final.pth").read_bytes() == earlier
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml", "model_final.pth"]
