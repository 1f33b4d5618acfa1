// CPU kernels for ALSH-APPROX at batch size 1, called from JAX through the
// XLA FFI (see sampling_mlp/native.py, which compiles and registers them).
//
// Under XLA on a CPU, gathering a few rows of a large matrix, updating them
// and scattering them back runs as element-by-element loops, and every step
// at batch size 1 pays for three passes over the touched rows.  These
// kernels read and update the active rows in place, in one pass.  They
// compute what sampling_mlp/alsh.py computes with jax.numpy -- the same
// hash codes and the same tie-breaking, bit for bit; the same sums and the
// same Adam update up to float32 rounding -- and tests/test_native.py
// compares the two.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

// MurmurHash3 finaliser of (index * golden ratio) ^ seed, top 24 bits scaled
// into [0, 1/2); must match alsh.tie_noise bit for bit.
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

// sum_i unit[i] * proj[row_i, :LK] for LK <= kLanes, into out [LK].  The
// fixed-width accumulator stays in registers and vectorises fully; it reads
// a few entries past each row (into the next one), in lanes that are never
// used, so the buffer's last row is done separately.
void ProjectNarrow(const float* __restrict__ unit, const uint32_t* rows,
                   int64_t r, const float* __restrict__ proj, int64_t n_in,
                   int64_t LK, float* __restrict__ out) {
  float acc[kLanes] = {};
  const auto start = [&](int64_t i) { return (rows ? rows[i] : i) * LK; };
  for (int64_t i = 0; i < r; ++i) {
    const int64_t s = start(i);
    if (s + kLanes > n_in * LK) continue;
    const float u = unit[i];
    for (int64_t c = 0; c < kLanes; ++c) acc[c] += u * proj[s + c];
  }
  for (int64_t i = 0; i < r; ++i) {
    const int64_t s = start(i);
    if (s + kLanes <= n_in * LK) continue;
    for (int64_t c = 0; c < LK; ++c) acc[c] += unit[i] * proj[s + c];
  }
  for (int64_t c = 0; c < LK; ++c) out[c] += acc[c];
}

// Bucket codes of one query in each of L tables, as
// alsh.sparse_query_codes computes them: the query a (non-zero only on
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

// The active set from the query's codes q [L] and the tables t [L, n]:
// every node's collision count plus its tie noise is its score, and the
// `budget` largest scores are written to out in lax.top_k's order
// (descending score, ties by lower index), as alsh.select_active does.  A
// non-negative float's bits order like the float, so (score bits, ~index)
// packed into a uint64 is one integer key with exactly that order.  Nodes
// above the threshold level (the count at which the budget runs out) are
// all taken, nodes at it compete by their noise, and only those are
// ordered.  Returns the number of nodes colliding in at least one table.
int32_t SelectTop(const int32_t* q, const int32_t* t, int64_t L, int64_t n,
                  uint32_t seed, int64_t budget, uint32_t* out) {
  thread_local std::vector<int32_t> counts;
  thread_local std::vector<uint32_t> bits;
  thread_local std::vector<uint8_t> take;
  thread_local std::vector<uint64_t> cand;
  thread_local std::vector<int64_t> hist;
  counts.assign(n, 0);
  bits.resize(n);
  take.resize(n + 8);
  int32_t* __restrict__ c = counts.data();
  uint32_t* __restrict__ sb = bits.data();
  uint8_t* __restrict__ tk = take.data();
  for (int64_t l = 0; l < L; ++l) {
    const int32_t ql = q[l];
    const int32_t* __restrict__ row = t + l * n;
    for (int64_t j = 0; j < n; ++j) c[j] += (row[j] == ql);
  }
  hist.assign(L + 1, 0);
  for (int64_t v = 0; v <= L; ++v) {  // L + 1 vectorised passes
    int32_t h = 0;
    for (int64_t j = 0; j < n; ++j) h += (c[j] == v);
    hist[v] = h;
  }
  int64_t above = 0, level = L;
  while (above + hist[level] < budget) above += hist[level--];
  for (int64_t j = 0; j < n; ++j) {
    const float score = static_cast<float>(c[j]) +
                        TieNoise(seed, static_cast<uint32_t>(j));
    uint32_t u;
    std::memcpy(&u, &score, sizeof u);
    sb[j] = u;
  }
  // Nodes at the threshold level share their count, so their order is their
  // noise's, which is uniform: a cutoff that about twice the needed number
  // of them pass leaves few candidates to order.  If too few pass
  // (unlikely), the second pass takes all of them.
  const int64_t need = budget - above;
  float cut = 0.f;
  if (2 * need < hist[level]) {
    cut = 0.5f * (1.f - 2.f * static_cast<float>(need) / hist[level]);
  }
  for (int pass = 0; pass < 2; ++pass) {
    const float cut_score = static_cast<float>(level) + cut;
    uint32_t cut_bits;
    std::memcpy(&cut_bits, &cut_score, sizeof cut_bits);
    for (int64_t j = 0; j < n; ++j) {
      tk[j] = (c[j] > level) | ((c[j] == level) & (sb[j] >= cut_bits));
    }
    std::fill_n(tk + n, 8, 0);
    cand.clear();
    for (int64_t j0 = 0; j0 < n; j0 += 8) {  // skip 8 rejected at a time
      uint64_t word;
      std::memcpy(&word, tk + j0, sizeof word);
      if (word == 0) continue;
      for (int64_t j = j0; j < std::min(j0 + 8, n); ++j) {
        if (tk[j]) {
          cand.push_back((static_cast<uint64_t>(sb[j]) << 32) |
                         (0xFFFFFFFFu - static_cast<uint32_t>(j)));
        }
      }
    }
    if (static_cast<int64_t>(cand.size()) >= budget) break;
    cut = 0.f;
  }
  const auto top = cand.begin() + budget;
  if (top != cand.end()) {
    std::nth_element(cand.begin(), top - 1, cand.end(),
                     std::greater<uint64_t>());
  }
  std::sort(cand.begin(), top, std::greater<uint64_t>());
  for (int64_t r = 0; r < budget; ++r) {
    out[r] = 0xFFFFFFFFu - static_cast<uint32_t>(cand[r] & 0xFFFFFFFFu);
  }
  return static_cast<int32_t>(n - hist[0]);
}

