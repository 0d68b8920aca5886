// CUDA kernels of multi-scale deformable attention. The per-sample math (bilinear corners, scatter
// weights, gradients, non-finite samples) is ms_deform_attn_math.h, shared with the CPU kernels.
//
// Forward: one thread per output element (n, q, m, d); threads of a warp share the sample geometry
// and read neighbouring channels (coalesced).
// Backward: a group of G lanes per sample (n, q, m, l, p), G = D rounded up to a power of two, at
// most a warp; lane j handles channels j, j + G, ... So the threads of a warp read neighbouring
// channels of one sample and their value-gradient atomicAdds land on neighbouring addresses (one
// cache line for D = 32 in float32) instead of one line per thread. The lanes' partial dot
// products are summed with warp shuffles; lane 0 writes the sample's weight and location gradients.
#include <ATen/Dispatch.h>
#include <ATen/cuda/Atomic.cuh>
#include <c10/cuda/CUDAStream.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "ms_deform_attn.h"

namespace sparse_detr {
namespace {

constexpr int kThreads = 256;  // a multiple of the warp size: a sample's lane group never straddles warps
constexpr int kWarpSize = 32;

inline int64_t num_blocks(int64_t threads) { return (threads + kThreads - 1) / kThreads; }

// log2 of the lanes per sample in the backward: D rounded up to a power of two, at most a warp.
inline int lane_bits_for(int64_t head_dim) {
  int bits = 0;
  while ((int64_t{1} << bits) < head_dim && (1 << bits) < kWarpSize) ++bits;
  return bits;
}

template <typename scalar_t>
__global__ void forward_kernel(const scalar_t* __restrict__ value, const int64_t* __restrict__ shapes,
                               const int64_t* __restrict__ starts,
                               const scalar_t* __restrict__ locations,
                               const scalar_t* __restrict__ weights, scalar_t* __restrict__ output,
                               int64_t num_outputs, int64_t num_tokens, int64_t num_queries,
                               int64_t num_heads, int64_t head_dim, int64_t num_levels,
                               int64_t num_points) {
  const int64_t index = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (index >= num_outputs) return;
  const int64_t d = index % head_dim;
  const int64_t nqm = index / head_dim;  // ((n * Q) + q) * M + m
  const int64_t m = nqm % num_heads;
  const int64_t n = nqm / (num_heads * num_queries);
  const int64_t token_stride = num_heads * head_dim;
  const scalar_t* head_value = value + n * num_tokens * token_stride + m * head_dim + d;
  BilinearCorners<scalar_t> corners;
  scalar_t acc = 0;
  for (int64_t l = 0; l < num_levels; ++l) {
    const int64_t height = shapes[2 * l], width = shapes[2 * l + 1];
    const scalar_t* level_value = head_value + starts[l] * token_stride;
    for (int64_t p = 0; p < num_points; ++p) {
      const int64_t sample = (nqm * num_levels + l) * num_points + p;
      const scalar_t loc_x = locations[2 * sample], loc_y = locations[2 * sample + 1];
      const scalar_t weight = weights[sample];
      if (!bilinear_corners(loc_x, loc_y, height, width, corners)) {
        acc += skipped_sample_term(loc_x, loc_y, weight);
        continue;
      }
      scalar_t scatter[4], corner_value[4];
      corner_scatter_weights(corners, weight, scatter);
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        // as the CPU kernel: every corner when all lie in the map, else those of non-zero weight
        const bool read = corners.all_valid || corners.weight[k] != 0;
        corner_value[k] = read ? level_value[corners.token[k] * token_stride] : static_cast<scalar_t>(0);
      }
      acc += weighted_corner_sum(scatter, corner_value[0], corner_value[1], corner_value[2], corner_value[3]);
    }
  }
  output[index] = acc;
}

template <typename scalar_t>
__global__ void backward_kernel(const scalar_t* __restrict__ value, const int64_t* __restrict__ shapes,
                                const int64_t* __restrict__ starts,
                                const scalar_t* __restrict__ locations,
                                const scalar_t* __restrict__ weights,
                                const scalar_t* __restrict__ grad_output, scalar_t* __restrict__ grad_value,
                                scalar_t* __restrict__ grad_locations, scalar_t* __restrict__ grad_weights,
                                int64_t num_samples, int64_t num_tokens, int64_t num_queries,
                                int64_t num_heads, int64_t head_dim, int64_t num_levels,
                                int64_t num_points, int lane_bits) {
  const int lanes = 1 << lane_bits;
  const int64_t thread = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t sample = thread >> lane_bits;
  const int lane = static_cast<int>(thread & (lanes - 1));
  // no early return: every lane of the warp takes part in the shuffles below
  const bool active = sample < num_samples;
  BilinearCorners<scalar_t> corners;
  scalar_t corner_dot[4] = {0, 0, 0, 0};  // this lane's part of grad_out . corner value
  scalar_t loc_x = 0, loc_y = 0, weight = 0;
  int64_t height = 1, width = 1;
  bool reads = false;
  if (active) {
    const int64_t l = (sample / num_points) % num_levels;
    const int64_t nqm = sample / (num_points * num_levels);
    const int64_t m = nqm % num_heads;
    const int64_t n = nqm / (num_heads * num_queries);
    height = shapes[2 * l], width = shapes[2 * l + 1];
    loc_x = locations[2 * sample], loc_y = locations[2 * sample + 1];
    weight = weights[sample];
    reads = bilinear_corners(loc_x, loc_y, height, width, corners);
    if (reads) {
      scalar_t scatter[4];
      corner_scatter_weights(corners, weight, scatter);
      const int64_t token_stride = num_heads * head_dim;
      const int64_t level_offset = (n * num_tokens + starts[l]) * token_stride + m * head_dim;
      const scalar_t* level_value = value + level_offset;
      scalar_t* level_grad = grad_value + level_offset;
      const scalar_t* grad_out = grad_output + nqm * head_dim;
      for (int64_t d = lane; d < head_dim; d += lanes) {
        const scalar_t g = grad_out[d];
#pragma unroll
        for (int k = 0; k < 4; ++k) {
          if (!corner_contributes(corners, k)) continue;
          const int64_t offset = corners.token[k] * token_stride + d;
          corner_dot[k] += g * level_value[offset];
          if (scatter[k] != 0) gpuAtomicAdd(level_grad + offset, scatter[k] * g);
        }
      }
    }
  }
  // sum over the lanes of the sample's group (aligned groups of `lanes` inside one warp)
  for (int width_half = lanes / 2; width_half > 0; width_half /= 2) {
#pragma unroll
    for (int k = 0; k < 4; ++k) corner_dot[k] += __shfl_xor_sync(0xffffffffu, corner_dot[k], width_half);
  }
  if (!active || lane != 0) return;
  if (!reads) {  // outside the map or not finite: zero or NaN gradients, nothing scattered
    grad_weights[sample] = skipped_sample_weight_gradient(loc_x, loc_y);
    const scalar_t grad_location = skipped_sample_term(loc_x, loc_y, weight);
    grad_locations[2 * sample] = grad_location;
    grad_locations[2 * sample + 1] = grad_location;
    return;
  }
  scalar_t grad_weight, grad_x, grad_y;
  sample_gradients(corners, corner_dot, weight, height, width, grad_weight, grad_x, grad_y);
  grad_weights[sample] = grad_weight;
  grad_locations[2 * sample] = grad_x;
  grad_locations[2 * sample + 1] = grad_y;
}

}  // namespace

