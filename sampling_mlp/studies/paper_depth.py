"""The depth study at the paper's scale, reported beside the paper's table.

``experiments.depth_sweep --scale=paper`` trains each method for 50 epochs
on the full data; its rows (``runs.jsonl``, one per run and epoch) may mix
methods, networks (this project's default, or the authors': no bias,
weight normalisation) and method variants (an ALSH transform and hash),
and a long study may still be running.  This module turns such rows into
the report's tables and figures, without training anything:

* :func:`configurations`: the runs grouped by configuration (everything
  but depth and seed), each with its runs by depth;
* :func:`accuracy_table`: final test accuracy by depth, mean ± standard
  deviation over seeds, with the median seconds per epoch and the total
  training seconds;
  a run that has not finished shows the epoch it reached;
* :func:`paper_table`: the paper's reported numbers (Ebrahimi, Advani and
  Asudeh 2025, earlier version: MNIST by depth, Fashion-MNIST at 3 hidden
  layers, training seconds at 1 and 7 hidden layers);
* :func:`plot_curves`: per-epoch test accuracy, a panel per configuration
  and a line per depth; :func:`plot_depth`: final test accuracy against
  depth, a line per configuration, the paper's MNIST numbers dashed.

:func:`write` writes all of them (``experiments.paper_depth`` is its entry
point).
"""

from __future__ import annotations

import collections
import os
import statistics
from typing import Any, Iterator, Mapping, Sequence

from sampling_mlp import registry, report

# Earlier version of the paper, MNIST test accuracy (%) at 1..7 hidden layers.
PAPER_MNIST_ACCURACY = {
    "mc": (92.7, 98.1, 98.1, 98.2, 98.4, 97.7, 97.6),
    "alsh": (94.5, 90.3, 94.2, 88.7, 70.1, 21.3, 25.1),
    "standard": (98.0, 95.8, 96.1, 95.9, 94.9, 94.4, 93.9),
}
# Its MNIST training seconds (50 epochs, 12-core CPU) at 1 and 7 hidden layers.
PAPER_SECONDS = {"mc": (1211, 11493), "alsh": (9846, 486321),
                 "standard": (8337, 50521)}
# Its Fashion-MNIST test accuracy (%) at 3 hidden layers.
PAPER_FASHION_DEPTH3 = {"mc": 87.9, "alsh": 78.1, "standard": 73.6}


def network_name(row: Mapping[str, Any]) -> str:
  """'default', 'authors' (no bias, weight normalisation), or the one
  setting that differs from the default ('no-bias', 'weight-norm')."""
  cfg = row.get("config", {})
  bias, wn = cfg.get("bias", True), cfg.get("weight_norm", False)
  for name, values in registry.NETWORKS.items():
    if values == {"bias": bias, "weight_norm": wn}:
      return name
  return "no-bias" if not bias else "weight-norm"


def variant(row: Mapping[str, Any]) -> str:
  """The method's options that differ from its registry defaults, as
  ``name=value`` pairs ('' when none do)."""
  cfg = row.get("config", {})
  defaults = registry.get(row["method"]).make_config(None).flags()
  changed = {k: v for k, v in sorted(cfg.get("method_config", {}).items())
             if k in defaults and defaults[k] != v}
  return " ".join(f"{k}={v}" for k, v in changed.items())


class Configuration(collections.namedtuple(
    "Configuration", "method network batch_size variant runs")):
  """One configuration: ``runs`` maps each depth to its runs (each a list
  of per-epoch rows), seeds in order of appearance."""

  @property
  def label(self) -> str:
    extra = f" {self.variant}" if self.variant else ""
    return f"{self.method} B={self.batch_size} {self.network}{extra}"


def _setting(row: Mapping[str, Any]) -> str:
  """The run's configuration without its depth, seed and method options
  (epochs, data, width, optimizer, ...), as a string."""
  cfg = {k: v for k, v in row.get("config", {}).items()
         if k not in ("depth", "seed", "method_config")}
  return repr(sorted(cfg.items()))


