"""MC-APPROX inside convolutions: sampled input channels (pure kernels).

A convolution is a sum over input channels of per-channel convolutions,
``conv(x, w) = sum_t conv(x[..., t], w[:, :, t, :])``, so it is a matrix
product whose column-row pairs are indexed by input channel (Adelman, Levy,
Golan and Silberstein 2021, Sec. 3.2).  MC-APPROX estimates it from ``c``
sampled channels with the samplers of :mod:`.kernels` (the same four, the
same probabilities from ``||x[..., t]|| ||w[:, :, t, :]||``, the norms over
the batch and spatial positions), in the same three modes:

* ``forward``: the sampled channels are gathered, ``x[..., idx] * scale``
  and ``w[:, :, idx, :]``, and one smaller ``lax.conv_general_dilated``
  runs on them: the product, its input gradient and its weight gradient all
  cost ``s / n`` of the exact ones (``s`` the sample's static size, see
  ``kernels.num_slots``; a Bernoulli sample is convolved in the smallest of
  a few static sizes that holds its kept channels, :func:`bucketed_conv`).
  Backpropagation goes through the sampled channels only.
* ``backward``: exact forward convolution; the input gradient is sampled
  over output channels and the weight gradient over the batch.
* ``blackbox``: sampled forward convolution, exact backward.

Layout: NHWC inputs ``x`` [B, H, W, n], HWIO weights ``w`` [kh, kw, n, m];
``stride``, ``padding`` and ``dilation`` (of the kernel) as in
``jax.lax.conv_general_dilated``.

Closed-form errors: unlike a matrix product's pairs, a channel's
contribution ``Y_t = conv(x[..., t], w[:, :, t, :])`` is not a rank-one
product, so ``||Y_t||`` is not ``||x_t|| ||w_t||``; the errors here are
those of the general sampled sum with the per-channel outputs computed
(:func:`channel_outputs`).
"""

from __future__ import annotations

import functools
import math
from typing import Sequence, Union

import jax
import jax.numpy as jnp

from sampling_mlp.methods.mc import kernels

Padding = Union[str, Sequence[tuple[int, int]]]
DIMENSION_NUMBERS = ("NHWC", "HWIO", "NHWC")


def _check_conv(x: jax.Array, w: jax.Array) -> tuple[int, int]:
  if x.ndim != 4 or w.ndim != 4 or x.shape[3] != w.shape[2]:
    raise ValueError(
        f"Expected x [B, H, W, n] (NHWC) and w [kh, kw, n, m] (HWIO) with the "
        f"same n, got x{tuple(x.shape)} and w{tuple(w.shape)}.")
  return x.shape[3], w.shape[3]


def _pair(name: str, value) -> tuple[int, int]:
  if isinstance(value, int) and not isinstance(value, bool):
    value = (value, value)
  if (not isinstance(value, (tuple, list)) or len(value) != 2
      or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1
                 for v in value)):
    raise ValueError(f"{name} must be an int >= 1 or a pair of them, got "
                     f"{value!r}.")
  return tuple(value)


def conv(x: jax.Array, w: jax.Array, *, stride=1, padding: Padding = "SAME",
         dilation=1) -> jax.Array:
  """The exact convolution ``x`` [B, H, W, n] * ``w`` [kh, kw, n, m] ->
  [B, H', W', m]: ``lax.conv_general_dilated`` (NHWC / HWIO), which is the
  definition, with its two gradients computed by :func:`conv_input_grad`
  and :func:`conv_weight_grad` (equal to autodiff's, tested).

  Why not autodiff's: XLA's CPU backend runs the convolutions that
  ``lax.conv_general_dilated``'s transpose rules emit (reversed,
  transposed kernels; the batch as the contracted dimension) 10-20 times
  slower inside a ``lax.scan`` than outside one, and the training loop
  scans over batches.  The forms here are an ordinary convolution and
  matrix products, fast in both places (``docs/DESIGN.md``).
  """
  _check_conv(x, w)
  return _conv(x, w, _conv_kw(stride, padding, dilation))


