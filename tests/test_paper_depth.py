"""Tests for the paper-scale depth study's report (studies/paper_depth.py and
experiments/paper_depth.py): grouping by network and variant, the means
and spreads in its table, runs still training read from their
checkpoints, what is left of a planned grid and its estimated cost, and
clear errors when there is nothing to report or a plan is malformed."""

import os
import statistics
import subprocess
import sys

import pytest

from sampling_mlp import checkpoint, experiment, report
from sampling_mlp.studies import paper_depth


def _run(method="alsh", depth=1, seed=0, epochs=3, accs=(0.5, 0.6, 0.7),
         network=None, method_config=None, batch_size=1, seconds=None):
  """A run's rows as the sweep writes them (only the fields the report
  reads)."""
  cfg = {"method": method, "depth": depth, "seed": seed, "epochs": epochs,
         "batch_size": batch_size, "method_config": method_config or {}}
  cfg.update(network or {})
  run_id = f"{method}-{depth}-{seed}-{sorted(cfg.items())!r}"
  per = 2.0 + depth if seconds is None else seconds
  return [{"run_id": run_id, "method": method, "depth": depth, "seed": seed,
           "batch_size": batch_size, "epoch": e + 1, "test_accuracy": a,
           "epoch_seconds": per, "cumulative_seconds": per * (e + 1),
           "dataset": "mnist_small", "hidden": 100, "config": cfg}
          for e, a in enumerate(accs)]


AUTHORS = {"bias": False, "weight_norm": True}


def test_runs_group_by_network_and_variant_and_sort_by_depth():
  runs = [_run(depth=3), _run(depth=1), _run(depth=1, seed=1),
          _run(depth=1, network=AUTHORS),
          _run(depth=1, method_config={"alsh_transform": "sign_alsh",
                                       "alsh_hash": "srp"})]
  configs = paper_depth.configurations(runs)
  assert [c.label for c in configs] == [
      "alsh B=1 default", "alsh B=1 authors",
      "alsh B=1 default alsh_transform=sign_alsh"]  # srp is the default hash
  assert list(configs[0].runs) == [1, 3]
  assert [r[0]["seed"] for r in configs[0].runs[1]] == [0, 1]
  assert paper_depth.network_name({"config": {"bias": False}}) == "no-bias"


def test_the_table_holds_the_mean_and_sample_std_of_finished_seeds():
  a, b = (0.1, 0.2, 0.71), (0.1, 0.2, 0.75)
  runs = [_run(accs=a), _run(seed=1, accs=b), _run(seed=2, accs=(0.3,))]
  table = paper_depth.accuracy_table(paper_depth.configurations(runs),
                                     depths=(1, 3))
  mean, std = statistics.fmean([0.71, 0.75]), statistics.stdev([0.71, 0.75])
  assert abs(std - 0.0283) < 1e-4
  row = table.splitlines()[2]
  # Two finished seeds, one still training at epoch 1 of 3; no depth 3.
  assert f"{mean:.3f} ± {std:.3f} (n=2); e1/3: 0.300 | – |" in row
  # Seconds per epoch and in all, of the finished runs only.
  assert row.endswith("| 3.0 / – | 9.0 / – |")
  # An epoch with a stopped job in it moves the total, not the median.
  paused = _run(accs=a)
  paused[1]["epoch_seconds"] = 600.0
  for r in paused[1:]:
    r["cumulative_seconds"] += 597.0
  row = paper_depth.accuracy_table(paper_depth.configurations([paused]),
                                   depths=(1,)).splitlines()[2]
  assert row.endswith("| 3.0 | 606 |")


def test_one_seed_has_no_spread_and_the_paper_table_has_its_numbers():
  configs = paper_depth.configurations([_run(method="mc", batch_size=128)])
  assert "| mc B=128 default | 0.700 |" in paper_depth.accuracy_table(
      configs, depths=(1,))
  paper = paper_depth.paper_table()
  assert ("| alsh | 94.5 | 90.3 | 94.2 | 88.7 | 70.1 | 21.3 | 25.1 | 78.1 "
          "| 9,846 / 486,321 |") in paper


