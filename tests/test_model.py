"""Tests for the NNX modules: Dense, the MLP's forward pass, and how a
step's randomness is shared among layers."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from sampling_mlp import layers, model


def _params(sizes=(6, 8, 8, 3), seed=0):
  return layers.init_mlp(jax.random.key(seed), sizes)


def test_dense_mlp_forward_is_the_exact_network():
  params = _params()
  x = jax.random.normal(jax.random.key(2), (5, 6))
  mlp = model.dense_mlp(params, activation="relu")
  outs = mlp.forward(jax.random.key(0), x)
  want = layers.hidden_activations(params, x, activation="relu")
  assert len(outs) == 3
  for out, a in zip(outs, want):
    np.testing.assert_array_equal(out.a, a)
    assert out.computed is None
  # The output layer has no activation: its z is its a.
  np.testing.assert_array_equal(outs[-1].z, outs[-1].a)
  chex.assert_trees_all_equal(mlp.params(), params)


def test_split_and_merge_round_trip_inside_jit():
  params = _params()
  mlp = model.dense_mlp(params, activation="relu")
  graphdef, state = nnx.split(mlp)

  @jax.jit
  def double(state):
    m = nnx.merge(graphdef, state)
    for layer in m.layers:
      p = layer.params()
      layer.set_raw(layers.LayerParams(2 * p.w, 2 * p.b))
    return nnx.state(m)

  doubled = nnx.merge(graphdef, double(state)).params()
  chex.assert_trees_all_close(doubled, jax.tree.map(lambda a: 2 * a, params))


@pytest.mark.parametrize("draws", [(True, True, False), (False, True, True),
                                   (True, False, True)],
                         ids=["hidden", "skip-first", "skip-middle"])
def test_split_randomness_gives_drawing_layers_split_keys(draws):
  key = jax.random.key(7)
  parts = model.split_randomness(key, draws)
  keys = jax.random.split(key, sum(draws))
  got = [p for p in parts if p is not None]
  assert [p is None for p in parts] == [not d for d in draws]
  for g, k in zip(got, keys):
    np.testing.assert_array_equal(jax.random.key_data(g),
                                  jax.random.key_data(k))


def test_split_randomness_of_a_batch_of_keys_splits_each():
  keys = jax.random.split(jax.random.key(1), 4)
  parts = model.split_randomness(keys, (True, True))
  for j in range(4):
    want = jax.random.split(keys[j], 2)
    for i in range(2):
      np.testing.assert_array_equal(jax.random.key_data(parts[i][j]),
                                    jax.random.key_data(want[i]))


def test_split_randomness_of_seeds_takes_columns():
  seeds = jnp.arange(12, dtype=jnp.uint32).reshape(4, 3)
  parts = model.split_randomness(seeds, (True, False, True))
  np.testing.assert_array_equal(parts[0], seeds[:, 0])
  assert parts[1] is None
  np.testing.assert_array_equal(parts[2], seeds[:, 1])


def test_iterate_call_hook_sees_every_layer_in_order():
  mlp = model.dense_mlp(_params(), activation="relu")
  seen = []

  def call(layer, rand, carry, delta):
    seen.append(layer.w.shape)
    return layer(rand, carry, delta)

  x = jnp.ones((2, 6))
  outs = list(mlp.iterate(None, x, call=call))
  assert seen == [(6, 8), (8, 8), (8, 3)]
  np.testing.assert_array_equal(outs[-1].a, mlp.forward(None, x)[-1].a)
