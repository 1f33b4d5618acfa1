// The optimizer of touched rows, shared by the methods' native kernels:
// lazy Adam (slots p, m, v) or SGD (slot p) of the entries a step touched,
// as sampling_mlp/optim.py defines it (adam_update, slot_update).

#ifndef SAMPLING_MLP_CSRC_OPTIMIZER_H_
#define SAMPLING_MLP_CSRC_OPTIMIZER_H_

#include <cmath>
#include <cstdint>

namespace sampling_mlp {

// The optimizer of the touched entries: lazy Adam (slots p, m, v) or SGD
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

  // Row for two rows p and q at once (gradients s1 * x and s2 * x): two
  // rows' loads in flight, where rows come from scattered places in memory
  // (10-20% faster than one after the other once they are out of cache).
  void Row2(float* __restrict__ p, float* __restrict__ q, int64_t stride,
            const float* __restrict__ x, float s1, float s2,
            int64_t D) const {
    if (!adam) {
      Row(p, stride, x, s1, D);
      Row(q, stride, x, s2, D);
      return;
    }
    float* __restrict__ mp = p + stride;
    float* __restrict__ vp = p + 2 * stride;
    float* __restrict__ mq = q + stride;
    float* __restrict__ vq = q + 2 * stride;
    const float ob1 = 1.f - b1, ob2 = 1.f - b2;
    for (int64_t d = 0; d < D; ++d) {
      const float g = s1 * x[d], h = s2 * x[d];
      const float md = b1 * mp[d] + ob1 * g, nd = b1 * mq[d] + ob1 * h;
      const float vd = b2 * vp[d] + ob2 * (g * g);
      const float wd = b2 * vq[d] + ob2 * (h * h);
      mp[d] = md;
      vp[d] = vd;
      mq[d] = nd;
      vq[d] = wd;
      p[d] -= step * md / (std::sqrt(vd) + eps);
      q[d] -= step * nd / (std::sqrt(wd) + eps);
    }
  }

  // n entries held in separate contiguous arrays p, m, v (m, v unused by
  // SGD), with gradients g.
  void Flat(float* __restrict__ p, float* __restrict__ m,
            float* __restrict__ v, const float* __restrict__ g,
            int64_t n) const {
    if (!adam) {
      for (int64_t d = 0; d < n; ++d) p[d] -= lr * g[d];
      return;
    }
    const float ob1 = 1.f - b1, ob2 = 1.f - b2;
    for (int64_t d = 0; d < n; ++d) {
      const float md = b1 * m[d] + ob1 * g[d];
      const float vd = b2 * v[d] + ob2 * (g[d] * g[d]);
      m[d] = md;
      v[d] = vd;
      p[d] -= step * md / (std::sqrt(vd) + eps);
    }
  }

  // n entries whose slots are interleaved (entry j's at e[j S], e[j S + 1],
  // e[j S + 2]; S = 3 for Adam, 1 for SGD), with gradients g: Scalar of
  // each, in one loop the compiler can vectorise.
  void Interleaved(float* __restrict__ e, const float* __restrict__ g,
                   int64_t n) const {
    if (!adam) {
      for (int64_t j = 0; j < n; ++j) e[j] -= lr * g[j];
      return;
    }
    const float ob1 = 1.f - b1, ob2 = 1.f - b2;
#pragma omp simd
    for (int64_t j = 0; j < n; ++j) {
      float* x = e + 3 * j;
      const float md = b1 * x[1] + ob1 * g[j];
      const float vd = b2 * x[2] + ob2 * (g[j] * g[j]);
      x[1] = md;
      x[2] = vd;
      x[0] -= step * md / (std::sqrt(vd) + eps);
    }
  }

  // One entry whose slots are adjacent (p[0], p[1], p[2]), gradient g.
  void Scalar(float* p, float g) const {
    if (!adam) {
      p[0] -= lr * g;
      return;
    }
    const float md = b1 * p[1] + (1.f - b1) * g;
    const float vd = b2 * p[2] + (1.f - b2) * (g * g);
    p[1] = md;
    p[2] = vd;
    p[0] -= step * md / (std::sqrt(vd) + eps);
  }
};

}  // namespace sampling_mlp

#endif  // SAMPLING_MLP_CSRC_OPTIMIZER_H_
