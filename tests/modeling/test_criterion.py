
import pytest
import torch
from detectron2.config import LazyCall as L
from detectron2.config import get_cfg, instantiate
from detectron2.modeling import build_model
from torchvision.ops import sigmoid_focal_loss

from sparse_detr.config import add_sparse_detr_config
from sparse_detr.modeling import criterion as criterion_module
from sparse_detr.modeling.criterion import SparseDETRCriterion
from sparse_detr.modeling.matcher import HungarianMatcher
from sparse_detr.modeling.outputs import DecoderSampling, SparseDETROutput, TokenGeometry
from sparse_detr.modeling.scorers import ScorerLossInputs, TokenSelection


def network_output(
    final, aux, two_stage, encoder_aux, token_scores, num_kept, padding_mask, spatial_shapes,
    level_start_index, sampling_locations, attention_weights, selected_indices,
):
    """A :class:`SparseDETROutput` of a DAM-scored sparse model from its tensors."""
    selection = TokenSelection(
        scores=token_scores,
        selected_indices=selected_indices,
        num_kept=num_kept,
        loss_inputs=ScorerLossInputs(dam_logits=token_scores),
    )
    return SparseDETROutput(
        predictions=final,
        tokens=TokenGeometry(padding_mask, spatial_shapes, level_start_index),
        decoder_sampling=DecoderSampling(sampling_locations, attention_weights),
        selection=selection,
        aux_predictions=aux,
        two_stage_predictions=two_stage,
        encoder_aux_predictions=encoder_aux,
    )


def official_outputs(fx):
    """The official model's outputs as our network's output."""
    o = fx["outputs"]
    return network_output(
        {"pred_logits": o["pred_logits"], "pred_boxes": o["pred_boxes"]},
        o["aux_outputs"],
        o["enc_outputs"],
        o["aux_outputs_enc"],
        o["backbone_mask_prediction"],
        o["sparse_token_nums"].long(),
        o["mask_flatten"],
        o["spatial_shapes"],
        o["level_start_index"],
        o["sampling_locations_dec"],
        o["attn_weights_dec"],
        o["backbone_topk_proposals"],
    )


def test_every_official_loss_term_and_the_weighted_total(official):
    """On the official model's outputs and targets every term, statistic and the total match.

    The outputs are the fixture's eval pass, recorded as bit-identical to its training pass
    (dropout 0), on which the official loss_dict was computed.
    """
    train = official["train"]
    assert all(v in (0.0, True) for v in train["train_vs_eval_max_abs_diff"].values())
    outputs, targets = official_outputs(official), train["targets"]
    criterion = SparseDETRCriterion(num_classes=91)
    assert criterion.num_boxes(targets, torch.device("cpu")) == train["num_boxes"] == 4.0

    terms = criterion.losses(outputs, targets, with_stats=True)
    assert set(terms) == set(train["loss_dict"])
    for name, expected in train["loss_dict"].items():
        assert float(terms[name]) == pytest.approx(expected, rel=1e-4), name

    official_weights = {k: v for k, v in train["weight_dict"].items() if not k.endswith("_backbone")}
    weights = {name: criterion.loss_weight(name) for name in terms if name.startswith("loss_")}
    assert weights == official_weights

    weighted = criterion(outputs, targets)
    assert set(weighted) == set(train["weighted_loss_dict"])
    for name, expected in train["weighted_loss_dict"].items():
        assert float(weighted[name]) == pytest.approx(expected, rel=1e-4), name
    assert float(sum(weighted.values())) == pytest.approx(train["weighted_total_loss"], rel=1e-4)


