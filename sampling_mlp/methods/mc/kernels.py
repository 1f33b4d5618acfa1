"""MC-APPROX: Monte-Carlo approximate matrix products (pure kernels).

The product of activations `a` [B, n] and weights `w` [n, m] is a sum of n
outer products of column-row pairs, `a @ w = sum_t a[:, t] w[t, :]`. MC-APPROX
estimates it from `c` sampled pairs (Drineas, Kannan and Mahoney 2006, "Fast
Monte Carlo algorithms for matrices I"; Adelman, Levy, Golan and Silberstein
2021, "Faster neural network training with approximate tensor operations").

Every sampler returns pair indices and per-pair scales with a static size, and
the estimate is always formed by gathering the sampled columns/rows and
multiplying the small matrices, `(a[:, idx] * scale) @ w[idx]`: the cost is
O(B c m), never that of a masked full product.

Samplers (`SAMPLERS`):

* `crs`: c draws with replacement, `p_t ∝ ||a[:, t]|| ||w[t, :]||`, scale
  `1 / (c p_t)`. Unbiased (Drineas et al. 2006, Lemma 3).
* `bernoulli`: pair t kept independently with `q_t = min(1, alpha p_t)`,
  `sum_t q_t = c`, scale `1 / q_t`. Unbiased (Adelman et al. 2021).
* `topk`: the c pairs with the largest norm products, scale 1. Biased.
* `uniform`: c draws with replacement, `p_t = 1/n`, scale `n / c`. Unbiased.

Where the sampling happens (`MODES`, Adelman et al. 2021, Sec. 4):

* `forward`: sampled forward product; backpropagation through the sampled
  pairs only (the weight gradient is non-zero only on sampled rows).
* `backward`: exact forward product; the two backward products
  `da = dz @ w.T` (sampled over m) and `dw = a.T @ dz` (sampled over B).
* `blackbox`: sampled forward product, exact backward products.

Sample sizes follow the MC code's `sample_ratio` / `minimal_k` knobs, see
`num_samples_for`. Deliberate differences from the authors' public code: the
Bernoulli probabilities are water-filled so that exactly c pairs are expected
(their code clips `c p_t` at 1 without redistributing), and no epsilon-uniform
mixing is applied to the sampling probabilities.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp

SAMPLERS = ("crs", "bernoulli", "topk", "uniform")
MODES = ("forward", "backward", "blackbox")


# ---------------------------------------------------------------------------
# Hyperparameters and static sizes.


def _check_int(name: str, value: Any, *, minimum: int) -> int:
  if isinstance(value, bool) or not isinstance(value, int):
    raise ValueError(
        f"{name} must be a Python int >= {minimum} (it fixes a static shape "
        f"under jit), got {value!r} of type {type(value).__name__}.")
  if value < minimum:
    raise ValueError(f"{name} must be >= {minimum}, got {value}.")
  return value


def _check_sampler(sampler: str) -> None:
  if sampler not in SAMPLERS:
    raise ValueError(
        f"Unknown sampler {sampler!r}; valid samplers are {SAMPLERS}.")


def _check_mode(mode: str) -> None:
  if mode not in MODES:
    raise ValueError(f"Unknown mode {mode!r}; valid modes are {MODES}.")


def num_samples_for(n: int, *, ratio: float, min_k: int) -> int:
  """Number of column-row pairs to sample, `sample_ratio`/`minimal_k` style.

  `c = min(n, max(min_k, ceil(ratio * n)))`, and at least 1. The authors' code
  rounds `ratio * n` down (`int(...)`); rounding up guarantees c >= 1 for any
  ratio in (0, 1]. The two differ by at most one pair.

  Args:
    n: size of the summed dimension (number of column-row pairs), >= 1.
    ratio: fraction of the pairs to sample, in (0, 1].
    min_k: minimum number of pairs, >= 0.

  Returns:
    c, a Python int in [1, n]. `c == n` means the exact product.
  """
  _check_int("n", n, minimum=1)
  if isinstance(ratio, bool) or not isinstance(ratio, (int, float)):
    raise ValueError(f"ratio must be a float in (0, 1], got {ratio!r}.")
  if not 0.0 < ratio <= 1.0:
    raise ValueError(
        f"ratio must be in (0, 1] (the fraction of column-row pairs to "
        f"sample), got {ratio}.")
  if isinstance(min_k, bool) or not isinstance(min_k, int) or min_k < 0:
    raise ValueError(
        f"min_k must be an int >= 0 (the minimum number of pairs), got "
        f"{min_k!r}.")
  # round() first so that e.g. 0.1 * 30 = 3.0000000000000004 gives 3, not 4.
  c = math.ceil(round(ratio * n, 9))
  return max(1, min(n, max(min_k, c)))


def bernoulli_buffer_size(n: int, num_samples: int) -> int:
  """Static number of slots of a Bernoulli sample, `min(n, c + margin)`.

  `margin = ceil(6 sqrt(c)) + 8`. The kept count K is a sum of independent
  Bernoulli variables with mean c and variance `sum_t q_t (1 - q_t) <= c`, so
  by Bernstein's inequality, with `t = margin + 1`,
  `P(K > c + margin) <= exp(-t^2 / (2 (c + t / 3))) <= exp(-18) < 2e-8` for
  every c >= 1.

  Args:
    n: number of column-row pairs.
    num_samples: expected number of kept pairs c, in [1, n].

  Returns:
    The buffer size s, a Python int in [c, n].
  """
  _check_int("n", n, minimum=1)
  _check_int("num_samples", num_samples, minimum=1)
  margin = math.ceil(6.0 * math.sqrt(num_samples)) + 8
  return min(n, num_samples + margin)


def num_slots(n: int, *, num_samples: int, sampler: str) -> int:
  """Static output size s of `sample_pairs` (c, or the Bernoulli buffer)."""
  _check_sampler(sampler)
  if sampler == "bernoulli":
    return bernoulli_buffer_size(n, num_samples)
  return num_samples


def backward_num_samples(batch: int, n: int, m: int, *,
                         num_samples: int) -> tuple[int, int]:
  """Default sample sizes of the two backward products in `backward` mode.

  The same fraction `c / n` of each summed dimension, at least 1 pair:
  `c_m` pairs over m for `da = dz @ w.T` and `c_b` pairs over the batch for
  `dw = a.T @ dz`.

  Args:
    batch: batch size B.
    n: input width (summed dimension of the forward product).
    m: output width.
    num_samples: forward sample size c (>= n means exact).

  Returns:
    `(c_m, c_b)`, Python ints in [1, m] and [1, batch].
  """
  for name, value in (("batch", batch), ("n", n), ("m", m),
                      ("num_samples", num_samples)):
    _check_int(name, value, minimum=1)
  ratio = min(1.0, num_samples / n)
  return (num_samples_for(m, ratio=ratio, min_k=1),
          num_samples_for(batch, ratio=ratio, min_k=1))


def _check_operands(a: jax.Array, w: jax.Array) -> tuple[int, int, int]:
  if a.ndim != 2 or w.ndim != 2 or a.shape[1] != w.shape[0]:
    raise ValueError(
        f"Expected a [B, n] and w [n, m], got a{tuple(a.shape)} and "
        f"w{tuple(w.shape)}.")
  return a.shape[0], a.shape[1], w.shape[1]


# ---------------------------------------------------------------------------
# Sampling probabilities.


def pair_norms(a: jax.Array, w: jax.Array) -> jax.Array:
  """Norm products of the column-row pairs.

  Args:
    a: [B, n].
    w: [n, m].

  Returns:
    [n] float32, `||a[:, t]|| * ||w[t, :]||`.
  """
  return norms(a, axis=0) * norms(w, axis=1)


def crs_probs(weights: jax.Array) -> jax.Array:
  """Normalised CRS probabilities; uniform when all weights are zero.

  Args:
    weights: [n] non-negative (e.g. `pair_norms`).

  Returns:
    [n] float32 probabilities summing to 1.
  """
  weights = weights.astype(jnp.float32)
  total = jnp.sum(weights)
  n = weights.shape[0]
  return jnp.where(total > 0, weights / jnp.where(total > 0, total, 1.0),
                   jnp.full_like(weights, 1.0 / n))


def bernoulli_probs(weights: jax.Array, *, num_samples: int) -> jax.Array:
  """Keep probabilities `q_t = min(1, alpha p_t)` with `sum_t q_t = c`.

  `alpha` is found in closed form after sorting (water-filling): with p sorted
  in descending order and `tail_j = sum_{i >= j} p_(i)`, the number of
  clipped pairs is the smallest j < c with `(c - j) p_(j) <= tail_j`, and
  `alpha = (c - j) / tail_j` (the inclusion probabilities of Poisson sampling
  proportional to size; Adelman et al. 2021 clip without redistributing).
  When fewer than c pairs have a non-zero weight, those all get q = 1 and the
  remaining mass `c - nnz` is spread uniformly over the zero-weight pairs
  (they contribute nothing to the product), so `sum q = c` always; all-zero
  weights give the uniform `q = c / n`.

  Args:
    weights: [n] non-negative weights (unnormalised, e.g. `pair_norms`).
    num_samples: c, a Python int in [1, n].

  Returns:
    [n] float32 probabilities in [0, 1] summing to c.
  """
  n = weights.shape[0]
  c = _check_int("num_samples", num_samples, minimum=1)
  if c > n:
    raise ValueError(
        f"num_samples must be <= n = {n} for Bernoulli sampling, got {c}.")
  weights = jnp.maximum(weights.astype(jnp.float32), 0.0)
  p = crs_probs(weights)
  order = jnp.argsort(-p)
  ps = p[order]  # descending
  tail = jnp.cumsum(ps[::-1])[::-1]  # tail[j] = sum(ps[j:])
  j = jnp.arange(c)
  # Always true at j = c - 1 (tail includes ps[c-1]), so argmax finds one.
  fits = (c - j) * ps[:c] <= tail[:c]
  clipped = jnp.argmax(fits)
  tail_j = tail[clipped]
  alpha = (c - clipped) / jnp.where(tail_j > 0, tail_j, 1.0)
  rank = jnp.arange(n)
  q_sorted = jnp.where(rank < clipped, 1.0, jnp.minimum(1.0, alpha * ps))
  q_fill = jnp.zeros(n, jnp.float32).at[order].set(q_sorted)

  nnz = jnp.sum(weights > 0)
  spread = (c - nnz) / jnp.maximum(n - nnz, 1)
  q_sparse = jnp.where(weights > 0, 1.0, spread).astype(jnp.float32)
  return jnp.where(nnz >= c, q_fill, q_sparse)


# ---------------------------------------------------------------------------
# Sampling column-row pairs.


def _sample_bernoulli(key, weights, c, s):
  """Bernoulli draws into a buffer of s slots; see `bernoulli_buffer_size`."""
  n = weights.shape[0]
  q = bernoulli_probs(weights, num_samples=c)
  u = jax.random.uniform(key, (n,), jnp.float32)
  keep = u < q
  count = jnp.sum(keep, dtype=jnp.int32)
  q_safe = jnp.where(q > 0, q, 1.0)
  # Given that pair t is kept (u_t < q_t), u_t / q_t is uniform on [0, 1) and
  # independent of the other pairs, so it serves as a random order: on
  # overflow the buffer holds all clipped pairs (q = 1, at most c <= s of
  # them, ranked first) and a uniformly random subset of the other kept ones.
  priority = jnp.where(keep, jnp.where(q >= 1.0, -1.0, u / q_safe), 2.0)
  _, idx = jax.lax.top_k(-priority, s)
  valid = keep[idx]
  scale = jnp.where(valid, 1.0 / q_safe[idx], 0.0)
  return idx, scale, count


def sample_from_weights(key: jax.Array, weights: jax.Array | None, *, n: int,
                        num_samples: int, sampler: str
                        ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Draws c of n column-row pairs from their norm products.

  Args:
    key: typed PRNG key (unused by `topk`).
    weights: [n] non-negative norm products `||a[:, t]|| ||w[t, :]||`
      (None for `uniform`, which reads none).
    n: the number of pairs.
    num_samples: c, a Python int in [1, n].
    sampler: one of `SAMPLERS`.

  Returns:
    `(idx, scale, count)`: int32 [s], float32 [s] (see `sample_pairs`), and
    the pairs kept before truncation to the buffer (c but for `bernoulli`).
  """
  c = num_samples
  if sampler == "bernoulli":
    idx, scale, count = _sample_bernoulli(key, weights, c,
                                          bernoulli_buffer_size(n, c))
    return idx.astype(jnp.int32), scale, count
  if sampler == "crs":
    p = crs_probs(weights)
    idx = jax.random.choice(key, n, (c,), replace=True, p=p)
    p_idx = p[idx]
    # Zero-probability pairs are never drawn; the guard only avoids inf.
    scale = 1.0 / (c * jnp.where(p_idx > 0, p_idx, 1.0))
  elif sampler == "uniform":
    idx = jax.random.randint(key, (c,), 0, n)
    scale = jnp.full((c,), n / c, jnp.float32)
  else:  # topk
    _, idx = jax.lax.top_k(weights, c)
    scale = jnp.ones((c,), jnp.float32)
  return idx.astype(jnp.int32), scale, jnp.asarray(c, jnp.int32)


