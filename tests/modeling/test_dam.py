import math

import pytest
import torch

from sparse_detr.modeling.dam import (
    attention_correlation,
    dam_target,
    decoder_attention_map,
    selected_token_mask,
)


def level_layout(shapes):
    spatial_shapes = torch.tensor(shapes, dtype=torch.int64)
    areas = spatial_shapes.prod(1)
    level_start_index = torch.cat([areas.new_zeros(1), areas.cumsum(0)[:-1]])
    return spatial_shapes, level_start_index


def brute_force_attention_map(locations, weights, shapes):
    """Reference splatting with plain Python loops over every sampling point and corner."""
    batch, layers, queries, heads, levels, points, _ = locations.shape
    starts = [0]
    for h, w in shapes[:-1]:
        starts.append(starts[-1] + h * w)
    result = torch.zeros(batch, sum(h * w for h, w in shapes), dtype=torch.float64)
    for b in range(batch):
        for la in range(layers):
            for q in range(queries):
                for m in range(heads):
                    for lv in range(levels):
                        height, width = shapes[lv]
                        for p in range(points):
                            x = float(locations[b, la, q, m, lv, p, 0]) * width
                            y = float(locations[b, la, q, m, lv, p, 1]) * height
                            x0, y0 = math.floor(x), math.floor(y)
                            for col, wx in ((x0, 1 - (x - x0)), (x0 + 1, x - x0)):
                                for row, wy in ((y0, 1 - (y - y0)), (y0 + 1, y - y0)):
                                    if 0 <= col < width and 0 <= row < height:
                                        token = starts[lv] + row * width + col
                                        result[b, token] += float(weights[b, la, q, m, lv, p]) * wx * wy
    return result


def test_attention_map_matches_brute_force_loop():
    shapes = [(3, 4), (2, 3), (1, 1)]
    spatial_shapes, level_start_index = level_layout(shapes)
    g = torch.Generator().manual_seed(0)
    size = (2, 2, 3, 2, len(shapes), 2)
    # Locations reach outside [0, 1] so that corners off the map are exercised.
    locations = torch.rand(*size, 2, generator=g) * 1.4 - 0.2
    weights = torch.rand(*size, generator=g)
    result = decoder_attention_map(locations, weights, spatial_shapes, level_start_index)
    assert result.shape == (2, 12 + 6 + 1)
    expected = brute_force_attention_map(locations, weights, shapes)
    torch.testing.assert_close(result.double(), expected, rtol=1e-5, atol=1e-6)


def test_attention_map_has_no_half_pixel_shift():
    """A point at x = y = 0.5 of a 2x2 map lands fully on token (row 1, col 1), unlike grid_sample."""
    spatial_shapes, level_start_index = level_layout([(2, 2)])
    locations = torch.full((1, 1, 1, 1, 1, 1, 2), 0.5)
    weights = torch.full((1, 1, 1, 1, 1, 1), 0.7)
    result = decoder_attention_map(locations, weights, spatial_shapes, level_start_index)
    torch.testing.assert_close(result, torch.tensor([[0.0, 0.0, 0.0, 0.7]]))
    # Centre of token (0, 0) in pixel units: x = 0.25 * 2 = 0.5 -> split evenly over the 4 tokens.
    result = decoder_attention_map(
        torch.full_like(locations, 0.25), weights, spatial_shapes, level_start_index
    )
    torch.testing.assert_close(result, torch.full((1, 4), 0.7 / 4))


def test_attention_map_rejects_mismatched_shapes():
    spatial_shapes, level_start_index = level_layout([(2, 2)])
    locations = torch.rand(1, 1, 1, 1, 1, 1, 2)
    with pytest.raises(ValueError, match="attention_weights"):
        decoder_attention_map(locations, torch.rand(1, 1, 1, 1, 1, 2), spatial_shapes, level_start_index)
    with pytest.raises(ValueError, match="spatial_shapes"):
        decoder_attention_map(locations, torch.rand(1, 1, 1, 1, 1, 1), *level_layout([(2, 2), (1, 1)]))