def _lax_conv(x, w, conv_kw):
  kw = dict(conv_kw)
  return jax.lax.conv_general_dilated(
      x, w, window_strides=kw["stride"], padding=kw["padding"],
      rhs_dilation=kw["dilation"], dimension_numbers=DIMENSION_NUMBERS)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _conv(x, w, conv_kw):
  return _lax_conv(x, w, conv_kw)


def _conv_fwd(x, w, conv_kw):
  return _lax_conv(x, w, conv_kw), (x, w)


def _conv_bwd(conv_kw, res, dy):
  x, w = res
  kw = dict(conv_kw)
  return (conv_input_grad(dy, w, x_shape=x.shape, **kw).astype(x.dtype),
          conv_weight_grad(x, dy, kernel=w.shape[:2], **kw).astype(w.dtype))


_conv.defvjp(_conv_fwd, _conv_bwd)


def explicit_padding(x_shape: Sequence[int], kernel: Sequence[int], *,
                     stride, padding: Padding, dilation
                     ) -> tuple[tuple[int, int], tuple[int, int]]:
  """``padding`` ("SAME", "VALID" or pairs) as ((lo, hi), (lo, hi)) of the
  two spatial dimensions, as ``lax.conv_general_dilated`` resolves it."""
  stride, dilation = _pair("stride", stride), _pair("dilation", dilation)
  if isinstance(padding, str):
    window = [d * (k - 1) + 1 for k, d in zip(kernel, dilation)]
    return tuple(tuple(p) for p in jax.lax.padtype_to_pads(
        tuple(x_shape[1:3]), window, stride, padding))
  return tuple((int(lo), int(hi)) for lo, hi in padding)


def conv_input_grad(dy: jax.Array, w: jax.Array, *, x_shape: Sequence[int],
                    stride=1, padding: Padding = "SAME", dilation=1
                    ) -> jax.Array:
  """``d conv(x, w) / d x`` applied to ``dy`` [B, H', W', m]: [B, H, W, n].

  ``dx[i] = sum_j dy~[i + lo - j d] w[j]`` with ``dy~`` the output
  gradient spread to stride 1 (zeros between), so ``dx`` is a stride-1
  convolution of ``dy~`` padded by ``lo = d (k - 1) - p_lo`` and ``hi = H
  + p_lo - (H' - 1) s - 1`` with the kernel reversed in space and its
  channels swapped (one ``lax.pad`` does the spreading and padding).
  """
  stride, dilation = _pair("stride", stride), _pair("dilation", dilation)
  kernel = w.shape[:2]
  pads = explicit_padding(x_shape, kernel, stride=stride, padding=padding,
                          dilation=dilation)
  spec = [(0, 0, 0)]
  for a in range(2):
    (p_lo, _), k, s, d = pads[a], kernel[a], stride[a], dilation[a]
    size, out = x_shape[1 + a], dy.shape[1 + a]
    spec.append((d * (k - 1) - p_lo, size + p_lo - (out - 1) * s - 1, s - 1))
  spec.append((0, 0, 0))
  spread = jax.lax.pad(dy, jnp.zeros((), dy.dtype), spec)
  w_t = jnp.swapaxes(jnp.flip(w, (0, 1)), 2, 3)
  return jax.lax.conv_general_dilated(
      spread, w_t, window_strides=(1, 1), padding="VALID",
      rhs_dilation=dilation, dimension_numbers=DIMENSION_NUMBERS)


