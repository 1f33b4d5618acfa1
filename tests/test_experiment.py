"""Tests for training runs: RunSpec identity and resumable run_specs."""

import json
import math
import os

import pytest

from sampling_mlp import checkpoint, experiment, report


def _spec(**kw):
  base = dict(method="standard", dataset="tiny", depth=1, hidden=16,
              batch_size=32, epochs=2, activation="relu")
  base.update(kw)
  return experiment.RunSpec.make(**base)


def _loader(tiny):
  calls = []
  def load(name, **kw):
    calls.append(name)
    return tiny
  return load, calls


def test_run_id_tracks_config():
  assert _spec().run_id == _spec().run_id
  assert _spec().run_id != _spec(depth=2).run_id
  assert _spec().run_id != _spec(seed=1).run_id


def test_rows_have_the_documented_fields(tiny, tmp_path):
  load, _ = _loader(tiny)
  path = str(tmp_path / "runs.jsonl")
  runs = experiment.run_specs([_spec()], results_path=path,
                              dataset_loader=load, progress=False)
  rows = [json.loads(l) for l in open(path)]
  assert len(rows) == 2 and runs[0] == rows
  for key in ("method", "dataset", "depth", "hidden", "batch_size", "seed",
              "epoch", "train_loss", "dev_accuracy", "test_accuracy",
              "epoch_seconds", "cumulative_seconds", "config"):
    assert key in rows[0], key
  assert rows[0]["config"]["epochs"] == 2


def test_rerun_skips_finished_runs(tiny, tmp_path):
  load, calls = _loader(tiny)
  path = str(tmp_path / "runs.jsonl")
  specs = [_spec(), _spec(depth=2)]
  experiment.run_specs(specs, results_path=path, dataset_loader=load,
                       progress=False)
  before = open(path).read()
  runs = experiment.run_specs(specs, results_path=path, dataset_loader=load,
                              progress=False)
  assert open(path).read() == before
  assert len(calls) == 1  # the second call loaded no data: nothing to run
  assert [len(r) for r in runs] == [2, 2]


def test_interrupted_sweep_resumes_without_duplicates(tiny, tmp_path):
  load, _ = _loader(tiny)
  path = str(tmp_path / "runs.jsonl")
  specs = [_spec(), _spec(depth=2), _spec(depth=3)]
  # A complete sweep, for reference.
  ref = experiment.run_specs(specs, results_path=str(tmp_path / "ref.jsonl"),
                             dataset_loader=load, progress=False)
  # Simulate a kill: first run finished, second run wrote one epoch and was
  # cut in the middle of writing its second row.
  lines = open(str(tmp_path / "ref.jsonl")).read().splitlines(keepends=True)
  with open(path, "w") as f:
    f.writelines(lines[:3])
    f.write(lines[3][:25])  # torn line
  runs = experiment.run_specs(specs, results_path=path, dataset_loader=load,
                              progress=False)
  rows = [json.loads(l) for l in open(path)]  # every line parses
  keys = [(r["run_id"], r["epoch"]) for r in rows]
  assert len(keys) == len(set(keys)) == 6
  assert sorted(keys) == sorted((s.run_id, e) for s in specs for e in (1, 2))
  # Same seed, so the rerun reproduces the reference numbers.
  for got, want in zip(runs, ref):
    assert [r["test_accuracy"] for r in got] == [r["test_accuracy"] for r in want]


def test_unknown_method_in_spec():
  with pytest.raises(ValueError, match="known methods"):
    _spec(method="nope")


# -- checkpoints, failures, dry runs, divergence ------------------------------

TIMING = ("epoch_seconds", "cumulative_seconds", "compile_seconds", "worker")


def _numbers(runs):
  return [[{k: v for k, v in r.items() if k not in TIMING} for r in rows]
          for rows in runs]


def test_rows_say_where_they_ran_and_checkpoints_go(tiny, tmp_path):
  load, _ = _loader(tiny)
  path = str(tmp_path / "s" / "runs.jsonl")
  (rows,) = experiment.run_specs([_spec()], results_path=path,
                                 dataset_loader=load, progress=False)
  worker = rows[0]["worker"]
  assert worker["executor"] == "inline" and worker["pid"] == os.getpid()
  assert worker["num_cpus"] == len(os.sched_getaffinity(0))
  assert rows[0]["diverged"] is False
  # A finished run's checkpoint is removed once its rows are written...
  assert os.listdir(tmp_path / "s" / "checkpoints") == []
  # ... unless asked to keep it.
  spec = _spec(seed=1)
  experiment.run_specs([spec], results_path=path, dataset_loader=load,
                       progress=False, keep_checkpoints=True)
  ckpt = checkpoint.RunCheckpoint(
      str(tmp_path / "s" / "checkpoints" / spec.run_id), run_id=spec.run_id)
  assert ckpt.latest_epoch() == 2


def test_a_run_finished_in_its_checkpoint_is_copied_not_rerun(tiny, tmp_path):
  """The driver died after the run's last epoch, before writing its rows."""
  load, calls = _loader(tiny)
  spec = _spec()
  root = tmp_path / "checkpoints"
  want = experiment.run_one(spec, tiny, checkpoint_dir=str(root / spec.run_id),
                            progress=False)
  path = str(tmp_path / "runs.jsonl")
  runs = experiment.run_specs([spec], results_path=path, dataset_loader=load,
                              progress=False)
  assert runs[0] == want and calls == []
  assert [json.loads(l) for l in open(path)] == want
  assert not (root / spec.run_id).exists()


