"""Where the cost curves cross: per-example training cost against width.

For every method and hidden width (at a fixed depth), the training cost
per example at the method's best batch size -- the smallest microseconds
per example over the batch sizes tried, each timed by the benchmark's
machinery (:func:`sampling_mlp.bench.time_one`: full training steps inside
one jitted scan, the median of several calls) -- and the memory its
training state needs (parameters, optimizer moments and the method's own
arrays, from shapes alone: :func:`sampling_mlp.bench.state_bytes`).

Each method's cost is fitted by a line on log-log axes (its slope: 2 for
a cost proportional to the weights of a square layer); for each method
other than STANDARD, the *crossover* is the width at which its best cost
first falls below STANDARD's best, interpolated between the two measured
widths that bracket it on log axes (or: below already at the smallest
width; or never within the range, with the fitted lines' crossing where
they do cross further out, marked as extrapolated).

A width whose estimated peak memory (twice the state, for the gradients
and the optimizer's temporaries, plus the activations) exceeds the
memory available is reported as not fitting and not timed; one that fails
for lack of memory while timed is reported so too.

Writes under ``<out_dir>/scaling/``: ``timings.jsonl`` (one row per
method, width, depth and batch size, appended as each is measured, with
what else it depends on: ``setting``; a rerun skips what the file has --
except a width that did not fit the memory then and would now --, so a
killed sweep resumes), ``scaling.md`` and ``scaling.png``.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import math
import os
from typing import Any, Mapping, Sequence

import numpy as np
from absl import logging
from tqdm.auto import tqdm

from sampling_mlp import bench, registry, report
from sampling_mlp.optim import OptimConfig
from sampling_mlp.studies import Runner

STUDY = "scaling"


def available_bytes() -> int:
  """Memory available to a new allocation (``MemAvailable``), in bytes."""
  try:
    with open("/proc/meminfo") as f:
      for line in f:
        if line.startswith("MemAvailable:"):
          return int(line.split()[1]) * 1024
  except OSError:
    pass
  return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")


def peak_bytes(state: int, *, batch_size: int, sizes: Sequence[int]) -> int:
  """Estimated peak memory of a training step: the state twice (gradients
  and the update's temporaries) plus the activations and their
  gradients."""
  return 2 * state + 3 * 4 * batch_size * sum(sizes)


@dataclasses.dataclass(frozen=True)
class Scaling:
  """The measurements a scaling sweep's flags describe.

  Attributes:
    methods: registered methods (STANDARD, the reference, is always
      measured).
    hidden: the widths.
    depth: hidden layers.
    batch_sizes: batch sizes tried for every method.
    standard_batch_sizes: more batch sizes tried for STANDARD.
    method_values: option values, ``{flag: value}``.
    input_dim, num_classes, activation, optim: the model and optimizer.
    memory_bytes: the memory a step may use (default: what is available
      when the sweep starts).
    repeats: timed calls per measurement.
  """

  methods: tuple[str, ...]
  hidden: tuple[int, ...]
  depth: int = 3
  batch_sizes: tuple[int, ...] = (1, 32, 128)
  standard_batch_sizes: tuple[int, ...] = (32, 128, 512)
  method_values: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  input_dim: int = 784
  num_classes: int = 10
  activation: str = "leaky_relu"
  optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
  memory_bytes: int | None = None
  repeats: int = 3

  @property
  def all_methods(self) -> tuple[str, ...]:
    return tuple(dict.fromkeys(("standard",) + tuple(self.methods)))

  def batches_of(self, method: str) -> tuple[int, ...]:
    extra = self.standard_batch_sizes if method == "standard" else ()
    return tuple(sorted(set(self.batch_sizes) | set(extra)))

  def measurements(self) -> list[tuple[int, str, int]]:
    """Every ``(hidden, method, batch size)``, width by width."""
    return [(h, m, b) for h in self.hidden for m in self.all_methods
            for b in self.batches_of(m)]


  def setting(self) -> dict:
    """What, besides method, shape and batch size, a measurement depends
    on (kept in every row and in the key a rerun looks rows up by)."""
    return {"input_dim": self.input_dim, "num_classes": self.num_classes,
            "activation": self.activation, "optimizer": self.optim.name,
            "learning_rate": self.optim.learning_rate}


def _key(row: Mapping[str, Any]) -> str:
  return json.dumps([row["method"], row["hidden"], row["depth"],
                     row["batch_size"], row["config"], row.get("setting")],
                    sort_keys=True)


def measure(scaling: Scaling, hidden: int, method: str, batch_size: int,
            memory: int) -> dict:
  """One row: the method's seconds per step at this width and batch
  size, or why it was not timed."""
  model = registry.ModelConfig(input_dim=scaling.input_dim,
                               num_classes=scaling.num_classes,
                               hidden=hidden, depth=scaling.depth,
                               activation=scaling.activation)
  impl = registry.get(method).make(model, scaling.optim,
                                   scaling.method_values)
  params, state = bench.state_bytes(impl)
  peak = peak_bytes(state, batch_size=batch_size, sizes=model.sizes)
  row = {"method": method, "hidden": hidden, "depth": scaling.depth,
         "batch_size": batch_size, "params_bytes": params,
         "state_bytes": state, "peak_bytes_estimate": peak,
         "config": impl.config.flags(), "setting": scaling.setting()}
  if peak > memory:
    return dict(row, fits=False, reason=(
        f"needs about {peak / 2**30:.1f} GiB, {memory / 2**30:.1f} GiB "
        "available"))
  try:
    seconds = bench.time_one(impl, batch_size=batch_size,
                             repeats=scaling.repeats)
  except (MemoryError, RuntimeError) as e:  # XlaRuntimeError: RESOURCE_EXHAUSTED
    if "RESOURCE_EXHAUSTED" not in str(e) and not isinstance(e, MemoryError):
      raise
    return dict(row, fits=False, reason=f"out of memory while timed: {e}"[:300])
  finally:
    gc.collect()
  return dict(row, fits=True, step_ms=seconds * 1e3,
              us_per_example=seconds / batch_size * 1e6)


def run_measurements(runner: Runner, scaling: Scaling,
                     progress: bool = True) -> list[dict]:
  """Measures what ``timings.jsonl`` lacks, appending each row as it is
  made; returns the rows of this sweep's measurements."""
  log = report.ResultsLog(runner.path(STUDY, "timings.jsonl"))
  have = {_key(r): r for r in log.read()}
  memory = scaling.memory_bytes or available_bytes()
  out = []
  todo = scaling.measurements()
  bar = tqdm(todo, desc="widths x methods x batches", disable=not progress)
  for hidden, method, batch in bar:
    bar.set_postfix(hidden=hidden, method=method, b=batch)
    cfg = registry.get(method).make_config(scaling.method_values).flags()
    probe = {"method": method, "hidden": hidden, "depth": scaling.depth,
             "batch_size": batch, "config": cfg,
             "setting": scaling.setting()}
    row = have.get(_key(probe))
    if row is not None and not row["fits"] and (
        row["peak_bytes_estimate"] <= memory
        and not row["reason"].startswith("out of memory")):
      row = None  # it did not fit then, and would now: measure it
    if row is None:
      row = measure(scaling, hidden, method, batch, memory)
      log.append(dict(row, run_id="scaling"))
      logging.info("scaling %s h=%d b=%d: %s", method, hidden, batch,
                   f"{row['us_per_example']:.1f} us/example" if row["fits"]
                   else row["reason"])
    out.append(row)
  bar.close()
  return out


# -- reading --------------------------------------------------------------------


def best_rows(rows: Sequence[Mapping[str, Any]]) -> dict[tuple[str, int], dict]:
  """Per ``(method, hidden)``, the row of the batch size with the fewest
  microseconds per example; a width at which no batch size fit has its
  first row (``fits: False``)."""
  best: dict[tuple[str, int], dict] = {}
  for row in rows:
    key = (row["method"], row["hidden"])
    cur = best.get(key)
    if cur is None or (row["fits"] and (not cur["fits"] or
                                        row["us_per_example"]
                                        < cur["us_per_example"])):
      best[key] = dict(row)
  return best


def fit_slope(widths: Sequence[float], costs: Sequence[float]
              ) -> tuple[float, float] | None:
  """Least-squares ``log cost = a + s log width``; ``(s, a)``, or None
  with fewer than two points."""
  if len(widths) < 2:
    return None
  s, a = np.polyfit(np.log(widths), np.log(costs), 1)
  return float(s), float(a)


def crossover(widths: Sequence[float], method: Sequence[float],
              standard: Sequence[float]) -> dict:
  """Where ``method``'s cost first falls below ``standard``'s.

  Args:
    widths: increasing widths at which both were measured.
    method, standard: their costs there.

  Returns:
    ``{"kind": "below_from_start"}``; ``{"kind": "crosses", "width": w}``
    (interpolated on log axes between the bracketing widths); or
    ``{"kind": "never"}``, with ``"extrapolated": w`` where the two fitted
    lines cross beyond the range (the method's slope smaller).
  """
  if not widths:
    return {"kind": "never"}
  logr = [math.log(m / s) for m, s in zip(method, standard)]
  if logr[0] < 0:
    return {"kind": "below_from_start"}
  for i in range(1, len(widths)):
    if logr[i] < 0:
      w0, w1 = math.log(widths[i - 1]), math.log(widths[i])
      frac = logr[i - 1] / (logr[i - 1] - logr[i])
      return {"kind": "crosses", "width": math.exp(w0 + frac * (w1 - w0))}
  out: dict[str, Any] = {"kind": "never"}
  fm, fs = fit_slope(widths, method), fit_slope(widths, standard)
  if fm and fs and fm[0] < fs[0]:
    w = math.exp((fm[1] - fs[1]) / (fs[0] - fm[0]))
    if w > widths[-1]:
      out["extrapolated"] = w
  return out


def analyse(rows: Sequence[Mapping[str, Any]]) -> dict:
  """Best rows, slopes and crossovers of a sweep's rows."""
  best = best_rows(rows)
  methods = list(dict.fromkeys(r["method"] for r in rows))
  widths = sorted({r["hidden"] for r in rows})
  series = {}
  for m in methods:
    pts = [(w, best[m, w]["us_per_example"]) for w in widths
           if (m, w) in best and best[m, w]["fits"]]
    series[m] = pts
  slopes = {m: fit_slope([w for w, _ in p], [c for _, c in p])
            for m, p in series.items()}
  cross = {}
  std = dict(series.get("standard", []))
  for m in methods:
    if m == "standard":
      continue
    both = [(w, c, std[w]) for w, c in series[m] if w in std]
    cross[m] = crossover([w for w, _, _ in both], [c for _, c, _ in both],
                         [s for _, _, s in both])
  return {"best": best, "methods": methods, "widths": widths,
          "series": series, "slopes": slopes, "crossovers": cross}


def _mib(n: int) -> str:
  return f"{n / 2**20:,.0f}" if n >= 2**20 else f"{n / 2**20:.2f}"


def table(result: Mapping[str, Any], depth: int) -> str:
  """Markdown: per width and method, best µs/example (batch) and state
  MiB; then slopes and crossovers."""
  methods, best = result["methods"], result["best"]
  head = ["hidden"] + [f"{m} µs/example (batch)" for m in methods] + [
      f"{m} state MiB" for m in methods]
  lines = [f"Depth {depth}; each method at its best batch size.\n",
           "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for w in result["widths"]:
    cells = [f"{w:,}"]
    for m in methods:
      r = best.get((m, w))
      if r is None:
        cells.append("n/a")
      elif not r["fits"]:
        cells.append(f"does not fit ({r['reason']})")
      else:
        cells.append(f"{r['us_per_example']:,.1f} ({r['batch_size']})")
    for m in methods:
      r = best.get((m, w))
      cells.append(_mib(r["state_bytes"]) if r else "n/a")
    lines.append("| " + " | ".join(cells) + " |")
  lines += ["", "| method | fitted slope (log µs/example per log width) | "
            "crosses below STANDARD's best |", "|---|---|---|"]
  for m in methods:
    fit = result["slopes"].get(m)
    slope = f"{fit[0]:.2f}" if fit else "n/a"
    if m == "standard":
      lines.append(f"| standard | {slope} | (the reference) |")
      continue
    c = result["crossovers"][m]
    if c["kind"] == "below_from_start":
      text = f"already below at {result['widths'][0]:,}"
    elif c["kind"] == "crosses":
      text = f"at about {c['width']:,.0f}"
    else:
      text = ("never within "
              f"{result['widths'][0]:,}–{result['widths'][-1]:,}")
      if "extrapolated" in c:
        text += (f" (the fitted lines cross at about "
                 f"{c['extrapolated']:,.0f}, extrapolated)")
    lines.append(f"| {m} | {slope} | {text} |")
  return "\n".join(lines)


def plot(result: Mapping[str, Any], path: str, *, title: str) -> None:
  """Log-log µs/example against width, a line per method with its fitted
  slope in the legend."""
  plt = report.pyplot()
  fig, ax = plt.subplots(figsize=(7.5, 5))
  for i, m in enumerate(result["methods"]):
    pts = result["series"][m]
    if not pts:
      continue
    color = f"C{i}"
    fit = result["slopes"][m]
    label = m + (f" (slope {fit[0]:.2f})" if fit else "")
    ax.plot(*zip(*pts), marker="o", color=color, label=label,
            linewidth=2.5 if m == "standard" else 1.5)
    if fit:
      ws = np.array([pts[0][0], pts[-1][0]], float)
      ax.plot(ws, np.exp(fit[1]) * ws ** fit[0], color=color,
              linestyle=":", linewidth=1)
  ax.set_xscale("log", base=2)
  ax.set_yscale("log")
  ax.xaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:g}"))
  ax.set(xlabel="hidden width", ylabel="µs per example (best batch size)",
         title=title)
  ax.grid(alpha=0.3, which="both")
  if ax.get_legend_handles_labels()[0]:
    ax.legend(fontsize="small")
  fig.tight_layout()
  report.save_figure(fig, path)


def run(runner: Runner, scaling: Scaling) -> str:
  """Measures (or resumes), writes the table and plot; returns the
  table."""
  rows = run_measurements(runner, scaling, progress=runner.progress)
  result = analyse(rows)
  text = table(result, scaling.depth)
  report.write_text(runner.path(STUDY, "scaling.md"),
                    "# Training cost per example against width\n\n" + text
                    + "\n\n![cost against width](scaling.png)\n")
  plot(result, runner.path(STUDY, "scaling.png"),
       title=f"{scaling.depth} hidden layers: cost per example at each "
       "method's best batch size")
  return text
