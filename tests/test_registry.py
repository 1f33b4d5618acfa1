"""Tests for the registry: options, typed configs, lookup, and one contract
that every registered method must meet (in the manner of optax's
``transform_test.py::test_scalers``).

The contract runs over ``registry.names()``, so a method registered
anywhere -- ``toy_method``, imported below, is one -- gets all of it with
no other code: under ``jit``, a few steps on tiny data are finite and keep
the declared shapes, do not retrace, pass under ``jax.debug_key_reuse``,
give identical numbers for the same seed, and, where the method has a
keep-everything setting (``MethodSpec.keep_all``), equal STANDARD.
"""

import dataclasses
import functools
import os
import subprocess
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import toy_method  # noqa: F401  (registers "top_half")
from conftest import make_tiny
from sampling_mlp import layers, registry, train
from sampling_mlp.optim import OptimConfig

MODEL = registry.ModelConfig(input_dim=20, num_classes=4, hidden=16, depth=2)


# -- options and configs -------------------------------------------------------


def test_unknown_method_lists_known_ones():
  with pytest.raises(ValueError, match="known methods: .*standard"):
    registry.get("slide")


def test_standard_is_registered_with_exact_flops():
  impl = registry.get("standard").make(
      registry.ModelConfig(input_dim=784, num_classes=10, hidden=1000,
                           depth=3), OptimConfig())
  # forward 3 products; backward: weight grads for 4 layers, input grads for 3.
  sizes = (784, 1000, 1000, 1000, 10)
  fwd = sum(n * m for n, m in zip(sizes[:-1], sizes[1:]))
  assert impl.step_flops(2) == 2 * (3 * fwd - 784 * 1000)


def test_option_validation_messages():
  opt = registry.Option("x_ratio", "ratio", 0.5, "a ratio",
                        check=lambda v: None if 0 < v <= 1 else "must be in (0, 1]")
  opt.validate(1.0)
  with pytest.raises(ValueError, match=r"--x_ratio=1.5: must be in \(0, 1\]"):
    opt.validate(1.5)
  enum = registry.Option("x_mode", "mode", "a", "mode", choices=("a", "b"))
  with pytest.raises(ValueError, match="not one of a, b"):
    enum.validate("c")


def test_option_type_errors_name_the_flag():
  opt = registry.Option("x_k", "k", 3, "k")
  with pytest.raises(ValueError, match=r"--x_k=1.5: expected a int"):
    opt.validate(1.5)
  with pytest.raises(ValueError, match="expected a bool"):
    registry.Option("x_b", "b", False, "b").validate("yes")
  with pytest.raises(ValueError, match="expected a float"):
    registry.Option("x_r", "r", 0.5, "r").validate("0.5")
  registry.Option("x_r", "r", 0.5, "r").validate(1)  # ints are fine for floats


@dataclasses.dataclass(frozen=True)
class _Config(registry.MethodConfig):
  prefix = "d_"
  k: int = registry.option(3, "k", check=lambda v: None if v > 0 else "> 0")
  mode: str = registry.option("a", "mode", choices=("a", "b"))


def test_config_from_flags_keeps_own_options_and_round_trips():
  cfg = _Config.from_flags({"d_k": 5, "other_x": 1})
  assert cfg == _Config(k=5) and cfg.mode == "a"
  assert cfg.flags() == {"d_k": 5, "d_mode": "a"}
  assert _Config.from_flags(cfg.flags()) == cfg
  assert [o.name for o in _Config.options()] == ["d_k", "d_mode"]


def test_config_validates_on_construction():
  with pytest.raises(ValueError, match=r"--d_k=0: > 0"):
    _Config(k=0)
  with pytest.raises(ValueError, match="not one of a, b"):
    _Config.from_flags({"d_mode": "c"})


def test_make_config_rejects_another_methods_config():
  with pytest.raises(ValueError, match="takes a MCConfig"):
    registry.get("mc").make_config(_Config())


def test_model_config_errors():
  with pytest.raises(ValueError, match="activation"):
    registry.ModelConfig(input_dim=4, num_classes=2, activation="gelu")
  with pytest.raises(ValueError, match="depth"):
    registry.ModelConfig(input_dim=4, num_classes=2, depth=-1)


def test_register_twice_is_an_error_unless_the_same_spec():
  spec = registry.get("standard")
  assert registry.register(spec) is spec
  with pytest.raises(ValueError, match="already registered"):
    registry.register(dataclasses.replace(spec, summary="another"))


def test_plugin_modules_from_the_environment(tmp_path):
  """``$SAMPLING_MLP_METHODS`` registers a method from any module, and a
  module that cannot be imported is a clear error."""
  env = dict(os.environ, SAMPLING_MLP_METHODS="toy_method",
             PYTHONPATH=os.pathsep.join([os.path.dirname(__file__)] +
                                        sys.path))
  code = "from sampling_mlp import registry; print(registry.names())"
  out = subprocess.run([sys.executable, "-c", code], env=env, text=True,
                       capture_output=True, check=True).stdout
  assert "top_half" in out and out.startswith("('standard'")
  env["SAMPLING_MLP_METHODS"] = "no_such_module"
  proc = subprocess.run([sys.executable, "-c", code], env=env, text=True,
                        capture_output=True)
  assert proc.returncode != 0
  assert "$SAMPLING_MLP_METHODS names module 'no_such_module'" in proc.stderr


