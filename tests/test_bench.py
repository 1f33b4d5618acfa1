import json
import subprocess
import sys

import pytest

from sampling_mlp import bench, registry
from sampling_mlp.optim import OptimConfig


def _model():
  return registry.ModelConfig(input_dim=12, num_classes=3, hidden=16, depth=2)


def test_time_train_steps_and_row_fields():
  std = registry.get("standard").make(_model(), OptimConfig())
  secs = bench.time_train_steps([std, std], batch_size=4, steps_per_call=2,
                                repeats=2, warmup=1)
  assert len(secs) == 2 and all(s > 0 for s in secs)
  row = bench.benchmark_row(std, batch_size=4, seconds=secs[0],
                            standard_seconds=secs[0], peak_gflops=1.0)
  assert row["speedup_vs_standard"] == 1.0
  assert row["flops_fraction"] == 1.0
  assert row["gflops"] > 0


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