// Active set of one query (a layer's input: `vals` on `rows`, or dense when
// `rows` is empty): QueryCodes, then SelectTop.
ffi::Error SelectActiveImpl(
    ffi::Buffer<ffi::F32> vals, ffi::Buffer<ffi::U32> rows,
    ffi::Buffer<ffi::F32> proj, ffi::Buffer<ffi::F32> tail,
    ffi::Buffer<ffi::F32> offsets, ffi::BufferR0<ffi::F32> bucket_width,
    ffi::Buffer<ffi::S32> mult, ffi::Buffer<ffi::S32> tables,
    ffi::BufferR0<ffi::U32> seed, ffi::ResultBuffer<ffi::U32> idx,
    ffi::ResultBufferR0<ffi::S32> num_colliding) {
  const auto tdims = tables.dimensions();
  const auto mdims = mult.dimensions();
  const auto pdims = proj.dimensions();
  if (tdims.size() != 2 || mdims.size() != 2 || pdims.size() != 2 ||
      mdims[0] != tdims[0] || pdims[1] != mdims[0] * mdims[1]) {
    return ffi::Error::InvalidArgument(
        "need tables [L, n], multipliers [L, K] and projections [n_in, L*K]");
  }
  const int64_t L = tdims[0], n = tdims[1], K = mdims[1], n_in = pdims[0];
  const int64_t budget = idx->element_count();
  const int64_t r = vals.element_count();
  const bool sparse = rows.element_count() > 0;
  if (budget < 1 || budget > n) {
    return ffi::Error::InvalidArgument("need 1 <= budget <= n");
  }
  if (sparse ? rows.element_count() != static_cast<size_t>(r) : r != n_in) {
    return ffi::Error::InvalidArgument("query values do not match its rows");
  }
  if (sparse) {
    for (int64_t i = 0; i < r; ++i) {
      if (rows.typed_data()[i] >= n_in) {
        return ffi::Error::InvalidArgument("query row out of range");
      }
    }
  }
  thread_local std::vector<int32_t> q;
  q.resize(L);
  QueryCodes(vals.typed_data(), sparse ? rows.typed_data() : nullptr, r,
             proj.typed_data(), n_in, tail.typed_data(),
             offsets.element_count() ? offsets.typed_data() : nullptr,
             *bucket_width.typed_data(), mult.typed_data(), L, K, q.data());
  const int32_t colliding = SelectTop(q.data(), tables.typed_data(), L, n,
                                      *seed.typed_data(), budget,
                                      idx->typed_data());
  *num_colliding->typed_data() = colliding;
  return ffi::Error::Success();
}

