"""Tests for sampling_mlp.mc (MC-APPROX kernels).

Statistical tests use fixed keys and 20,000 draws (vmapped over split keys).
Unbiasedness: every entry of the mean must lie within 5 estimated standard
errors of the exact product (two-sided normal tail 5.7e-7 per entry), and the
global statistic `N ||mean - exact||_F^2 / MSE`, whose expectation is 1, must
be below 25 (at most P(chi2_1 > 25) = 5.7e-7 even if one direction dominated).
"""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sampling_mlp.methods.mc import kernels as mc

B, N, M, C = 4, 32, 8, 8
DRAWS = 20_000
SCALED = ("crs", "bernoulli", "uniform")


def _operands(batch=B, n=N, m=M, seed=0):
  """Heterogeneous column/row norms, two pairs large enough to be clipped."""
  ka, kw = jax.random.split(jax.random.key(seed))
  a = jax.random.normal(ka, (batch, n)) * jnp.exp(jnp.linspace(-2.0, 2.0, n))
  a = a.at[:, 0].multiply(30.0).at[:, 1].multiply(20.0)
  w = jax.random.normal(kw, (n, m)) * jnp.exp(jnp.linspace(1.0, -1.0, n))[:, None]
  return a, w


def _keys(seed, num=DRAWS):
  return jax.random.split(jax.random.key(seed), num)


def _estimates(a, w, sampler, c, seed):
  """[DRAWS, B, m] float64 estimates from independent keys."""
  def one(key):
    idx, scale = mc.sample_pairs(key, a, w, num_samples=c, sampler=sampler)
    return mc.gathered_product(a, w, idx, scale)
  return np.asarray(jax.jit(jax.vmap(one))(_keys(seed)), np.float64)


def _closed_form_mse(a, w, sampler, c):
  if sampler == "crs":
    return float(mc.exact_mse_crs(a, w, c))
  if sampler == "uniform":
    return float(mc.exact_mse_uniform(a, w, c))
  q = mc.bernoulli_probs(mc.pair_norms(a, w), num_samples=c)
  return float(mc.exact_mse_bernoulli(a, w, q))


def _z_scores(draws, exact):
  """Per-entry (mean - exact) / standard error; zero-variance entries must be exact."""
  mean = draws.mean(axis=0)
  se = np.sqrt(draws.var(axis=0, ddof=1) / draws.shape[0])
  exact = np.asarray(exact, np.float64)
  np.testing.assert_allclose(mean[se == 0], exact[se == 0], rtol=1e-5, atol=1e-5)
  return np.abs(mean - exact)[se > 0] / se[se > 0]


def _global_stat(draws, exact, mse):
  err = draws.mean(axis=0) - np.asarray(exact, np.float64)
  return draws.shape[0] * np.sum(err**2) / mse


def _loss(z, g):
  return jnp.sum(jnp.sin(z) * g)


def _grads(fn, a, w, g):
  # jit: op-by-op dispatch of the samplers is slow on the shared CPU.
  return jax.jit(jax.grad(lambda a, w: _loss(fn(a, w), g), argnums=(0, 1)))(a, w)


_sample = jax.jit(mc.sample_pairs, static_argnames=("num_samples", "sampler"))
_sample_info = jax.jit(mc.sample_pairs_with_info, static_argnames=("num_samples", "sampler"))


def _cotangent(batch=B, m=M):
  return jax.random.normal(jax.random.key(99), (batch, m))


# --------------------------------------------------------------------------
# Hyperparameters.


@pytest.mark.parametrize(
    "n,ratio,min_k,want",
    [(100, 0.1, 1, 10), (784, 0.1, 1, 79), (30, 0.1, 1, 3), (10, 0.01, 0, 1),
     (10, 0.5, 8, 8), (10, 0.5, 50, 10), (10, 1.0, 0, 10), (1, 0.3, 0, 1)],
    ids=["exact_ratio", "rounds_up", "float_noise", "at_least_one",
         "min_k_wins", "capped_at_n", "ratio_one", "n_one"])
def test_num_samples_for(n, ratio, min_k, want):
  assert mc.num_samples_for(n, ratio=ratio, min_k=min_k) == want


