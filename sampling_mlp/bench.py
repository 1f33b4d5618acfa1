"""Step timing for the benchmark entry point.

A "step" is one full training step: forward, backward and optimizer update.
Steps run the way training runs them, many at a time inside one jitted
``lax.scan`` (distinct random batches), so per-call Python dispatch is
amortised as it is in an epoch; the reported time is the median over calls
of (call time / steps per call), after compilation and warm-up calls, with
the methods' calls interleaved so that they share the machine's load.

Besides the comparison at equal batch size, each method is compared per
example with STANDARD's best configuration: STANDARD is also timed, in the
same interleaved calls, at each of a list of batch sizes, and the best
(smallest) seconds per example over them is the reference.
"""

from __future__ import annotations

import statistics
import time
from typing import Any, Callable, Iterator, Mapping, Sequence

import jax
import jax.numpy as jnp

from sampling_mlp import breakdown as breakdown_lib
from sampling_mlp import registry, report, train
from sampling_mlp.optim import OptimConfig


def interleaved_medians(calls: Sequence[Callable[[], object]], *,
                        repeats: int, warmup: int) -> list[float]:
  """Median seconds of each zero-argument call, timed in alternation so that
  every call sees the same background load on a shared machine."""
  for _ in range(warmup):
    for fn in calls:
      jax.block_until_ready(fn())
  times = [[] for _ in calls]
  for _ in range(repeats):
    for fn, ts in zip(calls, times):
      t0 = time.perf_counter()
      jax.block_until_ready(fn())
      ts.append(time.perf_counter() - t0)
  return [statistics.median(ts) for ts in times]


# The fewest steps --breakdown profiles (see benchmark).
BREAKDOWN_MIN_STEPS = 100


def step_runner(impl: registry.MethodImpl, *, batch_size: int,
                steps_per_call: int = 10, seed: int = 0
                ) -> Callable[[], object]:
  """A compiled zero-argument call running ``steps_per_call`` steps.

  Each call is one ``train.make_epoch_fn`` epoch over ``steps_per_call``
  random batches, so the timed work is the training loop's own.  The
  call's ``compiled`` attribute is the XLA executable.
  """
  model = impl.model
  keys = train.RunKeys(seed)
  state = train.init_state(impl, keys)
  n = steps_per_call * batch_size
  kx, ky = jax.random.split(jax.random.key(seed + 1))
  x = jax.random.normal(kx, (n, model.input_dim))
  y = jax.random.randint(ky, (n,), 0, model.num_classes)
  perm = jnp.arange(n)
  epoch = train.make_epoch_fn(impl, batch_size=batch_size,
                              num_batches=steps_per_call)
  compiled = epoch.lower(state, x, y, perm, keys.train).compile()
  holder = [state]

  def call():
    holder[0], metrics = compiled(holder[0], x, y, perm, keys.train)
    return metrics["loss"]

  call.compiled = compiled
  return call


def pick_steps_per_call(impl: registry.MethodImpl, *, batch_size: int,
                        seed: int = 0, target_call_seconds: float = 0.2
                        ) -> int:
  """Steps per call for a call of ``impl`` to last about
  ``target_call_seconds`` (2 to 500), estimated from a short timed call."""
  probe = step_runner(impl, batch_size=batch_size, steps_per_call=2,
                      seed=seed)
  jax.block_until_ready(probe())
  per_step = interleaved_medians([probe], repeats=3, warmup=0)[0] / 2
  return int(min(500, max(2, target_call_seconds / max(per_step, 1e-9))))


def time_one(impl: registry.MethodImpl, *, batch_size: int,
             repeats: int = 3, warmup: int = 1, seed: int = 0,
             target_call_seconds: float = 0.2) -> float:
  """Median seconds per training step of one method alone, for shapes too
  large to keep several methods' states in memory at once.

  A call of one step, timed after an untimed one, sets the steps per call
  (enough for about ``target_call_seconds``, 1 to 500); then ``warmup``
  untimed and ``repeats`` timed calls of :func:`step_runner`.
  """
  probe = step_runner(impl, batch_size=batch_size, steps_per_call=1,
                      seed=seed)
  jax.block_until_ready(probe())
  t0 = time.perf_counter()
  jax.block_until_ready(probe())
  per_step = time.perf_counter() - t0
  del probe
  steps = int(min(500, max(1, target_call_seconds / max(per_step, 1e-9))))
  call = step_runner(impl, batch_size=batch_size, steps_per_call=steps,
                     seed=seed)
  return interleaved_medians([call], repeats=repeats,
                             warmup=warmup)[0] / steps


