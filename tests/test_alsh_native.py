"""Tests for the native ALSH kernels (``methods/alsh/native.py``).

The JAX functions are the definition; each kernel is checked against the
pure-XLA computation it replaces: the same active sets (exactly); one fused
training step with the same loss and the same Adam/SGD updates of every
slab (to float32 rounding) at depths 1-3 and for every activation; and
training that matches for several steps.  The build itself is checked for
its errors, its fallback and its command line.  Nothing is compiled at
collection: the tests that need the kernels ask for the ``kernels`` fixture.
"""

import os
import subprocess
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from sampling_mlp import registry, train
from sampling_mlp.layers import LayerParams
from sampling_mlp.methods import alsh
from sampling_mlp.methods.alsh import native, schedule
from sampling_mlp.model import Slab
from sampling_mlp.optim import OptimConfig


@pytest.fixture
def kernels():
  """Skips the test where the kernels cannot be built here (the reason is
  in the skip message)."""
  status = native.status()
  if not status.ok:
    pytest.skip(f"native kernels unavailable: {status.reason}")
  return status


def _slabs(state):
  return jax.tree.leaves(nnx.state(state.view(), Slab))


def _keyed(impl):
  return jax.jit(lambda state, x, y, key: impl.train_step(
      state, x, y, impl.step_randomness(key, x.shape[0])))


# The networks the kernels compute (ModelConfig's bias and weight_norm):
# this project's default, the authors' (no bias, weight normalisation) and
# each option alone.
NETWORKS = {"default": {}, "authors": dict(bias=False, weight_norm=True),
            "normed": dict(bias=True, weight_norm=True),
            "bias_free": dict(bias=False, weight_norm=False)}


# (K, L) per family giving, with 300 nodes and a budget of 17, queries with
# fewer colliding nodes than the budget and queries with more.
_KL = {"srp": (8, 4), "l2": (3, 4)}


def _hash(key, n_in, family, transform="sign_alsh"):
  K, L = _KL[family]
  hp = alsh.init_hash(key, dim=alsh.transformed_dim(n_in, transform=transform),
                      K=K, L=L, family=family, R=1.0)
  return hp, alsh.query_hash(hp, n_in, transform=transform)


@pytest.mark.parametrize("family", alsh.HASHES)
@pytest.mark.parametrize("sparse", [False, True])
def test_select_active_matches_xla(kernels, family, sparse):
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


def test_select_active_zero_query_and_full_budget(kernels):
  n_in, n = 12, 20
  hp, qh = _hash(jax.random.key(2), n_in, "srp")
  tables = alsh.build_tables(hp, jax.random.normal(jax.random.key(3),
                                                   (n_in, n)),
                             transform="sign_alsh")
  for vals in (jnp.zeros(n_in), jnp.ones(n_in)):
    idx, _ = native.select_active(qh, vals, None, tables, jnp.uint32(5),
                                  budget=n)
    assert sorted(np.asarray(idx).tolist()) == list(range(n))


def _alsh(kernel, depth, optimizer="adam", activation="leaky_relu",
          network=None, **config):
  model = registry.ModelConfig(input_dim=30, num_classes=5, hidden=40,
                               depth=depth, activation=activation,
                               **NETWORKS[network or "default"])
  return registry.get("alsh").make(
      model, OptimConfig(name=optimizer,
                         learning_rate=0.01 if optimizer == "adam" else 0.1),
      {"alsh_kernel": kernel, "alsh_active_fraction": 0.2,
       "alsh_rebuild": "4", **config})


@pytest.mark.parametrize("depth,optimizer,activation,family", [
    (1, "adam", "relu", "srp"), (1, "sgd", "linear", "l2"),
    (2, "adam", "leaky_relu", "srp"), (2, "sgd", "sigmoid", "srp"),
    (3, "adam", "sigmoid", "l2"), (3, "adam", "relu", "srp")])
def test_train_step_matches_xla_step(kernels, depth, optimizer, activation,
                                     family):
  """One step of the fused kernel equals the pure-XLA step: the same loss
  and collision counts, every slot (parameters and moments) of every slab
  equal to float32 rounding, and rows outside the active sets untouched."""
  _check_one_step(
      {k: _alsh(k, depth, optimizer, activation, alsh_hash=family,
                alsh_transform="l2_alsh") for k in ("native", "xla")})


