"""Sine position embeddings of maps (from padding masks) and of boxes."""

from __future__ import annotations

import math

import pytest
import torch

from sparse_detr.modeling.position_encoding import box_sine_embedding, mask_sine_embedding


def test_mask_embedding_follows_the_valid_extent_of_each_image():
    mask = torch.zeros(2, 4, 6, dtype=torch.bool)
    mask[1, :, 3:] = True  # image 1 is 4 x 3, padded to 4 x 6
    embedding = mask_sine_embedding(mask, num_feats=8)
    assert embedding.shape == (2, 16, 4, 6)
    # channel 8 is sin(x) at the lowest frequency: x runs (j + 0.5) / W_valid * 2 pi over the valid columns
    x0 = embedding[:, 8, 0, :]
    expected_full = torch.sin((torch.arange(6) + 0.5) / 6 * 2 * math.pi)
    expected_cropped = torch.sin((torch.arange(3) + 0.5) / 3 * 2 * math.pi)
    torch.testing.assert_close(x0[0], expected_full, atol=1e-5, rtol=0)
    torch.testing.assert_close(x0[1, :3], expected_cropped, atol=1e-5, rtol=0)
    # channel 1 is cos(y) at the lowest frequency; y is the same for both images (no row padding)
    torch.testing.assert_close(embedding[0, 1, :, 0], embedding[1, 1, :, 0])
    torch.testing.assert_close(embedding[0, 1, :, 0], torch.cos((torch.arange(4) + 0.5) / 4 * 2 * math.pi))


def test_mask_embedding_refuses_a_non_boolean_mask():
    with pytest.raises(ValueError, match=r"Bool\[B, H, W\]"):
        mask_sine_embedding(torch.zeros(1, 4, 4), num_feats=8)


def test_box_embedding_interleaves_sin_and_cos_per_coordinate():
    boxes = torch.logit(torch.tensor([[[0.25, 0.5, 0.1, 0.9]]]))
    embedding = box_sine_embedding(boxes, num_feats=4, temperature=100.0)
    assert embedding.shape == (1, 1, 16)
    per_coordinate = embedding.view(4, 4)
    frequencies = 100.0 ** (2 * (torch.arange(4) // 2) / 4)
    for coordinate, value in enumerate((0.25, 0.5, 0.1, 0.9)):
        angles = value * 2 * math.pi / frequencies
        expected = torch.stack([angles[0].sin(), angles[1].cos(), angles[2].sin(), angles[3].cos()])
        torch.testing.assert_close(per_coordinate[coordinate], expected, atol=1e-5, rtol=0)
