"""Shared experiment machinery: run specs, resumable JSON-lines results,
Markdown tables and plots.  Every entry point under ``experiments/`` is a thin
absl wrapper around :func:`run_specs` plus a table and a plot.

Results format: one JSON object per line and per (run, epoch), with the run's
identity (``run_id``, a hash of its full config), the headline fields
(``method``, ``dataset``, ``depth``, ``hidden``, ``batch_size``, ``seed``,
``epoch``, ``train_loss``, ``dev_accuracy``, ``test_accuracy``,
``epoch_seconds``, ``cumulative_seconds``), the method's own metrics and
diagnostics, and ``config`` (everything that produced the row).

Resuming: a run is finished when its file holds a row for every epoch.  On
start, rows of unfinished runs and any line cut short by a kill are removed
(the file is rewritten atomically), finished runs are skipped, and the rest
run from scratch; rows are appended and flushed one epoch at a time.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import tempfile
from typing import Any, Iterable, Mapping, NamedTuple, Sequence

from absl import logging
import numpy as np
from tqdm.auto import tqdm

from sampling_mlp import registry, train
from sampling_mlp.optim import OptimConfig


@dataclasses.dataclass(frozen=True)
class RunSpec:
  """Everything that determines one training run's numbers."""

  method: str
  dataset: str
  depth: int
  hidden: int = 1000
  batch_size: int = 32
  epochs: int = 1
  seed: int = 0
  learning_rate: float = 1e-3
  optimizer: str = "adam"
  activation: str = "leaky_relu"
  max_train: int | None = None
  max_test: int | None = None
  method_config: tuple = ()  # sorted (name, value) pairs of the method's options

  @classmethod
  def make(cls, *, method: str, method_values: Mapping[str, Any] | None = None,
           **kwargs) -> "RunSpec":
    """Builds a spec; keeps (and validates) only ``method``'s own options."""
    cfg = registry.get(method).make_config(method_values).flags()
    return cls(method=method, method_config=tuple(sorted(cfg.items())),
               **kwargs)

  def config(self) -> dict:
    d = dataclasses.asdict(self)
    d["method_config"] = dict(self.method_config)
    return d

  @property
  def run_id(self) -> str:
    blob = json.dumps(self.config(), sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]

  def label(self) -> str:
    return (f"{self.method} {self.dataset} depth={self.depth} "
            f"hidden={self.hidden} B={self.batch_size} seed={self.seed}")


class ResultsLog:
  """An append-only JSON-lines file of per-epoch rows, safe to resume."""

  def __init__(self, path: str):
    self.path = path

  def read(self) -> list[dict]:
    """All well-formed rows; a line cut short by a kill is skipped."""
    if not os.path.exists(self.path):
      return []
    rows = []
    with open(self.path) as f:
      for line in f:
        try:
          row = json.loads(line)
        except json.JSONDecodeError:
          continue
        if isinstance(row, dict) and "run_id" in row:
          rows.append(row)
    return rows

  def finished(self, spec: RunSpec, rows: Iterable[dict] | None = None
               ) -> list[dict]:
    """The rows of ``spec`` if the run finished (one per epoch), else []."""
    rows = self.read() if rows is None else rows
    mine = {r["epoch"]: r for r in rows if r["run_id"] == spec.run_id}
    if all(e in mine for e in range(1, spec.epochs + 1)):
      return [mine[e] for e in range(1, spec.epochs + 1)]
    return []

  def drop_runs(self, run_ids: set[str]) -> None:
    """Atomically removes the rows of ``run_ids`` and any torn line."""
    if not os.path.exists(self.path):
      return
    with open(self.path) as f:
      lines = f.readlines()
    kept = []
    for line in lines:
      try:
        row = json.loads(line)
      except json.JSONDecodeError:
        continue
      if (line.endswith("\n") and isinstance(row, dict)
          and row.get("run_id") not in run_ids):
        kept.append(line)
    if len(kept) != len(lines):
      _atomic_write(self.path, "".join(kept))

  def append(self, row: dict) -> None:
    os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
    with open(self.path, "a") as f:
      f.write(json.dumps(row, sort_keys=True, default=_json_default) + "\n")
      f.flush()
      os.fsync(f.fileno())


def _json_default(v):
  if isinstance(v, (np.integer,)):
    return int(v)
  if isinstance(v, (np.floating,)):
    return float(v)
  if isinstance(v, np.ndarray):
    return v.tolist()
  return str(v)