def norms(x: jax.Array, *, axis: int) -> jax.Array:
  """Euclidean norms of the slices of ``x`` along ``axis``, in float32."""
  x32 = x.astype(jnp.float32)
  return jnp.sqrt(jnp.sum(x32 * x32, axis=axis))


def sample_pairs_with_info(
    key: jax.Array, a: jax.Array, w: jax.Array, *, num_samples: int,
    sampler: str, w_norms: jax.Array | None = None
) -> tuple[jax.Array, jax.Array, dict[str, jax.Array]]:
  """`sample_pairs` (same arguments), plus the kept count for logging
  Bernoulli overflow.

  Returns:
    `(idx, scale, info)`: idx int32 [s] and scale [s] as in `sample_pairs`;
    info is a dict with `count` (int32 scalar: pairs kept by the Bernoulli
    draws before truncation to the buffer, c otherwise) and `overflow` (bool
    scalar: `count > s`, some kept pairs were dropped).
  """
  _check_sampler(sampler)
  _, n, _ = _check_operands(a, w)
  c = _check_int("num_samples", num_samples, minimum=1)
  if c > n:
    raise ValueError(
        f"num_samples must be in [1, n = {n}], got {c}; mc_matmul treats "
        f"num_samples >= n as the exact product.")
  if w_norms is not None and w_norms.shape != (n,):
    raise ValueError(f"w_norms must be [n = {n}], the norms of w's rows, got "
                     f"shape {tuple(w_norms.shape)}.")
  # Sampling probabilities and scales are constants for differentiation.
  a = jax.lax.stop_gradient(a)
  w = jax.lax.stop_gradient(w)
  dtype = jnp.result_type(a.dtype, w.dtype)
  weights = None
  if sampler != "uniform":
    with jax.named_scope("probabilities"):
      if w_norms is None:
        weights = pair_norms(a, w)
      else:
        weights = norms(a, axis=0) * jax.lax.stop_gradient(w_norms)
  with jax.named_scope("draw"):
    idx, scale, count = sample_from_weights(key, weights, n=n, num_samples=c,
                                            sampler=sampler)
  info = {"count": count, "overflow": count > idx.shape[0]}
  return idx, scale.astype(dtype), info


