"""When ALSH-APPROX rebuilds its hash tables, by training step.

The paper's schedule (the authors' code): every 100 steps during the first
10,000, then every 1,000, and at the end of every epoch.  Between rebuilds
the tables describe weights that have since moved.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp


class RebuildSchedule(NamedTuple):
  """When to rebuild the tables, by training step (Python ints, static).

  Rebuild at ``step`` if ``step < early_until`` and ``step % early_every ==
  0``, or if ``step >= early_until`` and ``(step - early_until) % late_every
  == 0``. An ``*_every`` of 0 means never in that phase. The default is the
  paper's: every 100 steps during the first 10,000, then every 1,000. The
  rebuild at the end of each epoch is the caller's job, and so is the initial
  build (``should_rebuild(0)`` is True, like ``i % 100 == 0``, which simply
  rebuilds from the initial weights).

  Attributes:
    early_every: rebuild period in the early phase (0: never).
    early_until: first step of the late phase.
    late_every: rebuild period in the late phase (0: never).
  """

  early_every: int = 100
  early_until: int = 10_000
  late_every: int = 1_000


PAPER_SCHEDULE = RebuildSchedule()
EPOCH_ONLY = RebuildSchedule(early_every=0, early_until=0, late_every=0)


def parse_schedule(spec: str) -> RebuildSchedule:
  """Parses a rebuild schedule from a flag string.

  Accepted forms: ``"EARLY_EVERY:EARLY_UNTIL:LATE_EVERY"`` (the paper's is
  ``"100:10000:1000"``), ``"N"`` (every N steps throughout), ``"paper"``, and
  ``"epoch"`` (never by step; only the caller's epoch-end rebuilds).

  Args:
    spec: the string.

  Returns:
    A RebuildSchedule.
  """
  s = spec.strip().lower()
  if s == "epoch":
    return EPOCH_ONLY
  if s == "paper":
    return PAPER_SCHEDULE
  parts = s.split(":")
  help_ = ('use "EARLY_EVERY:EARLY_UNTIL:LATE_EVERY" (e.g. the paper\'s '
           '"100:10000:1000"), "N" (every N steps), "paper" or "epoch"')
  if len(parts) not in (1, 3):
    raise ValueError(f"Bad rebuild schedule {spec!r}: {help_}.")
  try:
    vals = [int(p) for p in parts]
  except ValueError:
    raise ValueError(
        f"Bad rebuild schedule {spec!r}: fields must be integers; {help_}."
    ) from None
  if any(v < 0 for v in vals):
    raise ValueError(
        f"Bad rebuild schedule {spec!r}: fields must be >= 0; {help_}.")
  if len(vals) == 1:
    if vals[0] == 0:
      raise ValueError(f"Bad rebuild schedule {spec!r}: a period of 0 means "
                       f'never; write "epoch" for epoch-end rebuilds only.')
    return RebuildSchedule(early_every=vals[0], early_until=0,
                           late_every=vals[0])
  return RebuildSchedule(*vals)


def should_rebuild(
    step: jax.Array | int, *, schedule: RebuildSchedule = PAPER_SCHEDULE
) -> jax.Array:
  """Whether to rebuild the tables before the update of ``step``.

  Args:
    step: number of updates done so far; an int or a traced int scalar.
    schedule: a static RebuildSchedule (Python ints).

  Returns:
    bool scalar array.
  """
  step = jnp.asarray(step)

  def every(s, period):
    return (s % period == 0) if period > 0 else jnp.zeros_like(s, bool)

  early = every(step, schedule.early_every)
  late = every(step - schedule.early_until, schedule.late_every)
  return jnp.where(step < schedule.early_until, early, late)
