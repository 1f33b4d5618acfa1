"""Training to a wall-clock budget, and reading accuracy against time.

A budget run (:class:`~sampling_mlp.experiment.RunSpec` with
``budget_seconds``) trains in short timed calls
(:func:`sampling_mlp.train.timed_chunks`) until its training seconds reach
the budget, and evaluates the network at fixed points of training time,
:func:`eval_schedule`.  Each point is one result row:

* ``point`` (1-based) and ``scheduled_seconds``: which point of the
  schedule; ``cumulative_seconds``: the training seconds actually spent
  when it was measured, at the end of the first call past
  ``scheduled_seconds`` (so at most one call, about ``chunk_seconds``,
  later; one call may pass several points, which then share a
  measurement);
* ``dev_accuracy`` at every point; ``test_accuracy`` at the last point
  and where the dev accuracy first passed a whole percentage point
  (:func:`new_percent`; None elsewhere) -- which includes every point at
  which a target of two decimals (0.85, 0.87) is first reached, so that
  :func:`time_to_target` can report the test accuracy there without
  paying for a test pass (twice a dev pass) at every point;
* ``train_loss`` (the mean over the steps since the previous point),
  ``steps``, ``examples`` and ``epochs_trained`` (a fraction), and
  ``diverged`` as in epoch rows.

Evaluation, checkpointing and compilation are outside the timed calls.
The run is checkpointed at its points (at most one save per
``CHECKPOINT_SECONDS`` of wall time, and always at the last), so a kill
loses the training since the last saved point (at a 60 s budget, at most
about 30 s of it); resuming continues the same steps from there.
"""

from __future__ import annotations

import math
import time
from typing import Any, Mapping, Sequence

import jax.numpy as jnp
from absl import logging
from tqdm.auto import tqdm

from sampling_mlp import checkpoint, train

# Least wall-clock seconds between two checkpoints of a budget run.
CHECKPOINT_SECONDS = 20.0
# Target duration of one timed call (train.timed_chunks).
CHUNK_SECONDS = 0.25


def eval_schedule(budget_seconds: float) -> tuple[float, ...]:
  """The training seconds at which a budget run is evaluated.

  1, 2, 3 and 5 times each power of ten (so 10, 30 and 100 s, the times
  the frontier reports, are points), half the budget and the budget
  itself; those from 1 s (or the budget, if smaller) to the budget.

  Raises:
    ValueError: the budget is not a positive number.
  """
  if not (isinstance(budget_seconds, (int, float))
          and math.isfinite(budget_seconds) and budget_seconds > 0):
    raise ValueError(f"budget_seconds must be a positive number of "
                     f"seconds, got {budget_seconds!r}")
  points = {float(budget_seconds), round(budget_seconds / 2, 3)}
  decade = 1.0
  while decade < budget_seconds:
    points.update(m * decade for m in (1, 2, 3, 5) if m * decade < budget_seconds)
    decade *= 10
  return tuple(sorted(p for p in points if p >= min(1.0, budget_seconds)))


def new_percent(dev: float, best: float) -> bool:
  """Whether ``dev`` passes a whole percentage point that ``best`` (the
  best dev accuracy before it) had not: then the test accuracy is
  measured, so every target with two decimals has it where first
  reached."""
  return math.floor(dev * 100 + 1e-9) > math.floor(best * 100 + 1e-9)


def _accuracy(predict, state, split) -> float:
  return train.accuracy(predict, state, split.x, split.y,
                        batch=train.TrainConfig.eval_batch)


