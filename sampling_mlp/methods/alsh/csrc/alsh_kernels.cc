// CPU kernels for ALSH-APPROX, called from JAX through the XLA FFI (see
// sampling_mlp/methods/alsh/native.py, which compiles and registers them).
//
// Under XLA on a CPU, gathering a few rows of a large matrix, updating them
// and scattering them back runs as element-by-element loops, and each of
// the dozens of small operations of a batch-size-1 step costs a dispatch.
// These kernels do whole steps -- hashing, selection, the sparse forward
// and backward passes and the optimizer -- in one call, reading and
// updating the active rows in place:
//
// * AlshTrainStep: one batch-size-1 step (alsh_step.h's Step);
// * AlshTrainHogwild: N batch-size-1 steps, one per example, on several
//   threads that update the shared weights without locks (HOGWILD, Recht
//   et al. 2011), as SLIDE does (Chen et al. 2020);
// * AlshTrainBatch: one mini-batch step: every example's active sets and
//   gradients from the weights before the step, on several threads, then
//   one lazy update of the union of the touched weights (not under weight
//   normalisation);
// * AlshSelectActive: the selection alone;
// * AlshBuildTables: every node's bucket codes and sketch, from the slab
//   in place, on several threads (the tables' rebuild).
//
// Under the incremental schedule (attribute `incremental`) the step
// kernels also re-hash the nodes they touch (alsh_step.h's Rehasher): each
// hidden layer then passes its sketches, its transform's appended
// projections and its scale, and its tables, sketches and scale are
// results too, updated in place.
//
// The step kernels take the network as attributes: `bias` (0: bias-free
// layers, no bias slabs) and `weight_norm` (1: each layer's slabs end
// with its lengths g, and its weights are g v / ||v||; Salimans and
// Kingma 2016).
//
// They compute what sampling_mlp/methods/alsh/ (kernels.py, layer.py,
// method.py) computes with jax.numpy, the definition -- the same query
// codes and the same tie-breaking, bit for bit; the same sums, the same
// Adam update and the same nodes' sketches up to float32 rounding (so a
// node's code may differ where a projection lies within rounding of a
// bucket boundary) -- and tests/test_alsh_native.py compares the two.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "alsh_select.h"
#include "alsh_step.h"
#include "alsh_tables.h"
#include "optimizer.h"
#include "parallel.h"
#include "profile.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

using namespace sampling_mlp_alsh;  // NOLINT: this method's own helpers
using sampling_mlp::Optimizer;
using sampling_mlp::ParallelFor;

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

// The step kernels' network attributes.
Network Net(int32_t bias, int32_t weight_norm, int32_t incremental,
            int32_t transform, float target, float tolerance) {
  return Network{bias != 0, weight_norm != 0, incremental != 0, transform,
                 target, tolerance};
}

ffi::Error CheckLabels(const int32_t* y, int64_t n, int64_t C) {
  for (int64_t i = 0; i < n; ++i) {
    if (y[i] < 0 || y[i] >= C) {
      return ffi::Error::InvalidArgument(
          "label out of range [0, num_classes)");
    }
  }
  return ffi::Error::Success();
}

// The multi-example kernels' per-example arguments and results: labels
// [N] in range, seeds [N, depth], loss [N], colliding [N, depth].
ffi::Error CheckExamples(const ffi::Buffer<ffi::S32>& labels,
                         const ffi::Buffer<ffi::U32>& seeds,
                         const ffi::Buffer<ffi::F32>& loss,
                         const ffi::Buffer<ffi::S32>& colliding, int64_t N,
                         const Model& m) {
  if (labels.element_count() != static_cast<size_t>(N) ||
      seeds.element_count() != static_cast<size_t>(N * m.depth) ||
      loss.element_count() != static_cast<size_t>(N) ||
      colliding.element_count() != static_cast<size_t>(N * m.depth)) {
    return ffi::Error::InvalidArgument(
        "need labels [N], seeds [N, depth], loss [N], colliding [N, depth] "
        "for N examples");
  }
  return CheckLabels(labels.typed_data(), N, m.C);
}