def sample_pairs(key: jax.Array, a: jax.Array, w: jax.Array, *,
                 num_samples: int, sampler: str,
                 w_norms: jax.Array | None = None
                 ) -> tuple[jax.Array, jax.Array]:
  """Samples column-row pairs of `a @ w` for the estimate `(a[:, idx] * scale) @ w[idx]`.

  The output size s is static: `num_slots(n, num_samples=c, sampler=...)`,
  i.e. c for `crs`, `uniform` and `topk`, and `bernoulli_buffer_size(n, c)`
  for `bernoulli`, whose unused slots hold a valid index and scale 0. Indices
  may repeat (`crs`, `uniform`); repeated pairs add up. The result carries no
  gradient with respect to a and w.

  Args:
    key: typed PRNG key (unused by `topk`).
    a: [B, n].
    w: [n, m].
    num_samples: c, a Python int in [1, n].
    sampler: one of `SAMPLERS`.
    w_norms: [n] the norms `||w[t, :]||` if the caller keeps them (then w's
      rows are not read); None to compute them.

  Returns:
    `(idx, scale)`: idx int32 [s] in [0, n), scale [s] in the dtype of a @ w.
  """
  idx, scale, _ = sample_pairs_with_info(
      key, a, w, num_samples=num_samples, sampler=sampler, w_norms=w_norms)
  return idx, scale


