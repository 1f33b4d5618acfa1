"""Tests for MC-APPROX's native updates (``methods/mc/native.py``): forward
mode's row update with the row norms it keeps, and backward mode's update
from the weight gradient's factors with the column norms it keeps.

``RowSampledDense.update_rows`` with jax.numpy is the definition: the
kernel must give the same slab and norms (to float32 rounding: it folds
Adam's bias corrections into the step size), touch no row it was not
given, skip padding, split the rows over threads without changing them,
and train the same.  ``ColumnSampledDense.update_factored`` with
jax.numpy (``a.T @ d``, then the optimizer) is the definition of the
factored update, which the kernel must match at every shape (row and
column tails, unused slots).  The kept norms must stay those of the current
weights with either update, and the kernel choice must fail clearly, or
fall back, where the kernel cannot be built.
"""

import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from sampling_mlp import registry, train
from sampling_mlp.layers import LayerParams
from sampling_mlp.methods import mc
from sampling_mlp.methods.mc import method as mc_method
from sampling_mlp.methods.mc import native
from sampling_mlp.optim import OptimConfig


@pytest.fixture
def kernels():
  status = native.status()
  if not status.ok:
    pytest.skip(f"native kernels unavailable: {status.reason}")
  return status


def _layer(optim, n=200, m=64, seed=0):
  rng = np.random.default_rng(seed)
  params = LayerParams(jnp.asarray(rng.normal(size=(n, m)), jnp.float32),
                          jnp.zeros((m,), jnp.float32))
  return mc.RowSampledDense(params, activation="relu", num_samples=20,
                            sampler="bernoulli", optim_cfg=optim)


def _updated(layer, cfg, rows, grads, native_):
  """The layer's (slab, norms) after one update per gradient in ``grads``
  (counts 1, 2, ...), by the kernel or by jax.numpy."""
  graphdef, state = nnx.split(layer)

  @jax.jit
  def step(state, g, count):
    layer = nnx.merge(graphdef, state)
    layer.update_rows(cfg, rows, g, count, native=native_)
    return nnx.state(layer)

  for t, g in enumerate(grads, start=1):
    state = step(state, g, jnp.int32(t))
  layer = nnx.merge(graphdef, state)
  return np.asarray(layer.w[...]), np.asarray(layer.norms[...])


