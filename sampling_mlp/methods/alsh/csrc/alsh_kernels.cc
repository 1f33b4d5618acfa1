// CPU kernels for ALSH-APPROX at batch size 1, called from JAX through the
// XLA FFI (see sampling_mlp/methods/alsh/native.py, which compiles and
// registers them).
//
// Under XLA on a CPU, gathering a few rows of a large matrix, updating them
// and scattering them back runs as element-by-element loops, and each of
// the dozens of small operations of a batch-size-1 step costs a dispatch.
// AlshTrainStep does a whole step -- hashing, selection, the sparse forward
// and backward passes and the optimizer -- in one call, reading and
// updating the active rows in place; AlshSelectActive is its selection
// alone.  They compute what sampling_mlp/methods/alsh/ (kernels.py, layer.py,
// method.py) computes with jax.numpy, the definition --
// the same hash codes and the same tie-breaking, bit for bit; the same sums
// and the same Adam update up to float32 rounding -- and
// tests/test_alsh_native.py compares the two.


#include "alsh_select.h"
#include "optimizer.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <vector>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

using namespace sampling_mlp_alsh;  // NOLINT: this file's own helpers
using sampling_mlp::Optimizer;

ffi::Error MakeHash(const ffi::Buffer<ffi::F32>& proj,
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

// Active set of one query (a layer's input: `vals` on `rows`, or dense when
// `rows` is empty): QueryCodes, then SelectTop.
ffi::Error SelectActiveImpl(
    ffi::Buffer<ffi::F32> vals, ffi::Buffer<ffi::U32> rows,
    ffi::Buffer<ffi::F32> proj, ffi::Buffer<ffi::F32> tail,
    ffi::Buffer<ffi::F32> offsets, ffi::BufferR0<ffi::F32> bucket_width,
    ffi::Buffer<ffi::S32> mult, ffi::Buffer<ffi::S32> tables,
    ffi::BufferR0<ffi::U32> seed, ffi::ResultBuffer<ffi::U32> idx,
    ffi::ResultBufferR0<ffi::S32> num_colliding) {
  LayerHash h;
  if (auto e = MakeHash(proj, tail, offsets, bucket_width, mult, tables, &h);
      e.failure()) {
    return e;
  }
  const int64_t budget = idx->element_count();
  const int64_t r = vals.element_count();
  const bool sparse = rows.element_count() > 0;
  if (budget < 1 || budget > h.n) {
    return ffi::Error::InvalidArgument("need 1 <= budget <= n");
  }
  if (sparse ? rows.element_count() != static_cast<size_t>(r) : r != h.n_in) {
    return ffi::Error::InvalidArgument("query values do not match its rows");
  }
  if (sparse) {
    for (int64_t i = 0; i < r; ++i) {
      if (rows.typed_data()[i] >= h.n_in) {
        return ffi::Error::InvalidArgument("query row out of range");
      }
    }
  }
  *num_colliding->typed_data() =
      h.Select(vals.typed_data(), sparse ? rows.typed_data() : nullptr, r,
               *seed.typed_data(), budget, idx->typed_data());
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
void AliasOrCopy(const ffi::Buffer<ffi::F32>& in, float* out) {
  if (out != in.typed_data()) {
    std::copy_n(in.typed_data(), in.element_count(), out);
  }
}

// A weight and a bias slab of the step, updated in place; dims as given.
struct Slabs {
  float* w;
  float* b;
  int64_t dims[3];  // w's shape
};

// `auto var = expr;` for an ffi::ErrorOr, returning its error if it has one.
#define SAMPLING_MLP_GET(var, expr) \
  auto var = (expr);                \
  if (!var.has_value()) return var.error()

// The slabs of argument `i` and `i + 1` (w, b) into results `o`, `o + 1`.
ffi::Error GetSlabs(const ffi::RemainingArgs& args, const ffi::RemainingRets& rets,
                    size_t i, size_t o, Slabs* s) {
  SAMPLING_MLP_GET(w, args.get<ffi::Buffer<ffi::F32>>(i));
  SAMPLING_MLP_GET(b, args.get<ffi::Buffer<ffi::F32>>(i + 1));
  SAMPLING_MLP_GET(rw, rets.get<ffi::Buffer<ffi::F32>>(o));
  SAMPLING_MLP_GET(rb, rets.get<ffi::Buffer<ffi::F32>>(o + 1));
  const auto wd = w->dimensions();
  if (wd.size() != 3 || b->dimensions().size() != 2) {
    return ffi::Error::InvalidArgument("slabs must be w [., ., .], b [., .]");
  }
  s->w = rw.value()->typed_data();
  s->b = rb.value()->typed_data();
  AliasOrCopy(*w, s->w);
  AliasOrCopy(*b, s->b);
  std::copy_n(wd.begin(), 3, s->dims);
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

// Copies `len` entries whose slots lie `stride` apart, from `src` at the
// given offsets (or contiguous when offsets is null), into the planes of
// `blk` from position `at`; Scatter writes them back.
void Gather(const float* src, const uint32_t* offsets, int64_t len,
            int64_t stride, int64_t S, Block& blk, int64_t at) {
  for (int64_t k = 0; k < S; ++k) {
    float* dst = blk.slot(k) + at;
    const float* base = src + k * stride;
    if (offsets) {
      for (int64_t c = 0; c < len; ++c) dst[c] = base[offsets[c]];
    } else {
      std::copy_n(base, len, dst);
    }
  }
}

void Scatter(Block& blk, int64_t at, const uint32_t* offsets, int64_t len,
             int64_t stride, int64_t S, float* dst) {
  for (int64_t k = 0; k < S; ++k) {
    const float* src = blk.slot(k) + at;
    float* base = dst + k * stride;
    if (offsets) {
      for (int64_t c = 0; c < len; ++c) base[offsets[c]] = src[c];
    } else {
      std::copy_n(src, len, base);
    }
  }
}

// One training step of ALSH-APPROX at batch size 1, for any depth: per
// hidden layer, the active set (LayerHash::Select) and the activations of
// its nodes from the previous layer's active nodes; the exact output layer,
// the softmax cross-entropy with `label` and its gradient; backpropagation
// through the active nodes (every gradient from the weights before the
// step), and the optimizer on every weight the example touched: the active
// rows of the first layer (whole rows: its input is dense), the
// [active x previous active] blocks after it, the output layer's rows of
// the last active set, and all biases on the way.  That is what
// ALSH.train_step (method.py) does with jax.numpy, in one pass.
//
// Layouts (layer.py): first hidden layer w [n_1, S, D], b [n_1, S]; later
// hidden layers w [n_k, n_{k-1}, S], b [n_k, S]; output w [n_d, S, C],
// b [C, S]; S = 3 (Adam: parameter, first, second moment) or 1 (SGD).
// Remaining args: per hidden layer w, b, proj, tail, offsets, bucket width,
// multipliers, tables; then the output layer's w, b.  Remaining results:
// every w, b (aliased with the arguments).
ffi::Error TrainStepImpl(ffi::Buffer<ffi::F32> x, ffi::BufferR0<ffi::S32> label,
                         ffi::BufferR0<ffi::S32> count,
                         ffi::Buffer<ffi::U32> seeds, ffi::RemainingArgs args,
                         ffi::ResultBufferR0<ffi::F32> loss,
                         ffi::ResultBuffer<ffi::S32> colliding,
                         ffi::RemainingRets rets, float lr, float b1, float b2,
                         float eps, int32_t activation, float slope,
                         ffi::Span<const int64_t> budgets) {
  const int64_t depth = budgets.size();
  if (depth < 1 || args.size() != static_cast<size_t>(8 * depth + 2) ||
      rets.size() != static_cast<size_t>(2 * depth + 2) ||
      seeds.element_count() != static_cast<size_t>(depth) ||
      colliding->element_count() != static_cast<size_t>(depth)) {
    return ffi::Error::InvalidArgument(
        "need, per hidden layer, 8 arguments, 2 results, a seed and a "
        "budget, and the output layer's 2 slabs");
  }
  const int64_t D = x.element_count();
  thread_local std::vector<Slabs> slabs;
  thread_local std::vector<LayerHash> hashes;
  slabs.resize(depth + 1);
  hashes.resize(depth);
  for (int64_t k = 0; k <= depth; ++k) {
    if (auto e = GetSlabs(args, rets, 8 * k, 2 * k, &slabs[k]); e.failure()) {
      return e;
    }
  }
  const int64_t S = slabs[0].dims[1];
  if (S != 1 && S != 3) {
    return ffi::Error::InvalidArgument(
        "slabs must have 3 slots (Adam) or 1 (SGD)");
  }
  int64_t prev = D;
  for (int64_t k = 0; k < depth; ++k) {
    const size_t i = 8 * k + 2;
    SAMPLING_MLP_GET(proj, args.get<ffi::Buffer<ffi::F32>>(i));
    SAMPLING_MLP_GET(tail, args.get<ffi::Buffer<ffi::F32>>(i + 1));
    SAMPLING_MLP_GET(off, args.get<ffi::Buffer<ffi::F32>>(i + 2));
    SAMPLING_MLP_GET(width, args.get<ffi::BufferR0<ffi::F32>>(i + 3));
    SAMPLING_MLP_GET(mult, args.get<ffi::Buffer<ffi::S32>>(i + 4));
    SAMPLING_MLP_GET(tables, args.get<ffi::Buffer<ffi::S32>>(i + 5));
    if (auto e = MakeHash(*proj, *tail, *off, *width, *mult, *tables,
                          &hashes[k]);
        e.failure()) {
      return e;
    }
    const int64_t* d = slabs[k].dims;
    const int64_t n = d[0];
    const bool shape_ok = k == 0 ? (d[1] == S && d[2] == D)
                                 : (d[1] == prev && d[2] == S);
    if (!shape_ok || hashes[k].n != n || hashes[k].n_in != prev ||
        budgets[k] < 1 || budgets[k] > n) {
      return ffi::Error::InvalidArgument(
          "hidden layer slabs, tables and budgets do not fit together");
    }
    prev = n;
  }
  const int64_t* od = slabs[depth].dims;
  const int64_t C = od[2];
  if (od[0] != prev || od[1] != S) {
    return ffi::Error::InvalidArgument("output slab must be [n_d, S, C]");
  }
  const int32_t y = *label.typed_data();
  if (y < 0 || y >= C) {
    return ffi::Error::InvalidArgument("label out of range [0, num_classes)");
  }
  const Optimizer opt(S, *count.typed_data(), lr, b1, b2, eps);
  const Activation act{activation, slope};

  // Forward: active sets, pre-activations z and activations a.
  thread_local std::vector<std::vector<uint32_t>> idx;
  thread_local std::vector<std::vector<float>> z, a;
  thread_local std::vector<Block> blocks;  // per hidden layer k >= 1
  thread_local std::vector<uint32_t> offs;
  blocks.resize(depth + 1);  // the last is the output layer's
  idx.resize(depth);
  z.resize(depth);
  a.resize(depth);
  const float* in = x.typed_data();
  const uint32_t* in_rows = nullptr;
  int64_t r = D;
  for (int64_t k = 0; k < depth; ++k) {
    const int64_t s = budgets[k];
    idx[k].resize(s);
    z[k].resize(s);
    a[k].resize(s);
    colliding->typed_data()[k] = hashes[k].Select(
        in, in_rows, r, seeds.typed_data()[k], s, idx[k].data());
    const float* w = slabs[k].w;
    const float* b = slabs[k].b;
    const int64_t row_len = slabs[k].dims[1] * slabs[k].dims[2];
    const uint32_t* rows = idx[k].data();
    float* zk = z[k].data();
    if (k == 0) {  // whole rows, two at a time
      int64_t i = 0;
      for (; i + 2 <= s; i += 2) {
        Dot2(w + rows[i] * row_len, w + rows[i + 1] * row_len, in, D, &zk[i],
             &zk[i + 1]);
      }
      if (i < s) zk[i] = Dot(w + rows[i] * row_len, in, D);
    } else {  // the [s, r] block, gathered (slot-last layout: offsets r * S)
      offs.resize(r);
      for (int64_t c = 0; c < r; ++c) offs[c] = in_rows[c] * S;
      blocks[k].Resize(S, s * r);
      for (int64_t i = 0; i < s; ++i) {
        Gather(w + rows[i] * row_len, offs.data(), r, 1, S, blocks[k], i * r);
        zk[i] = Dot(blocks[k].slot(0) + i * r, in, r);
      }
    }
    for (int64_t i = 0; i < s; ++i) {
      zk[i] += b[rows[i] * S];
      a[k][i] = act(zk[i]);
    }
    in = a[k].data();
    in_rows = idx[k].data();
    r = s;
  }

  // The output layer: logits, loss, dlogits, the gradient `da` of its input
  // (weights before the update), then its update.
  thread_local std::vector<float> logits, da, dz, grad;
  float* ow = slabs[depth].w;
  float* ob = slabs[depth].b;
  Block& out = blocks[depth];  // the active rows, [s, C] per slot
  out.Resize(S, r * C);
  logits.resize(C);
  for (int64_t c = 0; c < C; ++c) logits[c] = ob[c * S];
  for (int64_t i = 0; i < r; ++i) {
    Gather(ow + in_rows[i] * S * C, nullptr, C, C, S, out, i * C);
    const float* row = out.slot(0) + i * C;
    for (int64_t c = 0; c < C; ++c) logits[c] += in[i] * row[c];
  }
  const float mx = *std::max_element(logits.begin(), logits.end());
  float total = 0.f;
  for (int64_t c = 0; c < C; ++c) total += std::exp(logits[c] - mx);
  const float lse = mx + std::log(total);
  *loss->typed_data() = lse - logits[y];
  std::vector<float>& dl = logits;  // dlogits = softmax - onehot(y)
  for (int64_t c = 0; c < C; ++c) dl[c] = std::exp(dl[c] - lse);
  dl[y] -= 1.f;
  da.resize(r);
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
  opt.Flat(out.slot(0), out.slot(S > 1 ? 1 : 0), out.slot(S - 1), grad.data(),
           r * C);
  for (int64_t i = 0; i < r; ++i) {
    Scatter(out, i * C, nullptr, C, C, S, ow + in_rows[i] * S * C);
  }
  for (int64_t c = 0; c < C; ++c) opt.Scalar(ob + c * S, dl[c]);

  // Backward through the hidden layers, each updated once its input
  // gradient has been read from its weights.
  for (int64_t k = depth - 1; k >= 0; --k) {
    const int64_t s = budgets[k];
    dz.resize(s);
    for (int64_t i = 0; i < s; ++i) dz[i] = da[i] * act.Grad(z[k][i], a[k][i]);
    float* w = slabs[k].w;
    float* b = slabs[k].b;
    const int64_t row_len = slabs[k].dims[1] * slabs[k].dims[2];
    if (k == 0) {
      const uint32_t* rows = idx[0].data();
      int64_t i = 0;
      for (; i + 2 <= s; i += 2) {
        opt.Row2(w + rows[i] * row_len, w + rows[i + 1] * row_len, D,
                 x.typed_data(), dz[i], dz[i + 1], D);
      }
      if (i < s) opt.Row(w + rows[i] * row_len, D, x.typed_data(), dz[i], D);
    } else {
      const int64_t rp = budgets[k - 1];
      const float* ap = a[k - 1].data();
      Block& blk = blocks[k];
      const float* pw = blk.slot(0);
      da.assign(rp, 0.f);
      grad.resize(s * rp);
      for (int64_t i = 0; i < s; ++i) {
        for (int64_t c = 0; c < rp; ++c) {
          da[c] += dz[i] * pw[i * rp + c];
          grad[i * rp + c] = dz[i] * ap[c];
        }
      }
      opt.Flat(blk.slot(0), blk.slot(S > 1 ? 1 : 0), blk.slot(S - 1),
               grad.data(), s * rp);
      offs.resize(rp);
      for (int64_t c = 0; c < rp; ++c) offs[c] = idx[k - 1][c] * S;
      for (int64_t i = 0; i < s; ++i) {
        Scatter(blk, i * rp, offs.data(), rp, 1, S, w + idx[k][i] * row_len);
      }
    }
    for (int64_t i = 0; i < s; ++i) opt.Scalar(b + idx[k][i] * S, dz[i]);
  }
  return ffi::Error::Success();
}
}  // namespace

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
    AlshTrainStep, TrainStepImpl,
    ffi::Ffi::Bind()
        .Arg<ffi::Buffer<ffi::F32>>()    // x [D]
        .Arg<ffi::BufferR0<ffi::S32>>()  // label
        .Arg<ffi::BufferR0<ffi::S32>>()  // count (after this step)
        .Arg<ffi::Buffer<ffi::U32>>()    // seeds [depth]
        .RemainingArgs()                 // slabs, hashes, tables (see above)
        .Ret<ffi::BufferR0<ffi::F32>>()  // loss
        .Ret<ffi::Buffer<ffi::S32>>()    // colliding [depth]
        .RemainingRets()                 // slabs (aliased)
        .Attr<float>("lr")
        .Attr<float>("b1")
        .Attr<float>("b2")
        .Attr<float>("eps")
        .Attr<int32_t>("activation")
        .Attr<float>("slope")
        .Attr<ffi::Span<const int64_t>>("budgets"));
