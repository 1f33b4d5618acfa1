"""When ALSH-APPROX rebuilds its hash tables, by training step.

The paper's schedule (the authors' code): every 100 steps during the first
10,000, then every 1,000, and at the end of every epoch.  Between rebuilds
the tables describe weights that have since moved.

The incremental schedule, as SLIDE (Chen et al., MLSys 2020) keeps its
tables current: after every step, the nodes whose weights the step
touched are re-hashed (``ActiveLayer.rehash``: each node keeps a sketch of
its weights -- their projections onto the hash directions and their
squared norm -- which moves with the change, and its codes are rewritten
from it with the transform's common scale), and the
tables are rebuilt whole only at the end of every epoch.  The transform's
common scale, which a full rebuild sets so that the longest node has norm
U, is kept while the longest node stays within RESCALE_TOLERANCE of U and
renewed (every node recoded) when it leaves that band
(``kernels.held_scale``).

The adaptive schedule, in the manner of Mongoose (Chen et al., ICLR 2021),
checks at every due step whether a layer's weights have moved enough to be
worth rehashing, with a cheap signature: the relative change of a fixed
sample of its nodes' weights since the layer's last rebuild
(:func:`drift`).  A layer is rebuilt only when that change exceeds the
threshold.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp


class RebuildSchedule(NamedTuple):
  """When to rebuild the tables, by training step (Python ints, static).

  Rebuild at ``step`` if ``step < early_until`` and ``step % early_every ==
  0``, or if ``step >= early_until`` and ``(step - early_until) % late_every
  == 0``. An ``*_every`` of 0 means never in that phase.  With ``drift``
  above 0 (the adaptive schedule) those steps are checks: a layer is
  rebuilt there only if its :func:`drift` exceeds ``drift``. The default is the
  paper's: every 100 steps during the first 10,000, then every 1,000. The
  rebuild at the end of each epoch is the caller's job, and so is the initial
  build (``should_rebuild(0)`` is True, like ``i % 100 == 0``, which simply
  rebuilds from the initial weights).

  Attributes:
    early_every: rebuild period in the early phase (0: never).
    early_until: first step of the late phase.
    late_every: rebuild period in the late phase (0: never).
    drift: 0, or the adaptive schedule's threshold of relative change.
    incremental: re-hash the nodes each step touched (the incremental
      schedule; its periods are 0: full rebuilds at epoch ends only).
  """

  early_every: int = 100
  early_until: int = 10_000
  late_every: int = 1_000
  drift: float = 0.0
  incremental: bool = False


PAPER_SCHEDULE = RebuildSchedule()
# The adaptive schedule's defaults: check every 100 steps; rebuild a layer
# whose sampled nodes' weights moved by more than 5% since its last rebuild.
ADAPTIVE_EVERY, ADAPTIVE_DRIFT = 100, 0.05
# The incremental schedule's band around U for the longest node's scaled
# norm, past which the common scale is renewed and every node recoded.
RESCALE_TOLERANCE = 0.01
# Nodes per layer whose weights make the drift signature.
DRIFT_SAMPLE = 16
EPOCH_ONLY = RebuildSchedule(early_every=0, early_until=0, late_every=0)
INCREMENTAL = EPOCH_ONLY._replace(incremental=True)


def parse_schedule(spec: str) -> RebuildSchedule:
  """Parses a rebuild schedule from a flag string.

  Accepted forms: ``"EARLY_EVERY:EARLY_UNTIL:LATE_EVERY"`` (the paper's is
  ``"100:10000:1000"``), ``"N"`` (every N steps throughout), ``"paper"``,
  ``"epoch"`` (never by step; only the caller's epoch-end rebuilds),
  ``"incremental"`` (epoch-end rebuilds, and the touched nodes re-hashed
  after every step), and ``"adaptive"``, ``"adaptive:DRIFT"`` or ``"adaptive:DRIFT:N"`` (check every
  N steps, default 100, and rebuild the layers whose weights drifted by
  more than DRIFT, default 0.05).

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
  if s == "incremental":
    return INCREMENTAL
  help_ = ('use "EARLY_EVERY:EARLY_UNTIL:LATE_EVERY" (e.g. the paper\'s '
           '"100:10000:1000"), "N" (every N steps), "paper", "epoch", '
           '"incremental" or "adaptive[:DRIFT[:N]]"')
  if s.split(":")[0] == "adaptive":
    fields = s.split(":")[1:]
    try:
      thr = float(fields[0]) if fields else ADAPTIVE_DRIFT
      every = int(fields[1]) if len(fields) > 1 else ADAPTIVE_EVERY
    except ValueError:
      raise ValueError(f"Bad rebuild schedule {spec!r}: DRIFT must be a "
                       f"number and N an integer; {help_}.") from None
    if len(fields) > 2 or not thr > 0 or every < 1:
      raise ValueError(f"Bad rebuild schedule {spec!r}: need DRIFT > 0 and "
                       f"N >= 1; {help_}.")
    return RebuildSchedule(early_every=every, early_until=0,
                           late_every=every, drift=thr)
  parts = s.split(":")
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
  """Whether the tables are due for a rebuild (under the adaptive schedule,
  for a check) before the update of ``step``.

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


def drift(sample: jax.Array, snapshot: jax.Array) -> jax.Array:
  """The adaptive schedule's signature of how far a layer's weights moved:
  ``||sample - snapshot|| / ||snapshot||`` (Frobenius; 0 when both are 0).

  Args:
    sample: [s, n_in] the sampled nodes' weights now.
    snapshot: [s, n_in] the same nodes' weights at the layer's last rebuild.

  Returns:
    float32 [].
  """
  ref = jnp.linalg.norm(snapshot)
  change = jnp.linalg.norm(sample - snapshot)
  return jnp.where(ref > 0, change / jnp.where(ref > 0, ref, 1.0),
                   jnp.where(change > 0, jnp.inf, 0.0))