def test_gradients_match_the_official_head_gradients(official):
    """d(weighted total)/d(outputs) reproduces the official gradients of the heads' last layers.

    A head's last layer maps features to the outputs, so its bias gradient is the sum of the output
    gradients (through the sigmoid for boxes; reference boxes are detached between decoder layers) and
    the class-head weight gradient is (d loss / d logits)^T @ decoder hidden states (stored as ``hs``).
    The scoring network's last bias gets the gradient of every token score (the padding fill is the
    batch minimum, itself a score).
    """
    train, o = official["train"], official["outputs"]

    def leaf_head(head):
        return {k: head[k].detach().clone().requires_grad_() for k in ("pred_logits", "pred_boxes")}

    outputs = official_outputs(official)
    final, aux0 = leaf_head(outputs.predictions), leaf_head(outputs.aux_predictions[0])
    enc, enc_aux0 = leaf_head(outputs.two_stage_predictions), leaf_head(outputs.encoder_aux_predictions[0])
    token_scores = outputs.selection.scores.detach().clone().requires_grad_()
    outputs.predictions, outputs.aux_predictions = final, [aux0]
    outputs.two_stage_predictions, outputs.encoder_aux_predictions = enc, [enc_aux0]
    outputs.selection.loss_inputs.dam_logits = token_scores
    sum(SparseDETRCriterion(num_classes=91)(outputs, train["targets"]).values()).backward()

    def box_bias_grad(head):
        boxes = head["pred_boxes"].detach()
        return (head["pred_boxes"].grad * boxes * (1 - boxes)).sum((0, 1))

    expected_norms = {
        "transformer.decoder.class_embed.0.bias": aux0["pred_logits"].grad.sum((0, 1)),
        "transformer.decoder.class_embed.1.bias": final["pred_logits"].grad.sum((0, 1)),
        "transformer.decoder.class_embed.2.bias": enc["pred_logits"].grad.sum((0, 1)),
        "transformer.encoder.class_embed.0.bias": enc_aux0["pred_logits"].grad.sum((0, 1)),
        "transformer.decoder.bbox_embed.0.layers.2.bias": box_bias_grad(aux0),
        "transformer.decoder.bbox_embed.1.layers.2.bias": box_bias_grad(final),
        "transformer.decoder.bbox_embed.2.layers.2.bias": box_bias_grad(enc),
        "transformer.encoder.bbox_embed.0.layers.2.bias": box_bias_grad(enc_aux0),
        "transformer.enc_mask_predictor.layer2.4.bias": token_scores.grad.sum(),
    }
    for name, grad in expected_norms.items():
        assert float(grad.norm()) == pytest.approx(train["grad_norms"][name], rel=1e-4), name

    hidden_states = official["intermediates"]["transformer_output"]["hs"]  # [layer, B, Q, C]
    class_weight_grad = torch.einsum("bqk,bqc->kc", aux0["pred_logits"].grad, hidden_states[0])
    expected = train["grads"]["class_embed.0.weight"]
    torch.testing.assert_close(
        class_weight_grad, expected, rtol=1e-3, atol=1e-6 * float(expected.abs().max())
    )
    torch.testing.assert_close(  # the stored hidden states do produce the stored logits
        hidden_states[0] @ official["state_dict"]["class_embed.0.weight"].T
        + official["state_dict"]["class_embed.0.bias"],
        o["aux_outputs"][0]["pred_logits"],
        rtol=0,
        atol=1e-5,
    )
    final_weight_grad = torch.einsum("bqk,bqc->kc", final["pred_logits"].grad, hidden_states[1])
    assert float(final_weight_grad.norm()) == pytest.approx(
        train["grad_norms"]["transformer.decoder.class_embed.1.weight"], rel=1e-4
    )


def synthetic_outputs(seed=0, batch=2, num_queries=6, num_classes=4, num_dec=3, num_enc=3, k=5):
    """A small output dict with every key of the model contract, all leaves requiring gradients."""
    g = torch.Generator().manual_seed(seed)
    shapes = torch.tensor([[4, 5], [2, 3]])
    starts = torch.tensor([0, 20])
    num_tokens = 26

    def head(n):
        return {
            "pred_logits": torch.randn(batch, n, num_classes, generator=g).requires_grad_(),
            "pred_boxes": (torch.rand(batch, n, 4, generator=g) * 0.5 + 0.25).requires_grad_(),
        }

    padding_mask = torch.zeros(batch, num_tokens, dtype=torch.bool)
    padding_mask[1, 15:20] = True
    padding_mask[1, 24:26] = True
    sampling_shape = (batch, num_dec, num_queries, 2, 2, 2)
    return network_output(
        head(num_queries),
        [head(num_queries) for _ in range(num_dec - 1)],
        head(num_tokens),
        [head(k) for _ in range(num_enc - 1)],
        torch.randn(batch, num_tokens, generator=g).requires_grad_(),
        torch.tensor([5, 4]),
        padding_mask,
        shapes,
        starts,
        torch.rand(*sampling_shape, 2, generator=g).requires_grad_(),
        torch.rand(*sampling_shape, generator=g).requires_grad_(),
        torch.stack([torch.randperm(20, generator=g)[:k] for _ in range(batch)]),
    )


