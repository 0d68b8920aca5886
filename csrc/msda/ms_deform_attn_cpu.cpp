// CPU kernels of multi-scale deformable attention.
//
// Forward: parallel over (batch, query); each task walks its L * P samples per head and accumulates
// the four bilinear corners into the contiguous output row of D channels (the channel loop
// vectorises). The per-sample math is the one the CUDA kernels run (ms_deform_attn_math.h).
// Backward: parallel over (batch, head). A task owns grad_value[n, :, m, :] exclusively, so the
// scatter of value gradients needs no atomics; grad of locations and weights are per sample. With
// fewer pairs than threads (a small batch of one wide head: the folded layout) the heads' channels are
// split into slices that are heads of their own (see backward_channel_split).
//
// Speed: the channel loops are specialised for the common head dims (16, 32, 64; accumulators then
// live in registers), and on x86-64 the kernels are compiled a second time for AVX2 + FMA and
// chosen at run time (the build targets the baseline ISA; ATen dispatches its kernels the same way).
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "ms_deform_attn.h"

#if defined(__GNUC__) && defined(__x86_64__)
#define SPARSE_DETR_X86_DISPATCH 1
#define SPARSE_DETR_TARGET_AVX2 __attribute__((target("avx2,fma")))
#else
#define SPARSE_DETR_X86_DISPATCH 0
#endif
#if defined(__GNUC__)
#define SPARSE_DETR_ALWAYS_INLINE __attribute__((always_inline)) inline
#else
#define SPARSE_DETR_ALWAYS_INLINE inline
#endif