def configurations(runs: Sequence[Sequence[Mapping[str, Any]]]
                   ) -> list[Configuration]:
  """``runs`` (each a run's rows) grouped by configuration -- everything
  but depth and seed: runs that differ in epochs, data or any other
  setting are never averaged together --, in order of first appearance;
  within one, by depth (ascending).  Configurations that share a label
  but differ in another setting get a numbered suffix."""
  groups: dict[tuple, dict[int, list]] = collections.OrderedDict()
  for rows in runs:
    if not rows:
      continue
    r0 = rows[0]
    key = (r0["method"], network_name(r0), r0["batch_size"], variant(r0),
           _setting(r0))
    groups.setdefault(key, {}).setdefault(r0["depth"], []).append(rows)
  out, seen = [], collections.Counter()
  for key, by_depth in groups.items():
    label_key = key[:4]
    seen[label_key] += 1
    suffix = "" if seen[label_key] == 1 else f"(setting {seen[label_key]})"
    out.append(Configuration(key[0], key[1], key[2],
                             " ".join(filter(None, (key[3], suffix))),
                             dict(sorted(by_depth.items()))))
  return out


def _epochs_of(rows: Sequence[Mapping[str, Any]]) -> int:
  return int(rows[0].get("config", {}).get("epochs", len(rows)))


def _finished(depth_runs):
  """The finished runs: every epoch, or every epoch up to a diverged one
  (``report.complete_rows``)."""
  return [r for r in depth_runs if report.complete_rows(r, _epochs_of(r))]


def _diverged(rows) -> bool:
  return bool(rows[-1].get("diverged"))


def final_accuracy(depth_runs) -> tuple[float, float | None, int] | None:
  """(mean, sample standard deviation or None for one seed, seeds) of the
  finished runs' final test accuracy; None if none has finished."""
  accs = [r[-1]["test_accuracy"] for r in _finished(depth_runs)
          if not _diverged(r)]
  if not accs:
    return None
  return (statistics.fmean(accs),
          statistics.stdev(accs) if len(accs) > 1 else None, len(accs))


def accuracy_cell(depth_runs: Sequence[Sequence[Mapping[str, Any]]]) -> str:
  """Final test accuracy of one configuration at one depth: the mean ±
  standard deviation of its finished seeds (``n=`` their count when more
  than one), then each diverged run as ``diverged at e<epoch>`` and each
  run still training as ``e<reached>/<epochs>: <accuracy>``."""
  parts = []
  final = final_accuracy(depth_runs)
  if final is not None:
    mean, std, n = final
    parts.append(f"{mean:.3f}" + ("" if std is None else
                                  f" ± {std:.3f} (n={n})"))
  finished = _finished(depth_runs)
  parts += [f"diverged at e{len(r)}" for r in finished if _diverged(r)]
  parts += [f"e{len(r)}/{_epochs_of(r)}: {r[-1]['test_accuracy']:.3f}"
            for r in depth_runs if r not in finished]
  return "; ".join(parts)


def _seconds(depth_runs, key: str) -> float | None:
  """Mean over runs of ``key`` (each run's median ``epoch_seconds``, or its
  last ``cumulative_seconds``), finished runs only (None if none).  The
  median keeps an epoch in which the job was stopped (and its wall clock
  ran on) from moving the figure; the total keeps such time."""
  done = _finished(depth_runs)
  if not done:
    return None
  if key == "epoch_seconds":
    vals = [statistics.median(x["epoch_seconds"] for x in r) for r in done]
  else:
    vals = [r[-1]["cumulative_seconds"] for r in done]
  return sum(vals) / len(vals)


def _fmt_seconds(v: float | None) -> str:
  return "–" if v is None else (f"{v:.1f}" if v < 100 else f"{v:,.0f}")


