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
  lazy = optim.LazyOptimizer(cfg)
  tx = optim.make_optax(cfg)
  p = jax.random.normal(jax.random.key(0), (6, 4))
  gs = _grads(jax.random.key(1), (6, 4), 5)
  s_lazy = lazy.init(p)
  s_tx = tx.init(p)
  p_lazy, p_tx = p, p
  m, v = s_lazy.mu, s_lazy.nu
  for t, g in enumerate(gs, start=1):
    p_lazy, m, v = lazy.update_dense(p_lazy, m, v, g, jnp.asarray(t))
    up, s_tx = tx.update(g, s_tx, p_tx)
    p_tx = optax.apply_updates(p_tx, up)
  np.testing.assert_allclose(p_lazy, p_tx, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["adam", "sgd"])
def test_rows_touching_every_row_equals_dense(name):
  cfg = optim.OptimConfig(name=name, learning_rate=1e-2)
  lazy = optim.LazyOptimizer(cfg)
  p = jax.random.normal(jax.random.key(0), (6, 4))
  st = lazy.init(p)
  g = jax.random.normal(jax.random.key(1), (6, 4))
  rows = jnp.arange(6)[::-1]
  a = lazy.update_rows(p, st.mu, st.nu, rows, g[rows], jnp.asarray(1))
  b = lazy.update_dense(p, st.mu, st.nu, g, jnp.asarray(1))
  chex.assert_trees_all_close(a, b, rtol=1e-6)


def test_rows_update_leaves_other_rows_and_moments_alone():
  lazy = optim.LazyOptimizer(optim.OptimConfig())
  p = jax.random.normal(jax.random.key(0), (8, 3))
  st = lazy.init(p)
  m0 = st.mu + 0.5  # non-zero moments must stay untouched, not decay
  v0 = st.nu + 0.25
  rows = jnp.array([1, 5, 8])  # 8 is the out-of-range sentinel: ignored
  g = jnp.ones((3, 3))
  p1, m1, v1 = lazy.update_rows(p, m0, v0, rows, g, jnp.asarray(3))
  untouched = np.array([0, 2, 3, 4, 6, 7])
  np.testing.assert_array_equal(p1[untouched], p[untouched])
  np.testing.assert_array_equal(m1[untouched], m0[untouched])
  np.testing.assert_array_equal(v1[untouched], v0[untouched])
  assert not np.allclose(p1[np.array([1, 5])], p[np.array([1, 5])])


def test_block_update_touches_only_block():
  lazy = optim.LazyOptimizer(optim.OptimConfig())
  p = jnp.zeros((5, 6))
  st = lazy.init(p)
  rows, cols = jnp.array([0, 3]), jnp.array([1, 2, 5])
  p1, m1, _ = lazy.update_block(p, st.mu, st.nu, rows, cols,
                                jnp.ones((2, 3)), jnp.asarray(1))
  mask = np.zeros((5, 6), bool)
  mask[np.ix_([0, 3], [1, 2, 5])] = True
  assert np.all(np.asarray(p1)[mask] != 0) and np.all(np.asarray(p1)[~mask] == 0)
  assert np.all(np.asarray(m1)[~mask] == 0)
  # Adam's first step moves every touched weight by -lr (sign of the gradient).
  np.testing.assert_allclose(np.asarray(p1)[mask], -1e-3, rtol=1e-3)


def test_masked_slab_update_matches_rows_update():
  lazy = optim.LazyOptimizer(optim.OptimConfig())
  p = jax.random.normal(jax.random.key(0), (6, 2))
  st = lazy.init(p)
  g = jax.random.normal(jax.random.key(1), (6, 2))
  rows = jnp.array([0, 4])
  mask = jnp.zeros((6, 2), bool).at[rows].set(True)
  slab = lazy.update_slab_masked(lazy.init_slab(p, axis=1), g, mask,
                                 jnp.asarray(1), axis=1)
  want = lazy.update_rows(p, st.mu, st.nu, rows, g[rows], jnp.asarray(1))
  chex.assert_trees_all_close(tuple(slab[:, i] for i in range(3)), want,
                              rtol=1e-6)


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
