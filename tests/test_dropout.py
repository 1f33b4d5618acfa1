"""Tests for ``methods/dropout.py`` (DROPOUT and ADAPTIVE DROPOUT / standout).

Statistical tolerances: keep rates and means are compared with 5 standard
errors (two-sided normal tail 5.7e-7 per comparison); with at most a few
hundred comparisons per test, a false failure has probability < 1e-3 even
before accounting for the fixed keys, which make every run identical.
"""

import functools
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sampling_mlp import data, experiment, layers, registry, train
from sampling_mlp.methods import dropout
from sampling_mlp.optim import OptimConfig

METHODS = ("dropout", "adaptive_dropout")
Z_MAX = 5.0


def _params(sizes, seed=0):
  return layers.init_mlp(jax.random.key(seed), sizes)


def _x(batch, dim, seed=1, scale=1.0):
  return scale * jax.random.normal(jax.random.key(seed), (batch, dim))


def _impl(name, *, depth=3, hidden=32, input_dim=8, num_classes=3,
          activation="leaky_relu", **values):
  model = registry.ModelConfig(input_dim=input_dim, num_classes=num_classes,
                               hidden=hidden, depth=depth,
                               activation=activation)
  return registry.get(name).make(model, OptimConfig(), values)


def _batch(impl, batch=16, seed=3):
  kx, ky = jax.random.split(jax.random.key(seed))
  x = jax.random.normal(kx, (batch, impl.model.input_dim))
  y = jax.random.randint(ky, (batch,), 0, impl.model.num_classes)
  return x, y


def _np_act(name, z):
  if name == "leaky_relu":
    return np.where(z > 0, z, layers.LEAKY_SLOPE * z)
  if name == "relu":
    return np.maximum(z, 0)
  if name == "sigmoid":
    return 1 / (1 + np.exp(-z))
  return z


def _sigmoid(v):
  return 1 / (1 + np.exp(-v))


def _std(state):
  """The standard-layout weights of a training state."""
  return state.view().params()


def _pass(name, params, x, key, activation, **values):
  """The method's training-time forward pass (its per-layer function,
  composed by the MLP) of the network ``params``."""
  depth = len(params) - 1
  impl = _impl(name, depth=depth, hidden=params[0].w.shape[1] if depth else 1,
               input_dim=params[0].w.shape[0],
               num_classes=params[-1].w.shape[1], activation=activation,
               **values)
  return impl.build_model(None, params).forward(key, x)


def dropout_forward(key, params, x, *, keep_prob, activation):
  outs = _pass("dropout", params, x, key, activation, keep_prob=keep_prob)
  return outs[-1].a, tuple(o.computed for o in outs[:-1])


def standout_forward(key, params, x, *, alpha, beta, activation):
  outs = _pass("adaptive_dropout", params, x, key, activation,
               standout_alpha=alpha, standout_beta=beta)
  return (outs[-1].a, tuple(o.computed for o in outs[:-1]),
          tuple(o.aux for o in outs[:-1]))


def _loss(impl, params, x, y, key):
  """The training loss as a function of standard-layout weights."""
  logits = impl.build_model(None, params).forward(key, x)[-1].a
  return registry.cross_entropy(logits, y)


# ---------------------------------------------------------------------------
# Dropout.


@pytest.mark.parametrize("keep_prob", [0.05, 0.5])
def test_dropout_keeps_requested_fraction(keep_prob):
  params = _params((16, 256, 256, 256, 4))
  x = _x(64, 16)
  draws = 8

  def masks_for(key):
    return dropout_forward(key, params, x, keep_prob=keep_prob,
                                   activation="leaky_relu")[1]

  masks = jax.jit(jax.vmap(masks_for))(jax.random.split(jax.random.key(5),
                                                        draws))
  assert len(masks) == 3
  for m in masks:
    chex.assert_shape(m, (draws, 64, 256))
    assert m.dtype == jnp.bool_
  se = np.sqrt(keep_prob * (1 - keep_prob) / masks[0].size)
  for m in masks:
    assert abs(float(np.mean(m)) - keep_prob) < Z_MAX * se
  overall = np.mean([np.mean(m) for m in masks])
  assert abs(overall - keep_prob) < Z_MAX * se / np.sqrt(3)
  # One key per layer and per draw: no two layers (or draws) share a mask.
  m = [np.asarray(mm) for mm in masks]
  assert not np.array_equal(m[0], m[1]) and not np.array_equal(m[1], m[2])
  assert not np.array_equal(m[0][0], m[0][1])


@pytest.mark.parametrize("depth,activation", [(1, "leaky_relu"),
                                              (2, "linear")])
