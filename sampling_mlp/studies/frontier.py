"""Time to accuracy: which configuration reaches a dev accuracy first.

A user choosing how to train on a CPU asks which method, at which batch
size, reaches a given accuracy first on the whole machine -- not whether
a sampled step is cheaper than an exact step at the same batch size.
This study trains a grid of configurations (:class:`Config`, written
``method@b=B,option=value``), each to the same budget of training seconds
(:mod:`sampling_mlp.budget`), one after another, and reads off:

* for each target dev accuracy, the training seconds at which each
  configuration first reached it (:func:`sampling_mlp.budget.time_to_target`)
  and the test accuracy there;
* per method, its fastest configuration and the ratio of that time to the
  fastest STANDARD configuration's (< 1: the method got there first);
* the best dev accuracy each configuration reached within 10, 30 and 100
  training seconds and within the whole budget.

Writes under ``<out_dir>/frontier/``: ``runs.jsonl`` (one row per run and
point of time: the curves; resumable), ``<dataset>.md`` (the tables, per
width and depth) and ``<dataset>_h<hidden>_d<depth>.png`` (dev accuracy
against training seconds on a log axis, a thin line per configuration,
each method's frontier -- the best any of its configurations had reached
by then -- bold).  With several seeds, times and accuracies are means over
the seeds (``± std``), a target counts as reached by a configuration when
every seed reached it, and the curves are the means at each point.
With several learning rates, each configuration keeps the one whose best
dev accuracy (mean over seeds) is highest.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from typing import Any, Iterable, Mapping, Sequence

from absl import logging

from sampling_mlp import budget, experiment, registry, report
from sampling_mlp.studies import Runner

STUDY = "frontier"

# The default grid (the issue's): STANDARD at four batch sizes, MC-APPROX at
# three ratios and two batch sizes, ALSH-APPROX at batch 1 and 128 with the
# paper's settings and with the signed transform and the adaptive rebuild
# schedule of docs/REPRODUCTION.md, Dropout and Adaptive Dropout at 128.
DEFAULT_CONFIGS = (
    "standard@b=1", "standard@b=32", "standard@b=128", "standard@b=512",
    "mc@b=32,ratio=0.1", "mc@b=32,ratio=0.3", "mc@b=32,ratio=0.5",
    "mc@b=128,ratio=0.1", "mc@b=128,ratio=0.3", "mc@b=128,ratio=0.5",
    "alsh@b=1", "alsh@b=128",
    "alsh@b=1,transform=sign_alsh,rebuild=adaptive:0.2",
    "alsh@b=128,transform=sign_alsh,rebuild=adaptive:0.2",
    "dropout@b=128", "adaptive_dropout@b=128")

DEFAULT_TARGETS = (0.80, 0.85, 0.87)
# Training seconds at which the best accuracy so far is reported (and the
# whole budget).
WITHIN = (10.0, 30.0, 100.0)


@dataclasses.dataclass(frozen=True)
class Config:
  """One configuration of the grid.

  Attributes:
    method: a registered method.
    batch_size: examples per step.
    learning_rate: its own learning rate, or None (the study's).
    options: the method options it sets, sorted ``(flag name, value)``.
  """

  method: str
  batch_size: int
  learning_rate: float | None = None
  options: tuple[tuple[str, Any], ...] = ()

  @property
  def label(self) -> str:
    """The configuration as :func:`parse_configs` reads it."""
    parts = [f"b={self.batch_size}"]
    if self.learning_rate is not None:
      parts.append(f"lr={self.learning_rate:g}")
    prefix = f"{self.method}_"
    for name, value in self.options:
      short = name[len(prefix):] if name.startswith(prefix) else name
      parts.append(f"{short}={_format(value)}")
    return f"{self.method}@{','.join(parts)}"


def _format(value: Any) -> str:
  if isinstance(value, bool):
    return "true" if value else "false"
  return f"{value:g}" if isinstance(value, float) else str(value)


def _convert(opt: registry.Option, text: str) -> Any:
  kind = type(opt.default)
  if kind is bool:
    low = text.lower()
    if low not in ("true", "false", "1", "0", "yes", "no"):
      raise ValueError(f"{text!r} is not true or false")
    return low in ("true", "1", "yes")
  if kind is int:
    return int(text)
  if kind is float:
    return float(text)
  return text


def _option(method: str, key: str) -> registry.Option:
  opts = registry.get(method).options
  exact = [o for o in opts if o.name == key]
  found = exact or [o for o in opts if o.name.endswith("_" + key)]
  if len(found) != 1:
    names = ", ".join(o.name for o in opts) or "none"
    why = "is ambiguous" if found else "is not an option of it"
    raise ValueError(f"{key!r} {why} (its options: {names}; also b= and "
                     "lr=)")
  return found[0]


def parse_config(text: str) -> Config:
  """One configuration, ``method@b=B[,lr=LR][,option=value...]``.

  ``b`` is the batch size (required), ``lr`` the learning rate; any other
  key is one of the method's options, by its flag name (``mc_ratio``) or
  without the method's prefix (``ratio``).

  Raises:
    ValueError: naming the bad part and what was expected.
  """
  text = text.strip()
  where = f"configuration {text!r}"
  method, at, rest = text.partition("@")
  method = method.strip()
  if method not in registry.names():
    raise ValueError(f"{where}: unknown method {method!r}; known methods: "
                     f"{', '.join(registry.names())}")
  if not at or not rest.strip():
    raise ValueError(f"{where} gives no batch size: write "
                     f"{method}@b=32 (or other options after b=)")
  batch, lr, options = None, None, {}
  for part in rest.split(","):
    key, eq, value = (s.strip() for s in part.partition("="))
    if not eq or not key or not value:
      raise ValueError(f"{where}: {part.strip()!r} is not key=value")
    try:
      if key in ("b", "batch_size"):
        batch = int(value)
        if batch < 1:
          raise ValueError("the batch size must be at least 1")
      elif key in ("lr", "learning_rate"):
        lr = float(value)
        if not lr > 0:
          raise ValueError("the learning rate must be positive")
      else:
        opt = _option(method, key)
        converted = _convert(opt, value)
        opt.validate(converted)
        options[opt.name] = converted
    except ValueError as e:
      raise ValueError(f"{where}: {key}={value}: {e}") from None
  if batch is None:
    raise ValueError(f"{where} gives no batch size: add b=, as in "
                     f"{method}@b=32")
  return Config(method, batch, lr, tuple(sorted(options.items())))


def parse_configs(items: str | Iterable[str]) -> list[Config]:
  """Configurations from a list flag's items or one string.

  A comma or a semicolon separates configurations and a configuration's
  options alike, so an item without ``@`` that is ``key=value`` continues
  the configuration before it: ``standard@b=32,mc@b=128,ratio=0.3`` and
  ``standard@b=32;mc@b=128;ratio=0.3`` are both two.  Duplicates are
  dropped.

  Raises:
    ValueError: a bad configuration (:func:`parse_config`), an option
      before any configuration, or none at all.
  """
  if isinstance(items, str):
    items = items.replace(";", ",").split(",")
  else:
    items = [p for item in items for p in item.replace(";", ",").split(",")]
  texts: list[str] = []
  for item in (i.strip() for i in items):
    if not item:
      continue
    if "@" in item or "=" not in item:
      texts.append(item)
    elif texts:
      texts[-1] += "," + item
    else:
      raise ValueError(f"{item!r} comes before any configuration; start "
                       "with method@b=B, as in mc@b=128,ratio=0.3")
  if not texts:
    raise ValueError("no configurations given; write e.g. "
                     "standard@b=32,mc@b=128,ratio=0.3")
  return list(dict.fromkeys(parse_config(t) for t in texts))


@dataclasses.dataclass(frozen=True)
class Frontier:
  """The runs a frontier's flags describe.

  Attributes:
    configs: the grid's configurations.
    hidden, depths: the shapes, each trained with every configuration.
    budget_seconds: training seconds per run.
    learning_rates: tried for every configuration without its own.
    seeds: runs per configuration.
    targets: dev accuracies whose time to reach is reported.
    settings: the other RunSpec fields (dataset, optimizer, activation,
      max_train, max_test).
    method_values: option values of every method (``{flag: value}``),
      under each configuration's own.
  """

  configs: tuple[Config, ...]
  hidden: tuple[int, ...]
  depths: tuple[int, ...]
  budget_seconds: float
  learning_rates: tuple[float, ...]
  seeds: tuple[int, ...]
  targets: tuple[float, ...] = DEFAULT_TARGETS
  settings: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  method_values: Mapping[str, Any] = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    budget.eval_schedule(self.budget_seconds)  # validates it
    bad = [t for t in self.targets if not 0 < t <= 1]
    if bad:
      raise ValueError(f"targets must be dev accuracies in (0, 1], got "
                       f"{bad}")

  def learning_rates_of(self, config: Config) -> tuple[float, ...]:
    return ((config.learning_rate,) if config.learning_rate is not None
            else self.learning_rates)

  def spec(self, config: Config, *, hidden: int, depth: int, lr: float,
           seed: int) -> experiment.RunSpec:
    values = dict(self.method_values, **dict(config.options))
    return experiment.RunSpec.make(
        method=config.method, method_values=values, depth=depth,
        hidden=hidden, batch_size=config.batch_size, seed=seed,
        learning_rate=lr, budget_seconds=float(self.budget_seconds),
        **self.settings)

  def specs(self) -> list[experiment.RunSpec]:
    """Every run: shape by shape, configuration by configuration."""
    return [self.spec(c, hidden=h, depth=d, lr=lr, seed=s)
            for h in self.hidden for d in self.depths for c in self.configs
            for lr in self.learning_rates_of(c) for s in self.seeds]


# -- reading the runs --------------------------------------------------------------


def _mean_std(values: Sequence[float]) -> tuple[float, float | None]:
  return (statistics.fmean(values),
          statistics.stdev(values) if len(values) > 1 else None)


def _cell(mean: float | None, std: float | None = None, *,
          digits: int = 4) -> str:
  if mean is None or (isinstance(mean, float) and math.isnan(mean)):
    return "n/a"
  text = f"{mean:.{digits}f}"
  return text + (f" ± {std:.{digits}f}" if std is not None else "")


def _seconds(mean: float, std: float | None = None) -> str:
  fmt = (lambda v: f"{v:.1f}") if mean >= 10 else (lambda v: f"{v:.2f}")
  return fmt(mean) + (f" ± {fmt(std)}" if std is not None else "") + " s"


@dataclasses.dataclass
class Result:
  """One configuration at one shape and learning rate: its seeds' runs."""

  config: Config
  hidden: int
  depth: int
  learning_rate: float
  runs: list[list[dict]]
  several_lrs: bool = False  # the label names the learning rate kept

  @property
  def best_dev(self) -> float:
    """The mean over seeds of each seed's best dev accuracy, a seed that
    diverged before any finite point counting 0."""
    return statistics.fmean(
        max((r["dev_accuracy"] for r in rows
             if not math.isnan(r["dev_accuracy"])), default=0.0)
        for rows in self.runs)

  def reach(self, target: float) -> dict | None:
    """``{"seconds", "seconds_std", "test": (mean, std)}``: the mean (and
    spread) of the seconds to ``target`` and of the test accuracy there, if
    every seed reached it; ``{"partial": seeds that did, "of": seeds}`` if
    only some did; None if none did."""
    hits = [budget.time_to_target(rows, target) for rows in self.runs]
    got = [h for h in hits if h is not None]
    if len(got) < len(hits):
      return None if not got else {"partial": len(got), "of": len(hits)}
    secs = _mean_std([h[0] for h in got])
    tests = [h[1] for h in got if h[1] is not None]
    return {"seconds": secs[0], "seconds_std": secs[1],
            "test": _mean_std(tests) if tests else (None, None)}

  def within(self, seconds: float) -> tuple[float, float | None] | None:
    vals = [budget.best_within(rows, seconds) for rows in self.runs]
    vals = [v for v in vals if v is not None]
    return _mean_std(vals) if vals else None

  def curve(self) -> list[tuple[float, float]]:
    """(training seconds, dev accuracy), the means over seeds by point."""
    n = min(len(rows) for rows in self.runs)
    out = []
    for i in range(n):
      pts = [rows[i] for rows in self.runs]
      out.append((statistics.fmean(p["cumulative_seconds"] for p in pts),
                  statistics.fmean(p["dev_accuracy"] for p in pts)))
    return out

  @property
  def label(self) -> str:
    lr = ("" if self.config.learning_rate is not None or not self.several_lrs
          else f" (lr={self.learning_rate:g})")
    return self.config.label + lr


def results(frontier: Frontier, runs: Sequence[Sequence[dict]]
            ) -> dict[tuple[int, int], list[Result]]:
  """The runs (in :meth:`Frontier.specs` order) per shape ``(hidden,
  depth)``, one :class:`Result` per configuration: its learning rate the
  one with the highest best dev accuracy among those tried.  Runs that
  failed (no rows) are left out."""
  it = iter(runs)
  out: dict[tuple[int, int], list[Result]] = {}
  for h in frontier.hidden:
    for d in frontier.depths:
      shape = out.setdefault((h, d), [])
      for c in frontier.configs:
        tried = []
        for lr in frontier.learning_rates_of(c):
          got = [next(it) for _ in frontier.seeds]
          got = [rows for rows in got if rows]
          if got:
            tried.append(Result(c, h, d, lr, got,
                                several_lrs=len(frontier.learning_rates) > 1))
        if tried:
          shape.append(max(tried, key=lambda r: r.best_dev))
  return out


def _within_times(budget_seconds: float) -> list[float]:
  return [t for t in WITHIN if t < budget_seconds] + [budget_seconds]


def config_table(shape: Sequence[Result], frontier: Frontier) -> str:
  """Markdown: per configuration, time to each target (test accuracy
  there) and the best dev accuracy within each time."""
  within = _within_times(frontier.budget_seconds)
  head = (["configuration"] +
          [f"to {t:.2f} (test there)" for t in frontier.targets] +
          [f"best dev ≤ {t:g} s" for t in within] + ["epochs trained"])
  lines = ["| " + " | ".join(head) + " |",
           "|" + "---|" * len(head)]
  for res in shape:
    cells = [f"`{res.label}`"]
    for t in frontier.targets:
      hit = res.reach(t)
      if hit is None:
        cells.append("not reached")
      elif "partial" in hit:
        cells.append(f"{hit['partial']}/{hit['of']} seeds")
      else:
        test = hit["test"][0]
        cells.append(_seconds(hit["seconds"], hit["seconds_std"]) +
                     (f" ({test:.4f})" if test is not None else ""))
    for t in within:
      w = res.within(t)
      cells.append(_cell(*w) if w else "n/a")
    cells.append(f"{statistics.fmean(r[-1]['epochs_trained'] for r in res.runs):.2f}")
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines)


