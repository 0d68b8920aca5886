"""The SparseDETR meta-architecture on tiny configs: output contract, train steps, dynamic rho, bad input."""

from __future__ import annotations

import pytest
import torch

from tests.helpers.tiny_sparse_detr import NUM_CLASSES, build_tiny_model, tiny_batch


def _train_step(model, batch):
    model.train()
    losses = model(batch)
    total = sum(losses.values())
    assert torch.isfinite(total), losses
    model.zero_grad()
    total.backward()
    return losses


def _params_without_grad(model):
    return [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]


def test_training_outputs_follow_the_criterion_contract():
    model = build_tiny_model(scorer="dam", keep_ratio=0.3).train()
    images, mask = model.preprocess_image(tiny_batch())
    out = model.predict(images.tensor, mask, with_loss_outputs=True)
    batch, queries, tokens = 2, 10, out.tokens.padding_mask.shape[1]
    assert out.predictions["pred_logits"].shape == (batch, queries, NUM_CLASSES)
    assert out.predictions["pred_boxes"].shape == (batch, queries, 4)
    assert len(out.aux_predictions) == 1
    assert out.aux_predictions[0]["pred_logits"].shape == (batch, queries, NUM_CLASSES)
    assert out.two_stage_predictions["pred_logits"].shape == (batch, tokens, NUM_CLASSES)
    selection = out.selection
    k = selection.selected_indices.shape[1]
    assert int(out.num_kept.max()) == k
    assert len(out.encoder_aux_predictions) == 1
    assert out.encoder_aux_predictions[0]["pred_boxes"].shape == (batch, k, 4)
    assert selection.loss_inputs.dam_logits.shape == (batch, tokens)
    assert not selection.loss_inputs.detection_heads
    assert out.decoder_sampling.locations.shape[:3] == (batch, 2, queries)
    assert out.decoder_sampling.locations.shape[-1] == 2
    assert out.decoder_sampling.weights.shape == out.decoder_sampling.locations.shape[:-1]
    assert out.tokens.spatial_shapes.shape == (4, 2) and out.tokens.level_start_index.shape == (4,)
    assert out.internals is None
    # per-image counts from that image's valid tokens; the padded image keeps fewer
    valid = (~out.tokens.padding_mask).sum(1)
    assert out.num_kept.tolist() == [int(v * 0.3) + 1 for v in valid.tolist()]
    assert out.num_kept[1] < out.num_kept[0]
    for i in range(batch):
        kept = selection.selected_indices[i, : out.num_kept[i]]
        assert not out.tokens.padding_mask[i, kept].any(), "padding selected"


def test_inference_skips_loss_only_work_and_returns_instances():
    model = build_tiny_model().eval()
    with torch.no_grad():
        results, out = model.inference(tiny_batch(with_targets=False))
        for again, result in zip(model(tiny_batch(with_targets=False)), results):
            assert torch.equal(again["instances"].scores, result["instances"].scores)
    assert out.aux_predictions == [] and out.encoder_aux_predictions == []
    assert out.two_stage_predictions is None and out.selection.loss_inputs.dam_logits is None
    for result, (height, width) in zip(results, [(64, 96), (48, 64)]):
        instances = result["instances"]
        assert instances.image_size == (height, width)
        assert len(instances) <= 100
        assert instances.pred_classes.max() < NUM_CLASSES
        assert (instances.scores[:-1] >= instances.scores[1:]).all()


def test_inference_rescales_to_requested_size():
    model = build_tiny_model().eval()
    batch = tiny_batch(with_targets=False)
    batch[0]["height"], batch[0]["width"] = 192, 256
    with torch.no_grad():
        instances = model(batch)[0]["instances"]
    assert instances.image_size == (192, 256)
    assert instances.pred_boxes.tensor[:, 2].max() <= 256 and instances.pred_boxes.tensor[:, 3].max() <= 192


@pytest.mark.parametrize(
    "scorer,keep_ratio", [("dam", 0.1), ("dam", 1.0), ("objectness", 0.2), ("random", 0.2)]
)
def test_train_step_gives_gradients_to_every_used_parameter(scorer, keep_ratio):
    model = build_tiny_model(scorer=scorer, keep_ratio=keep_ratio)
    losses = _train_step(model, tiny_batch())
    missing = _params_without_grad(model)
    if keep_ratio == 1.0:
        # rho = 1 is the dense encoder: the scorer is not run
        assert all(n.startswith("token_scorer.") for n in missing) and missing
        assert "loss_mask_prediction" not in losses
    else:
        assert missing == []
    if scorer == "dam" and keep_ratio < 1:
        assert "loss_mask_prediction" in losses
    if scorer == "objectness":
        assert {"loss_ce_backbone", "loss_bbox_backbone", "loss_giou_backbone"} <= set(losses)
        assert "loss_mask_prediction" not in losses
    if scorer == "random":
        assert "loss_mask_prediction" not in losses


def test_dense_model_without_scorer_trains():
    model = build_tiny_model(scorer=None)
    _train_step(model, tiny_batch())
    assert _params_without_grad(model) == []
    assert model.token_scorer is None and not model.is_sparse


def test_image_without_annotations_trains():
    model = build_tiny_model()
    _train_step(model, tiny_batch(empty_second=True))
    assert _params_without_grad(model) == []


def test_twelve_layer_encoder_builds_and_steps():
    model = build_tiny_model(enc_layers=12, dec_layers=1)
    assert len(model.encoder.layers) == 12 and model.heads.num_encoder_aux == 11
    losses = _train_step(model, tiny_batch())
    assert "loss_ce_enc_10" in losses
    assert _params_without_grad(model) == []


