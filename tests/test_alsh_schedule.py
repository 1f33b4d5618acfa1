"""Tests for ALSH-APPROX's table rebuild schedule."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sampling_mlp.methods.alsh import schedule


def test_should_rebuild_paper_schedule():
  steps = jnp.array([0, 100, 150, 9_900, 10_000, 10_500, 11_000, 10_100])
  got = jax.jit(jax.vmap(schedule.should_rebuild))(steps)
  np.testing.assert_array_equal(
      got, [True, True, False, True, True, False, True, False])
  assert schedule.parse_schedule("100:10000:1000") == schedule.RebuildSchedule()
  assert schedule.parse_schedule("paper") == schedule.RebuildSchedule()


def test_should_rebuild_other_schedules():
  steps = jnp.arange(0, 3001, 50)
  never = functools.partial(schedule.should_rebuild,
                            schedule=schedule.parse_schedule("epoch"))
  assert not np.any(jax.vmap(never)(steps))
  every = functools.partial(schedule.should_rebuild,
                            schedule=schedule.parse_schedule("500"))
  np.testing.assert_array_equal(jax.vmap(every)(steps), steps % 500 == 0)


@pytest.mark.parametrize("spec", ["abc", "1:2", "100:x:1000", "-1:5:5", "0",
                                  "1:2:3:4"])
def test_parse_schedule_errors(spec):
  with pytest.raises(ValueError, match="EARLY_EVERY:EARLY_UNTIL:LATE_EVERY|epoch"):
    schedule.parse_schedule(spec)


def test_parse_adaptive_schedule():
  a = schedule.parse_schedule("adaptive")
  assert (a.early_every, a.late_every, a.drift) == (
      schedule.ADAPTIVE_EVERY, schedule.ADAPTIVE_EVERY,
      schedule.ADAPTIVE_DRIFT)
  b = schedule.parse_schedule("adaptive:0.05:50")
  assert (b.early_every, b.early_until, b.late_every, b.drift) == (
      50, 0, 50, 0.05)
  assert schedule.parse_schedule("paper").drift == 0.0


def test_parse_incremental_schedule():
  """Incremental: never a full rebuild by step (only at epoch ends), the
  touched nodes re-hashed after every step."""
  inc = schedule.parse_schedule("Incremental")
  assert inc == schedule.INCREMENTAL and inc.incremental
  assert not schedule.parse_schedule("paper").incremental
  steps = jnp.arange(0, 3001, 50)
  assert not np.any(jax.vmap(functools.partial(
      schedule.should_rebuild, schedule=inc))(steps))
  with pytest.raises(ValueError, match='"incremental"'):
    schedule.parse_schedule("incremental:5")


@pytest.mark.parametrize("spec", ["adaptive:0", "adaptive:x", "adaptive:0.1:0",
                                  "adaptive:0.1:5:5", "adaptive:-1"])
def test_parse_adaptive_schedule_errors(spec):
  with pytest.raises(ValueError, match=r"adaptive\[:DRIFT\[:N\]\]"):
    schedule.parse_schedule(spec)


def test_drift_is_relative_change():
  w = jax.random.normal(jax.random.key(0), (16, 30))
  assert float(schedule.drift(w, w)) == 0.0
  np.testing.assert_allclose(float(schedule.drift(1.1 * w, w)), 0.1,
                             rtol=1e-5)
  zero = jnp.zeros((16, 30))
  assert float(schedule.drift(zero, zero)) == 0.0
  assert float(schedule.drift(w, zero)) == np.inf


def _tables_after(rebuild, steps=40):
  from sampling_mlp import registry, train  # pylint: disable=import-outside-toplevel
  from sampling_mlp.optim import OptimConfig  # pylint: disable=import-outside-toplevel
  model = registry.ModelConfig(input_dim=20, num_classes=3, hidden=32,
                               depth=2)
  impl = registry.get("alsh").make(model, OptimConfig(learning_rate=1e-2), {
      "alsh_rebuild": rebuild, "alsh_kernel": "xla",
      "alsh_active_fraction": 0.25})
  keys = train.RunKeys(0)
  state = train.init_state(impl, keys)
  x = jax.random.normal(jax.random.key(1), (steps * 2, 20))
  y = jax.random.randint(jax.random.key(2), (steps * 2,), 0, 3)
  epoch = train.make_epoch_fn(impl, batch_size=2, num_batches=steps)
  state, metrics = epoch(state, x, y, jnp.arange(steps * 2), keys.train)
  tables = [l.table[...] for l in state.view().layers[:-1]]
  return tables, round(float(metrics["alsh_rebuilds"]) * steps, 3)


def test_adaptive_rebuilds_only_layers_that_drifted():
  """A tiny threshold rebuilds at every check, as the fixed schedule of the
  same period does (the same tables); a huge one never rebuilds (the
  initial tables stay), and the rebuild count says so."""
  fixed, n_fixed = _tables_after("10")
  tiny, n_tiny = _tables_after("adaptive:1e-12:10")
  huge, n_huge = _tables_after("adaptive:1e9:10")
  initial, _ = _tables_after("epoch", steps=1)
  for a, b in zip(fixed, tiny):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  for a, b in zip(huge, initial):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert n_fixed == n_tiny == 2 * 4  # steps 10, 20, 30, 40; two layers
  assert n_huge == 0
  assert any(np.any(np.asarray(a) != np.asarray(b))
             for a, b in zip(fixed, initial))
