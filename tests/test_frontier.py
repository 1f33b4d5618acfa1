"""Time to accuracy: configuration strings, reading curves, budget runs
(their budget kept, their steps those of epoch training, resumable) and
the frontier entry point end to end on ``mnist_small``."""

import json
import math
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from sampling_mlp import budget, experiment, train
from sampling_mlp.studies import Runner, frontier

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# -- configuration strings ---------------------------------------------------------


def test_configurations_parse_with_short_and_full_option_names():
  got = frontier.parse_configs(
      ["standard@b=32", "mc@b=128", "ratio=0.3", "alsh@b=1",
       "transform=sign_alsh", "rebuild=adaptive:0.2",
       "mc@b=32,mc_ratio=0.5,lr=3e-4"])
  assert [c.method for c in got] == ["standard", "mc", "alsh", "mc"]
  assert [c.batch_size for c in got] == [32, 128, 1, 32]
  assert dict(got[1].options) == {"mc_ratio": 0.3}
  assert dict(got[2].options) == {"alsh_transform": "sign_alsh",
                                  "alsh_rebuild": "adaptive:0.2"}
  assert got[3].learning_rate == 3e-4 and got[0].learning_rate is None
  # A label reads back as the same configuration.
  for c in got:
    assert frontier.parse_config(c.label) == c
  assert got[1].label == "mc@b=128,ratio=0.3"
  # One string, semicolons or commas; duplicates dropped.
  assert frontier.parse_configs("standard@b=32;mc@b=128,ratio=0.3;"
                                "standard@b=32") == got[:2]


def test_the_default_grid_parses():
  got = frontier.parse_configs(list(frontier.DEFAULT_CONFIGS))
  assert len(got) == 16
  assert sorted({c.batch_size for c in got if c.method == "standard"}) == [
      1, 32, 128, 512]


@pytest.mark.parametrize("text, message", [
    ("foo@b=1", "unknown method 'foo'"),
    ("standard", "gives no batch size"),
    ("mc@ratio=0.3", "gives no batch size: add b="),
    ("standard@b=x", "b=x: invalid literal"),
    ("standard@b=0", "the batch size must be at least 1"),
    ("mc@b=1,zzz=3", "'zzz' is not an option of it (its options: mc_"),
    ("mc@b=1,ratio=lots", ": ratio=lots: could not convert"),
    ("alsh@b=1,transform=fancy", "--alsh_transform='fancy' is not one of"),
    ("standard@b=1,lr=-1", "the learning rate must be positive"),
    ("standard@b=1,oops", "'oops' is not key=value"),
])
def test_bad_configurations_name_the_bad_part(text, message):
  with pytest.raises(ValueError, match="configuration") as e:
    frontier.parse_config(text)
  assert message in str(e.value)
  assert repr(text) in str(e.value)


def test_options_before_any_configuration_and_none_at_all_are_refused():
  with pytest.raises(ValueError, match="comes before any configuration"):
    frontier.parse_configs("ratio=0.3,mc@b=1")
  with pytest.raises(ValueError, match="no configurations given"):
    frontier.parse_configs(" , ")


# -- reading curves -----------------------------------------------------------------


def _curve(devs, times=None, tests=None):
  times = times or [float(i + 1) for i in range(len(devs))]
  tests = tests or [d - 0.01 for d in devs]
  return [{"scheduled_seconds": t, "cumulative_seconds": t + 0.05,
           "dev_accuracy": d, "test_accuracy": s}
          for t, d, s in zip(times, devs, tests)]


def test_time_to_target_reached_never_reached_and_reached_then_lost():
  rows = _curve([0.5, 0.79, 0.81, 0.86, 0.84])
  assert budget.time_to_target(rows, 0.80) == (3.05, pytest.approx(0.80))
  assert budget.time_to_target(rows, 0.86) == (4.05, pytest.approx(0.85))
  # Reached then lost: the first time counts.
  assert budget.time_to_target(rows, 0.855)[0] == 4.05
  assert budget.time_to_target(rows, 0.87) is None
  # A diverged point (NaN) reaches nothing.
  assert budget.time_to_target(_curve([math.nan, 0.5]), 0.1)[0] == 2.05
  assert budget.time_to_target(_curve([0.05, math.nan]), 0.1) is None


def test_best_within_uses_the_points_scheduled_by_then():
  rows = _curve([0.5, 0.7, 0.6, 0.9], times=[1, 10, 30, 60])
  assert budget.best_within(rows, 10) == 0.7
  assert budget.best_within(rows, 30) == 0.7
  assert budget.best_within(rows, 60) == 0.9
  assert budget.best_within(rows, 0.5) is None


def test_envelope_is_the_best_so_far_over_curves():
  a = [(1.0, 0.5), (2.0, 0.7), (4.0, 0.6)]
  b = [(1.5, 0.65), (2.0, 0.6), (3.0, 0.8)]
  assert budget.envelope([a, b]) == [(1.0, 0.5), (1.5, 0.65), (2.0, 0.7),
                                     (3.0, 0.8), (4.0, 0.8)]


