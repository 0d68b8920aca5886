"""Sparse encoder semantics, decoder refinement, neck shapes/masks and token geometry."""

from __future__ import annotations

import torch

from sparse_detr.modeling.decoder import DeformableDecoder
from sparse_detr.modeling.encoder import SparseDeformableEncoder, SparseEncoderLayer
from sparse_detr.modeling.neck import MultiScaleNeck
from sparse_detr.modeling.position_encoding import mask_sine_embedding
from sparse_detr.modeling.registry import SPARSE_ENCODER_REGISTRY
from sparse_detr.modeling.tokens import encoder_reference_points, grid_proposals


def _tokens(batch=2, dim=32, seed=0):
    torch.manual_seed(seed)
    neck = MultiScaleNeck(in_channels=[8, 16, 32], hidden_dim=dim, num_levels=4)
    features = [torch.randn(batch, 8, 16, 20), torch.randn(batch, 16, 8, 10), torch.randn(batch, 32, 4, 5)]
    mask = torch.zeros(batch, 128, 160, dtype=torch.bool)
    mask[1, 96:, :] = True
    mask[1, :, 120:] = True
    return neck(features, mask)


def _encoder(num_layers=2, pre_norm=False, **kwargs):
    torch.manual_seed(1)
    return SparseDeformableEncoder(
        num_layers=num_layers,
        pre_norm=pre_norm,
        dim=32,
        ffn_dim=64,
        num_heads=2,
        num_levels=4,
        num_points=2,
        dropout=0.0,
        **kwargs,
    )


def test_neck_levels_masks_and_positions():
    tokens = _tokens()
    assert tokens.spatial_shapes.tolist() == [[16, 20], [8, 10], [4, 5], [2, 3]]
    assert tokens.level_start_index.tolist() == [0, 320, 400, 420]
    assert tokens.features.shape == tokens.pos.shape == (2, 426, 32)
    assert not tokens.padding_mask[0].any()
    level0 = tokens.padding_mask[1, :320].view(16, 20)
    assert level0[12:].all() and level0[:, 15:].all() and not level0[:12, :15].any()
    assert torch.allclose(tokens.valid_ratios[1, 0], torch.tensor([15 / 20, 12 / 16]))


def test_sine_embedding_is_normalised_over_the_valid_region():
    mask = torch.zeros(1, 4, 6, dtype=torch.bool)
    mask[:, :, 3:] = True
    pos = mask_sine_embedding(mask, 8)
    assert pos.shape == (1, 16, 4, 6)
    # x features: the first channel is sin(x_norm) with x_norm in (0, 2pi] over the 3 valid columns
    x_first = pos[0, 8, 0, :3]
    expected = torch.sin((torch.arange(1, 4) - 0.5) / (3 + 1e-6) * 2 * torch.pi)
    assert torch.allclose(x_first, expected, atol=1e-6)


def test_grid_proposals_are_invalid_on_padding_and_borders():
    tokens = _tokens()
    proposals, valid = grid_proposals(tokens.padding_mask, tokens.spatial_shapes)
    assert proposals.shape == (2, 426, 4)
    assert not valid[tokens.padding_mask].any()
    assert torch.isinf(proposals[~valid]).all() and torch.isfinite(proposals[valid]).all()


def test_reference_points_have_one_point_per_level():
    tokens = _tokens()
    ref = encoder_reference_points(tokens.spatial_shapes, tokens.valid_ratios)
    assert ref.shape == (2, 426, 4, 2)
    assert (ref[0] > 0).all() and (ref[0] < 1).all()


def test_sparse_encoder_refines_only_kept_tokens():
    tokens, encoder = _tokens(), _encoder()
    selected = torch.stack([torch.randperm(300)[:12], torch.randperm(300)[:12]])
    num_kept = torch.tensor([12, 5])
    out = encoder(tokens, selected, num_kept, return_sampling=True)
    changed = (out.memory != tokens.features).any(-1)
    for i in range(2):
        expected = torch.zeros(426, dtype=torch.bool)
        expected[selected[i, : num_kept[i]]] = True
        assert torch.equal(changed[i], expected), f"image {i}"
    # the written-back tokens are the refined queries of the last layer
    assert torch.equal(out.memory[0, selected[0]], out.layer_queries[-1][0])
    assert out.sampling_locations.shape == (2, 2, 12, 2, 4, 2, 2)
    assert out.attention_weights.shape == (2, 2, 12, 2, 4, 2)


