// CPU kernels for MC-APPROX, called from JAX through the XLA FFI (see
// sampling_mlp/methods/mc/native.py, which compiles and registers them):
// McUpdateRows for forward mode (below) and McFactoredUpdate for backward
// mode (see FactoredUpdateImpl: the dense update from the weight
// gradient's factors, ColumnSampledDense.update_factored's definition).
//
// A forward-mode step updates only the weight rows its draw sampled.
// Under XLA on a CPU that is a gather of those rows' weights and moments, a
// concatenation, the optimizer's fusions and a scatter back: four passes
// over the rows, each through memory.  McUpdateRows updates each row where
// it lies -- weights and moments together, as one pass -- and its norm
// (which the next draws read), on every thread of XLA's pool.  It computes
// what RowSampledDense.update_rows (sampling_mlp/methods/mc/method.py) and
// optim.update_slab compute with jax.numpy, the definition: the same Adam
// update up to float32 rounding (the bias corrections folded into the step
// size, see optimizer.h); tests/test_mc_native.py compares the two.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <utility>
#include <vector>

#include "optimizer.h"
#include "parallel.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

using sampling_mlp::Optimizer;

// ||p[0:m]||, summed in 16 lanes (which the compiler vectorizes).
float Norm(const float* __restrict__ p, int64_t m) {
  float acc[16] = {};
  int64_t d = 0;
  for (; d + 16 <= m; d += 16) {
    for (int k = 0; k < 16; ++k) acc[k] += p[d + k] * p[d + k];
  }
  for (; d < m; ++d) acc[0] += p[d] * p[d];
  float s = 0.f;
  for (float a : acc) s += a;
  return std::sqrt(s);
}

// slab [n, S, m] (S = 3: Adam's p, m, v; S = 1: SGD's p), norms [n], rows
// int32 [r] (entries outside [0, n) are skipped; the others distinct),
// grads [r, m]: for each listed row t = rows[i], the optimizer's update of
// slab[t] with gradient grads[i], and norms[t] = ||slab[t, 0]||.  The
// outputs alias slab and norms.
ffi::Error UpdateRowsImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> slab,
                          ffi::Buffer<ffi::F32> norms,
                          ffi::Buffer<ffi::S32> rows,
                          ffi::Buffer<ffi::F32> grads,
                          ffi::BufferR0<ffi::S32> count, float lr, float b1,
                          float b2, float eps,
                          ffi::ResultBuffer<ffi::F32> slab_out,
                          ffi::ResultBuffer<ffi::F32> norms_out) {
  const auto sd = slab.dimensions();
  const auto gd = grads.dimensions();
  if (sd.size() != 3 || (sd[1] != 1 && sd[1] != 3) || gd.size() != 2 ||
      gd[1] != sd[2] || gd[0] != static_cast<int64_t>(rows.element_count()) ||
      norms.element_count() != static_cast<size_t>(sd[0])) {
    return ffi::Error::InvalidArgument(
        "need slab [n, S, m] with S in {1, 3}, norms [n], rows [r] and "
        "grads [r, m]");
  }
  const int64_t n = sd[0], S = sd[1], m = sd[2], r = gd[0];
  float* w = slab_out->typed_data();
  float* nrm = norms_out->typed_data();
  // Aliased outputs are the inputs' buffers; copy only if XLA did not alias.
  if (w != slab.typed_data()) {
    std::copy_n(slab.typed_data(), slab.element_count(), w);
  }
  if (nrm != norms.typed_data()) {
    std::copy_n(norms.typed_data(), norms.element_count(), nrm);
  }
  const int32_t* idx = rows.typed_data();
  const float* g = grads.typed_data();
  const Optimizer opt(S, *count.typed_data(), lr, b1, b2, eps);
  // Ranges of 16 rows on every thread; rows are distinct, so ranges never
  // write the same memory.
  sampling_mlp::ParallelFor(
      pool, r, pool.num_threads() + 1, 16, [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; ++i) {
          const int64_t t = idx[i];
          if (t < 0 || t >= n) continue;
          float* p = w + t * S * m;
          opt.Row(p, m, g + i * m, 1.f, m);
          nrm[t] = Norm(p, m);
        }
      });
  return ffi::Error::Success();
}

constexpr int64_t kBlock = 64;  // columns of g held in registers at a time
constexpr int64_t kRows = 4;    // rows of g computed together
constexpr int64_t kRowGrain = 32;

// 16 floats, loaded and stored at any alignment.
typedef float V16 __attribute__((vector_size(64), aligned(4)));

// The factors of g = a^T d restricted to the used slots: at [n, k], and the
// k rows of d.
struct Factors {
  const float* at;
  const float* const* drows;
  int64_t k;
  const float* src;  // the weights before the update (may be the output)
};