@pytest.mark.parametrize("optim", ["adam", "sgd"])
@pytest.mark.parametrize("r", [5, 150])  # 150 rows: several threads' chunks
def test_update_rows_matches_xla(kernels, optim, r):
  cfg = OptimConfig(name=optim, learning_rate=1e-2)
  n, m = 200, 64
  rng = np.random.default_rng(1)
  rows = rng.permutation(n)[:r].astype(np.int32)
  rows[::7] = n  # padding: skipped
  # Three updates, so that Adam's moments and bias corrections matter.
  grads = [jnp.asarray(rng.normal(size=(r, m)), jnp.float32)
           for _ in range(3)]
  layer = _layer(cfg, n, m)
  slab0, norms0 = np.asarray(layer.w[...]), np.asarray(layer.norms[...])
  ws, ns = _updated(_layer(cfg, n, m), cfg, jnp.asarray(rows), grads, False)
  wn, nn = _updated(_layer(cfg, n, m), cfg, jnp.asarray(rows), grads, True)
  np.testing.assert_allclose(wn, ws, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(nn, ns, rtol=1e-5)
  # Rows not listed (and padding) are untouched, bit for bit ...
  touched = sorted(set(rows.tolist()) - {n})
  untouched = np.setdiff1d(np.arange(n), touched)
  np.testing.assert_array_equal(wn[untouched], slab0[untouched])
  np.testing.assert_array_equal(nn[untouched], norms0[untouched])
  # ... and every listed one moved.
  assert np.all(np.abs(wn[touched, 0] - slab0[touched, 0]).max(axis=1) > 0)


def test_update_rows_rejects_bad_shapes(kernels):
  slab = jnp.zeros((10, 2, 4))  # two slots: neither Adam nor SGD
  with pytest.raises(Exception, match=r"slab \[n, S, m\] with S in \{1, 3\}"):
    jax.block_until_ready(native.update_rows(
        slab, jnp.zeros((10,)), jnp.zeros((3,), jnp.int32),
        jnp.zeros((3, 4)), jnp.int32(1), optim=OptimConfig()))


def _mc(kernel, sampler="bernoulli", mode="forward"):
  model = registry.ModelConfig(input_dim=20, num_classes=4, hidden=48,
                               depth=2, activation="relu")
  return registry.get("mc").make(
      model, OptimConfig(learning_rate=1e-2),
      {"mc_sampler": sampler, "mc_ratio": 0.25, "mc_kernel": kernel,
       "mc_mode": mode})


def _train(impl, steps=6, end_epoch=False):
  state = train.init_state(impl, train.RunKeys(0))
  step = jax.jit(lambda s, x, y, k: impl.train_step(
      s, x, y, impl.step_randomness(k, x.shape[0])))
  rng = np.random.default_rng(3)
  for i in range(steps):
    x = jnp.asarray(rng.normal(size=(16, 20)), jnp.float32)
    y = jnp.asarray(rng.integers(0, 4, 16), jnp.int32)
    state, metrics = step(state, x, y, jax.random.key(i))
  if end_epoch:
    state = jax.jit(impl.end_epoch)(state, jax.random.key(99))
  return state, float(metrics["loss"])


def _sampled_layers(state, mode="forward"):
  cls = (mc_method.RowSampledDense if mode == "forward"
         else mc_method.ColumnSampledDense)
  return [l for l in state.view().layers if isinstance(l, cls)]


@pytest.mark.parametrize("sampler,mode", [
    ("bernoulli", "forward"), ("crs", "forward"), ("bernoulli", "backward"),
    ("uniform", "backward")])
def test_training_matches_xla(kernels, sampler, mode):
  """Same draws, same updates: after several steps the weights agree to
  float32 rounding (repeated draws of crs are summed before the kernel)."""
  a, loss_a = _train(_mc("xla", sampler, mode))
  b, loss_b = _train(_mc("native", sampler, mode))
  assert _sampled_layers(a, mode)  # the test exercises the sampled layer
  for pa, pb in zip(a.view().params(), b.view().params()):
    np.testing.assert_allclose(np.asarray(pb.w), np.asarray(pa.w), rtol=1e-4,
                               atol=1e-5)
    np.testing.assert_allclose(np.asarray(pb.b), np.asarray(pa.b), rtol=1e-4,
                               atol=1e-5)
  assert abs(loss_a - loss_b) < 1e-4


def _weights(layer):
  """A sampled layer's weights [n, m] and the axis its kept norms run
  over (forward mode: rows of the slab's slot 0; backward: columns)."""
  if isinstance(layer, mc_method.RowSampledDense):
    return layer.w[...][:, 0], 1
  return layer.w[...], 0


@pytest.mark.parametrize("mode", ["forward", "backward"])
@pytest.mark.parametrize("kernel", ["xla", "native"])
def test_kept_norms_are_the_weights_norms(kernel, mode):
  """The norms a sampled layer keeps (forward mode: its rows', each updated
  row's recomputed; backward mode: its columns', all recomputed by the
  update) are those of its weights after every step, to float32 rounding
  (relative 1e-5), and exactly after an epoch's end."""
  if kernel == "native" and not native.available():
    pytest.skip(f"native kernels unavailable: {native.status().reason}")
  state, _ = _train(_mc(kernel, mode=mode))
  init = train.init_state(_mc(kernel, mode=mode), train.RunKeys(0))
  layers = _sampled_layers(state, mode)
  assert layers
  for layer, layer0 in zip(layers, _sampled_layers(init, mode)):
    w, axis = _weights(layer)
    kept = np.asarray(layer.norms[...])
    np.testing.assert_allclose(
        kept, np.linalg.norm(np.asarray(w, np.float64), axis=axis), rtol=1e-5)
    # Training moved the norms: the test would see stale ones.
    assert np.abs(kept - np.asarray(layer0.norms[...])).max() > 1e-4
  state, _ = _train(_mc(kernel, mode=mode), end_epoch=True)
  for layer in _sampled_layers(state, mode):
    w, axis = _weights(layer)
    np.testing.assert_array_equal(np.asarray(layer.norms[...]),
                                  np.asarray(mc.norms(w, axis=axis)))


def _column_layer(optim, n, m, seed=0):
  rng = np.random.default_rng(seed)
  params = LayerParams(jnp.asarray(rng.normal(size=(n, m)), jnp.float32),
                       jnp.zeros((m,), jnp.float32))
  return mc.ColumnSampledDense(params, activation="relu", num_samples=20,
                               sampler="bernoulli", optim_cfg=optim)


def _factored(layer, cfg, factors, native_):
  """The layer's (w, m, v, norms) after one factored update per
  ``(a, d)`` in ``factors`` (counts 1, 2, ...)."""
  graphdef, state = nnx.split(layer)

  @jax.jit
  def step(state, a, d, count):
    layer = nnx.merge(graphdef, state)
    layer.update_factored(cfg, a, d, count, native=native_)
    return nnx.state(layer)

  for t, (a, d) in enumerate(factors, start=1):
    state = step(state, a, d, jnp.int32(t))
  layer = nnx.merge(graphdef, state)
  return tuple(np.asarray(v) for v in (layer.w[...], layer.m1[...],
                                       layer.m2[...], layer.norms[...]))


@pytest.mark.parametrize("optim", ["adam", "sgd"])
@pytest.mark.parametrize("n,m", [(203, 150), (64, 64), (5, 7)])
def test_factored_update_matches_xla(kernels, optim, n, m):
  """Row counts that are not a multiple of the kernel's row block (4) or
  range (32), column counts not a multiple of its 64-column block, and
  factor rows that are zero (a Bernoulli buffer's unused slots) or hold
  zeros (dead units)."""
  cfg = OptimConfig(name=optim, learning_rate=1e-2)
  rng = np.random.default_rng(2)
  factors = []
  for _ in range(3):  # three steps: Adam's moments and corrections matter
    a = rng.normal(size=(11, n)).astype(np.float32)
    a[[2, 5, 10]] = 0.0  # unused slots
    a[:, ::3] *= rng.random((11, (n + 2) // 3)) < 0.5  # dead inputs
    d = rng.normal(size=(11, m)).astype(np.float32)
    factors.append((jnp.asarray(a), jnp.asarray(d)))
  w0 = np.asarray(_column_layer(cfg, n, m).w[...])
  ref = _factored(_column_layer(cfg, n, m), cfg, factors, False)
  got = _factored(_column_layer(cfg, n, m), cfg, factors, True)
  for x, y in zip(got, ref):
    assert x.shape == y.shape
    np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)
  assert got[1].shape == got[2].shape == ((n, m) if optim == "adam"
                                          else (0,))
  # Every weight moved (the gradient is dense) ...
  assert np.all(got[0] != w0)
  # ... and the norms are the updated columns'.
  np.testing.assert_allclose(got[3], np.linalg.norm(got[0], axis=0),
                             rtol=1e-5)


def test_factored_update_rejects_bad_shapes(kernels):
  with pytest.raises(Exception, match=r"factors a \[c, n\] and d \[c, m\]"):
    jax.block_until_ready(native.factored_update(
        jnp.zeros((10, 4)), jnp.zeros((10, 4)), jnp.zeros((10, 4)),
        jnp.zeros((3, 10)), jnp.zeros((2, 4)), jnp.int32(1),
        optim=OptimConfig()))


def test_kernel_choice_without_native(monkeypatch):
  """Where the kernel cannot be built, 'native' fails at the first step
  saying how to go on, and 'auto' trains with the XLA update."""
  monkeypatch.setattr(native.LIBRARY, "_status",
                      native.Status(False, "no C++ compiler found"))
  monkeypatch.setattr(native.LIBRARY, "warned", False)
  with pytest.raises(native.NativeUnavailable,
                     match="no C.. compiler found.*--mc_kernel=xla"):
    _train(_mc("native"), steps=1)
  state, loss = _train(_mc("auto"), steps=2)
  assert np.isfinite(loss) and int(state.step) == 2
  assert native.LIBRARY.warned


def test_build_every_library_command_line(kernels):
  proc = subprocess.run([sys.executable, "-m", "sampling_mlp.native",
                         "--build"], text=True, capture_output=True,
                        timeout=300)
  assert proc.returncode == 0, proc.stderr
  assert "native MC kernels: ok (" in proc.stdout
  assert "native ALSH kernels: ok (" in proc.stdout
