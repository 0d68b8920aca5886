// Multi-scale deformable attention (Deformable DETR): declarations and the input checks shared by the
// CPU and the CUDA kernels (their per-sample math is in ms_deform_attn_math.h).
//
// Shapes: value (N, S, M, D), spatial_shapes (L, 2) int64 (H, W), level_start_index (L,) int64,
// sampling_locations (N, Q, M, L, P, 2) normalised (x, y), attention_weights (N, Q, M, L, P),
// output (N, Q, M * D). Bilinear sampling follows grid_sample(align_corners=False, padding zeros).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <cstdint>
#include <tuple>

#include "ms_deform_attn_math.h"

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
  TORCH_CHECK(num_levels > 0, "spatial_shapes must hold at least one level, got ", spatial_shapes.sizes());
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

// The forward's checks plus grad_output (N, Q, M * D), of the dtype and device of value.
inline void check_ms_deform_attn_backward_inputs(const at::Tensor& value, const at::Tensor& spatial_shapes,
                                                 const at::Tensor& level_start_index,
                                                 const at::Tensor& sampling_locations,
                                                 const at::Tensor& attention_weights,
                                                 const at::Tensor& grad_output) {
  check_ms_deform_attn_inputs(value, spatial_shapes, level_start_index, sampling_locations,
                              attention_weights);
  const int64_t batch = value.size(0), num_queries = sampling_locations.size(1);
  const int64_t channels = value.size(2) * value.size(3);
  TORCH_CHECK(grad_output.sizes() == at::IntArrayRef({batch, num_queries, channels}),
              "grad_output must have shape (N, Q, M * D) = (", batch, ", ", num_queries, ", ", channels,
              "), got ", grad_output.sizes());
  TORCH_CHECK(grad_output.scalar_type() == value.scalar_type() && grad_output.device() == value.device(),
              "grad_output must have the dtype and device of value (", value.scalar_type(), ", ",
              value.device(), "), got ", grad_output.scalar_type(), ", ", grad_output.device());
}

}  // namespace sparse_detr