// One batch-size-1 step (Step).  Remaining args and results: see
// ParseModel.
ffi::Error TrainStepImpl(ffi::Buffer<ffi::F32> x, ffi::BufferR0<ffi::S32> label,
                         ffi::BufferR0<ffi::S32> count,
                         ffi::Buffer<ffi::U32> seeds, ffi::RemainingArgs args,
                         ffi::ResultBufferR0<ffi::F32> loss,
                         ffi::ResultBuffer<ffi::S32> colliding,
                         ffi::RemainingRets rets, float lr, float b1, float b2,
                         float eps, int32_t activation, float slope,
                         ffi::Span<const int64_t> budgets, int32_t bias,
                         int32_t weight_norm, int32_t incremental,
                         int32_t transform, float target, float tolerance) {
  thread_local Model m;
  if (auto e = ParseModel(args, rets, budgets, x.element_count(),
                          Net(bias, weight_norm, incremental, transform, target,
                              tolerance), &m);
      e.failure()) {
    return e;
  }
  if (seeds.element_count() != static_cast<size_t>(m.depth) ||
      colliding->element_count() != static_cast<size_t>(m.depth)) {
    return ffi::Error::InvalidArgument("need a seed per hidden layer");
  }
  if (auto e = CheckLabels(label.typed_data(), 1, m.C); e.failure()) return e;
  const Optimizer opt(m.S, *count.typed_data(), lr, b1, b2, eps);
  Step(m, opt, Activation{activation, slope}, x.typed_data(),
       *label.typed_data(), seeds.typed_data(), loss->typed_data(),
       colliding->typed_data());
  return ffi::Error::Success();
}

// N batch-size-1 steps, example i with the update count count + i, on at
// most `threads` threads that claim examples one at a time from a shared
// counter and update the weights in place without locks (HOGWILD, Recht et
// al. 2011; SLIDE, Chen et al. 2020).  Two threads may read a weight while
// another updates it, or update the same weight at once (one update then
// overwrites the other); the examples' active sets are small and mostly
// disjoint, and the tolerance of SGD for such races is HOGWILD's result.
// With one thread the steps run in order, exactly as N calls of
// AlshTrainStep.
ffi::Error TrainHogwildImpl(
    ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::S32> labels,
    ffi::BufferR0<ffi::S32> count, ffi::Buffer<ffi::U32> seeds,
    ffi::RemainingArgs args, ffi::ResultBuffer<ffi::F32> loss,
    ffi::ResultBuffer<ffi::S32> colliding, ffi::RemainingRets rets, float lr,
    float b1, float b2, float eps, int32_t activation, float slope,
    ffi::Span<const int64_t> budgets, int64_t threads, int32_t bias,
    int32_t weight_norm, int32_t incremental, int32_t transform,
    float target, float tolerance) {
  const auto xd = x.dimensions();
  if (xd.size() != 2) return ffi::Error::InvalidArgument("need x [N, D]");
  const int64_t N = xd[0];
  Model m;
  if (auto e = ParseModel(args, rets, budgets, xd[1],
                          Net(bias, weight_norm, incremental, transform, target,
                              tolerance), &m);
      e.failure()) {
    return e;
  }
  if (auto e = CheckExamples(labels, seeds, *loss, *colliding, N, m);
      e.failure()) {
    return e;
  }
  const Activation act{activation, slope};
  const int32_t count0 = *count.typed_data();
  ParallelFor(pool, N, threads, 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const Optimizer opt(m.S, count0 + static_cast<int32_t>(i), lr, b1, b2,
                          eps);
      Step(m, opt, act, x.typed_data() + i * m.D, labels.typed_data()[i],
           seeds.typed_data() + i * m.depth, loss->typed_data() + i,
           colliding->typed_data() + i * m.depth);
    }
  });
  return ffi::Error::Success();
}