def _atomic_write(path: str, text: str) -> None:
  d = os.path.dirname(path) or "."
  os.makedirs(d, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-", suffix=os.path.basename(path))
  try:
    with os.fdopen(fd, "w") as f:
      f.write(text)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def write_text(path: str, text: str) -> None:
  """Writes a whole output file atomically (tables, reports)."""
  _atomic_write(path, text)


def run_specs(specs: Sequence[RunSpec], *, results_path: str,
              data_dir: str | None = None, progress: bool = True,
              dataset_loader=None) -> list[list[dict]]:
  """Runs every spec not already finished in ``results_path``.

  Args:
    specs: the runs, in order.
    results_path: the JSON-lines file (created if absent).
    data_dir: passed to the dataset loader (``--data_dir``).
    progress: show tqdm bars over runs and epochs.
    dataset_loader: ``loader(name, data_dir=, max_train=, max_test=)``;
      defaults to :func:`sampling_mlp.data.load_dataset`.

  Returns:
    For each spec, its rows (one per epoch).
  """
  if dataset_loader is None:
    from sampling_mlp import data as data_lib
    dataset_loader = data_lib.load_dataset
  log = ResultsLog(results_path)
  rows = log.read()
  done = {s.run_id: log.finished(s, rows) for s in specs}
  # Drop partial rows of the runs we are about to (re)run, and torn lines.
  pending = {s.run_id for s in specs if not done[s.run_id]}
  log.drop_runs(pending)

  datasets: dict[tuple, Any] = {}
  out = []
  bar = tqdm(specs, desc="runs", disable=not progress, unit="run")
  for spec in bar:
    bar.set_postfix_str(spec.label())
    if done[spec.run_id]:
      logging.info("skipping finished run %s (%s)", spec.run_id, spec.label())
      out.append(done[spec.run_id])
      continue
    key = (spec.dataset, spec.max_train, spec.max_test)
    if key not in datasets:
      datasets[key] = dataset_loader(spec.dataset, data_dir=data_dir,
                                     max_train=spec.max_train,
                                     max_test=spec.max_test)
    out.append(run_one(spec, datasets[key], log, progress=progress))
  return out


def build_impl(spec: RunSpec, dataset) -> registry.MethodImpl:
  model = registry.ModelConfig(input_dim=dataset.input_dim,
                               num_classes=dataset.num_classes,
                               hidden=spec.hidden, depth=spec.depth,
                               activation=spec.activation)
  optim = OptimConfig(name=spec.optimizer, learning_rate=spec.learning_rate)
  return registry.get(spec.method).make(model, optim, dict(spec.method_config))


def run_one(spec: RunSpec, dataset, log: ResultsLog | None = None, *,
            progress: bool = True) -> list[dict]:
  """Trains one spec, appending a row per epoch to ``log``."""
  impl = build_impl(spec, dataset)
  cfg = train.TrainConfig(epochs=spec.epochs, batch_size=spec.batch_size,
                          seed=spec.seed)
  base = {"run_id": spec.run_id, "method": spec.method,
          "dataset": spec.dataset, "depth": spec.depth, "hidden": spec.hidden,
          "batch_size": spec.batch_size, "seed": spec.seed,
          "num_train": int(len(dataset.train.y)), "config": spec.config()}
  rows = []
  bar = tqdm(total=spec.epochs, desc="epochs", leave=False,
             disable=not progress, unit="epoch")
  for metrics in train.train(impl, dataset, cfg):
    row = dict(base, **metrics)
    rows.append(row)
    if log is not None:
      log.append(row)
    logging.info("%s epoch %d: loss %.4f dev %.4f test %.4f (%.2fs)",
                 spec.label(), row["epoch"], row["train_loss"],
                 row["dev_accuracy"], row["test_accuracy"],
                 row["epoch_seconds"])
    bar.update(1)
    bar.set_postfix(test=f"{row['test_accuracy']:.3f}",
                    s=f"{row['epoch_seconds']:.1f}")
  bar.close()
  return rows


# -- tables and plots ---------------------------------------------------------


def final_rows(runs: Sequence[Sequence[dict]]) -> list[dict]:
  """One summary dict per run: its last epoch plus time aggregates."""
  out = []
  for rows in runs:
    if not rows:
      continue
    last = rows[-1]
    out.append({
        "method": last["method"], "dataset": last["dataset"],
        "depth": last["depth"], "hidden": last["hidden"],
        "batch_size": last["batch_size"], "seed": last["seed"],
        "epochs": last["epoch"],
        "test_accuracy": last["test_accuracy"],
        "dev_accuracy": last["dev_accuracy"],
        "seconds_per_epoch": float(np.mean([r["epoch_seconds"] for r in rows])),
        "total_seconds": last["cumulative_seconds"],
    })
  return out


def markdown_table(rows: Sequence[Mapping[str, Any]],
                   columns: Sequence[tuple[str, str]]) -> str:
  """A Markdown table; ``columns`` are (key, header) pairs."""
  def fmt(v):
    if isinstance(v, float):
      if math.isnan(v):
        return "n/a"
      return f"{v:.4f}" if abs(v) < 10 else f"{v:.1f}"
    return str(v)
  head = "| " + " | ".join(h for _, h in columns) + " |"
  sep = "|" + "|".join("---" for _ in columns) + "|"
  body = ["| " + " | ".join(fmt(r.get(k, "")) for k, _ in columns) + " |"
          for r in rows]
  return "\n".join([head, sep] + body) + "\n"


SUMMARY_COLUMNS = (("method", "method"), ("dataset", "dataset"),
                   ("depth", "depth"), ("hidden", "hidden"),
                   ("batch_size", "batch"), ("epochs", "epochs"),
                   ("test_accuracy", "final test acc"),
                   ("seconds_per_epoch", "train s/epoch"),
                   ("total_seconds", "total train s"))


def text_table(rows: Sequence[Mapping[str, Any]],
               columns: Sequence[tuple[str, str]]) -> str:
  """A fixed-width table for the terminal."""
  def fmt(v):
    if isinstance(v, float):
      return f"{v:.4f}" if abs(v) < 10 else f"{v:.1f}"
    return str(v)
  cells = [[h for _, h in columns]] + [[fmt(r.get(k, "")) for k, _ in columns]
                                       for r in rows]
  widths = [max(len(c[i]) for c in cells) for i in range(len(columns))]
  return "\n".join("  ".join(c.rjust(w) for c, w in zip(line, widths))
                   for line in cells)


def _pyplot():
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  return plt


def plot_depth(summary: Sequence[Mapping[str, Any]], path: str,
               title: str = "") -> None:
  """Final test accuracy and total training time against depth, a line per
  method (several seeds are averaged)."""
  plt = _pyplot()
  fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
  for method in dict.fromkeys(r["method"] for r in summary):
    rs = [r for r in summary if r["method"] == method]
    depths = sorted({r["depth"] for r in rs})
    acc = [np.mean([r["test_accuracy"] for r in rs if r["depth"] == d])
           for d in depths]
    sec = [np.mean([r["total_seconds"] for r in rs if r["depth"] == d])
           for d in depths]
    ax1.plot(depths, acc, marker="o", label=method)
    ax2.plot(depths, sec, marker="o", label=method)
  ax1.set(xlabel="hidden layers", ylabel="final test accuracy")
  ax2.set(xlabel="hidden layers", ylabel="total training seconds")
  ax2.set_yscale("log")
  for ax in (ax1, ax2):
    ax.grid(alpha=0.3)
    ax.legend()
  if title:
    fig.suptitle(title)
  fig.tight_layout()
  _save(fig, path)


def plot_per_epoch(runs: Sequence[Sequence[dict]], path: str, *,
                   y: str = "cumulative_seconds", ylabel: str = "",
                   title: str = "", log_y: bool = False) -> None:
  """A per-epoch quantity (default cumulative training time), a line per run."""
  plt = _pyplot()
  fig, ax = plt.subplots(figsize=(6, 4))
  for rows in runs:
    if not rows:
      continue
    r0 = rows[0]
    ax.plot([r["epoch"] for r in rows], [r[y] for r in rows], marker=".",
            label=f"{r0['method']} d={r0['depth']} B={r0['batch_size']}")
  ax.set(xlabel="epoch", ylabel=ylabel or y, title=title)
  if log_y:
    ax.set_yscale("log")
  ax.grid(alpha=0.3)
  ax.legend(fontsize="small")
  fig.tight_layout()
  _save(fig, path)


def _save(fig, path: str) -> None:
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path) or ".", suffix=".png")
  os.close(fd)
  try:
    fig.savefig(tmp, dpi=110)
    os.chmod(tmp, 0o644)  # mkstemp creates 0600; plots are for everyone
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)
    _pyplot().close(fig)


