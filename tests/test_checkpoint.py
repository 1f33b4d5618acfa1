"""Tests for checkpoint.py: Orbax epoch checkpoints, and a run killed
after an epoch resuming to the numbers of an uninterrupted run, bit for
bit, for every registered method."""

import multiprocessing
import os
import time

import chex
import jax
import numpy as np
import pytest

from sampling_mlp import checkpoint, experiment, registry, train
from sampling_mlp.optim import OptimConfig

TIMING = ("epoch_seconds", "cumulative_seconds", "compile_seconds", "worker")


def _spec(method="standard", **kw):
  base = dict(method=method, dataset="tiny", depth=2, hidden=16,
              batch_size=16, epochs=3, activation="relu")
  base.update(kw)
  return experiment.RunSpec.make(**base)


def _numbers(rows):
  return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


class _Killed(Exception):
  pass


def _kill_after(monkeypatch, epochs):
  """Makes a run die right after checkpointing epoch ``epochs``."""
  save = checkpoint.RunCheckpoint.save

  def dying(self, state, rows):
    save(self, state, rows)
    if len(rows) == epochs:
      raise _Killed(f"killed after epoch {epochs}")

  monkeypatch.setattr(checkpoint.RunCheckpoint, "save", dying)


def _final_state(spec, dataset, directory):
  impl = experiment.build_impl(spec, dataset)
  ckpt = checkpoint.RunCheckpoint(directory, run_id=spec.run_id)
  state, _ = ckpt.restore(train.init_state(impl, train.RunKeys(spec.seed)))
  return jax.tree.map(np.asarray, state)


# ALSH at batch size 1 with one thread: with more, its HOGWILD updates race
# and no two runs are equal, resumed or not.
CASES = [(name, 16, 1, {}) for name in registry.names()] + [
    ("alsh", 1, 1, {"alsh_threads": 1}), ("mc", 4, 2, {}),
    ("adaptive_dropout", 4, 2, {})]


@pytest.mark.parametrize("method,batch,killed_after,values", CASES)
def test_a_killed_run_resumes_bit_for_bit(tiny, tmp_path, monkeypatch,
                                          method, batch, killed_after,
                                          values):
  spec = _spec(method, batch_size=batch, seed=3, method_values=values)
  whole = str(tmp_path / "whole")
  want = experiment.run_one(spec, tiny, checkpoint_dir=whole, progress=False)
  assert [r["epoch"] for r in want] == [1, 2, 3]

  cut = str(tmp_path / "cut")
  with monkeypatch.context() as m:
    _kill_after(m, killed_after)
    with pytest.raises(_Killed):
      experiment.run_one(spec, tiny, checkpoint_dir=cut, progress=False)
  ckpt = checkpoint.RunCheckpoint(cut, run_id=spec.run_id)
  assert ckpt.latest_epoch() == killed_after
  got = experiment.run_one(spec, tiny, checkpoint_dir=cut, progress=False)

  # Losses, accuracies and the method's diagnostics, every epoch; then
  # every array of the final state: parameters, method state, optimizer
  # moments and the step counter.
  assert _numbers(got) == _numbers(want)
  chex.assert_trees_all_equal(_final_state(spec, tiny, cut),
                              _final_state(spec, tiny, whole))
  # The epochs before the kill were not trained again.
  assert got[:killed_after] == ckpt.rows()[:killed_after]
  assert "compile_seconds" in got[killed_after]  # this process compiled


def test_epochs_from_a_first_epoch_continue_the_loop(tiny):
  model = registry.ModelConfig(input_dim=20, num_classes=4, hidden=16,
                               depth=2)
  impl = registry.get("standard").make(model, OptimConfig())
  keys = train.RunKeys(1)
  x, y = jax.numpy.asarray(tiny.train.x), jax.numpy.asarray(tiny.train.y)
  run = lambda **kw: train.epochs(impl, x, y, keys=keys, batch_size=32,
                                  num_epochs=3, **kw)
  full = [(e.index, jax.tree.map(np.asarray, e.state)) for e in run()]
  second = next(run())  # the state after epoch 0, then epochs 1 and 2
  rest = [(e.index, jax.tree.map(np.asarray, e.state))
          for e in run(state=second.state, first_epoch=1)]
  assert [i for i, _ in rest] == [1, 2]
  chex.assert_trees_all_equal(rest[-1][1], full[-1][1])
  assert list(run(state=rest[-1][1], first_epoch=3)) == []
  with pytest.raises(ValueError, match="first_epoch"):
    list(run(first_epoch=4))


def test_save_keeps_the_latest_epoch_only(tiny, tmp_path):
  spec = _spec()
  impl = experiment.build_impl(spec, tiny)
  state = train.init_state(impl, train.RunKeys(0))
  ckpt = checkpoint.RunCheckpoint(str(tmp_path / "c"), run_id=spec.run_id)
  assert ckpt.latest_epoch() is None and ckpt.rows() is None
  assert ckpt.restore(state) is None
  rows = [{"epoch": 1, "train_loss": float("nan")}, {"epoch": 2, "x": [1, 2]}]
  ckpt.save(state, rows[:1])
  ckpt.save(state, rows)
  assert ckpt.latest_epoch() == 2
  assert sorted(os.listdir(ckpt.directory)) == ["2"]
  back = ckpt.rows()
  assert np.isnan(back[0]["train_loss"]) and back[1] == rows[1]
  restored, _ = ckpt.restore(train.init_state(impl, train.RunKeys(5)))
  chex.assert_trees_all_equal(jax.tree.map(np.asarray, restored),
                              jax.tree.map(np.asarray, state))
  ckpt.remove()
  assert not os.path.exists(ckpt.directory)


def test_restore_refuses_another_runs_checkpoint(tiny, tmp_path):
  spec = _spec()
  impl = experiment.build_impl(spec, tiny)
  state = train.init_state(impl, train.RunKeys(0))
  path = str(tmp_path / "c")
  checkpoint.RunCheckpoint(path, run_id="run-a").save(state, [{"epoch": 1}])
  with pytest.raises(checkpoint.CheckpointError, match="holds run 'run-a'"):
    checkpoint.RunCheckpoint(path, run_id="run-b").restore(state)
  other = train.init_state(experiment.build_impl(_spec(depth=3), tiny),
                           train.RunKeys(0))
  with pytest.raises(checkpoint.CheckpointError, match="Remove the folder"):
    checkpoint.RunCheckpoint(path, run_id="run-a").restore(other)


def _hold(path, ready, release):
  with checkpoint.run_lock(path, holder={"pid": os.getpid()}):
    ready.set()
    release.wait(30)


def test_run_lock_makes_a_second_process_wait(tmp_path):
  path = str(tmp_path / "run.lock")
  ctx = multiprocessing.get_context("spawn")
  ready, release = ctx.Event(), ctx.Event()
  proc = ctx.Process(target=_hold, args=(path, ready, release))
  proc.start()
  try:
    assert ready.wait(60)
    assert checkpoint.lock_holder(path) == {"pid": proc.pid}
    with pytest.raises(checkpoint.LockHeld, match=str(proc.pid)):
      with checkpoint.run_lock(path, holder={}, wait=False):
        pass
    t0 = time.monotonic()
    release.set()
    with checkpoint.run_lock(path, holder={"pid": os.getpid()}):
      assert checkpoint.lock_holder(path) == {"pid": os.getpid()}
    assert time.monotonic() - t0 < 30
  finally:
    release.set()
    proc.join(30)