// Backward pass of one example of a mini-batch of B, from the weights
// before the step (read from the trace's one-slot blocks): the logits'
// gradient scaled by 1 / B (the batch loss is the mean) and every hidden
// layer's dz.
void Backward(const Model& m, const Activation& act, float inv_batch,
              Trace* t) {
  const int64_t depth = m.depth, C = m.C;
  PhaseTimer timer(kBackward);
  thread_local std::vector<float> da, next;
  for (float& v : t->dl) v *= inv_batch;
  int64_t r = m.budgets[depth - 1];
  const float* out = t->blocks[depth].slot(0);
  da.assign(r, 0.f);
  for (int64_t i = 0; i < r; ++i) {
    float acc = 0.f;
    for (int64_t c = 0; c < C; ++c) acc += out[i * C + c] * t->dl[c];
    da[i] = acc;
  }
  t->dz.resize(depth);
  for (int64_t k = depth - 1; k >= 0; --k) {
    const int64_t s = m.budgets[k];
    std::vector<float>& dz = t->dz[k];
    dz.resize(s);
    for (int64_t i = 0; i < s; ++i) {
      dz[i] = da[i] * act.Grad(t->z[k][i], t->a[k][i]);
    }
    if (k == 0) break;
    const int64_t rp = m.budgets[k - 1];
    const float* pw = t->blocks[k].slot(0);
    next.assign(rp, 0.f);
    for (int64_t i = 0; i < s; ++i) {
      for (int64_t c = 0; c < rp; ++c) next[c] += dz[i] * pw[i * rp + c];
    }
    da.swap(next);
  }
}

// Which examples touched each node of a layer: the distinct nodes in order
// of first touch, and for node j the (example, position) pairs
// pairs[start[j] .. start[j + 1]).  `where` [n] maps a node to its place in
// `nodes` (-1: untouched) and is left all -1 again.
struct Touched {
  std::vector<uint32_t> nodes;
  std::vector<int64_t> start;
  std::vector<std::pair<int32_t, int32_t>> pairs;
  std::vector<int32_t> where, fill;

  void Build(const std::vector<Trace>& traces, int64_t layer, int64_t n) {
    if (static_cast<int64_t>(where.size()) < n) where.resize(n, -1);
    nodes.clear();
    start.clear();
    for (const Trace& t : traces) {
      for (uint32_t node : t.idx[layer]) {
        if (where[node] < 0) {
          where[node] = static_cast<int32_t>(nodes.size());
          nodes.push_back(node);
          start.push_back(0);
        }
        ++start[where[node]];
      }
    }
    int64_t total = 0;
    for (int64_t& s : start) {
      const int64_t c = s;
      s = total;
      total += c;
    }
    start.push_back(total);
    pairs.resize(total);
    fill.assign(start.begin(), start.end() - 1);
    for (int32_t e = 0; e < static_cast<int32_t>(traces.size()); ++e) {
      const std::vector<uint32_t>& idx = traces[e].idx[layer];
      for (int32_t p = 0; p < static_cast<int32_t>(idx.size()); ++p) {
        pairs[fill[where[idx[p]]]++] = {e, p};
      }
    }
    for (uint32_t node : nodes) where[node] = -1;
  }
};