def accuracy_table(configs: Sequence[Configuration],
                   depths: Sequence[int] | None = None) -> str:
  """The markdown table of final test accuracy by depth (default: every
  depth any configuration has), then the median seconds per epoch and the
  total training seconds by depth (finished runs, mean over seeds)."""
  if depths is None:
    depths = sorted({d for c in configs for d in c.runs})
  head = ["configuration"] + [str(d) for d in depths]
  by = " / ".join(str(d) for d in depths)
  lines = ["| " + " | ".join(head) + f" | median seconds per epoch ({by}) "
           f"| total seconds ({by}) |",
           "|" + "---|" * (len(head) + 2)]
  for c in configs:
    cells = [accuracy_cell(c.runs.get(d, [])) or "–" for d in depths]
    per_epoch = " / ".join(_fmt_seconds(_seconds(c.runs.get(d, []),
                                                 "epoch_seconds"))
                           for d in depths)
    total = " / ".join(_fmt_seconds(_seconds(c.runs.get(d, []), "total"))
                       for d in depths)
    lines.append(f"| {c.label} | " + " | ".join(cells)
                 + f" | {per_epoch} | {total} |")
  return "\n".join(lines) + "\n"


def paper_table() -> str:
  """The paper's reported numbers as a markdown table."""
  lines = ["| method (paper) | MNIST 1 | 2 | 3 | 4 | 5 | 6 | 7 "
           "| Fashion-MNIST 3 | seconds 1 / 7 (MNIST) |",
           "|---|---|---|---|---|---|---|---|---|---|"]
  for m, accs in PAPER_MNIST_ACCURACY.items():
    s1, s7 = PAPER_SECONDS[m]
    lines.append(f"| {m} | " + " | ".join(f"{a:.1f}" for a in accs)
                 + f" | {PAPER_FASHION_DEPTH3[m]:.1f} | {s1:,} / {s7:,} |")
  return "\n".join(lines) + "\n"


def plot_curves(configs: Sequence[Configuration], path: str, *,
                y: str = "test_accuracy", ncols: int = 3) -> None:
  """Per-epoch ``y``: a panel per configuration, a line per depth (the
  mean over its seeds, a band of one standard deviation)."""
  panels = []
  for c in configs:
    runs = [r for d in c.runs for r in c.runs[d]]
    lines = report.epoch_lines(runs, y,
                               label_fn=lambda rows: f"{rows[0]['depth']} "
                               "hidden")
    panels.append(report.Panel(lines, xlabel="epoch",
                               ylabel=y.replace("_", " "), title=c.label,
                               ylim=(0.0, 1.0)))
  report.plot_panels(panels, path, ncols=ncols,
                     title="Per-epoch test accuracy at the paper's scale")


def plot_depth(configs: Sequence[Configuration], path: str) -> None:
  """Final test accuracy of each configuration's finished runs against
  depth, with the paper's MNIST numbers (dashed; another dataset)."""
  lines = []
  for c in configs:
    xs, ys, sd = [], [], []
    for d, runs in c.runs.items():
      final = final_accuracy(runs)
      if final is not None:
        xs.append(d), ys.append(final[0]), sd.append(final[1] or 0.0)
    if xs:
      lines.append(report.Line(c.label, xs, ys, spread=sd))
  for m, accs in PAPER_MNIST_ACCURACY.items():
    lines.append(report.Line(f"paper, MNIST: {m}", list(range(1, 8)),
                             [a / 100 for a in accs],
                             {"linestyle": "--", "alpha": 0.6}))
  report.plot_panels([report.Panel(lines, xlabel="hidden layers",
                                   ylabel="final test accuracy",
                                   title="Final test accuracy against "
                                   "depth", legend_outside=True)], path)