def test_unselected_tokens_still_act_as_keys():
    tokens, encoder = _tokens(), _encoder(num_layers=1)
    selected = torch.arange(10).view(1, 10).repeat(2, 1)
    base = encoder(tokens, selected).memory
    perturbed = tokens.features.clone()
    perturbed[:, 200:] += 1.0  # tokens that are never queries
    tokens.features = perturbed
    after = encoder(tokens, selected).memory
    assert not torch.allclose(base[:, :10], after[:, :10])


def test_dense_and_empty_encoders():
    tokens = _tokens()
    dense = _encoder()(tokens)
    assert dense.memory.shape == tokens.features.shape and len(dense.layer_queries) == 2
    # selecting every token in order equals the dense encoder
    everything = torch.arange(426).view(1, -1).repeat(2, 1)
    assert torch.allclose(_encoder()(tokens, everything).memory, dense.memory, atol=1e-5)
    empty = _encoder(num_layers=0)(tokens)
    assert torch.equal(empty.memory, tokens.features + tokens.pos)


def test_encoder_registry_and_pre_norm():
    assert SPARSE_ENCODER_REGISTRY.get("SparseDeformableEncoder") is SparseDeformableEncoder
    encoder = _encoder(pre_norm=True)
    assert encoder.final_norm is not None
    out = encoder(_tokens(), torch.arange(8).view(1, 8).repeat(2, 1))
    assert torch.isfinite(out.memory).all()


def test_decoder_refines_boxes_and_detaches_references():
    tokens = _tokens()
    torch.manual_seed(2)
    decoder = DeformableDecoder(
        num_layers=3, dim=32, ffn_dim=64, num_heads=2, num_levels=4, num_points=2, dropout=0.0
    )
    heads = [torch.nn.Linear(32, 4) for _ in range(3)]
    queries, pos = torch.randn(2, 7, 32), torch.randn(2, 7, 32)
    reference = torch.rand(2, 7, 4) * 0.5 + 0.25
    out = decoder(queries, pos, reference, tokens.features, tokens, box_heads=heads)
    assert len(out.hidden_states) == 3 and len(out.references) == 3
    assert torch.equal(out.references[0], reference)
    assert not torch.allclose(out.references[1], reference)
    assert not out.references[2].requires_grad
    assert out.sampling_locations.shape == (2, 3, 7, 2, 4, 2, 2)
    unrefined = decoder(queries, pos, reference, tokens.features, tokens)
    assert all(torch.equal(r, reference) for r in unrefined.references)


def test_inference_write_back_equals_training_write_back_and_keeps_inputs():
    tokens, encoder = _tokens(), _encoder()
    features = tokens.features.clone()
    selected = torch.stack([torch.randperm(300)[:12], torch.randperm(300)[:12]])
    num_kept = torch.tensor([12, 5])
    with_grad = encoder(tokens, selected, num_kept).memory
    with torch.no_grad():
        in_place = encoder(tokens, selected, num_kept).memory
    # (inference may sample before projecting the values: the same function, other rounding)
    torch.testing.assert_close(in_place, with_grad.detach(), rtol=1e-5, atol=1e-6)
    assert torch.equal(tokens.features, features), "the encoder must not modify its input tokens"


def test_chunked_inference_equals_the_whole_batch_of_queries(monkeypatch):
    tokens = _tokens()
    everything = torch.arange(426).view(1, -1).repeat(2, 1)
    for pre_norm in (False, True):
        encoder = _encoder(pre_norm=pre_norm)
        for selected in (None, everything):
            whole = encoder(tokens, selected, return_sampling=True)  # autograd on: never chunked
            with torch.no_grad(), monkeypatch.context() as patch:
                patch.setattr(SparseEncoderLayer, "inference_chunk_size", 100)  # 426 queries -> 5 chunks
                chunked = encoder(tokens, selected, return_sampling=True)
            for name in ("memory", "sampling_locations", "attention_weights"):
                torch.testing.assert_close(getattr(chunked, name), getattr(whole, name).detach())
