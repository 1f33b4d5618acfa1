// Hashing a hidden layer's nodes: their sketches (projections onto the
// hash directions and squared norms, kernels.node_sketch) and codes from
// them (kernels.sketch_codes), for the tables' rebuild (AlshBuildTables in
// alsh_kernels.cc: every node, from the slab in place) and the
// incremental re-hash of the nodes a step touched (alsh_step.h).

#ifndef SAMPLING_MLP_METHODS_ALSH_CSRC_ALSH_TABLES_H_
#define SAMPLING_MLP_METHODS_ALSH_CSRC_ALSH_TABLES_H_

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "alsh_select.h"
#include "parallel.h"
#include "xla/ffi/api/ffi.h"

namespace sampling_mlp_alsh {

namespace ffi = xla::ffi;
using sampling_mlp::ParallelFor;

// Nodes projected together, and the most 16-lane vectors of projections
// per pass: kNodes x kMaxVectors sums and kMaxVectors projections fit
// AVX-512's 32 registers.
constexpr int64_t kNodes = 8, kMaxVectors = 3;

// out[u * 16 NV + l] = sum_c rows[u][c * stride] * prow[c][l] for the
// kNodes rows, c < r and 16 NV lanes: each input's weights are broadcast
// against one contiguous vector of projections (prow[c]: 16 NV readable
// floats), so that the sums stay in registers and the rows are read once,
// in order (nodes' projections as a small matrix product).
template <int NV>
void ProjectNodesN(const float* const* rows, int64_t stride, int64_t r,
                   const float* const* prow, float* out) {
  constexpr int W = 16 * NV;
  float acc[kNodes][W] = {};
  for (int64_t c = 0; c < r; ++c) {
    const float* p = prow[c];
    for (int u = 0; u < kNodes; ++u) {
      const float x = rows[u][c * stride];
#pragma omp simd
      for (int l = 0; l < W; ++l) acc[u][l] += x * p[l];
    }
  }
  for (int u = 0; u < kNodes; ++u) std::copy_n(acc[u], W, out + u * W);
}

// The projections of up to kNodes nodes' rows of r values (`cnt` of
// `rows`, entries `stride` apart) onto the LK directions of pt [n_pt, ld]
// (row i: how input i enters each direction; ld >= LK), reading pt's rows
// idx[c] (c where idx is null) for the values c: outs[u][h] = (or, with
// `add`, +=) sum_c rows[u][c stride] pt[i_c, h].  Passes of up to
// kMaxVectors 16-lane vectors of directions; a pass reads 16-lane vectors
// from pt's rows on into the next row where ld is narrower (lanes it then
// ignores), and the last rows, whose vectors would end past pt, from
// zero-padded copies.
inline void ProjectRows(const float* const* rows, int64_t cnt, int64_t stride,
                        int64_t r, const float* pt, int64_t ld, int64_t n_pt,
                        const uint32_t* idx, int64_t LK, bool add,
                        float* const* outs) {
  const float* group[kNodes];
  for (int64_t u = 0; u < kNodes; ++u) group[u] = rows[std::min(u, cnt - 1)];
  const int64_t nv = std::min<int64_t>(kMaxVectors, (LK + 15) / 16);
  const int64_t W = 16 * nv, total = n_pt * ld;
  thread_local std::vector<const float*> prow;
  thread_local std::vector<float> pads;
  prow.resize(r);
  float acc[kNodes * 16 * kMaxVectors];
  for (int64_t ch = 0; ch * W < LK; ++ch) {
    // Rows from `first` on would be read past pt's end: padded copies.
    const int64_t room = total - (ch + 1) * W;  // last start that fits
    const int64_t first = room < 0 ? 0 : std::min(room / ld + 1, n_pt);
    pads.assign((n_pt - first) * W, 0.f);
    for (int64_t i = first; i < n_pt; ++i) {
      const int64_t at = i * ld + ch * W;
      std::copy_n(pt + at, std::min(W, total - at), &pads[(i - first) * W]);
    }
    for (int64_t c = 0; c < r; ++c) {
      const int64_t i = idx ? idx[c] : c;
      prow[c] = i < first ? pt + i * ld + ch * W : &pads[(i - first) * W];
    }
    switch (nv) {
      case 1: ProjectNodesN<1>(group, stride, r, prow.data(), acc); break;
      case 2: ProjectNodesN<2>(group, stride, r, prow.data(), acc); break;
      default: ProjectNodesN<3>(group, stride, r, prow.data(), acc);
    }
    const int64_t lanes = std::min(W, LK - ch * W);
    for (int64_t u = 0; u < cnt; ++u) {
      float* o = outs[u] + ch * W;
      const float* a = acc + u * W;
      if (add) {
        for (int64_t l = 0; l < lanes; ++l) o[l] += a[l];
      } else {
        std::copy_n(a, lanes, o);
      }
    }
  }
}

// The sketches (kernels.node_sketch) of up to kNodes nodes: the
// projections of their rows (`cnt` of `rows`, n_in entries `stride`
// apart) onto the L*K directions of pt [n_in, ld] (row c: how input c
// enters each direction; ld >= L*K) into outs[u][0 .. LK), and their
// squared norms into outs[u][LK].
inline void SketchNodes(const float* const* rows, int64_t cnt, int64_t stride,
                        int64_t n_in, const float* pt, int64_t ld, int64_t LK,
                        float* const* outs) {
  ProjectRows(rows, cnt, stride, n_in, pt, ld, n_in, nullptr, LK, false,
              outs);
  for (int64_t u = 0; u < cnt; ++u) {
    outs[u][LK] = SquaredNorm(rows[u], n_in, stride);
  }
}

// A node's bucket codes from its sketch and the common scale
// (kernels.sketch_codes): its projection onto direction h is scale *
// dots[h] plus the appended coordinates' term, a function of scale^2 *
// ||x||^2; then the hash family's component and the table's code.  The
// terms are added in another order than the definition's, so a projection
// within rounding of a bucket boundary may land in the other bucket.
struct NodeCoder {
  int32_t transform;     // 0 l2_alsh, 1 sign_alsh, 2 simple_lsh
  int64_t extra;         // appended coordinates: m, or 1 (simple_lsh)
  const float* tail;     // the appended coordinates' projections,
  int64_t tstride;       //   direction h's at tail[h * tstride ...]
  const float* offsets;  // [L*K], or null: srp
  float width;
  const int32_t* mult;  // [L, K]
  int64_t L, K;