class Plan(collections.namedtuple(
    "Plan", "methods networks depths seeds epochs batch_sizes dataset "
    "hidden")):
  """The study's grid: every method at its batch size (``batch_sizes``,
  by method) with every network (names in ``registry.NETWORKS``), depth
  and seed, each trained for ``epochs`` epochs on all of ``dataset`` at
  width ``hidden`` with the method's default options."""

  @classmethod
  def paper(cls, *, methods: Sequence[str] | None = None,
            networks: Sequence[str] = ("authors", "default"),
            depths: Sequence[int] = (1, 3, 5, 7),
            seeds: Sequence[int] = (0, 1), epochs: int = 50,
            dataset: str = "fashion_mnist", hidden: int = 1000) -> "Plan":
    """The depth study at the paper's scale: by default every registered
    method at its ``paper_batch_size`` (methods without one are left out),
    both networks, depths 1, 3, 5 and 7, seeds 0 and 1, 50 epochs, the
    full Fashion-MNIST, width 1000.  Raises ValueError, naming the
    ``experiments.paper_depth`` flag, for an empty or repeated list, an
    unknown network or method, a method without a paper batch size, or a
    depth, epoch count or width below 1."""
    names = (tuple(m for m in registry.names()
                   if registry.get(m).paper_batch_size is not None)
             if methods is None else tuple(methods))
    for flag, values in (("methods", names), ("networks", networks),
                         ("depths", depths), ("seeds", seeds)):
      if not values:
        raise ValueError(f"--plan_{flag} is empty: give at least one")
      repeated = sorted((v for v, k in collections.Counter(values).items()
                         if k > 1), key=str)
      if repeated:
        raise ValueError(f"--plan_{flag} repeats {repeated}: give each "
                         "once")
    for net in networks:
      if net not in registry.NETWORKS:
        raise ValueError(f"--plan_networks: unknown network {net!r}; "
                         f"choose from {sorted(registry.NETWORKS)}")
    sizes = {}
    for m in names:
      if m not in registry.names():
        raise ValueError(f"--plan_methods: unknown method {m!r}; choose "
                         f"from {list(registry.names())}")
      sizes[m] = registry.get(m).paper_batch_size
      if sizes[m] is None:
        raise ValueError(f"--plan_methods: method {m!r} has no paper "
                         "batch size (MethodSpec.paper_batch_size); leave "
                         "it out")
    for flag, low in (("depths", min(depths)), ("epochs", epochs),
                      ("hidden", hidden)):
      if low < 1:
        raise ValueError(f"--plan_{flag} must be at least 1, got {low}")
    return cls(names, tuple(networks), tuple(depths), tuple(seeds),
               int(epochs), sizes, dataset, int(hidden))


class Left(collections.namedtuple(
    "Left", "method network batch_size depth seed epochs_done epochs "
    "epoch_seconds basis")):
  """A planned run not yet finished: ``epochs_done`` of ``epochs`` trained
  (0: not started), and the estimated seconds per epoch (None where
  nothing comparable has run), measured on runs of the given ``basis``."""

  @property
  def label(self) -> str:
    return f"{self.method} B={self.batch_size} {self.network}"

  @property
  def seconds(self) -> float | None:
    """Estimated training seconds still to go."""
    if self.epoch_seconds is None:
      return None
    return (self.epochs - self.epochs_done) * self.epoch_seconds


def _layers(depth: int) -> str:
  return f"{depth} hidden layer" + ("" if depth == 1 else "s")


def _step_cost(plan: Plan, depth: int) -> int:
  """Multiply-adds of one exact training step, per example, of the plan's
  MLP at ``depth`` hidden layers (:func:`registry.exact_step_flops`):
  what a run's seconds per epoch are scaled by between depths."""
  from sampling_mlp import data  # pylint: disable=import-outside-toplevel
  spec = data.info(plan.dataset)
  sizes = (spec.input_dim,) + (plan.hidden,) * depth + (spec.num_classes,)
  return registry.exact_step_flops(sizes, 1)


def _estimate(seconds, plan: Plan, method: str, network: str, depth: int):
  """(seconds per epoch, basis) of one planned run, from ``seconds``
  (every epoch's seconds by (method, batch size, network, depth)).  Tried
  in turn, each at the same depth and else at the nearest measured depth
  scaled by the exact step's multiply-adds (:func:`_step_cost`): the same
  method and network; the same method on another network; other methods
  at the same batch size and network; at the same batch size on another
  network."""
  batch = plan.batch_sizes[method]
  pools = (("", lambda m, b, n: (m, b, n) == (method, batch, network)),
           ("other network", lambda m, b, n: (m, b) == (method, batch)),
           ("other methods", lambda m, b, n: (b, n) == (batch, network)),
           ("other methods and network", lambda m, b, n: b == batch))
  for name, match in pools:
    by_depth = collections.defaultdict(list)
    for (m, b, n, d), secs in seconds.items():
      if match(m, b, n):
        by_depth[d] += secs
    if not by_depth:
      continue
    near = min(by_depth, key=lambda d: (abs(d - depth), -d))
    per = statistics.median(by_depth[near])
    if near == depth:
      return per, name or "measured"
    scaled = f"scaled from {_layers(near)}"
    return (per * _step_cost(plan, depth) / _step_cost(plan, near),
            f"{name}, {scaled}" if name else scaled)
  return None, "not measured"