def test_pre_norm_encoder_trains():
    model = build_tiny_model(pre_norm=True)
    _train_step(model, tiny_batch())
    assert _params_without_grad(model) == []


def test_no_encoder_model_decodes_the_unrefined_backbone_tokens():
    model = build_tiny_model(scorer=None, enc_layers=0)
    losses = _train_step(model, tiny_batch())
    assert _params_without_grad(model) == []
    assert not [name for name in losses if "_enc_" in name] and "loss_ce_enc" in losses
    model.eval()
    images, mask = model.preprocess_image(tiny_batch(with_targets=False))
    with torch.no_grad():
        out = model.predict(images.tensor, mask, with_internals=True)
        features = model.backbone(images.tensor)
        tokens = model.neck([features[f] for f in model.in_features], mask)
        results = model(tiny_batch(with_targets=False))
    # the memory is the neck's output with its position embedding added (as the official "no encoder")
    assert torch.equal(out.internals.memory, tokens.features + tokens.pos)
    assert out.internals.enc_sampling_locations is None and out.selection is None
    assert [len(r["instances"]) for r in results] == [50, 50]  # min(100, 10 queries x 5 classes)


def test_dynamic_keep_ratio_at_inference():
    model = build_tiny_model(keep_ratio=0.1).eval()
    images, mask = model.preprocess_image(tiny_batch(with_targets=False))
    with torch.no_grad():
        counts_01 = model.predict(images.tensor, mask).num_kept
        model.set_keep_ratio(0.5)
        counts_05 = model.predict(images.tensor, mask).num_kept
        model.set_keep_ratio(1.0)
        dense = model.predict(images.tensor, mask)
    assert (counts_05 > counts_01).all()
    assert dense.selection is None and torch.equal(dense.num_kept, dense.tokens.valid_counts)
    model.train()
    assert model.token_scorer.keep_ratio == 1.0  # one rho, in training and inference alike


@pytest.mark.parametrize("bad", [0.0, -0.1, 1.5, float("nan"), True, "0.5", torch.tensor([0.1, 0.2])])
def test_keep_ratio_outside_unit_interval_is_refused(bad):
    with pytest.raises(ValueError, match="KEEP_RATIO"):
        build_tiny_model(keep_ratio=bad)
    model = build_tiny_model()
    with pytest.raises(ValueError, match="KEEP_RATIO"):
        model.set_keep_ratio(bad)


def test_keep_ratio_tensors_are_read_without_their_graph():
    model = build_tiny_model()
    rho = torch.tensor(0.25, requires_grad=True)
    model.set_keep_ratio(rho)
    assert model.token_scorer.keep_ratio == 0.25 and isinstance(model.token_scorer.keep_ratio, float)


def test_image_smaller_than_the_coarsest_stride_works():
    """A 12 x 16 image padded into a 20 x 24 batch: one token on the coarsest level, still valid."""
    model = build_tiny_model()
    sizes = ((20, 24), (12, 16))
    losses = _train_step(model, tiny_batch(sizes=sizes))
    assert all(torch.isfinite(v) for v in losses.values())
    model.eval()
    images, mask = model.preprocess_image(tiny_batch(with_targets=False, sizes=sizes))
    with torch.no_grad():
        out = model.predict(images.tensor, mask)
        results = model(tiny_batch(with_targets=False, sizes=sizes))
    assert out.tokens.spatial_shapes.tolist() == [[3, 3], [2, 2], [1, 1], [1, 1]]
    starts = out.tokens.level_start_index.tolist() + [out.tokens.padding_mask.shape[1]]
    for level in range(4):  # every level keeps a valid token of the small image
        assert not out.tokens.padding_mask[1, starts[level] : starts[level + 1]].all()
    assert (out.num_kept >= 1).all()
    for result, (height, width) in zip(results, sizes):
        boxes = result["instances"].pred_boxes.tensor
        assert result["instances"].image_size == (height, width) and torch.isfinite(boxes).all()
        assert (boxes[:, 2] <= width).all() and (boxes[:, 3] <= height).all()


def test_bad_inputs_are_reported():
    model = build_tiny_model().train()
    with pytest.raises(ValueError, match="instances"):
        model(tiny_batch(with_targets=False))


def test_the_graph_ties_what_must_agree():
    """Depths, widths and class counts are written once; what cannot be tied is refused by name."""
    from detectron2.config import instantiate

    from tests.helpers.tiny_sparse_detr import tiny_model_config

    cfg = tiny_model_config(scorer="objectness")
    cfg.decoder.num_layers, cfg.encoder.num_layers, cfg.heads.num_classes, cfg.neck.hidden_dim = 3, 4, 7, 64
    model = instantiate(cfg)
    assert model.heads.num_decoder_layers == 3 and len(model.heads.decoder_box_heads()) == 3
    assert model.heads.num_encoder_aux == 3 and model.encoder.dim == model.decoder.dim == 64
    assert model.criterion.num_classes == model.token_scorer.class_head.out_features == 7
    assert model.heads.class_heads[0].in_features == model.query_init.dim == 64
    cfg = tiny_model_config()
    cfg.in_features = ["res2", "res3", "res4"]
    with pytest.raises(ValueError, match="in_features"):
        instantiate(cfg)
    cfg = tiny_model_config()
    cfg.criterion.two_stage_class_agnostic = True
    with pytest.raises(ValueError, match="two_stage_class_agnostic"):
        instantiate(cfg)
