import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sampling_mlp import experiment, registry, train
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


def test_step_does_not_retrace(tiny):
  impl = _impl(tiny)
  keys = train.RunKeys(0)
  state = train.init_state(impl, keys)

  @jax.jit
  @chex.assert_max_traces(n=1)
  def step(state, x, y, key):
    return impl.train_step(state, x, y, key)

  for i in range(4):
    x = jnp.asarray(tiny.train.x[i * 8:(i + 1) * 8])
    y = jnp.asarray(tiny.train.y[i * 8:(i + 1) * 8])
    state, _ = step(state, x, y, jax.random.fold_in(keys.train, state.step))
  assert int(state.step) == 4


def test_epoch_fn_does_not_retrace_across_epochs(tiny):
  impl = _impl(tiny)
  traced = []
  orig = impl.train_step

  def counting(*args):
    traced.append(1)
    return orig(*args)

  impl.train_step = counting
  fn = train.make_epoch_fn(impl, batch_size=16, num_batches=4)
  keys = train.RunKeys(0)
  state = train.init_state(impl, keys)
  x, y = jnp.asarray(tiny.train.x), jnp.asarray(tiny.train.y)
  for e in range(3):
    perm = jax.random.permutation(jax.random.fold_in(keys.shuffle, e), 512)
    state, m = fn(state, x, y, perm, keys.train)
  assert len(traced) == 1
  assert int(state.step) == 12


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
