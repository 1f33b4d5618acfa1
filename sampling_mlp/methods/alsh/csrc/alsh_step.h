// The pieces of an ALSH-APPROX training step shared by the native kernels
// (alsh_kernels.cc): the model's slabs and hashes as the FFI passes them,
// one example's sparse forward pass and loss, and the batch-size-1 step
// that updates every touched weight in place.

#ifndef SAMPLING_MLP_METHODS_ALSH_CSRC_ALSH_STEP_H_
#define SAMPLING_MLP_METHODS_ALSH_CSRC_ALSH_STEP_H_

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "alsh_select.h"
#include "alsh_tables.h"
#include "optimizer.h"
#include "xla/ffi/api/ffi.h"

namespace sampling_mlp_alsh {

namespace ffi = xla::ffi;
using sampling_mlp::Optimizer;

inline ffi::Error MakeHash(const ffi::Buffer<ffi::F32>& proj,
                    const ffi::Buffer<ffi::F32>& tail,
                    const ffi::Buffer<ffi::F32>& offsets,
                    const ffi::BufferR0<ffi::F32>& bucket_width,
                    const ffi::Buffer<ffi::S32>& mult,
                    const ffi::Buffer<ffi::S32>& tables, LayerHash* h) {
  const auto tdims = tables.dimensions();
  const auto mdims = mult.dimensions();
  const auto pdims = proj.dimensions();
  if (tdims.size() != 2 || mdims.size() != 2 || pdims.size() != 2 ||
      mdims[0] != tdims[0] || pdims[1] != mdims[0] * mdims[1] ||
      tail.element_count() != static_cast<size_t>(pdims[1]) ||
      (offsets.element_count() != 0 &&
       offsets.element_count() != static_cast<size_t>(pdims[1]))) {
    return ffi::Error::InvalidArgument(
        "need tables [L, n], multipliers [L, K], projections [n_in, L*K], "
        "tail [L*K] and offsets [L*K] or [0]");
  }
  *h = LayerHash{proj.typed_data(),
                 tail.typed_data(),
                 offsets.element_count() ? offsets.typed_data() : nullptr,
                 *bucket_width.typed_data(),
                 mult.typed_data(),
                 tables.typed_data(),
                 pdims[0],
                 tdims[0],
                 mdims[1],
                 tdims[1]};
  return ffi::Error::Success();
}

// The hidden layers' activation (layers.activation_fn) and its derivative,
// as JAX differentiates it (relu' = 0 and leaky_relu' = 1 at 0).
struct Activation {
  int32_t kind;  // 0 relu, 1 leaky_relu, 2 sigmoid, 3 linear
  float slope;   // leaky_relu's negative slope

  float operator()(float z) const {
    switch (kind) {
      case 0: return z > 0.f ? z : 0.f;
      case 1: return z >= 0.f ? z : slope * z;
      case 2: return 1.f / (1.f + std::exp(-z));
      default: return z;
    }
  }
  float Grad(float z, float a) const {
    switch (kind) {
      case 0: return z > 0.f ? 1.f : 0.f;
      case 1: return z >= 0.f ? 1.f : slope;
      case 2: return a * (1.f - a);
      default: return 1.f;
    }
  }
};

// XLA aliases each output with its input, so the update is in place; should
// it not, the input is copied first.
template <ffi::DataType T, typename E>
void AliasOrCopy(const ffi::Buffer<T>& in, E* out) {
  if (out != in.typed_data()) {
    std::copy_n(in.typed_data(), in.element_count(), out);
  }
}

// A layer's slabs in the step, updated in place: the weights (the
// directions v under weight normalisation), the bias (nullptr: a bias-free
// layer) and the lengths g (nullptr: no weight normalisation); dims are
// w's shape.
struct Slabs {
  float* w;
  float* b = nullptr;
  float* g = nullptr;
  int64_t dims[3];  // w's shape
};

// `auto var = expr;` for an ffi::ErrorOr, returning its error if it has one.
#define SAMPLING_MLP_GET(var, expr) \
  auto var = (expr);                \
  if (!var.has_value()) return var.error()

// One [n, S] slab (a bias or the lengths) of argument `i` into result `o`.
inline ffi::Error GetVector(const ffi::RemainingArgs& args,
                            const ffi::RemainingRets& rets, size_t i,
                            size_t o, float** out) {
  SAMPLING_MLP_GET(v, args.get<ffi::Buffer<ffi::F32>>(i));
  SAMPLING_MLP_GET(rv, rets.get<ffi::Buffer<ffi::F32>>(o));
  if (v->dimensions().size() != 2) {
    return ffi::Error::InvalidArgument("bias and lengths slabs must be [., .]");
  }
  *out = rv.value()->typed_data();
  AliasOrCopy(*v, *out);
  return ffi::Error::Success();
}

// A layer's slabs from argument `i` on into results `o` on: w, then b if
// `bias`, then g if `weight_norm`.
inline ffi::Error GetSlabs(const ffi::RemainingArgs& args,
                           const ffi::RemainingRets& rets, size_t i, size_t o,
                           bool bias, bool weight_norm, Slabs* s) {
  SAMPLING_MLP_GET(w, args.get<ffi::Buffer<ffi::F32>>(i));
  SAMPLING_MLP_GET(rw, rets.get<ffi::Buffer<ffi::F32>>(o));
  const auto wd = w->dimensions();
  if (wd.size() != 3) {
    return ffi::Error::InvalidArgument("weight slabs must be [., ., .]");
  }
  s->w = rw.value()->typed_data();
  AliasOrCopy(*w, s->w);
  std::copy_n(wd.begin(), 3, s->dims);
  s->b = s->g = nullptr;
  if (bias) {
    if (auto e = GetVector(args, rets, ++i, ++o, &s->b); e.failure()) return e;
  }
  if (weight_norm) {
    if (auto e = GetVector(args, rets, ++i, ++o, &s->g); e.failure()) return e;
  }
  return ffi::Error::Success();
}

// Entries gathered from a slab, each slot in its own contiguous plane
// ([S, count]), so that the optimizer runs over them as flat vectors; the
// hidden blocks after the first layer and the output layer's active rows
// are updated this way and written back.
struct Block {
  std::vector<float> e;
  int64_t count = 0;