// One lazy optimizer step on the union of the weights the batch's examples
// touched, each with the sum of their gradients: per touched node of the
// first layer its whole row, of a later hidden layer the entries of the
// previous layer's nodes that some example paired with it, of the output
// layer its row; the biases of the touched nodes and the output bias.
// Nodes are split among threads (no two update the same weight), and each
// sum runs over the examples in order, so the result does not depend on
// the number of threads.  Under the incremental schedule each touched
// node is then re-hashed by its thread: a first-layer row re-projected, a
// later node's sketch moved by the change of its updated entries.
void UpdateBatch(const Model& m, const Optimizer& opt,
                 const std::vector<Trace>& traces, const float* x,
                 ffi::ThreadPool& pool, int64_t threads) {
  const int64_t depth = m.depth, D = m.D, C = m.C, S = m.S;
  thread_local std::vector<Touched> touched_store;
  std::vector<Touched>& touched = touched_store;
  touched.resize(depth);
  for (int64_t k = 0; k < depth; ++k) {
    touched[k].Build(traces, k, m.slabs[k].dims[0]);
  }
  for (int64_t k = 0; k <= depth; ++k) {
    // The output layer's rows are the last hidden layer's touched nodes.
    const Touched& tk = touched[k < depth ? k : depth - 1];
    const int64_t width = k == 0 ? D : k == depth ? C : m.budgets[k - 1];
    const int64_t n_in = k == 0 ? D : k == depth ? C : m.slabs[k].dims[1];
    float* w = m.slabs[k].w;
    float* b = m.slabs[k].b;
    // The incremental schedule's re-hash of this hidden layer's nodes.
    const Rehasher* rehash =
        k < depth && !m.rehash.empty() ? &m.rehash[k] : nullptr;
    ParallelFor(pool, tk.nodes.size(), threads, 8,
                [&](int64_t begin, int64_t end) {
      PhaseTimer timer(kUpdate);
      thread_local std::vector<float> g, before, after;
      thread_local std::vector<uint32_t> mark, cols;
      thread_local uint32_t stamp = 0;
      if (static_cast<int64_t>(g.size()) < n_in) g.resize(n_in, 0.f);
      if (static_cast<int64_t>(mark.size()) < n_in) mark.resize(n_in, 0);
      for (int64_t j = begin; j < end; ++j) {
        const uint32_t node = tk.nodes[j];
        float gb = 0.f;
        if (k == 0 || k == depth) {  // whole rows: x's features, classes
          std::fill_n(g.begin(), n_in, 0.f);
          for (int64_t q = tk.start[j]; q < tk.start[j + 1]; ++q) {
            const auto [e, p] = tk.pairs[q];
            const Trace& t = traces[e];
            const float* v = k == 0 ? x + e * D : t.dl.data();
            const float s = k == 0 ? t.dz[0][p] : t.a[depth - 1][p];
            for (int64_t c = 0; c < n_in; ++c) g[c] += s * v[c];
            gb += s;
          }
          opt.Row(w + node * S * n_in, n_in, g.data(), 1.f, n_in);
        } else {  // the entries of the previous layer's paired nodes
          if (++stamp == 0) {  // wrapped: clear the marks
            std::fill(mark.begin(), mark.end(), 0);
            stamp = 1;
          }
          cols.clear();
          for (int64_t q = tk.start[j]; q < tk.start[j + 1]; ++q) {
            const auto [e, p] = tk.pairs[q];
            const Trace& t = traces[e];
            const float d = t.dz[k][p];
            const uint32_t* prev = t.idx[k - 1].data();
            const float* a = t.a[k - 1].data();
            for (int64_t c = 0; c < width; ++c) {
              const uint32_t col = prev[c];
              if (mark[col] != stamp) {
                mark[col] = stamp;
                g[col] = 0.f;
                cols.push_back(col);
              }
              g[col] += d * a[c];
            }
            gb += d;
          }
          // In address order (see Columns in alsh_step.h).
          std::sort(cols.begin(), cols.end());
          float* row = w + node * n_in * S;
          before.resize(cols.size());
          after.resize(cols.size());
          for (size_t c = 0; c < cols.size(); ++c) {
            float* e = row + cols[c] * S;
            before[c] = e[0];
            opt.Scalar(e, g[cols[c]]);
            after[c] = e[0];
          }
          if (rehash) {
            timer.Switch(kRehash);
            rehash->Move(node, cols.data(), before.data(), after.data(),
                         cols.size());
            timer.Switch(kUpdate);
          }
        }
        if (k < depth && b) opt.Scalar(b + node * S, gb);
      }
      if (rehash && k == 0) {  // whole rows changed: re-projected
        timer.Switch(kRehash);
        rehash->Reproject(tk.nodes.data() + begin, end - begin, w, S * n_in,
                          1, n_in, nullptr, S);
      }
    });
    if (rehash) {
      PhaseTimer timer(kRehash);
      rehash->Rescale();
    }
  }
  // The output bias: every example's dl.
  PhaseTimer timer(kUpdate);
  if (m.slabs[depth].b == nullptr) return;
  for (int64_t c = 0; c < C; ++c) {
    float gc = 0.f;
    for (const Trace& t : traces) gc += t.dl[c];
    opt.Scalar(m.slabs[depth].b + c * S, gc);
  }
}