// g[r, 0:len] = sum_u at[i + r, u] d_u[j0 : j0 + len] for r < R, then the
// optimizer's update of those entries of rows i .. i + R - 1 and their
// squares added to sq[j0 : j0 + len].  A full block (len = kBlock) keeps
// its R x kBlock sums in registers, so each load of d serves R rows.
template <int64_t R>
void UpdateBlock(const Factors& f, const Optimizer& opt, float* w, float* m1,
                 float* m2, int64_t m, int64_t S, int64_t i, int64_t j0,
                 int64_t len, float* sq) {
  alignas(64) float g[R][kBlock];
  const float* at = f.at + i * f.k;
  if (len == kBlock) {
    V16 acc[R][kBlock / 16] = {};
    for (int64_t u = 0; u < f.k; ++u) {
      const V16* dp = reinterpret_cast<const V16*>(f.drows[u] + j0);
      V16 dv[kBlock / 16];
      for (int64_t v = 0; v < kBlock / 16; ++v) dv[v] = dp[v];
      for (int64_t r = 0; r < R; ++r) {
        const float cr = at[r * f.k + u];
        for (int64_t v = 0; v < kBlock / 16; ++v) acc[r][v] += cr * dv[v];
      }
    }
    for (int64_t r = 0; r < R; ++r) {
      for (int64_t v = 0; v < kBlock / 16; ++v) {
        *reinterpret_cast<V16*>(&g[r][16 * v]) = acc[r][v];
      }
    }
  } else {
    for (int64_t r = 0; r < R; ++r) {
      for (int64_t q = 0; q < len; ++q) g[r][q] = 0.f;
      for (int64_t u = 0; u < f.k; ++u) {
        const float cr = at[r * f.k + u];
        const float* __restrict__ du = f.drows[u] + j0;
        for (int64_t q = 0; q < len; ++q) g[r][q] += cr * du[q];
      }
    }
  }
  for (int64_t r = 0; r < R; ++r) {
    float* pi = w + (i + r) * m + j0;
    if (f.src != w) std::copy_n(f.src + (i + r) * m + j0, len, pi);
    opt.Flat(pi, S == 3 ? m1 + (i + r) * m + j0 : nullptr,
             S == 3 ? m2 + (i + r) * m + j0 : nullptr, g[r], len);
    for (int64_t q = 0; q < len; ++q) sq[j0 + q] += pi[q] * pi[q];
  }
}

template <int64_t R>
void UpdateRows(const Factors& f, const Optimizer& opt, float* w, float* m1,
                float* m2, int64_t m, int64_t S, int64_t i, float* sq) {
  for (int64_t j0 = 0; j0 < m; j0 += kBlock) {
    UpdateBlock<R>(f, opt, w, m1, m2, m, S, i, j0, std::min(kBlock, m - j0),
                   sq);
  }
}