def _counts(rows: Sequence[Mapping[str, Any]], plan: Plan) -> bool:
  """Whether a run counts towards ``plan``: its epochs, dataset, width,
  all the data, and the method's default options."""
  r0, cfg = rows[0], rows[0].get("config", {})
  return (_epochs_of(rows) == plan.epochs and not variant(r0)
          and r0.get("dataset", cfg.get("dataset")) == plan.dataset
          and r0.get("hidden", cfg.get("hidden")) == plan.hidden
          and cfg.get("max_train") is None and cfg.get("max_test") is None)


def _counted(runs: Sequence[Sequence[Mapping[str, Any]]], plan: Plan
             ) -> Iterator[tuple[tuple, Sequence[Mapping[str, Any]]]]:
  """Each run that counts towards ``plan`` (:func:`_counts`), with its key
  (method, batch size, network, depth, seed)."""
  for rows in runs:
    if rows and _counts(rows, plan):
      r0 = rows[0]
      yield (r0["method"], r0["batch_size"], network_name(r0), r0["depth"],
             r0["seed"]), rows


def remaining(runs: Sequence[Sequence[Mapping[str, Any]]], plan: Plan
              ) -> list[Left]:
  """The runs of ``plan`` that have not finished (diverged runs count as
  finished), in the plan's order.  Only runs of the plan's epochs, dataset
  (all of it) and width, with the method's default options, count towards
  it.  Each one's seconds per epoch is the median over every epoch
  measured so far (finished runs and, from their checkpoints, runs still
  training) of the same method, batch size, network and depth
  ('measured'); else of the nearest measured depth, times the ratio of
  the two depths' exact step costs ('scaled from D hidden layers'); else
  the same
  from the method's runs on another network ('other network'), from
  other methods' runs at the same batch size and network ('other
  methods'), from other methods' at the same batch size on another
  network ('other methods and network'); else None ('not measured')."""
  done: dict[tuple, int] = {}
  seconds: dict[tuple, list[float]] = collections.defaultdict(list)
  for run, rows in _counted(runs, plan):
    seconds[run[:-1]] += [r["epoch_seconds"] for r in rows]
    reached = plan.epochs if report.complete_rows(rows, plan.epochs) \
        else len(rows)
    done[run] = max(done.get(run, 0), reached)
  out = []
  for method in plan.methods:
    batch = plan.batch_sizes[method]
    for network in plan.networks:
      for depth in plan.depths:
        for seed in plan.seeds:
          reached = done.get((method, batch, network, depth, seed), 0)
          if reached >= plan.epochs:
            continue
          per, basis = _estimate(seconds, plan, method, network, depth)
          out.append(Left(method, network, batch, depth, seed, reached,
                          plan.epochs, per, basis))
  return out


def finished_seconds(runs: Sequence[Sequence[Mapping[str, Any]]],
                     plan: Plan) -> list[float]:
  """The training seconds of each run of ``plan`` that has finished
  (diverged runs included; runs counted as :func:`remaining` counts
  them, each planned run once): its median seconds per epoch times the
  epochs it trained, so that time in which its job was stopped is left
  out."""
  planned = {(m, plan.batch_sizes[m], n, d, s) for m in plan.methods
             for n in plan.networks for d in plan.depths for s in plan.seeds}
  out: dict[tuple, float] = {}
  for run, rows in _counted(runs, plan):
    if run in planned and run not in out \
        and report.complete_rows(rows, plan.epochs):
      out[run] = statistics.median(r["epoch_seconds"] for r in rows) \
          * len(rows)
  return list(out.values())


