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


def test_per_example_fields_are_the_documented_arithmetic():
  std = registry.get("standard").make(_model(), OptimConfig())
  mc = registry.get("mc").make(_model(), OptimConfig(), {"mc_ratio": 0.25})
  # STANDARD per example: 1 -> 100 us, 4 -> 50 us, 8 -> 40 us (the best).
  reference = {1: 100e-6, 4: 200e-6, 8: 320e-6}
  assert bench.best_standard(reference) == (8, pytest.approx(40e-6))
  row = bench.benchmark_row(mc, batch_size=4, seconds=80e-6,
                            standard_seconds=200e-6, peak_gflops=1.0,
                            standard_batch_seconds=reference)
  assert row["examples_per_second"] == pytest.approx(4 / 80e-6)
  assert row["us_per_example"] == pytest.approx(20.0)
  assert row["speedup_vs_standard"] == pytest.approx(2.5)
  assert row["best_standard_batch_size"] == 8
  assert row["best_standard_us_per_example"] == pytest.approx(40.0)
  assert row["vs_best_standard"] == pytest.approx(2.0)
  # STANDARD's own line: 1 at its best batch size, below 1 elsewhere.
  at_best = bench.benchmark_row(std, batch_size=8, seconds=320e-6,
                                standard_seconds=320e-6, peak_gflops=1.0,
                                standard_batch_seconds=reference)
  assert at_best["vs_best_standard"] == 1.0
  assert at_best["speedup_vs_standard"] == 1.0
  at_one = bench.benchmark_row(std, batch_size=1, seconds=100e-6,
                               standard_seconds=100e-6, peak_gflops=1.0,
                               standard_batch_seconds=reference)
  assert at_one["vs_best_standard"] == pytest.approx(0.4)


def test_best_standard_breaks_ties_by_the_smaller_batch():
  assert bench.best_standard({4: 8.0, 2: 4.0, 8: 20.0}) == (2, 2.0)
  with pytest.raises(ValueError):
    bench.best_standard({})


def test_no_reference_omits_the_best_standard_fields():
  mc = registry.get("mc").make(_model(), OptimConfig())
  for reference in (None, {}):
    row = bench.benchmark_row(mc, batch_size=4, seconds=1e-3,
                              standard_seconds=2e-3, peak_gflops=1.0,
                              standard_batch_seconds=reference)
    assert not {"vs_best_standard", "best_standard_batch_size",
                "best_standard_us_per_example"} & set(row)
    assert row["us_per_example"] == pytest.approx(250.0)
    assert row["examples_per_second"] == pytest.approx(4000.0)


def test_benchmark_runs_time_standard_once_per_batch_size():
  runs = bench.benchmark_runs(["mc", "standard", "dropout"], [4, 8], [1, 4])
  assert runs == [("standard", 4), ("mc", 4), ("dropout", 4),
                  ("standard", 8), ("mc", 8), ("dropout", 8),
                  ("standard", 1)]
  assert bench.benchmark_runs(["mc"], [2], []) == [("standard", 2),
                                                   ("mc", 2)]


def test_time_train_steps_takes_a_batch_size_per_method():
  std = registry.get("standard").make(_model(), OptimConfig())
  secs = bench.time_train_steps([std, std], batch_size=[1, 4],
                                steps_per_call=2, repeats=2, warmup=1)
  assert len(secs) == 2 and all(s > 0 for s in secs)
  with pytest.raises(ValueError):
    bench.time_train_steps([std], batch_size=[1, 4], steps_per_call=2)


def test_sweep_times_standard_once_per_shape(monkeypatch):
  """STANDARD's reference batch sizes are timed once per (hidden, depth),
  together with every requested batch size, and shared by its rows."""
  built = []
  runner = bench.step_runner
  standard_type = type(registry.get("standard").make(_model(), OptimConfig()))

  def counting(impl, *, batch_size, **kwargs):
    built.append((type(impl) is standard_type, impl.model.depth, batch_size))
    return runner(impl, batch_size=batch_size, **kwargs)

  monkeypatch.setattr(bench, "step_runner", counting)
  rows = list(bench.sweep(
      ["standard", "mc"], hidden=[16], depths=[1, 2], batch_sizes=[2, 4],
      input_dim=12, num_classes=3, activation="relu", optim=OptimConfig(),
      standard_batch_sizes=[1, 4], steps_per_call=2, repeats=2, warmup=1))
  standard = [(d, b) for is_std, d, b in built if is_std]
  assert sorted(standard) == [(1, 1), (1, 2), (1, 4), (2, 1), (2, 2), (2, 4)]
  assert sorted((d, b) for is_std, d, b in built if not is_std) == [
      (1, 2), (1, 4), (2, 2), (2, 4)]
  assert [(r["method"], r["depth"], r["batch_size"]) for r in rows] == [
      ("standard", 1, 2), ("mc", 1, 2), ("standard", 1, 4), ("mc", 1, 4),
      ("standard", 2, 2), ("mc", 2, 2), ("standard", 2, 4), ("mc", 2, 4)]
  for depth in (1, 2):
    shape = [r for r in rows if r["depth"] == depth]
    # One reference per shape, whatever the row's batch size.
    assert len({(r["best_standard_batch_size"],
                 r["best_standard_us_per_example"]) for r in shape}) == 1
    assert shape[0]["best_standard_batch_size"] in (1, 4)
    for r in shape:
      assert r["vs_best_standard"] == pytest.approx(
          r["best_standard_us_per_example"] / r["us_per_example"])
    # STANDARD at 4 is the same timing as its reference at 4.
    std4 = next(r for r in shape
                if r["method"] == "standard" and r["batch_size"] == 4)
    assert std4["vs_best_standard"] <= 1.0
    if shape[0]["best_standard_batch_size"] == 4:
      assert std4["vs_best_standard"] == 1.0


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