// Checks a slab w [n, S, D] and row indices into it; with `optimizer`, also
// that S is 3 (Adam: parameter, first and second moment) or 1 (SGD).  On
// success writes n, S, D to dims.
ffi::Error CheckSlab(const ffi::Buffer<ffi::F32>& w,
                     const ffi::Buffer<ffi::U32>& rows, bool optimizer,
                     int64_t dims[3]) {
  const auto wd = w.dimensions();
  if (wd.size() != 3) return ffi::Error::InvalidArgument("w must be [n, S, D]");
  if (optimizer && wd[1] != 1 && wd[1] != 3) {
    return ffi::Error::InvalidArgument(
        "slabs must have 3 slots (Adam) or 1 (SGD)");
  }
  const uint32_t* ip = rows.typed_data();
  for (size_t r = 0; r < rows.element_count(); ++r) {
    if (ip[r] >= wd[0]) {
      return ffi::Error::InvalidArgument("row index out of range");
    }
  }
  std::copy_n(wd.begin(), 3, dims);
  return ffi::Error::Success();
}

// z[r] = <w[idx[r], 0, :], a> + b[idx[r], 0] for slabs w [n, S, D], b [n, S].
ffi::Error RowsMatvecImpl(ffi::Buffer<ffi::F32> w, ffi::Buffer<ffi::F32> b,
                          ffi::Buffer<ffi::U32> idx, ffi::Buffer<ffi::F32> a,
                          ffi::ResultBuffer<ffi::F32> z) {
  int64_t dims[3];
  if (auto e = CheckSlab(w, idx, false, dims); e.failure()) return e;
  const int64_t S = dims[1], D = dims[2];
  const int64_t s = idx.element_count();
  const float* wp = w.typed_data();
  const float* bp = b.typed_data();
  const uint32_t* ip = idx.typed_data();
  float* zp = z->typed_data();
  for (int64_t r = 0; r < s; ++r) {
    const int64_t j = ip[r];
    const float* row = wp + j * S * D;
    zp[r] = Dot(row, a.typed_data(), D) + bp[j * S];
  }
  return ffi::Error::Success();
}

// The optimizer of the touched rows: lazy Adam (slots p, m, v) or SGD
// (slot p).  The bias corrections are folded into the step size and epsilon
// (Kingma and Ba 2015, Sec. 2): lr * (m / c1) / (sqrt(v / c2) + eps) equals
// (lr sqrt(c2) / c1) * m / (sqrt(v) + eps sqrt(c2)), with one square root and
// one division per weight instead of three divisions.
struct Optimizer {
  bool adam;
  float lr, b1, b2, step, eps;  // step = lr sqrt(c2) / c1, eps = eps sqrt(c2)

  Optimizer(int64_t slots, int32_t count, float lr_, float b1_, float b2_,
            float eps_)
      : adam(slots == 3), lr(lr_), b1(b1_), b2(b2_) {
    const double t = count;
    const double c1 = 1.0 - std::pow(static_cast<double>(b1_), t);
    const double c2 = 1.0 - std::pow(static_cast<double>(b2_), t);
    step = static_cast<float>(lr_ * std::sqrt(c2) / c1);
    eps = static_cast<float>(eps_ * std::sqrt(c2));
  }

  // Updates D entries whose slots are `stride` apart (p[d], p[d + stride],
  // p[d + 2 stride]) with gradient g[d] = scale * x[d].
  void Row(float* __restrict__ p, int64_t stride, const float* __restrict__ x,
           float scale, int64_t D) const {
    if (!adam) {
      const float s = lr * scale;
      for (int64_t d = 0; d < D; ++d) p[d] -= s * x[d];
      return;
    }
    float* __restrict__ m = p + stride;
    float* __restrict__ v = p + 2 * stride;
    const float ob1 = 1.f - b1, ob2 = 1.f - b2;
    for (int64_t d = 0; d < D; ++d) {
      const float g = scale * x[d];
      const float md = b1 * m[d] + ob1 * g;
      const float vd = b2 * v[d] + ob2 * (g * g);
      m[d] = md;
      v[d] = vd;
      p[d] -= step * md / (std::sqrt(vd) + eps);
    }
  }

  // One scalar entry (slots stride apart) with gradient g.
  void Scalar(float* p, int64_t stride, float g) const {
    if (!adam) {
      p[0] -= lr * g;
      return;
    }
    const float md = b1 * p[stride] + (1.f - b1) * g;
    const float vd = b2 * p[2 * stride] + (1.f - b2) * (g * g);
    p[stride] = md;
    p[2 * stride] = vd;
    p[0] -= step * md / (std::sqrt(vd) + eps);
  }
};