// p [n, m], moments m and v [n, m] (Adam's; empty for SGD), the
// gradient's factors a [c, n] and d [c, m]: the optimizer's dense update of
// p with gradient g = a^T d (g[i, j] = sum_b a[b, i] d[b, j], formed a block
// of rows at a time and never stored; the zero rows of a, a sampler's
// unused slots, are skipped: where d holds inf or NaN, a.T @ d would give
// NaN there and this gives the finite rows' sum), and col_norms[j] =
// ||p[:, j]|| of the updated weights.  Each range of rows adds its squares
// into its own partial [m], and the partials are summed in range order, so
// no result depends on which thread ran which range.  The moments' outputs
// alias their inputs; p_out may be p's buffer or another.
ffi::Error FactoredUpdateImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> p,
                              ffi::Buffer<ffi::F32> mom1,
                              ffi::Buffer<ffi::F32> mom2,
                              ffi::Buffer<ffi::F32> a,
                              ffi::Buffer<ffi::F32> d,
                              ffi::BufferR0<ffi::S32> count, float lr,
                              float b1, float b2, float eps,
                              ffi::ResultBuffer<ffi::F32> p_out,
                              ffi::ResultBuffer<ffi::F32> mom1_out,
                              ffi::ResultBuffer<ffi::F32> mom2_out,
                              ffi::ResultBuffer<ffi::F32> col_norms) {
  const auto pd = p.dimensions();
  const auto ad = a.dimensions();
  const auto dd = d.dimensions();
  const size_t moments = mom1.element_count();
  if (pd.size() != 2 || ad.size() != 2 || dd.size() != 2 ||
      ad[0] != dd[0] || ad[1] != pd[0] || dd[1] != pd[1] ||
      mom2.element_count() != moments ||
      (moments != 0 && moments != p.element_count()) ||
      col_norms->element_count() != static_cast<size_t>(pd[1])) {
    return ffi::Error::InvalidArgument(
        "need p [n, m], moments m and v [n, m] each (Adam) or empty (SGD), "
        "factors a [c, n] and d [c, m], col_norms [m]");
  }
  const int64_t n = pd[0], m = pd[1], c = ad[0], S = moments ? 3 : 1;
  float* w = p_out->typed_data();
  float* m1 = mom1_out->typed_data();
  float* m2 = mom2_out->typed_data();
  if (m1 != mom1.typed_data()) std::copy_n(mom1.typed_data(), moments, m1);
  if (m2 != mom2.typed_data()) std::copy_n(mom2.typed_data(), moments, m2);
  const float* fa = a.typed_data();
  const float* fd = d.typed_data();
  const Optimizer opt(S, *count.typed_data(), lr, b1, b2, eps);
  // The factors' used slots: a sampler's unused slots (scale 0) have zero
  // rows in a and are left out.  at [n, k] holds their entries of a by
  // row of p, so that a block of rows reads its coefficients together.
  std::vector<int64_t> used;
  for (int64_t b = 0; b < c; ++b) {
    const float* ab = fa + b * n;
    if (std::any_of(ab, ab + n, [](float x) { return x != 0.f; })) {
      used.push_back(b);
    }
  }
  const int64_t k = static_cast<int64_t>(used.size());
  std::vector<const float*> drows(static_cast<size_t>(k));
  std::vector<float> at(static_cast<size_t>(n * k));
  for (int64_t u = 0; u < k; ++u) {
    drows[u] = fd + used[u] * m;
    const float* ab = fa + used[u] * n;
    for (int64_t i = 0; i < n; ++i) at[i * k + u] = ab[i];
  }
  const int64_t ranges = (n + kRowGrain - 1) / kRowGrain;
  std::vector<float> partial(static_cast<size_t>(ranges * m), 0.f);
  // The weights are read from p and written to p_out, block by block (they
  // are one buffer when XLA aliases them).
  const Factors f{at.data(), drows.data(), k, p.typed_data()};
  sampling_mlp::ParallelFor(
      pool, n, pool.num_threads() + 1, kRowGrain,
      [&](int64_t begin, int64_t end) {
        float* sq = partial.data() + (begin / kRowGrain) * m;
        int64_t i = begin;
        for (; i + kRows <= end; i += kRows) {
          UpdateRows<kRows>(f, opt, w, m1, m2, m, S, i, sq);
        }
        for (; i < end; ++i) UpdateRows<1>(f, opt, w, m1, m2, m, S, i, sq);
      });
  float* out = col_norms->typed_data();
  for (int64_t j = 0; j < m; ++j) out[j] = 0.f;
  for (int64_t r = 0; r < ranges; ++r) {
    const float* sq = partial.data() + r * m;
    for (int64_t j = 0; j < m; ++j) out[j] += sq[j];
  }
  for (int64_t j = 0; j < m; ++j) out[j] = std::sqrt(out[j]);
  return ffi::Error::Success();
}

}  // namespace

// Both kernels' bindings: the thread pool, then the buffers, then the
// optimizer's attributes (sampling_mlp.native.optimizer_attrs) and results.
template <typename Binding>
auto OptimizerAttrs(Binding binding) {
  return std::move(binding)
      .template Attr<float>("lr")
      .template Attr<float>("b1")
      .template Attr<float>("b2")
      .template Attr<float>("eps");
}

using F32 = ffi::Buffer<ffi::F32>;

XLA_FFI_DEFINE_HANDLER_SYMBOL(
    McUpdateRows, UpdateRowsImpl,
    OptimizerAttrs(ffi::Ffi::Bind()
                       .Ctx<ffi::ThreadPool>()
                       .Arg<F32>()  // slab
                       .Arg<F32>()  // norms
                       .Arg<ffi::Buffer<ffi::S32>>()  // rows
                       .Arg<F32>()  // grads
                       .Arg<ffi::BufferR0<ffi::S32>>())  // count
        .Ret<F32>()    // slab
        .Ret<F32>());  // norms

XLA_FFI_DEFINE_HANDLER_SYMBOL(
    McFactoredUpdate, FactoredUpdateImpl,
    OptimizerAttrs(ffi::Ffi::Bind()
                       .Ctx<ffi::ThreadPool>()
                       .Arg<F32>()  // p
                       .Arg<F32>()  // m
                       .Arg<F32>()  // v
                       .Arg<F32>()  // a
                       .Arg<F32>()  // d
                       .Arg<ffi::BufferR0<ffi::S32>>())  // count
        .Ret<F32>()    // p
        .Ret<F32>()    // m
        .Ret<F32>()    // v
        .Ret<F32>());  // col_norms