def test_inverted_scaling_is_unbiased(depth, activation):
  """The logits are linear in each layer's (independent) mask in these nets,
  so inverted scaling makes E[logits] equal the exact logits; every entry of
  the mean over 20,000 draws must be within 5 standard errors."""
  sizes = (6,) + (12,) * depth + (3,)
  params = _params(sizes, seed=2)
  x = _x(4, 6)
  keep_prob = 0.5

  def one(key):
    return dropout_forward(key, params, x, keep_prob=keep_prob,
                                   activation=activation)[0]

  draws = np.asarray(
      jax.jit(jax.vmap(one))(jax.random.split(jax.random.key(7), 20_000)),
      np.float64)
  exact = np.asarray(layers.mlp_apply(params, x, activation=activation))
  se = draws.std(axis=0, ddof=1) / np.sqrt(draws.shape[0])
  assert np.all(se > 0)
  z = (draws.mean(axis=0) - exact) / se
  assert np.max(np.abs(z)) < Z_MAX, z
  # Without the 1/keep_prob the hidden contribution halves: far outside.
  half = exact - 0.5 * (exact - np.asarray(params[-1].b))
  if depth == 1:
    assert np.max(np.abs((draws.mean(axis=0) - half) / se)) > 10 * Z_MAX


def test_dropout_forward_matches_masked_reference():
  params = _params((5, 9, 9, 3), seed=4)
  x = _x(3, 5)
  kp = 0.3
  logits, masks = jax.jit(functools.partial(
      dropout_forward, keep_prob=kp, activation="relu"))(
          jax.random.key(8), params, x)
  a = np.asarray(x, np.float64)
  for p, m in zip(params[:-1], masks):
    a = _np_act("relu", a @ np.asarray(p.w) + np.asarray(p.b))
    a = a * np.asarray(m) / kp
  ref = a @ np.asarray(params[-1].w) + np.asarray(params[-1].b)
  np.testing.assert_allclose(logits, ref, rtol=1e-5, atol=1e-5)


def test_dropout_evaluation_is_exact():
  impl = _impl("dropout")
  state = train.init_state(impl, train.RunKeys(0))
  x, _ = _batch(impl)
  np.testing.assert_array_equal(
      impl.predict(state, x),
      layers.mlp_apply(_std(state), x, activation=impl.model.activation))


def test_keep_prob_one_is_the_standard_step():
  kwargs = dict(depth=3, hidden=32)
  drop = _impl("dropout", keep_prob=1.0, **kwargs)
  std = _impl("standard", **kwargs)
  keys = train.RunKeys(11)
  states = [train.init_state(drop, keys), train.init_state(std, keys)]
  chex.assert_trees_all_equal(_std(states[0]), _std(states[1]))
  steps = [jax.jit(drop.train_step), jax.jit(std.train_step)]
  for i in range(3):
    x, y = _batch(drop, seed=20 + i)
    key = jax.random.fold_in(keys.train, i)
    (states[0], m0), (states[1], m1) = [
        step(s, x, y, key) for step, s in zip(steps, states)]
    np.testing.assert_allclose(m0["loss"], m1["loss"], rtol=1e-6)
  chex.assert_trees_all_close(_std(states[0]), _std(states[1]), rtol=1e-6,
                              atol=1e-7)
  assert int(states[0].step) == 3


def test_dropout_gradient_flows_only_through_kept_nodes():
  impl = _impl("dropout", keep_prob=0.2, depth=2, hidden=32)
  state = train.init_state(impl, train.RunKeys(0))
  x, y = _batch(impl, batch=4)
  key = jax.random.key(13)
  _, masks = dropout_forward(key, _std(state), x, keep_prob=0.2,
                                     activation=impl.model.activation)
  grads = jax.jit(jax.grad(functools.partial(_loss, impl)))(_std(state), x, y,
                                                           key)
  for k, m in enumerate(masks):
    dead = ~np.asarray(m).any(axis=0)  # dropped for every example
    assert 0 < dead.sum() < dead.size
    np.testing.assert_array_equal(np.asarray(grads[k].w)[:, dead], 0)
    np.testing.assert_array_equal(np.asarray(grads[k].b)[dead], 0)
    np.testing.assert_array_equal(np.asarray(grads[k + 1].w)[dead, :], 0)
    assert np.all(np.abs(np.asarray(grads[k].b)[~dead]) > 0)


# ---------------------------------------------------------------------------
# Adaptive dropout (standout).


