"""Independent float64 reference of multi-scale deformable attention (explicit bilinear gather).

Written without grid_sample: every sample gathers its four neighbours with the half-pixel
convention of ``align_corners=False``; neighbours outside the map read zero.
"""

import torch


def ms_deform_attn_reference(value, spatial_shapes, sampling_locations, attention_weights):
    """value (N, S, M, D), spatial_shapes (L, 2), sampling_locations (N, Q, M, L, P, 2),
    attention_weights (N, Q, M, L, P) -> (N, Q, M * D), computed in float64."""
    value = value.double()
    sampling_locations = sampling_locations.double()
    attention_weights = attention_weights.double()
    batch, _, heads, channels = value.shape
    _, queries, _, levels, points, _ = sampling_locations.shape
    output = torch.zeros(batch, queries, heads, channels, dtype=torch.float64)
    start = 0
    for level in range(levels):
        height, width = (int(size) for size in spatial_shapes[level])
        level_value = value[:, start:start + height * width]  # (N, H*W, M, D)
        start += height * width
        x = sampling_locations[:, :, :, level, :, 0] * width - 0.5  # (N, Q, M, P)
        y = sampling_locations[:, :, :, level, :, 1] * height - 0.5
        x0, y0 = x.floor(), y.floor()
        for dx in (0, 1):
            for dy in (0, 1):
                corner_x, corner_y = x0 + dx, y0 + dy
                weight = (1 - (x - corner_x).abs()) * (1 - (y - corner_y).abs())
                inside = (corner_x >= 0) & (corner_x < width) & (corner_y >= 0) & (corner_y < height)
                token = (corner_y.clamp(0, height - 1) * width + corner_x.clamp(0, width - 1)).long()
                # gather value[n, token[n, q, m, p], m, :]
                batch_index = torch.arange(batch).view(batch, 1, 1, 1)
                head_index = torch.arange(heads).view(1, 1, heads, 1)
                corner_value = level_value[batch_index, token, head_index]  # (N, Q, M, P, D)
                scale = (weight * inside * attention_weights[:, :, :, level]).unsqueeze(-1)
                output += (scale * corner_value).sum(dim=3)
    return output.flatten(2)


def level_start_index_of(spatial_shapes):
    """(L, 2) -> (L,) exclusive cumulative sum of H * W."""
    sizes = spatial_shapes.prod(dim=1)
    return torch.cat([sizes.new_zeros(1), sizes.cumsum(0)[:-1]])
