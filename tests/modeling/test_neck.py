"""MultiScaleNeck: backbone maps -> L token levels with masks and position embeddings."""

from __future__ import annotations

import pytest
import torch

from sparse_detr.modeling.neck import MultiScaleNeck
from sparse_detr.modeling.position_encoding import mask_sine_embedding


def test_extra_levels_halve_the_coarsest_map_and_masks_follow_the_padding():
    torch.manual_seed(0)
    neck = MultiScaleNeck(in_channels=[8, 16], hidden_dim=32, num_levels=4)
    features = [torch.randn(2, 8, 8, 12), torch.randn(2, 16, 4, 6)]
    padding = torch.zeros(2, 32, 48, dtype=torch.bool)
    padding[1, :, 24:] = True  # image 1 is half as wide
    tokens = neck(features, padding)
    assert tokens.spatial_shapes.tolist() == [[8, 12], [4, 6], [2, 3], [1, 2]]
    assert tokens.features.shape == (2, 96 + 24 + 6 + 2, 32) and tokens.pos.shape == tokens.features.shape
    level0 = tokens.padding_mask[1, :96].view(8, 12)
    assert not level0[:, :6].any() and level0[:, 6:].all()
    assert not tokens.padding_mask[0].any()
    # positions: the sine embedding of the level's mask plus that level's learned embedding
    start1 = int(tokens.level_start_index[1])
    level1_mask = tokens.padding_mask[:, start1 : start1 + 24].view(2, 4, 6)
    expected_pos = mask_sine_embedding(level1_mask, 16) + neck.level_embed[1].view(1, -1, 1, 1)
    torch.testing.assert_close(tokens.pos[:, start1 : start1 + 24], expected_pos.flatten(2).transpose(1, 2))
    # the first extra level is computed from the last backbone map, the next from that level
    with torch.no_grad():
        expected = neck.level_projections[2](features[1]).flatten(2).transpose(1, 2)
    start = int(tokens.level_start_index[2])
    torch.testing.assert_close(tokens.features[:, start : start + 6], expected)


def test_single_level_without_extra_levels():
    neck = MultiScaleNeck(in_channels=[16], hidden_dim=32, num_levels=1)
    tokens = neck([torch.randn(1, 16, 5, 7)], torch.zeros(1, 40, 56, dtype=torch.bool))
    assert tokens.spatial_shapes.tolist() == [[5, 7]] and tokens.level_start_index.tolist() == [0]


def test_bad_configurations_and_inputs_name_the_culprit():
    with pytest.raises(ValueError, match="num_levels=1 is smaller than the 2 backbone maps"):
        MultiScaleNeck(in_channels=[8, 16], hidden_dim=32, num_levels=1)
    with pytest.raises(ValueError, match="hidden_dim=48 must be a multiple of 32"):
        MultiScaleNeck(in_channels=[8], hidden_dim=48, num_levels=1)
    neck = MultiScaleNeck(in_channels=[8, 16], hidden_dim=32, num_levels=3)
    with pytest.raises(ValueError, match="expected 2 backbone maps, got 1"):
        neck([torch.randn(1, 8, 4, 4)], torch.zeros(1, 16, 16, dtype=torch.bool))