def method_summary(shape: Sequence[Result], frontier: Frontier
                   ) -> list[dict]:
  """Per method and target: its fastest configuration, the seconds, and
  their ratio to the fastest STANDARD configuration's (None where either
  never reached the target); and its best dev accuracy within each time.
  """
  methods = list(dict.fromkeys(r.config.method for r in shape))
  rows = []
  for method in methods:
    mine = [r for r in shape if r.config.method == method]
    row: dict[str, Any] = {"method": method, "targets": {}, "within": {}}
    for t in frontier.targets:
      hits = [(r.reach(t), r) for r in mine]
      reached = [(h["seconds"], r) for h, r in hits if h and "seconds" in h]
      row["targets"][t] = min(reached, key=lambda p: p[0]) if reached else None
    for t in _within_times(frontier.budget_seconds):
      best = [(w[0], r) for w, r in ((r.within(t), r) for r in mine) if w]
      row["within"][t] = max(best, key=lambda p: p[0]) if best else None
    rows.append(row)
  standard = next((r for r in rows if r["method"] == "standard"), None)
  for row in rows:
    row["ratio"] = {}
    for t in frontier.targets:
      ref = standard and standard["targets"][t]
      mine = row["targets"][t]
      row["ratio"][t] = (mine[0] / ref[0] if ref and mine else None)
  return rows


