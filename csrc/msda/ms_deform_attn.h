// Multi-scale deformable attention (Deformable DETR): declarations, shared input checks and the
// bilinear-corner helper used by both the CPU and the CUDA kernels.
//
// Shapes: value (N, S, M, D), spatial_shapes (L, 2) int64 (H, W), level_start_index (L,) int64,
// sampling_locations (N, Q, M, L, P, 2) normalised (x, y), attention_weights (N, Q, M, L, P),
// output (N, Q, M * D). Bilinear sampling follows grid_sample(align_corners=False, padding zeros).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/macros/Macros.h>
#include <c10/util/Exception.h>

#include <cstdint>
#include <tuple>

namespace sparse_detr {

at::Tensor ms_deform_attn_forward_cpu(const at::Tensor& value, const at::Tensor& spatial_shapes,
                                      const at::Tensor& level_start_index,
                                      const at::Tensor& sampling_locations,
                                      const at::Tensor& attention_weights);

std::tuple<at::Tensor, at::Tensor, at::Tensor> ms_deform_attn_backward_cpu(
    const at::Tensor& value, const at::Tensor& spatial_shapes, const at::Tensor& level_start_index,
    const at::Tensor& sampling_locations, const at::Tensor& attention_weights,
    const at::Tensor& grad_output);

// Checks shapes, dtypes and devices; kernels call it before touching memory.
inline void check_ms_deform_attn_inputs(const at::Tensor& value, const at::Tensor& spatial_shapes,
                                        const at::Tensor& level_start_index,
                                        const at::Tensor& sampling_locations,
                                        const at::Tensor& attention_weights) {
  TORCH_CHECK(value.dim() == 4, "value must have shape (N, S, M, D), got ", value.sizes());
  TORCH_CHECK(spatial_shapes.dim() == 2 && spatial_shapes.size(1) == 2,
              "spatial_shapes must have shape (L, 2), got ", spatial_shapes.sizes());
  const int64_t num_levels = spatial_shapes.size(0);
  TORCH_CHECK(level_start_index.dim() == 1 && level_start_index.size(0) == num_levels,
              "level_start_index must have shape (L,) = (", num_levels, ",), got ",
              level_start_index.sizes());
  TORCH_CHECK(sampling_locations.dim() == 6 && sampling_locations.size(0) == value.size(0) &&
                  sampling_locations.size(2) == value.size(2) &&
                  sampling_locations.size(3) == num_levels && sampling_locations.size(5) == 2,
              "sampling_locations must have shape (N, Q, M, L, P, 2) = (", value.size(0), ", Q, ",
              value.size(2), ", ", num_levels, ", P, 2), got ", sampling_locations.sizes());
  TORCH_CHECK(attention_weights.sizes() == sampling_locations.sizes().slice(0, 5),
              "attention_weights must have shape (N, Q, M, L, P) = ",
              sampling_locations.sizes().slice(0, 5), ", got ", attention_weights.sizes());
  TORCH_CHECK(spatial_shapes.scalar_type() == at::kLong && level_start_index.scalar_type() == at::kLong,
              "spatial_shapes and level_start_index must be int64");
  TORCH_CHECK(value.scalar_type() == sampling_locations.scalar_type() &&
                  value.scalar_type() == attention_weights.scalar_type(),
              "value, sampling_locations and attention_weights must share one dtype, got ",
              value.scalar_type(), ", ", sampling_locations.scalar_type(), ", ",
              attention_weights.scalar_type());
  const auto device = value.device();
  TORCH_CHECK(spatial_shapes.device() == device && level_start_index.device() == device &&
                  sampling_locations.device() == device && attention_weights.device() == device,
              "all inputs must be on the device of value (", device, ")");
}

// The four bilinear neighbours of one sampling point in a level of size height x width.
// Corners outside the map are marked invalid; they read zeros (grid_sample's zero padding).
// Order: (y0, x0), (y0, x0 + 1), (y0 + 1, x0), (y0 + 1, x0 + 1).
template <typename scalar_t>
struct BilinearCorners {
  int64_t token[4];     // row-major index y * width + x inside the level (0 for invalid corners)
  scalar_t weight[4];   // bilinear weight, 0 for invalid corners
  scalar_t d_dx[4];     // d weight / d x in pixels, 0 for invalid corners
  scalar_t d_dy[4];     // d weight / d y in pixels, 0 for invalid corners
  bool all_valid;
};

// Fills `corners` for the normalised location (loc_x, loc_y); returns false when no corner lies in
// the map (the sample then contributes nothing, and has zero gradient).
template <typename scalar_t>
C10_HOST_DEVICE inline bool bilinear_corners(scalar_t loc_x, scalar_t loc_y, int64_t height,
                                             int64_t width, BilinearCorners<scalar_t>& corners) {
  // align_corners=False: pixel centres sit at (i + 0.5) / size
  const scalar_t x = loc_x * static_cast<scalar_t>(width) - static_cast<scalar_t>(0.5);
  const scalar_t y = loc_y * static_cast<scalar_t>(height) - static_cast<scalar_t>(0.5);
  if (!(x > static_cast<scalar_t>(-1) && y > static_cast<scalar_t>(-1) &&
        x < static_cast<scalar_t>(width) && y < static_cast<scalar_t>(height))) {
    return false;  // also rejects NaN
  }
  // floor() for x in (-1, width): truncation rounds (-1, 0) up to 0, so step back there
  int64_t x0 = static_cast<int64_t>(x);
  int64_t y0 = static_cast<int64_t>(y);
  if (static_cast<scalar_t>(x0) > x) --x0;
  if (static_cast<scalar_t>(y0) > y) --y0;
  const scalar_t lx = x - static_cast<scalar_t>(x0);
  const scalar_t ly = y - static_cast<scalar_t>(y0);
  const scalar_t hx = static_cast<scalar_t>(1) - lx;
  const scalar_t hy = static_cast<scalar_t>(1) - ly;

  const int64_t xs[4] = {x0, x0 + 1, x0, x0 + 1};
  const int64_t ys[4] = {y0, y0, y0 + 1, y0 + 1};
  const scalar_t weights[4] = {hy * hx, hy * lx, ly * hx, ly * lx};
  const scalar_t d_dx[4] = {-hy, hy, -ly, ly};
  const scalar_t d_dy[4] = {-hx, -lx, hx, lx};
  corners.all_valid = true;
#ifdef __CUDACC__
#pragma unroll
#endif
  for (int k = 0; k < 4; ++k) {
    const bool valid = xs[k] >= 0 && xs[k] < width && ys[k] >= 0 && ys[k] < height;
    corners.all_valid = corners.all_valid && valid;
    corners.token[k] = valid ? ys[k] * width + xs[k] : 0;
    corners.weight[k] = valid ? weights[k] : static_cast<scalar_t>(0);
    corners.d_dx[k] = valid ? d_dx[k] : static_cast<scalar_t>(0);
    corners.d_dy[k] = valid ? d_dy[k] : static_cast<scalar_t>(0);
  }
  return true;
}

}  // namespace sparse_detr
