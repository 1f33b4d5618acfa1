// CPU kernel for MC-APPROX's forward mode, called from JAX through the XLA
// FFI (see sampling_mlp/methods/mc/native.py, which compiles and registers
// it).
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

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(McUpdateRows, UpdateRowsImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::BufferR0<ffi::S32>>()
                                  .Attr<float>("lr")
                                  .Attr<float>("b1")
                                  .Attr<float>("b2")
                                  .Attr<float>("eps")
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());
