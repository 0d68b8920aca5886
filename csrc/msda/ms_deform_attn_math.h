// Per-sample math of multi-scale deformable attention, shared by the CPU and the CUDA kernels.
//
// Plain `__host__ __device__` inline functions with no ATen dependency: the CPU kernels (and so the
// CPU tests: float64 reference, hypothesis, gradcheck) run exactly the arithmetic the CUDA kernels run.
// The kernels only organise the loops (over samples and channels) and the memory accesses.
//
// Bilinear sampling follows grid_sample(align_corners=False, padding_mode="zeros"): a corner outside
// the map reads zero. A sampling location that is not finite (NaN or +-inf in x or y) gives NaN in the
// output of its query and head, as grid_sample does, and NaN gradients for its weight and location; a
// non-finite attention weight gives NaN (output, location gradient) even when its sample reads nothing.
#pragma once

#include <c10/macros/Macros.h>

#include <cstdint>

namespace sparse_detr {

// The four bilinear neighbours of one sampling point in a level of size height x width.
// Order: (y0, x0), (y0, x0 + 1), (y0 + 1, x0), (y0 + 1, x0 + 1).
template <typename scalar_t>
struct BilinearCorners {
  int64_t token[4];     // row-major index y * width + x inside the level (0 for invalid corners)
  scalar_t weight[4];   // bilinear weight, 0 for invalid corners
  scalar_t d_dx[4];     // d weight / d x in pixels, 0 for invalid corners
  scalar_t d_dy[4];     // d weight / d y in pixels, 0 for invalid corners
  bool all_valid;       // all four corners lie in the map
};

// Fills `corners` for the normalised location (loc_x, loc_y); returns false when the sample reads no
// value: no corner lies in the map, or the location is not finite. Such a sample adds
// `skipped_sample_term` to the output; its gradients follow `skipped_sample_weight_gradient`.
template <typename scalar_t>
C10_HOST_DEVICE inline bool bilinear_corners(scalar_t loc_x, scalar_t loc_y, int64_t height,
                                             int64_t width, BilinearCorners<scalar_t>& corners) {
  // align_corners=False: pixel centres sit at (i + 0.5) / size
  const scalar_t x = loc_x * static_cast<scalar_t>(width) - static_cast<scalar_t>(0.5);
  const scalar_t y = loc_y * static_cast<scalar_t>(height) - static_cast<scalar_t>(0.5);
  if (!(x > static_cast<scalar_t>(-1) && y > static_cast<scalar_t>(-1) &&
        x < static_cast<scalar_t>(width) && y < static_cast<scalar_t>(height))) {
    return false;  // also rejects NaN and +-inf
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

// Whether corner k takes part in the sample or its gradients: a corner outside the map has zero weight
// and zero derivatives (so has, inside, the corner (x0 + 1, y0 + 1) of a point exactly on a pixel
// centre, which contributes nothing either).
template <typename scalar_t>
C10_HOST_DEVICE inline bool corner_contributes(const BilinearCorners<scalar_t>& corners, int k) {
  return corners.weight[k] != 0 || corners.d_dx[k] != 0 || corners.d_dy[k] != 0;
}

// The weights with which the sample adds the four corner values to the output (and with which the
// output gradient is scattered back to them): attention weight x bilinear weight.
template <typename scalar_t>
C10_HOST_DEVICE inline void corner_scatter_weights(const BilinearCorners<scalar_t>& corners,
                                                   scalar_t attention_weight, scalar_t scatter[4]) {
#ifdef __CUDACC__
#pragma unroll
#endif
  for (int k = 0; k < 4; ++k) scatter[k] = attention_weight * corners.weight[k];
}

// One channel of the sample's contribution: sum_k scatter[k] * corner_value[k].
template <typename scalar_t>
C10_HOST_DEVICE inline scalar_t weighted_corner_sum(const scalar_t scatter[4], scalar_t v0, scalar_t v1,
                                                    scalar_t v2, scalar_t v3) {
  return scatter[0] * v0 + scatter[1] * v1 + scatter[2] * v2 + scatter[3] * v3;
}

// What a sample that reads no value (bilinear_corners returned false) adds to every output channel:
// 0, or NaN when its location or its attention weight is not finite (x - x and w * 0 are NaN then).
template <typename scalar_t>
C10_HOST_DEVICE inline scalar_t skipped_sample_term(scalar_t loc_x, scalar_t loc_y,
                                                    scalar_t attention_weight) {
  return (loc_x - loc_x) + (loc_y - loc_y) + attention_weight * static_cast<scalar_t>(0);
}

// The gradients of such a sample, which scatters nothing into the value gradient (grid_sample's):
// d/d attention weight is 0, or NaN when its location is not finite; d/d location (x and y) is
// `skipped_sample_term`: 0, or NaN when its location or its attention weight is not finite.
template <typename scalar_t>
C10_HOST_DEVICE inline scalar_t skipped_sample_weight_gradient(scalar_t loc_x, scalar_t loc_y) {
  return (loc_x - loc_x) + (loc_y - loc_y);
}

// Gradients of one sample from the four dot products corner_dot[k] = sum_d grad_out[d] * value_k[d]
// (0 for corners that do not contribute): d/d attention weight, d/d loc_x and d/d loc_y.
template <typename scalar_t>
C10_HOST_DEVICE inline void sample_gradients(const BilinearCorners<scalar_t>& corners,
                                             const scalar_t corner_dot[4], scalar_t attention_weight,
                                             int64_t height, int64_t width, scalar_t& grad_weight,
                                             scalar_t& grad_loc_x, scalar_t& grad_loc_y) {
  scalar_t dot_sample = 0, dot_dx = 0, dot_dy = 0;
#ifdef __CUDACC__
#pragma unroll
#endif
  for (int k = 0; k < 4; ++k) {
    dot_sample += corners.weight[k] * corner_dot[k];
    dot_dx += corners.d_dx[k] * corner_dot[k];
    dot_dy += corners.d_dy[k] * corner_dot[k];
  }
  grad_weight = dot_sample;
  // x = loc_x * W - 0.5, so d/d loc_x = W * d/dx (same for y with H)
  grad_loc_x = attention_weight * dot_dx * static_cast<scalar_t>(width);
  grad_loc_y = attention_weight * dot_dy * static_cast<scalar_t>(height);
}

}  // namespace sparse_detr