  void Resize(int64_t slots, int64_t n) {
    count = n;
    e.resize(slots * n);
  }
  float* slot(int64_t k) { return e.data() + k * count; }
};

// Copies `len` contiguous entries whose slots lie `stride` apart, from
// `src` into the planes of `blk` from position `at`; Scatter writes them
// back.
inline void Gather(const float* src, int64_t len, int64_t stride, int64_t S,
                   Block& blk, int64_t at) {
  for (int64_t k = 0; k < S; ++k) {
    std::copy_n(src + k * stride, len, blk.slot(k) + at);
  }
}

inline void Scatter(Block& blk, int64_t at, int64_t len, int64_t stride,
                    int64_t S, float* dst) {
  for (int64_t k = 0; k < S; ++k) {
    std::copy_n(blk.slot(k) + at, len, dst + k * stride);
  }
}

// The columns of a block of a slot-last slab ([n, n_in, S]: a node's row
// holds each input's S slots side by side): the previous active set in
// ascending order, so that every row of the block is read and written in
// address order (a row of a wide layer spans many pages, and visiting
// them in a random order costs a TLB miss per entry), with `pos` the
// column of the block each one belongs to.
struct Columns {
  std::vector<uint32_t> off, pos;  // slab offsets (index * S), block columns
  std::vector<uint64_t> keyed;     // scratch

  void Set(const uint32_t* rows, int64_t r, int64_t S) {
    keyed.resize(r);
    for (int64_t c = 0; c < r; ++c) {
      keyed[c] = (static_cast<uint64_t>(rows[c]) << 32) | c;
    }
    std::sort(keyed.begin(), keyed.end());
    off.resize(r);
    pos.resize(r);
    for (int64_t c = 0; c < r; ++c) {
      off[c] = static_cast<uint32_t>(keyed[c] >> 32) * S;
      pos[c] = static_cast<uint32_t>(keyed[c]);
    }
  }
};

// How many entries ahead GatherBlock and ScatterBlock prefetch: enough
// misses in flight to cover the memory latency of a wide layer, whose
// block entries are each in their own cache line, few enough not to
// exhaust the core's miss buffers.
constexpr int64_t kPrefetchAhead = 16;

// A cursor over the entries of a block in visiting order (node by node,
// each node's columns in address order), for prefetching ahead.
struct BlockCursor {
  const uint32_t* rows;
  int64_t s, r, row_len, i = 0, c = 0;

  // The slab offset of the current entry, or -1 past the end; then step.
  int64_t Next(const uint32_t* off) {
    if (i >= s) return -1;
    const int64_t at = rows[i] * row_len + off[c];
    if (++c == r) c = 0, ++i;
    return at;
  }

