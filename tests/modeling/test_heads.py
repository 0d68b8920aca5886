"""PredictionHeads: one class/box head pair per prediction site, in the official order."""

from __future__ import annotations

import math

import pytest
import torch

from sparse_detr.modeling.heads import MLP, PredictionHeads


def test_sites_in_official_order_with_focal_prior_initialisation():
    heads = PredictionHeads(
        hidden_dim=16,
        num_classes=3,
        num_decoder_layers=2,
        two_stage=True,
        num_encoder_layers=3,
        encoder_aux=True,
    )
    assert len(heads.class_heads) == len(heads.box_heads) == 2 + 1 + 2
    assert [heads.decoder_site(i) for i in range(2)] == [0, 1]
    assert heads.two_stage_site() == 2 and [heads.encoder_aux_site(i) for i in range(2)] == [3, 4]
    prior = -math.log((1 - 0.01) / 0.01)
    assert all(torch.allclose(h.bias, torch.full((3,), prior)) for h in heads.class_heads)
    assert all(not h.layers[-1].weight.any() for h in heads.box_heads)
    assert heads.class_heads[0].weight.data_ptr() != heads.class_heads[1].weight.data_ptr()


def test_shared_heads_and_learned_queries():
    heads = PredictionHeads(hidden_dim=16, num_classes=3, num_decoder_layers=4, two_stage=False, share=True)
    assert len(heads.class_heads) == 1 and heads.decoder_site(3) == 0
    assert heads.box_heads[0].layers[-1].bias.tolist() == [0.0, 0.0, -2.0, -2.0]  # Deformable DETR init
    with pytest.raises(RuntimeError, match="two_stage=False"):
        heads.two_stage_site()
    with pytest.raises(ValueError, match="share=True is incompatible"):
        PredictionHeads(
            hidden_dim=16,
            num_classes=3,
            num_decoder_layers=2,
            num_encoder_layers=3,
            encoder_aux=True,
            share=True,
        )


def test_boxes_are_offsets_in_logit_space_of_the_reference():
    torch.manual_seed(0)
    heads = PredictionHeads(hidden_dim=16, num_classes=3, num_decoder_layers=2, two_stage=False)
    features = torch.randn(2, 5, 16)
    reference = torch.rand(2, 5, 4) * 0.8 + 0.1
    out = heads.predict_from_reference(1, features, reference)
    offsets = heads.box_heads[1](features)
    torch.testing.assert_close(
        out["pred_boxes"], (offsets + torch.logit(reference)).sigmoid(), atol=1e-5, rtol=0
    )
    assert out["pred_logits"].shape == (2, 5, 3)
    # 2-d references shift only the centre
    centre_only = heads.predict(0, features, torch.logit(reference[..., :2]))
    offsets = heads.box_heads[0](features)
    torch.testing.assert_close(centre_only["pred_boxes"][..., 2:], offsets[..., 2:].sigmoid())


def test_decoder_and_encoder_aux_predictions_use_their_own_sites():
    torch.manual_seed(0)
    heads = PredictionHeads(
        hidden_dim=16,
        num_classes=3,
        num_decoder_layers=3,
        two_stage=True,
        num_encoder_layers=2,
        encoder_aux=True,
    )
    hidden = [torch.randn(1, 4, 16) for _ in range(3)]
    references = [torch.rand(1, 4, 4) * 0.8 + 0.1 for _ in range(3)]
    with_aux = heads.decoder_predictions(hidden, references, with_aux=True)
    last_only = heads.decoder_predictions(hidden, references, with_aux=False)
    assert len(with_aux) == 3 and len(last_only) == 1
    torch.testing.assert_close(with_aux[-1]["pred_logits"], last_only[0]["pred_logits"])
    torch.testing.assert_close(with_aux[0]["pred_logits"], heads.class_heads[0](hidden[0]))
    queries, proposals = [torch.randn(1, 6, 16)], torch.randn(1, 6, 4)
    (aux,) = heads.encoder_aux_predictions(queries, proposals)
    torch.testing.assert_close(aux["pred_logits"], heads.class_heads[heads.encoder_aux_site(0)](queries[0]))
    assert len(heads.decoder_box_heads()) == 3


def test_mlp_has_relu_between_layers_only():
    mlp = MLP(4, 8, 2, 3)
    assert [layer.out_features for layer in mlp.layers] == [8, 8, 2]
    with torch.no_grad():
        for layer in mlp.layers:
            layer.weight.fill_(-1.0)
            layer.bias.fill_(-1.0)
    assert (mlp(torch.ones(1, 4)) == -1.0).all()  # hidden ReLUs clamp to 0, the last layer is linear