def conv_weight_grad(x: jax.Array, dy: jax.Array, *, kernel: Sequence[int],
                     stride=1, padding: Padding = "SAME", dilation=1
                     ) -> jax.Array:
  """``d conv(x, w) / d w`` applied to ``dy`` [B, H', W', m]: [kh, kw, n,
  m].

  ``dw[i, j] = sum_{b, o} xp[b, o s + (i, j) d] dy[b, o]`` with ``xp`` the
  padded input: one matrix product of the kh kw strided windows of ``xp``,
  side by side ([B H' W', kh kw n]), with ``dy`` ([B H' W', m]).
  """
  stride, dilation = _pair("stride", stride), _pair("dilation", dilation)
  kh, kw = kernel
  b, out_h, out_w, m = dy.shape
  n = x.shape[3]
  pads = explicit_padding(x.shape, kernel, stride=stride, padding=padding,
                          dilation=dilation)
  xp = jax.lax.pad(x, jnp.zeros((), x.dtype),
                   [(0, 0, 0), pads[0] + (0,), pads[1] + (0,), (0, 0, 0)])
  windows = [
      jax.lax.slice(xp, (0, i * dilation[0], j * dilation[1], 0),
                    (b, i * dilation[0] + (out_h - 1) * stride[0] + 1,
                     j * dilation[1] + (out_w - 1) * stride[1] + 1, n),
                    (1, stride[0], stride[1], 1))
      for i in range(kh) for j in range(kw)]
  cols = jnp.concatenate(windows, axis=3).reshape(-1, kh * kw * n)
  dw = jnp.dot(cols.T, dy.reshape(-1, m),
               preferred_element_type=jnp.promote_types(x.dtype, dy.dtype))
  return dw.reshape(kh, kw, n, m).astype(jnp.result_type(x, dy))


def channel_weights(x: jax.Array, w: jax.Array,
                    w_norms: jax.Array | None = None) -> jax.Array:
  """The sampling weights of the n channel pairs, [n] float32:
  ``||x[..., t]||`` (over batch and positions) ``* ||w[:, :, t, :]||``."""
  xn = kernels.norms(x.reshape(-1, x.shape[-1]), axis=0)
  if w_norms is None:
    w_norms = kernels.norms(jnp.moveaxis(w, 2, 0).reshape(w.shape[2], -1),
                            axis=1)
  return xn * w_norms


def sample_channels(key: jax.Array, x: jax.Array, w: jax.Array, *,
                    num_samples: int, sampler: str, with_count: bool = False
                    ) -> tuple[jax.Array, ...]:
  """Samples input channels for the estimate
  ``conv(x[..., idx] * scale, w[:, :, idx, :])``.

  Args:
    key: typed PRNG key (unused by ``topk``).
    x: [B, H, W, n].
    w: [kh, kw, n, m].
    num_samples: c, a Python int in [1, n].
    sampler: one of ``kernels.SAMPLERS``.

    with_count: also return the kept count (int32 []; c but for
      ``bernoulli``).

  Returns:
    ``(idx, scale)``: int32 [s] and [s] in x's dtype, s =
    ``kernels.num_slots(n, num_samples=c, sampler=sampler)``; no gradient.
  """
  if sampler not in kernels.SAMPLERS:
    raise ValueError(f"Unknown sampler {sampler!r}; valid samplers are "
                     f"{kernels.SAMPLERS}.")
  n, _ = _check_conv(x, w)
  c = kernels._check_int("num_samples", num_samples, minimum=1)  # pylint: disable=protected-access
  if c > n:
    raise ValueError(f"num_samples must be in [1, n = {n}] input channels, "
                     f"got {c}; mc_conv treats num_samples >= n as exact.")
  weights = None
  if sampler != "uniform":
    with jax.named_scope("probabilities"):
      weights = channel_weights(jax.lax.stop_gradient(x),
                                jax.lax.stop_gradient(w))
  with jax.named_scope("draw"):
    idx, scale, count = kernels.sample_from_weights(
        key, weights, n=n, num_samples=c, sampler=sampler)
  if with_count:
    return idx, scale.astype(x.dtype), count
  return idx, scale.astype(x.dtype)


def gathered_conv(x: jax.Array, w: jax.Array, idx: jax.Array,
                  scale: jax.Array, **conv_kw) -> jax.Array:
  """``conv(x[..., idx] * scale, w[:, :, idx, :])``: the smaller
  convolution of the sampled channels, [B, H', W', m]."""
  with jax.named_scope("gather"):
    xs = x[..., idx] * scale
    ws = w[:, :, idx, :]
  with jax.named_scope("product"):
    return conv(xs, ws, **conv_kw)


