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