@pytest.mark.parametrize("network", ["authors", "normed", "bias_free"])
@pytest.mark.parametrize("depth,optimizer,activation", [
    (1, "adam", "relu"), (2, "sgd", "leaky_relu"), (3, "adam", "sigmoid")])
def test_train_step_matches_xla_step_in_every_network(kernels, network, depth,
                                                      optimizer, activation):
  """As above for the authors' network and each of its options alone: under
  weight normalisation the kernel updates the active nodes' whole rows and
  lengths and the whole output layer, as the XLA step does; bias-free
  layers have no bias slabs to update."""
  _check_one_step({k: _alsh(k, depth, optimizer, activation, network)
                   for k in ("native", "xla")})


def _check_one_step(impls):
  """One step of impls["native"] equals one of impls["xla"] from the same
  state (test_train_step_matches_xla_step)."""
  assert impls["native"]._use_native()  # pylint: disable=protected-access
  state0 = train.init_state(impls["xla"], train.RunKeys(4))
  x = jax.random.normal(jax.random.key(5), (1, 30))
  y = jnp.asarray([3])
  key = jax.random.key(6)
  out = {}
  for k, impl in impls.items():
    state = jax.tree.map(jnp.copy, state0)  # the step donates nothing here
    out[k] = _keyed(impl)(state, x, y, key)
  (got, gm), (ref, rm) = out["native"], out["xla"]
  np.testing.assert_allclose(float(gm["loss"]), float(rm["loss"]), rtol=1e-5)
  np.testing.assert_array_equal(np.asarray(gm["alsh_colliding"]),
                                np.asarray(rm["alsh_colliding"]))
  for g, r, i in zip(_slabs(got), _slabs(ref), _slabs(state0)):
    g, r, i = np.asarray(g), np.asarray(r), np.asarray(i)
    np.testing.assert_allclose(g, r, rtol=2e-5, atol=2e-6)
    # Per node (leading axis): untouched by the XLA step means bitwise
    # untouched by the kernel.
    same = np.all((r == i).reshape(r.shape[0], -1), axis=1)
    np.testing.assert_array_equal(g[same], i[same])
    assert not same.all()  # the step changed something in every slab
  assert int(got.opt_state) == int(ref.opt_state) == 1


def test_train_step_rejects_bad_inputs(kernels):
  impl = _alsh("native", 2)
  state = train.init_state(impl, train.RunKeys(0))
  model = state.view()
  hidden = model.layers[:-1]
  slabs = tuple(LayerParams(l.w[...], l.b[...])
                for l in model.layers)
  seeds = jnp.zeros((2,), jnp.uint32)
  call = lambda slabs, label, **kw: jax.block_until_ready(native.train_step(
      slabs, tuple(l.query for l in hidden), tuple(l.table[...] for l in hidden),
      jnp.ones(30), jnp.int32(label), seeds, jnp.int32(1),
      **{**dict(budgets=impl.budgets, optim=impl.optim, activation="relu"),
         **kw}))
  with pytest.raises(Exception, match="label out of range"):
    call(slabs, 5)
  two_slots = tuple(type(l)(l.w[:, :2] if k == 0 else l.w[..., :2],
                            l.b[:, :2]) for k, l in enumerate(slabs))
  with pytest.raises(Exception, match="3 slots .Adam. or 1 .SGD."):
    call(two_slots, 0)
  with pytest.raises(Exception, match="do not fit together"):
    call(slabs, 0, budgets=(8, 41))  # more than the layer's 40 nodes
  with pytest.raises(ValueError, match="one query hash, table and budget"):
    call(slabs, 0, budgets=(8,))
  with pytest.raises(ValueError, match="no activation 'tanh'"):
    call(slabs, 0, activation="tanh")


@pytest.mark.parametrize("depth,optimizer,network", [
    (1, "adam", None), (2, "adam", None), (3, "sgd", None),
    (2, "adam", "authors"), (3, "sgd", "authors")])