def makespan(seconds: Sequence[float], slots: int) -> float:
  """Wall seconds to run jobs of the given ``seconds`` on ``slots`` at
  once, longest first, each on the slot that frees first (Graham's
  longest-processing-time rule, within 4/3 of the best schedule)."""
  if slots < 1:
    raise ValueError(f"slots must be at least 1, got {slots}")
  free = [0.0] * slots
  for s in sorted(seconds, reverse=True):
    i = free.index(min(free))
    free[i] += s
  return max(free)


def _hours(seconds: float) -> str:
  h = seconds / 3600
  return f"{h:.2f}" if h < 1 else f"{h:.1f}" if h < 100 else f"{h:,.0f}"


NODES = (1, 2, 4, 8)


def _walls(seconds: Sequence[float], cores: int) -> str:
  return ", ".join(f"{_hours(makespan(seconds, cores * n))} on {n}"
                   for n in NODES)


def _grid_text(finished: Sequence[float], left: Sequence[Left],
               cores: int) -> str:
  """The full grid's cost: the finished runs' measured seconds plus the
  estimates for the runs left, in core-hours and in wall hours on 1, 2, 4
  and 8 machines of ``cores`` cores."""
  known = [x.seconds for x in left if x.seconds is not None]
  total = list(finished) + known
  done = sum(finished)
  runs = "run" if len(finished) == 1 else "runs"
  text = (f"**The full grid**: the {len(finished)} finished {runs} took "
          f"{_hours(done)} core-hours (each run's median seconds per epoch "
          "times its epochs, so time in which a job was stopped is left "
          "out)")
  if left:
    some = "" if len(known) == len(left) else f" ({len(known)} of them)"
    text += (f"; with the estimate for the runs left{some}, "
             f"**{_hours(sum(total))} core-hours**")
  return (text + f".  Wall hours, one run per core on machines of {cores} "
          f"core{'s' if cores > 1 else ''}: {_walls(total, cores)} "
          "machines.\n")


def remaining_text(left: Sequence[Left], plan: Plan, *, cores: int,
                   finished: Sequence[float] | None = None) -> str:
  """Markdown: how much of ``plan`` is left; for the runs with an
  estimate, their core-hours and the wall hours on 1, 2, 4 and 8 machines
  of ``cores`` cores running one run per core (:func:`makespan`), never
  less than the longest run; given ``finished`` (the finished runs'
  seconds, :func:`finished_seconds`), the full grid's cost, measured and
  estimated, on the same machines; then a table of the runs left by
  configuration and depth."""
  if cores < 1:
    raise ValueError(f"cores must be at least 1, got {cores}")
  grid = "" if finished is None else "\n" + _grid_text(finished, left,
                                                         cores)
  total = (len(plan.methods) * len(plan.networks) * len(plan.depths)
           * len(plan.seeds))
  head = (f"The planned grid: {', '.join(plan.methods)}; networks "
          f"{', '.join(plan.networks)}; depths "
          f"{', '.join(map(str, plan.depths))}; seeds "
          f"{', '.join(map(str, plan.seeds))}; {plan.epochs} epochs on "
          f"{plan.dataset}, width {plan.hidden}: {total} runs.  ")
  if not left:
    return head + "Every run has finished.\n" + grid
  known = [x for x in left if x.seconds is not None]
  started = sum(1 for x in left if x.epochs_done)
  text = head + f"**{len(left)} runs left** ({started} of them part-trained)"
  if known:
    secs = [x.seconds for x in known]
    longest = max(known, key=lambda x: x.seconds)
    walls = _walls(secs, cores)
    some = ("" if len(known) == len(left) else
            f" for the {len(known)} that can be estimated")
    text += (f": about **{_hours(sum(secs))} core-hours**{some}.  Wall "
             f"hours with one run per core on machines of "
             f"{cores} core{'s' if cores > 1 else ''} "
             f"(a cluster's nodes): {walls} machines; never less than "
             f"the longest run, {_hours(longest.seconds)} hours "
             f"({longest.label}, {_layers(longest.depth)})")
  unknown = len(left) - len(known)
  if unknown:
    text += (f".  {unknown} of the runs left cannot be estimated yet "
             "(nothing comparable has run; `–` below)")
  text += (".  Estimates: each run's epochs still to go times the median "
           "seconds per epoch measured so far for its method, batch size, "
           "network and depth; where none has run, the nearest depth's "
           "scaled by the exact step's multiply-adds, then another "
           "network's, then other "
           "methods' (the table's last column says which; all but the "
           "first two are rough: ALSH-APPROX's cost differs several-fold "
           "between networks).\n" + grid + "\n")
  lines = ["| configuration | hidden layers | seeds left | epochs done | "
           "hours each (estimate) | estimated from |",
           "|---|---|---|---|---|---|"]
  groups: dict[tuple, list[Left]] = collections.OrderedDict()
  for x in left:
    groups.setdefault((x.label, x.depth), []).append(x)
  for (label, depth), xs in groups.items():
    each = [("–" if x.seconds is None else _hours(x.seconds)) for x in xs]
    lines.append(f"| {label} | {depth} | "
                 f"{', '.join(str(x.seed) for x in xs)} | "
                 f"{', '.join(str(x.epochs_done) for x in xs)} | "
                 f"{', '.join(each)} | {xs[0].basis} |")
  return text + "\n".join(lines) + "\n"