def test_sweep_times_the_network_it_is_given(monkeypatch):
  models = []
  timed = bench.benchmark

  def spy(methods, *, model, **kw):
    models.append(model)
    return timed(methods, model=model, **kw)

  monkeypatch.setattr(bench, "benchmark", spy)
  rows = list(bench.sweep(
      ["standard", "alsh"], hidden=[16], depths=[2], batch_sizes=[1],
      input_dim=12, num_classes=3, activation="relu", optim=OptimConfig(),
      network=registry.AUTHORS_NETWORK, steps_per_call=2, repeats=2))
  assert [(m.bias, m.weight_norm) for m in models] == [(False, True)]
  assert [(r["bias"], r["weight_norm"]) for r in rows] == [(False, True)] * 2
  # Without one, the default network, stated on every line.
  rows = list(bench.sweep(
      ["standard"], hidden=[16], depths=[1], batch_sizes=[2], input_dim=12,
      num_classes=3, activation="relu", optim=OptimConfig(), steps_per_call=2,
      repeats=2))
  assert (rows[0]["bias"], rows[0]["weight_norm"]) == (True, False)


def test_matmul_peak_is_positive():
  assert bench.matmul_peak_gflops(batch_size=2, hidden=32, repeats=2) > 0


def test_benchmark_entry_point_prints_json_lines(tmp_path):
  out = subprocess.run(
      [sys.executable, "-m", "experiments.benchmark", "--methods=standard,mc",
       "--hidden=32", "--depth=2", "--batch_size=1,8", "--repeats=2",
       "--steps_per_call=2", "--breakdown", "--standard_batch_sizes=1,4",
       f"--out_dir={tmp_path}"],
      capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-2000:]
  rows = [json.loads(l) for l in out.stdout.splitlines() if l.startswith("{")]
  assert [(r["method"], r["batch_size"]) for r in rows] == [
      ("standard", 1), ("mc", 1), ("standard", 8), ("mc", 8)]
  for r in rows:
    for key in ("step_ms", "speedup_vs_standard", "flops_fraction", "gflops",
                "matmul_peak_gflops", "traffic_fraction",
                "examples_per_second", "us_per_example", "vs_best_standard",
                "best_standard_us_per_example"):
      assert r[key] > 0
    assert r["examples_per_second"] == pytest.approx(
        r["batch_size"] / (r["step_ms"] / 1e3))
    assert r["us_per_example"] == pytest.approx(
        r["step_ms"] * 1e3 / r["batch_size"])
    assert r["vs_best_standard"] == pytest.approx(
        r["best_standard_us_per_example"] / r["us_per_example"])
    assert r["best_standard_batch_size"] in (1, 4)
    assert "update" in r["breakdown_ms"], r["breakdown_ms"]
  # One reference for the shape: the same on every line.
  assert len({(r["best_standard_batch_size"],
               r["best_standard_us_per_example"]) for r in rows}) == 1
  # STANDARD at batch size 1 is its reference timing at 1.
  assert rows[0]["vs_best_standard"] <= 1.0
  assert (tmp_path / "benchmark" / "benchmark.jsonl").exists()


def test_benchmark_entry_point_empty_standard_batch_sizes(tmp_path):
  out = subprocess.run(
      [sys.executable, "-m", "experiments.benchmark", "--methods=mc",
       "--hidden=16", "--depth=1", "--batch_size=2", "--repeats=2",
       "--steps_per_call=2", "--standard_batch_sizes=",
       f"--out_dir={tmp_path}"],
      capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-2000:]
  (row,) = [json.loads(l) for l in out.stdout.splitlines()
            if l.startswith("{")]
  assert row["method"] == "mc" and row["examples_per_second"] > 0
  assert not {"vs_best_standard", "best_standard_batch_size",
              "best_standard_us_per_example"} & set(row)