def state_bytes(impl: registry.MethodImpl) -> tuple[int, int]:
  """``(parameter bytes, training-state bytes)`` of ``impl``'s state,
  computed from shapes alone (nothing is allocated): the weights and
  biases, and everything the state holds (weights, optimizer moments,
  the method's own arrays such as hash tables)."""
  shapes = jax.eval_shape(lambda: train.init_state(impl, train.RunKeys(0)))
  total = sum(leaf.size * leaf.dtype.itemsize
              for leaf in jax.tree.leaves(shapes)
              if hasattr(leaf, "dtype")
              and not jax.dtypes.issubdtype(leaf.dtype,
                                            jax.dtypes.prng_key))
  sizes = impl.model.sizes
  params = sum((a * b + b) * 4 for a, b in zip(sizes[:-1], sizes[1:]))
  return params, int(total)


def time_train_steps(impls: Sequence[registry.MethodImpl], *,
                     batch_size: int | Sequence[int], steps_per_call: int = 0,
                     repeats: int = 7, warmup: int = 2,
                     seed: int = 0, target_call_seconds: float = 0.2
                     ) -> list[float]:
  """Median seconds per training step of each method, timed interleaved.

  Args:
    impls: the methods, all of one model shape; a method may be listed more
      than once (at different batch sizes).
    batch_size: examples per step: one for every method, or a sequence, one
      per entry of ``impls``.
    steps_per_call: steps per timed jitted call; 0 picks, per entry, enough
      steps for a call to last about ``target_call_seconds`` (at most 500,
      :func:`pick_steps_per_call`), so that per-call dispatch is negligible
      as it is in training, where an epoch is one call.
    repeats, warmup: timed and untimed calls per entry.
    seed: for the initial state and the random batches.
    target_call_seconds: see ``steps_per_call``.

  Returns:
    Seconds per step, one per entry of ``impls``.
  """
  sizes = ([batch_size] * len(impls) if isinstance(batch_size, int)
           else list(batch_size))
  if len(sizes) != len(impls):
    raise ValueError(f"{len(sizes)} batch sizes for {len(impls)} methods")
  counts = [steps_per_call if steps_per_call > 0 else pick_steps_per_call(
      impl, batch_size=b, seed=seed, target_call_seconds=target_call_seconds)
            for impl, b in zip(impls, sizes)]
  calls = [step_runner(impl, batch_size=b, steps_per_call=n, seed=seed)
           for impl, b, n in zip(impls, sizes, counts)]
  return [t / n for t, n in zip(
      interleaved_medians(calls, repeats=repeats, warmup=warmup), counts)]


