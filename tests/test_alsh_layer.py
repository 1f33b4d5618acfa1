"""Tests for ALSH-APPROX's per-layer function and layer modules
(``methods/alsh/layer.py``); the training method built on them is tested
in test_alsh_method.py."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sampling_mlp import layers, optim
from sampling_mlp.methods.alsh import kernels, layer
from sampling_mlp.optim import OptimConfig

N_IN, N_OUT, BUDGET = 12, 30, 6


def _layer(first=True, seed=0):
  k1, k2 = jax.random.split(jax.random.key(seed))
  params = layers.init_layer(k1, N_IN, N_OUT)
  hp = kernels.init_hash(k2, dim=kernels.transformed_dim(N_IN,
                                                         transform="sign_alsh"),
                         K=4, L=6, family="srp")
  return params, layer.ActiveLayer(
      params, hp, reads=None if first else 5, budget=BUDGET,
      activation="relu", transform="sign_alsh", m=2, U=0.75,
      optim_cfg=OptimConfig())


def test_active_layer_computes_exactly_the_active_nodes():
  params, mod = _layer()
  x = jax.random.normal(jax.random.key(3), (N_IN,))
  act = mod.example(jnp.uint32(7), x, None)
  idx = np.asarray(act.idx).astype(int)
  assert len(set(idx.tolist())) == BUDGET
  exact_z = np.asarray(x @ params.w + params.b)
  np.testing.assert_allclose(act.z, exact_z[idx], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(act.vals, np.maximum(exact_z[idx], 0), rtol=1e-5,
                             atol=1e-6)
  # The selection is the kernels' one rule on the layer's own table.
  q = kernels.sparse_query_codes(mod.query, x, None)
  want, _, _ = kernels.select_active(jnp.uint32(7),
                                     kernels.collisions(q, mod.table[...]),
                                     BUDGET)
  np.testing.assert_array_equal(act.idx, want)


def test_sparse_input_reads_only_its_rows():
  params, mod = _layer(first=False)
  rows = jnp.array([1, 4, 7, 8, 11], jnp.uint32)
  vals = jax.random.normal(jax.random.key(4), (5,))
  act = mod.example(jnp.uint32(3), vals, rows)
  dense = jnp.zeros(N_IN).at[rows].set(vals)
  idx = np.asarray(act.idx).astype(int)
  np.testing.assert_allclose(
      act.z, np.asarray(dense @ params.w + params.b)[idx], rtol=1e-5,
      atol=1e-6)


def test_delta_gradient_is_the_gathered_blocks_gradient():
  """d/d(delta) of a loss equals d/d(w) of the same loss at the active
  entries: the training step's gradient target is right."""
  params, mod = _layer()
  x = jax.random.normal(jax.random.key(5), (N_IN,))
  delta = mod.zero_delta(1)
  delta = jax.tree.map(lambda t: t[0], delta)
  g = jax.grad(lambda d: jnp.sum(mod.example(jnp.uint32(1), x, None,
                                             d).vals ** 2))(delta)
  idx = np.asarray(mod.example(jnp.uint32(1), x, None).idx).astype(int)

  def dense_loss(w, b):
    z = (x @ w + b)[idx]
    return jnp.sum(jax.nn.relu(z) ** 2)

  gw, gb = jax.grad(dense_loss, argnums=(0, 1))(params.w, params.b)
  np.testing.assert_allclose(g.w, np.asarray(gw).T[idx], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(g.b, np.asarray(gb)[idx], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("batch", [1, 3])
def test_module_call_is_the_example_function_per_example(batch):
  params, mod = _layer()
  x = jax.random.normal(jax.random.key(6), (batch, N_IN))
  seeds = jnp.arange(batch, dtype=jnp.uint32)
  out, carry = mod(seeds, x)
  for b in range(batch):
    act = mod.example(seeds[b], x[b], None)
    np.testing.assert_array_equal(carry.rows[b], act.idx)
    dense = np.zeros(N_OUT)
    dense[np.asarray(act.idx).astype(int)] = np.asarray(act.vals)
    np.testing.assert_allclose(out.a[b], dense, rtol=1e-6)
    assert int(np.asarray(out.computed[b]).sum()) == BUDGET


def test_slab_layout_round_trips_and_updates_only_given_entries():
  cfg = OptimConfig()
  p = jax.random.normal(jax.random.key(7), (4, 5))
  slab = optim.init_slab(cfg, p, axis=1)
  assert slab.shape == (4, 3, 5)
  np.testing.assert_array_equal(slab[:, 0], p)
  np.testing.assert_array_equal(slab[:, 1:], 0.0)
  g = jnp.ones((4, 5))
  mask = jnp.zeros((4, 5), bool).at[1].set(True)
  new = optim.update_slab_masked(cfg, slab, g, mask, jnp.asarray(1), axis=1)
  np.testing.assert_array_equal(new[jnp.array([0, 2, 3])],
                                slab[jnp.array([0, 2, 3])])
  np.testing.assert_allclose(new[1, 0], p[1] - 1e-3, rtol=1e-4)