def sampled_product(a: jax.Array, rows: jax.Array, idx: jax.Array,
                    scale: jax.Array) -> jax.Array:
  """The sampled estimate `(a[:, idx] * scale) @ rows`, `rows = w[idx]`.

  Forward mode's gradient is this function's autodiff: `dz @ rows.T *
  scale` scatter-added into the sampled columns of `a`, and `(a[:, idx] *
  scale).T @ dz` for the gathered rows (repeated draws add up); a caller
  that differentiates with respect to the rows, not to `w`, never forms a
  dense weight gradient.

  Args:
    a: [B, n].
    rows: [s, m], the sampled rows of w.
    idx: int [s].
    scale: [s].

  Returns:
    [B, m].
  """
  with jax.named_scope("product"):
    return (a[:, idx] * scale) @ rows


def gathered_product(a: jax.Array, w: jax.Array, idx: jax.Array,
                     scale: jax.Array) -> jax.Array:
  """The sampled estimate `(a[:, idx] * scale) @ w[idx]`.

  Args:
    a: [B, n].
    w: [n, m].
    idx: int [s].
    scale: [s].

  Returns:
    [B, m].
  """
  with jax.named_scope("gather"):
    rows = w[idx]
  return sampled_product(a, rows, idx, scale)


# ---------------------------------------------------------------------------
# Approximate products with custom backward passes.


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _blackbox(key, a, w, num_samples, sampler):
  idx, scale = sample_pairs(key, a, w, num_samples=num_samples,
                            sampler=sampler)
  return gathered_product(a, w, idx, scale)


