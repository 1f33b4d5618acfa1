"""The reproduction entry points (experiments/*.py): end to end on tiny
settings, the --scale presets, a missing dataset reported, not fatal, and a
method registered outside the package (``toy_method``, through
``$SAMPLING_MLP_METHODS``) running in depth_sweep, benchmark and
error_propagation with no other code.

The entry points run as subprocesses (``python -m experiments.NAME``), all
at once in a module fixture, so jax is imported and compiled concurrently.
Downloads are off (``--nodownload``) and HOME points at an empty folder, so
no cache or network is used.
"""

import json
import os
import subprocess
import sys

from absl import flags
from absl.testing import flagsaver
import pytest

from experiments import common

FLAGS = flags.FLAGS
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--dataset=mnist_small", "--max_train=200", "--max_test=100",
        "--hidden=16", "--epochs=1", "--noprogress", "--nodownload"]

TOY = "toy:"  # runs with the toy method registered from tests/toy_method.py
COMMANDS = {
    "depth_sweep": ["--method=standard,mc", "--depths=1"],
    "time_accuracy": ["--method=standard", "--depths=1,2", "--epochs=2"],
    "mc_batch_size": ["--batch_sizes=1,4", "--learning_rates=1e-3",
                      "--depths=2", "--epochs=2", "--noreference",
                      "--seeds=0,1"],
    "dataset_table": ["--datasets=norb,mnist_small", "--method=standard",
                      "--seeds=0,1"],
    TOY + "depth_sweep": ["--method=standard,top_half", "--depths=1,2",
                          "--top_fraction=0.25"],
    TOY + "benchmark": ["--methods=standard,top_half", "--depth=1",
                        "--batch_size=2", "--repeats=2",
                        "--steps_per_call=2"],
    TOY + "error_propagation": ["--method=top_half", "--depths=1,2",
                                "--eval_examples=32", "--eval_batch=32",
                                "--num_keys=1", "--activations=relu",
                                "--train_epochs=0"],
}


def _env(home, toy=False):
  env = dict(os.environ, HOME=str(home), JAX_PLATFORMS="cpu")
  env.pop("SAMPLING_MLP_DATA", None)
  paths = [ROOT] + ([os.path.dirname(os.path.abspath(__file__))] if toy
                    else [])
  env["PYTHONPATH"] = os.pathsep.join(paths + [env.get("PYTHONPATH", "")])
  if toy:
    env["SAMPLING_MLP_METHODS"] = "toy_method"
  return env