def method_table(shape: Sequence[Result], frontier: Frontier) -> str:
  """Markdown: :func:`method_summary`, a row per method."""
  summary = method_summary(shape, frontier)
  within = _within_times(frontier.budget_seconds)
  head = (["method"] +
          [f"to {t:.2f}: fastest (vs STANDARD's fastest)"
           for t in frontier.targets] +
          [f"best dev ≤ {t:g} s" for t in within])
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for row in summary:
    cells = [row["method"]]
    for t in frontier.targets:
      got = row["targets"][t]
      if got is None:
        cells.append("not reached")
        continue
      ratio = row["ratio"][t]
      cells.append(f"{_seconds(got[0])} `{got[1].label}`" +
                   (f" ({ratio:.2f}x)" if ratio is not None else ""))
    for t in within:
      got = row["within"][t]
      cells.append(f"{got[0]:.4f} `{got[1].label}`" if got else "n/a")
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines)


def plot(shape: Sequence[Result], frontier: Frontier, path: str, *,
         title: str) -> None:
  """Dev accuracy against training seconds (log axis): a thin line per
  configuration, each method's frontier bold, the targets dotted."""
  plt = report.pyplot()
  fig, ax = plt.subplots(figsize=(9, 5.5))
  methods = list(dict.fromkeys(r.config.method for r in shape))
  colors = {m: f"C{i}" for i, m in enumerate(methods)}
  styles = ["-", "--", ":", "-."]
  for method in methods:
    mine = [r for r in shape if r.config.method == method]
    curves = [r.curve() for r in mine]
    for i, (res, curve) in enumerate(zip(mine, curves)):
      if curve:
        ax.plot(*zip(*curve), color=colors[method], alpha=0.45,
                linewidth=1, linestyle=styles[i % len(styles)],
                marker=".", markersize=3, label=res.label)
    env = budget.envelope(curves)
    if env:
      ax.step(*zip(*env), where="post", color=colors[method], linewidth=3,
              label=f"{method} frontier")
  for t in frontier.targets:
    ax.axhline(t, color="grey", linestyle=":", linewidth=0.8)
  lows = [a for r in shape for _, a in r.curve() if not math.isnan(a)]
  if lows:
    ax.set_ylim(max(0.0, min(min(lows), min(frontier.targets)) - 0.02),
                min(1.0, max(lows) + 0.01))
  ax.set_xscale("log")
  ax.xaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:g}"))
  ax.xaxis.set_minor_formatter(plt.NullFormatter())
  ax.set(xlabel="training seconds", ylabel="dev accuracy", title=title)
  ax.grid(alpha=0.3, which="both")
  ax.legend(fontsize="x-small", ncol=2, loc="lower right")
  fig.tight_layout()
  report.save_figure(fig, path)


