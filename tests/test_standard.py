"""Tests for STANDARD and the dense step every masked-dense method shares
(``methods/standard.py``)."""

import chex
import jax
import jax.numpy as jnp
import optax

from sampling_mlp import layers, registry, train
from sampling_mlp.optim import OptimConfig


def test_standard_step_is_optax_adam_on_the_exact_gradient():
  model = registry.ModelConfig(input_dim=6, num_classes=3, hidden=8, depth=2,
                               activation="relu")
  impl = registry.get("standard").make(model, OptimConfig(learning_rate=0.01))
  keys = train.RunKeys(0)
  state = train.init_state(impl, keys)
  params = impl.params_of(state)
  x = jax.random.normal(jax.random.key(1), (5, 6))
  y = jnp.array([0, 1, 2, 1, 0])

  def loss(p):
    return registry.cross_entropy(layers.mlp_apply(p, x, activation="relu"),
                                  y)

  tx = optax.adam(0.01, eps=1e-4)
  want_loss, g = jax.value_and_grad(loss)(params)
  updates, _ = tx.update(g, tx.init(params), params)
  want = optax.apply_updates(params, updates)
  new, metrics = jax.jit(impl.train_step)(state, x, y, keys.train)
  chex.assert_trees_all_close(metrics["loss"], want_loss, rtol=1e-6)
  chex.assert_trees_all_close(impl.params_of(new), want, rtol=1e-6,
                              atol=1e-7)
  assert int(new.step) == 1


def test_standard_forward_draws_nothing():
  model = registry.ModelConfig(input_dim=6, num_classes=3, hidden=8, depth=2)
  impl = registry.get("standard").make(model, OptimConfig())
  state = train.init_state(impl, train.RunKeys(0))
  x = jnp.ones((2, 6))
  a = impl.approx_forward(state, x, jax.random.key(0))
  b = impl.approx_forward(state, x, jax.random.key(1))
  chex.assert_trees_all_equal([o.a for o in a], [o.a for o in b])
  assert all(o.computed is None for o in a)