# -- the contract ----------------------------------------------------------------


def _values(name):
  # Small enough layers that every sampled method really samples; the XLA
  # path of ALSH so that the contract needs no compiler (test_alsh_native
  # holds the native step to it).
  return {"mc_sample_input": True, "alsh_kernel": "xla"}


@functools.lru_cache(maxsize=None)
def _data(batch):
  d = make_tiny(n_train=64, n_eval=32)
  return (jnp.asarray(d.train.x[:3 * batch]).reshape(3, batch, -1),
          jnp.asarray(d.train.y[:3 * batch]).reshape(3, batch))


def _steps(name, batch, seed=0, values=None):
  """Three jitted steps from the run's initial state; the state, the losses
  and the number of traces."""
  impl = registry.get(name).make(MODEL, OptimConfig(),
                                 values if values is not None else
                                 _values(name))
  keys = train.RunKeys(seed)
  state = train.init_state(impl, keys)
  traces = []
  chex.clear_trace_counter()  # each call builds its own step

  def step(state, x, y, key):
    traces.append(1)
    return impl.train_step(state, x, y, impl.step_randomness(key, x.shape[0]))

  step = jax.jit(chex.assert_max_traces(step, n=1))
  xs, ys = _data(batch)
  losses = []
  with jax.debug_key_reuse(True):
    for t in range(3):
      state, metrics = step(state, xs[t], ys[t],
                            jax.random.fold_in(keys.train, t))
      losses.append(metrics["loss"])
  return impl, state, jnp.stack(losses), len(traces)


@pytest.mark.parametrize("batch", [1, 4], ids=["b1", "b4"])
@pytest.mark.parametrize("name", registry.names())
def test_contract(name, batch):
  impl, state, losses, traces = _steps(name, batch)
  assert traces == 1
  chex.assert_tree_all_finite(losses)
  params = impl.params_of(state)
  assert [(p.w.shape, p.b.shape) for p in params] == [
      ((n, m), (m,)) for n, m in zip(MODEL.sizes[:-1], MODEL.sizes[1:])]
  chex.assert_tree_all_finite(params)
  assert int(state.step) == 3
  # The same seed gives the same numbers, bit for bit.
  _, state2, losses2, _ = _steps(name, batch)
  chex.assert_trees_all_equal(losses, losses2)
  chex.assert_trees_all_equal(params, impl.params_of(state2))
  # A different seed gives different ones.
  _, _, losses3, _ = _steps(name, batch, seed=1)
  assert not np.array_equal(losses, losses3)


@pytest.mark.parametrize("name", registry.names())
def test_contract_analysis_interfaces(name):
  impl, state, _, _ = _steps(name, 4)
  x = _data(4)[0][0]
  logits = jax.jit(impl.predict)(state, x)
  chex.assert_shape(logits, (4, MODEL.num_classes))
  with jax.debug_key_reuse(True):
    outs = jax.jit(impl.approx_forward)(state, x, jax.random.key(3))
  assert len(outs) == len(MODEL.sizes) - 1
  for out, n in zip(outs, MODEL.sizes[1:]):
    chex.assert_shape([out.z, out.a], (4, n))
    assert out.computed is None or out.computed.shape == (4, n)
    chex.assert_tree_all_finite(out.a)
  diag = jax.jit(functools.partial(impl.diagnostics, batch_size=4))(
      state, x, jax.random.key(4))
  chex.assert_tree_all_finite(diag)
  assert isinstance(impl.saves_compute, str) and impl.saves_compute != "n/a"
  assert impl.step_flops(4) > 0


@pytest.mark.parametrize("batch", [1, 4], ids=["b1", "b4"])
@pytest.mark.parametrize(
    "name", [n for n in registry.names()
             if registry.get(n).keep_all is not None and n != "standard"])
def test_keep_everything_equals_standard(name, batch):
  values = dict(_values(name), **registry.get(name).keep_all)
  impl, state, losses, _ = _steps(name, batch, values=values)
  std, std_state, std_losses, _ = _steps("standard", batch)
  # Lazy Adam evaluates optax's formula in another order: float32 rounding.
  chex.assert_trees_all_close(losses, std_losses, rtol=1e-5, atol=1e-6)
  chex.assert_trees_all_close(impl.params_of(state),
                              std.params_of(std_state), rtol=1e-4, atol=1e-6)
  x = _data(4)[0][0]
  for out, ref in zip(impl.approx_forward(state, x, jax.random.key(0)),
                      layers.hidden_activations(impl.params_of(state), x,
                                                activation=MODEL.activation)):
    chex.assert_trees_all_close(out.a, ref, rtol=1e-5, atol=1e-6)