def matmul_peak_gflops(*, batch_size: int, hidden: int, repeats: int = 7,
                       seed: int = 0) -> float:
  """Achieved GFLOP/s of a plain ``jnp.dot`` [B, hidden] @ [hidden, hidden]."""
  ka, kb = jax.random.split(jax.random.key(seed))
  a = jax.random.normal(ka, (batch_size, hidden))
  b = jax.random.normal(kb, (hidden, hidden))
  dot = jax.jit(jnp.dot)
  # About 0.2 GMAC per timed call, in at most 100 dispatches.
  reps = max(1, min(100, int(2e8 // (batch_size * hidden * hidden))))

  def call():
    out = None
    for _ in range(reps):
      out = dot(a, b)
    return out

  seconds = interleaved_medians([call], repeats=repeats, warmup=2)[0] / reps
  return 2.0 * batch_size * hidden * hidden / seconds / 1e9


def best_standard(standard_seconds: Mapping[int, float]
                  ) -> tuple[int, float]:
  """STANDARD's best configuration from its seconds per step at each batch
  size, ``{batch size: seconds}``: the batch size with the smallest seconds
  per example (seconds / batch size; on a tie the smallest batch size), and
  those seconds per example."""
  if not standard_seconds:
    raise ValueError("no STANDARD timings")
  best = min(standard_seconds,
             key=lambda b: (standard_seconds[b] / b, b))
  return best, standard_seconds[best] / best


def benchmark_row(impl: registry.MethodImpl, *, batch_size: int,
                  seconds: float, standard_seconds: float,
                  peak_gflops: float,
                  standard_batch_seconds: Mapping[int, float] | None = None
                  ) -> dict:
  """One output line of the benchmark for ``impl`` (times in seconds).

  Args:
    impl: the method.
    batch_size: examples per step.
    seconds: the method's seconds per step.
    standard_seconds: STANDARD's seconds per step at ``batch_size``.
    peak_gflops: :func:`matmul_peak_gflops` at ``batch_size``.
    standard_batch_seconds: STANDARD's seconds per step at each of its
      reference batch sizes, ``{batch size: seconds}``; None or empty omits
      ``vs_best_standard``, ``best_standard_batch_size`` and
      ``best_standard_us_per_example``.

  Returns:
    ``step_ms``; ``examples_per_second`` (batch_size / seconds);
    ``us_per_example`` (seconds / batch_size, in microseconds);
    ``speedup_vs_standard`` (standard_seconds / seconds); with
    ``standard_batch_seconds``: ``best_standard_batch_size`` and
    ``best_standard_us_per_example`` (:func:`best_standard`) and
    ``vs_best_standard`` (best_standard_us_per_example / us_per_example,
    > 1: the method is faster per example than STANDARD at its best);
    ``flops_fraction``, ``traffic_fraction`` (where the method counts its
    traffic), ``gflops``, ``matmul_peak_gflops``, ``saves_compute``.
  """
  flops = impl.step_flops(batch_size)
  exact = impl.exact_flops(batch_size)
  traffic = impl.step_traffic(batch_size)
  per_example = seconds / batch_size
  row = {
      "step_ms": seconds * 1e3,
      "examples_per_second": batch_size / seconds,
      "us_per_example": per_example * 1e6,
      "speedup_vs_standard": standard_seconds / seconds,
  }
  if standard_batch_seconds:
    best_batch, best = best_standard(standard_batch_seconds)
    row.update({
        "vs_best_standard": best / per_example,
        "best_standard_batch_size": best_batch,
        "best_standard_us_per_example": best * 1e6,
    })
  row["flops_fraction"] = flops / exact
  if traffic is not None:
    row["traffic_fraction"] = traffic / registry.exact_step_traffic(
        impl.model.sizes, batch_size, impl.optim.name)
  row.update({
      "gflops": 2.0 * flops / seconds / 1e9,
      "matmul_peak_gflops": peak_gflops,
      "saves_compute": impl.saves_compute,
  })
  return row


def benchmark_runs(methods: Sequence[str], batch_sizes: Sequence[int],
                   standard_batch_sizes: Sequence[int] = ()
                   ) -> list[tuple[str, int]]:
  """The (method, batch size) pairs one shape's benchmark times: for each
  batch size, ``standard`` then the other methods, then ``standard`` at each
  of ``standard_batch_sizes``; each pair once, in first-listed order."""
  others = [m for m in methods if m != "standard"]
  runs = [(m, b) for b in batch_sizes for m in ["standard"] + others]
  runs += [("standard", b) for b in standard_batch_sizes]
  return list(dict.fromkeys(runs))


def benchmark(methods: Sequence[str], *, model: registry.ModelConfig,
              batch_sizes: Sequence[int], optim: OptimConfig,
              method_values: Mapping[str, Any] | None = None,
              standard_batch_sizes: Sequence[int] = (),
              breakdown: bool = False, **timing) -> list[dict]:
  """Times ``standard`` and every method of ``methods`` for one shape.

  Every (method, batch size) of :func:`benchmark_runs` is timed in one
  :func:`time_train_steps` call, all interleaved, so that the methods at
  each of ``batch_sizes``, ``standard`` at the same batch sizes and
  ``standard`` at each of ``standard_batch_sizes`` share the machine's
  load; ``standard`` at a batch size is timed once, and its timings at
  ``standard_batch_sizes`` are the reference of every row.

  Args:
    methods: registered method names (``standard`` is always timed, as the
      reference, and reported if listed).
    model: the MLP's shape.
    batch_sizes: examples per step; rows for each.
    optim: the optimizer.
    method_values: option values, ``{flag: value}``.
    standard_batch_sizes: batch sizes at which ``standard`` is also timed,
      for ``vs_best_standard`` (:func:`benchmark_row`); empty: no such
      comparison.
    breakdown: also profile each listed method's step and add
      ``breakdown_ms``, milliseconds per step by part
      (:func:`sampling_mlp.breakdown.step_breakdown`; profiled calls run
      after the timed ones and are not part of ``step_ms``, and run at
      least ``BREAKDOWN_MIN_STEPS`` steps, so that work done every 100
      steps gets its share).
    **timing: passed to :func:`time_train_steps`.

  Returns:
    One row per (batch size, listed method), by batch size: its identity,
    :func:`benchmark_row`'s fields and its options (``config``).
  """
  peaks = {b: matmul_peak_gflops(batch_size=b, hidden=model.hidden)
           for b in dict.fromkeys(batch_sizes)}
  runs = benchmark_runs(methods, batch_sizes, standard_batch_sizes)
  impls = {m: registry.get(m).make(model, optim, method_values)
           for m in dict.fromkeys(m for m, _ in runs)}
  seconds = dict(zip(runs, time_train_steps(
      [impls[m] for m, _ in runs], batch_size=[b for _, b in runs],
      **timing)))
  reference = {b: seconds["standard", b] for b in standard_batch_sizes}
  rows = []
  for batch_size in batch_sizes:
    for method in methods:
      impl = impls[method]
      row = {"method": method, "hidden": model.hidden, "depth": model.depth,
             "batch_size": batch_size}
      if hasattr(model, "arch"):  # a CNN (sampling_mlp.cnn.CNNConfig)
        row = dict(model=model.arch, cnn_width=model.width,
                   image_shape=list(model.image_shape), **row)
      row.update(benchmark_row(
          impl, batch_size=batch_size, seconds=seconds[method, batch_size],
          standard_seconds=seconds["standard", batch_size],
          peak_gflops=peaks[batch_size], standard_batch_seconds=reference))
      if breakdown:
        # As many steps as a timed call runs, so that grouped steps
        # (steps_per_call) are profiled as they are timed, and at least
        # BREAKDOWN_MIN_STEPS, so that periodic work (the paper's table
        # rebuild every 100 steps) gets its share.
        steps = max(BREAKDOWN_MIN_STEPS, timing.get("steps_per_call") or
                    pick_steps_per_call(impl, batch_size=batch_size,
                                        seed=timing.get("seed", 0)))
        row["breakdown_ms"] = breakdown_lib.step_breakdown(
            step_runner(impl, batch_size=batch_size, steps_per_call=steps,
                        seed=timing.get("seed", 0)), steps=steps)
      row["config"] = impl.config.flags()
      rows.append(row)
  return rows


def sweep(methods: Sequence[str], *, hidden: Sequence[int],
          depths: Sequence[int], batch_sizes: Sequence[int], input_dim: int,
          num_classes: int, activation: str, optim: OptimConfig,
          method_values: Mapping[str, Any] | None = None,
          standard_batch_sizes: Sequence[int] = (),
          log_path: str | None = None, breakdown: bool = False,
          model_config: Callable[..., Any] | None = None,
          network: Mapping[str, bool] | None = None,
          **timing) -> Iterator[dict]:
  """:func:`benchmark` of every (hidden, depth), one shape at a time, at
  every batch size (STANDARD's reference at ``standard_batch_sizes`` timed
  once per shape), each row also appended to the JSON-lines file
  ``log_path``.  ``model_config(hidden=, depth=)`` gives another model's
  config (a CNN's, ``sampling_mlp.cnn.CNNConfig``) in place of the MLP's
  ``registry.ModelConfig``; ``network`` the MLP's ``bias`` and
  ``weight_norm`` (default: this project's network, with biases and no
  weight normalisation)."""
  log = None if log_path is None else report.ResultsLog(log_path)
  for width in hidden:
    for depth in depths:
      if model_config is not None:
        model = model_config(hidden=width, depth=depth)
      else:
        model = registry.ModelConfig(input_dim=input_dim,
                                     num_classes=num_classes, hidden=width,
                                     depth=depth, activation=activation,
                                     **(network or {}))
      for row in benchmark(methods, model=model, batch_sizes=batch_sizes,
                           optim=optim, method_values=method_values,
                           standard_batch_sizes=standard_batch_sizes,
                           breakdown=breakdown, **timing):
        if model_config is None:
          row = dict(row, bias=model.bias, weight_norm=model.weight_norm)
        if log is not None:
          log.append(dict(row, run_id="benchmark"))
        yield row