# -- helpers shared by the reproduction entry points -------------------------


def config_value(row: Mapping[str, Any], key: str, default: Any = None) -> Any:
  """A setting of the run behind ``row``: a :class:`RunSpec` field (e.g.
  ``learning_rate``) or one of the method's options (e.g. ``mc_loss_axis``)."""
  cfg = row.get("config") or {}
  if key in cfg:
    return cfg[key]
  return (cfg.get("method_config") or {}).get(key, default)


def run_label(rows: Sequence[Mapping[str, Any]]) -> str:
  """The default legend label of a run: method, depth and batch size."""
  r0 = rows[0]
  return f"{r0['method']} d={r0['depth']} B={r0['batch_size']}"


def format_values(values: Sequence[float] | None, digits: int = 3,
                  sep: str = " / ") -> str:
  """A list of numbers as one table cell (``0.812 / 0.845``); '' for None."""
  if values is None:
    return ""
  return sep.join(f"{float(v):.{digits}f}" for v in values)


def per_epoch_rows(runs: Sequence[Sequence[Mapping[str, Any]]],
                   keys: Sequence[str]) -> list[dict]:
  """One flat dict per (run, epoch) holding ``keys`` (a long-format table)."""
  return [{k: r.get(k, "") for k in keys} for rows in runs for r in rows]


