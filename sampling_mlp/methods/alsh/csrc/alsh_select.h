// Hashing and active-set selection of ALSH-APPROX for one query, shared by
// the kernels of alsh_kernels.cc.  They compute what kernels.py computes
// with jax.numpy, bit for bit: the same hash codes (QueryCodes, as
// kernels.sparse_query_codes) and the same active set (SelectTop, as
// kernels.select_active, with TieNoise as kernels.tie_noise).  Included by
// alsh_kernels.cc only, the one translation unit of the library.

#ifndef SAMPLING_MLP_ALSH_SELECT_H_
#define SAMPLING_MLP_ALSH_SELECT_H_

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <vector>

#include "profile.h"

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace sampling_mlp_alsh {

// The phases of a step that --breakdown reports (profile.h; their names
// are defined once, in alsh_kernels.cc, in this order).
enum Phase { kHash, kSelect, kForward, kBackward, kUpdate, kRehash };
using sampling_mlp::PhaseTimer;


// MurmurHash3 finaliser of (index * golden ratio) ^ seed, top 24 bits scaled
// into [0, 1/2); must match kernels.tie_noise bit for bit.
inline float TieNoise(uint32_t seed, uint32_t i) {
  uint32_t h = i * 0x9E3779B9u;
  h ^= seed;
  h ^= h >> 16;
  h *= 0x85EBCA6Bu;
  h ^= h >> 13;
  h *= 0xC2B2AE35u;
  h ^= h >> 16;
  return static_cast<float>(h >> 8) * 2.9802322387695312e-08f;  // 2^-25
}

// Width of the fixed-size accumulators below: two AVX-512 registers.
constexpr int64_t kLanes = 32;

// <x, y> with kLanes independent partial sums, so that the loop vectorises
// without reassociating one long dependency chain.
float Dot(const float* __restrict__ x, const float* __restrict__ y,
          int64_t n) {
  float acc[kLanes] = {};
  int64_t d = 0;
  for (; d + kLanes <= n; d += kLanes) {
    for (int64_t l = 0; l < kLanes; ++l) acc[l] += x[d + l] * y[d + l];
  }
  float total = 0.f;
  for (; d < n; ++d) total += x[d] * y[d];
  for (int64_t l = 0; l < kLanes; ++l) total += acc[l];
  return total;
}

// ||v||^2 of n entries `stride` apart, in kLanes partial sums as Dot (one
// chain of n dependent adds otherwise sets the time of a wide row).  With
// stride 3 (a slab's interleaved slots) it squares all 3n floats in
// contiguous vectors and keeps the lanes of slot 0: loading every third
// float one at a time cost several times more.
inline float SquaredNorm(const float* __restrict__ v, int64_t n,
                         int64_t stride) {
  if (stride == 1) return Dot(v, v, n);
  float total = 0.f;
  int64_t j = 0;
  if (stride == 3) {
    constexpr int64_t kBlock = 48;  // 16 entries of 3 slots
    float part[kBlock] = {};
    for (; j + 16 <= n; j += 16) {
      const float* b = v + 3 * j;
      for (int64_t l = 0; l < kBlock; ++l) part[l] += b[l] * b[l];
    }
    for (int64_t l = 0; l < kBlock; l += 3) total += part[l];
  } else {
    float part[kLanes] = {};
    for (; j + kLanes <= n; j += kLanes) {
      for (int64_t l = 0; l < kLanes; ++l) {
        const float e = v[(j + l) * stride];
        part[l] += e * e;
      }
    }
    for (int64_t l = 0; l < kLanes; ++l) total += part[l];
  }
  for (; j < n; ++j) total += v[j * stride] * v[j * stride];
  return total;
}

// <x1, y> and <x2, y> in one pass: two rows' loads and multiply-adds in
// flight at once, where rows come from scattered places in memory (about
// 10% faster than one after the other).
void Dot2(const float* __restrict__ x1, const float* __restrict__ x2,
          const float* __restrict__ y, int64_t n, float* out1, float* out2) {
  float a1[kLanes] = {}, a2[kLanes] = {};
  int64_t d = 0;
  for (; d + kLanes <= n; d += kLanes) {
    for (int64_t l = 0; l < kLanes; ++l) {
      a1[l] += x1[d + l] * y[d + l];
      a2[l] += x2[d + l] * y[d + l];
    }
  }
  float t1 = 0.f, t2 = 0.f;
  for (; d < n; ++d) {
    t1 += x1[d] * y[d];
    t2 += x2[d] * y[d];
  }
  for (int64_t l = 0; l < kLanes; ++l) {
    t1 += a1[l];
    t2 += a2[l];
  }
  *out1 = t1;
  *out2 = t2;
}

// sum_i unit[i] * proj[row_i, :LK] for LK <= kLanes, into out [LK].  The
// fixed-width accumulators stay in registers and vectorise fully; two of
// them, one per row of a pair, keep two rows' multiply-adds in flight.  A
// row reads kLanes entries from its start, a few past its end (lanes never
// used); rows whose read would pass the buffer's end are done separately.
void ProjectNarrow(const float* __restrict__ unit, const uint32_t* rows,
                   int64_t r, const float* __restrict__ proj, int64_t n_in,
                   int64_t LK, float* __restrict__ out) {
  float acc[kLanes] = {}, acc2[kLanes] = {};
  const int64_t limit = n_in * LK - kLanes;  // last safe start
  const auto start = [&](int64_t i) -> int64_t {
    return (rows ? rows[i] : i) * LK;
  };
  int64_t i = 0;
  for (; i + 2 <= r; i += 2) {
    const int64_t s = start(i), s2 = start(i + 1);
    if (s > limit || s2 > limit) break;  // the rest row by row
    const float u = unit[i], u2 = unit[i + 1];
    for (int64_t c = 0; c < kLanes; ++c) {
      acc[c] += u * proj[s + c];
      acc2[c] += u2 * proj[s2 + c];
    }
  }
  for (; i < r; ++i) {
    const int64_t s = start(i);
    const float u = unit[i];
    if (s <= limit) {
      for (int64_t c = 0; c < kLanes; ++c) acc[c] += u * proj[s + c];
    } else {
      for (int64_t c = 0; c < LK; ++c) acc[c] += u * proj[s + c];
    }
  }
  for (int64_t c = 0; c < LK; ++c) out[c] += acc[c] + acc2[c];
}

// Bucket codes of one query in each of L tables, as
// kernels.sparse_query_codes computes them: the query a (non-zero only on
// `rows`, or dense) is normalised, projected (proj [n_in, L*K], plus the
// projection `tail` of the transform's constant components), and each
// table's K components are combined with `mult` [L, K] in wrapping int32
// arithmetic: sign bits for srp (offsets empty), floor((v + offset) / R)
// for l2.
void QueryCodes(const float* vals, const uint32_t* rows, int64_t r,
                const float* proj, int64_t n_in, const float* tail,
                const float* offsets, float bucket_width, const int32_t* mult,
                int64_t L, int64_t K, int32_t* codes) {
  const int64_t LK = L * K;
  const float norm = std::sqrt(Dot(vals, vals, r));
  const float denom = norm > 0.f ? norm : 1.f;
  thread_local std::vector<float> unit, v;
  unit.resize(r);
  for (int64_t i = 0; i < r; ++i) unit[i] = vals[i] / denom;
  v.assign(tail, tail + LK);
  if (LK <= kLanes) {
    ProjectNarrow(unit.data(), rows, r, proj, n_in, LK, v.data());
  } else {
    for (int64_t i = 0; i < r; ++i) {
      const float* row = proj + (rows ? rows[i] : i) * LK;
      for (int64_t c = 0; c < LK; ++c) v[c] += unit[i] * row[c];
    }
  }
  const float* vp = v.data();
  for (int64_t l = 0; l < L; ++l) {
    uint32_t code = 0;  // unsigned: int32 wrap-around without overflow UB
    for (int64_t k = 0; k < K; ++k) {
      const int64_t c = l * K + k;
      const int32_t comp =
          offsets ? static_cast<int32_t>(
                        std::floor((vp[c] + offsets[c]) / bucket_width))
                  : (vp[c] > 0.f);
      code += static_cast<uint32_t>(comp) *
              static_cast<uint32_t>(mult[l * K + k]);
    }
    codes[l] = static_cast<int32_t>(code);
  }
}

// 32-bit lanes in a vector register (AVX-512; elsewhere the compiler splits).
constexpr int64_t kVec = 16;

// Writes the score bits sb[j] and indices j of the nodes with c[j] > level,
// or c[j] == level and sb[j] >= cut, to cb and ci (each with kVec entries of
// slack); returns how many.
int64_t Compact(const int32_t* __restrict__ c, const uint32_t* __restrict__ sb,
                int64_t n, int32_t level, uint32_t cut,
                uint32_t* __restrict__ cb, uint32_t* __restrict__ ci) {
  int64_t m = 0, j = 0;
#if defined(__AVX512F__)
  // Compress in registers (vpcompressd), then store a whole vector: the
  // compress-to-memory form is slow on some CPUs.
  const __m512i lvl = _mm512_set1_epi32(level);
  const __m512i cutv = _mm512_set1_epi32(static_cast<int32_t>(cut));
  __m512i iv = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,
                                 13, 14, 15);
  const __m512i step = _mm512_set1_epi32(kVec);
  for (; j + kVec <= n; j += kVec) {
    const __m512i cj = _mm512_loadu_si512(c + j);
    const __m512i sj = _mm512_loadu_si512(sb + j);
    const __mmask16 take =
        _mm512_cmpgt_epi32_mask(cj, lvl) |
        (_mm512_cmpeq_epi32_mask(cj, lvl) & _mm512_cmpge_epu32_mask(sj, cutv));
    _mm512_storeu_si512(cb + m, _mm512_maskz_compress_epi32(take, sj));
    _mm512_storeu_si512(ci + m, _mm512_maskz_compress_epi32(take, iv));
    m += __builtin_popcount(take);
    iv = _mm512_add_epi32(iv, step);
  }
#endif
  for (; j < n; ++j) {  // branch-free
    cb[m] = sb[j];
    ci[m] = static_cast<uint32_t>(j);
    m += (c[j] > level) | ((c[j] == level) & (sb[j] >= cut));
  }
  return m;
}

