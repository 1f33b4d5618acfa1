import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sampling_mlp import layers
from sampling_mlp.model import MLP
from flax import nnx


def test_dense_is_affine():
  key = jax.random.key(0)
  p = layers.init_layer(key, 5, 3)
  x = jax.random.normal(jax.random.key(1), (4, 5))
  np.testing.assert_allclose(layers.dense(p, x), x @ p.w + p.b, rtol=1e-6)
  chex.assert_shape(layers.dense(p, x), (4, 3))


@pytest.mark.parametrize("name,value", [
    ("relu", [0.0, 0.0, 2.0]),
    ("leaky_relu", [-0.01 * 3, 0.0, 2.0]),
    ("sigmoid", list(1 / (1 + np.exp(-np.array([-3.0, 0.0, 2.0]))))),
    ("linear", [-3.0, 0.0, 2.0]),
])
def test_activations(name, value):
  z = jnp.array([-3.0, 0.0, 2.0])
  np.testing.assert_allclose(layers.activation_fn(name)(z), value, rtol=1e-6)


def test_unknown_activation_lists_choices():
  with pytest.raises(ValueError, match="relu, leaky_relu, sigmoid, linear"):
    layers.activation_fn("tanh")


def test_init_bounds_follow_fan_in():
  p = layers.init_layer(jax.random.key(0), 400, 300)
  assert float(jnp.abs(p.w).max()) <= 1 / 20 + 1e-7
  # Uniform(-b, b) has std b / sqrt(3).
  np.testing.assert_allclose(float(p.w.std()), (1 / 20) / np.sqrt(3), rtol=0.02)


def test_layer_sizes_and_errors():
  assert layers.layer_sizes(input_dim=784, hidden=10, depth=2,
                            num_classes=3) == (784, 10, 10, 3)
  with pytest.raises(ValueError, match="hidden width"):
    layers.layer_sizes(input_dim=784, hidden=0, depth=2, num_classes=3)


def test_nnx_module_matches_pure_apply():
  model = MLP((6, 8, 8, 3), activation="relu", rngs=nnx.Rngs(params=jax.random.key(0)))
  x = jax.random.normal(jax.random.key(2), (5, 6))
  params = model.params()
  chex.assert_trees_all_close(model(x), layers.mlp_apply(params, x, activation="relu"))
  # Loading modified params back changes the module's output accordingly.
  doubled = jax.tree.map(lambda a: 2 * a, params)
  model.load(doubled)
  chex.assert_trees_all_close(model(x), layers.mlp_apply(doubled, x, activation="relu"))
  acts = layers.hidden_activations(params, x, activation="relu")
  assert [a.shape for a in acts] == [(5, 8), (5, 8), (5, 3)]