def test_native_training_matches_xla(kernels, depth, optimizer, network):
  """Batch-size-1 training through the kernels follows the pure-XLA path:
  same losses and weights after 12 steps (with table rebuilds every 4,
  under weight normalisation of the effective weights)."""
  impls = {k: _alsh(k, depth, optimizer, network=network)
           for k in ("native", "xla")}
  assert impls["native"]._use_native()  # pylint: disable=protected-access
  assert not impls["xla"]._use_native()  # pylint: disable=protected-access
  states = {k: train.init_state(v, train.RunKeys(1)) for k, v in
            impls.items()}
  init = impls["xla"].params_of(states["xla"])
  states = _train_both(impls, states, batch=1)
  got, ref = (impls[k].params_of(states[k]) for k in ("native", "xla"))
  for g, r, i in zip(got, ref, init):
    np.testing.assert_allclose(np.asarray(g.w), np.asarray(r.w), rtol=1e-4,
                               atol=1e-5)
    np.testing.assert_allclose(np.asarray(g.b), np.asarray(r.b), rtol=1e-4,
                               atol=1e-5)
  assert np.max(np.abs(np.asarray(ref[0].w) - np.asarray(init[0].w))) > 1e-3
  np.testing.assert_array_equal(
      np.asarray(states["native"].view().layers[0].table[...]),
      np.asarray(states["xla"].view().layers[0].table[...]))


def _train_both(impls, states, *, batch, check=None):
  """12 steps of impls["native"] and impls["xla"] from ``states`` on the
  same examples and keys: their losses agree at every step (``check`` sees
  each step's metrics).  Returns the states."""
  steps = {k: _keyed(v) for k, v in impls.items()}
  kx, ky = jax.random.split(jax.random.key(2))
  xs = jax.random.normal(kx, (12, batch, 30))
  ys = jax.random.randint(ky, (12, batch), 0, 5)
  for t in range(12):
    key = jax.random.fold_in(jax.random.key(3), t)
    losses = {}
    for k in impls:
      states[k], m = steps[k](states[k], xs[t], ys[t], key)
      losses[k] = float(m["loss"])
      if check is not None:
        check(m)
    np.testing.assert_allclose(losses["native"], losses["xla"], rtol=1e-4)
  return states


def _slab_args(impl, state):
  model = state.view()
  hidden = model.layers[:-1]
  value = lambda v: None if v is None else v[...]
  return (tuple((l.w[...], value(l.b), value(l.g)) for l in model.layers),
          tuple(l.query for l in hidden), tuple(l.table[...] for l in hidden))


def _kw(impl, **extra):
  if impl.schedule.incremental:
    extra.update(transform=impl.config.transform, target=impl.U,
                 tolerance=schedule.RESCALE_TOLERANCE)
  return dict(budgets=impl.budgets, optim=impl.optim,
              activation=impl.model.activation, **extra)


def _examples(seed, n):
  kx, ky = jax.random.split(jax.random.key(seed))
  return (jax.random.normal(kx, (n, 30)),
          jax.random.randint(ky, (n,), 0, 5))


@pytest.mark.parametrize("depth,network", [(1, None), (3, None),
                                           (2, "authors")])
def test_hogwild_on_one_thread_is_sequential_steps(kernels, depth, network):
  """N examples through the HOGWILD kernel on one thread are N
  batch-size-1 steps in order, update counts count, count + 1, ..., bit
  for bit."""
  impl = _alsh("native", depth, network=network)
  state = train.init_state(impl, train.RunKeys(2))
  slabs, queries, tables = _slab_args(impl, state)
  x, y = _examples(7, 9)
  seeds = jax.random.bits(jax.random.key(8), (9, depth), jnp.uint32)
  copy = lambda t: jax.tree.map(jnp.copy, t)
  got, loss, coll = native.train_hogwild(
      copy(slabs), queries, tables, x, y, seeds, jnp.int32(5),
      **_kw(impl, threads=1))
  ref, losses, colls = copy(slabs), [], []
  for i in range(9):
    ref, li, ci = native.train_step(ref, queries, tables, x[i], y[i],
                                    seeds[i], jnp.int32(5 + i), **_kw(impl))
    losses.append(li)
    colls.append(ci)
  np.testing.assert_array_equal(np.asarray(loss), np.asarray(losses))
  np.testing.assert_array_equal(np.asarray(coll), np.asarray(colls))
  chex.assert_trees_all_equal(got, ref)


def _batch_step(impl, state, x, y, seeds, count, threads):
  slabs, queries, tables = _slab_args(impl, state)
  return native.train_batch(jax.tree.map(jnp.copy, slabs), queries, tables,
                            x, y, seeds, count, **_kw(impl, threads=threads))