def test_eval_schedule():
  assert budget.eval_schedule(60) == (1, 2, 3, 5, 10, 20, 30, 50, 60)
  assert budget.eval_schedule(7) == (1, 2, 3, 3.5, 5, 7)
  assert budget.eval_schedule(0.5) == (0.5,)
  for bad in (0, -1, math.inf, "10"):
    with pytest.raises(ValueError, match="budget_seconds must be a positive"):
      budget.eval_schedule(bad)


def test_test_accuracy_is_measured_at_each_new_percentage_point():
  assert budget.new_percent(0.870, 0.869)
  assert not budget.new_percent(0.879, 0.871)
  assert budget.new_percent(0.05, -1.0)
  # Every first crossing of a two-decimal target is a new percentage
  # point: all pairs best < target <= dev of accuracies c / 5000 (a dev
  # set's) near the default targets.
  accs = [c / 5000 for c in range(3900, 4500)]
  targets = [t / 100 for t in range(78, 90)]
  for best in accs[::7]:
    for dev in accs:
      if any(best < t <= dev for t in targets):
        assert budget.new_percent(dev, best), (dev, best)


# -- budget runs --------------------------------------------------------------------


def _spec(**kw):
  kw = dict(dict(method="standard", dataset="tiny", depth=1, hidden=16,
                 batch_size=8, budget_seconds=2.0), **kw)
  return experiment.RunSpec.make(**kw)


def test_a_budget_run_spends_its_budget_and_no_more(tiny):
  """The run's own clock: its last point is past the budget by less than
  0.5 s (a few chunks of 0.05 s on a loaded machine), every point is
  measured after its scheduled time, and steps only grow."""
  spec = _spec()
  rows = budget.run_budget(spec, tiny, progress=False, chunk_seconds=0.05)
  schedule = budget.eval_schedule(2.0)
  assert [r["point"] for r in rows] == list(range(1, len(schedule) + 1))
  assert [r["scheduled_seconds"] for r in rows] == list(schedule)
  assert 2.0 <= rows[-1]["cumulative_seconds"] < 2.5
  for r in rows:
    assert r["cumulative_seconds"] >= r["scheduled_seconds"]
    assert 0 <= r["dev_accuracy"] <= 1 and not r["diverged"]
  steps = [r["steps"] for r in rows]
  assert steps == sorted(steps) and steps[0] > 0
  assert rows[-1]["test_accuracy"] is not None
  assert rows[-1]["examples"] == rows[-1]["steps"] * 8
  assert experiment.complete_run(spec, rows) == rows
  # Budget runs keep the run_id of epoch runs apart.
  assert "budget_seconds" in spec.config() and "epochs" not in spec.config()
  assert "budget_seconds" not in _spec(budget_seconds=None).config()


@pytest.mark.parametrize("method", ["mc", "alsh"])
def test_chunked_training_repeats_epoch_training(tiny, method):
  """Cut into timed chunks, training takes the steps of train.epochs,
  the end-of-epoch work (ALSH: rebuilding every table) at each epoch's
  end."""
  spec = _spec(method=method, method_values={"alsh_threads": 1})
  impl = experiment.build_impl(spec, tiny)
  x, y = jax.numpy.asarray(tiny.train.x), jax.numpy.asarray(tiny.train.y)
  per_epoch = len(tiny.train.y) // 8
  ref = None
  for ep in train.epochs(impl, x, y, keys=train.RunKeys(0), batch_size=8,
                         num_epochs=2):
    ref = jax.tree.map(np.asarray, impl.params_of(ep.state))
  state = None
  for chunk in train.timed_chunks(
      impl, x, y, keys=train.RunKeys(0), batch_size=8,
      state=train.init_state(impl, train.RunKeys(0)), chunk_seconds=0.001):
    assert chunk.steps >= 1 and chunk.seconds > 0
    assert int(chunk.state.step) <= 2 * per_epoch  # no chunk straddles
    if int(chunk.state.step) == 2 * per_epoch:
      state = chunk.state
      break
  got = jax.tree.map(np.asarray, impl.params_of(state))
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(ref)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_chunk_steps_is_a_power_of_two_or_an_epoch():
  assert train.chunk_steps(0.01, chunk_seconds=0.25, limit=1000) == 16
  assert train.chunk_steps(1.0, chunk_seconds=0.25, limit=1000) == 1
  assert train.chunk_steps(1e-6, chunk_seconds=0.25, limit=300) == 300