// Candidate sets up to this size are ordered by counting (O(m^2), but
// branch-free and vectorised); larger ones by nth_element and sort.
constexpr int64_t kRankMax = 256;

// The active set from the query's codes q [L] and the tables t [L, n]:
// every node's collision count plus its tie noise is its score, and the
// `budget` largest scores are written to out in lax.top_k's order
// (descending score, ties by lower index), as kernels.select_active does.  A
// non-negative float's bits order like the float, so the pair (score bits,
// -index) orders nodes exactly so, and no two nodes tie.  Nodes above the
// threshold level (the count at which the budget runs out) are all taken,
// nodes at it compete by their noise, and only the candidates are ordered.
// Returns the number of nodes colliding in at least one table.
int32_t SelectTop(const int32_t* q, const int32_t* t, int64_t L, int64_t n,
                  uint32_t seed, int64_t budget, uint32_t* out) {
  thread_local std::vector<int32_t> counts;
  thread_local std::vector<uint32_t> bits, cand_bits, cand_idx;
  counts.assign(n, 0);
  bits.resize(n);
  // Room for a last vector's worth of padding (see the ranking below).
  cand_bits.resize(n + kVec);
  cand_idx.resize(n + kVec);
  int32_t* __restrict__ c = counts.data();
  uint32_t* __restrict__ sb = bits.data();
  uint32_t* __restrict__ cb = cand_bits.data();
  uint32_t* __restrict__ ci = cand_idx.data();
  for (int64_t l = 0; l < L; ++l) {
    const int32_t ql = q[l];
    const int32_t* __restrict__ row = t + l * n;
    for (int64_t j = 0; j < n; ++j) c[j] += (row[j] == ql);
  }
  // How many nodes collide at least v times, for v = L, L-1, ... until the
  // budget is reached at the threshold level; one vectorised pass each.
  const auto at_least = [&](int32_t v) {
    int32_t h = 0;
    for (int64_t j = 0; j < n; ++j) h += (c[j] >= v);
    return static_cast<int64_t>(h);
  };
  int32_t level = static_cast<int32_t>(L);
  int64_t upto = at_least(level), above = 0;  // above: count > level
  while (upto < budget) {
    above = upto;
    upto = at_least(--level);
  }
  const int64_t at_level = upto - above;
  const int64_t colliding =
      level == 0 ? above : (level == 1 ? upto : at_least(1));
  for (int64_t j = 0; j < n; ++j) {
    const float score = static_cast<float>(c[j]) +
                        TieNoise(seed, static_cast<uint32_t>(j));
    std::memcpy(&sb[j], &score, sizeof score);
  }
  // Nodes at the threshold level share their count, so their order is their
  // noise's, which is uniform: a cutoff that about twice the needed number
  // of them pass leaves few candidates to order.  If too few pass
  // (unlikely), the second pass takes all of them.
  const int64_t need = budget - above;
  float cut = 0.f;
  if (2 * need < at_level) {
    cut = 0.5f * (1.f - 2.f * static_cast<float>(need) / at_level);
  }
  int64_t m = 0;
  for (int pass = 0; pass < 2; ++pass) {
    const float cut_score = static_cast<float>(level) + cut;
    uint32_t cut_bits;
    std::memcpy(&cut_bits, &cut_score, sizeof cut_bits);
    m = Compact(c, sb, n, level, cut_bits, cb, ci);
    if (m >= budget) break;
    cut = 0.f;
  }
  if (m <= kRankMax) {
    // A node's rank is how many candidates beat it.  Padding to whole
    // vectors with (bits 0, index ~0), which beats no one, keeps the inner
    // loop free of a scalar remainder.
    const int64_t padded = (m + kVec - 1) / kVec * kVec;
    std::fill(cb + m, cb + padded, 0u);
    std::fill(ci + m, ci + padded, 0xFFFFFFFFu);
    for (int64_t i = 0; i < m; ++i) {
      const uint32_t bi = cb[i], ii = ci[i];
      int32_t rank = 0;
#if defined(__AVX512F__)
      const __m512i bv = _mm512_set1_epi32(static_cast<int32_t>(bi));
      const __m512i iv = _mm512_set1_epi32(static_cast<int32_t>(ii));
      for (int64_t k = 0; k < padded; k += kVec) {
        const __m512i b = _mm512_loadu_si512(cb + k);
        const __m512i x = _mm512_loadu_si512(ci + k);
        rank += __builtin_popcount(
            _mm512_cmpgt_epu32_mask(b, bv) |
            (_mm512_cmpeq_epi32_mask(b, bv) & _mm512_cmplt_epu32_mask(x, iv)));
      }
#else
      for (int64_t k = 0; k < padded; ++k) {
        rank += (cb[k] > bi) | ((cb[k] == bi) & (ci[k] < ii));
      }
#endif
      if (rank < budget) out[rank] = ii;
    }
  } else {
    thread_local std::vector<uint64_t> keys;
    keys.resize(m);
    for (int64_t i = 0; i < m; ++i) {
      keys[i] = (static_cast<uint64_t>(cb[i]) << 32) | (0xFFFFFFFFu - ci[i]);
    }
    std::nth_element(keys.begin(), keys.begin() + budget - 1, keys.end(),
                     std::greater<uint64_t>());
    std::sort(keys.begin(), keys.begin() + budget, std::greater<uint64_t>());
    for (int64_t r = 0; r < budget; ++r) {
      out[r] = 0xFFFFFFFFu - static_cast<uint32_t>(keys[r] & 0xFFFFFFFFu);
    }
  }
  return static_cast<int32_t>(colliding);
}

// One layer's hash functions (kernels.QueryHash) and its nodes' tables.
struct LayerHash {
  const float* proj;     // [n_in, L*K]
  const float* tail;     // [L*K]
  const float* offsets;  // [L*K], or null: srp
  float bucket_width;
  const int32_t* mult;    // [L, K]
  const int32_t* tables;  // [L, n]
  int64_t n_in, L, K, n;

  // The active set of a query with values `vals` on `rows` (null: dense,
  // r = n_in); returns the number of colliding nodes.
  int32_t Select(const float* vals, const uint32_t* rows, int64_t r,
                 uint32_t seed, int64_t budget, uint32_t* out) const {
    thread_local std::vector<int32_t> q;
    q.resize(L);
    PhaseTimer timer(kHash);
    QueryCodes(vals, rows, r, proj, n_in, tail, offsets, bucket_width, mult, L,
               K, q.data());
    timer.Switch(kSelect);
    return SelectTop(q.data(), tables, L, n, seed, budget, out);
  }
};

}  // namespace sampling_mlp_alsh

#endif  // SAMPLING_MLP_ALSH_SELECT_H_
