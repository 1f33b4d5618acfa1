"""Tests for the native ALSH kernels (``sampling_mlp/native.py``).

Each kernel is checked against the pure-XLA computation it replaces: the same
active sets (exactly), the same forward values and the same Adam/SGD updates
(to float32 rounding), and whole training steps that match for several
steps.  The build itself is checked for its errors and its fallback.
"""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sampling_mlp import alsh, native, registry, train
from sampling_mlp.optim import LazyOptimizer, OptimConfig

needs_native = pytest.mark.skipif(
    not native.available(),
    reason=f"native kernels unavailable: {native.unavailable_reason()}")


# (K, L) per family giving, with 300 nodes and a budget of 17, queries with
# fewer colliding nodes than the budget and queries with more.
_KL = {"srp": (8, 4), "l2": (3, 4)}


def _hash(key, n_in, family, transform="sign_alsh"):
  K, L = _KL[family]
  hp = alsh.init_hash(key, dim=alsh.transformed_dim(n_in, transform=transform),
                      K=K, L=L, family=family, R=1.0)
  return hp, alsh.query_hash(hp, n_in, transform=transform)


@needs_native
@pytest.mark.parametrize("family", alsh.HASHES)
@pytest.mark.parametrize("sparse", [False, True])
def test_select_active_matches_xla(family, sparse):
  n_in, n, budget = 40, 300, 17
  hp, qh = _hash(jax.random.key(0), n_in, family)
  w = jax.random.normal(jax.random.key(1), (n_in, n))
  tables = alsh.build_tables(hp, w, transform="sign_alsh")
  native_fn = jax.jit(lambda v, r, s: native.select_active(
      qh, v, r, tables, s, budget=budget))
  xla_fn = jax.jit(lambda v, r, s: alsh.select_active(
      s, alsh.collisions(alsh.sparse_query_codes(qh, v, r), tables), budget))
  rng = np.random.default_rng(0)
  colliding = []
  for t in range(40):
    if sparse:
      rows = jnp.asarray(rng.choice(n_in, 9, replace=False), jnp.uint32)
      vals = jnp.asarray(rng.normal(size=9), jnp.float32)
    else:
      rows, vals = None, jnp.asarray(rng.normal(size=n_in), jnp.float32)
    seed = jnp.uint32(1000 + t)
    idx, nc = native_fn(vals, rows, seed)
    ref_idx, ref_nc, _ = xla_fn(vals, rows, seed)
    np.testing.assert_array_equal(np.asarray(idx), np.asarray(ref_idx))
    assert int(nc) == int(ref_nc)
    colliding.append(int(nc))
  # Both regimes occur: more colliding nodes than the budget (the overflow
  # is ordered by count, then noise) and fewer (random fill).
  assert min(colliding) < budget < max(colliding)


@needs_native
def test_select_active_zero_query_and_full_budget():
  n_in, n = 12, 20
  hp, qh = _hash(jax.random.key(2), n_in, "srp")
  tables = alsh.build_tables(hp, jax.random.normal(jax.random.key(3),
                                                   (n_in, n)),
                             transform="sign_alsh")
  for vals in (jnp.zeros(n_in), jnp.ones(n_in)):
    idx, _ = native.select_active(qh, vals, None, tables, jnp.uint32(5),
                                  budget=n)
    assert sorted(np.asarray(idx).tolist()) == list(range(n))


def _slab(key, n, D, slots=3):
  k1, k2, k3 = jax.random.split(key, 3)
  w = jax.random.normal(k1, (n, slots, D))
  b = jax.random.normal(k2, (n, slots))
  if slots == 3:  # second moments are non-negative
    w = w.at[:, 2].set(jnp.abs(w[:, 2]))
    b = b.at[:, 2].set(jnp.abs(b[:, 2]))
  return w, b, jax.random.normal(k3, (D,))


@needs_native
def test_rows_matvec_matches_gathered_product():
  w, b, a = _slab(jax.random.key(4), 50, 37)
  idx = jnp.asarray([3, 49, 0, 17, 8], jnp.uint32)
  z = native.rows_matvec(w, b, idx, a)
  ref = w[idx, 0] @ a + b[idx, 0]
  np.testing.assert_allclose(np.asarray(z), np.asarray(ref), rtol=1e-5,
                             atol=1e-5)