def test_standout_keep_probs_follow_formula():
  alpha, beta = 0.7, -0.3  # not the defaults, and not symmetric
  params = _params((5, 7, 7, 3), seed=6)
  x = _x(4, 5, scale=2.0)
  logits, masks, probs = jax.jit(functools.partial(
      standout_forward, alpha=alpha, beta=beta,
      activation="leaky_relu"))(jax.random.key(9), params, x)
  a = np.asarray(x, np.float64)
  for p, m, pi in zip(params[:-1], masks, probs):
    z = a @ np.asarray(p.w, np.float64) + np.asarray(p.b, np.float64)
    np.testing.assert_allclose(pi, _sigmoid(alpha * z + beta), rtol=1e-5,
                               atol=1e-6)
    a = _np_act("leaky_relu", z) * np.asarray(m)  # no rescaling
  ref = a @ np.asarray(params[-1].w) + np.asarray(params[-1].b)
  np.testing.assert_allclose(logits, ref, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(
      dropout.standout_keep_probs(jnp.array([0.0, 2.0]), alpha=0.5, beta=1.0),
      _sigmoid(np.array([1.0, 2.0])), rtol=1e-6)


def test_standout_empirical_keep_rate_matches_pi():
  params = _params((6, 16, 3), seed=10)
  x = _x(4, 6, scale=3.0)  # spreads pi over (0, 1)
  draws = 4000

  def one(key):
    _, (m,), (pi,) = standout_forward(
        key, params, x, alpha=0.5, beta=1.0, activation="leaky_relu")
    return m, pi

  m, pi = jax.jit(jax.vmap(one))(jax.random.split(jax.random.key(12), draws))
  pi = np.asarray(pi[0], np.float64)
  assert pi.min() < 0.5 < pi.max()
  rate = np.asarray(m).mean(axis=0)
  se = np.sqrt(pi * (1 - pi) / draws)
  assert np.max(np.abs(rate - pi) / se) < Z_MAX


def test_standout_predict_uses_expected_mask():
  alpha, beta = 0.8, 0.2
  impl = _impl("adaptive_dropout", depth=2, hidden=16, standout_alpha=alpha,
               standout_beta=beta)
  state = train.init_state(impl, train.RunKeys(1))
  x, _ = _batch(impl)
  a = np.asarray(x, np.float64)
  for p in _std(state)[:-1]:
    z = a @ np.asarray(p.w, np.float64) + np.asarray(p.b, np.float64)
    a = _np_act(impl.model.activation, z) * _sigmoid(alpha * z + beta)
  ref = a @ np.asarray(_std(state)[-1].w) + np.asarray(_std(state)[-1].b)
  got = impl.predict(state, x)
  np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
  exact = layers.mlp_apply(_std(state), x, activation=impl.model.activation)
  assert np.max(np.abs(np.asarray(got) - np.asarray(exact))) > 1e-2
  diag = impl.diagnostics(state, x, jax.random.key(0), batch_size=16)
  chex.assert_shape(diag["standout_keep_prob"], (2,))


def test_standout_training_gradient_treats_mask_and_pi_as_constants():
  impl = _impl("adaptive_dropout", depth=2, hidden=16)
  state = train.init_state(impl, train.RunKeys(2))
  x, y = _batch(impl, batch=8)
  key = jax.random.key(14)
  _, masks, _ = standout_forward(
      key, _std(state), x, alpha=impl.config.alpha, beta=impl.config.beta,
      activation=impl.model.activation)
  act = layers.activation_fn(impl.model.activation)

  def fixed_mask_loss(params):
    a = x
    for p, m in zip(params[:-1], masks):
      a = act(layers.dense(p, a)) * m
    return registry.cross_entropy(layers.dense(params[-1], a), y)

  # The evaluation path does differentiate pi (documented choice).
  def expected(params, stop):
    a = x
    for p in params[:-1]:
      z = layers.dense(p, a)
      pi = dropout.standout_keep_probs(z, alpha=impl.config.alpha, beta=impl.config.beta)
      a = act(z) * (jax.lax.stop_gradient(pi) if stop else pi)
    return jnp.sum(layers.dense(params[-1], a))

  @jax.jit
  def all_grads(params):
    return (jax.grad(functools.partial(_loss, impl))(params, x, y, key),
            jax.grad(fixed_mask_loss)(params),
            jax.grad(lambda p: jnp.sum(dropout.standout_expected(
                p, x, alpha=impl.config.alpha, beta=impl.config.beta,
                activation=impl.model.activation)[0]))(params),
            jax.grad(expected)(params, False),
            jax.grad(expected)(params, True))

  g_train, g_fixed, g_eval, g_pi, g_stop = all_grads(_std(state))
  chex.assert_trees_all_close(g_train, g_fixed, rtol=1e-5, atol=1e-7)
  chex.assert_trees_all_close(g_eval, g_pi, rtol=1e-5, atol=1e-6)
  diff = jax.tree.map(lambda a, b: float(jnp.max(jnp.abs(a - b))), g_eval,
                      g_stop)
  assert max(jax.tree.leaves(diff)) > 1e-3


# ---------------------------------------------------------------------------
# Both methods.


@pytest.mark.parametrize("name", METHODS)
def test_every_layer_is_trained(name):
  """The authors' Dropout baseline left its middle layers untrained."""
  impl = _impl(name, depth=3, hidden=64)
  state = train.init_state(impl, train.RunKeys(3))
  x, y = _batch(impl, batch=16)
  new, metrics = jax.jit(impl.train_step)(state, x, y, jax.random.key(15))
  assert np.isfinite(float(metrics["loss"]))
  assert len(_std(new)) == 4
  # Adam's first moment after one step is (1 - b1) * gradient.
  for g in jax.tree.leaves(new.opt_state[0].mu):  # every Param's moment
    assert float(jnp.max(jnp.abs(g))) > 0
  for old_leaf, new_leaf in zip(jax.tree.leaves(_std(state)),
                                jax.tree.leaves(_std(new))):
    assert not np.array_equal(old_leaf, new_leaf)


@pytest.mark.parametrize("name", METHODS)
def test_honest_cost_and_no_key_reuse(name):
  impl = _impl(name, depth=2, hidden=16)
  assert impl.step_flops(7) == registry.exact_step_flops(impl.model.sizes, 7)
  assert impl.saves_compute.startswith("no:")
  assert registry.get(name).summary
  state = train.init_state(impl, train.RunKeys(4))
  x, y = _batch(impl, batch=4)
  with jax.debug_key_reuse(True):  # checked while tracing
    step = jax.jit(impl.train_step)
    step(state, x, y, jax.random.key(16))
    # Different step keys draw different masks, hence different updates.
    a, _ = step(state, x, y, jax.random.key(17))
    b, _ = step(state, x, y, jax.random.key(18))
  assert not np.array_equal(_std(a)[0].w, _std(b)[0].w)


def test_depth_zero_has_nothing_to_mask():
  for name in METHODS:
    impl = _impl(name, depth=0)
    state = train.init_state(impl, train.RunKeys(0))
    x, y = _batch(impl)
    _, metrics = jax.jit(impl.train_step)(state, x, y, jax.random.key(0))
    assert np.isfinite(float(metrics["loss"]))


@pytest.mark.parametrize("values", [
    {"keep_prob": 0}, {"keep_prob": 0.0}, {"keep_prob": 1.5},
    {"keep_prob": -0.1}, {"keep_prob": float("nan")}, {"keep_prob": True},
    {"keep_prob": "0.5"}])
def test_bad_keep_prob_raises(values):
  spec = registry.get("dropout")
  with pytest.raises(ValueError, match=r"keep_prob.*(\(0, 1\]|expected a float)"):
    spec.make_config(values)
  with pytest.raises(ValueError, match="keep_prob"):
    _impl("dropout", **values)


def test_bad_standout_options_and_kernel_checks_raise():
  for name in ("standout_alpha", "standout_beta"):
    for bad in (float("nan"), float("inf"), "1"):
      with pytest.raises(ValueError, match=name):
        _impl("adaptive_dropout", **{name: bad})
  with pytest.raises(ValueError, match="keep_prob"):
    dropout.dropout_layer(jax.random.key(0), jnp.ones((1, 3)),
                          _params((3, 4, 2))[0], keep_prob=0.0,
                          activation="relu")
  assert registry.get("dropout").make_config({}).keep_prob == 0.05
  assert registry.get("adaptive_dropout").make_config({}).flags() == {
      "standout_alpha": 0.5, "standout_beta": 1.0}


# ---------------------------------------------------------------------------
# End to end.


def _synthetic(n=192, dim=10, classes=3, seed=0):
  rng = np.random.default_rng(seed)
  centers = 3 * rng.normal(size=(classes, dim))

  def split(k):
    y = rng.integers(0, classes, size=k).astype(np.int32)
    x = (centers[y] + rng.normal(size=(k, dim))).astype(np.float32)
    return data.Split(x, y)

  return data.Dataset("synthetic", split(n), split(64), split(64), classes, dim)


@pytest.mark.parametrize("name", METHODS)
def test_run_one(name):
  ds = _synthetic()
  spec = experiment.RunSpec.make(method=name, dataset="synthetic", depth=2,
                                 hidden=32, batch_size=16, epochs=2)
  rows = experiment.run_one(spec, ds, None, progress=False)
  assert [r["epoch"] for r in rows] == [1, 2]
  assert rows[-1]["steps"] == 2 * (192 // 16)
  for r in rows:
    assert np.isfinite(r["train_loss"])
    assert 0.0 <= r["dev_accuracy"] <= 1.0
    assert 0.0 <= r["test_accuracy"] <= 1.0
  if name == "adaptive_dropout":
    assert len(rows[-1]["standout_keep_prob"]) == 2
