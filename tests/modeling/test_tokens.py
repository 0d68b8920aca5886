"""Token layout and geometry: flattening, gathering, encoder reference points, grid proposals."""

from __future__ import annotations

import torch

from sparse_detr.modeling.tokens import (
    encoder_reference_points,
    flatten_levels,
    gather_tokens,
    grid_proposals,
    inverse_sigmoid,
)


def _levels():
    """Two levels (4 x 6 and 2 x 3) of a batch of 2; image 1 is padded on the right half."""
    features = [torch.randn(2, 8, 4, 6), torch.randn(2, 8, 2, 3)]
    masks = [torch.zeros(2, 4, 6, dtype=torch.bool), torch.zeros(2, 2, 3, dtype=torch.bool)]
    masks[0][1, :, 3:] = True
    masks[1][1, :, 2:] = True
    pos = [torch.randn_like(f) for f in features]
    return features, masks, pos


def test_flatten_levels_concatenates_row_major():
    features, masks, pos = _levels()
    tokens = flatten_levels(features, masks, pos)
    assert tokens.features.shape == (2, 30, 8)
    assert tokens.spatial_shapes.tolist() == [[4, 6], [2, 3]]
    assert tokens.level_start_index.tolist() == [0, 24]
    # token (level 1, row 1, column 2) is flat index 24 + 1 * 3 + 2
    assert torch.equal(tokens.features[:, 29], features[1][:, :, 1, 2])
    assert torch.equal(tokens.pos[:, 7], pos[0][:, :, 1, 1])
    assert tokens.valid_counts.tolist() == [30, 12 + 4]
    torch.testing.assert_close(tokens.valid_ratios[1], torch.tensor([[0.5, 1.0], [2 / 3, 1.0]]))
    assert tokens.value_padding_mask is tokens.padding_mask
    unpadded = flatten_levels(features, [torch.zeros_like(m) for m in masks], pos)
    assert unpadded.value_padding_mask is None


def test_gather_tokens_picks_rows_per_image_for_any_trailing_shape():
    x = torch.arange(2 * 5 * 3 * 2).view(2, 5, 3, 2)
    indices = torch.tensor([[4, 0], [1, 1]])
    gathered = gather_tokens(x, indices)
    assert gathered.shape == (2, 2, 3, 2)
    assert torch.equal(gathered[0, 0], x[0, 4]) and torch.equal(gathered[1, 1], x[1, 1])


def test_encoder_reference_points_are_token_centres_in_valid_coordinates():
    spatial_shapes = torch.tensor([[4, 6], [2, 3]])
    valid_ratios = torch.tensor([[[1.0, 1.0], [1.0, 1.0]], [[0.5, 1.0], [0.5, 1.0]]])
    points = encoder_reference_points(spatial_shapes, valid_ratios)
    assert points.shape == (2, 30, 2, 2)
    # image 0, level 0, token (row 0, col 0): centre (0.5 / 6, 0.5 / 4) on every level
    torch.testing.assert_close(points[0, 0, 0], torch.tensor([0.5 / 6, 0.5 / 4]))
    # image 1 is half as wide: x normalised by the valid width, then scaled back by the ratio
    torch.testing.assert_close(points[1, 0, 0], torch.tensor([0.5 / 3 * 0.5, 0.5 / 4]))


def test_grid_proposals_are_centred_boxes_and_invalid_on_padding():
    spatial_shapes = torch.tensor([[4, 6], [2, 3]])
    padding = torch.zeros(1, 30, dtype=torch.bool)
    padding[0, 24 + 2] = True  # level 1, row 0, column 2
    proposals, valid = grid_proposals(padding, spatial_shapes)
    assert proposals.shape == (1, 30, 4) and valid.shape == (1, 30)
    boxes = proposals.sigmoid()
    # level 0, row 1, column 2: centre ((2 + 0.5) / 6, (1 + 0.5) / 4), size 0.05
    torch.testing.assert_close(boxes[0, 8], torch.tensor([2.5 / 6, 1.5 / 4, 0.05, 0.05]), atol=1e-5, rtol=0)
    # level 1 boxes are twice as large
    torch.testing.assert_close(boxes[0, 24, 2:], torch.tensor([0.1, 0.1]), atol=1e-5, rtol=0)
    assert not valid[0, 26] and torch.isinf(proposals[0, 26]).all()
    assert valid[0, 8]


def test_inverse_sigmoid_inverts_and_stays_finite_at_the_ends():
    x = torch.tensor([0.0, 0.2, 0.5, 1.0])
    y = inverse_sigmoid(x)
    assert torch.isfinite(y).all()
    torch.testing.assert_close(y[1:3].sigmoid(), x[1:3])
