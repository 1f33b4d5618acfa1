// The tables' rebuild of ALSH-APPROX (AlshBuildTables in alsh_kernels.cc):
// every node's bucket codes from a hidden layer's slab, read in place.

#ifndef SAMPLING_MLP_METHODS_ALSH_CSRC_ALSH_TABLES_H_
#define SAMPLING_MLP_METHODS_ALSH_CSRC_ALSH_TABLES_H_

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "parallel.h"
#include "xla/ffi/api/ffi.h"

namespace sampling_mlp_alsh {

namespace ffi = xla::ffi;
using sampling_mlp::ParallelFor;

// Every node's bucket code in every table, from the weights in slot 0 of a
// hidden layer's slab (first layer [n, S, n_in], slot_axis 1; later layers
// [n, n_in, S], slot_axis 2): kernels.build_tables of the node-major
// weights.  The asymmetric transform (kernels.transform_weights) scales
// every node by one factor so that the longest has norm U and appends m
// norm powers (l2_alsh, sign_alsh) or sqrt(1 - ||x||^2) (simple_lsh); a
// node's projection r . P(x) is then scale * (r[:n_in] . x) plus the
// appended terms, so one pass over the weights gives every node's raw
// projections and squared norm, and the codes follow once the largest
// norm is known.  Nodes are split among threads, four at a time, so that
// each projection row read serves four nodes.  Under weight normalisation
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
  std::vector<float> dots(n * LK), sq(n);
  ParallelFor(pool, (n + 3) / 4, threads, 8, [&](int64_t begin, int64_t end) {
    thread_local std::vector<float> x;
    x.resize(4 * n_in);
    for (int64_t q = begin; q < end; ++q) {
      const int64_t j0 = 4 * q, cnt = std::min<int64_t>(4, n - j0);
      for (int64_t u = 0; u < 4; ++u) {
        float* xu = x.data() + u * n_in;
        if (u >= cnt) {
          std::fill_n(xu, n_in, 0.f);
          continue;
        }
        const float* row = wp + (j0 + u) * row_len;
        float acc = 0.f;
        for (int64_t c = 0; c < n_in; ++c) {
          xu[c] = row[c * stride];
          acc += xu[c] * xu[c];
        }
        sq[j0 + u] = acc;
      }
      // Three projection rows at a time against the four nodes: twelve
      // sums in registers, seven loads per twelve multiply-adds.
      const float *x0 = x.data(), *x1 = x0 + n_in, *x2 = x1 + n_in,
                  *x3 = x2 + n_in;
      int64_t h = 0;
      for (; h + 3 <= LK; h += 3) {
        const float *r0 = P + h * d, *r1 = r0 + d, *r2 = r1 + d;
        float a00 = 0.f, a01 = 0.f, a02 = 0.f, a03 = 0.f;
        float a10 = 0.f, a11 = 0.f, a12 = 0.f, a13 = 0.f;
        float a20 = 0.f, a21 = 0.f, a22 = 0.f, a23 = 0.f;
#pragma omp simd reduction(+ : a00, a01, a02, a03, a10, a11, a12, a13, \
                               a20, a21, a22, a23)
        for (int64_t c = 0; c < n_in; ++c) {
          const float v0 = x0[c], v1 = x1[c], v2 = x2[c], v3 = x3[c];
          a00 += r0[c] * v0; a01 += r0[c] * v1; a02 += r0[c] * v2;
          a03 += r0[c] * v3;
          a10 += r1[c] * v0; a11 += r1[c] * v1; a12 += r1[c] * v2;
          a13 += r1[c] * v3;
          a20 += r2[c] * v0; a21 += r2[c] * v1; a22 += r2[c] * v2;
          a23 += r2[c] * v3;
        }
        const float acc[3][4] = {{a00, a01, a02, a03}, {a10, a11, a12, a13},
                                 {a20, a21, a22, a23}};
        for (int64_t g = 0; g < 3; ++g) {
          for (int64_t u = 0; u < cnt; ++u) {
            dots[(j0 + u) * LK + h + g] = acc[g][u];
          }
        }
      }
      for (; h < LK; ++h) {
        const float* r = P + h * d;
        float a0 = 0.f, a1 = 0.f, a2 = 0.f, a3 = 0.f;
#pragma omp simd reduction(+ : a0, a1, a2, a3)
        for (int64_t c = 0; c < n_in; ++c) {
          a0 += r[c] * x0[c];
          a1 += r[c] * x1[c];
          a2 += r[c] * x2[c];
          a3 += r[c] * x3[c];
        }
        const float acc[4] = {a0, a1, a2, a3};
        for (int64_t u = 0; u < cnt; ++u) dots[(j0 + u) * LK + h] = acc[u];
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