def _blackbox_fwd(key, a, w, num_samples, sampler):
  return _blackbox(key, a, w, num_samples, sampler), (a, w)


def _blackbox_bwd(num_samples, sampler, res, dz):
  del num_samples, sampler
  a, w = res
  return None, (dz @ w.T).astype(a.dtype), (a.T @ dz).astype(w.dtype)


_blackbox.defvjp(_blackbox_fwd, _blackbox_bwd)


def backward_factor_rows(batch: int, num_samples_batch: int, *,
                         sampler: str) -> int:
  """Rows s_b of the weight gradient's factors in `backward` mode.

  `dw = a.T @ dz` is sampled over the batch: the gradient is `A.T @ D`
  with `A = a[idx] * scale` [s_b, n] and `D = dz[idx]` [s_b, m], s_b the
  sampler's static slot count (`num_slots`), or `batch` when the product is
  exact (`num_samples_batch >= batch`).
  """
  _check_int("batch", batch, minimum=1)
  _check_int("num_samples_batch", num_samples_batch, minimum=1)
  if num_samples_batch >= batch:
    return batch
  return num_slots(batch, num_samples=num_samples_batch, sampler=sampler)


@functools.partial(jax.custom_vjp, nondiff_argnums=(5, 6))
def _backward_sampled(key, a, w, w_norms, factors, num_samples_bwd, sampler):
  del key, w_norms, factors, num_samples_bwd, sampler
  return a @ w


def _backward_sampled_fwd(key, a, w, w_norms, factors, num_samples_bwd,
                          sampler):
  return a @ w, (key, a, w, w_norms, factors)


def _backward_sampled_bwd(num_samples_bwd, sampler, res, dz):
  key, a, w, w_norms, factors = res
  batch, m = a.shape[0], w.shape[1]
  c_m, c_b = num_samples_bwd
  key_da, key_dw = jax.random.split(key)
  # da = dz @ w.T from pairs (dz[:, j], w[:, j]) over the m outputs.  The
  # columns of w are read in place (their norms unless the caller keeps
  # them, then a gather of the sampled ones): materialising w.T for a row
  # gather cost more than the exact product it replaces.
  if c_m >= m:
    da = dz @ w.T
  else:
    with jax.named_scope("probabilities"):
      if sampler == "uniform":
        weights = None
      else:
        col = (norms(jax.lax.stop_gradient(w), axis=0) if w_norms is None
               else jax.lax.stop_gradient(w_norms))
        weights = norms(dz, axis=0) * col
    with jax.named_scope("draw"):
      idx, scale, _ = sample_from_weights(key_da, weights, n=m,
                                          num_samples=c_m, sampler=sampler)
    # The sampled columns in w's own layout ([n, s], each row's entries
    # read from one cache-resident row) and a product contracting their
    # second axis: gathering them transposed walks w's columns, one cache
    # miss per entry (several times the product's own cost).
    # (The barrier keeps XLA from fusing a transpose into the gather.)
    with jax.named_scope("gather"):
      w_cols = jax.lax.optimization_barrier(
          w.at[:, idx].get(mode="promise_in_bounds"))
    with jax.named_scope("product"):
      da = (w_cols @ (dz[:, idx] * scale).T).T
  # dw = a.T @ dz from pairs (a[b, :], dz[b, :]) over the batch, as the
  # factors A = a[idx] * scale [s_b, n] and D = dz[idx] [s_b, m].
  if c_b >= batch:
    fa, fd = a, dz
  else:
    with jax.named_scope("probabilities"):
      weights = (None if sampler == "uniform" else
                 norms(a, axis=1) * norms(dz, axis=1))
    with jax.named_scope("draw"):
      idx, scale, _ = sample_from_weights(key_dw, weights, n=batch,
                                          num_samples=c_b, sampler=sampler)
    fa, fd = a[idx] * scale[:, None].astype(a.dtype), dz[idx]
  # Unused (and removed by XLA) when the caller differentiates only the
  # factors' carriers, as the training step does.
  with jax.named_scope("product"):
    dw = fa.T @ fd
  # The factors' carriers are zeros the caller passes only to receive A
  # and D as their cotangents (see `mc_matmul`).
  carried = None if factors is None else (fa.astype(factors[0].dtype),
                                          fd.astype(factors[1].dtype))
  return (None, da.astype(a.dtype), dw.astype(w.dtype), None, carried)