def test_a_killed_budget_run_resumes_from_its_checkpoint(tiny, tmp_path,
                                                         monkeypatch):
  """Checkpointed at every point; a run cut after its third point resumes
  there: its first rows kept, the rest trained from the saved state."""
  monkeypatch.setattr(budget, "CHECKPOINT_SECONDS", 0.0)
  spec = _spec(budget_seconds=3.0)
  ckpt = str(tmp_path / "ckpt")
  saves = []
  real_save = budget.checkpoint.RunCheckpoint.save

  def save_then_die(self, state, rows):
    real_save(self, state, rows)
    saves.append(len(rows))
    if len(rows) >= 3:
      raise KeyboardInterrupt("killed")

  monkeypatch.setattr(budget.checkpoint.RunCheckpoint, "save", save_then_die)
  with pytest.raises(KeyboardInterrupt):
    budget.run_budget(spec, tiny, checkpoint_dir=ckpt, progress=False,
                      chunk_seconds=0.05)
  monkeypatch.setattr(budget.checkpoint.RunCheckpoint, "save", real_save)
  first = budget.checkpoint.RunCheckpoint(ckpt, run_id=spec.run_id).rows()
  assert len(first) == saves[-1] >= 3
  rows = budget.run_budget(spec, tiny, checkpoint_dir=ckpt, progress=False,
                           chunk_seconds=0.05)
  assert len(rows) == len(budget.eval_schedule(3.0))
  assert rows[:len(first)] == first
  assert rows[len(first)]["steps"] > first[-1]["steps"]
  assert rows[-1]["cumulative_seconds"] >= 3.0


# -- the study ----------------------------------------------------------------------


def _tiny_frontier(**kw):
  return frontier.Frontier(**dict(dict(
      configs=tuple(frontier.parse_configs("standard@b=16;mc@b=16,ratio=0.3")),
      hidden=(16,), depths=(1,), budget_seconds=1.5,
      learning_rates=(1e-3,), seeds=(0,), targets=(0.5, 0.99),
      settings=dict(dataset="mnist_small", max_train=400, max_test=200)),
      **kw))


def test_a_tiny_frontier_writes_every_output_and_resumes(tmp_path,
                                                         monkeypatch):
  runner = Runner(out_dir=str(tmp_path), progress=False, download=False)
  study = _tiny_frontier()
  text = frontier.run(runner, study)
  out = tmp_path / "frontier"
  rows = [json.loads(line) for line in open(out / "runs.jsonl")]
  assert len(rows) == 2 * len(budget.eval_schedule(1.5))
  assert {r["method"] for r in rows} == {"standard", "mc"}
  assert (out / "mnist_small_h16_d1.png").stat().st_size > 10_000
  md = (out / "mnist_small.md").read_text()
  assert md == text
  assert "### Fastest configuration per method" in md
  assert "`mc@b=16,ratio=0.3`" in md and "to 0.99" in md
  assert "not reached" in md  # 0.99 on 400 digits in 1.5 s
  assert "(1.00x)" in md  # standard against itself
  # Rerun: both runs are finished, so nothing trains.
  monkeypatch.setattr(budget, "run_budget",
                      lambda *a, **k: pytest.fail("a finished run reran"))
  assert frontier.run(runner, study) == text


def test_results_keep_each_configurations_best_learning_rate():
  study = _tiny_frontier(configs=tuple(frontier.parse_configs("standard@b=4")),
                         learning_rates=(1e-4, 1e-3), seeds=(0, 1))
  runs = [_curve([0.3, 0.4]), _curve([0.3, 0.5]),   # lr 1e-4, seeds 0, 1
          _curve([0.6, 0.8]), _curve([0.5, 0.9])]   # lr 1e-3, seeds 0, 1
  (shape,) = frontier.results(study, runs).values()
  (res,) = shape
  assert res.learning_rate == 1e-3 and res.label == "standard@b=4 (lr=0.001)"
  assert res.best_dev == pytest.approx(0.85)
  assert res.reach(0.8)["seconds"] == pytest.approx((2.05 + 2.05) / 2)
  assert res.reach(0.85) == {"partial": 1, "of": 2}


def test_the_entry_point_refuses_bad_configurations_and_shared_timing(
    tmp_path):
  env = dict(os.environ, HOME=str(tmp_path), JAX_PLATFORMS="cpu")
  base = [sys.executable, "-m", "experiments.frontier",
          "--dataset=mnist_small", f"--out_dir={tmp_path}", "--noprogress"]
  bad = subprocess.run(base + ["--configs=mc@b=32,zzz=1"], cwd=ROOT,
                       env=env, capture_output=True, text=True, timeout=300)
  assert bad.returncode != 0
  assert "configuration 'mc@b=32,zzz=1': zzz=1: 'zzz' is not an option" in (
      bad.stderr)
  assert "Traceback" not in bad.stderr
  shared = subprocess.run(base + ["--executor=local"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
  assert shared.returncode != 0
  assert "--max_parallel=1" in shared.stderr
  other = subprocess.run(
      [sys.executable, "-m", "experiments.depth_sweep", "--scale=default",
       "--dry_run", f"--out_dir={tmp_path}"], cwd=ROOT, env=env,
      capture_output=True, text=True, timeout=300)
  assert other.returncode != 0 and "Traceback" not in other.stderr
  assert "no preset for --scale=default; this entry point has quick" in (
      other.stderr)
  dry = subprocess.run(base + ["--dry_run", "--scale=quick"], cwd=ROOT,
                       env=env, capture_output=True, text=True, timeout=300)
  assert dry.returncode == 0, dry.stderr[-2000:]
  assert "16 run(s) to run (0 already finished)" in dry.stdout
  assert "30 training seconds" in dry.stdout
  assert "alsh mnist_small depth=3 hidden=1000 B=1" in dry.stdout