@pytest.mark.parametrize(
    "ratio,min_k,match",
    [(0.0, 1, "ratio must be in"), (1.5, 1, "ratio must be in"),
     (-0.1, 1, "ratio must be in"), (float("nan"), 1, "ratio must be in"),
     (0.5, -1, "min_k must be"), (0.5, 1.5, "min_k must be")],
    ids=["ratio0", "ratio1.5", "ratio_negative", "ratio_nan", "min_k-1",
         "min_k_float"])
def test_num_samples_for_rejects_bad_hyperparameters(ratio, min_k, match):
  with pytest.raises(ValueError, match=match):
    mc.num_samples_for(100, ratio=ratio, min_k=min_k)


def test_bad_sampler_mode_and_sizes_raise():
  a, w = _operands()
  key = jax.random.key(0)
  with pytest.raises(ValueError, match="valid samplers are .*crs.*bernoulli"):
    mc.sample_pairs(key, a, w, num_samples=C, sampler="importance")
  with pytest.raises(ValueError, match="valid samplers are"):
    mc.mc_matmul(key, a, w, num_samples=C, sampler="nope")
  with pytest.raises(ValueError, match="valid modes are .*forward.*backward.*blackbox"):
    mc.mc_matmul(key, a, w, num_samples=C, sampler="crs", mode="sideways")
  for bad in (0, -3, 2.5, True):
    with pytest.raises(ValueError, match="num_samples must be"):
      mc.mc_matmul(key, a, w, num_samples=bad, sampler="crs")
  with pytest.raises(ValueError, match=r"num_samples must be in \[1, n = 32\]"):
    mc.sample_pairs(key, a, w, num_samples=N + 1, sampler="crs")
  with pytest.raises(ValueError, match="only used in mode 'backward'"):
    mc.mc_matmul(key, a, w, num_samples=C, sampler="crs", num_samples_backward=(2, 1))
  with pytest.raises(ValueError, match="num_samples_backward"):
    mc.mc_matmul(key, a, w, num_samples=C, sampler="crs", mode="backward",
                 num_samples_backward=(0, 1))
  with pytest.raises(ValueError, match=r"Expected a \[B, n\] and w \[n, m\]"):
    mc.mc_matmul(key, a, w.T, num_samples=C, sampler="crs")


def test_static_sizes():
  assert mc.bernoulli_buffer_size(1000, 100) == 100 + 60 + 8
  assert mc.bernoulli_buffer_size(32, 8) == 32
  assert mc.num_slots(1000, num_samples=100, sampler="crs") == 100
  assert mc.num_slots(1000, num_samples=100, sampler="bernoulli") == 168
  assert mc.backward_num_samples(B, N, M, num_samples=C) == (2, 1)
  assert mc.backward_num_samples(64, 1000, 10, num_samples=100) == (1, 7)
  assert mc.backward_num_samples(B, N, M, num_samples=N) == (M, B)


def test_pair_norms():
  a, w = _operands()
  want = np.linalg.norm(np.asarray(a), axis=0) * np.linalg.norm(np.asarray(w), axis=1)
  np.testing.assert_allclose(mc.pair_norms(a, w), want, rtol=1e-5)


# --------------------------------------------------------------------------
# Samplers.


@pytest.mark.parametrize("sampler", mc.SAMPLERS)
def test_sample_pairs_shapes_and_dtypes(sampler):
  a, w = _operands()
  n = 200
  a2, w2 = _operands(n=n)
  for aa, ww in ((a, w), (a2, w2)):
    idx, scale, info = _sample_info(jax.random.key(1), aa, ww, num_samples=C, sampler=sampler)
    s = mc.num_slots(aa.shape[1], num_samples=C, sampler=sampler)
    chex.assert_shape((idx, scale), (s,))
    assert idx.dtype == jnp.int32 and scale.dtype == aa.dtype
    assert bool(jnp.all((idx >= 0) & (idx < aa.shape[1])))
    assert bool(jnp.all(scale >= 0)) and bool(jnp.all(jnp.isfinite(scale)))
    assert not bool(info["overflow"])
  assert s == (C + 17 + 8 if sampler == "bernoulli" else C)


