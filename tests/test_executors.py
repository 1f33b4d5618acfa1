"""Tests for executors.py: the flags' checks, and the inline and local
executors (each outcome as it comes, a failure named with its log, workers
pinned to their own cores).  SLURM runs in test_sweeps_killed.py."""

import os
import time

import pytest

from sampling_mlp import executors

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.mark.parametrize("text,minutes", [
    ("90", 90), ("1:30", 2), ("1:30:00", 90), ("2-00:00:00", 2880),
    ("1-6", 1800), ("0-0:1", 1), ("0:0:1", 1)])
def test_slurm_time(text, minutes):
  assert executors.parse_slurm_time(text) == minutes


@pytest.mark.parametrize("text", ["", "1h", "1:2:3:4", "0", "-5"])
def test_bad_slurm_time(text):
  with pytest.raises(ValueError, match="slurm_time"):
    executors.parse_slurm_time(text)


def test_config_checks():
  with pytest.raises(ValueError, match="--executor='cloud'"):
    executors.ExecutorConfig(kind="cloud")
  cores = len(os.sched_getaffinity(0))
  with pytest.raises(ValueError, match=f"at most {cores}"):
    executors.ExecutorConfig(kind="local", max_parallel=cores + 1)
  with pytest.raises(ValueError, match="slurm_cpus_per_task"):
    executors.ExecutorConfig(slurm_cpus_per_task=0)
  assert executors.ExecutorConfig.parse_extra(
      ["account=lab", "--exclusive", "comment=a=b"]) == (
          ("account", "lab"), ("exclusive", True), ("comment", "a=b"))
  with pytest.raises(ValueError, match="NAME=VALUE"):
    executors.ExecutorConfig.parse_extra(["=x"])


def _work(item):
  if item == "boom":
    raise ValueError("bad item")
  if item == "slow":
    time.sleep(1.5)
  return dict(executors.worker_info(), item=item)


def test_inline_reports_a_failure_and_goes_on():
  out = dict(executors.execute(executors.ExecutorConfig(), _work,
                               ["a", "boom", "b"], labels=["A", "B", "C"],
                               folder="unused"))
  assert out[0]["item"] == "a" and out[2]["item"] == "b"
  assert out[0]["executor"] == "inline"
  failure = out[1]
  assert isinstance(failure, executors.Failure)
  assert failure.label == "B" and "ValueError: bad item" in failure.reason
  assert "bad item" in failure.message()


def test_local_workers_are_pinned_and_failures_named(tmp_path, monkeypatch):
  # Workers unpickle _work from this module.
  monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
      [HERE, os.environ.get("PYTHONPATH", "")]))
  cores = sorted(os.sched_getaffinity(0))
  config = executors.ExecutorConfig(kind="local", max_parallel=len(cores),
                                    poll_seconds=0.2)
  order = []
  out = {}
  for i, value in executors.execute(config, _work, ["slow", "boom", "a"],
                                    labels=["S", "B", "A"],
                                    folder=str(tmp_path), progress=False):
    order.append(i)
    out[i] = value
  assert sorted(order) == [0, 1, 2]
  if len(cores) > 1:
    assert order[-1] == 0  # outcomes come as they finish
    assert out[0]["pinned"] and out[0]["num_cpus"] == 1
  assert out[0]["executor"] == "local" and out[0]["job_id"]
  assert {out[0]["cpus"], out[2]["cpus"]} <= {str(c) for c in cores} | {
      ",".join(map(str, cores))}
  failure = out[1]
  assert isinstance(failure, executors.Failure) and failure.label == "B"
  assert "ValueError" in failure.reason
  assert "bad item" in failure.log_tail
  assert failure.log_path.startswith(str(tmp_path))
  assert not (tmp_path / "%j").exists()