  // Table l's code of the node into out[l * stride].
  void Codes(const float* dots, float sq, float scale, int32_t* out,
             int64_t stride) const {
    const float s2 = sq * scale * scale;
    for (int64_t l = 0; l < L; ++l) {
      uint32_t code = 0;
      for (int64_t k = 0; k < K; ++k) {
        const int64_t h = l * K + k;
        const float* t = tail + h * tstride;
        float v = scale * dots[h];
        if (transform == 2) {
          v += std::sqrt(std::max(1.f - s2, 0.f)) * t[0];
        } else {
          float p = s2;
          for (int64_t i = 0; i < extra; ++i) {
            v += (transform == 0 ? p : 0.5f - p) * t[i];
            p *= p;
          }
        }
        const int32_t comp =
            offsets ? static_cast<int32_t>(std::floor((v + offsets[h]) / width))
                    : (v > 0.f);
        code += static_cast<uint32_t>(comp) * static_cast<uint32_t>(mult[h]);
      }
      out[l * stride] = static_cast<int32_t>(code);
    }
  }
};

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
// (ProjectRows).  Under weight normalisation
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
                           ffi::ResultBuffer<ffi::F32> sketch,
                           ffi::ResultBufferR0<ffi::F32> scale_out,
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
      tables->element_count() != static_cast<size_t>(L * n) ||
      sketch->element_count() != static_cast<size_t>(n * (LK + 1))) {
    return ffi::Error::InvalidArgument(
        "need multipliers and offsets [L, K] (offsets [0]: srp), tables "
        "[L, n] and sketches [n, L*K + 1]");
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
  // The projections' first n_in columns transposed, [n_in, W] (W: L*K
  // rounded up to 16 lanes, zero-padded), as SketchNodes reads them.
  const int64_t W = (LK + 15) / 16 * 16;
  std::vector<float> PT(n_in * W, 0.f);
  for (int64_t h = 0; h < LK; ++h) {
    for (int64_t c = 0; c < n_in; ++c) PT[c * W + h] = P[h * d + c];
  }
  // Every node's sketch, [n, LK + 1], straight into the result.
  float* sk = sketch->typed_data();
  const int64_t ds = LK + 1;
  ParallelFor(pool, (n + kNodes - 1) / kNodes, threads, 4,
              [&](int64_t begin, int64_t end) {
    for (int64_t q = begin; q < end; ++q) {
      const int64_t j0 = kNodes * q, cnt = std::min<int64_t>(kNodes, n - j0);
      const float* rows[kNodes];
      float* outs[kNodes];
      for (int64_t u = 0; u < cnt; ++u) {
        rows[u] = wp + (j0 + u) * row_len;
        outs[u] = sk + (j0 + u) * ds;
      }
      SketchNodes(rows, cnt, stride, n_in, PT.data(), W, LK, outs);
    }
  });
  if (scales.element_count() != 0) {  // the effective weights' sketches
    const float* sc = scales.typed_data();
    for (int64_t j = 0; j < n; ++j) {
      for (int64_t h = 0; h < LK; ++h) sk[j * ds + h] *= sc[j];
      sk[j * ds + LK] *= sc[j] * sc[j];
    }
  }
  float max_sq = 0.f;
  for (int64_t j = 0; j < n; ++j) max_sq = std::max(max_sq, sk[j * ds + LK]);
  const float max_norm = std::sqrt(max_sq);
  const float scale = (transform == 2 ? 1.f : U) /
                      (max_norm > 0.f ? max_norm : 1.f);
  *scale_out->typed_data() = scale;
  const NodeCoder coder{transform, extra, P + n_in, d,
                        l2 ? offsets.typed_data() : nullptr,
                        *bucket_width.typed_data(), mult.typed_data(), L, K};
  int32_t* out = tables->typed_data();
  ParallelFor(pool, n, threads, 256, [&](int64_t begin, int64_t end) {
    for (int64_t j = begin; j < end; ++j) {
      coder.Codes(sk + j * ds, sk[j * ds + LK], scale, out + j, n);
    }
  });
  return ffi::Error::Success();
}


}  // namespace sampling_mlp_alsh

#endif  // SAMPLING_MLP_METHODS_ALSH_CSRC_ALSH_TABLES_H_