@pytest.mark.parametrize("batch", [B, 1], ids=["B4", "B1"])
@pytest.mark.parametrize("sampler", SCALED)
def test_scaled_samplers_are_unbiased(sampler, batch):
  a, w = _operands(batch=batch)
  if sampler == "bernoulli":
    q = mc.bernoulli_probs(mc.pair_norms(a, w), num_samples=C)
    assert int(jnp.sum(q >= 1.0)) >= 1, "test needs clipped pairs (q = 1)"
  draws = _estimates(a, w, sampler, C, seed=1)
  exact = a @ w
  assert np.max(_z_scores(draws, exact)) <= 5.0
  assert _global_stat(draws, exact, _closed_form_mse(a, w, sampler, C)) <= 25.0


def test_unbiasedness_check_detects_bias():
  """Negative control: CRS indices with the uniform scale n/c are biased."""
  a, w = _operands()

  def one(key):
    idx, _ = mc.sample_pairs(key, a, w, num_samples=C, sampler="crs")
    return mc.gathered_product(a, w, idx, jnp.full((C,), N / C))
  draws = np.asarray(jax.jit(jax.vmap(one))(_keys(2)), np.float64)
  assert np.max(_z_scores(draws, a @ w)) > 5.0
  assert _global_stat(draws, a @ w, _closed_form_mse(a, w, "crs", C)) > 25.0


# Relative tolerance on the mean squared error over DRAWS draws. Measured
# relative standard errors of the empirical MSE at these shapes: crs 0.4%,
# bernoulli 0.3%, uniform 1.5%; the tolerances are > 3 standard errors and
# the test asserts that (so a heavier tail cannot silently weaken it).
MSE_RTOL = {"crs": 0.05, "bernoulli": 0.05, "uniform": 0.10}


@pytest.mark.parametrize("sampler", SCALED)
def test_mse_matches_closed_form(sampler):
  a, w = _operands()
  draws = _estimates(a, w, sampler, C, seed=3)
  sq_err = np.sum((draws - np.asarray(a @ w, np.float64)) ** 2, axis=(1, 2))
  want = _closed_form_mse(a, w, sampler, C)
  rel_se = sq_err.std(ddof=1) / np.sqrt(DRAWS) / want
  assert 3 * rel_se < MSE_RTOL[sampler]
  assert abs(sq_err.mean() / want - 1) < MSE_RTOL[sampler]


def test_crs_mse_bound_and_ordering():
  """Closed forms: CRS <= ||a||_F^2 ||w||_F^2 / c, and norm-based beats uniform here."""
  a, w = _operands()
  bound = float(jnp.sum(a**2) * jnp.sum(w**2)) / C
  crs = float(mc.exact_mse_crs(a, w, C))
  assert 0 < crs <= bound
  assert crs < float(mc.exact_mse_uniform(a, w, C))


def test_crs_and_uniform_draw_with_replacement():
  a, w = _operands()
  idx, scale = _sample(jax.random.key(4), a, w, num_samples=24, sampler="crs")
  assert len(np.unique(np.asarray(idx))) < 24  # repeats: pair 0 has p > 0.1
  p = mc.crs_probs(mc.pair_norms(a, w))
  np.testing.assert_allclose(scale, 1.0 / (24 * p[idx]), rtol=1e-5)
  _, scale_u = _sample(jax.random.key(5), a, w, num_samples=24, sampler="uniform")
  np.testing.assert_allclose(scale_u, np.full(24, N / 24), rtol=1e-6)


def test_topk_is_deterministic_and_exact_at_c_equals_n():
  a, w = _operands()
  idx1, s1 = _sample(jax.random.key(1), a, w, num_samples=C, sampler="topk")
  idx2, s2 = _sample(jax.random.key(2), a, w, num_samples=C, sampler="topk")
  np.testing.assert_array_equal(idx1, idx2)
  np.testing.assert_array_equal(s1, np.ones(C))
  want = np.argsort(-np.asarray(mc.pair_norms(a, w)))[:C]
  assert set(np.asarray(idx1).tolist()) == set(want.tolist())
  idx, scale = _sample(jax.random.key(3), a, w, num_samples=N, sampler="topk")
  np.testing.assert_allclose(mc.gathered_product(a, w, idx, scale), a @ w, rtol=1e-5, atol=1e-4)