// XLA aliases each output with its input, so the update is in place; should
// it not, the input is copied first.
void AliasOrCopy(const ffi::Buffer<ffi::F32>& in, float* out) {
  if (out != in.typed_data()) {
    std::copy_n(in.typed_data(), in.element_count(), out);
  }
}

// In place, the active rows idx of the slabs w [n, S, D] and b [n, S], with
// gradients outer(dz, a) and dz.
ffi::Error RowsUpdateImpl(ffi::Buffer<ffi::F32> w_in, ffi::Buffer<ffi::F32> b_in,
                          ffi::Buffer<ffi::U32> idx, ffi::Buffer<ffi::F32> dz,
                          ffi::Buffer<ffi::F32> a, ffi::BufferR0<ffi::S32> count,
                          float lr, float b1, float b2, float eps,
                          ffi::ResultBuffer<ffi::F32> w,
                          ffi::ResultBuffer<ffi::F32> b) {
  int64_t dims[3];
  if (auto e = CheckSlab(w_in, idx, true, dims); e.failure()) return e;
  const int64_t S = dims[1], D = dims[2];
  float* wp = w->typed_data();
  float* bp = b->typed_data();
  AliasOrCopy(w_in, wp);
  AliasOrCopy(b_in, bp);
  const Optimizer opt(S, *count.typed_data(), lr, b1, b2, eps);
  const uint32_t* ip = idx.typed_data();
  const int64_t s = idx.element_count();
  const float* g = dz.typed_data();
  for (int64_t r = 0; r < s; ++r) {
    const int64_t j = ip[r];
    opt.Row(wp + j * S * D, D, a.typed_data(), g[r], D);
    opt.Scalar(bp + j * S, 1, g[r]);
  }
  return ffi::Error::Success();
}

// The output layer at batch size 1, from the active rows of its input:
// logits = a @ w[rows, 0] + b[:, 0], the softmax cross-entropy with label y,
// the gradient of the loss with respect to a (with the weights before the
// update), and the update of w[rows] (gradient outer(a, dlogits)) and of b
// (gradient dlogits), in place.  w [n, S, C], b [C, S].
ffi::Error OutputStepImpl(ffi::Buffer<ffi::F32> w_in, ffi::Buffer<ffi::F32> b_in,
                          ffi::Buffer<ffi::U32> rows, ffi::Buffer<ffi::F32> a,
                          ffi::BufferR0<ffi::S32> label,
                          ffi::BufferR0<ffi::S32> count, float lr, float b1,
                          float b2, float eps, ffi::ResultBuffer<ffi::F32> w,
                          ffi::ResultBuffer<ffi::F32> b,
                          ffi::ResultBufferR0<ffi::F32> loss,
                          ffi::ResultBuffer<ffi::F32> da) {
  int64_t dims[3];
  if (auto e = CheckSlab(w_in, rows, true, dims); e.failure()) return e;
  const int64_t S = dims[1], C = dims[2];
  const int64_t s = rows.element_count();
  const int32_t y = *label.typed_data();
  if (y < 0 || y >= C) {
    return ffi::Error::InvalidArgument("label out of range [0, num_classes)");
  }
  float* wp = w->typed_data();
  float* bp = b->typed_data();
  AliasOrCopy(w_in, wp);
  AliasOrCopy(b_in, bp);
  const uint32_t* ip = rows.typed_data();
  const float* ap = a.typed_data();
  thread_local std::vector<float> logits;
  logits.resize(C);
  for (int64_t c = 0; c < C; ++c) logits[c] = bp[c * S];
  for (int64_t r = 0; r < s; ++r) {
    const float* row = wp + ip[r] * S * C;
    for (int64_t c = 0; c < C; ++c) logits[c] += ap[r] * row[c];
  }
  const float mx = *std::max_element(logits.begin(), logits.end());
  float total = 0.f;
  for (int64_t c = 0; c < C; ++c) total += std::exp(logits[c] - mx);
  const float lse = mx + std::log(total);
  *loss->typed_data() = lse - logits[y];
  std::vector<float>& dl = logits;  // dlogits = softmax - onehot(y)
  for (int64_t c = 0; c < C; ++c) dl[c] = std::exp(dl[c] - lse);
  dl[y] -= 1.f;
  float* dap = da->typed_data();
  for (int64_t r = 0; r < s; ++r) {
    const float* row = wp + ip[r] * S * C;
    float acc = 0.f;
    for (int64_t c = 0; c < C; ++c) acc += row[c] * dl[c];
    dap[r] = acc;
  }
  const Optimizer opt(S, *count.typed_data(), lr, b1, b2, eps);
  for (int64_t r = 0; r < s; ++r) opt.Row(wp + ip[r] * S * C, C, dl.data(), ap[r], C);
  for (int64_t c = 0; c < C; ++c) opt.Scalar(bp + c * S, 1, dl[c]);
  return ffi::Error::Success();
}

}  // namespace