def leaves(outputs):
    heads = [
        outputs.predictions, outputs.two_stage_predictions, *outputs.aux_predictions,
        *outputs.encoder_aux_predictions,
    ]
    return [h[key] for h in heads for key in ("pred_logits", "pred_boxes")] + [outputs.selection.scores]


EMPTY = {"labels": torch.zeros(0, dtype=torch.int64), "boxes": torch.zeros(0, 4)}


def test_loss_names_and_weights():
    outputs = synthetic_outputs(num_dec=3, num_enc=3)
    targets = [
        {"labels": torch.tensor([1, 3]), "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.3], [0.3, 0.6, 0.1, 0.1]])},
        EMPTY,
    ]
    criterion = SparseDETRCriterion(
        num_classes=4, class_weight=3.0, bbox_weight=7.0, giou_weight=1.5, mask_prediction_weight=0.5
    )
    terms = criterion.losses(outputs, targets)
    suffixes = ["", "_0", "_1", "_enc", "_enc_0", "_enc_1"]
    expected = {f"loss_{kind}{s}" for kind in ("ce", "bbox", "giou") for s in suffixes} | {
        "loss_mask_prediction"
    }
    assert set(terms) == expected
    weighted = criterion(outputs, targets)
    for name, value in terms.items():
        weight = {"ce": 3.0, "bbox": 7.0, "giou": 1.5, "mask": 0.5}[name.split("_")[1]]
        torch.testing.assert_close(weighted[name], value * weight)
    stats = set(criterion.losses(outputs, targets, with_stats=True)) - expected
    assert stats == {
        "class_error",
        "corr_mask_attn_map_dec_all",
        "corr_mask_attn_map_dec_0",
        "corr_mask_attn_map_dec_1",
    } | {f"cardinality_error{s}" for s in suffixes}


def test_images_without_targets_train():
    outputs = synthetic_outputs()
    criterion = SparseDETRCriterion(num_classes=4)
    for targets in (
        [EMPTY, EMPTY],
        [{"labels": torch.tensor([2]), "boxes": torch.tensor([[0.4, 0.4, 0.2, 0.2]])}, EMPTY],
    ):
        for leaf in leaves(outputs):
            leaf.grad = None
        weighted = criterion(outputs, targets)
        total = sum(weighted.values())
        assert torch.isfinite(total)
        total.backward()
        for leaf in leaves(outputs):
            assert leaf.grad is not None and torch.isfinite(leaf.grad).all()
        decoder_heads = [outputs.predictions, *outputs.aux_predictions]
        logits_grads = [h["pred_logits"].grad.abs().sum() for h in decoder_heads]
        assert all(g > 0 for g in logits_grads)
    # No box anywhere: the box terms vanish and num_boxes is clamped to 1.
    terms = criterion.losses(outputs, [EMPTY, EMPTY])
    assert criterion.num_boxes([EMPTY, EMPTY], torch.device("cpu")) == 1.0
    assert terms["loss_bbox"].item() == terms["loss_giou"].item() == 0.0
    assert terms["loss_ce"].item() > 0


def test_dam_loss_trains_only_the_scoring_network():
    """The DAM is a top-k target: no gradient reaches the decoder's sampling locations or weights."""
    outputs = synthetic_outputs()
    terms = SparseDETRCriterion(num_classes=4).losses(outputs, [EMPTY, EMPTY])
    terms["loss_mask_prediction"].backward()
    assert outputs.selection.scores.grad.abs().sum() > 0
    assert outputs.decoder_sampling.locations.grad is None and outputs.decoder_sampling.weights.grad is None


def test_objectness_scorer_gets_a_hungarian_loss_and_no_dam_loss():
    outputs = synthetic_outputs()
    g = torch.Generator().manual_seed(3)
    objectness = {
        "pred_logits": torch.randn(2, 26, 4, generator=g, requires_grad=True),
        "pred_boxes": torch.rand(2, 26, 4, generator=g, requires_grad=True),
    }
    outputs.selection.loss_inputs = ScorerLossInputs(detection_heads={"_backbone": objectness})
    targets = [{"labels": torch.tensor([3]), "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.3]])}, EMPTY]
    terms = SparseDETRCriterion(num_classes=4).losses(outputs, targets)
    assert {"loss_ce_backbone", "loss_bbox_backbone", "loss_giou_backbone"} <= set(terms)
    assert "loss_mask_prediction" not in terms
    sum(terms.values()).backward()
    assert objectness["pred_logits"].grad.abs().sum() > 0


def test_class_agnostic_two_stage_head_uses_foreground_label():
    outputs = synthetic_outputs()
    targets = [{"labels": torch.tensor([3]), "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.3]])}, EMPTY]
    enc = outputs.two_stage_predictions
    agnostic = SparseDETRCriterion(num_classes=4, two_stage_class_agnostic=True)
    specific = SparseDETRCriterion(num_classes=4)
    matches = agnostic.matcher(
        enc["pred_logits"], enc["pred_boxes"], [{**t, "labels": t["labels"] * 0} for t in targets]
    )
    expected_onehot = torch.zeros_like(enc["pred_logits"])
    expected_onehot[0, matches[0][0], 0] = 1
    loss_ce_enc = sigmoid_focal_loss(enc["pred_logits"], expected_onehot, reduction="sum") / 1.0  # 1 box
    torch.testing.assert_close(agnostic.losses(outputs, targets)["loss_ce_enc"], loss_ce_enc)
    assert not torch.allclose(specific.losses(outputs, targets)["loss_ce_enc"], loss_ce_enc)


def test_num_boxes_is_averaged_over_processes(monkeypatch):
    """Distributed: the box count is all-reduced (summed) and divided by the world size."""
    monkeypatch.setattr(criterion_module.comm, "get_world_size", lambda: 2)
    monkeypatch.setattr(criterion_module.dist, "is_initialized", lambda: True)
    monkeypatch.setattr(criterion_module.dist, "all_reduce", lambda tensor: tensor.add_(5.0))
    targets = [{"labels": torch.tensor([1, 2, 3]), "boxes": torch.rand(3, 4)}]
    assert SparseDETRCriterion.num_boxes(targets, torch.device("cpu")) == 4.0  # (3 + 5) / 2


def test_bad_input_names_the_culprit():
    outputs = synthetic_outputs()
    criterion = SparseDETRCriterion(num_classes=4)
    with pytest.raises(ValueError, match=r"pred_logits must be \[B, Q, 5\]"):
        SparseDETRCriterion(num_classes=5)(outputs, [EMPTY, EMPTY])
    outputs.decoder_sampling.weights = outputs.decoder_sampling.weights[..., :1]
    with pytest.raises(ValueError, match="attention_weights must be"):
        criterion(outputs, [EMPTY, EMPTY])
    outputs = synthetic_outputs()
    outputs.selection.loss_inputs.dam_logits = outputs.selection.scores[:, :10]
    with pytest.raises(ValueError, match="dam_logits must be"):
        criterion(outputs, [EMPTY, EMPTY])


def test_built_from_the_yacs_keys_and_lazy_config():
    cfg = add_sparse_detr_config(get_cfg())
    cfg.MODEL.DEVICE, cfg.MODEL.RESNETS.DEPTH, cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = "cpu", 18, 64
    sd = cfg.MODEL.SPARSE_DETR
    sd.CRITERION_NAME = "SparseDETRCriterion"  # a CRITERION_REGISTRY name
    sd.NUM_CLASSES = 7
    sd.MATCHER_COST_CLASS, sd.MATCHER_COST_BBOX, sd.MATCHER_COST_GIOU = 1.0, 4.0, 3.0
    sd.CLASS_LOSS_WEIGHT, sd.BBOX_LOSS_WEIGHT, sd.GIOU_LOSS_WEIGHT = 2.5, 5.5, 1.5
    sd.MASK_PREDICTION_LOSS_WEIGHT = 0.25
    sd.FOCAL_ALPHA = 0.3
    sd.TWO_STAGE_CLASS_AGNOSTIC = True
    built = build_model(cfg).criterion
    assert built.num_classes == 7 and built.two_stage_class_agnostic and built.focal_alpha == 0.3
    assert (built.matcher.cost_class, built.matcher.cost_bbox, built.matcher.cost_giou) == (1.0, 4.0, 3.0)
    names = ["loss_ce_enc_0", "loss_bbox_1", "loss_giou", "loss_mask_prediction"]
    assert [built.loss_weight(name) for name in names] == [2.5, 5.5, 1.5, 0.25]

    lazy = instantiate(L(SparseDETRCriterion)(num_classes=3, matcher=L(HungarianMatcher)(cost_giou=1.0)))
    assert (
        lazy.num_classes == 3 and lazy.matcher.cost_giou == 1.0 and lazy.loss_weight("loss_bbox_enc") == 5.0
    )