@needs_native
@pytest.mark.parametrize("name", ["adam", "sgd"])
def test_rows_update_matches_lazy_optimizer(name):
  cfg = OptimConfig(name=name, learning_rate=0.01)
  lazy = LazyOptimizer(cfg)
  slots = lazy.slots
  w, b, a = _slab(jax.random.key(5), 30, 21, slots)
  idx = jnp.asarray([4, 29, 11, 0], jnp.uint32)
  dz = jnp.asarray([0.5, -1.0, 2.0, 0.25])
  count = jnp.int32(7)
  new_w, new_b = jax.jit(lambda w, b: native.rows_update(
      w, b, idx, dz, a, count, optim=cfg))(w, b)
  ref_w = jnp.stack(lazy.update_slots(w[idx], jnp.outer(dz, a), count, 1), 1)
  ref_b = jnp.stack(lazy.update_slots(b[idx], dz, count, 1), 1)
  np.testing.assert_allclose(np.asarray(new_w[idx]), np.asarray(ref_w),
                             rtol=2e-5, atol=1e-6)
  np.testing.assert_allclose(np.asarray(new_b[idx]), np.asarray(ref_b),
                             rtol=2e-5, atol=1e-6)
  others = np.setdiff1d(np.arange(30), np.asarray(idx))
  np.testing.assert_array_equal(np.asarray(new_w[others]),
                                np.asarray(w[others]))
  np.testing.assert_array_equal(np.asarray(new_b[others]),
                                np.asarray(b[others]))
  assert float(jnp.max(jnp.abs(new_w[idx, 0] - w[idx, 0]))) > 1e-4


@needs_native
def test_output_step_matches_autodiff_and_update():
  cfg = OptimConfig(learning_rate=0.01)
  lazy = LazyOptimizer(cfg)
  n, C = 25, 6
  kw, kb, ka = jax.random.split(jax.random.key(6), 3)
  w = lazy.init_slab(jax.random.normal(kw, (n, C)), axis=1)  # [n, 3, C]
  b = lazy.init_slab(jax.random.normal(kb, (C, 1)), axis=1)[:, :, 0]  # [C, 3]
  rows = jnp.asarray([2, 7, 24, 13], jnp.uint32)
  a = jax.random.normal(ka, (4,))
  label, count = jnp.int32(3), jnp.int32(1)
  new_w, new_b, loss, da = native.output_step(w, b, rows, a, label, count,
                                              optim=cfg)

  def loss_fn(a, wk, bk):
    return registry.cross_entropy((a @ wk + bk)[None], label[None])

  ref_loss, (ref_da, gw, gb) = jax.value_and_grad(loss_fn, (0, 1, 2))(
      a, w[rows, 0], b[:, 0])
  np.testing.assert_allclose(float(loss), float(ref_loss), rtol=1e-5)
  np.testing.assert_allclose(np.asarray(da), np.asarray(ref_da), rtol=1e-5,
                             atol=1e-6)
  ref_w = jnp.stack(lazy.update_slots(w[rows], gw, count, 1), 1)
  ref_b = lazy.update_slab(b, gb, count, axis=1)
  np.testing.assert_allclose(np.asarray(new_w[rows]), np.asarray(ref_w),
                             rtol=2e-5, atol=1e-6)
  np.testing.assert_allclose(np.asarray(new_b), np.asarray(ref_b), rtol=2e-5,
                             atol=1e-6)


@needs_native
def test_output_step_rejects_bad_label():
  cfg = OptimConfig()
  w, b = jnp.zeros((5, 3, 4)), jnp.zeros((4, 3))
  with pytest.raises(Exception, match="label out of range"):
    jax.block_until_ready(native.output_step(
        w, b, jnp.asarray([0, 1], jnp.uint32), jnp.ones(2), jnp.int32(4),
        jnp.int32(1), optim=cfg))


def _alsh(kernel, depth, optimizer="adam"):
  model = registry.ModelConfig(input_dim=30, num_classes=5, hidden=40,
                               depth=depth)
  return registry.get("alsh").make(
      model, OptimConfig(name=optimizer,
                         learning_rate=0.01 if optimizer == "adam" else 0.1),
      {"alsh_kernel": kernel, "alsh_active_fraction": 0.2,
       "alsh_rebuild": "4"})


@needs_native
@pytest.mark.parametrize("depth,optimizer", [(1, "adam"), (2, "adam"),
                                             (3, "sgd")])