def test_bernoulli_at_c_equals_n_is_exact():
  a, w = _operands()
  idx, scale = _sample(jax.random.key(3), a, w, num_samples=N, sampler="bernoulli")
  assert sorted(np.asarray(idx).tolist()) == list(range(N))
  np.testing.assert_allclose(mc.gathered_product(a, w, idx, scale), a @ w, rtol=1e-5, atol=1e-4)


# --------------------------------------------------------------------------
# Bernoulli probabilities and the static buffer.


def _water_fill_reference(weights, c):
  """Bisection for alpha with sum(min(1, alpha p)) = c, in float64."""
  p = np.asarray(weights, np.float64)
  p = p / p.sum()
  lo, hi = 0.0, c / p[p > 0].min()
  for _ in range(200):
    mid = 0.5 * (lo + hi)
    lo, hi = (mid, hi) if np.minimum(1, mid * p).sum() < c else (lo, mid)
  return np.minimum(1.0, hi * p)


@pytest.mark.parametrize("c", [1, 3, 8, 20, 31])
def test_bernoulli_probs_redistribute_clipped_mass(c):
  weights = jnp.concatenate([jnp.array([50.0, 20.0, 8.0]),
                             jnp.exp(jnp.linspace(-3.0, 1.0, 29))])
  q = np.asarray(mc.bernoulli_probs(weights, num_samples=c), np.float64)
  assert abs(q.sum() - c) < 1e-4 * c
  assert np.all((q >= 0) & (q <= 1))
  np.testing.assert_allclose(q, _water_fill_reference(weights, c), atol=2e-5)
  if c >= 3:
    assert np.sum(q == 1.0) >= 1  # the case that needs redistribution
    naive = np.minimum(1.0, c * np.asarray(weights) / float(jnp.sum(weights)))
    assert naive.sum() < c - 0.5  # clipping alone would lose mass


def test_bernoulli_probs_with_few_nonzero_weights():
  weights = jnp.array([3.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0])
  q = mc.bernoulli_probs(weights, num_samples=4)
  np.testing.assert_allclose(q, [1, 2 / 6, 1, 2 / 6, 2 / 6, 2 / 6, 2 / 6, 2 / 6], rtol=1e-6)
  q0 = mc.bernoulli_probs(jnp.zeros(8), num_samples=2)
  np.testing.assert_allclose(q0, np.full(8, 0.25), rtol=1e-6)


def test_bernoulli_count_and_overflow():
  n, c = 256, 16  # buffer 16 + 24 + 8 = 48 < n, so overflow is possible
  a, w = _operands(n=n)
  a = a.at[:, :2].multiply(5.0)
  q = np.asarray(mc.bernoulli_probs(mc.pair_norms(a, w), num_samples=c), np.float64)
  assert np.sum(q == 1.0) >= 1

  def one(key):
    idx, scale, info = mc.sample_pairs_with_info(key, a, w, num_samples=c, sampler="bernoulli")
    return idx, scale, info["count"], info["overflow"]
  idx, scale, count, overflow = jax.jit(jax.vmap(one))(_keys(6))
  count = np.asarray(count, np.float64)
  sigma = np.sqrt(np.sum(q * (1 - q)) / DRAWS)
  assert abs(count.mean() - c) <= 5 * sigma
  assert int(np.sum(overflow)) == 0 and count.max() <= 48
  # Kept slots carry 1/q; clipped pairs are in every draw.
  kept = np.asarray(scale) > 0
  np.testing.assert_array_equal(kept.sum(axis=1), count)
  np.testing.assert_allclose(np.asarray(scale)[kept], 1.0 / q[np.asarray(idx)[kept]], rtol=1e-5)
  for t in np.flatnonzero(q == 1.0):
    assert np.all(np.any((np.asarray(idx) == t) & kept, axis=1))


def test_bernoulli_truncation_keeps_clipped_and_random_subset():
  """Forced overflow (buffer 4 for c = 8): q = 1 pairs first, the rest at random."""
  n, c, s = 64, 8, 4
  weights = jnp.ones(n).at[0].set(200.0)  # pair 0 clipped, the rest q = 7/63

  def one(key):
    return mc._sample_bernoulli(key, weights, c, s)
  idx, scale, count = jax.jit(jax.vmap(one))(_keys(7, 4000))
  idx, kept = np.asarray(idx), np.asarray(scale) > 0
  assert np.all(idx[:, 0] == 0) and np.all(kept[:, 0])
  np.testing.assert_array_equal(kept.sum(axis=1), np.minimum(np.asarray(count), s))
  assert np.mean(np.asarray(count) > s) > 0.5  # overflow really happened
  # Inclusion frequency of the unclipped pairs does not depend on the index.
  freq = np.bincount(idx[kept], minlength=n)[1:].astype(np.float64)
  low, high = freq[:31].sum(), freq[32:].sum()  # 31 pairs each
  assert abs(low - high) <= 5 * np.sqrt(low + high)
  assert freq.min() > 0