def test_write_makes_the_table_and_both_figures(tmp_path):
  runs = [_run(depth=d, seed=s, network=n) for d in (1, 3) for s in (0, 1)
          for n in (None, AUTHORS)]
  text = paper_depth.write(runs, str(tmp_path / "md"),
                           figures_dir=str(tmp_path / "fig"))
  assert open(tmp_path / "md" / "paper_depth.md").read() == text
  for name in ("paper_depth_curves.png", "paper_depth.png"):
    assert os.path.getsize(tmp_path / "fig" / name) > 1000


def test_nothing_to_report_is_a_clear_error(tmp_path):
  with pytest.raises(ValueError, match="no runs to report"):
    paper_depth.write([], str(tmp_path))
  missing = tmp_path / "nope.jsonl"
  proc = subprocess.run(
      [sys.executable, "-m", "experiments.paper_depth",
       f"--results={missing}", f"--out_dir={tmp_path}",
       f"--figures_dir={tmp_path}"], capture_output=True, text=True,
      check=False, cwd=os.path.dirname(os.path.dirname(__file__)))
  assert proc.returncode == 2
  assert "no runs to report" in proc.stderr and "--results" in proc.stderr
  assert not os.listdir(tmp_path)  # nothing written


def test_runs_still_training_are_read_from_their_checkpoints(tiny, tmp_path):
  spec = experiment.RunSpec.make(method="standard", dataset="tiny", depth=1,
                                 hidden=16, batch_size=32, epochs=3,
                                 activation="relu")
  done = experiment.RunSpec.make(method="standard", dataset="tiny", depth=2,
                                 hidden=16, batch_size=32, epochs=1,
                                 activation="relu")
  results = str(tmp_path / "runs.jsonl")
  experiment.run_specs([done], results_path=results, progress=False,
                       dataset_loader=lambda name, **kw: tiny)
  save = checkpoint.RunCheckpoint.save

  class Killed(Exception):
    pass

  def dying(self, state, rows):
    save(self, state, rows)
    if len(rows) == 2:
      raise Killed

  mp = pytest.MonkeyPatch()
  mp.setattr(checkpoint.RunCheckpoint, "save", dying)
  try:
    experiment.run_specs([spec], results_path=results, progress=False,
                         dataset_loader=lambda name, **kw: tiny)
  except Exception:  # pylint: disable=broad-except
    pass  # the run is reported failed; its checkpoint holds epoch 2
  finally:
    mp.undo()
  runs = paper_depth.read_runs(results, str(tmp_path / "checkpoints"))
  assert [len(r) for r in runs] == [1, 2]
  assert runs[1][-1]["run_id"] == spec.run_id
  assert runs[0] == report.read_jsonl(results)
  cell = paper_depth.accuracy_cell([runs[1]])
  assert cell == f"e2/3: {runs[1][-1]['test_accuracy']:.3f}"


def test_runs_of_other_settings_are_never_averaged_together():
  full = [_run(accs=(0.5,) * 3), _run(seed=1, accs=(0.6,) * 3)]
  short = _run(epochs=2, accs=(0.1, 0.2))
  short[0]["config"]["max_train"] = 10000
  for r in short:
    r["run_id"] = "short"
  configs = paper_depth.configurations(full + [short])
  assert [c.label for c in configs] == ["alsh B=1 default",
                                        "alsh B=1 default (setting 2)"]
  assert paper_depth.accuracy_cell(configs[0].runs[1]).startswith(
      "0.550 ± 0.071 (n=2)")
  assert paper_depth.accuracy_cell(configs[1].runs[1]) == "0.200"


def test_a_diverged_run_is_finished_and_left_out_of_the_mean():
  diverged = _run(seed=1, accs=(0.3, float("nan")))
  diverged[-1]["diverged"] = True
  configs = paper_depth.configurations([_run(accs=(0.5, 0.6, 0.7)),
                                        diverged])
  assert paper_depth.accuracy_cell(configs[0].runs[1]) == (
      "0.700; diverged at e2")
  # Depths default to those the runs have.
  assert paper_depth.accuracy_table(configs).splitlines()[0].startswith(
      "| configuration | 1 | median seconds per epoch (1) |")



