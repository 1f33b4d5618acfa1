"""Tests for the lazy optimizer: equal to optax when every entry is
touched, untouched entries and moments left alone, row updates."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from sampling_mlp import optim


def _grads(key, shape, steps):
  return jax.random.normal(key, (steps,) + shape)


@pytest.mark.parametrize("name", ["adam", "sgd"])
def test_lazy_dense_equals_optax(name):
  cfg = optim.OptimConfig(name=name, learning_rate=1e-2)
  lazy = optim.lazy(cfg)
  tx = optim.make_optax(cfg)
  p = {"w": jax.random.normal(jax.random.key(0), (6, 4)),
       "b": jnp.zeros(4)}
  gs = _grads(jax.random.key(1), (6, 4), 5)
  s_lazy, s_tx = lazy.init(p), tx.init(p)
  p_lazy, p_tx = p, p
  for g in gs:
    grads = {"w": g, "b": g[0]}
    p_lazy, s_lazy = lazy.update(grads, s_lazy, p_lazy)
    up, s_tx = tx.update(grads, s_tx, p_tx)
    p_tx = optax.apply_updates(p_tx, up)
  assert int(s_lazy.count) == 5
  # The same formula, evaluated in another order: float32 rounding apart.
  chex.assert_trees_all_close(p_lazy, p_tx, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["adam", "sgd"])
def test_rows_touching_every_row_equals_dense(name):
  cfg = optim.OptimConfig(name=name, learning_rate=1e-2)
  lazy = optim.lazy(cfg)
  p = jax.random.normal(jax.random.key(0), (6, 4))
  st = lazy.init(p)
  g = jax.random.normal(jax.random.key(1), (6, 4))
  rows = jnp.arange(6)[::-1]
  a = lazy.update(g[rows], st, p, optim.Rows(rows))
  b = lazy.update(g, st, p)
  chex.assert_trees_all_close(a, b, rtol=1e-6)


def test_rows_update_leaves_other_rows_and_moments_alone():
  lazy = optim.lazy(optim.OptimConfig())
  p = jax.random.normal(jax.random.key(0), (8, 3))
  st = lazy.init(p)
  # Non-zero moments must stay untouched, not decay.
  st = optim.LazyState(jnp.asarray(2), st.mu + 0.5, st.nu + 0.25)
  rows = jnp.array([1, 5, 8])  # 8 is the out-of-range sentinel: ignored
  p1, st1 = lazy.update(jnp.ones((3, 3)), st, p, optim.Rows(rows))
  untouched = np.array([0, 2, 3, 4, 6, 7])
  np.testing.assert_array_equal(p1[untouched], p[untouched])
  np.testing.assert_array_equal(st1.mu[untouched], st.mu[untouched])
  np.testing.assert_array_equal(st1.nu[untouched], st.nu[untouched])
  assert not np.allclose(p1[np.array([1, 5])], p[np.array([1, 5])])
  assert int(st1.count) == 3


def test_mixed_indices_per_leaf():
  lazy = optim.lazy(optim.OptimConfig())
  p = (jnp.zeros((5, 2)), jnp.zeros(2))
  st = lazy.init(p)
  grads = (jnp.ones((2, 2)), jnp.ones(2))
  (w, b), _ = lazy.update(grads, st, p, (optim.Rows(jnp.array([0, 3])), None))
  # Adam's first step moves every touched weight by -lr (sign of the gradient).
  np.testing.assert_allclose(w[np.array([0, 3])], -1e-3, rtol=1e-3)
  np.testing.assert_array_equal(w[np.array([1, 2, 4])], 0.0)
  np.testing.assert_allclose(b, -1e-3, rtol=1e-3)


@pytest.mark.parametrize("name", ["adam", "sgd"])
def test_slot_update_is_the_adam_formula(name):
  cfg = optim.OptimConfig(name=name, learning_rate=0.1)
  p, g = jnp.array([1.0, -2.0]), jnp.array([0.5, 0.25])
  m, v = jnp.array([0.1, 0.0]), jnp.array([0.2, 0.3])
  count = jnp.asarray(4)
  slots = (p, m, v) if name == "adam" else (p,)
  got = optim.slot_update(cfg, slots, g, count)
  if name == "sgd":
    np.testing.assert_allclose(got[0], p - 0.1 * g)
    return
  m1 = 0.9 * m + 0.1 * g
  v1 = 0.999 * v + 0.001 * g * g
  want = p - 0.1 * (m1 / (1 - 0.9 ** 4)) / (
      np.sqrt(v1 / (1 - 0.999 ** 4)) + 1e-4)
  np.testing.assert_allclose(got[0], want, rtol=1e-6)
  np.testing.assert_allclose(got[1], m1, rtol=1e-6)
  np.testing.assert_allclose(got[2], v1, rtol=1e-6)


def test_dedup_rows_sums_repeats():
  rows = jnp.array([3, 1, 3, 0])
  g = jnp.array([[1.0], [2.0], [10.0], [4.0]])
  uniq, summed = optim.dedup_rows(rows, g, n=5)
  got = {int(r): float(s[0]) for r, s in zip(uniq, summed) if r < 5}
  assert got == {0: 4.0, 1: 2.0, 3: 11.0}
  assert int((uniq == 5).sum()) == 1


def test_bad_optimizer_config():
  with pytest.raises(ValueError, match="adam, sgd"):
    optim.OptimConfig(name="rmsprop")
  with pytest.raises(ValueError, match="learning_rate"):
    optim.OptimConfig(learning_rate=0.0)
