import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sampling_mlp import layers


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


def test_activate_none_is_the_output_layer():
  z = jnp.array([-3.0, 0.0, 2.0])
  np.testing.assert_array_equal(layers.activate(None, z), z)
  np.testing.assert_array_equal(layers.activate("relu", z), [0.0, 0.0, 2.0])


def test_mlp_apply_and_hidden_activations_agree():
  params = layers.init_mlp(jax.random.key(0), (6, 8, 8, 3))
  x = jax.random.normal(jax.random.key(2), (5, 6))
  acts = layers.hidden_activations(params, x, activation="relu")
  assert [a.shape for a in acts] == [(5, 8), (5, 8), (5, 3)]
  np.testing.assert_array_equal(acts[-1], layers.mlp_apply(params, x,
                                                           activation="relu"))
  h = jax.nn.relu(x @ params[0].w + params[0].b)
  np.testing.assert_allclose(acts[0], h, rtol=1e-6)