def test_native_training_matches_xla(depth, optimizer):
  """Batch-size-1 training through the kernels follows the pure-XLA path:
  same losses and weights after 12 steps (with table rebuilds every 4)."""
  impls = {k: _alsh(k, depth, optimizer) for k in ("native", "xla")}
  assert impls["native"].native and not impls["xla"].native
  states = {k: train.init_state(v, train.RunKeys(1)) for k, v in
            impls.items()}
  steps = {k: jax.jit(v.train_step) for k, v in impls.items()}
  init = alsh.ALSH.standard_params(states["xla"])
  kx, ky = jax.random.split(jax.random.key(2))
  xs = jax.random.normal(kx, (12, 1, 30))
  ys = jax.random.randint(ky, (12, 1), 0, 5)
  for t in range(12):
    key = jax.random.fold_in(jax.random.key(3), t)
    losses = {}
    for k in impls:
      states[k], m = steps[k](states[k], xs[t], ys[t], key)
      losses[k] = float(m["loss"])
    np.testing.assert_allclose(losses["native"], losses["xla"], rtol=1e-4)
  got, ref = (alsh.ALSH.standard_params(states[k]) for k in ("native", "xla"))
  for g, r, i in zip(got, ref, init):
    np.testing.assert_allclose(np.asarray(g.w), np.asarray(r.w), rtol=1e-4,
                               atol=1e-5)
    np.testing.assert_allclose(np.asarray(g.b), np.asarray(r.b), rtol=1e-4,
                               atol=1e-5)
  assert np.max(np.abs(np.asarray(ref[0].w) - np.asarray(init[0].w))) > 1e-3
  np.testing.assert_array_equal(
      np.asarray(states["native"].method_state.tables[0]),
      np.asarray(states["xla"].method_state.tables[0]))


def test_kernel_choice_without_native(monkeypatch):
  """Where the kernels cannot be built, 'native' is a clear error and
  'auto' falls back to the XLA path."""
  monkeypatch.setattr(native, "_status",
                      {"ok": False, "error": "no C++ compiler found"})
  monkeypatch.setattr(alsh.ALSH, "_warned", False)
  with pytest.raises(native.NativeUnavailable,
                     match="no C.. compiler found.*--alsh_kernel=xla"):
    _alsh("native", 1)
  impl = _alsh("auto", 1)
  assert not impl.native
  assert alsh.ALSH._warned  # pylint: disable=protected-access
  state = train.init_state(impl, train.RunKeys(0))
  state, m = jax.jit(impl.train_step)(state, jnp.ones((1, 30)),
                                      jnp.zeros((1,), jnp.int32),
                                      jax.random.key(0))
  assert np.isfinite(float(m["loss"]))


def test_build_failure_is_reported(tmp_path):
  """A compiler that fails leaves a readable reason and no library."""
  fake = tmp_path / "fake-cxx"
  fake.write_text("#!/bin/sh\necho 'fake-cxx: cannot compile' >&2\nexit 1\n")
  fake.chmod(0o755)
  env = dict(os.environ, CXX=str(fake), SAMPLING_MLP_CACHE=str(tmp_path))
  code = ("from sampling_mlp import native; "
          "print(native.available()); print(native.unavailable_reason())")
  out = subprocess.run([sys.executable, "-c", code], env=env, text=True,
                       capture_output=True, check=True, timeout=120).stdout
  assert out.startswith("False")
  assert "compiling alsh_kernels.cc failed" in out
  assert "fake-cxx: cannot compile" in out
  assert not list((tmp_path / "native").glob("*.so"))


@needs_native
def test_kernels_reject_bad_rows_and_slots():
  cfg = OptimConfig()
  w, b, a = _slab(jax.random.key(7), 6, 5)
  bad = jnp.asarray([1, 6], jnp.uint32)
  with pytest.raises(Exception, match="row index out of range"):
    jax.block_until_ready(native.rows_matvec(w, b, bad, a))
  with pytest.raises(Exception, match="row index out of range"):
    jax.block_until_ready(native.rows_update(
        w, b, bad, jnp.ones(2), a, jnp.int32(1), optim=cfg))
  with pytest.raises(Exception, match="3 slots .Adam. or 1 .SGD."):
    jax.block_until_ready(native.rows_update(
        w[:, :2], b[:, :2], bad[:1], jnp.ones(1), a, jnp.int32(1),
        optim=cfg))
