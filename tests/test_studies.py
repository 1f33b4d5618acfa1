"""Tests for the studies package: the grid of runs, where results go, and
the MC batch-size study's reading (the entry points themselves run in
test_experiments.py)."""

import pytest

from sampling_mlp.studies import Grid, Runner, mc_batch_size

SETTINGS = dict(dataset="mnist_small", epochs=1, seed=0, learning_rate=1e-3,
                optimizer="adam", activation="relu", max_train=100,
                max_test=50)


def _grid(**kw):
  base = dict(methods=("standard", "mc"), depths=(1, 3), hidden=(16,),
              batch_sizes=(4, 8), settings=SETTINGS,
              method_values={"mc_ratio": 0.3, "keep_prob": 0.5})
  base.update(kw)
  return Grid(**base)


def test_grid_specs_in_the_order_asked():
  specs = _grid().specs()
  assert [(s.method, s.batch_size, s.depth) for s in specs] == [
      ("standard", 4, 1), ("standard", 4, 3), ("standard", 8, 1),
      ("standard", 8, 3), ("mc", 4, 1), ("mc", 4, 3), ("mc", 8, 1),
      ("mc", 8, 3)]
  specs = _grid().specs(order=("depth", "hidden", "batch_size", "method"))
  assert [(s.depth, s.method) for s in specs[:2]] == [(1, "standard"),
                                                     (1, "mc")]
  # Each run keeps its own method's options only.
  assert dict(specs[1].method_config)["mc_ratio"] == 0.3
  assert "keep_prob" not in dict(specs[1].method_config)
  assert specs[0].method_config == ()


def test_seeds_are_the_innermost_axis():
  grid = _grid(depths=(1,), batch_sizes=(4,), seeds=(0, 1, 2))
  specs = grid.specs()
  assert [(s.method, s.seed) for s in specs] == [
      ("standard", 0), ("standard", 1), ("standard", 2), ("mc", 0),
      ("mc", 1), ("mc", 2)]
  assert len({s.run_id for s in specs}) == 6
  # No seeds: the one seed of the settings, as before.
  assert [s.seed for s in _grid().specs()] == [0] * 8
  five = _grid(settings=dict(SETTINGS, seed=5), depths=(1,),
               batch_sizes=(4,))
  assert [s.seed for s in five.specs()] == [5, 5]
  mc = mc_batch_size.specs(grid, learning_rates=[1e-3], loss_axes=["classes"],
                           reference=True)
  assert [(s.method, s.seed) for s in mc] == [
      ("mc", 0), ("mc", 1), ("mc", 2), ("standard", 0), ("standard", 1),
      ("standard", 2)]


def test_grid_overrides_settings_and_options():
  spec = _grid().spec(method="mc", depth=2, hidden=8, batch_size=1,
                      dataset="fashion_mnist", mc_loss_axis="batch")
  assert spec.dataset == "fashion_mnist" and spec.depth == 2
  assert dict(spec.method_config)["mc_loss_axis"] == "batch"
  with pytest.raises(ValueError, match="--mc_ratio"):
    _grid(method_values={"mc_ratio": 2.0}).specs()


def test_runner_paths(tmp_path):
  runner = Runner(out_dir=str(tmp_path))
  path = runner.path("study", "x.md")
  assert path == str(tmp_path / "study" / "x.md")
  assert (tmp_path / "study").is_dir()
  assert runner.executor.kind == "inline" and runner.failures == []


def test_runner_checkpoints_and_job_logs_under_out_dir(tmp_path):
  runner = Runner(out_dir=str(tmp_path), download=False, progress=False,
                  keep_checkpoints=True)
  grid = _grid(methods=("standard",), depths=(1,), batch_sizes=(32,),
               hidden=(8,))
  (rows,) = runner.run(grid.specs(), "study")
  assert len(rows) == 1 and rows[0]["worker"]["executor"] == "inline"
  assert (tmp_path / "checkpoints" / rows[0]["run_id"]).is_dir()
  assert (tmp_path / "study" / "runs.jsonl").is_file()


def _summary_row(method, batch_size, axis, dev, *, loss=3.0, error=0.5):
  return {"method": method, "depth": 7, "batch_size": batch_size,
          "learning_rate": 1e-3, "loss_axis": axis, "dev_accuracy": dev,
          "max_abs_loss": loss, "final_loss": loss, "mean_error": error,
          "error_by_layer": f"0.00/{error:.2f}/0.00"}


def test_mc_reading_names_the_bug_and_compares_with_standard():
  summary = [_summary_row("mc", 1, "batch", 0.1, loss=0.0, error=0.9),
             _summary_row("mc", 1, "classes", 0.80, error=0.9),
             _summary_row("standard", 1, "classes", 0.83),
             _summary_row("mc", 64, "classes", 0.84, error=0.3),
             _summary_row("mc", 64, "batch", 0.60, error=0.3)]
  lines = mc_batch_size.reading(summary, "fashion_mnist")
  text = "\n".join(lines)
  assert "exactly 0 in every epoch" in text and "no learning" in text
  assert "MC at B=1 learns (within 0.05 of standard)" in text
  assert "0.900 at B=1 vs 0.300 at B=64" in text
  assert ("B=64, batch-axis loss: dev accuracy 0.600, training loss 3.000 "
          "(correct loss: dev accuracy 0.840)") in text
  assert "0.900, is the estimator's at initialisation" in text
  summary[1] = _summary_row("mc", 1, "classes", 0.12)
  assert "MC at B=1 does not learn" in "\n".join(
      mc_batch_size.reading(summary, "fashion_mnist"))