def bernoulli_buckets(n: int, num_samples: int) -> tuple[int, ...]:
  """Static channel counts a Bernoulli sample is convolved in: ``c +
  ceil(j sqrt(c))`` for j = 1, 2, 3, and the whole buffer
  (``kernels.bernoulli_buffer_size``), each at most n, ascending.

  The kept count K has mean c and variance at most c, so the first holds it
  about 84% of the time and the second about 98% (normal approximation);
  convolving the buffer's s slots every time (s = c + 6 sqrt(c) + 8) would
  cost several times c when c is small, as it is in a CNN's first stages
  (c = 4 of 32 channels gives s = 24).
  """
  c = num_samples
  s = kernels.bernoulli_buffer_size(n, c)
  return tuple(sorted({min(s, c + math.ceil(j * math.sqrt(c)))
                       for j in (1, 2, 3)} | {s}))


def bucketed_conv(x: jax.Array, w: jax.Array, idx: jax.Array,
                  scale: jax.Array, count: jax.Array, *,
                  buckets: Sequence[int], **conv_kw) -> jax.Array:
  """:func:`gathered_conv` of the first ``k`` slots, ``k`` the smallest of
  ``buckets`` holding ``count`` (the last one if none does): a Bernoulli
  buffer holds its kept channels first and zero-scale slots after them
  (``kernels.sample_from_weights``), so this is the same estimate at the
  cost of k channels.  ``lax.switch`` runs only the chosen size's
  convolution (and its gradient)."""
  sizes = jnp.asarray(buckets, jnp.int32)
  branch = jnp.minimum(jnp.searchsorted(sizes, count), len(buckets) - 1)
  branches = [functools.partial(
      lambda x, w, idx, scale, k: gathered_conv(x, w, idx[:k], scale[:k],
                                                **conv_kw), k=k)
              for k in buckets]
  return jax.lax.switch(branch, branches, x, w, idx, scale)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5))
def _blackbox(key, x, w, num_samples, sampler, conv_kw):
  idx, scale = sample_channels(key, x, w, num_samples=num_samples,
                               sampler=sampler)
  return gathered_conv(x, w, idx, scale, **dict(conv_kw))


def _blackbox_fwd(key, x, w, num_samples, sampler, conv_kw):
  return _blackbox(key, x, w, num_samples, sampler, conv_kw), (x, w)


def _blackbox_bwd(num_samples, sampler, conv_kw, res, dy):
  del num_samples, sampler
  x, w = res
  _, vjp = jax.vjp(lambda x, w: conv(x, w, **dict(conv_kw)), x, w)
  dx, dw = vjp(dy)
  return None, dx, dw


_blackbox.defvjp(_blackbox_fwd, _blackbox_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5))
def _backward_sampled(key, x, w, num_samples_bwd, sampler, conv_kw):
  del key, num_samples_bwd, sampler
  return conv(x, w, **dict(conv_kw))


def _backward_sampled_fwd(key, x, w, num_samples_bwd, sampler, conv_kw):
  return conv(x, w, **dict(conv_kw)), (key, x, w)