def write_outputs(runner: Runner, frontier: Frontier,
                  runs: Sequence[Sequence[dict]]) -> str:
  """Writes the tables and plots; returns the Markdown."""
  dataset = frontier.settings.get("dataset", "")
  sections = [f"# Time to accuracy: {dataset}, {frontier.budget_seconds:g} "
              f"training seconds per run, seeds "
              f"{', '.join(map(str, frontier.seeds))}\n",
              "Seconds are training seconds on the whole machine, one run "
              "at a time (evaluation outside them).  A configuration "
              "reaches a target when its dev accuracy first does; the "
              "ratio is to the fastest STANDARD configuration's time.\n"]
  for (h, d), shape in results(frontier, runs).items():
    name = f"{dataset}_h{h}_d{d}.png"
    plot(shape, frontier, runner.path(STUDY, name),
         title=f"{dataset}: {d} hidden layers of {h}")
    sections += [f"## {d} hidden layers of {h}\n",
                 "### Fastest configuration per method\n",
                 method_table(shape, frontier) + "\n",
                 "### Every configuration\n",
                 config_table(shape, frontier) + "\n",
                 f"![dev accuracy against training seconds]({name})\n"]
  text = "\n".join(sections)
  md = runner.path(STUDY, f"{dataset}.md")
  report.write_text(md, text)
  logging.info("wrote %s and plots", md)
  return text


def run(runner: Runner, frontier: Frontier) -> str:
  """Runs (or resumes) every configuration, one at a time; writes the
  outputs and returns the Markdown."""
  runs = runner.run(frontier.specs(), STUDY)
  return write_outputs(runner, frontier, runs)