def test_benchmark_rejects_unknown_method(tmp_path):
  out = subprocess.run(
      [sys.executable, "-m", "experiments.benchmark", "--methods=slide",
       f"--out_dir={tmp_path}"], capture_output=True, text=True, timeout=120)
  assert out.returncode != 0
  assert "known methods" in out.stderr


def test_default_traffic_only_for_exact_products():
  """A method that counts its own products must count its own traffic:
  the default is the exact step's only where step_flops is the default."""
  model = _model()
  std = registry.get("standard").make(model, OptimConfig())
  assert std.step_traffic(8) == registry.exact_step_traffic(model.sizes, 8,
                                                            "adam")
  assert registry.get("alsh").make(model, OptimConfig()).step_traffic(8) \
      is None
  row = bench.benchmark_row(std, batch_size=8, seconds=1.0,
                            standard_seconds=1.0, peak_gflops=1.0)
  assert row["traffic_fraction"] == 1.0


def test_part_of_reads_the_name_stack():
  from sampling_mlp.breakdown import part_of  # pylint: disable=import-outside-toplevel
  assert part_of("jit(epoch)/while/body/closed_call/jvp(draw)/top_k") == "draw"
  assert part_of("jit(f)/transpose(jvp(product))/dot_general") == "product"
  # The innermost scope wins; the primitive's own name is not a scope.
  assert part_of("jit(f)/update/native/custom_call") == "native"
  assert part_of("jit(epoch)/while/body/gather") == "other"
  assert part_of("jit(f)/transpose(jvp(closed_call))/dot_general") == \
      "backward"
  assert part_of("jit(f)/jvp(closed_call)/dot_general") == "forward"
  assert part_of("") == "other"


def test_breakdown_of_a_sampled_step():
  """The profile of an MC step charges time to its marked parts, and
  every part of the breakdown is a non-negative time."""
  from sampling_mlp import breakdown  # pylint: disable=import-outside-toplevel
  impl = registry.get("mc").make(_model(), OptimConfig(),
                                 {"mc_ratio": 0.25, "mc_kernel": "xla"})
  call = bench.step_runner(impl, batch_size=8, steps_per_call=3)
  parts = breakdown.op_parts(call.compiled.as_text())
  assert {"draw", "product", "update"} <= set(parts.values())
  out = breakdown.step_breakdown(call, steps=3)
  assert {"draw", "product", "update", "unattributed"} <= set(out)
  assert all(v >= 0 for v in out.values())
  assert out["update"] > 0 and out["product"] > 0


def test_split_native_by_timed_phases():
  """One thread: each phase keeps its time and the rest is native.other;
  several threads (phases summing past the kernel's time): shares of it."""
  from sampling_mlp.breakdown import split_native  # pylint: disable=import-outside-toplevel
  one = split_native(10.0, [{"hash": 0.002, "update": 0.006}, {}])
  assert one == pytest.approx({"native.hash": 2.0, "native.update": 6.0,
                               "native.other": 2.0})
  two = split_native(10.0, [{"hash": 0.005, "update": 0.015}])
  assert two == pytest.approx({"native.hash": 2.5, "native.update": 7.5})
  assert split_native(3.0, [{}, {"hash": 0.0}]) == {"native": 3.0}


def test_breakdown_splits_alsh_native_step():
  """ALSH's native step times its phases: the breakdown shows hash, select,
  forward and update inside the kernel (and the incremental schedule's
  rehash, only under it), and they add up to no more than the profiled
  step."""
  from sampling_mlp import breakdown  # pylint: disable=import-outside-toplevel
  from sampling_mlp.methods.alsh import native  # pylint: disable=import-outside-toplevel
  if not native.status().ok:
    pytest.skip(f"native kernels unavailable: {native.status().reason}")
  assert native.LIBRARY.phases() == ("hash", "select", "forward",
                                     "backward", "update", "rehash")
  impl = registry.get("alsh").make(_model(), OptimConfig(),
                                   {"alsh_threads": 1})
  call = bench.step_runner(impl, batch_size=1, steps_per_call=20)
  out = breakdown.step_breakdown(call, steps=20)
  assert "native" not in out
  for phase in ("hash", "select", "forward", "update"):
    assert out[f"native.{phase}"] > 0, out
  assert out.get("native.rehash", 0) == 0
  assert all(v >= 0 for v in out.values())
  inc = registry.get("alsh").make(_model(), OptimConfig(),
                                  {"alsh_threads": 1,
                                   "alsh_rebuild": "incremental"})
  out = breakdown.step_breakdown(
      bench.step_runner(inc, batch_size=1, steps_per_call=20), steps=20)
  assert out["native.rehash"] > 0 and "rebuild" not in out, out
  # Nothing runs, nothing is timed.
  with native.LIBRARY.profiling() as timed:
    pass
  assert set(timed) == set(native.LIBRARY.phases())
  assert all(v == 0 for v in timed.values())