# --------------------------------------------------------------------------
# mc_matmul: modes and gradients.

@pytest.mark.parametrize("sampler", mc.SAMPLERS)
def test_c_at_least_n_is_exact(sampler):
  a, w = _operands()
  g = _cotangent()
  want = jax.grad(lambda a, w: _loss(a @ w, g), argnums=(0, 1))(a, w)
  for mode in mc.MODES:
    for c in (N, N + 5):
      f = functools.partial(mc.mc_matmul, jax.random.key(8), num_samples=c,
                            sampler=sampler, mode=mode)
      np.testing.assert_allclose(f(a, w), a @ w, rtol=1e-6)
      got = jax.grad(lambda a, w: _loss(f(a, w), g), argnums=(0, 1))(a, w)
      chex.assert_trees_all_close(got, want, rtol=1e-6)


@pytest.mark.parametrize("sampler", mc.SAMPLERS)
def test_forward_mode_gradient_is_the_sampled_pairs_formula(sampler):
  """Forward mode's gradient (autodiff of the sampled product) is the
  closed form of the docstring: ``da[:, idx] += (dz @ w[idx].T) * scale``,
  ``dw[idx] += (a[:, idx] * scale).T @ dz``, repeated draws adding up."""
  a, w = _operands()
  g = _cotangent()
  c = 16
  key = jax.random.key(9)
  idx, scale = _sample(key, a, w, num_samples=c, sampler=sampler)
  if sampler in ("crs", "uniform"):
    assert len(np.unique(np.asarray(idx))) < c, "test needs repeated pairs"
  f = functools.partial(mc.mc_matmul, key, num_samples=c, sampler=sampler, mode="forward")
  idx_np, scale_np = np.asarray(idx), np.asarray(scale, np.float64)
  a64, w64, g64 = (np.asarray(t, np.float64) for t in (a, w, g))
  want = (a64[:, idx_np] * scale_np) @ w64[idx_np]
  np.testing.assert_allclose(f(a, w), want, rtol=1e-5, atol=1e-5)
  dz = np.cos(want) * g64  # the cotangent of _loss at the estimate
  da_want, dw_want = np.zeros_like(a64), np.zeros_like(w64)
  np.add.at(da_want.T, idx_np, ((dz @ w64[idx_np].T) * scale_np).T)
  np.add.at(dw_want, idx_np, (a64[:, idx_np] * scale_np).T @ dz)
  da, dw = _grads(f, a, w, g)
  # float32 against float64; cos of estimates of size ~10 loses digits.
  np.testing.assert_allclose(da, da_want, rtol=1e-3, atol=1e-3)
  np.testing.assert_allclose(dw, dw_want, rtol=1e-3, atol=1e-3)
  # Gradients live on the sampled pairs only.
  sampled = np.zeros(N, bool)
  sampled[idx_np[scale_np > 0]] = True
  assert not sampled.all()
  assert np.all(np.asarray(dw)[~sampled] == 0) and np.all(np.asarray(da)[:, ~sampled] == 0)
  assert np.all(np.any(np.asarray(dw)[sampled] != 0, axis=1))