def _plan(**kw):
  args = dict(methods=("alsh", "standard"), networks=("default", "authors"),
              depths=(1, 3), seeds=(0, 1), epochs=3,
              batch_sizes={"alsh": 1, "standard": 1}, dataset="mnist_small",
              hidden=100)
  args.update(kw)
  return paper_depth.Plan(**args)


def test_remaining_lists_unfinished_planned_runs_with_estimates():
  diverged = _run(depth=3, accs=(0.3, float("nan")), seconds=7.0)
  diverged[-1]["diverged"] = True
  other_data = _run(seed=1, seconds=50.0)
  for r in other_data:
    r["dataset"], r["run_id"] = "mnist", "other data"
  subset = _run(seed=1, seconds=50.0)
  for r in subset:
    r["config"]["max_train"], r["run_id"] = 1000, "subset"
  runs = [_run(seconds=3.0), _run(seed=1, accs=(0.4,), seconds=5.0),
          diverged, other_data, subset,
          _run(seed=1, epochs=2, accs=(0.1, 0.2), seconds=50.0),
          _run(depth=3, seed=1, method_config={"alsh_transform":
                                               "sign_alsh"})]  # a variant
  left = paper_depth.remaining(runs, _plan())
  by = {(x.method, x.network, x.depth, x.seed): x for x in left}
  # Finished (or diverged) runs are not left; runs on other data, a subset,
  # another epoch count or a variant do not count towards the plan.
  assert set(by) == {("alsh", "default", 1, 1), ("alsh", "default", 3, 1),
                     ("alsh", "authors", 1, 0), ("alsh", "authors", 1, 1),
                     ("alsh", "authors", 3, 0), ("alsh", "authors", 3, 1)} | {
                         ("standard", n, d, s) for n in ("default", "authors")
                         for d in (1, 3) for s in (0, 1)}
  assert [(x.method, x.network) for x in left][:2] == [("alsh", "default")] * 2
  part = by[("alsh", "default", 1, 1)]
  # Median of the four epochs measured at depth 1 (3, 3, 3, 5): 3.0 (the
  # ignored runs' 50 s epochs would move it); two of three epochs to go.
  assert (part.epochs_done, part.epoch_seconds, part.basis) == (1, 3.0,
                                                                "measured")
  assert part.seconds == 6.0
  assert by[("alsh", "default", 3, 1)].epoch_seconds == 7.0
  # No authors' run at all: the other network's same depth.
  other = by[("alsh", "authors", 3, 0)]
  assert (other.epoch_seconds, other.basis) == (7.0, "other network")
  assert other.seconds == 21.0
  # STANDARD never ran: the other methods at its batch size and depth.
  assert by[("standard", "default", 1, 0)].basis == "other methods"
  assert by[("standard", "default", 1, 0)].epoch_seconds == 3.0


def test_estimates_prefer_the_depth_then_the_network_then_the_method():
  runs = [_run(network=AUTHORS, seconds=4.0), _run(depth=3, seconds=100.0),
          _run(method="standard", network=AUTHORS, depth=3, seconds=9.0)]
  left = paper_depth.remaining(runs, _plan())
  by = {(x.method, x.network, x.depth): x for x in left}
  # mnist_small (784 inputs, 10 classes), width 100: an exact step's
  # multiply-adds per example are 2 * 78,400 + 3 * 1,000 = 159,800 at one
  # hidden layer (the first layer needs no input gradient), plus
  # 3 * 10,000 per further layer: 219,800 at three.
  ratio = 219800 / 159800
  x = by[("alsh", "authors", 3)]
  assert x.basis == "scaled from 1 hidden layer"
  assert x.epoch_seconds == pytest.approx(4.0 * ratio)
  # STANDARD on the default network: its own authors' run comes before
  # ALSH's default-network runs, scaled where the depth differs.
  assert by[("standard", "default", 3)].basis == "other network"
  assert by[("standard", "default", 3)].epoch_seconds == 9.0
  x = by[("standard", "default", 1)]
  assert x.basis == "other network, scaled from 3 hidden layers"
  assert x.epoch_seconds == pytest.approx(9.0 / ratio)
  # Adaptive Dropout never ran, nor anything on its network at its batch
  # size: other methods on the other network.
  x = paper_depth.remaining(runs[:1], _plan(
      methods=("adaptive_dropout",), networks=("default",),
      batch_sizes={"adaptive_dropout": 1}, seeds=(0,)))
  assert [(y.depth, y.basis) for y in x] == [
      (1, "other methods and network"),
      (3, "other methods and network, scaled from 1 hidden layer")]
  assert [y.epoch_seconds for y in x] == pytest.approx([4.0, 4.0 * ratio])
  # Nothing comparable for a batch size never run.
  left = paper_depth.remaining(runs, _plan(methods=("alsh",),
                                           batch_sizes={"alsh": 64}))
  assert {x.basis for x in left} == {"not measured"}
  assert all(x.seconds is None for x in left)