  // Prefetches the current entry of `w` (for writing if kWrite); then step.
  template <int kWrite>
  void Prefetch(const float* w, const uint32_t* off) {
    const int64_t at = Next(off);
    if (at >= 0) __builtin_prefetch(w + at, kWrite, 3);
  }
};

// A cursor at the start of a block that has prefetched its first
// kPrefetchAhead entries.
template <int kWrite>
BlockCursor PrefetchedCursor(const float* w, int64_t row_len,
                             const uint32_t* rows, int64_t s, int64_t r,
                             const uint32_t* off) {
  BlockCursor ahead{rows, s, r, row_len};
  for (int64_t j = 0; j < kPrefetchAhead; ++j) ahead.Prefetch<kWrite>(w, off);
  return ahead;
}

// Gathers the [s, r] block of the nodes `rows` (slab rows `row_len` floats
// apart) on the columns `cols` into the planes of `blk` (row-major, block
// column order), `slots` slots of S, prefetching the entries
// kPrefetchAhead ahead so that their memory latencies overlap.
inline void GatherBlock(const float* w, int64_t row_len, const uint32_t* rows,
                        int64_t s, const Columns& cols, int64_t slots,
                        Block& blk) {
  const int64_t r = cols.off.size(), total = s * r;
  const uint32_t* off = cols.off.data();
  const uint32_t* pos = cols.pos.data();
  BlockCursor ahead = PrefetchedCursor<0>(w, row_len, rows, s, r, off);
  for (int64_t i = 0; i < s; ++i) {
    const float* row = w + rows[i] * row_len;
    float* dst = blk.e.data() + i * r;
    for (int64_t c = 0; c < r; ++c) {
      ahead.Prefetch<0>(w, off);
      const float* e = row + off[c];
      for (int64_t k = 0; k < slots; ++k) dst[k * total + pos[c]] = e[k];
    }
  }
}

// Writes the block back (GatherBlock's inverse, all S slots).
inline void ScatterBlock(const Block& blk, const Columns& cols, int64_t S,
                         float* w, int64_t row_len, const uint32_t* rows,
                         int64_t s) {
  const int64_t r = cols.off.size(), total = s * r;
  const uint32_t* off = cols.off.data();
  const uint32_t* pos = cols.pos.data();
  BlockCursor ahead = PrefetchedCursor<1>(w, row_len, rows, s, r, off);
  for (int64_t i = 0; i < s; ++i) {
    float* row = w + rows[i] * row_len;
    const float* src = blk.e.data() + i * r;
    for (int64_t c = 0; c < r; ++c) {
      ahead.Prefetch<1>(w, off);
      float* e = row + off[c];
      for (int64_t k = 0; k < S; ++k) e[k] = src[k * total + pos[c]];
    }
  }
}

// The incremental schedule's re-hash of a hidden layer's touched nodes
// (ActiveLayer.rehash is the definition): each node's sketch [L*K + 1]
// follows its weights -- re-projected where its whole row changed (the
// first layer, and every layer under weight normalisation), moved by the
// change's projections where a block of it did, at a cost of the block
// times L*K -- and its codes are rewritten from the sketch with the
// common scale, which is renewed (every node recoded) where the longest
// node left its band (kernels.held_scale).  A moved sketch follows the
// definition's re-projection up to float32 rounding accumulated until the
// next full rebuild.  Threads that share a model race on the sketches and
// codes of the nodes they both touch, as on the weights (HOGWILD); the
// next full rebuild recomputes them all.
struct Rehasher {
  float* sketch = nullptr;      // [n, LK + 1]
  int32_t* tables = nullptr;    // [L, n]: the buffer selection reads
  float* scale = nullptr;       // [] the common scale (kernels.held_scale)
  const float* proj = nullptr;  // [n_in, LK]: each input's projections
  int64_t LK = 0, n = 0, n_in = 0;
  float target = 1.f, tolerance = 0.f;  // the scaled longest norm's band
  NodeCoder coder;

  float* Of(uint32_t node) const { return sketch + node * (LK + 1); }

  // Starts loading the sketches and codes of `s` nodes about to be
  // re-hashed: they lie at random places, and waiting for each in turn
  // was most of the re-hash's time.
  void Prefetch(const uint32_t* nodes, int64_t s) const {
    for (int64_t i = 0; i < s; ++i) {
      const float* sk = Of(nodes[i]);
      for (int64_t h = 0; h <= LK; h += 16) __builtin_prefetch(sk + h, 1, 3);
      __builtin_prefetch(sk + LK, 1, 3);
      const int64_t L = coder.L;
      for (int64_t l = 0; l < L; ++l) {
        __builtin_prefetch(tables + l * n + nodes[i], 1, 3);
      }
    }
  }

  void Recode(uint32_t node) const {
    coder.Codes(Of(node), Of(node)[LK], *scale, tables + node, n);
  }

  // After a step's re-hash: the scale is renewed, and every node recoded,
  // where the longest node's scaled norm left the band around `target`
  // (kernels.held_scale).
  void Rescale() const {
    float max_sq = 0.f;
    for (int64_t j = 0; j < n; ++j) max_sq = std::max(max_sq, Of(j)[LK]);
    const float longest = std::sqrt(max_sq), scaled = longest * *scale;
    if (scaled >= target * (1.f - tolerance) &&
        scaled <= std::min(target * (1.f + tolerance), 1.f)) {
      return;
    }
    *scale = target / (longest > 0.f ? longest : 1.f);
    for (int64_t j = 0; j < n; ++j) Recode(j);
  }

  // Re-projects the whole rows of `cnt` nodes (node j's at w + j row_len,
  // n_in entries `stride` apart) and recodes them.  Under weight
  // normalisation (`g`: the lengths slab, S slots) a sketch is the
  // effective weights' (g / ||v||) v.
  void Reproject(const uint32_t* nodes, int64_t cnt, const float* w,
                 int64_t row_len, int64_t stride, int64_t n_in,
                 const float* g, int64_t S) const {
    for (int64_t i0 = 0; i0 < cnt; i0 += kNodes) {
      const int64_t c = std::min(kNodes, cnt - i0);
      const float* rows[kNodes];
      float* outs[kNodes];
      for (int64_t u = 0; u < c; ++u) {
        rows[u] = w + nodes[i0 + u] * row_len;
        outs[u] = Of(nodes[i0 + u]);
      }
      SketchNodes(rows, c, stride, n_in, proj, LK, LK, outs);
      for (int64_t u = 0; u < c; ++u) {
        float* sk = outs[u];
        if (g) {  // (a zero row, NaN in the definition, hashes as zero)
          const float len = g[nodes[i0 + u] * S];
          const float f = sk[LK] > 0.f ? len / std::sqrt(sk[LK]) : 0.f;
          for (int64_t h = 0; h < LK; ++h) sk[h] *= f;
          sk[LK] = len * len;
        }
        Recode(nodes[i0 + u]);
      }
    }
  }