@pytest.mark.parametrize("sampler", mc.SAMPLERS)
def test_blackbox_mode_has_exact_backward(sampler):
  a, w = _operands()
  g = _cotangent()
  key = jax.random.key(10)
  f = functools.partial(mc.mc_matmul, key, num_samples=C, sampler=sampler, mode="blackbox")
  idx, scale = _sample(key, a, w, num_samples=C, sampler=sampler)
  np.testing.assert_allclose(f(a, w), mc.gathered_product(a, w, idx, scale), rtol=1e-5,
                             atol=1e-5)
  # With a loss linear in z, dz = g and the exact backward is g @ w.T, a.T @ g.
  da, dw = jax.jit(jax.grad(lambda a, w: jnp.sum(f(a, w) * g), argnums=(0, 1)))(a, w)
  chex.assert_trees_all_close((da, dw), (g @ w.T, a.T @ g), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("sampler", mc.SAMPLERS)
def test_backward_mode_exact_forward_and_documented_keys(sampler):
  a, w = _operands()
  g = _cotangent()
  key = jax.random.key(11)
  f = functools.partial(mc.mc_matmul, key, num_samples=C, sampler=sampler, mode="backward")
  np.testing.assert_allclose(f(a, w), a @ w, rtol=1e-6)
  da, dw = jax.jit(jax.grad(lambda a, w: jnp.sum(f(a, w) * g), argnums=(0, 1)))(a, w)
  c_m, c_b = mc.backward_num_samples(B, N, M, num_samples=C)
  key_da, key_dw = jax.random.split(key)
  idx, scale = _sample(key_da, g, w.T, num_samples=c_m, sampler=sampler)
  np.testing.assert_allclose(da, mc.gathered_product(g, w.T, idx, scale), rtol=1e-5, atol=1e-5)
  idx, scale = _sample(key_dw, a.T, g, num_samples=c_b, sampler=sampler)
  np.testing.assert_allclose(dw, mc.gathered_product(a.T, g, idx, scale), rtol=1e-5, atol=1e-5)
  assert not np.allclose(da, g @ w.T)  # really sampled


@pytest.mark.parametrize("sampler", mc.SAMPLERS)
@pytest.mark.parametrize("batch", [1, 40])  # c_b = B (exact) and c_b < B
def test_backward_mode_factors_and_kept_column_norms(sampler, batch):
  """dw_factors' cotangents (A, D) give the weight gradient, A.T @ D, and
  w_norms equal to w's column norms changes nothing."""
  a, w = _operands(batch=batch)
  g = jax.random.normal(jax.random.key(21), (batch, M))
  key = jax.random.key(13)
  c_m, c_b = mc.backward_num_samples(batch, N, M, num_samples=C)
  s_b = mc.backward_factor_rows(batch, c_b, sampler=sampler)
  assert s_b == (batch if c_b >= batch else
                 mc.num_slots(batch, num_samples=c_b, sampler=sampler))
  zeros = (jnp.zeros((s_b, N)), jnp.zeros((s_b, M)))

  def loss(a, w, factors, w_norms):
    return _loss(mc.mc_matmul(key, a, w, num_samples=C, sampler=sampler,
                              mode="backward", w_norms=w_norms,
                              dw_factors=factors), g)

  da, dw, (fa, fd) = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(
      a, w, zeros, mc.norms(w, axis=0))
  ref_da, ref_dw = jax.jit(jax.grad(
      lambda a, w: loss(a, w, None, None), argnums=(0, 1)))(a, w)
  np.testing.assert_allclose(da, ref_da, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(dw, ref_dw, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(fa.T @ fd, ref_dw, rtol=1e-5, atol=1e-5)
  if batch > c_b:  # sampled: rank at most s_b, and not the exact gradient
    assert not np.allclose(ref_dw, a.T @ (jnp.cos(a @ w) * g), rtol=1e-3)


def test_backward_mode_factor_and_norm_shapes_are_checked():
  a, w = _operands()
  f = functools.partial(mc.mc_matmul, jax.random.key(0), a, w, num_samples=C,
                        sampler="crs")
  with pytest.raises(ValueError, match="dw_factors must be zeros of shapes"):
    f(mode="backward", dw_factors=(jnp.zeros((3, N)), jnp.zeros((3, M))))
  with pytest.raises(ValueError, match=r"w_norms must be \[m = 8\]"):
    f(mode="backward", w_norms=jnp.zeros((N,)))
  with pytest.raises(ValueError, match="only used in mode 'backward'"):
    f(mode="forward", w_norms=jnp.zeros((M,)))


def test_backward_mode_explicit_full_sizes_are_exact():
  a, w = _operands()
  g = _cotangent()
  f = functools.partial(mc.mc_matmul, jax.random.key(12), num_samples=C, sampler="crs",
                        mode="backward", num_samples_backward=(M, B))
  chex.assert_trees_all_close(_grads(f, a, w, g), _grads(lambda a, w: a @ w, a, w, g),
                              rtol=1e-6)


@pytest.mark.parametrize("sampler", SCALED)
def test_backward_mode_gradients_are_unbiased(sampler):
  a, w = _operands()
  g = _cotangent()

  def grads(key):
    f = lambda a, w: jnp.sum(mc.mc_matmul(key, a, w, num_samples=C, sampler=sampler,
                                          mode="backward") * g)
    return jax.grad(f, argnums=(0, 1))(a, w)
  da, dw = jax.jit(jax.vmap(grads))(_keys(13))
  for draws, exact in ((da, g @ w.T), (dw, a.T @ g)):
    assert np.max(_z_scores(np.asarray(draws, np.float64), exact)) <= 5.0


def _all_modes(sampler, g):
  """value_and_grad of the test loss for every mode, as one function to jit."""
  def run(key, a, w):
    out = {}
    for mode in mc.MODES:
      f = lambda a, w: _loss(mc.mc_matmul(key, a, w, num_samples=C, sampler=sampler,
                                          mode=mode), g)
      out[mode] = jax.value_and_grad(f, argnums=(0, 1))(a, w)
    return out
  return run


@pytest.mark.parametrize("sampler", mc.SAMPLERS)
def test_jit_matches_eager_without_retracing(sampler):
  """Gradients under jit are checked against references in the mode tests above."""
  a, w = _operands()
  jitted = jax.jit(chex.assert_max_traces(_all_modes(sampler, _cotangent()), n=1))
  key = jax.random.key(14)
  out = jitted(key, a, w)
  chex.assert_tree_all_finite(out)
  for mode in mc.MODES:
    eager = _loss(mc.mc_matmul(key, a, w, num_samples=C, sampler=sampler, mode=mode),
                  _cotangent())
    np.testing.assert_allclose(out[mode][0], eager, rtol=1e-4, atol=1e-4)
  jitted(jax.random.key(15), a, w)  # a new key must not retrace
  chex.clear_trace_counter()


@pytest.mark.parametrize("sampler", mc.SAMPLERS)
def test_batch_size_one(sampler):
  a, w = _operands(batch=1)
  g = _cotangent(batch=1)
  out = jax.jit(_all_modes(sampler, g))(jax.random.key(16), a, w)
  chex.assert_tree_all_finite(out)
  for mode in mc.MODES:
    _, (da, dw) = out[mode]
    chex.assert_shape((da, dw), ((1, N), (N, M)))
  # One row: c_b = 1 = B, so backward mode's dw is exact.
  want_dw = jax.grad(lambda w: _loss(a @ w, g))(w)
  np.testing.assert_allclose(out["backward"][1][1], want_dw, rtol=1e-5, atol=1e-5)
  z = jax.jit(functools.partial(mc.mc_matmul, num_samples=C, sampler=sampler))(
      jax.random.key(17), a, w)
  chex.assert_shape(z, (1, M))


@pytest.mark.parametrize("sampler", mc.SAMPLERS)
def test_zero_activations_give_no_nan(sampler):
  """Dead units: all-zero norms fall back to uniform; few non-zero pairs are kept."""
  _, w = _operands()
  g = _cotangent()
  run = jax.jit(_all_modes(sampler, g))
  zeros = jnp.zeros((B, N))
  few = zeros.at[:, :3].set(1.0)  # three non-zero pairs, fewer than c
  for a in (zeros, few):
    out = run(jax.random.key(18), a, w)
    chex.assert_tree_all_finite(out)
    want = float(_loss(a @ w, g))
    np.testing.assert_allclose(out["backward"][0], want, rtol=1e-5, atol=1e-5)
    if sampler == "bernoulli" or a is zeros:  # Bernoulli keeps all three (q = 1)
      for mode in ("forward", "blackbox"):
        np.testing.assert_allclose(out[mode][0], want, rtol=1e-5, atol=1e-5)


def test_no_key_reuse():
  a, w = _operands()
  g = _cotangent()
  with jax.debug_key_reuse(True):
    for mode in mc.MODES:
      for sampler in ("crs", "bernoulli"):
        f = functools.partial(mc.mc_matmul, jax.random.key(18), num_samples=C,
                              sampler=sampler, mode=mode)
        _grads(f, a, w, g)