@pytest.mark.parametrize("depth,optimizer,activation", [
    (1, "adam", "relu"), (2, "sgd", "sigmoid"), (3, "adam", "leaky_relu")])
def test_batch_kernel_matches_xla_batch_step(kernels, depth, optimizer,
                                             activation):
  """A mini-batch step of the kernel equals the XLA step (masked update of
  dense cost): the same losses, collision counts and slabs; weights no
  example touched are bitwise untouched; the result is the same on one
  thread and on two."""
  impls = {k: _alsh(k, depth, optimizer, activation) for k in
           ("native", "xla")}
  state0 = train.init_state(impls["xla"], train.RunKeys(4))
  x, y = _examples(5, 16)
  key = jax.random.key(6)
  out = {}
  for k, impl in impls.items():
    out[k] = _keyed(impl)(jax.tree.map(jnp.copy, state0), x, y, key)
  (got, gm), (ref, rm) = out["native"], out["xla"]
  np.testing.assert_allclose(float(gm["loss"]), float(rm["loss"]), rtol=1e-5)
  np.testing.assert_allclose(np.asarray(gm["alsh_colliding"]),
                             np.asarray(rm["alsh_colliding"]))
  for g, r, i in zip(_slabs(got), _slabs(ref), _slabs(state0)):
    g, r, i = np.asarray(g), np.asarray(r), np.asarray(i)
    np.testing.assert_allclose(g, r, rtol=2e-5, atol=2e-6)
    np.testing.assert_array_equal(g[r == i], i[r == i])
    assert not (r == i).all()
  # Threads split the examples and the nodes; every sum keeps its order.
  seeds = impls["native"].step_randomness(key, 16)
  one = _batch_step(impls["native"], state0, x, y, seeds, jnp.int32(1), 1)
  two = _batch_step(impls["native"], state0, x, y, seeds, jnp.int32(1), 2)
  chex.assert_trees_all_equal(one, two)


def test_batch_kernel_of_one_example_is_the_single_step(kernels):
  impl = _alsh("native", 2)
  state = train.init_state(impl, train.RunKeys(3))
  slabs, queries, tables = _slab_args(impl, state)
  x, y = _examples(9, 1)
  seeds = jax.random.bits(jax.random.key(1), (1, 2), jnp.uint32)
  got, gl, gc = _batch_step(impl, state, x, y, seeds, jnp.int32(1), 2)
  ref, rl, rc = native.train_step(jax.tree.map(jnp.copy, slabs), queries,
                                  tables, x[0], y[0], seeds[0], jnp.int32(1),
                                  **_kw(impl))
  np.testing.assert_allclose(float(gl[0]), float(rl), rtol=1e-6)
  np.testing.assert_array_equal(np.asarray(gc[0]), np.asarray(rc))
  chex.assert_trees_all_close(got, ref, rtol=1e-6, atol=1e-7)


def test_batch_kernel_refuses_weight_norm_and_the_method_takes_xla(kernels):
  """The mini-batch kernel has no weight normalisation and says so; the
  method then runs weight-normalised mini-batches on the XLA step (and
  batch size 1 natively), and bias-free mini-batches natively."""
  impl = _alsh("native", 2, network="authors")
  state = train.init_state(impl, train.RunKeys(3))
  x, y = _examples(9, 4)
  seeds = jax.random.bits(jax.random.key(1), (4, 2), jnp.uint32)
  with pytest.raises(Exception, match="no weight normalisation.*batch size 1"):
    jax.block_until_ready(_batch_step(impl, state, x, y, seeds, jnp.int32(1),
                                      1))
  # pylint: disable=protected-access
  assert impl._use_native(1) and not impl._use_native(4)
  state, m = _keyed(impl)(state, x, y, jax.random.key(2))
  assert np.isfinite(float(m["loss"]))
  assert _alsh("native", 2, network="bias_free")._use_native(4)