// One mini-batch step of B examples: each example's active sets, loss and
// gradients from the weights before the step (on at most `threads`
// threads, examples claimed from a shared counter), then UpdateBatch.  No
// weight is written while any is read, so nothing races, and the result
// does not depend on the number of threads.  With B = 1 it is
// AlshTrainStep's step up to float32 rounding.
ffi::Error TrainBatchImpl(
    ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::S32> labels,
    ffi::BufferR0<ffi::S32> count, ffi::Buffer<ffi::U32> seeds,
    ffi::RemainingArgs args, ffi::ResultBuffer<ffi::F32> loss,
    ffi::ResultBuffer<ffi::S32> colliding, ffi::RemainingRets rets, float lr,
    float b1, float b2, float eps, int32_t activation, float slope,
    ffi::Span<const int64_t> budgets, int64_t threads, int32_t bias,
    int32_t weight_norm, int32_t incremental, int32_t transform,
    float target, float tolerance) {
  const auto xd = x.dimensions();
  if (xd.size() != 2) return ffi::Error::InvalidArgument("need x [B, D]");
  if (weight_norm) {
    return ffi::Error::InvalidArgument(
        "the mini-batch kernel has no weight normalisation; use batch size "
        "1 or --alsh_kernel=xla");
  }
  const int64_t B = xd[0];
  // Kept between calls, per calling thread; the worker threads see them
  // through these references (a lambda naming a thread_local would see its
  // own thread's).
  thread_local Model model;
  thread_local std::vector<Trace> trace_store;
  Model& m = model;
  std::vector<Trace>& traces = trace_store;
  if (auto e = ParseModel(args, rets, budgets, xd[1],
                          Net(bias, weight_norm, incremental, transform, target,
                              tolerance), &m);
      e.failure()) {
    return e;
  }
  if (auto e = CheckExamples(labels, seeds, *loss, *colliding, B, m);
      e.failure()) {
    return e;
  }
  const Activation act{activation, slope};
  traces.resize(B);
  const float inv_batch = 1.f / static_cast<float>(B);
  ParallelFor(pool, B, threads, 1, [&](int64_t begin, int64_t end) {
    for (int64_t e = begin; e < end; ++e) {
      Trace& t = traces[e];
      Forward(m, act, x.typed_data() + e * m.D, labels.typed_data()[e],
              seeds.typed_data() + e * m.depth, 1, &t);
      loss->typed_data()[e] = t.loss;
      std::copy_n(t.colliding.data(), m.depth,
                  colliding->typed_data() + e * m.depth);
      Backward(m, act, inv_batch, &t);
    }
  });
  const Optimizer opt(m.S, *count.typed_data(), lr, b1, b2, eps);
  UpdateBatch(m, opt, traces, x.typed_data(), pool, threads);
  return ffi::Error::Success();
}


}  // namespace