  // A block's nodes (`s` of `nodes`) changed on the same inputs `cols` (r
  // of them) from `old` to `now` ([s, r] each, row-major): each sketch
  // moves by its row's change's projections (for the block, one small
  // matrix product: ProjectRows) and its squared norm by the change of
  // squares, then its codes.  Overwrites `old` with the change.
  void MoveBlock(const uint32_t* nodes, int64_t s, const uint32_t* cols,
                 int64_t r, float* old, const float* now) const {
    for (int64_t i0 = 0; i0 < s; i0 += kNodes) {
      const int64_t c = std::min(kNodes, s - i0);
      const float* rows[kNodes];
      float* outs[kNodes];
      for (int64_t u = 0; u < c; ++u) {
        float* d = old + (i0 + u) * r;
        const float* nw = now + (i0 + u) * r;
        float dsq = 0.f;
        for (int64_t k = 0; k < r; ++k) {
          dsq += nw[k] * nw[k] - d[k] * d[k];
          d[k] = nw[k] - d[k];
        }
        rows[u] = d;
        outs[u] = Of(nodes[i0 + u]);
        // A running sum of squares may round below 0 as weights shrink.
        outs[u][LK] = std::max(outs[u][LK] + dsq, 0.f);
      }
      ProjectRows(rows, c, 1, r, proj, LK, n_in, cols, LK, true, outs);
      for (int64_t u = 0; u < c; ++u) Recode(nodes[i0 + u]);
    }
  }