class Line(NamedTuple):
  """One line of a plot; ``style`` goes to ``Axes.plot`` (e.g. linestyle)."""

  label: str
  x: Sequence[float]
  y: Sequence[float]
  style: Mapping[str, Any] = {}


class Panel(NamedTuple):
  """One subplot."""

  lines: Sequence[Line]
  xlabel: str = ""
  ylabel: str = ""
  title: str = ""
  log_y: bool = False
  integer_x: bool = True  # epochs, layers


def epoch_lines(runs: Sequence[Sequence[Mapping[str, Any]]], y: str, *,
                label_fn=run_label, style_fn=None) -> list[Line]:
  """A :class:`Line` per run of the per-epoch quantity ``y``.

  Args:
    runs: per run, its rows (one per epoch); empty runs are skipped.
    y: the row key to plot against ``epoch``.
    label_fn: ``label_fn(rows) -> str``.
    style_fn: ``style_fn(rows) -> dict`` of ``Axes.plot`` keywords, or None.
  """
  return [Line(label_fn(rows), [r["epoch"] for r in rows],
               [r[y] for r in rows], style_fn(rows) if style_fn else {})
          for rows in runs if rows]


def plot_panels(panels: Sequence[Panel], path: str, *, title: str = "",
                ncols: int = 2) -> None:
  """Subplots in a grid of ``ncols`` columns, each with its own legend."""
  plt = _pyplot()
  ncols = max(1, min(ncols, len(panels)))
  nrows = -(-len(panels) // ncols)
  fig, axes = plt.subplots(nrows, ncols, figsize=(5.5 * ncols, 4 * nrows),
                           squeeze=False)
  for ax, panel in zip(axes.flat, panels):
    for line in panel.lines:
      ax.plot(line.x, line.y, marker=".", label=line.label,
              **dict(line.style))
    ax.set(xlabel=panel.xlabel, ylabel=panel.ylabel, title=panel.title)
    if panel.log_y:
      ax.set_yscale("log")
    if panel.integer_x:
      ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(alpha=0.3)
    if panel.lines:
      ax.legend(fontsize="small")
  for ax in list(axes.flat)[len(panels):]:
    ax.set_visible(False)
  if title:
    fig.suptitle(title)
  fig.tight_layout()
  _save(fig, path)


def plot_grouped_bars(path: str, *, categories: Sequence[str],
                      panels: Sequence[tuple[str, str, bool,
                                             Mapping[str, Sequence[float]]]],
                      title: str = "") -> None:
  """Grouped bar charts side by side.

  Args:
    path: the PNG.
    categories: the groups along x (e.g. datasets).
    panels: per subplot ``(title, ylabel, log_y, {series: values})`` with one
      value per category; NaN leaves a gap (e.g. a missing dataset).
    title: the figure title.

  A category with no value in any series is marked "no data".
  """
  plt = _pyplot()
  fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.8),
                           squeeze=False)
  x = np.arange(len(categories))
  for ax, (ptitle, ylabel, log_y, series) in zip(axes.flat, panels):
    width = 0.8 / max(1, len(series))
    for i, (label, values) in enumerate(series.items()):
      ax.bar(x + (i - (len(series) - 1) / 2) * width,
             np.asarray(values, dtype=float), width, label=label)
    for i in range(len(categories)):
      if all(math.isnan(float(v[i])) for v in series.values()):
        ax.text(x[i], 0.5, "no data", ha="center", va="center",
                transform=ax.get_xaxis_transform(), color="gray")
    ax.set_xticks(x, categories)
    ax.set(ylabel=ylabel, title=ptitle)
    if log_y:
      ax.set_yscale("log")
    ax.grid(alpha=0.3, axis="y")
    # Below the axes: inside, the legend would hide bars.
    ax.legend(fontsize="small", loc="upper center",
              bbox_to_anchor=(0.5, -0.1), ncol=min(3, max(1, len(series))))
  if title:
    fig.suptitle(title)
  fig.tight_layout()
  _save(fig, path)
