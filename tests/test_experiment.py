"""Tests for training runs: RunSpec identity and resumable run_specs."""

import json

import pytest

from sampling_mlp import experiment


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