def _start(name, out_dir, home, extra=()):
  toy = name.startswith(TOY)
  module = name[len(TOY):] if toy else name
  if toy:
    out_dir = out_dir / "toy"
  args = [sys.executable, "-m", f"experiments.{module}", *TINY,
          *COMMANDS[name], f"--out_dir={out_dir}",
          f"--data_dir={home / 'empty'}", *extra]
  return subprocess.Popen(args, cwd=ROOT, env=_env(home, toy), text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
  """Runs every entry point once; {name: (returncode, stdout, stderr)}."""
  base = tmp_path_factory.mktemp("experiments")
  (base / "home").mkdir()
  (base / "home" / "empty").mkdir()
  procs = {name: _start(name, base / "out", base / "home")
           for name in COMMANDS}
  results = {}
  for name, proc in procs.items():
    out, err = proc.communicate(timeout=600)
    results[name] = (proc.returncode, out, err)
  return base, results


def _check_ran(outputs, name):
  _, results = outputs
  code, out, err = results[name]
  assert code == 0, f"{name} failed:\n{err[-3000:]}"
  return out, err


def _rows(path):
  with open(path) as f:
    return [json.loads(line) for line in f]


def _table_lines(md_path):
  with open(md_path) as f:
    return [line for line in f if line.startswith("| ")]


def test_depth_sweep_writes_table_and_plots(outputs):
  _check_ran(outputs, "depth_sweep")
  d = outputs[0] / "out" / "depth_sweep"
  for f in ("runs.jsonl", "mnist_small_standard-mc.md",
            "mnist_small_standard-mc_depth.png",
            "mnist_small_standard-mc_time.png"):
    assert (d / f).stat().st_size > 0, f
  assert len(_table_lines(d / "mnist_small_standard-mc.md")) == 1 + 2
  # The tiny flags given on the command line beat the quick preset.
  rows = _rows(d / "runs.jsonl")
  assert {r["config"]["max_train"] for r in rows} == {200}
  assert {r["num_train"] for r in rows} == {200}


def test_a_method_registered_outside_the_package_runs_everywhere(outputs):
  """The toy method (tests/toy_method.py, about 40 lines) needs no edit of
  any loop, entry point, analysis or benchmark code."""
  _check_ran(outputs, TOY + "depth_sweep")
  d = outputs[0] / "out" / "toy" / "depth_sweep"
  rows = _rows(d / "runs.jsonl")
  toy = [r for r in rows if r["method"] == "top_half"]
  assert {r["depth"] for r in toy} == {1, 2}
  # Its own flag reached it.
  assert {r["config"]["method_config"]["top_fraction"] for r in toy} == {0.25}
  assert "top_half" in (d / "mnist_small_standard-top_half.md").read_text()

  out, _ = _check_ran(outputs, TOY + "benchmark")
  bench = [json.loads(l) for l in out.splitlines() if l.startswith("{")]
  assert [r["method"] for r in bench] == ["standard", "top_half"]
  assert bench[1]["saves_compute"].startswith("no:")

  _check_ran(outputs, TOY + "error_propagation")
  e = outputs[0] / "out" / "toy" / "error_propagation"
  err_rows = _rows(e / "rows.jsonl")
  assert {r["variant"] for r in err_rows} == {"top_half fraction=0.5"}
  # A node-subset method: it gets the theorem's quantities too.
  assert all(len(r["effective_c"]) == r["depth"] for r in err_rows)
  assert "Node-subset methods against the theorem" in (
      e / "table.md").read_text()


def test_time_accuracy_writes_table_and_a_plot_per_depth(outputs):
  out, _ = _check_ran(outputs, "time_accuracy")
  d = outputs[0] / "out" / "time_accuracy"
  for f in ("runs.jsonl", "mnist_small.md", "mnist_small_depth1.png",
            "mnist_small_depth2.png"):
    assert (d / f).stat().st_size > 0, f
  rows = _rows(d / "runs.jsonl")
  assert len(rows) == 2 * 2  # depths x epochs
  assert {r["batch_size"] for r in rows} == {1}  # the single-sample setting
  # Summary (header + 2 runs), then every epoch (header + 4 rows).
  assert len(_table_lines(d / "mnist_small.md")) == 3 + 5
  assert "dev acc by epoch" in out


def test_time_accuracy_rerun_resumes(outputs):
  base, _ = outputs
  path = base / "out" / "time_accuracy" / "runs.jsonl"
  before = path.read_text()
  proc = _start("time_accuracy", base / "out", base / "home")
  _, err = proc.communicate(timeout=300)
  assert proc.returncode == 0, err[-3000:]
  assert path.read_text() == before
  assert "skipping finished run" in err


def test_mc_batch_size_logs_errors_and_reads_the_batch_axis_bug(outputs):
  out, _ = _check_ran(outputs, "mc_batch_size")
  d = outputs[0] / "out" / "mc_batch_size"
  for f in ("runs.jsonl", "mnist_small.md", "mnist_small_dev.png",
            "mnist_small_error.png"):
    assert (d / f).stat().st_size > 0, f
  rows = _rows(d / "runs.jsonl")
  # 2 batch sizes x 2 loss axes x 2 seeds x 2 epochs.
  assert len(rows) == 2 * 2 * 2 * 2
  assert {r["seed"] for r in rows} == {0, 1}
  mc_rows = [r for r in rows if r["method"] == "mc"]
  assert len(mc_rows) == len(rows)
  for r in mc_rows:
    assert len(r["mc_relative_error"]) == 3  # 2 hidden layers + output
  bug = [r for r in mc_rows if r["batch_size"] == 1
         and r["config"]["method_config"]["mc_loss_axis"] == "batch"]
  assert bug and all(r["train_loss"] == 0.0 for r in bug)
  # A row per configuration: the mean over its two seeds.
  table = _table_lines(d / "mnist_small.md")
  assert len(table) == 1 + 4 and "seeds" in table[0]
  assert "training loss exactly 0 in every epoch" in out


def test_dataset_table_reports_a_missing_dataset(outputs):
  out, err = _check_ran(outputs, "dataset_table")
  d = outputs[0] / "out" / "dataset_table"
  for f in ("runs.jsonl", "table.md", "table.png"):
    assert (d / f).stat().st_size > 0, f
  assert "dataset norb is not available" in err
  rows = _rows(d / "runs.jsonl")
  assert {r["dataset"] for r in rows} == {"mnist_small"}
  assert {r["seed"] for r in rows} == {0, 1}
  md = (d / "table.md").read_text()
  assert " ± " in md  # mean ± std over the two seeds
  long_rows = [line for line in md.split("## All runs")[1].splitlines()
               if line.startswith("| norb") or line.startswith("| mnist_small")]
  assert len(long_rows) == 2
  assert all("missing data" in line for line in long_rows
             if line.startswith("| norb"))
  assert "stand-in for mnist" in md
  assert "Missing data" in out and "norb" in out


# -- the scale presets --------------------------------------------------------


@pytest.fixture
def parsed_flags():
  if not FLAGS.is_parsed():
    FLAGS.mark_as_parsed()
  with flagsaver.flagsaver():
    yield


PRESETS = {"quick": {"epochs": 2, "max_train": 500, "hidden": [16, 32]},
           "paper": common.PAPER_SCALE}


def test_scale_preset_fills_flags_not_given(parsed_flags):
  applied = common.apply_scale(PRESETS, "quick")
  assert applied == {"epochs": 2, "max_train": 500, "hidden": ["16", "32"]}
  assert (FLAGS.epochs, FLAGS.max_train, FLAGS.hidden) == (2, 500,
                                                           ["16", "32"])


def test_scale_preset_keeps_flags_given_on_the_command_line(parsed_flags):
  with flagsaver.as_parsed(epochs="7", hidden="64", scale="paper"):
    applied = common.apply_scale(PRESETS)
    assert FLAGS.epochs == 7 and FLAGS.hidden == ["64"]
    assert FLAGS.max_train is None and FLAGS.max_test is None
    assert "epochs" not in applied and "hidden" not in applied


def test_paper_scale_is_the_papers_sizes(parsed_flags):
  with flagsaver.flagsaver(max_train=100, epochs=2):  # set, not parsed
    common.apply_scale(PRESETS, "paper")
    assert (FLAGS.epochs, FLAGS.max_train, FLAGS.max_test,
            FLAGS.hidden) == (50, None, None, ["1000"])


def test_scale_errors_are_clear(parsed_flags):
  with pytest.raises(ValueError, match="no preset for --scale=paper"):
    common.apply_scale({"quick": {}}, "paper")
  with pytest.raises(ValueError, match="--not_a_flag"):
    common.apply_scale({"quick": {"not_a_flag": 1}}, "quick")


def test_missing_dataset_is_one_clear_error_not_a_traceback(tmp_path):
  out = subprocess.run(
      [sys.executable, "-m", "experiments.depth_sweep", "--dataset=mnist",
       "--nodownload", "--depths=1", "--epochs=1", "--hidden=8",
       f"--out_dir={tmp_path / 'out'}", "--noprogress"],
      cwd=ROOT, env=_env(tmp_path), capture_output=True, text=True,
      timeout=300)
  assert out.returncode == 2
  assert "Traceback" not in out.stderr
  assert "error: dataset 'mnist'" in out.stderr
  assert "Put the files in one of them" in out.stderr


def test_a_diverged_run_reads_diverged(tmp_path):
  out = subprocess.run(
      [sys.executable, "-m", "experiments.depth_sweep", *TINY, "--epochs=2",
       "--depths=1", "--learning_rate=1e37", "--activation=linear",
       f"--out_dir={tmp_path / 'out'}"],
      cwd=ROOT, env=_env(tmp_path), capture_output=True, text=True,
      timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  (line,) = [l for l in out.stdout.splitlines() if l.strip().startswith(
      "standard")]
  assert "diverged" in line.split()
  assert "diverged: the training loss became nan at step" in out.stderr
  (row,) = _rows(tmp_path / "out" / "depth_sweep" / "runs.jsonl")
  assert row["diverged"] is True and row["epoch"] == 1


def test_dry_run_lists_the_runs_and_runs_nothing(tmp_path):
  out = subprocess.run(
      [sys.executable, "-m", "experiments.depth_sweep", *TINY,
       "--method=standard,mc", "--depths=1,2", "--seeds=0,1,2", "--dry_run",
       "--executor=slurm", f"--out_dir={tmp_path / 'out'}"],
      cwd=ROOT, env=_env(tmp_path), capture_output=True, text=True,
      timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  assert "12 run(s) to run (0 already finished) in SLURM" in out.stdout
  assert out.stdout.count("mnist_small depth=") == 12
  assert out.stdout.strip().endswith("12 run(s)")
  assert not (tmp_path / "out" / "depth_sweep" / "runs.jsonl").exists()
  assert not (tmp_path / "out" / "jobs").exists()


def test_seed_and_seeds_together_are_refused(tmp_path):
  out = subprocess.run(
      [sys.executable, "-m", "experiments.depth_sweep", *TINY, "--seed=3",
       "--seeds=0,1", f"--out_dir={tmp_path / 'out'}"],
      cwd=ROOT, env=_env(tmp_path), capture_output=True, text=True,
      timeout=300)
  assert out.returncode != 0
  assert "give --seeds or --seed, not both" in out.stderr
  assert "Traceback" not in out.stderr


def test_paper_dry_run_uses_the_authors_network_and_batch_size_1(tmp_path):
  out = subprocess.run(
      [sys.executable, "-m", "experiments.depth_sweep", "--scale=paper",
       "--dataset=fashion_mnist", "--method=alsh,standard", "--depths=1",
       "--dry_run", f"--out_dir={tmp_path / 'out'}"],
      cwd=ROOT, env=_env(tmp_path), capture_output=True, text=True,
      timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  lines = [l for l in out.stdout.splitlines() if "depth=1" in l]
  assert len(lines) == 2, out.stdout
  (alsh,) = [l for l in lines if " alsh " in l]
  (std,) = [l for l in lines if " standard " in l]
  assert "hidden=1000 B=1 " in alsh and "B=128 " in std
  for line in lines:
    assert "no-bias weight-norm" in line and "50 epoch(s)" in line
