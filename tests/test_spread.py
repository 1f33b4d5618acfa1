"""Tests for spread.py and the tables' seed cells: means and standard
deviations over seeds, diverged runs left out, one seed unchanged."""

import math
import statistics

import pytest

from sampling_mlp import report, spread


def _run(seed, acc, *, method="standard", epochs=2, diverged=False, secs=1.0):
  config = {"method": method, "depth": 1, "seed": seed}
  rows = []
  for e in range(1, epochs + 1):
    last = e == epochs
    rows.append({"run_id": f"{method}{seed}", "method": method,
                 "dataset": "d", "depth": 1, "hidden": 8, "batch_size": 4,
                 "seed": seed, "epoch": e,
                 "train_loss": math.nan if diverged and last else 1.0 / e,
                 "dev_accuracy": acc * e / epochs,
                 "test_accuracy": acc * e / epochs,
                 "epoch_seconds": secs, "cumulative_seconds": secs * e,
                 "diverged": diverged and last, "config": config})
  return rows


def test_over_seeds_means_stds_and_counts():
  runs = [_run(0, 0.8), _run(1, 0.9), _run(2, 0.7), _run(0, 0.5, method="mc")]
  summary = report.summary_rows(runs)
  assert [r["method"] for r in summary] == ["standard", "mc"]
  std = summary[0]
  assert std["seeds"] == 3 and std["seed_list"] == [0, 1, 2]
  assert std["test_accuracy"] == pytest.approx(0.8)
  assert std["test_accuracy_std"] == pytest.approx(
      statistics.stdev([0.8, 0.9, 0.7]))
  assert std["epochs"] == 2 and "epochs_std" not in std  # equal: kept
  assert std["diverged"] == 0
  # One seed: the run's own row, no spread.
  mc = summary[1]
  assert mc["seeds"] == 1 and mc["seed"] == 0
  assert not any(k.endswith("_std") for k in mc)
  assert mc["test_accuracy"] == 0.5


def test_diverged_seeds_are_left_out_and_counted():
  runs = [_run(0, 0.8), _run(1, 0.6), _run(2, 0.1, diverged=True)]
  (row,) = report.summary_rows(runs)
  assert row["seeds"] == 3 and row["diverged"] == 1
  assert row["test_accuracy"] == pytest.approx(0.7)
  assert report.cell(row, "seeds") == "3 (1 diverged)"
  (alone,) = report.summary_rows([_run(0, 0.1, diverged=True)])
  assert report.cell(alone, "test_accuracy") == "diverged"
  assert report.cell(alone, "total_seconds") == "2.0000"
  (every,) = report.summary_rows([_run(0, 0.1, diverged=True),
                                  _run(1, 0.1, diverged=True)])
  assert report.cell(every, "test_accuracy") == "diverged"


def test_cells_and_seed_column():
  row = {"a": 0.81234, "a_std": 0.0123, "b": 12.345, "c": math.nan, "n": 3}
  assert report.cell(row, "a") == "0.8123 ± 0.0123"
  assert report.cell(row, "b") == "12.3"
  assert report.cell(row, "c") == "n/a"
  cols = (("method", "m"), ("epochs", "e"), ("test_accuracy", "acc"))
  assert report.seed_columns(cols, [{"seeds": 1}]) == cols
  assert [k for k, _ in report.seed_columns(cols, [{"seeds": 2}])] == [
      "method", "epochs", "seeds", "test_accuracy"]
  table = report.markdown_table(
      report.summary_rows([_run(0, 0.8), _run(1, 0.9)]),
      report.seed_columns(report.SUMMARY_COLUMNS, [{"seeds": 2}]))
  assert "| 2 | 0.8500 ± 0.0707 |" in table


def test_one_seed_tables_look_as_before():
  runs = [_run(0, 0.8), _run(0, 0.5, method="mc")]
  per_run = report.final_rows(runs)
  summary = report.summary_rows(runs)
  cols = report.seed_columns(report.SUMMARY_COLUMNS, summary)
  assert cols == report.SUMMARY_COLUMNS
  assert (report.markdown_table(summary, cols)
          == report.markdown_table(per_run, cols))


def test_epoch_stats_and_lines_over_seeds():
  runs = [_run(0, 0.8), _run(1, 0.6, diverged=True), _run(2, 0.4)]
  (group,) = spread.group_runs(runs)
  epochs, mean, std = spread.epoch_stats(group, "test_accuracy")
  assert epochs == [1, 2]
  # Epoch 2 of seed 1 diverged: it counts for no mean.
  assert mean == pytest.approx([0.3, 0.6])
  assert std[1] == pytest.approx(statistics.stdev([0.8, 0.4]))
  (line,) = report.epoch_lines(runs, "test_accuracy")
  assert line.y == mean and line.spread == std
  rows = report.per_epoch_summary(runs, ["method", "epoch", "test_accuracy"])
  assert [(r["epoch"], r["seeds"]) for r in rows] == [(1, 3), (2, 3)]
  _, _, alone = spread.epoch_stats([runs[0]], "test_accuracy")
  assert alone is None


def test_combine_lists_elementwise():
  mean, std = spread.combine([[1.0, 2.0], [3.0, 4.0]])
  assert mean == [2.0, 3.0] and std == pytest.approx([1.4142, 1.4142],
                                                     rel=1e-4)
  assert spread.combine(["a", "b"]) == (None, None)
  assert spread.combine([None, None]) == (None, None)


def test_plots_draw_spread(tmp_path):
  runs = [_run(0, 0.8), _run(1, 0.9), _run(0, 0.5, method="mc")]
  report.plot_depth(report.final_rows(runs), str(tmp_path / "d.png"))
  report.plot_per_epoch(runs, str(tmp_path / "t.png"))
  report.plot_grouped_bars(str(tmp_path / "g.png"), categories=["a"],
                           panels=[("t", "y", False, {"s": [0.8]},
                                    {"s": [0.05]})])
  for name in ("d.png", "t.png", "g.png"):
    assert (tmp_path / name).stat().st_size > 0
