"""Tests for the authors' network (no bias, weight normalisation) across
the layers, the modules and every registered method."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import toy_method  # noqa: F401  (registers "top_half")
from conftest import make_tiny
from sampling_mlp import experiment, layers, model, registry, train
from sampling_mlp.optim import OptimConfig

AUTHORS = registry.AUTHORS_NETWORK
MODEL = registry.ModelConfig(input_dim=20, num_classes=4, hidden=16, depth=2,
                             **AUTHORS)


def test_weight_norm_forward_is_g_times_unit_direction():
  v = jax.random.normal(jax.random.key(0), (5, 3))
  g = jnp.asarray([0.5, 2.0, -1.0])
  w = layers.weight_norm(v, g)
  for j in range(3):
    np.testing.assert_allclose(w[:, j], g[j] * v[:, j] / np.linalg.norm(
        v[:, j]), rtol=1e-6)
  # Node-major: the same weights, transposed.
  np.testing.assert_allclose(layers.weight_norm(v.T, g, axis=1), w.T,
                             rtol=1e-6)
  # The initial lengths reproduce the weights.
  np.testing.assert_allclose(layers.weight_norm(v, layers.weight_norm_init(v)),
                             v, rtol=1e-6)


def test_weight_norm_gradients_match_salimans_and_kingma():
  """grad g = G . u and grad v = g / ||v|| (G - (G . u) u), u = v / ||v||
  (Salimans and Kingma 2016, eq. 3), against autodiff."""
  kv, kg, kx = jax.random.split(jax.random.key(1), 3)
  v = jax.random.normal(kv, (6, 4))
  g = jax.random.uniform(kg, (4,), minval=0.5, maxval=2.0)
  x = jax.random.normal(kx, (3, 6))
  loss = lambda w: jnp.sum(jnp.tanh(x @ w) ** 2)
  gv, gg = jax.grad(lambda v, g: loss(layers.weight_norm(v, g)),
                    argnums=(0, 1))(v, g)
  G = jax.grad(loss)(layers.weight_norm(v, g))
  norm = jnp.linalg.norm(v, axis=0)
  u = v / norm
  dot = jnp.sum(G * u, axis=0)
  np.testing.assert_allclose(gg, dot, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(gv, g / norm * (G - dot * u), rtol=1e-5,
                             atol=1e-6)


def test_dense_keeps_v_and_g_and_no_bias():
  p = layers.init_layer(jax.random.key(2), 5, 3, bias=False)
  np.testing.assert_array_equal(p.b, 0)
  layer = model.Dense(p, activation=None, **AUTHORS)
  chex.assert_trees_all_close(layer.params(), p, rtol=1e-6)
  names = {"/".join(map(str, k)) for k, _ in nnx.to_flat_state(
      nnx.state(layer, nnx.Param))}
  assert names == {"w", "g"}
  raw = layer.raw()
  assert isinstance(raw, model.NormedParams) and raw.b is None


def _steps(name, values, batch=4):
  impl = registry.get(name).make(MODEL, OptimConfig(), values)
  keys = train.RunKeys(0)
  state = train.init_state(impl, keys)
  d = make_tiny(n_train=64, n_eval=32)
  xs = jnp.asarray(d.train.x[:3 * batch]).reshape(3, batch, -1)
  ys = jnp.asarray(d.train.y[:3 * batch]).reshape(3, batch)
  step = jax.jit(lambda s, x, y, k: impl.train_step(
      s, x, y, impl.step_randomness(k, x.shape[0])))
  losses = []
  for t in range(3):
    state, m = step(state, xs[t], ys[t], jax.random.fold_in(keys.train, t))
    losses.append(m["loss"])
  return impl, state, jnp.stack(losses)


def _values(name):
  return {"mc_sample_input": True, "alsh_kernel": "xla"}


@pytest.mark.parametrize("name", registry.names())
def test_bias_free_layers_have_no_bias_or_moments(name):
  impl, state, losses = _steps(name, _values(name))
  chex.assert_tree_all_finite(losses)
  paths = ["/".join(map(str, k)) for k, _ in
           nnx.to_flat_state(state.model)]
  assert not [p for p in paths if p.endswith("/b") or "/b/" in p], paths
  assert not [p for p in jax.tree_util.tree_flatten_with_path(
      state.opt_state)[0] if "'b'" in jax.tree_util.keystr(p[0])
      or ".b" in jax.tree_util.keystr(p[0])]
  for p in impl.params_of(state):
    np.testing.assert_array_equal(p.b, 0)


@pytest.mark.parametrize("batch", [1, 4], ids=["b1", "b4"])
@pytest.mark.parametrize(
    "name", [n for n in registry.names()
             if registry.get(n).keep_all is not None and n != "standard"])
def test_keep_everything_equals_standard_with_the_authors_network(name,
                                                                   batch):
  values = dict(_values(name), **registry.get(name).keep_all)
  impl, state, losses = _steps(name, values, batch)
  std, std_state, std_losses = _steps("standard", {}, batch)
  chex.assert_trees_all_close(losses, std_losses, rtol=1e-5, atol=1e-6)
  chex.assert_trees_all_close(impl.params_of(state),
                              std.params_of(std_state), rtol=1e-4, atol=1e-6)
  # ...and the network matters: the default network's losses differ.
  default = registry.ModelConfig(input_dim=20, num_classes=4, hidden=16,
                                 depth=2)
  assert MODEL.network != default.network


def test_run_ids_of_the_default_network_are_unchanged_and_authors_differ():
  base = dict(method="standard", dataset="mnist_small", depth=1, hidden=8,
              batch_size=4, epochs=1)
  a = experiment.RunSpec.make(**base)
  b = experiment.RunSpec.make(**base, bias=True, weight_norm=False)
  c = experiment.RunSpec.make(**base, **AUTHORS)
  assert a.run_id == b.run_id and "bias" not in a.config()
  assert c.run_id != a.run_id and "no-bias weight-norm" in c.label()


def test_cnn_with_the_authors_network_is_refused():
  with pytest.raises(ValueError, match="supports only the default network"):
    experiment.RunSpec.make(method="standard", dataset="mnist_small", depth=1,
                            hidden=8, batch_size=4, epochs=1, model="lenet",
                            **AUTHORS)