_backward_sampled.defvjp(_backward_sampled_fwd, _backward_sampled_bwd)


def mc_matmul(key: jax.Array, a: jax.Array, w: jax.Array, *, num_samples: int,
              sampler: str, mode: str = "forward",
              num_samples_backward: tuple[int, int] | None = None,
              w_norms: jax.Array | None = None,
              dw_factors: tuple[jax.Array, jax.Array] | None = None
              ) -> jax.Array:
  """Monte-Carlo approximation of `a @ w` with a mode-specific backward pass.

  Keys: `forward` and `blackbox` draw their pairs with
  `sample_pairs(key, a, w, num_samples=num_samples, sampler=sampler)`;
  `backward` splits `key_da, key_dw = jax.random.split(key)` and samples
  `da = dz @ w.T` over m with key_da and `dw = a.T @ dz` over B with key_dw.
  No mode samples in both passes, so no key is used twice.

  Gradients: `forward` backpropagates through the sampled pairs only, by
  autodiff of `sampled_product`: `da[:, idx] += (dz @ w[idx].T) * scale`,
  `dw[idx] += (a[:, idx] * scale).T @ dz` (scatter-add into zeros). The
  training step differentiates the same product with respect to the
  gathered rows instead of `w`. `blackbox` uses the exact `dz @ w.T` and `a.T @ dz` at the sampled
  output. `backward` has an exact forward product and unbiased (for the
  scaled samplers) sampled backward products; its weight gradient is
  `A.T @ D` with `A = a[idx] * scale` and `D = dz[idx]` over the sampled
  batch rows, and a caller that passes `dw_factors` receives A and D as
  their cotangents (the training step updates from them, never forming
  the dense gradient).

  Args:
    key: typed PRNG key; its cotangent is None.
    a: activations [B, n].
    w: weights [n, m].
    num_samples: c, a Python int >= 1; c >= n gives the exact product with
      exact gradients in every mode (in `backward` mode only when
      `num_samples_backward` is None).
    sampler: one of `SAMPLERS`.
    mode: one of `MODES`.
    num_samples_backward: `backward` mode only: `(c_m, c_b)`, the pairs for
      `da` (over m) and for `dw` (over B); a size >= its dimension makes that
      product exact. Default `backward_num_samples(B, n, m, num_samples=c)`,
      the same fraction c / n of each dimension.
    w_norms: `backward` mode only: [m] the norms `||w[:, j]||` of w's
      columns, if the caller keeps them (else the backward pass reads
      them from w). No cotangent.
    dw_factors: `backward` mode only: zeros `([s_b, n], [s_b, m])`, s_b =
      `backward_factor_rows(B, c_b, sampler=sampler)`. The output does not
      depend on them; their cotangents are A and D (above), not the
      derivatives of the output. The derivative with respect to `w` is
      `A.T @ D` either way.

  Returns:
    [B, m], the estimate of `a @ w` (exact in `backward` mode).
  """
  _check_sampler(sampler)
  _check_mode(mode)
  batch, n, m = _check_operands(a, w)
  c = _check_int("num_samples", num_samples, minimum=1)
  if num_samples_backward is not None:
    if mode != "backward":
      raise ValueError(
          f"num_samples_backward is only used in mode 'backward', got mode "
          f"{mode!r}.")
    if (not isinstance(num_samples_backward, (tuple, list))
        or len(num_samples_backward) != 2):
      raise ValueError(
          "num_samples_backward must be a pair (c_m, c_b) of ints >= 1, got "
          f"{num_samples_backward!r}.")
    c_m = _check_int("num_samples_backward[0]", num_samples_backward[0],
                     minimum=1)
    c_b = _check_int("num_samples_backward[1]", num_samples_backward[1],
                     minimum=1)
  else:
    c_m, c_b = backward_num_samples(batch, n, m, num_samples=c)

  if mode != "backward" and (w_norms is not None or dw_factors is not None):
    raise ValueError(
        f"w_norms and dw_factors are only used in mode 'backward', got mode "
        f"{mode!r}.")
  if mode == "backward":
    c_m, c_b = min(c_m, m), min(c_b, batch)
    if w_norms is not None and w_norms.shape != (m,):
      raise ValueError(f"w_norms must be [m = {m}], the norms of w's "
                       f"columns, got shape {tuple(w_norms.shape)}.")
    if dw_factors is not None:
      s_b = backward_factor_rows(batch, c_b, sampler=sampler)
      want = ((s_b, n), (s_b, m))
      got = tuple(tuple(f.shape) for f in dw_factors)
      if got != want:
        raise ValueError(
            f"dw_factors must be zeros of shapes {want} (backward_factor_rows"
            f"), got {got}.")
    elif c_m >= m and c_b >= batch:
      return a @ w
    return _backward_sampled(key, a, w, w_norms,
                             None if dw_factors is None else tuple(dw_factors),
                             (c_m, c_b), sampler)
  if c >= n:
    return a @ w
  if mode == "forward":
    idx, scale = sample_pairs(key, a, w, num_samples=c, sampler=sampler)
    return gathered_product(a, w, idx, scale)
  return _blackbox(key, a, w, c, sampler)