def test_hogwild_threads_train_as_well(kernels):
  """Two HOGWILD threads at batch size 1 train as well as one on real
  digits: their updates race, so the numbers differ, but the accuracy is no
  more than 3 points lower (measured: 0.795 on one thread, 0.818 on two)."""
  from sampling_mlp import data, experiment  # pylint: disable=import-outside-toplevel
  ds = data.load_dataset("mnist_small", max_train=3000, max_test=1000)
  acc = {}
  for threads in (1, 2):
    spec = experiment.RunSpec.make(
        method="alsh", method_values={"alsh_threads": threads,
                                      "alsh_active_fraction": 0.1},
        dataset="mnist_small", depth=1, hidden=256, batch_size=1, epochs=1,
        max_train=3000, max_test=1000)
    (row,) = experiment.run_one(spec, ds, progress=False)
    acc[threads] = row["test_accuracy"]
  print(f"\nHOGWILD mnist_small test accuracy: {acc}")
  assert acc[1] > 0.75  # chance is 0.1
  assert acc[2] > acc[1] - 0.03


@pytest.mark.parametrize("transform", alsh.TRANSFORMS)
@pytest.mark.parametrize("family", ["srp", "l2"])
@pytest.mark.parametrize("first", [True, False])
def test_build_tables_matches_definition(kernels, transform, family, first):
  """The native rebuild, reading a slab in place, gives the definition's
  codes (``kernels.build_tables`` of slot 0): its projections sum in
  another order, so a code may differ only where a projection lies within
  rounding of a bucket boundary -- at most 1 in 1,000 here (measured: none)
  -- and it does not depend on the number of threads."""
  from sampling_mlp import optim  # pylint: disable=import-outside-toplevel
  n_in, n = (61, 203) if first else (97, 150)
  m, U = alsh.resolve_transform_params(transform, None, None)
  w = jax.random.normal(jax.random.key(0), (n_in, n)) * 0.05
  hp = alsh.init_hash(jax.random.key(1),
                      dim=alsh.transformed_dim(n_in, transform=transform,
                                               m=m),
                      K=6, L=5, family=family)
  axis = 1 if first else 2
  slab = optim.init_slab(OptimConfig(), w.T, axis)
  ref = alsh.build_tables(hp, w, transform=transform, m=m, U=U)
  got = {t: native.build_tables(hp, slab, slot_axis=axis,
                                transform=transform, m=m, U=U, threads=t)
         for t in (1, 2)}
  assert got[1].shape == ref.shape and got[1].dtype == jnp.int32
  np.testing.assert_array_equal(np.asarray(got[1]), np.asarray(got[2]))
  assert float(jnp.mean(got[1] == ref)) >= 0.999


@pytest.mark.parametrize("K,L", [(4, 3), (8, 5), (10, 10)],
                         ids=["one-vector", "three-vectors", "two-passes"])
