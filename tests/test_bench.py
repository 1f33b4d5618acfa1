import json
import subprocess
import sys

import pytest

from sampling_mlp import bench, registry
from sampling_mlp.optim import OptimConfig


def _model():
  return registry.ModelConfig(input_dim=12, num_classes=3, hidden=16, depth=2)


def test_time_train_steps_times_each_method():
  std = registry.get("standard").make(_model(), OptimConfig())
  mc = registry.get("mc").make(_model(), OptimConfig())
  secs = bench.time_train_steps([std, mc], batch_size=4, steps_per_call=2,
                                repeats=2, warmup=1)
  assert len(secs) == 2 and all(s > 0 for s in secs)


def test_benchmark_row_is_the_documented_arithmetic():
  mc = registry.get("mc").make(_model(), OptimConfig(),
                               {"mc_sample_input": True, "mc_ratio": 0.25})
  row = bench.benchmark_row(mc, batch_size=4, seconds=0.002,
                            standard_seconds=0.005, peak_gflops=7.0)
  exact = registry.exact_step_flops(_model().sizes, 4)
  assert row["step_ms"] == pytest.approx(2.0)
  assert row["speedup_vs_standard"] == pytest.approx(2.5)
  assert row["flops_fraction"] == pytest.approx(mc.step_flops(4) / exact)
  assert row["gflops"] == pytest.approx(2 * mc.step_flops(4) / 0.002 / 1e9)
  assert row["matmul_peak_gflops"] == 7.0
  assert row["saves_compute"] == mc.saves_compute


def test_step_runner_advances_the_state():
  std = registry.get("standard").make(_model(), OptimConfig())
  call = bench.step_runner(std, batch_size=4, steps_per_call=3)
  first, second = float(call()), float(call())
  assert first > 0 and second > 0 and first != second


def test_sweep_rows_and_log(tmp_path):
  log = str(tmp_path / "b.jsonl")
  rows = list(bench.sweep(
      ["standard", "dropout"], hidden=[16], depths=[1, 2], batch_sizes=[2],
      input_dim=12, num_classes=3, activation="relu", optim=OptimConfig(),
      log_path=log, steps_per_call=2, repeats=2))
  assert [(r["method"], r["depth"]) for r in rows] == [
      ("standard", 1), ("dropout", 1), ("standard", 2), ("dropout", 2)]
  assert rows[1]["config"] == {"keep_prob": 0.05}
  assert len(open(log).read().splitlines()) == 4


def test_matmul_peak_is_positive():
  assert bench.matmul_peak_gflops(batch_size=2, hidden=32, repeats=2) > 0


def test_benchmark_entry_point_prints_json_lines(tmp_path):
  out = subprocess.run(
      [sys.executable, "-m", "experiments.benchmark", "--methods=standard,mc",
       "--hidden=32", "--depth=2", "--batch_size=1,8", "--repeats=2",
       "--steps_per_call=2", f"--out_dir={tmp_path}"],
      capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-2000:]
  rows = [json.loads(l) for l in out.stdout.splitlines() if l.startswith("{")]
  assert [(r["method"], r["batch_size"]) for r in rows] == [
      ("standard", 1), ("mc", 1), ("standard", 8), ("mc", 8)]
  for r in rows:
    for key in ("step_ms", "speedup_vs_standard", "flops_fraction", "gflops",
                "matmul_peak_gflops"):
      assert r[key] > 0
  assert (tmp_path / "benchmark" / "benchmark.jsonl").exists()


def test_benchmark_rejects_unknown_method(tmp_path):
  out = subprocess.run(
      [sys.executable, "-m", "experiments.benchmark", "--methods=slide",
       f"--out_dir={tmp_path}"], capture_output=True, text=True, timeout=120)
  assert out.returncode != 0
  assert "known methods" in out.stderr