// The names of alsh_select.h's Phase, in order.
SAMPLING_MLP_DEFINE_PROFILE("hash", "select", "forward", "backward", "update",
                            "rehash")

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
    AlshBuildTables, BuildTablesImpl,
    ffi::Ffi::Bind()
        .Ctx<ffi::ThreadPool>()
        .Arg<ffi::Buffer<ffi::F32>>()    // w slab
        .Arg<ffi::Buffer<ffi::F32>>()    // scales [n], or [0]
        .Arg<ffi::Buffer<ffi::F32>>()    // projections [L, K, d]
        .Arg<ffi::Buffer<ffi::F32>>()    // offsets [L, K], or [0]: srp
        .Arg<ffi::BufferR0<ffi::F32>>()  // bucket width
        .Arg<ffi::Buffer<ffi::S32>>()    // multipliers [L, K]
        .Ret<ffi::Buffer<ffi::S32>>()    // tables [L, n]
        .Ret<ffi::Buffer<ffi::F32>>()    // sketches [n, L*K + 1]
        .Ret<ffi::BufferR0<ffi::F32>>()  // the common scale
        .Attr<int64_t>("slot_axis")
        .Attr<int32_t>("transform")
        .Attr<int64_t>("m")
        .Attr<float>("U")
        .Attr<int64_t>("threads"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(
    AlshTrainStep, TrainStepImpl,
    ffi::Ffi::Bind()
        .Arg<ffi::Buffer<ffi::F32>>()    // x [D]
        .Arg<ffi::BufferR0<ffi::S32>>()  // label
        .Arg<ffi::BufferR0<ffi::S32>>()  // count (after this step)
        .Arg<ffi::Buffer<ffi::U32>>()    // seeds [depth]
        .RemainingArgs()                 // slabs, hashes (ParseModel)
        .Ret<ffi::BufferR0<ffi::F32>>()  // loss
        .Ret<ffi::Buffer<ffi::S32>>()    // colliding [depth]
        .RemainingRets()                 // slabs, (tables...) (aliased)
        .Attr<float>("lr")
        .Attr<float>("b1")
        .Attr<float>("b2")
        .Attr<float>("eps")
        .Attr<int32_t>("activation")
        .Attr<float>("slope")
        .Attr<ffi::Span<const int64_t>>("budgets")
        .Attr<int32_t>("bias")
        .Attr<int32_t>("weight_norm")
        .Attr<int32_t>("incremental")
        .Attr<int32_t>("transform")
        .Attr<float>("target")
        .Attr<float>("tolerance"));

// The multi-example kernels: x [N, D], labels [N], the update count of the
// first example (Hogwild) or of the step (Batch), seeds [N, depth]; results
// loss [N], colliding [N, depth], then the slabs (and under the
// incremental schedule the tables, sketches and scales; ParseModel),
// aliased.
#define SAMPLING_MLP_ALSH_MULTI(name, impl)                          \
  XLA_FFI_DEFINE_HANDLER_SYMBOL(                                      \
      name, impl,                                                    \
      ffi::Ffi::Bind()                                               \
          .Ctx<ffi::ThreadPool>()                                    \
          .Arg<ffi::Buffer<ffi::F32>>()                              \
          .Arg<ffi::Buffer<ffi::S32>>()                              \
          .Arg<ffi::BufferR0<ffi::S32>>()                            \
          .Arg<ffi::Buffer<ffi::U32>>()                              \
          .RemainingArgs()                                           \
          .Ret<ffi::Buffer<ffi::F32>>()                              \
          .Ret<ffi::Buffer<ffi::S32>>()                              \
          .RemainingRets()                                           \
          .Attr<float>("lr")                                         \
          .Attr<float>("b1")                                         \
          .Attr<float>("b2")                                         \
          .Attr<float>("eps")                                        \
          .Attr<int32_t>("activation")                               \
          .Attr<float>("slope")                                      \
          .Attr<ffi::Span<const int64_t>>("budgets")                 \
          .Attr<int64_t>("threads")                                  \
          .Attr<int32_t>("bias")                                     \
          .Attr<int32_t>("weight_norm")                              \
          .Attr<int32_t>("incremental")                              \
          .Attr<int32_t>("transform")                                \
          .Attr<float>("target")                                     \
          .Attr<float>("tolerance"))

SAMPLING_MLP_ALSH_MULTI(AlshTrainHogwild, TrainHogwildImpl);
SAMPLING_MLP_ALSH_MULTI(AlshTrainBatch, TrainBatchImpl);