@pytest.mark.parametrize("first", [True, False])
def test_build_tables_any_number_of_projections(kernels, K, L, first):
  """The rebuild projects nodes against 16-lane vectors of the projections,
  up to four at once (L K = 12, 40 and 100: one vector, three, and two
  passes of four), for a node count that leaves a short last group: the
  definition's codes, up to rounding at bucket boundaries, and its
  sketches and scale."""
  from sampling_mlp import optim  # pylint: disable=import-outside-toplevel
  n_in, n = 53, 101
  w = jax.random.normal(jax.random.key(2), (n_in, n)) * 0.05
  hp = alsh.init_hash(jax.random.key(3),
                      dim=alsh.transformed_dim(n_in, transform="l2_alsh",
                                               m=3), K=K, L=L, family="srp")
  axis = 1 if first else 2
  slab = optim.init_slab(OptimConfig(), w.T, axis)
  ref = alsh.build_tables(hp, w, transform="l2_alsh", m=3, U=0.83)
  got, sketch, scale = native.build_tables(
      hp, slab, slot_axis=axis, transform="l2_alsh", m=3, U=0.83, threads=2,
      sketches=True)
  assert got.shape == (L, n)
  assert float(jnp.mean(got == ref)) >= 0.999
  # The sketches and the scale it returns are the definition's.
  ref_sketch = alsh.node_sketch(hp, w.T)
  np.testing.assert_allclose(sketch, ref_sketch, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(
      scale, alsh.sketch_scale(ref_sketch, transform="l2_alsh", U=0.83),
      rtol=1e-5)


@pytest.mark.parametrize("first", [True, False])
def test_build_tables_of_normalised_weights_matches_definition(kernels,
                                                               first):
  """With each node's g / ||v|| (``ActiveLayer.scales``) the rebuild reads
  the directions v in place and gives the codes of the effective weights
  g v / ||v|| (``ActiveLayer.build_table``, the definition), up to rounding
  at bucket boundaries."""
  impl = _alsh("native", 2, network="authors", alsh_K=6, alsh_L=5)
  state = train.init_state(impl, train.RunKeys(5))
  layer = state.view().layers[0 if first else 1]
  # Lengths unlike the directions' norms, so the scales matter.
  layer.g[...] = layer.g[...].at[:, 0].multiply(
      jnp.linspace(0.2, 3.0, layer.g.shape[0]))
  ref = layer.build_table()
  got = native.build_tables(layer.hashes, layer.w[...],
                            slot_axis=layer.slot_axis,
                            transform=layer.transform, m=layer.m, U=layer.U,
                            threads=2, scales=layer.scales())
  assert float(jnp.mean(got == ref)) >= 0.999
  plain = native.build_tables(layer.hashes, layer.w[...],
                              slot_axis=layer.slot_axis,
                              transform=layer.transform, m=layer.m,
                              U=layer.U, threads=2)
  assert float(jnp.mean(plain == ref)) < 0.9  # the scales were applied
  with pytest.raises(Exception, match="scales"):
    native.build_tables(layer.hashes, layer.w[...],
                        slot_axis=layer.slot_axis, transform=layer.transform,
                        m=layer.m, U=layer.U, threads=1,
                        scales=layer.scales()[:-1])


def test_build_tables_of_zero_weights_and_bad_input(kernels):
  """All-zero weights give the definition's finite codes; a slab of the
  wrong rank is refused, saying what it needs."""
  from sampling_mlp import optim  # pylint: disable=import-outside-toplevel
  hp = alsh.init_hash(jax.random.key(1), dim=40 + 3, K=6, L=5, family="srp")
  w = jnp.zeros((40, 30))
  slab = optim.init_slab(OptimConfig(), w.T, 2)
  got = native.build_tables(hp, slab, slot_axis=2, transform="l2_alsh", m=3,
                            U=0.83, threads=1)
  ref = alsh.build_tables(hp, w, transform="l2_alsh", m=3, U=0.83)
  np.testing.assert_array_equal(np.asarray(got), np.asarray(ref))
  # Many appended norm powers (any m >= 1 is valid).
  w = jax.random.normal(jax.random.key(2), (40, 30)) * 0.05
  hp40 = alsh.init_hash(jax.random.key(3), dim=40 + 40, K=6, L=5,
                        family="srp")
  got = native.build_tables(hp40, optim.init_slab(OptimConfig(), w.T, 2),
                            slot_axis=2, transform="l2_alsh", m=40, U=0.83,
                            threads=1)
  ref = alsh.build_tables(hp40, w, transform="l2_alsh", m=40, U=0.83)
  assert float(jnp.mean(got == ref)) >= 0.999
  with pytest.raises(Exception, match="slab"):
    native.build_tables(hp, slab[:, :, 0], slot_axis=2, transform="l2_alsh",
                        m=3, U=0.83, threads=1)
  with pytest.raises(ValueError, match="unknown transform"):
    native.build_tables(hp, slab, slot_axis=2, transform="nope", m=3,
                        U=0.83, threads=1)


def test_kernel_choice_without_native(monkeypatch):
  """Where the kernels cannot be built, nothing fails until a batch-size-1
  step is traced: then 'native' is a clear error and 'auto' falls back to
  the XLA path, saying why once."""
  monkeypatch.setattr(native.LIBRARY, "_status",
                      native.Status(False, "no C++ compiler found"))
  monkeypatch.setattr(native.LIBRARY, "warned", False)
  x, y = jnp.ones((1, 30)), jnp.zeros((1,), jnp.int32)
  impl = _alsh("native", 1)  # building it compiles and checks nothing
  state = train.init_state(impl, train.RunKeys(0))
  with pytest.raises(native.NativeUnavailable,
                     match="no C.. compiler found.*--alsh_kernel=xla"):
    _keyed(impl)(state, x, y, jax.random.key(0))
  impl = _alsh("auto", 1)
  state = train.init_state(impl, train.RunKeys(0))
  state, m = _keyed(impl)(state, x, y, jax.random.key(0))
  assert np.isfinite(float(m["loss"]))
  assert native.LIBRARY.warned


def _run(code, env):
  return subprocess.run([sys.executable, "-c", code], env=env, text=True,
                        capture_output=True, check=True, timeout=300).stdout


def test_build_failure_is_reported(tmp_path):
  """A compiler that fails leaves a readable reason and no library; the
  command line says the same and exits with 1."""
  fake = tmp_path / "fake-cxx"
  fake.write_text("#!/bin/sh\necho 'fake-cxx: cannot compile' >&2\nexit 1\n")
  fake.chmod(0o755)
  env = dict(os.environ, CXX=str(fake), SAMPLING_MLP_CACHE=str(tmp_path))
  out = _run("from sampling_mlp.methods.alsh import native; "
             "st = native.status(); print(st.ok); print(st.reason)", env)
  assert out.startswith("False")
  assert "compiling alsh_kernels.cc failed" in out
  assert "fake-cxx: cannot compile" in out
  assert not list((tmp_path / "native").glob("*.so"))
  proc = subprocess.run([sys.executable, "-m",
                         "sampling_mlp.methods.alsh.native", "--build"],
                        env=env, text=True, capture_output=True, timeout=300)
  assert proc.returncode == 1
  assert "unavailable: compiling alsh_kernels.cc failed" in proc.stderr


def test_missing_symbol_is_caught(kernels):
  """A library without a kernel's symbol is a reason, not a crash."""
  out = _run("from sampling_mlp.methods.alsh import native; "
             "native.LIBRARY.targets['x'] = 'NoSuchKernel'; "
             "st = native.status(); print(st.ok, st.reason)", dict(os.environ))
  assert out.startswith("False") and "no symbol NoSuchKernel" in out


def test_build_command_line(kernels):
  proc = subprocess.run([sys.executable, "-m",
                         "sampling_mlp.methods.alsh.native", "--build"],
                        text=True, capture_output=True, timeout=300)
  assert proc.returncode == 0, proc.stderr
  assert proc.stdout.startswith("native ALSH kernels: ok (")


def _rehash_args(state):
  """Every hidden layer's native.Rehash under the incremental schedule."""
  return tuple(native.Rehash(l.sketch[...], native.appended_projections(
      l.hashes, l.query.proj.shape[0]), l.hash_scale[...])
               for l in state.view().layers[:-1])


@pytest.mark.parametrize("depth,network,batch", [
    (1, None, 1), (3, None, 1), (2, "authors", 1), (3, None, 8)],
    ids=["depth1", "depth3", "authors", "mini-batch"])
def test_incremental_rehash_matches_xla(kernels, depth, network, batch):
  """Under the incremental schedule the kernels re-hash the nodes each
  step touched as ``ActiveLayer.rehash`` (the definition) does -- rows
  re-projected, blocks' sketches moved by their change -- in the fused
  step, under weight normalisation, and in the mini-batch kernel: after 12
  steps the same losses and weights as the XLA path, every node's sketch
  within float32 rounding of the sketch of its current weights, and the
  same codes (at most 1 in 200 differs by rounding at a bucket
  boundary); the tables changed, with no full rebuild."""
  impls = {k: _alsh(k, depth, network=network, alsh_rebuild="incremental")
           for k in ("native", "xla")}
  assert impls["native"]._use_native(batch)  # pylint: disable=protected-access
  states = {k: train.init_state(v, train.RunKeys(1)) for k, v in
            impls.items()}
  table0 = np.asarray(states["xla"].view().layers[-2].table[...])

  def no_rebuild(m):
    assert float(m["alsh_rebuilds"]) == 0

  states = _train_both(impls, states, batch=batch, check=no_rebuild)
  got, ref = (impls[k].params_of(states[k]) for k in ("native", "xla"))
  for g, r in zip(got, ref):
    np.testing.assert_allclose(np.asarray(g.w), np.asarray(r.w), rtol=1e-4,
                               atol=1e-5)
  for gl, rl in zip(states["native"].view().layers[:-1],
                    states["xla"].view().layers[:-1]):
    fresh = alsh.node_sketch(rl.hashes, rl.weights())
    np.testing.assert_allclose(rl.sketch[...], fresh, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(gl.sketch[...], fresh, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(gl.hash_scale[...], rl.hash_scale[...],
                               rtol=1e-5)
    assert float(jnp.mean(gl.table[...] == rl.table[...])) >= 0.995
  assert np.any(np.asarray(states["native"].view().layers[-2].table[...])
                != table0)


def test_incremental_rehash_of_tiny_layers(kernels):
  """Projection rows narrower than a vector (L*K = 5) of a 3-input layer:
  the kernels' re-hash reads no projection past its end and follows the
  definition."""
  model = registry.ModelConfig(input_dim=3, num_classes=2, hidden=12,
                               depth=2, activation="relu")
  impls = {k: registry.get("alsh").make(
      model, OptimConfig(learning_rate=0.01),
      {"alsh_kernel": k, "alsh_active_fraction": 0.5, "alsh_K": 5,
       "alsh_L": 1, "alsh_rebuild": "incremental"}) for k in ("native", "xla")}
  states = {k: train.init_state(v, train.RunKeys(4)) for k, v in
            impls.items()}
  steps = {k: _keyed(v) for k, v in impls.items()}
  x = jax.random.normal(jax.random.key(5), (8, 1, 3))
  y = jax.random.randint(jax.random.key(6), (8, 1), 0, 2)
  for t in range(8):
    key = jax.random.fold_in(jax.random.key(7), t)
    for k in impls:
      states[k], _ = steps[k](states[k], x[t], y[t], key)
  for gl, rl in zip(states["native"].view().layers[:-1],
                    states["xla"].view().layers[:-1]):
    np.testing.assert_allclose(gl.sketch[...], rl.sketch[...], rtol=1e-4,
                               atol=1e-5)
    np.testing.assert_array_equal(gl.table[...], rl.table[...])


def test_incremental_hogwild_on_one_thread_is_sequential_steps(kernels):
  """Under the incremental schedule too, the HOGWILD kernel on one thread
  is the batch-size-1 steps in order, tables and sketches included, bit
  for bit."""
  impl = _alsh("native", 3, alsh_rebuild="incremental")
  state = train.init_state(impl, train.RunKeys(2))
  slabs, queries, tables = _slab_args(impl, state)
  rehash = _rehash_args(state)
  x, y = _examples(7, 9)
  seeds = jax.random.bits(jax.random.key(8), (9, 3), jnp.uint32)
  copy = lambda t: jax.tree.map(jnp.copy, t)
  got, _, _, got_hash = native.train_hogwild(
      copy(slabs), queries, copy(tables), x, y, seeds, jnp.int32(5),
      rehash=copy(rehash), **_kw(impl, threads=1))
  ref, hashed = copy(slabs), copy(rehash)
  for i in range(9):
    ref, _, _, (tables, sketches, scales) = native.train_step(
        ref, queries, copy(tables), x[i], y[i], seeds[i], jnp.int32(5 + i),
        rehash=hashed, **_kw(impl))
    hashed = tuple(r._replace(sketch=sk, scale=sc)
                   for r, sk, sc in zip(rehash, sketches, scales))
  chex.assert_trees_all_equal(got, ref)
  chex.assert_trees_all_equal(got_hash, (tables, sketches, scales))
  assert any(np.any(np.asarray(t) != np.asarray(t0)) for t, t0 in
             zip(tables, _slab_args(impl, state)[2]))


def test_incremental_kernels_reject_bad_state(kernels):
  """A sketch of the wrong shape is refused, saying what the incremental
  schedule needs."""
  impl = _alsh("native", 2, alsh_rebuild="incremental")
  state = train.init_state(impl, train.RunKeys(2))
  slabs, queries, tables = _slab_args(impl, state)
  rehash = _rehash_args(state)
  bad = (rehash[0]._replace(sketch=rehash[0].sketch[:, :-1]),) + rehash[1:]
  with pytest.raises(Exception, match="sketches .n, L.K . 1."):
    jax.block_until_ready(native.train_step(
        slabs, queries, tables, jnp.ones(30), jnp.int32(1),
        jnp.zeros((2,), jnp.uint32), jnp.int32(1), rehash=bad, **_kw(impl)))
  with pytest.raises(ValueError, match="one Rehash per hidden layer"):
    native.train_step(slabs, queries, tables, jnp.ones(30), jnp.int32(1),
                      jnp.zeros((2,), jnp.uint32), jnp.int32(1),
                      rehash=rehash[:1], **_kw(impl))