at::Tensor ms_deform_attn_forward_cuda(const at::Tensor& value, const at::Tensor& spatial_shapes,
                                       const at::Tensor& level_start_index,
                                       const at::Tensor& sampling_locations,
                                       const at::Tensor& attention_weights) {
  check_ms_deform_attn_inputs(value, spatial_shapes, level_start_index, sampling_locations,
                              attention_weights);
  const c10::cuda::CUDAGuard device_guard(value.device());
  const auto value_c = value.contiguous();
  const auto shapes_c = spatial_shapes.contiguous();
  const auto starts_c = level_start_index.contiguous();
  const auto locations_c = sampling_locations.contiguous();
  const auto weights_c = attention_weights.contiguous();
  const int64_t batch = value.size(0), num_tokens = value.size(1);
  const int64_t num_heads = value.size(2), head_dim = value.size(3);
  const int64_t num_queries = sampling_locations.size(1), num_levels = sampling_locations.size(3);
  const int64_t num_points = sampling_locations.size(4);
  auto output = at::empty({batch, num_queries, num_heads * head_dim}, value.options());
  const int64_t num_outputs = output.numel();
  if (num_outputs == 0) return output;
  const auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(value.scalar_type(), "ms_deform_attn_forward_cuda", [&] {
    forward_kernel<scalar_t><<<num_blocks(num_outputs), kThreads, 0, stream>>>(
        value_c.const_data_ptr<scalar_t>(), shapes_c.const_data_ptr<int64_t>(),
        starts_c.const_data_ptr<int64_t>(), locations_c.const_data_ptr<scalar_t>(),
        weights_c.const_data_ptr<scalar_t>(), output.mutable_data_ptr<scalar_t>(), num_outputs,
        num_tokens, num_queries, num_heads, head_dim, num_levels, num_points);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return output;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> ms_deform_attn_backward_cuda(
    const at::Tensor& value, const at::Tensor& spatial_shapes, const at::Tensor& level_start_index,
    const at::Tensor& sampling_locations, const at::Tensor& attention_weights,
    const at::Tensor& grad_output) {
  check_ms_deform_attn_backward_inputs(value, spatial_shapes, level_start_index, sampling_locations,
                                       attention_weights, grad_output);
  const int64_t batch = value.size(0), num_tokens = value.size(1);
  const int64_t num_heads = value.size(2), head_dim = value.size(3);
  const int64_t num_queries = sampling_locations.size(1), num_levels = sampling_locations.size(3);
  const int64_t num_points = sampling_locations.size(4);
  const c10::cuda::CUDAGuard device_guard(value.device());
  const auto value_c = value.contiguous();
  const auto shapes_c = spatial_shapes.contiguous();
  const auto starts_c = level_start_index.contiguous();
  const auto locations_c = sampling_locations.contiguous();
  const auto weights_c = attention_weights.contiguous();
  const auto grad_output_c = grad_output.contiguous();
  auto grad_value = at::zeros(value.sizes(), value.options());
  auto grad_locations = at::zeros(sampling_locations.sizes(), value.options());
  auto grad_weights = at::zeros(attention_weights.sizes(), value.options());
  const int64_t num_samples = attention_weights.numel();
  if (num_samples == 0 || head_dim == 0) return {grad_value, grad_locations, grad_weights};
  const auto stream = c10::cuda::getCurrentCUDAStream();
  const int lane_bits = lane_bits_for(head_dim);
  AT_DISPATCH_FLOATING_TYPES(value.scalar_type(), "ms_deform_attn_backward_cuda", [&] {
    backward_kernel<scalar_t><<<num_blocks(num_samples << lane_bits), kThreads, 0, stream>>>(
        value_c.const_data_ptr<scalar_t>(), shapes_c.const_data_ptr<int64_t>(),
        starts_c.const_data_ptr<int64_t>(), locations_c.const_data_ptr<scalar_t>(),
        weights_c.const_data_ptr<scalar_t>(), grad_output_c.const_data_ptr<scalar_t>(),
        grad_value.mutable_data_ptr<scalar_t>(), grad_locations.mutable_data_ptr<scalar_t>(),
        grad_weights.mutable_data_ptr<scalar_t>(), num_samples, num_tokens, num_queries, num_heads,
        head_dim, num_levels, num_points, lane_bits);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {grad_value, grad_locations, grad_weights};
}

TORCH_LIBRARY_IMPL(sparse_detr, CUDA, m) {
  m.impl("ms_deform_attn", &ms_deform_attn_forward_cuda);
  m.impl("ms_deform_attn_backward", &ms_deform_attn_backward_cuda);
}

}  // namespace sparse_detr