def _backward_sampled_bwd(num_samples_bwd, sampler, conv_kw, res, dy):
  key, x, w = res
  kw = dict(conv_kw)
  batch, m = x.shape[0], w.shape[3]
  c_m, c_b = num_samples_bwd
  key_dx, key_dw = jax.random.split(key)
  # dx = sum_j conv_T(dy[..., j], w[..., j]): pairs over the m outputs.
  if c_m >= m:
    wj, dyj = w, dy
  else:
    weights = None if sampler == "uniform" else (
        kernels.norms(dy.reshape(-1, m), axis=0)
        * kernels.norms(w.reshape(-1, m), axis=0))
    idx, scale, _ = kernels.sample_from_weights(key_dx, weights, n=m,
                                                num_samples=c_m,
                                                sampler=sampler)
    wj, dyj = w[..., idx], dy[..., idx] * scale.astype(dy.dtype)
  _, vjp_x = jax.vjp(lambda x: conv(x, wj, **kw), x)
  (dx,) = vjp_x(dyj)
  # dw = sum_b corr(x[b], dy[b]): pairs over the batch.
  if c_b >= batch:
    xb, dyb = x, dy
  else:
    weights = None if sampler == "uniform" else (
        kernels.norms(x.reshape(batch, -1), axis=1)
        * kernels.norms(dy.reshape(batch, -1), axis=1))
    idx, scale, _ = kernels.sample_from_weights(key_dw, weights, n=batch,
                                                num_samples=c_b,
                                                sampler=sampler)
    xb = x[idx] * scale.astype(x.dtype)[:, None, None, None]
    dyb = dy[idx]
  _, vjp_w = jax.vjp(lambda w: conv(xb, w, **kw), w)
  (dw,) = vjp_w(dyb)
  return None, dx, dw


_backward_sampled.defvjp(_backward_sampled_fwd, _backward_sampled_bwd)


def _conv_kw(stride, padding, dilation) -> tuple:
  """The convolution's settings as a hashable, static tuple."""
  if not isinstance(padding, str):
    padding = tuple(tuple(int(v) for v in p) for p in padding)
  return (("stride", _pair("stride", stride)), ("padding", padding),
          ("dilation", _pair("dilation", dilation)))


def mc_conv(key: jax.Array, x: jax.Array, w: jax.Array, *, num_samples: int,
            sampler: str, mode: str = "forward", stride=1,
            padding: Padding = "SAME", dilation=1,
            num_samples_backward: tuple[int, int] | None = None
            ) -> jax.Array:
  """Monte-Carlo approximation of ``conv(x, w)`` over input channels.

  Keys as in ``kernels.mc_matmul``: ``forward`` and ``blackbox`` draw the
  channels with :func:`sample_channels`; ``backward`` splits ``key_dx,
  key_dw = jax.random.split(key)`` for its two backward products.

  Args:
    key: typed PRNG key; its cotangent is None.
    x: [B, H, W, n] (NHWC).
    w: [kh, kw, n, m] (HWIO).
    num_samples: c, a Python int >= 1; ``c >= n`` is the exact convolution
      with exact gradients (in ``backward`` mode only when
      ``num_samples_backward`` is None).
    sampler: one of ``kernels.SAMPLERS``.
    mode: one of ``kernels.MODES``.
    stride, padding, dilation: as ``lax.conv_general_dilated``'s
      ``window_strides``, ``padding`` and ``rhs_dilation``.
    num_samples_backward: ``backward`` mode only: ``(c_m, c_b)``, the pairs
      of the input gradient (over m output channels) and of the weight
      gradient (over the B examples); default
      ``kernels.backward_num_samples(B, n, m, num_samples=c)``.

  Returns:
    [B, H', W', m], the estimate (exact in ``backward`` mode).
  """
  if sampler not in kernels.SAMPLERS:
    raise ValueError(f"Unknown sampler {sampler!r}; valid samplers are "
                     f"{kernels.SAMPLERS}.")
  if mode not in kernels.MODES:
    raise ValueError(f"Unknown mode {mode!r}; valid modes are "
                     f"{kernels.MODES}.")
  n, m = _check_conv(x, w)
  c = kernels._check_int("num_samples", num_samples, minimum=1)  # pylint: disable=protected-access
  conv_kw = _conv_kw(stride, padding, dilation)
  kw = dict(conv_kw)
  if num_samples_backward is not None and mode != "backward":
    raise ValueError("num_samples_backward is only used in mode 'backward', "
                     f"got mode {mode!r}.")
  if mode == "backward":
    if num_samples_backward is None:
      c_m, c_b = kernels.backward_num_samples(x.shape[0], n, m,
                                              num_samples=min(c, n))
      if c >= n:
        return conv(x, w, **kw)
    else:
      c_m, c_b = (kernels._check_int(f"num_samples_backward[{i}]", v,  # pylint: disable=protected-access
                                     minimum=1)
                  for i, v in enumerate(num_samples_backward))
    if c_m >= m and c_b >= x.shape[0]:
      return conv(x, w, **kw)
    return _backward_sampled(key, x, w, (min(c_m, m), min(c_b, x.shape[0])),
                             sampler, conv_kw)
  if c >= n:
    return conv(x, w, **kw)
  if mode == "forward":
    if sampler == "bernoulli":
      idx, scale, count = sample_channels(key, x, w, num_samples=c,
                                          sampler=sampler, with_count=True)
      return bucketed_conv(x, w, idx, scale, count,
                           buckets=bernoulli_buckets(n, c), **kw)
    idx, scale = sample_channels(key, x, w, num_samples=c, sampler=sampler)
    return gathered_conv(x, w, idx, scale, **kw)
  return _blackbox(key, x, w, c, sampler, conv_kw)