def test_a_partly_trained_run_resumes_from_its_checkpoint(tiny, tmp_path,
                                                         monkeypatch):
  load, _ = _loader(tiny)
  specs = [_spec(epochs=3), _spec(epochs=3, depth=2)]
  ref = experiment.run_specs(specs, results_path=str(tmp_path / "ref.jsonl"),
                             dataset_loader=load, progress=False)
  save = checkpoint.RunCheckpoint.save

  def dying(self, state, rows):
    save(self, state, rows)
    if len(rows) == 2 and self.run_id == specs[1].run_id:
      raise KeyboardInterrupt  # the driver is killed after epoch 2

  path = str(tmp_path / "runs.jsonl")
  with monkeypatch.context() as m:
    m.setattr(checkpoint.RunCheckpoint, "save", dying)
    with pytest.raises(KeyboardInterrupt):
      experiment.run_specs(specs, results_path=path, dataset_loader=load,
                           progress=False)
  assert len(open(path).readlines()) == 3  # the first run only
  runs = experiment.run_specs(specs, results_path=path, dataset_loader=load,
                              progress=False)
  assert _numbers(runs) == _numbers(ref)
  # Epochs 1 and 2 of the second run come from its checkpoint: epoch 3 is
  # the first this driver trained (and compiled for).
  assert "compile_seconds" in runs[1][0] and "compile_seconds" in runs[1][2]
  keys = [(r["run_id"], r["epoch"]) for r in map(json.loads, open(path))]
  assert len(keys) == len(set(keys)) == 6


def test_a_failed_run_is_named_the_rest_go_on_and_a_rerun_retries(
    tiny, tmp_path, caplog):
  load, _ = _loader(tiny)
  bad = _spec(batch_size=1000)  # larger than the 512 training examples
  specs = [_spec(), bad, _spec(depth=2)]
  path = str(tmp_path / "runs.jsonl")
  runs = experiment.run_specs(specs, results_path=path, dataset_loader=load,
                              progress=False)
  assert [len(r) for r in runs] == [2, 0, 2]
  (failure,) = runs.failures
  assert bad.run_id in failure.label and "larger than the 512" in (
      failure.reason)
  assert "1 of 3 run(s) failed" in caplog.text
  assert bad.run_id in caplog.text
  before = open(path).read()
  caplog.clear()
  runs = experiment.run_specs(specs, results_path=path, dataset_loader=load,
                              progress=False)
  # Only the failed run ran again.
  assert len(runs.failures) == 1 and "1 of 1 run(s) failed" in caplog.text
  assert open(path).read() == before


def test_dry_run_lists_what_would_run_and_writes_nothing(tiny, tmp_path,
                                                        capsys):
  load, calls = _loader(tiny)
  path = str(tmp_path / "runs.jsonl")
  experiment.run_specs([_spec()], results_path=path, dataset_loader=load,
                       progress=False)
  before = open(path).read()
  specs = [_spec(), _spec(depth=2), _spec(depth=3)]
  with pytest.raises(experiment.DryRun):
    experiment.run_specs(specs, results_path=path, dataset_loader=load,
                         progress=False, dry_run=True)
  out = capsys.readouterr().out
  assert "2 run(s) to run (1 already finished)" in out
  assert specs[1].run_id in out and specs[2].run_id in out
  assert specs[0].run_id not in out
  assert out.strip().endswith("2 run(s)")
  assert open(path).read() == before and len(calls) == 1


def test_a_second_driver_on_the_same_results_is_refused(tiny, tmp_path):
  load, _ = _loader(tiny)
  path = str(tmp_path / "runs.jsonl")
  with checkpoint.run_lock(path + ".lock", holder={"pid": 1234}):
    with pytest.raises(checkpoint.LockHeld, match="1234"):
      experiment.run_specs([_spec()], results_path=path, dataset_loader=load,
                           progress=False)


def test_a_diverged_run_stops_is_flagged_and_counts_as_finished(
    tiny, tmp_path, caplog):
  load, calls = _loader(tiny)
  spec = _spec(epochs=3, learning_rate=1e37, activation="linear")
  path = str(tmp_path / "runs.jsonl")
  (rows,) = experiment.run_specs([spec], results_path=path,
                                 dataset_loader=load, progress=False)
  last = rows[-1]
  assert last["diverged"] is True and len(rows) < 3
  assert not math.isfinite(last["train_loss"])
  assert 1 <= last["diverged_step"] <= last["steps"]
  assert all(not r["diverged"] for r in rows[:-1])
  assert (f"diverged: the training loss became nan at step "
          f"{last['diverged_step']}, in epoch {last['epoch']}") in caplog.text
  assert spec.run_id in caplog.text
  (again,) = experiment.run_specs([spec], results_path=path,
                                  dataset_loader=load, progress=False)
  assert len(calls) == 1 and len(again) == len(rows)
  summary = report.final_rows([rows])
  assert summary[0]["diverged"] and math.isnan(summary[0]["test_accuracy"])
  table = report.markdown_table(summary, report.SUMMARY_COLUMNS)
  assert "| diverged |" in table