@pytest.mark.parametrize("seed", range(5))
def test_dam_target_counts_and_never_padding(seed):
    g = torch.Generator().manual_seed(seed)
    batch, num_tokens = 3, 40
    attention_map = torch.rand(batch, num_tokens, generator=g)
    valid = torch.randint(5, num_tokens + 1, (batch,), generator=g)
    padding_mask = torch.arange(num_tokens)[None] >= valid[:, None]
    # Padding gets the largest attention so that a target ignoring the mask would pick it.
    attention_map[padding_mask] += 10
    num_kept = (valid.float() * 0.3).long() + 1
    target = dam_target(attention_map, padding_mask, num_kept)
    assert target.dtype == torch.bool
    assert target.sum(1).tolist() == num_kept.tolist()
    assert not (target & padding_mask).any()
    for i in range(batch):
        kept_scores = attention_map[i][target[i]]
        other_valid = attention_map[i][~target[i] & ~padding_mask[i]]
        assert kept_scores.min() > other_valid.max()


def test_dam_target_caps_kept_tokens_at_valid_count():
    attention_map = torch.tensor([[0.1, 0.5, 0.2, 0.9]])
    padding_mask = torch.tensor([[False, False, True, True]])
    target = dam_target(attention_map, padding_mask, torch.tensor([3]))  # rho = 1: int(2 * 1) + 1
    assert target.tolist() == [[True, True, False, False]]


def test_selected_token_mask():
    indices = torch.tensor([[4, 1, 2], [0, 3, 2]])
    assert selected_token_mask(indices, 5).tolist() == [
        [False, True, True, False, True],
        [True, False, True, True, False],
    ]
    only_kept = selected_token_mask(indices, 5, num_kept=torch.tensor([3, 1]))
    assert only_kept.tolist() == [[False, True, True, False, True], [True, False, False, False, False]]


def test_correlation_hand_computed():
    # Two levels: 2 tokens then 3 tokens.
    level_start_index = torch.tensor([0, 2])
    attention_map = torch.tensor([[1.0, 3.0, 2.0, 2.0, 2.0], [0.0, 4.0, 1.0, 0.0, 0.0]])
    selected = torch.tensor([[False, True, True, False, False], [True, True, False, False, True]])
    corr = attention_correlation(attention_map, selected, level_start_index)
    # image 0: (3 + 2) / 10 overall, 3 / 4 on level 0, 2 / 6 on level 1
    # image 1: 4 / 5 overall, 4 / 4 on level 0, 0 / 1 on level 1
    expected = torch.tensor([[0.5, 0.75, 1 / 3], [0.8, 1.0, 0.0]])
    torch.testing.assert_close(corr, expected)


def test_attention_map_target_and_corr_of_the_official_model(official):
    """The stored decoder sampling locations/weights reproduce the official DAM, its target and Corr.

    The fixture's outputs come from the eval pass; the training pass (dropout 0) is recorded as
    bit-identical to it (train_vs_eval_max_abs_diff), so both belong to the same forward.
    """
    outputs, train = official["outputs"], official["train"]
    assert all(v in (0.0, True) for v in train["train_vs_eval_max_abs_diff"].values())
    attention_map = decoder_attention_map(
        outputs["sampling_locations_dec"],
        outputs["attn_weights_dec"],
        outputs["spatial_shapes"],
        outputs["level_start_index"],
    )
    torch.testing.assert_close(attention_map, train["dam"]["decoder_attn_map"], rtol=1e-5, atol=1e-5)

    num_kept = outputs["sparse_token_nums"].long()
    target = dam_target(attention_map, outputs["mask_flatten"], num_kept)
    assert torch.equal(target, train["dam"]["target"])
    assert target.sum(1).tolist() == num_kept.tolist() == [188, 123]

    selected = selected_token_mask(outputs["backbone_topk_proposals"], attention_map.shape[1])
    corr = attention_correlation(attention_map, selected, outputs["level_start_index"]).mean(0)
    loss_dict = train["loss_dict"]
    expected = [loss_dict["corr_mask_attn_map_dec_all"]] + [
        loss_dict[f"corr_mask_attn_map_dec_{level}"] for level in range(4)
    ]
    torch.testing.assert_close(corr, torch.tensor(expected), rtol=1e-4, atol=0)