def read_runs(results: str, checkpoints: str | None = None
              ) -> list[list[dict]]:
  """The runs in the JSON-lines file ``results`` (each run's rows, by
  ``run_id``, in epoch order), plus, from the folder ``checkpoints``
  (``<run_id>/`` per run), the rows of runs still training."""
  by_run: dict[str, list[dict]] = collections.OrderedDict()
  if os.path.exists(results):
    for row in report.read_jsonl(results):
      by_run.setdefault(row["run_id"], []).append(row)
  if checkpoints and os.path.isdir(checkpoints):
    from sampling_mlp import checkpoint  # pylint: disable=import-outside-toplevel
    for name in sorted(os.listdir(checkpoints)):
      folder = os.path.join(checkpoints, name)
      if name in by_run or not os.path.isdir(folder):
        continue
      rows = checkpoint.RunCheckpoint(folder, run_id=name).rows()
      if rows:
        by_run[name] = list(rows)
  return [sorted(rows, key=lambda r: r["epoch"]) for rows in by_run.values()]


def write(runs: Sequence[Sequence[Mapping[str, Any]]], out_dir: str, *,
          figures_dir: str | None = None, plan: Plan | None = None,
          cores: int = 1) -> str:
  """Writes ``<out_dir>/paper_depth.md`` (both tables, then, given a
  ``plan``, what is left of it and its cost ("What is left:", or "The
  grid's cost:" once every run has finished), and the full grid's cost,
  measured and estimated, on machines of ``cores`` cores) and the
  figures ``paper_depth_curves.png`` and ``paper_depth.png`` (in
  ``figures_dir``, default ``out_dir``); returns the markdown."""
  configs = configurations(runs)
  if not configs:
    raise ValueError("no runs to report: the results file is empty or "
                     "missing (run experiments.depth_sweep --scale=paper "
                     "first, or point --results at its runs.jsonl)")
  figures_dir = figures_dir or out_dir
  text = ("Final test accuracy by hidden layers (this project; "
          "mean ± std over finished seeds, `eK/N` = a run still training "
          "at epoch K of N, `diverged at eK` = a run whose weights went "
          "NaN at epoch K):\n\n" + accuracy_table(configs)
          + "\nThe paper's reported numbers:\n\n" + paper_table())
  if plan is not None:
    left = remaining(runs, plan)
    text += ("\nWhat is left:\n\n" if left else "\nThe grid's cost:\n\n") \
        + remaining_text(left, plan, cores=cores,
                         finished=finished_seconds(runs, plan))
  report.write_text(os.path.join(out_dir, "paper_depth.md"), text)
  plot_curves(configs, os.path.join(figures_dir, "paper_depth_curves.png"))
  plot_depth(configs, os.path.join(figures_dir, "paper_depth.png"))
  return text