namespace sparse_detr {
namespace {

bool cpu_has_avx2_fma() {
#if SPARSE_DETR_X86_DISPATCH
  static const bool supported = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return supported;
#else
  return false;
#endif
}

// Level geometry read once from the (tiny) spatial_shapes / level_start_index tensors.
struct Levels {
  std::vector<int64_t> height, width, start;
};

Levels read_levels(const at::Tensor& spatial_shapes, const at::Tensor& level_start_index) {
  const auto shapes = spatial_shapes.contiguous();
  const auto starts = level_start_index.contiguous();
  const int64_t* shape_ptr = shapes.const_data_ptr<int64_t>();
  const int64_t* start_ptr = starts.const_data_ptr<int64_t>();
  Levels levels;
  for (int64_t l = 0; l < shapes.size(0); ++l) {
    levels.height.push_back(shape_ptr[2 * l]);
    levels.width.push_back(shape_ptr[2 * l + 1]);
    levels.start.push_back(start_ptr[l]);
  }
  return levels;
}

void check_levels_fit(const Levels& levels, int64_t num_tokens) {
  for (size_t l = 0; l < levels.height.size(); ++l) {
    TORCH_CHECK(levels.height[l] > 0 && levels.width[l] > 0 && levels.start[l] >= 0 &&
                    levels.start[l] + levels.height[l] * levels.width[l] <= num_tokens,
                "level ", l, " (start ", levels.start[l], ", shape ", levels.height[l], "x",
                levels.width[l], ") does not fit in value with S = ", num_tokens);
  }
}

// Everything a kernel reads or writes; the pointers a pass does not use stay null.
template <typename scalar_t>
struct Problem {
  const scalar_t* value = nullptr;
  const scalar_t* locations = nullptr;
  const scalar_t* weights = nullptr;
  const Levels* levels = nullptr;
  scalar_t* output = nullptr;
  const scalar_t* grad_output = nullptr;
  scalar_t* grad_value = nullptr;
  scalar_t* grad_locations = nullptr;
  scalar_t* grad_weights = nullptr;
  int64_t num_tokens = 0, num_queries = 0, num_heads = 0, head_dim = 0, num_points = 0;
};

// Forward over the flattened (batch, query) rows [begin, end). kHeadDim > 0 fixes D at compile time.
template <typename scalar_t, int kHeadDim>
struct ForwardRows {
  SPARSE_DETR_ALWAYS_INLINE static void run(const Problem<scalar_t>& pb, int64_t begin, int64_t end) {
    const int64_t head_dim = kHeadDim > 0 ? kHeadDim : pb.head_dim;
    const Levels& levels = *pb.levels;
    const int64_t num_levels = static_cast<int64_t>(levels.height.size());
    const int64_t token_stride = pb.num_heads * head_dim;  // between consecutive tokens of value
    const int64_t samples_per_head = num_levels * pb.num_points;
    BilinearCorners<scalar_t> corners;
    scalar_t local[kHeadDim > 0 ? kHeadDim : 1];
    for (int64_t nq = begin; nq < end; ++nq) {
      const int64_t n = nq / pb.num_queries;
      for (int64_t m = 0; m < pb.num_heads; ++m) {
        const int64_t nqm = nq * pb.num_heads + m;
        const scalar_t* head_value = pb.value + n * pb.num_tokens * token_stride + m * head_dim;
        scalar_t* out = pb.output + nqm * head_dim;
        // with a compile-time D the accumulator is a local array the compiler keeps in registers
        scalar_t* acc = kHeadDim > 0 ? local : out;
        for (int64_t d = 0; d < head_dim; ++d) acc[d] = 0;
        for (int64_t l = 0; l < num_levels; ++l) {
          const scalar_t* level_value = head_value + levels.start[l] * token_stride;
          for (int64_t p = 0; p < pb.num_points; ++p) {
            const int64_t sample = nqm * samples_per_head + l * pb.num_points + p;
            const scalar_t loc_x = pb.locations[2 * sample], loc_y = pb.locations[2 * sample + 1];
            const scalar_t weight = pb.weights[sample];
            if (!bilinear_corners(loc_x, loc_y, levels.height[l], levels.width[l], corners)) {
              const scalar_t term = skipped_sample_term(loc_x, loc_y, weight);
              if (term != 0) {  // NaN: a non-finite location or weight
                for (int64_t d = 0; d < head_dim; ++d) acc[d] += term;
              }
              continue;
            }
            scalar_t scatter[4];
            corner_scatter_weights(corners, weight, scatter);
            if (corners.all_valid) {
              const scalar_t* v0 = level_value + corners.token[0] * token_stride;
              const scalar_t* v1 = level_value + corners.token[1] * token_stride;
              const scalar_t* v2 = level_value + corners.token[2] * token_stride;
              const scalar_t* v3 = level_value + corners.token[3] * token_stride;
#pragma omp simd
              for (int64_t d = 0; d < head_dim; ++d) {
                acc[d] += weighted_corner_sum(scatter, v0[d], v1[d], v2[d], v3[d]);
              }
            } else {
              for (int k = 0; k < 4; ++k) {
                if (corners.weight[k] == 0) continue;  // outside the map, or exactly zero weight
                const scalar_t* v = level_value + corners.token[k] * token_stride;
                const scalar_t w = scatter[k];
#pragma omp simd
                for (int64_t d = 0; d < head_dim; ++d) acc[d] += w * v[d];
              }
            }
          }
        }
        if (kHeadDim > 0) {
          for (int64_t d = 0; d < head_dim; ++d) out[d] = acc[d];
        }
      }
    }
  }
};

// Backward over the flattened (batch, head) pairs [begin, end); a pair owns grad_value[n, :, m, :].
template <typename scalar_t, int kHeadDim>
struct BackwardHeads {
  SPARSE_DETR_ALWAYS_INLINE static void run(const Problem<scalar_t>& pb, int64_t begin, int64_t end) {
    const int64_t head_dim = kHeadDim > 0 ? kHeadDim : pb.head_dim;
    const Levels& levels = *pb.levels;
    const int64_t num_levels = static_cast<int64_t>(levels.height.size());
    const int64_t token_stride = pb.num_heads * head_dim;
    const int64_t samples_per_head = num_levels * pb.num_points;
    BilinearCorners<scalar_t> corners;
    // the task's heads of one image are visited together per query: their value rows are adjacent
    for (int64_t n = begin / pb.num_heads; n * pb.num_heads < end; ++n) {
      const int64_t first_head = std::max(begin - n * pb.num_heads, int64_t{0});
      const int64_t last_head = std::min(end - n * pb.num_heads, pb.num_heads);
      for (int64_t q = 0; q < pb.num_queries; ++q) {
        for (int64_t m = first_head; m < last_head; ++m) {
          const int64_t head_offset = n * pb.num_tokens * token_stride + m * head_dim;
          const int64_t nqm = (n * pb.num_queries + q) * pb.num_heads + m;
          const scalar_t* grad_out = pb.grad_output + nqm * head_dim;
          for (int64_t l = 0; l < num_levels; ++l) {
            const int64_t level_offset = head_offset + levels.start[l] * token_stride;
            const scalar_t* level_value = pb.value + level_offset;
            scalar_t* level_grad = pb.grad_value + level_offset;
            for (int64_t p = 0; p < pb.num_points; ++p) {
              const int64_t sample = nqm * samples_per_head + l * pb.num_points + p;
              const scalar_t loc_x = pb.locations[2 * sample], loc_y = pb.locations[2 * sample + 1];
              const scalar_t weight = pb.weights[sample];
              if (!bilinear_corners(loc_x, loc_y, levels.height[l], levels.width[l], corners)) {
                pb.grad_weights[sample] = skipped_sample_weight_gradient(loc_x, loc_y);
                const scalar_t grad_location = skipped_sample_term(loc_x, loc_y, weight);
                pb.grad_locations[2 * sample] = grad_location;
                pb.grad_locations[2 * sample + 1] = grad_location;
                continue;
              }
              scalar_t scatter[4];
              corner_scatter_weights(corners, weight, scatter);
              // grad_out . value of each corner (0 for corners outside the map)
              scalar_t corner_dot[4] = {0, 0, 0, 0};
              if (corners.all_valid) {
                const scalar_t* v0 = level_value + corners.token[0] * token_stride;
                const scalar_t* v1 = level_value + corners.token[1] * token_stride;
                const scalar_t* v2 = level_value + corners.token[2] * token_stride;
                const scalar_t* v3 = level_value + corners.token[3] * token_stride;
                scalar_t* g0 = level_grad + corners.token[0] * token_stride;
                scalar_t* g1 = level_grad + corners.token[1] * token_stride;
                scalar_t* g2 = level_grad + corners.token[2] * token_stride;
                scalar_t* g3 = level_grad + corners.token[3] * token_stride;
                const scalar_t w0 = scatter[0], w1 = scatter[1], w2 = scatter[2], w3 = scatter[3];
                scalar_t r0 = 0, r1 = 0, r2 = 0, r3 = 0;
#pragma omp simd reduction(+ : r0, r1, r2, r3)
                for (int64_t d = 0; d < head_dim; ++d) {
                  const scalar_t g = grad_out[d];
                  r0 += g * v0[d];
                  r1 += g * v1[d];
                  r2 += g * v2[d];
                  r3 += g * v3[d];
                  g0[d] += w0 * g;
                  g1[d] += w1 * g;
                  g2[d] += w2 * g;
                  g3[d] += w3 * g;
                }
                corner_dot[0] = r0, corner_dot[1] = r1, corner_dot[2] = r2, corner_dot[3] = r3;
              } else {
                for (int k = 0; k < 4; ++k) {
                  if (!corner_contributes(corners, k)) continue;
                  const scalar_t* v = level_value + corners.token[k] * token_stride;
                  scalar_t* gv = level_grad + corners.token[k] * token_stride;
                  const scalar_t w = scatter[k];
                  scalar_t dot_value = 0;
#pragma omp simd reduction(+ : dot_value)
                  for (int64_t d = 0; d < head_dim; ++d) {
                    dot_value += grad_out[d] * v[d];
                    gv[d] += w * grad_out[d];
                  }
                  corner_dot[k] = dot_value;
                }
              }
              scalar_t grad_weight, grad_x, grad_y;
              sample_gradients(corners, corner_dot, weight, levels.height[l], levels.width[l], grad_weight,
                               grad_x, grad_y);
              pb.grad_weights[sample] = grad_weight;
              pb.grad_locations[2 * sample] = grad_x;
              pb.grad_locations[2 * sample + 1] = grad_y;
            }
          }
        }
      }
    }
  }
};

template <typename scalar_t>
using RangeKernel = void (*)(const Problem<scalar_t>&, int64_t, int64_t);

template <template <typename, int> class Kernel, typename scalar_t, int kHeadDim>
void run_baseline(const Problem<scalar_t>& pb, int64_t begin, int64_t end) {
  Kernel<scalar_t, kHeadDim>::run(pb, begin, end);
}

#if SPARSE_DETR_X86_DISPATCH
template <template <typename, int> class Kernel, typename scalar_t, int kHeadDim>
SPARSE_DETR_TARGET_AVX2 void run_avx2(const Problem<scalar_t>& pb, int64_t begin, int64_t end) {
  Kernel<scalar_t, kHeadDim>::run(pb, begin, end);
}
#endif

template <template <typename, int> class Kernel, typename scalar_t, int kHeadDim>
RangeKernel<scalar_t> select_isa() {
#if SPARSE_DETR_X86_DISPATCH
  if (cpu_has_avx2_fma()) return &run_avx2<Kernel, scalar_t, kHeadDim>;
#endif
  return &run_baseline<Kernel, scalar_t, kHeadDim>;
}

// The variant of `Kernel` for this head dim and CPU.
template <template <typename, int> class Kernel, typename scalar_t>
RangeKernel<scalar_t> select_kernel(int64_t head_dim) {
  switch (head_dim) {
    case 16: return select_isa<Kernel, scalar_t, 16>();
    case 32: return select_isa<Kernel, scalar_t, 32>();
    case 64: return select_isa<Kernel, scalar_t, 64>();
    default: return select_isa<Kernel, scalar_t, 0>();
  }
}

}  // namespace

at::Tensor ms_deform_attn_forward_cpu(const at::Tensor& value, const at::Tensor& spatial_shapes,
                                      const at::Tensor& level_start_index,
                                      const at::Tensor& sampling_locations,
                                      const at::Tensor& attention_weights) {
  check_ms_deform_attn_inputs(value, spatial_shapes, level_start_index, sampling_locations,
                              attention_weights);
  const auto value_c = value.contiguous();
  const auto locations_c = sampling_locations.contiguous();
  const auto weights_c = attention_weights.contiguous();
  const Levels levels = read_levels(spatial_shapes, level_start_index);
  const int64_t batch = value.size(0), num_tokens = value.size(1);
  const int64_t num_heads = value.size(2), head_dim = value.size(3);
  const int64_t num_queries = sampling_locations.size(1), num_points = sampling_locations.size(4);
  check_levels_fit(levels, num_tokens);

  auto output = at::empty({batch, num_queries, num_heads * head_dim}, value.options());
  AT_DISPATCH_FLOATING_TYPES(value.scalar_type(), "ms_deform_attn_forward_cpu", [&] {
    Problem<scalar_t> pb;
    pb.value = value_c.const_data_ptr<scalar_t>();
    pb.locations = locations_c.const_data_ptr<scalar_t>();
    pb.weights = weights_c.const_data_ptr<scalar_t>();
    pb.levels = &levels;
    pb.output = output.mutable_data_ptr<scalar_t>();
    pb.num_tokens = num_tokens, pb.num_queries = num_queries, pb.num_heads = num_heads;
    pb.head_dim = head_dim, pb.num_points = num_points;
    const auto kernel = select_kernel<ForwardRows, scalar_t>(head_dim);
    at::parallel_for(0, batch * num_queries, 16,
                     [&](int64_t begin, int64_t end) { kernel(pb, begin, end); });
  });
  return output;
}

namespace {

// Backward with every head as one task (see BackwardHeads).
std::tuple<at::Tensor, at::Tensor, at::Tensor> backward_by_heads(
    const at::Tensor& value, const at::Tensor& spatial_shapes, const at::Tensor& level_start_index,
    const at::Tensor& sampling_locations, const at::Tensor& attention_weights,
    const at::Tensor& grad_output) {
  const int64_t batch = value.size(0), num_tokens = value.size(1);
  const int64_t num_heads = value.size(2), head_dim = value.size(3);
  const int64_t num_queries = sampling_locations.size(1), num_points = sampling_locations.size(4);
  const auto value_c = value.contiguous();
  const auto locations_c = sampling_locations.contiguous();
  const auto weights_c = attention_weights.contiguous();
  const auto grad_output_c = grad_output.contiguous();
  const Levels levels = read_levels(spatial_shapes, level_start_index);
  check_levels_fit(levels, num_tokens);

  auto grad_value = at::zeros(value.sizes(), value.options());
  auto grad_locations = at::zeros(sampling_locations.sizes(), value.options());
  auto grad_weights = at::zeros(attention_weights.sizes(), value.options());
  AT_DISPATCH_FLOATING_TYPES(value.scalar_type(), "ms_deform_attn_backward_cpu", [&] {
    Problem<scalar_t> pb;
    pb.value = value_c.const_data_ptr<scalar_t>();
    pb.locations = locations_c.const_data_ptr<scalar_t>();
    pb.weights = weights_c.const_data_ptr<scalar_t>();
    pb.levels = &levels;
    pb.grad_output = grad_output_c.const_data_ptr<scalar_t>();
    pb.grad_value = grad_value.mutable_data_ptr<scalar_t>();
    pb.grad_locations = grad_locations.mutable_data_ptr<scalar_t>();
    pb.grad_weights = grad_weights.mutable_data_ptr<scalar_t>();
    pb.num_tokens = num_tokens, pb.num_queries = num_queries, pb.num_heads = num_heads;
    pb.head_dim = head_dim, pb.num_points = num_points;
    const auto kernel = select_kernel<BackwardHeads, scalar_t>(head_dim);
    // grain 1: each (batch, head) pair is a large task and owns its slice of grad_value
    at::parallel_for(0, batch * num_heads, 1,
                     [&](int64_t begin, int64_t end) { kernel(pb, begin, end); });
  });
  return {grad_value, grad_locations, grad_weights};
}

// Into how many channel slices each head's backward is split so that every thread gets a task: 1 when
// there are as many (batch, head) pairs as threads, as in the usual layout (8 heads); more for a batch
// of few images in the folded layout (one head of all C channels), whose backward would else run on one
// thread. Slices keep at least 16 channels.
int64_t backward_channel_split(int64_t pairs, int64_t head_dim) {
  int64_t split = 1;
  while (pairs * split < at::get_num_threads() && head_dim % (2 * split) == 0 &&
         head_dim / (2 * split) >= 16) {
    split *= 2;
  }
  return split;
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor> ms_deform_attn_backward_cpu(
    const at::Tensor& value, const at::Tensor& spatial_shapes, const at::Tensor& level_start_index,
    const at::Tensor& sampling_locations, const at::Tensor& attention_weights,
    const at::Tensor& grad_output) {
  check_ms_deform_attn_backward_inputs(value, spatial_shapes, level_start_index, sampling_locations,
                                       attention_weights, grad_output);
  const int64_t batch = value.size(0), num_tokens = value.size(1);
  const int64_t num_heads = value.size(2), head_dim = value.size(3);
  const int64_t num_queries = sampling_locations.size(1);
  const int64_t split = backward_channel_split(batch * num_heads, head_dim);
  if (split == 1) {
    return backward_by_heads(value, spatial_shapes, level_start_index, sampling_locations,
                             attention_weights, grad_output);
  }
  // A slice of a head's channels is a head of its own that samples where its head does: the value
  // gradient of each slice is exact as it is, and the location and weight gradients, linear in the
  // per-corner dot products over the channels, are the sums over the slices.
  const int64_t num_levels = sampling_locations.size(3), num_points = sampling_locations.size(4);
  const auto sliced = [&](const at::Tensor& per_head) {  // (N, Q, M, ...) -> (N, Q, M * split, ...)
    auto sizes = per_head.sizes().vec();
    sizes.insert(sizes.begin() + 3, split);
    auto expanded = per_head.unsqueeze(3).expand(sizes);
    sizes.erase(sizes.begin() + 3);
    sizes[2] *= split;
    return expanded.reshape(sizes);
  };
  auto [grad_value, grad_locations, grad_weights] = backward_by_heads(
      value.contiguous().view({batch, num_tokens, num_heads * split, head_dim / split}), spatial_shapes,
      level_start_index, sliced(sampling_locations), sliced(attention_weights), grad_output);
  return {grad_value.view(value.sizes()),
          grad_locations.view({batch, num_queries, num_heads, split, num_levels, num_points, 2}).sum(3),
          grad_weights.view({batch, num_queries, num_heads, split, num_levels, num_points}).sum(3)};
}

TORCH_LIBRARY_IMPL(sparse_detr, CPU, m) {
  m.impl("ms_deform_attn", &ms_deform_attn_forward_cpu);
  m.impl("ms_deform_attn_backward", &ms_deform_attn_backward_cpu);
}

}  // namespace sparse_detr