def run_budget(spec, dataset, *, checkpoint_dir: str | None = None,
               worker: Mapping[str, Any] | None = None,
               progress: bool = True,
               chunk_seconds: float = CHUNK_SECONDS) -> list[dict]:
  """Trains the budget run ``spec`` and returns its rows, one per point of
  :func:`eval_schedule` (fewer if it diverged: the last then says
  ``diverged: true``).

  Args:
    spec: a :class:`~sampling_mlp.experiment.RunSpec` with
      ``budget_seconds``.
    dataset: its data.
    checkpoint_dir: where to checkpoint and resume from (None: no
      checkpoints).
    worker: where it runs, for every row.
    progress: a progress bar over training seconds.
    chunk_seconds: the target duration of one timed call.
  """
  from sampling_mlp import experiment  # pylint: disable=import-outside-toplevel
  if not len(dataset.dev.y):
    raise ValueError(f"{experiment.describe(spec)}: the dataset has no dev "
                     "split, and a budget run is read by its dev accuracy")
  impl = experiment.build_impl(spec, dataset)
  keys = train.RunKeys(spec.seed)
  schedule = eval_schedule(spec.budget_seconds)
  per_epoch = len(dataset.train.y) // spec.batch_size
  base = dict(experiment.base_row(spec, dataset, worker),
              budget_seconds=spec.budget_seconds)
  ckpt = (checkpoint.RunCheckpoint(checkpoint_dir, run_id=spec.run_id)
          if checkpoint_dir else None)
  rows: list[dict] = []
  state = train.init_state(impl, keys)
  if ckpt is not None and ckpt.latest_epoch() is not None:
    state, rows = ckpt.restore(state)
    if experiment.complete_run(spec, rows):
      return rows
    logging.info("%s: resuming after point %d of %d (%.1f s) from %s",
                 experiment.describe(spec), len(rows), len(schedule),
                 rows[-1]["cumulative_seconds"], ckpt.directory)
  predict = train.make_predict_fn(impl)
  cumulative = rows[-1]["cumulative_seconds"] if rows else 0.0
  best_dev = max((r["dev_accuracy"] for r in rows), default=-1.0)
  loss_sum, loss_steps = 0.0, 0
  last_save = time.monotonic()
  bar = tqdm(total=spec.budget_seconds, initial=min(cumulative,
                                                    spec.budget_seconds),
             desc="training s", leave=False, disable=not progress,
             unit="s", bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s "
             "[{elapsed}<{remaining}{postfix}]")
  chunks = train.timed_chunks(impl, jnp.asarray(dataset.train.x),
                              jnp.asarray(dataset.train.y), keys=keys,
                              batch_size=spec.batch_size, state=state,
                              chunk_seconds=chunk_seconds)
  for chunk in chunks:
    state = chunk.state
    cumulative += chunk.seconds
    bar.update(min(chunk.seconds, spec.budget_seconds - bar.n))
    loss_sum += chunk.loss_sum
    loss_steps += chunk.steps
    diverged = chunk.nonfinite_step is not None
    due = [i for i in range(len(rows), len(schedule))
           if cumulative >= schedule[i]]
    if not due and not diverged:
      continue
    if diverged:  # one row, the last
      due = due[:1] or [len(rows)]
    steps = int(state.step)
    dev = (math.nan if diverged else
           _accuracy(predict, state, dataset.dev))
    test = None
    last = due and due[-1] == len(schedule) - 1
    if not math.isnan(dev) and (new_percent(dev, best_dev) or last):
      test = _accuracy(predict, state, dataset.test)
    if not math.isnan(dev):
      best_dev = max(best_dev, dev)
    for i in due:
      rows.append(dict(
          base, point=i + 1, scheduled_seconds=schedule[i],
          cumulative_seconds=cumulative, dev_accuracy=dev,
          test_accuracy=test, train_loss=loss_sum / max(loss_steps, 1),
          steps=steps, examples=steps * spec.batch_size,
          epochs_trained=steps / per_epoch, diverged=diverged,
          **({"diverged_step": chunk.nonfinite_step + 1} if diverged
             else {})))
    loss_sum, loss_steps = 0.0, 0
    bar.set_postfix(dev=f"{dev:.3f}")
    finished = diverged or len(rows) == len(schedule)
    if ckpt is not None and (finished or time.monotonic() - last_save
                             >= CHECKPOINT_SECONDS):
      ckpt.save(state, rows)
      last_save = time.monotonic()
    if diverged:
      logging.warning(
          "%s diverged: the training loss became non-finite at step %d, "
          "after %.1f training seconds; the run stops and is recorded "
          "with diverged: true", experiment.describe(spec),
          chunk.nonfinite_step + 1, cumulative)
    if finished:
      break
  chunks.close()
  bar.close()
  logging.info("%s: dev %.4f after %.1f training s (%d steps, %.2f epochs)",
               spec.label(), rows[-1]["dev_accuracy"],
               rows[-1]["cumulative_seconds"], rows[-1]["steps"],
               rows[-1]["epochs_trained"])
  return rows


# -- reading curves ----------------------------------------------------------------


def time_to_target(rows: Sequence[Mapping[str, Any]], target: float
                   ) -> tuple[float, float | None] | None:
  """When a budget run's dev accuracy first reached ``target``.

  Args:
    rows: one run's points, in order.
    target: the dev accuracy to reach (a fraction).

  Returns:
    ``(training seconds, test accuracy there)`` at the first point whose
    dev accuracy is at least ``target`` -- a later drop below it does not
    undo it -- or None if no point reached it (the test accuracy is None
    where that point's test accuracy was not measured).
  """
  for row in rows:
    dev = row.get("dev_accuracy")
    if dev is not None and not math.isnan(dev) and dev >= target:
      return float(row["cumulative_seconds"]), row.get("test_accuracy")
  return None


def best_within(rows: Sequence[Mapping[str, Any]], seconds: float
                ) -> float | None:
  """The best dev accuracy of a budget run's points scheduled at or
  before ``seconds`` of training (None: no such point)."""
  devs = [r["dev_accuracy"] for r in rows
          if r["scheduled_seconds"] <= seconds + 1e-9
          and not math.isnan(r["dev_accuracy"])]
  return max(devs) if devs else None


def envelope(curves: Sequence[Sequence[tuple[float, float]]]
             ) -> list[tuple[float, float]]:
  """The frontier of several accuracy curves: at each time any of them
  was measured, the best accuracy any reached by then.

  Args:
    curves: each a sequence of ``(seconds, accuracy)``.

  Returns:
    ``(seconds, best accuracy so far)``, by time, non-decreasing in
    accuracy.
  """
  points = sorted((t, a) for c in curves for t, a in c if not math.isnan(a))
  out: list[tuple[float, float]] = []
  best = -math.inf
  for t, a in points:
    best = max(best, a)
    if out and out[-1][0] == t:
      out[-1] = (t, best)
    else:
      out.append((t, best))
  return out