# ---------------------------------------------------------------------------
# Closed-form errors.


def channel_outputs(x: jax.Array, w: jax.Array, **conv_kw) -> jax.Array:
  """Each input channel's contribution ``conv(x[..., t], w[:, :, t, :])``,
  [n, B, H', W', m] in float32 (they sum to ``conv(x, w)``)."""
  x32, w32 = x.astype(jnp.float32), w.astype(jnp.float32)
  return jnp.stack([conv(x32[..., t:t + 1], w32[:, :, t:t + 1, :], **conv_kw)
                    for t in range(x.shape[3])])


def exact_mse(x: jax.Array, w: jax.Array, *, num_samples: int, sampler: str,
              **conv_kw) -> jax.Array:
  """``E ||conv(x, w) - estimate||_F^2`` of forward-mode sampling, a float32
  scalar, with ``Y_t`` the channel outputs (:func:`channel_outputs`), ``Y``
  their sum and ``p``, ``q`` the sampler's probabilities from
  :func:`channel_weights`:

  * ``crs``: ``(1/c) (sum_t ||Y_t||^2 / p_t - ||Y||^2)`` (Drineas et al.
    2006, Lemma 4, before the rank-one simplification);
  * ``uniform``: the same with ``p_t = 1/n``;
  * ``bernoulli``: ``sum_t (1 - q_t) / q_t ||Y_t||^2`` (untruncated buffer).

  ``topk`` is deterministic: its squared bias ``||sum_{t not kept} Y_t||^2``.
  """
  n = x.shape[3]
  ys = channel_outputs(x, w, **conv_kw)
  sq = jnp.sum(ys.reshape(n, -1) ** 2, axis=1)
  total = jnp.sum(jnp.sum(ys, axis=0) ** 2)
  weights = channel_weights(x, w)
  c = num_samples
  if sampler == "crs" or sampler == "uniform":
    p = (kernels.crs_probs(weights) if sampler == "crs"
         else jnp.full((n,), 1.0 / n))
    ratio = jnp.where(sq > 0, sq / jnp.where(p > 0, p, 1.0), 0.0)
    return (jnp.sum(ratio) - total) / c
  if sampler == "bernoulli":
    q = kernels.bernoulli_probs(weights, num_samples=c)
    return jnp.sum(jnp.where(sq > 0, (1.0 - q) / q * sq, 0.0))
  if sampler == "topk":
    _, idx = jax.lax.top_k(weights, c)
    dropped = jnp.ones((n,), bool).at[idx].set(False)
    rest = jnp.sum(jnp.where(dropped[:, None], ys.reshape(n, -1), 0.0), axis=0)
    return jnp.sum(rest ** 2)
  raise ValueError(f"Unknown sampler {sampler!r}; valid samplers are "
                   f"{kernels.SAMPLERS}.")


def conv_flops(x_shape: Sequence[int], w_shape: Sequence[int],
               out_shape: Sequence[int]) -> int:
  """Multiply-adds of one exact convolution: ``B H' W' m kh kw n``."""
  b, h, wd, m = out_shape
  kh, kw, n, _ = w_shape
  del x_shape
  return int(b * h * wd * m * kh * kw * n)
