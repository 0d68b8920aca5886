// CUDA kernels of multi-scale deformable attention.
//
// Forward: one thread per output element (n, q, m, d); threads of a warp share the sample geometry
// and read neighbouring channels (coalesced).
// Backward: one thread per sample (n, q, m, l, p); it loops over the D channels, writes the
// gradients of its location and weight directly and scatters value gradients with atomicAdd
// (several samples hit the same value element).
#include <ATen/Dispatch.h>
#include <ATen/cuda/Atomic.cuh>
#include <c10/cuda/CUDAStream.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <algorithm>

#include "ms_deform_attn.h"

namespace sparse_detr {
namespace {

constexpr int kThreads = 256;

inline int64_t num_blocks(int64_t work) { return (work + kThreads - 1) / kThreads; }

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
      if (!bilinear_corners(locations[2 * sample], locations[2 * sample + 1], height, width, corners)) {
        continue;
      }
      scalar_t sampled = 0;
      for (int k = 0; k < 4; ++k) {
        if (corners.weight[k] != 0) sampled += corners.weight[k] * level_value[corners.token[k] * token_stride];
      }
      acc += weights[sample] * sampled;
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
                                int64_t num_points) {
  const int64_t sample = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (sample >= num_samples) return;
  const int64_t l = (sample / num_points) % num_levels;
  const int64_t nqm = sample / (num_points * num_levels);
  const int64_t m = nqm % num_heads;
  const int64_t n = nqm / (num_heads * num_queries);
  const int64_t height = shapes[2 * l], width = shapes[2 * l + 1];
  BilinearCorners<scalar_t> corners;
  if (!bilinear_corners(locations[2 * sample], locations[2 * sample + 1], height, width, corners)) {
    return;  // gradients were zero-initialised
  }
  const int64_t token_stride = num_heads * head_dim;
  const int64_t level_offset = (n * num_tokens + starts[l]) * token_stride + m * head_dim;
  const scalar_t* level_value = value + level_offset;
  scalar_t* level_grad = grad_value + level_offset;
  const scalar_t* grad_out = grad_output + nqm * head_dim;
  const scalar_t weight = weights[sample];
  scalar_t dot_sample = 0, dot_dx = 0, dot_dy = 0;
  for (int k = 0; k < 4; ++k) {
    if (corners.weight[k] == 0 && corners.d_dx[k] == 0 && corners.d_dy[k] == 0) continue;
    const scalar_t* v = level_value + corners.token[k] * token_stride;
    scalar_t* gv = level_grad + corners.token[k] * token_stride;
    const scalar_t scatter_weight = weight * corners.weight[k];
    scalar_t dot_value = 0;
    for (int64_t d = 0; d < head_dim; ++d) {
      const scalar_t g = grad_out[d];
      dot_value += g * v[d];
      if (scatter_weight != 0) gpuAtomicAdd(gv + d, scatter_weight * g);
    }
    dot_sample += corners.weight[k] * dot_value;
    dot_dx += corners.d_dx[k] * dot_value;
    dot_dy += corners.d_dy[k] * dot_value;
  }
  grad_weights[sample] = dot_sample;
  grad_locations[2 * sample] = weight * dot_dx * static_cast<scalar_t>(width);
  grad_locations[2 * sample + 1] = weight * dot_dy * static_cast<scalar_t>(height);
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
  check_ms_deform_attn_inputs(value, spatial_shapes, level_start_index, sampling_locations,
                              attention_weights);
  const int64_t batch = value.size(0), num_tokens = value.size(1);
  const int64_t num_heads = value.size(2), head_dim = value.size(3);
  const int64_t num_queries = sampling_locations.size(1), num_levels = sampling_locations.size(3);
  const int64_t num_points = sampling_locations.size(4);
  TORCH_CHECK(grad_output.sizes() == at::IntArrayRef({batch, num_queries, num_heads * head_dim}),
              "grad_output must have shape (N, Q, M * D) = (", batch, ", ", num_queries, ", ",
              num_heads * head_dim, "), got ", grad_output.sizes());
  TORCH_CHECK(grad_output.scalar_type() == value.scalar_type() && grad_output.device() == value.device(),
              "grad_output must have the dtype and device of value");
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
  AT_DISPATCH_FLOATING_TYPES(value.scalar_type(), "ms_deform_attn_backward_cuda", [&] {
    backward_kernel<scalar_t><<<num_blocks(num_samples), kThreads, 0, stream>>>(
        value_c.const_data_ptr<scalar_t>(), shapes_c.const_data_ptr<int64_t>(),
        starts_c.const_data_ptr<int64_t>(), locations_c.const_data_ptr<scalar_t>(),
        weights_c.const_data_ptr<scalar_t>(), grad_output_c.const_data_ptr<scalar_t>(),
        grad_value.mutable_data_ptr<scalar_t>(), grad_locations.mutable_data_ptr<scalar_t>(),
        grad_weights.mutable_data_ptr<scalar_t>(), num_samples, num_tokens, num_queries, num_heads,
        head_dim, num_levels, num_points);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {grad_value, grad_locations, grad_weights};
}

TORCH_LIBRARY_IMPL(sparse_detr, CUDA, m) {
  m.impl("ms_deform_attn", &ms_deform_attn_forward_cuda);
  m.impl("ms_deform_attn_backward", &ms_deform_attn_backward_cuda);
}

}  // namespace sparse_detr