def test_makespan_is_the_longest_first_rule():
  assert paper_depth.makespan([3, 3, 2, 2, 2], 1) == 12
  # Longest first: 3+2+2 | 3+2 = 7 (the best is 6: within 4/3).
  assert paper_depth.makespan([3, 3, 2, 2, 2], 2) == 7
  assert paper_depth.makespan([3, 3, 2, 2, 2], 8) == 3  # the longest run
  assert paper_depth.makespan([], 4) == 0
  with pytest.raises(ValueError, match="slots must be at least 1"):
    paper_depth.makespan([1.0], 0)


def test_the_cost_of_what_is_left_on_one_machine_and_on_several():
  plan = _plan(methods=("alsh",), networks=("default",), depths=(1,))
  runs = [_run(seconds=3600.0, accs=(0.5,))]  # 1 of 3 epochs, 1 h each
  left = paper_depth.remaining(runs, plan)
  assert [x.seconds for x in left] == [7200.0, 10800.0]
  text = paper_depth.remaining_text(left, plan, cores=2)
  assert "**2 runs left** (1 of them part-trained)" in text
  assert "about **5.0 core-hours**." in text
  # Two cores: the runs side by side, so the longer one's 3 hours.
  assert "machines of 2 cores (a cluster's nodes): 3.0 on 1, 3.0 on 2" in text
  assert "the longest run, 3.0 hours (alsh B=1 default, 1 hidden layer)" in text
  assert "| alsh B=1 default | 1 | 0, 1 | 1, 0 | 2.0, 3.0 | measured |" in text
  assert "5.0 on 1," in paper_depth.remaining_text(left, plan, cores=1)
  done = [_run(seed=s, accs=(0.5,) * 3) for s in (0, 1)]
  assert paper_depth.remaining_text(paper_depth.remaining(done, plan), plan,
                                    cores=2).endswith(
                                        "Every run has finished.\n")
  with pytest.raises(ValueError, match="cores must be at least 1"):
    paper_depth.remaining_text(left, plan, cores=0)


def test_the_full_grid_is_the_finished_runs_measured_plus_the_estimate():
  plan = _plan(methods=("alsh",), networks=("default",), depths=(1, 3))
  stopped = _run(depth=3, seconds=10.0, accs=(0.5,) * 3)
  stopped[1]["epoch_seconds"] = 1000.0  # the job was stopped in epoch 2
  diverged = _run(seed=1, seconds=4.0, accs=(0.3, float("nan")))
  diverged[-1]["diverged"] = True
  runs = [_run(seconds=2.0), diverged, stopped,
          _run(seconds=99.0),  # the same planned run again: counted once
          _run(method="standard", seconds=50.0),  # not in the plan
          _run(depth=3, seed=1, seconds=10.0, accs=(0.5,))]  # unfinished
  # Median times epochs: 2 * 3, 4 * 2 (diverged after two), 10 * 3.
  assert paper_depth.finished_seconds(runs, plan) == [6.0, 8.0, 30.0]
  left = paper_depth.remaining(runs, plan)
  assert [x.seconds for x in left] == [20.0]
  text = paper_depth.remaining_text(
      left, plan, cores=1, finished=[3600.0, 7200.0, 3600.0])
  assert ("**The full grid**: the 3 finished runs took 4.0 core-hours"
          in text)
  assert "with the estimate for the runs left, **4.0 core-hours**" in text
  # Two machines of one core: 2 h | 1 h + 1 h (+ 20 s).
  assert "Wall hours, one run per core on machines of 1 core: 4.0 on 1, " \
      "2.0 on 2, 2.0 on 4, 2.0 on 8 machines." in text
  # Without ``finished``, no full-grid line; with every run done, only it.
  assert "full grid" not in paper_depth.remaining_text(left, plan, cores=1)
  text = paper_depth.remaining_text([], plan, cores=2, finished=[7200.0] * 4)
  assert text.endswith("Every run has finished.\n\n**The full grid**: the "
                       "4 finished runs took 8.0 core-hours (each run's "
                       "median seconds per epoch times its epochs, so time "
                       "in which a job was stopped is left out).  Wall "
                       "hours, one run per core on machines of 2 cores: "
                       "4.0 on 1, 2.0 on 2, 2.0 on 4, 2.0 on 8 machines.\n")


