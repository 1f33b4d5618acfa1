import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sampling_mlp import layers, registry, train
from sampling_mlp.methods.standard import Standard
from sampling_mlp.optim import OptimConfig


def _impl(ds, depth=2, hidden=32, method="standard"):
  model = registry.ModelConfig(input_dim=ds.input_dim,
                               num_classes=ds.num_classes, hidden=hidden,
                               depth=depth, activation="relu")
  return registry.get(method).make(model, OptimConfig(learning_rate=3e-3))


def test_training_learns_tiny_problem(tiny):
  rows = list(train.train(_impl(tiny), tiny,
                          train.TrainConfig(epochs=3, batch_size=16)))
  assert [r["epoch"] for r in rows] == [1, 2, 3]
  assert rows[-1]["train_loss"] < rows[0]["train_loss"]
  assert rows[-1]["test_accuracy"] > 0.8  # chance is 0.25
  for r in rows:
    assert 0 <= r["dev_accuracy"] <= 1 and 0 <= r["test_accuracy"] <= 1
    assert r["epoch_seconds"] > 0
  np.testing.assert_allclose(rows[-1]["cumulative_seconds"],
                             sum(r["epoch_seconds"] for r in rows))
  assert rows[-1]["steps"] == 3 * (512 // 16)


def test_same_seed_same_numbers(tiny):
  cfg = train.TrainConfig(epochs=2, batch_size=8, seed=7)
  keys = ("train_loss", "dev_accuracy", "test_accuracy")
  a = [{k: r[k] for k in keys} for r in train.train(_impl(tiny), tiny, cfg)]
  b = [{k: r[k] for k in keys} for r in train.train(_impl(tiny), tiny, cfg)]
  assert a == b
  c = [{k: r[k] for k in keys} for r in train.train(
      _impl(tiny), tiny, train.TrainConfig(epochs=2, batch_size=8, seed=8))]
  assert a != c


def test_epoch_fn_does_not_retrace_across_epochs(tiny):
  impl = _impl(tiny)
  traced = []
  orig = impl.train_step

  def counting(*args):
    traced.append(1)
    return orig(*args)

  impl.train_step = counting  # (a test may patch; the library never does)
  fn = train.make_epoch_fn(impl, batch_size=16, num_batches=4)
  keys = train.RunKeys(0)
  state = train.init_state(impl, keys)
  x, y = jnp.asarray(tiny.train.x), jnp.asarray(tiny.train.y)
  for e in range(3):
    perm = jax.random.permutation(jax.random.fold_in(keys.shuffle, e), 512)
    state, m = fn(state, x, y, perm, keys.train)
  assert len(traced) == 1
  assert int(state.step) == 12


def test_epochs_yields_state_metrics_and_times(tiny):
  impl = _impl(tiny)
  keys = train.RunKeys(0)
  x, y = jnp.asarray(tiny.train.x), jnp.asarray(tiny.train.y)
  eps, params = [], []
  for ep in train.epochs(impl, x, y, keys=keys, batch_size=64, num_epochs=2):
    eps.append(ep)
    # The next epoch donates this state's buffers: copy what is kept.
    params.append(jax.tree.map(np.asarray, impl.params_of(ep.state)))
  assert [e.index for e in eps] == [0, 1]
  assert eps[0].compile_seconds > 0 and eps[1].compile_seconds is None
  assert int(eps[1].state.step) == 2 * (512 // 64)
  assert set(eps[0].metrics) == {"loss"}
  # An explicit initial state gives the same epoch as the default one.
  state0 = train.init_state(impl, keys)
  first = next(train.epochs(impl, x, y, keys=keys, batch_size=64,
                            num_epochs=1, state=state0))
  chex.assert_trees_all_equal(impl.params_of(first.state), params[0])


def test_before_end_sees_the_state_before_the_end_of_epoch_work(tiny):
  """``before_end`` is called with each epoch's state after its steps and
  before ``end_epoch`` (ALSH's rebuild under the epoch-only schedule: the
  tables it sees are the initial ones, those yielded are rebuilt), and
  ``train`` reports ALSH's diagnostics of both states, the former
  suffixed; STANDARD asks for none."""
  model = registry.ModelConfig(input_dim=tiny.input_dim,
                               num_classes=tiny.num_classes, hidden=32,
                               depth=2, activation="relu")
  impl = registry.get("alsh").make(
      model, OptimConfig(learning_rate=3e-2),
      {"alsh_rebuild": "epoch", "alsh_active_fraction": 0.5})
  keys = train.RunKeys(0)
  x, y = jnp.asarray(tiny.train.x), jnp.asarray(tiny.train.y)
  table = lambda s: np.asarray(s.view().layers[0].table[...])
  table0 = table(train.init_state(impl, keys))
  seen, after = [], []
  for ep in train.epochs(impl, x, y, keys=keys, batch_size=16, num_epochs=2,
                         before_end=lambda s, e: seen.append((e, table(s)))):
    assert seen[-1][0] == ep.index
    after.append(table(ep.state))
  # No rebuild during an epoch's steps; one at each epoch's end.
  np.testing.assert_array_equal(seen[0][1], table0)
  np.testing.assert_array_equal(seen[1][1], after[0])
  assert np.any(after[0] != table0) and np.any(after[1] != after[0])
  (row,) = train.train(impl, tiny, train.TrainConfig(epochs=1, batch_size=16))
  before = row["alsh_recall_at_10" + train.BEFORE_END]
  assert len(before) == len(row["alsh_recall_at_10"]) == 2
  assert all(0 <= v <= 1 for v in before)
  (std,) = train.train(_impl(tiny), tiny,
                       train.TrainConfig(epochs=1, batch_size=16))
  assert not any(k.endswith(train.BEFORE_END) for k in std)


def test_init_params_is_the_nnx_rngs_draw():
  """The initial weights are what nnx.Rngs(params=key).params() draws,
  split per layer (layers.init_mlp)."""
  from flax import nnx
  model = registry.ModelConfig(input_dim=6, num_classes=3, hidden=8, depth=2)
  impl = registry.get("standard").make(model, OptimConfig())
  keys = train.RunKeys(4)
  want = layers.init_mlp(nnx.Rngs(params=keys.init).params(), model.sizes)
  chex.assert_trees_all_equal(train.init_params(impl, keys), want)


def test_batch_larger_than_data_is_a_clear_error(tiny):
  with pytest.raises(ValueError, match="larger than the 512 training"):
    list(train.train(_impl(tiny), tiny, train.TrainConfig(batch_size=1000)))


def test_bad_train_config():
  with pytest.raises(ValueError, match="epochs"):
    train.TrainConfig(epochs=0)


def test_one_epoch_on_mnist_small_is_well_above_chance():
  from sampling_mlp import data
  ds = data.load_dataset("mnist_small", max_train=3000, max_test=500)
  impl = _impl(ds, depth=1, hidden=128)
  rows = list(train.train(impl, ds, train.TrainConfig(epochs=1, batch_size=32)))
  assert rows[0]["test_accuracy"] > 0.8  # chance is 0.1


# ALSH at batch size 1 on one thread (with more, its HOGWILD steps race).
@pytest.mark.parametrize("method,batch,values", [
    ("standard", 4, {}), ("alsh", 4, {}), ("alsh", 1, {"alsh_threads": 1})])
def test_epoch_steps_use_folded_step_keys(tiny, method, batch, values):
  """An epoch (randomness drawn up front, for all its steps) gives the same
  state as calling train_step with ``fold_in(train_key, step)`` step by
  step, across two epochs."""
  model = registry.ModelConfig(input_dim=tiny.train.x.shape[1],
                               num_classes=tiny.num_classes, hidden=24,
                               depth=2)
  impl = registry.get(method).make(model, OptimConfig(), values)
  keys = train.RunKeys(3)
  rand = lambda t: impl.step_randomness(jax.random.fold_in(keys.train, t),
                                        batch)
  x, y = jnp.asarray(tiny.train.x), jnp.asarray(tiny.train.y)
  fn = train.make_epoch_fn(impl, batch_size=batch, num_batches=5)
  step = jax.jit(impl.train_step)
  by_epoch = train.init_state(impl, keys)  # donated by the epoch function
  by_step = train.init_state(impl, keys)
  for e in range(2):
    perm = jax.random.permutation(jax.random.fold_in(keys.shuffle, e), 512)
    by_epoch, _ = fn(by_epoch, x, y, perm, keys.train)
    for i in range(5):
      idx = perm[i * batch:(i + 1) * batch]
      by_step, _ = step(by_step, x[idx], y[idx], rand(by_step.step))
  assert int(by_epoch.step) == int(by_step.step) == 10
  chex.assert_trees_all_close(impl.params_of(by_epoch),
                              impl.params_of(by_step), rtol=1e-5, atol=1e-6)


class _GroupedStandard(Standard):
  """STANDARD whose steps the loop runs three at a time, recording the
  shapes of the groups it was given."""

  def __init__(self, *args, **kw):
    super().__init__(*args, **kw)
    self.groups = []

  def steps_per_call(self, batch_size):
    return 3

  def train_steps(self, state, xs, ys, rands):
    self.groups.append(xs.shape)
    return super().train_steps(state, xs, ys, rands)


def test_grouped_steps_are_the_same_steps(tiny):
  """Steps run in groups (and the epoch's remainder one at a time) give the
  same state and the same mean metrics as steps run one at a time."""
  model = registry.ModelConfig(input_dim=tiny.train.x.shape[1],
                               num_classes=tiny.num_classes, hidden=24,
                               depth=2)
  grouped = _GroupedStandard(model, OptimConfig(),
                             registry.get("standard").make_config({}))
  single = registry.get("standard").make(model, OptimConfig(), {})
  keys = train.RunKeys(5)
  x, y = jnp.asarray(tiny.train.x), jnp.asarray(tiny.train.y)
  perm = jax.random.permutation(keys.shuffle, 512)
  out = {}
  for name, impl in (("grouped", grouped), ("single", single)):
    fn = train.make_epoch_fn(impl, batch_size=8, num_batches=7)
    out[name] = fn(train.init_state(impl, keys), x, y, perm, keys.train)
  assert grouped.groups == [(3, 8, tiny.train.x.shape[1])]  # traced once
  (sg, mg), (ss, ms) = out["grouped"], out["single"]
  assert int(sg.step) == int(ss.step) == 7
  chex.assert_trees_all_equal(grouped.params_of(sg), single.params_of(ss))
  np.testing.assert_allclose(float(mg["loss"]), float(ms["loss"]),
                             rtol=1e-6)


def test_step_randomness_is_per_step_and_stacked():
  model = registry.ModelConfig(input_dim=6, num_classes=3, hidden=8, depth=3)
  impl = registry.get("alsh").make(model, OptimConfig(), {})
  key = jax.random.key(9)
  seeds = train.step_randomness(impl, key, jnp.int32(5), 4, 2)
  assert seeds.shape == (4, 2, 3) and seeds.dtype == jnp.uint32
  for i in range(4):
    np.testing.assert_array_equal(
        np.asarray(seeds[i]),
        np.asarray(impl.step_randomness(jax.random.fold_in(key, 5 + i), 2)))
  assert len({tuple(np.asarray(s).ravel()) for s in seeds}) == 4
  std = registry.get("standard").make(model, OptimConfig(), {})
  keys = train.step_randomness(std, key, jnp.int32(0), 3, 2)
  np.testing.assert_array_equal(
      np.asarray(jax.random.key_data(keys)),
      np.asarray(jax.random.key_data(jax.vmap(
          lambda t: jax.random.fold_in(key, t))(jnp.arange(3)))))
