// The tables' rebuild of ALSH-APPROX (AlshBuildTables in alsh_kernels.cc):
// every node's bucket codes from a hidden layer's slab, read in place.

#ifndef SAMPLING_MLP_METHODS_ALSH_CSRC_ALSH_TABLES_H_
#define SAMPLING_MLP_METHODS_ALSH_CSRC_ALSH_TABLES_H_

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "alsh_select.h"
#include "parallel.h"
#include "xla/ffi/api/ffi.h"

namespace sampling_mlp_alsh {

namespace ffi = xla::ffi;
using sampling_mlp::ParallelFor;

// Nodes projected together, and the most 16-lane vectors of projections
// per pass: kNodes x kMaxVectors accumulators fit AVX-512's 32 registers.
constexpr int64_t kNodes = 8, kMaxVectors = 4;

// out[u * 16 NV + l] = sum_c rows[u][c * stride] * pt[c * 16 NV + l] for
// the kNodes rows and the 16 NV lanes of pt [n_in, 16 NV]: each input's
// weights are broadcast against one contiguous vector of projections, so
// that the sums stay in registers and the rows are read once, in order
// (the rebuild's n x n_in x LK multiply-adds as a small matrix product).
template <int NV>
void ProjectNodesN(const float* const* rows, int64_t stride, int64_t n_in,
                   const float* __restrict__ pt, float* out) {
  constexpr int W = 16 * NV;
  float acc[kNodes][W] = {};
  for (int64_t c = 0; c < n_in; ++c) {
    const float* p = pt + c * W;
    for (int u = 0; u < kNodes; ++u) {
      const float x = rows[u][c * stride];
#pragma omp simd
      for (int l = 0; l < W; ++l) acc[u][l] += x * p[l];
    }
  }
  for (int u = 0; u < kNodes; ++u) std::copy_n(acc[u], W, out + u * W);
}

inline void ProjectNodes(int64_t nv, const float* const* rows, int64_t stride,
                         int64_t n_in, const float* pt, float* out) {
  switch (nv) {
    case 1: return ProjectNodesN<1>(rows, stride, n_in, pt, out);
    case 2: return ProjectNodesN<2>(rows, stride, n_in, pt, out);
    case 3: return ProjectNodesN<3>(rows, stride, n_in, pt, out);
    default: return ProjectNodesN<kMaxVectors>(rows, stride, n_in, pt, out);
  }
}

// Every node's bucket code in every table, from the weights in slot 0 of a
// hidden layer's slab (first layer [n, S, n_in], slot_axis 1; later layers
// [n, n_in, S], slot_axis 2): kernels.build_tables of the node-major
// weights.  The asymmetric transform (kernels.transform_weights) scales
// every node by one factor so that the longest has norm U and appends m
// norm powers (l2_alsh, sign_alsh) or sqrt(1 - ||x||^2) (simple_lsh); a
// node's projection r . P(x) is then scale * (r[:n_in] . x) plus the
// appended terms, so one pass over the weights gives every node's raw
// projections and squared norm, and the codes follow once the largest
// norm is known.  Nodes are split among threads, kNodes at a time
// (ProjectNodes).  Under weight normalisation
// `scales` [n] holds each node's g / ||v||, the effective weights being
// scales[j] * v_j, so its projections and squared norm scale by it and
// its square ([0]: the slab holds the weights).
inline ffi::Error BuildTablesImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> w,
                           ffi::Buffer<ffi::F32> scales,
                           ffi::Buffer<ffi::F32> projections,
                           ffi::Buffer<ffi::F32> offsets,
                           ffi::BufferR0<ffi::F32> bucket_width,
                           ffi::Buffer<ffi::S32> mult,
                           ffi::ResultBuffer<ffi::S32> tables,
                           int64_t slot_axis, int32_t transform, int64_t m,
                           float U, int64_t threads) {
  const auto wd = w.dimensions();
  const auto pd = projections.dimensions();
  if (wd.size() != 3 || (slot_axis != 1 && slot_axis != 2)) {
    return ffi::Error::InvalidArgument("need a slab [n, ., .], slot axis 1 "
                                       "or 2");
  }
  const int64_t n = wd[0], S = wd[slot_axis], n_in = wd[3 - slot_axis];
  const int64_t extra = transform == 2 ? 1 : m;
  if (pd.size() != 3 || pd[2] != n_in + extra || transform < 0 ||
      transform > 2) {
    return ffi::Error::InvalidArgument(
        "need projections [L, K, n_in + m] (n_in + 1 for simple_lsh) and a "
        "transform code 0, 1 or 2");
  }
  const int64_t L = pd[0], K = pd[1], LK = L * K, d = pd[2];
  const bool l2 = offsets.element_count() != 0;
  if (mult.element_count() != static_cast<size_t>(LK) ||
      (l2 && offsets.element_count() != static_cast<size_t>(LK)) ||
      tables->element_count() != static_cast<size_t>(L * n)) {
    return ffi::Error::InvalidArgument(
        "need multipliers and offsets [L, K] (offsets [0]: srp) and tables "
        "[L, n]");
  }
  if (scales.element_count() != 0 &&
      scales.element_count() != static_cast<size_t>(n)) {
    return ffi::Error::InvalidArgument("need scales [n], or [0]");
  }
  const float* P = projections.typed_data();
  const float* wp = w.typed_data();
  // Element c of node j's weights: rows of S * n_in floats, slot 0 first
  // (slot axis 1) or its slots interleaved (slot axis 2).
  const int64_t row_len = S * n_in, stride = slot_axis == 1 ? 1 : S;
  // The projections' first n_in columns transposed into chunks of W lanes
  // ([chunks, n_in, W], zero-padded), so that ProjectNodes reads one
  // contiguous W-vector per input.
  const int64_t nv = std::min<int64_t>(kMaxVectors, (LK + 15) / 16);
  const int64_t W = 16 * nv, chunks = (LK + W - 1) / W;
  std::vector<float> PT(chunks * n_in * W, 0.f);
  for (int64_t h = 0; h < LK; ++h) {
    float* col = PT.data() + (h / W) * n_in * W + h % W;
    for (int64_t c = 0; c < n_in; ++c) col[c * W] = P[h * d + c];
  }
  std::vector<float> dots(n * LK), sq(n);
  ParallelFor(pool, (n + kNodes - 1) / kNodes, threads, 4,
              [&](int64_t begin, int64_t end) {
    float acc[kNodes * 16 * kMaxVectors];
    for (int64_t q = begin; q < end; ++q) {
      const int64_t j0 = kNodes * q, cnt = std::min<int64_t>(kNodes, n - j0);
      const float* rows[kNodes];
      for (int64_t u = 0; u < kNodes; ++u) {  // a short group repeats a row
        rows[u] = wp + (j0 + std::min(u, cnt - 1)) * row_len;
      }
      for (int64_t u = 0; u < cnt; ++u) {
        sq[j0 + u] = SquaredNorm(rows[u], n_in, stride);
      }
      for (int64_t ch = 0; ch < chunks; ++ch) {
        ProjectNodes(nv, rows, stride, n_in, PT.data() + ch * n_in * W, acc);
        const int64_t lanes = std::min(W, LK - ch * W);
        for (int64_t u = 0; u < cnt; ++u) {
          std::copy_n(acc + u * W, lanes,
                      dots.data() + (j0 + u) * LK + ch * W);
        }
      }
    }
  });
  if (scales.element_count() != 0) {
    const float* sc = scales.typed_data();
    for (int64_t j = 0; j < n; ++j) {
      sq[j] *= sc[j] * sc[j];
      for (int64_t h = 0; h < LK; ++h) dots[j * LK + h] *= sc[j];
    }
  }
  const float max_sq = *std::max_element(sq.begin(), sq.end());
  const float max_norm = std::sqrt(max_sq);
  const float scale = (transform == 2 ? 1.f : U) /
                      (max_norm > 0.f ? max_norm : 1.f);
  const float* off = l2 ? offsets.typed_data() : nullptr;
  const float width = *bucket_width.typed_data();
  const int32_t* mu = mult.typed_data();
  int32_t* out = tables->typed_data();
  ParallelFor(pool, n, threads, 256, [&](int64_t begin, int64_t end) {
    std::vector<float> ext(extra);  // the node's appended terms
    for (int64_t j = begin; j < end; ++j) {
      const float s2 = sq[j] * scale * scale;
      if (transform == 2) {
        ext[0] = std::sqrt(std::max(1.f - s2, 0.f));
      } else {
        float p = s2;
        for (int64_t i = 0; i < extra; ++i) {
          ext[i] = transform == 0 ? p : 0.5f - p;
          p *= p;
        }
      }
      for (int64_t l = 0; l < L; ++l) {
        uint32_t code = 0;
        for (int64_t k = 0; k < K; ++k) {
          const int64_t h = l * K + k;
          float v = scale * dots[j * LK + h];
          for (int64_t i = 0; i < extra; ++i) v += ext[i] * P[h * d + n_in + i];
          const int32_t comp =
              off ? static_cast<int32_t>(std::floor((v + off[h]) / width))
                  : (v > 0.f);
          code += static_cast<uint32_t>(comp) * static_cast<uint32_t>(mu[h]);
        }
        out[l * n + j] = static_cast<int32_t>(code);
      }
    }
  });
  return ffi::Error::Success();
}


}  // namespace sampling_mlp_alsh

#endif  // SAMPLING_MLP_METHODS_ALSH_CSRC_ALSH_TABLES_H_
