"""The scaling study: slopes and crossovers on hand-made costs, memory
from shapes, widths that do not fit reported as such, and a tiny sweep
that writes its outputs and resumes."""

import json
import math

import pytest

from sampling_mlp import bench, registry
from sampling_mlp.optim import OptimConfig
from sampling_mlp.studies import Runner, scaling


def test_fit_slope_recovers_a_power_law():
  widths = [512, 1024, 2048, 4096]
  slope, intercept = scaling.fit_slope(widths, [3.0 * w ** 1.7 for w in widths])
  assert slope == pytest.approx(1.7)
  assert math.exp(intercept) == pytest.approx(3.0)
  assert scaling.fit_slope([512], [1.0]) is None


def test_crossover_interpolates_on_log_axes():
  got = scaling.crossover([512, 1024], [2.0, 0.5], [1.0, 1.0])
  assert got["kind"] == "crosses"
  assert got["width"] == pytest.approx(math.sqrt(512 * 1024))
  assert scaling.crossover([512, 1024], [0.5, 0.4], [1.0, 1.0]) == {
      "kind": "below_from_start"}


def test_crossover_never_reports_where_the_fitted_lines_would_cross():
  widths = [1.0, 2.0, 4.0]
  method = [8.0 * w for w in widths]      # slope 1
  standard = [w * w for w in widths]      # slope 2: equal at width 8
  got = scaling.crossover(widths, method, standard)
  assert got["kind"] == "never"
  assert got["extrapolated"] == pytest.approx(8.0)
  # A steeper method never crosses, even extrapolated.
  assert scaling.crossover(widths, [2 * w ** 3 for w in widths],
                           standard) == {"kind": "never"}


def test_best_rows_keep_the_fastest_batch_size_per_width():
  rows = [
      {"method": "m", "hidden": 8, "batch_size": 1, "fits": True,
       "us_per_example": 5.0},
      {"method": "m", "hidden": 8, "batch_size": 32, "fits": True,
       "us_per_example": 2.0},
      {"method": "m", "hidden": 16, "batch_size": 1, "fits": False,
       "reason": "needs about 9 GiB"},
      {"method": "m", "hidden": 16, "batch_size": 32, "fits": True,
       "us_per_example": 7.0},
      {"method": "m", "hidden": 32, "batch_size": 1, "fits": False,
       "reason": "x"},
  ]
  best = scaling.best_rows(rows)
  assert best["m", 8]["batch_size"] == 32
  assert best["m", 16]["us_per_example"] == 7.0
  assert best["m", 32]["fits"] is False


def test_state_bytes_from_shapes():
  model = registry.ModelConfig(input_dim=20, num_classes=3, hidden=8,
                               depth=2, activation="relu")
  impl = registry.get("standard").make(model, OptimConfig(), {})
  params, state = bench.state_bytes(impl)
  assert params == 4 * (20 * 8 + 8 + 8 * 8 + 8 + 8 * 3 + 3)
  # Adam: the weights and two moments (and a few scalars).
  assert 3 * params <= state < 3 * params + 1024


def _study(**kw):
  return scaling.Scaling(**dict(dict(
      methods=("standard", "mc"), hidden=(16, 32), depth=1,
      batch_sizes=(1, 4), standard_batch_sizes=(8,), repeats=1), **kw))


def test_a_tiny_sweep_writes_its_outputs_and_resumes(tmp_path, monkeypatch):
  runner = Runner(out_dir=str(tmp_path), progress=False)
  study = _study()
  text = scaling.run(runner, study)
  out = tmp_path / "scaling"
  rows = [json.loads(line) for line in open(out / "timings.jsonl")]
  # standard at 1, 4 and 8; mc at 1 and 4; at two widths.
  assert len(rows) == 2 * (3 + 2)
  assert all(r["fits"] and r["us_per_example"] > 0 for r in rows)
  assert (out / "scaling.png").stat().st_size > 10_000
  assert "| 16 |" in text and "| 32 |" in text
  assert "fitted slope" in text and "| mc |" in text
  # Rerun: everything is in the file, so nothing is timed again.
  monkeypatch.setattr(bench, "time_one",
                      lambda *a, **k: pytest.fail("re-measured"))
  assert scaling.run(runner, study) == text


def test_widths_that_do_not_fit_are_reported_not_crashed_on(tmp_path):
  runner = Runner(out_dir=str(tmp_path), progress=False)
  text = scaling.run(runner, _study(memory_bytes=1, hidden=(16,)))
  assert "does not fit (needs about" in text
  assert "| mc | n/a | never within 16–16 |" in text
  rows = [json.loads(line) for line in
          open(tmp_path / "scaling" / "timings.jsonl")]
  assert rows and not any(r["fits"] for r in rows)
  assert all("GiB available" in r["reason"] for r in rows)