def test_runs_that_cannot_be_estimated_are_counted_apart():
  plan = _plan(methods=("alsh",), networks=("default",), depths=(1,),
               batch_sizes={"alsh": 64})
  left = paper_depth.remaining([_run()], plan)
  text = paper_depth.remaining_text(left, plan, cores=2)
  assert "core-hours" not in text
  assert "**2 runs left** (0 of them part-trained).  2 of the runs left " \
      "cannot be estimated yet" in text
  both = _plan(methods=("alsh",), networks=("default",), depths=(1,),
               batch_sizes={"alsh": 1}, seeds=(0, 1, 2))
  runs = [_run(seconds=3600.0, accs=(0.5,) * 3)]
  mixed = paper_depth.remaining(runs, both) + left
  text = paper_depth.remaining_text(mixed, both, cores=1)
  assert "about **6.0 core-hours** for the 2 that can be estimated" in text
  assert "2 of the runs left cannot be estimated yet" in text


def test_the_paper_plan_and_its_errors(tmp_path):
  plan = paper_depth.Plan.paper()
  assert plan.batch_sizes["alsh"] == 1 and plan.batch_sizes["mc"] == 128
  assert (plan.depths, plan.seeds, plan.epochs) == ((1, 3, 5, 7), (0, 1), 50)
  assert (plan.networks, plan.dataset, plan.hidden) == (
      ("authors", "default"), "fashion_mnist", 1000)
  for kw, match in [({"networks": ("wide",)}, "unknown network 'wide'"),
                    ({"methods": ()}, "--plan_methods is empty"),
                    ({"methods": ("nope",)}, "unknown method 'nope'"),
                    ({"seeds": (0, 0)}, r"--plan_seeds repeats \[0\]"),
                    ({"depths": (0, 1)}, "--plan_depths must be at least 1"),
                    ({"epochs": 0}, "--plan_epochs must be at least 1")]:
    with pytest.raises(ValueError, match=match):
      paper_depth.Plan.paper(**kw)
  text = paper_depth.write([_run()], str(tmp_path), plan=_plan(), cores=1)
  assert "What is left:" in text and "**15 runs left**" in text
  assert "**The full grid**: the 1 finished run took 0.00 core-hours" in text
  # Once every planned run has finished, the section is the grid's cost.
  done = [_run(seed=s, accs=(0.5,) * 3) for s in (0, 1)]
  text = paper_depth.write(done, str(tmp_path), cores=2, plan=_plan(
      methods=("alsh",), networks=("default",), depths=(1,)))
  assert "What is left:" not in text
  assert "The grid's cost:\n\nThe planned grid: alsh;" in text
  assert "Every run has finished.\n\n**The full grid**: the 2 finished" in text
  for flag, message in [("--plan_depths=1,x",
                         "--plan_depths takes whole numbers"),
                        ("--cores=0", "--cores must be at least 1")]:
    proc = subprocess.run(
        [sys.executable, "-m", "experiments.paper_depth", flag,
         f"--out_dir={tmp_path / 'out'}"], capture_output=True, text=True,
        check=False, cwd=os.path.dirname(os.path.dirname(__file__)))
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr
    assert not os.path.exists(tmp_path / "out")