  // Node `node`'s weights on the inputs `cols` (r of them) went from
  // `old` to `now`: its sketch moves by the change's projections (and its
  // squared norm by the change of squares), then its codes (MoveBlock for
  // one node whose inputs are its own).
  void Move(uint32_t node, const uint32_t* cols, const float* old,
            const float* now, int64_t r) const {
    float* sk = Of(node);
    float dsq = 0.f;
    for (int64_t c = 0; c < r; ++c) {
      const float d = now[c] - old[c];
      if (d == 0.f) continue;
      dsq += now[c] * now[c] - old[c] * old[c];
      const float* p = proj + cols[c] * LK;
#pragma omp simd
      for (int64_t h = 0; h < LK; ++h) sk[h] += d * p[h];
    }
    sk[LK] = std::max(sk[LK] + dsq, 0.f);
    Recode(node);
  }
};

// The network of a step: its layers (bias, weight normalisation) and, for
// the incremental schedule, the transform (a code of native.py's
// TRANSFORM_CODES) its re-hash computes codes with.
struct Network {
  bool bias = true, weight_norm = false, incremental = false;
  int32_t transform = 0;
  float target = 1.f, tolerance = 0.f;  // Rehasher's
};

// The model a step reads and updates.  Layouts (layer.py): first hidden
// layer w [n_1, S, D]; later hidden layers w [n_k, n_{k-1}, S]; output w
// [n_d, S, C]; biases and lengths [n, S] (output [C, S]); S = 3 (Adam:
// parameter, first, second moment) or 1 (SGD).  Every layer has a bias, or
// none does (`bias`); every layer is weight-normalised, or none is
// (`weight_norm`).  Under the incremental schedule each hidden layer has a
// Rehasher (`rehash`, else empty).
struct Model {
  int64_t depth = 0, D = 0, C = 0, S = 0;
  bool bias = true, weight_norm = false;
  std::vector<Slabs> slabs;       // depth + 1: the hidden layers, the output
  std::vector<LayerHash> hashes;  // depth
  std::vector<int64_t> budgets;   // depth: active-set sizes
  std::vector<Rehasher> rehash;   // depth, or empty
};

// The model from the remaining arguments -- per hidden layer its slabs (w,
// then b if `bias`, then g if `weight_norm`), proj, tail, offsets, bucket
// width, multipliers, tables, and under the incremental schedule its
// sketches [n, L*K + 1], the appended coordinates' projections [L*K, m]
// and the common scale []; then the output layer's slabs -- and the
// remaining results (every slab, then under the incremental schedule each
// hidden layer's tables, sketches and scale, aliased with the arguments),
// for inputs of D features.
inline ffi::Error ParseModel(const ffi::RemainingArgs& args,
                             const ffi::RemainingRets& rets,
                             ffi::Span<const int64_t> budgets, int64_t D,
                             const Network& net, Model* m) {
  const bool bias = net.bias, weight_norm = net.weight_norm;
  const int64_t depth = budgets.size();
  const int64_t P = 1 + bias + weight_norm;  // slabs per layer
  const int64_t H = net.incremental ? 9 : 6;  // hash arguments per layer
  const int64_t per_layer = P + H;            // arguments per hidden layer
  const int64_t slab_rets = P * (depth + 1);
  if (depth < 1 ||
      args.size() != static_cast<size_t>(per_layer * depth + P) ||
      rets.size() != static_cast<size_t>(
                         slab_rets + (net.incremental ? 3 * depth : 0))) {
    return ffi::Error::InvalidArgument(
        "need, per hidden layer, its slabs (w, then b with biases, then g "
        "under weight normalisation) and 6 hash arguments (9 under the "
        "incremental schedule), a result per slab (and the tables, "
        "sketches and scales under the incremental schedule) and a budget, "
        "and the output layer's slabs");
  }
  m->depth = depth;
  m->D = D;
  m->bias = bias;
  m->weight_norm = weight_norm;
  m->slabs.resize(depth + 1);
  m->hashes.resize(depth);
  m->rehash.assign(net.incremental ? depth : 0, Rehasher{});
  m->budgets.assign(budgets.begin(), budgets.end());
  for (int64_t k = 0; k <= depth; ++k) {
    if (auto e = GetSlabs(args, rets, per_layer * k, P * k, bias, weight_norm,
                          &m->slabs[k]);
        e.failure()) {
      return e;
    }
  }
  const int64_t S = m->slabs[0].dims[1];
  if (S != 1 && S != 3) {
    return ffi::Error::InvalidArgument(
        "slabs must have 3 slots (Adam) or 1 (SGD)");
  }
  m->S = S;
  // A bias or lengths slab of n entries must be [n, S].
  auto vector_ok = [&](int64_t k, int64_t n) -> ffi::Error {
    for (size_t j = 1; j < static_cast<size_t>(P); ++j) {
      SAMPLING_MLP_GET(v, args.get<ffi::Buffer<ffi::F32>>(per_layer * k + j));
      const auto d = v->dimensions();
      if (d[0] != n || d[1] != S) {
        return ffi::Error::InvalidArgument(
            "bias and lengths slabs must be [n, S] (output layer [C, S])");
      }
    }
    return ffi::Error::Success();
  };
  int64_t prev = D;
  for (int64_t k = 0; k < depth; ++k) {
    const size_t i = per_layer * k + P;
    SAMPLING_MLP_GET(proj, args.get<ffi::Buffer<ffi::F32>>(i));
    SAMPLING_MLP_GET(tail, args.get<ffi::Buffer<ffi::F32>>(i + 1));
    SAMPLING_MLP_GET(off, args.get<ffi::Buffer<ffi::F32>>(i + 2));
    SAMPLING_MLP_GET(width, args.get<ffi::BufferR0<ffi::F32>>(i + 3));
    SAMPLING_MLP_GET(mult, args.get<ffi::Buffer<ffi::S32>>(i + 4));
    SAMPLING_MLP_GET(tables, args.get<ffi::Buffer<ffi::S32>>(i + 5));
    LayerHash& h = m->hashes[k];
    if (auto e = MakeHash(*proj, *tail, *off, *width, *mult, *tables, &h);
        e.failure()) {
      return e;
    }
    const int64_t* d = m->slabs[k].dims;
    const int64_t n = d[0];
    const bool shape_ok = k == 0 ? (d[1] == S && d[2] == D)
                                 : (d[1] == prev && d[2] == S);
    if (!shape_ok || h.n != n || h.n_in != prev || budgets[k] < 1 ||
        budgets[k] > n) {
      return ffi::Error::InvalidArgument(
          "hidden layer slabs, tables and budgets do not fit together");
    }
    if (auto e = vector_ok(k, n); e.failure()) return e;
    if (net.incremental) {
      const int64_t LK = h.L * h.K;
      SAMPLING_MLP_GET(sketch, args.get<ffi::Buffer<ffi::F32>>(i + 6));
      SAMPLING_MLP_GET(ptail, args.get<ffi::Buffer<ffi::F32>>(i + 7));
      SAMPLING_MLP_GET(scale, args.get<ffi::BufferR0<ffi::F32>>(i + 8));
      const size_t o = slab_rets + 3 * k;
      SAMPLING_MLP_GET(rt, rets.get<ffi::Buffer<ffi::S32>>(o));
      SAMPLING_MLP_GET(rs, rets.get<ffi::Buffer<ffi::F32>>(o + 1));
      SAMPLING_MLP_GET(rc, rets.get<ffi::BufferR0<ffi::F32>>(o + 2));
      const auto pd = ptail->dimensions();
      if (sketch->element_count() != static_cast<size_t>(n * (LK + 1)) ||
          pd.size() != 2 || pd[0] != LK || pd[1] < 1 ||
          (net.transform == 2 && pd[1] != 1) || net.transform < 0 ||
          net.transform > 2) {
        return ffi::Error::InvalidArgument(
            "the incremental schedule needs sketches [n, L*K + 1], the "
            "appended coordinates' projections [L*K, m] ([L*K, 1] for "
            "simple_lsh) and a transform code 0, 1 or 2");
      }
      Rehasher& rh = m->rehash[k];
      rh.tables = rt.value()->typed_data();
      AliasOrCopy(*tables, rh.tables);
      rh.sketch = rs.value()->typed_data();
      AliasOrCopy(*sketch, rh.sketch);
      h.tables = rh.tables;  // selection reads the codes the step rewrites
      rh.scale = rc.value()->typed_data();
      *rh.scale = *scale->typed_data();
      rh.proj = h.proj;
      rh.LK = LK;
      rh.n = n;
      rh.n_in = h.n_in;
      rh.target = net.target;
      rh.tolerance = net.tolerance;
      rh.coder = NodeCoder{net.transform, pd[1], ptail->typed_data(), pd[1],
                           h.offsets, h.bucket_width, h.mult, h.L, h.K};
    }
    prev = n;
  }
  const int64_t* od = m->slabs[depth].dims;
  m->C = od[2];
  if (od[0] != prev || od[1] != S) {
    return ffi::Error::InvalidArgument("output slab must be [n_d, S, C]");
  }
  return vector_ok(depth, m->C);
}

// One example's forward pass: per hidden layer its active set, and the
// pre-activations z and activations a of its nodes; the gathered weights
// (blocks: hidden layers k >= 1 [s_k x s_{k-1}], the output layer's rows of
// the last active set [s_d x C], `slots` slots each: S to update them in
// place, 1 to read them); the logits' gradient dl = softmax - onehot and
// the loss.  Under weight normalisation a hidden node's z is
// g / ||v|| * (v . input) (+ b), with ||v|| over its whole row (so layers
// k >= 1 read whole rows in place rather than a gathered block), and each
// logit's weights are normalised over all n_d rows; `dot`, `norm` and
// `scale` keep v . input, ||v|| and g / ||v|| for the backward pass.
struct Trace {
  std::vector<std::vector<uint32_t>> idx;
  std::vector<std::vector<float>> z, a, dz;  // dz: the batch kernel's
  std::vector<std::vector<float>> dot, norm, scale;  // weight norm: depth + 1
  std::vector<Block> blocks;                 // depth + 1; [0] unused
  std::vector<float> dl;                     // [C]
  std::vector<int32_t> colliding;            // [depth]
  std::vector<Columns> cols;                 // depth; [0] unused
  float loss = 0.f;
};

// v . x and ||v|| of a weight-normalised node's row of n entries `stride`
// apart, reading x on `rows` (nullptr: x is dense, rows 0..r-1).
inline void NormedDot(const float* v, int64_t n, int64_t stride,
                      const float* x, const uint32_t* rows, int64_t r,
                      float* dot, float* norm) {
  float acc = 0.f;
  if (rows == nullptr && stride == 1) {
    acc = Dot(v, x, r);
  } else {
    for (int64_t c = 0; c < r; ++c) {
      acc += x[c] * v[(rows ? rows[c] : c) * stride];
    }
  }
  const float sq = SquaredNorm(v, n, stride);
  *dot = acc;
  *norm = std::sqrt(sq);
}

inline void Forward(const Model& m, const Activation& act, const float* x,
                    int32_t y, const uint32_t* seeds, int64_t slots,
                    Trace* t) {
  const int64_t depth = m.depth, D = m.D, C = m.C, S = m.S;
  const bool wn = m.weight_norm;
  t->idx.resize(depth);
  t->z.resize(depth);
  t->a.resize(depth);
  t->blocks.resize(depth + 1);
  t->cols.resize(depth);
  t->colliding.resize(depth);
  if (wn) {
    t->dot.resize(depth + 1);
    t->norm.resize(depth + 1);
    t->scale.resize(depth + 1);
  }
  const float* in = x;
  const uint32_t* in_rows = nullptr;
  int64_t r = D;
  for (int64_t k = 0; k < depth; ++k) {
    const int64_t s = m.budgets[k];
    t->idx[k].resize(s);
    t->z[k].resize(s);
    t->a[k].resize(s);
    t->colliding[k] = m.hashes[k].Select(in, in_rows, r, seeds[k], s,
                                         t->idx[k].data());
    PhaseTimer timer(kForward);
    const float* w = m.slabs[k].w;
    const float* b = m.slabs[k].b;
    const float* g = m.slabs[k].g;
    const int64_t row_len = m.slabs[k].dims[1] * m.slabs[k].dims[2];
    const uint32_t* rows = t->idx[k].data();
    float* zk = t->z[k].data();
    if (wn) {  // whole rows in place: the norms read them all
      const int64_t n_in = k == 0 ? D : m.slabs[k].dims[1];
      const int64_t stride = k == 0 ? 1 : S;
      t->dot[k].resize(s);
      t->norm[k].resize(s);
      t->scale[k].resize(s);
      for (int64_t i = 0; i < s; ++i) {
        NormedDot(w + rows[i] * row_len, n_in, stride, in, in_rows, r,
                  &t->dot[k][i], &t->norm[k][i]);
        t->scale[k][i] = g[rows[i] * S] / t->norm[k][i];
        zk[i] = t->scale[k][i] * t->dot[k][i];
      }
    } else if (k == 0) {  // whole rows, two at a time
      int64_t i = 0;
      for (; i + 2 <= s; i += 2) {
        Dot2(w + rows[i] * row_len, w + rows[i + 1] * row_len, in, D, &zk[i],
             &zk[i + 1]);
      }
      if (i < s) zk[i] = Dot(w + rows[i] * row_len, in, D);
    } else {  // the [s, r] block, gathered (slot-last layout)
      Columns& cols = t->cols[k];
      cols.Set(in_rows, r, S);
      Block& blk = t->blocks[k];
      blk.Resize(slots, s * r);
      GatherBlock(w, row_len, rows, s, cols, slots, blk);
      for (int64_t i = 0; i < s; ++i) zk[i] = Dot(blk.slot(0) + i * r, in, r);
    }
    for (int64_t i = 0; i < s; ++i) {
      if (b) zk[i] += b[rows[i] * S];
      t->a[k][i] = act(zk[i]);
    }
    in = t->a[k].data();
    in_rows = t->idx[k].data();
    r = s;
  }
  // The output layer: logits, loss and dlogits.
  PhaseTimer timer(kForward);
  const float* ow = m.slabs[depth].w;
  const float* ob = m.slabs[depth].b;
  Block& out = t->blocks[depth];
  out.Resize(slots, r * C);
  std::vector<float>& logits = t->dl;
  logits.assign(C, 0.f);
  for (int64_t i = 0; i < r; ++i) {
    Gather(ow + in_rows[i] * S * C, C, C, slots, out, i * C);
    const float* row = out.slot(0) + i * C;
    for (int64_t c = 0; c < C; ++c) logits[c] += in[i] * row[c];
  }
  if (wn) {  // each class's weights normalised over all n_d rows
    const int64_t n_d = m.slabs[depth].dims[0];
    const float* og = m.slabs[depth].g;
    std::vector<float>& norm = t->norm[depth];
    norm.assign(C, 0.f);
    for (int64_t j = 0; j < n_d; ++j) {
      const float* row = ow + j * S * C;
      for (int64_t c = 0; c < C; ++c) norm[c] += row[c] * row[c];
    }
    t->dot[depth] = logits;
    t->scale[depth].resize(C);
    for (int64_t c = 0; c < C; ++c) {
      norm[c] = std::sqrt(norm[c]);
      t->scale[depth][c] = og[c * S] / norm[c];
      logits[c] *= t->scale[depth][c];
    }
  }
  if (ob) {
    for (int64_t c = 0; c < C; ++c) logits[c] += ob[c * S];
  }
  const float mx = *std::max_element(logits.begin(), logits.end());
  float total = 0.f;
  for (int64_t c = 0; c < C; ++c) total += std::exp(logits[c] - mx);
  const float lse = mx + std::log(total);
  t->loss = lse - logits[y];
  for (int64_t c = 0; c < C; ++c) logits[c] = std::exp(logits[c] - lse);
  logits[y] -= 1.f;  // now dl
}

// The weight-normalised update of one node (Salimans and Kingma 2016,
// eq. 3): with w = g v / ||v|| and G the gradient of w, dL/dg = G . v /
// ||v|| and dL/dv = (g / ||v||) G - (g dL/dg / ||v||^2) v, dense along the
// row.  Here G = dz * x on `rows` (nullptr: dense x of n entries), so
// G . v = dz * dot; the row's n entries lie `stride` apart with their
// moments `mstride` after them (Optimizer::Flat's planes for the first
// layer and the output layer's classes, interleaved slots after it).
// `grad` is scratch of n floats.  Returns dL/dg.
inline float NormedUpdate(const Optimizer& opt, float* v, int64_t n,
                          int64_t stride, int64_t mstride, const float* x,
                          const uint32_t* rows, int64_t r, float dz, float dot,
                          float norm, float scale, float* grad) {
  const float gg = dz * dot / norm;
  const float coef = scale * gg / norm;
  const float a = scale * dz;
  for (int64_t j = 0; j < n; ++j) grad[j] = -coef * v[j * stride];
  for (int64_t c = 0; c < r; ++c) grad[rows ? rows[c] : c] += a * x[c];
  if (stride == 1) {
    opt.Flat(v, v + mstride, v + 2 * mstride, grad, n);
  } else {  // stride == S: the slots interleaved
    opt.Interleaved(v, grad, n);
  }
  return gg;
}

// One training step of ALSH-APPROX at batch size 1, for any depth, in
// place: the forward pass (Forward); backpropagation through the active
// nodes (every gradient from the weights before the step), and the
// optimizer on every weight the example touched: the active rows of the
// first layer (whole rows: its input is dense), the [active x previous
// active] blocks after it, the output layer's rows of the last active set,
// and all biases on the way.  Under weight normalisation the active nodes'
// whole rows and lengths are updated (NormedUpdate), and the output layer
// whole (its normalisation reads every row).  That is what ALSH.train_step
// (method.py) does with jax.numpy at batch size 1, in one pass.
// Thread-safe in itself (its buffers are per thread); threads that share a
// model race on the weights they both touch (HOGWILD, see
// AlshTrainHogwild).
inline void Step(const Model& m, const Optimizer& opt, const Activation& act,
                 const float* x, int32_t y, const uint32_t* seeds,
                 float* loss, int32_t* colliding) {
  thread_local Trace t;
  thread_local std::vector<float> da, dz, grad, old;
  const int64_t depth = m.depth, D = m.D, C = m.C, S = m.S;
  const bool wn = m.weight_norm;
  const int64_t ms = S > 1 ? 1 : 0;  // 0: SGD keeps no moments
  Forward(m, act, x, y, seeds, S, &t);
  *loss = t.loss;
  std::copy_n(t.colliding.data(), depth, colliding);
  const float* in = t.a[depth - 1].data();
  const uint32_t* in_rows = t.idx[depth - 1].data();
  const int64_t r = m.budgets[depth - 1];
  const std::vector<float>& dl = t.dl;
  // The output layer: the gradient `da` of its input (weights before the
  // update), then its update.
  float* ow = m.slabs[depth].w;
  float* ob = m.slabs[depth].b;
  Block& out = t.blocks[depth];
  PhaseTimer timer(kBackward);
  da.resize(r);
  if (wn) {
    // Class c's weights are a column of v [n_d, C], normalised over all
    // n_d rows: NormedUpdate's gradient along each column, then Adam row
    // by row (each row holds its classes' slots as planes of C).
    const int64_t n_d = m.slabs[depth].dims[0];
    const float* sc = t.scale[depth].data();
    for (int64_t i = 0; i < r; ++i) {
      const float* row = out.slot(0) + i * C;
      float acc = 0.f;
      for (int64_t c = 0; c < C; ++c) acc += row[c] * sc[c] * dl[c];
      da[i] = acc;
    }
    timer.Switch(kUpdate);
    float* og = m.slabs[depth].g;
    grad.resize(n_d * C);
    for (int64_t c = 0; c < C; ++c) {
      const float gg = dl[c] * t.dot[depth][c] / t.norm[depth][c];
      const float coef = sc[c] * gg / t.norm[depth][c];
      for (int64_t j = 0; j < n_d; ++j) {
        grad[j * C + c] = -coef * ow[j * S * C + c];
      }
      for (int64_t i = 0; i < r; ++i) {
        grad[in_rows[i] * C + c] += sc[c] * dl[c] * in[i];
      }
      opt.Scalar(og + c * S, gg);
    }
    for (int64_t j = 0; j < n_d; ++j) {  // row j: its C classes' slots
      float* row = ow + j * S * C;
      opt.Flat(row, row + ms * C, row + 2 * ms * C, grad.data() + j * C, C);
    }
  } else {
    grad.resize(r * C);
    for (int64_t i = 0; i < r; ++i) {
      const float* row = out.slot(0) + i * C;
      float acc = 0.f;
      for (int64_t c = 0; c < C; ++c) {
        acc += row[c] * dl[c];
        grad[i * C + c] = in[i] * dl[c];
      }
      da[i] = acc;
    }
    timer.Switch(kUpdate);
    opt.Flat(out.slot(0), out.slot(ms), out.slot(S - 1), grad.data(), r * C);
    for (int64_t i = 0; i < r; ++i) {
      Scatter(out, i * C, C, C, S, ow + in_rows[i] * S * C);
    }
  }
  if (ob) {
    for (int64_t c = 0; c < C; ++c) opt.Scalar(ob + c * S, dl[c]);
  }

  // Backward through the hidden layers, each updated once its input
  // gradient has been read from its weights.
  for (int64_t k = depth - 1; k >= 0; --k) {
    const int64_t s = m.budgets[k];
    timer.Switch(kBackward);
    dz.resize(s);
    for (int64_t i = 0; i < s; ++i) {
      dz[i] = da[i] * act.Grad(t.z[k][i], t.a[k][i]);
    }
    float* w = m.slabs[k].w;
    float* b = m.slabs[k].b;
    const int64_t row_len = m.slabs[k].dims[1] * m.slabs[k].dims[2];
    const uint32_t* rows = t.idx[k].data();
    if (!m.rehash.empty()) m.rehash[k].Prefetch(rows, s);
    if (wn) {
      // Each node's whole row: its part of the input gradient (weights
      // before its update), then its update and its length's.
      const int64_t n_in = k == 0 ? D : m.slabs[k].dims[1];
      const int64_t stride = k == 0 ? 1 : S;
      const int64_t rp = k == 0 ? D : m.budgets[k - 1];
      const float* xin = k == 0 ? x : t.a[k - 1].data();
      const uint32_t* prev = k == 0 ? nullptr : t.idx[k - 1].data();
      float* g = m.slabs[k].g;
      if (k > 0) da.assign(rp, 0.f);
      grad.resize(n_in);
      for (int64_t i = 0; i < s; ++i) {
        float* v = w + rows[i] * row_len;
        const float sd = t.scale[k][i] * dz[i];
        if (k > 0) {
          for (int64_t c = 0; c < rp; ++c) da[c] += sd * v[prev[c] * S];
        }
        timer.Switch(kUpdate);
        const float gg = NormedUpdate(
            opt, v, n_in, stride, k == 0 ? ms * D : ms, xin, prev, rp, dz[i],
            t.dot[k][i], t.norm[k][i], t.scale[k][i], grad.data());
        opt.Scalar(g + rows[i] * S, gg);
        timer.Switch(kBackward);
      }
      if (!m.rehash.empty()) {
        timer.Switch(kRehash);
        m.rehash[k].Reproject(rows, s, w, row_len, stride, n_in, g, S);
        m.rehash[k].Rescale();
      }
    } else if (k == 0) {  // gradient and update in one pass over each row
      timer.Switch(kUpdate);
      int64_t i = 0;
      for (; i + 2 <= s; i += 2) {
        opt.Row2(w + rows[i] * row_len, w + rows[i + 1] * row_len, D, x,
                 dz[i], dz[i + 1], D);
      }
      if (i < s) opt.Row(w + rows[i] * row_len, D, x, dz[i], D);
      if (!m.rehash.empty()) {
        timer.Switch(kRehash);
        m.rehash[k].Reproject(rows, s, w, row_len, 1, D, nullptr, S);
        m.rehash[k].Rescale();
      }
    } else {
      const int64_t rp = m.budgets[k - 1];
      const float* ap = t.a[k - 1].data();
      Block& blk = t.blocks[k];
      const float* pw = blk.slot(0);
      da.assign(rp, 0.f);
      grad.resize(s * rp);
      for (int64_t i = 0; i < s; ++i) {
        for (int64_t c = 0; c < rp; ++c) {
          da[c] += dz[i] * pw[i * rp + c];
          grad[i * rp + c] = dz[i] * ap[c];
        }
      }
      timer.Switch(kUpdate);
      if (!m.rehash.empty()) old.assign(blk.slot(0), blk.slot(0) + s * rp);
      opt.Flat(blk.slot(0), blk.slot(ms), blk.slot(S - 1), grad.data(),
               s * rp);
      ScatterBlock(blk, t.cols[k], S, w, row_len, rows, s);
      if (!m.rehash.empty()) {  // block (i, c) is node rows[i], input prev[c]
        timer.Switch(kRehash);
        m.rehash[k].MoveBlock(rows, s, t.idx[k - 1].data(), rp, old.data(),
                              blk.slot(0));
        m.rehash[k].Rescale();
      }
    }
    if (b) {
      timer.Switch(kUpdate);
      for (int64_t i = 0; i < s; ++i) opt.Scalar(b + rows[i] * S, dz[i]);
    }
  }
}

}  // namespace sampling_mlp_alsh

#endif  // SAMPLING_MLP_METHODS_ALSH_CSRC_ALSH_STEP_H_