# ---------------------------------------------------------------------------
# Closed-form errors.


def _norms_and_product(a: jax.Array, w: jax.Array):
  """``pair_norms(a, w)`` [n] and ``||a @ w||_F^2``, in float32."""
  exact = a.astype(jnp.float32) @ w.astype(jnp.float32)
  return pair_norms(a, w), jnp.sum(exact * exact)


def exact_mse_crs(a: jax.Array, w: jax.Array, c: int) -> jax.Array:
  """`E ||a @ w - est||_F^2` of CRS with c draws (Drineas et al. 2006,
  Lemma 4), a float32 scalar for a [B, n] and w [n, m]:
  `(1/c) [(sum_t ||a[:, t]|| ||w[t, :]||)^2 - ||a @ w||_F^2]`."""
  norms, sq = _norms_and_product(a, w)
  return (jnp.sum(norms) ** 2 - sq) / c


def exact_mse_uniform(a: jax.Array, w: jax.Array, c: int) -> jax.Array:
  """`E ||a @ w - est||_F^2` of c uniform draws with replacement, a float32
  scalar for a [B, n] and w [n, m]:
  `(1/c) [n sum_t ||a[:, t]||^2 ||w[t, :]||^2 - ||a @ w||_F^2]`."""
  norms, sq = _norms_and_product(a, w)
  return (norms.shape[0] * jnp.sum(norms * norms) - sq) / c


def exact_mse_bernoulli(a: jax.Array, w: jax.Array, q: jax.Array) -> jax.Array:
  """`E ||a @ w - est||_F^2` of Bernoulli sampling (Adelman et al. 2021).

  `sum_t (1 - q_t) / q_t ||a[:, t]||^2 ||w[t, :]||^2`, for the untruncated
  estimate (buffer overflow, see `bernoulli_buffer_size`, is ignored). Pairs
  with zero norm contribute 0 whatever their q; a pair with q = 0 and a
  non-zero norm makes the estimate biased and the result inf.

  Args:
    a: [B, n].
    w: [n, m].
    q: [n] keep probabilities (e.g. `bernoulli_probs`).

  Returns:
    Scalar float32.
  """
  sq = pair_norms(a, w) ** 2
  q = q.astype(jnp.float32)
  return jnp.sum(jnp.where(sq > 0, (1.0 - q) / q * sq, 0.0))