#define SAMPLING_MLP_OPTIMIZER_ATTRS \
  .Attr<float>("lr").Attr<float>("b1").Attr<float>("b2").Attr<float>("eps")

XLA_FFI_DEFINE_HANDLER_SYMBOL(
    AlshSelectActive, SelectActiveImpl,
    ffi::Ffi::Bind()
        .Arg<ffi::Buffer<ffi::F32>>()    // vals [r]
        .Arg<ffi::Buffer<ffi::U32>>()    // rows [r], or [0]: dense
        .Arg<ffi::Buffer<ffi::F32>>()    // proj [n_in, L*K]
        .Arg<ffi::Buffer<ffi::F32>>()    // tail [L*K]
        .Arg<ffi::Buffer<ffi::F32>>()    // offsets [L*K], or [0]: srp
        .Arg<ffi::BufferR0<ffi::F32>>()  // bucket width
        .Arg<ffi::Buffer<ffi::S32>>()    // multipliers [L, K]
        .Arg<ffi::Buffer<ffi::S32>>()    // tables [L, n]
        .Arg<ffi::BufferR0<ffi::U32>>()  // seed
        .Ret<ffi::Buffer<ffi::U32>>()    // idx [budget]
        .Ret<ffi::BufferR0<ffi::S32>>()  // num_colliding
);

XLA_FFI_DEFINE_HANDLER_SYMBOL(
    AlshRowsMatvec, RowsMatvecImpl,
    ffi::Ffi::Bind()
        .Arg<ffi::Buffer<ffi::F32>>()  // w [n, S, D]
        .Arg<ffi::Buffer<ffi::F32>>()  // b [n, S]
        .Arg<ffi::Buffer<ffi::U32>>()  // idx [s]
        .Arg<ffi::Buffer<ffi::F32>>()  // a [D]
        .Ret<ffi::Buffer<ffi::F32>>()  // z [s]
);

XLA_FFI_DEFINE_HANDLER_SYMBOL(
    AlshRowsUpdate, RowsUpdateImpl,
    ffi::Ffi::Bind()
        .Arg<ffi::Buffer<ffi::F32>>()    // w [n, S, D]
        .Arg<ffi::Buffer<ffi::F32>>()    // b [n, S]
        .Arg<ffi::Buffer<ffi::U32>>()    // idx [s]
        .Arg<ffi::Buffer<ffi::F32>>()    // dz [s]
        .Arg<ffi::Buffer<ffi::F32>>()    // a [D]
        .Arg<ffi::BufferR0<ffi::S32>>()  // count
        SAMPLING_MLP_OPTIMIZER_ATTRS
        .Ret<ffi::Buffer<ffi::F32>>()    // w (aliased)
        .Ret<ffi::Buffer<ffi::F32>>()    // b (aliased)
);

XLA_FFI_DEFINE_HANDLER_SYMBOL(
    AlshOutputStep, OutputStepImpl,
    ffi::Ffi::Bind()
        .Arg<ffi::Buffer<ffi::F32>>()    // w [n, S, C]
        .Arg<ffi::Buffer<ffi::F32>>()    // b [C, S]
        .Arg<ffi::Buffer<ffi::U32>>()    // rows [s]
        .Arg<ffi::Buffer<ffi::F32>>()    // a [s]
        .Arg<ffi::BufferR0<ffi::S32>>()  // label
        .Arg<ffi::BufferR0<ffi::S32>>()  // count
        SAMPLING_MLP_OPTIMIZER_ATTRS
        .Ret<ffi::Buffer<ffi::F32>>()    // w (aliased)
        .Ret<ffi::Buffer<ffi::F32>>()    // b (aliased)
        .Ret<ffi::BufferR0<ffi::F32>>()  // loss
        .Ret<ffi::Buffer<ffi::F32>>()    // da [s]
);
