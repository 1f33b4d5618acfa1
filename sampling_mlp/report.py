"""Results I/O, tables and plots shared by every entry point.

* JSON lines: :class:`ResultsLog` (append-only, resumable: a line cut short
  by a kill is skipped), :func:`write_jsonl` and :func:`read_jsonl`; every
  whole file is written atomically (:func:`write_text`).
* Tables: :func:`markdown_table`, :func:`text_table` (cells by
  :func:`cell`: ``mean ± std`` over seeds, "diverged" for a run that
  diverged), :func:`seed_columns`.
* Summaries of per-epoch run rows: :func:`final_rows`, :func:`summary_rows`
  (over seeds, :mod:`sampling_mlp.spread`), :func:`per_epoch_rows`,
  :func:`config_value`.
* Plots (PNG, written atomically): :func:`plot_depth`, :func:`plot_per_epoch`,
  :func:`plot_panels` of :class:`Panel` s of :class:`Line` s, and
  :func:`plot_grouped_bars`; several seeds draw their mean with a band (or
  error bars) of one standard deviation.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from typing import Any, Iterable, Mapping, NamedTuple, Sequence

import numpy as np

from sampling_mlp import spread


# -- JSON lines ---------------------------------------------------------------------


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

  def finished(self, run_id: str, epochs: int,
               rows: Iterable[dict] | None = None, *,
               key: str = "epoch") -> list[dict]:
    """The rows of run ``run_id`` if it finished, else [].

    A run is finished when it has a row for every epoch, or for every epoch
    up to the one where it diverged (``diverged: true``, its last).  A
    budget run's rows count ``point`` (``key="point"``) in place of
    ``epoch``.
    """
    rows = self.read() if rows is None else rows
    mine = {r.get(key): r for r in rows if r["run_id"] == run_id}
    return complete_rows([mine[e] for e in range(1, epochs + 1) if e in mine],
                         epochs, key=key)

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
      write_text(self.path, "".join(kept))

  def append(self, row: dict) -> None:
    self.append_rows([row])

  def append_rows(self, rows: Sequence[dict]) -> None:
    """Appends rows in one write, flushed to disk: a kill leaves all of
    them, none, or a torn last line (which :meth:`drop_runs` removes)."""
    os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
    with open(self.path, "a") as f:
      f.write("".join(json.dumps(r, sort_keys=True, default=json_default)
                      + "\n" for r in rows))
      f.flush()
      os.fsync(f.fileno())


def complete_rows(rows: Sequence[dict], epochs: int, *,
                  key: str = "epoch") -> list[dict]:
  """``rows`` (epochs 1, 2, ... in order) if they make a finished run of
  ``epochs`` epochs -- every epoch, or every epoch up to a diverged one --,
  else [].  ``key`` names the field that numbers the rows (``point`` for a
  budget run's)."""
  out = []
  for e, row in enumerate(rows, start=1):
    if row.get(key) != e:
      return []
    out.append(row)
    if row.get("diverged"):
      return out
  return out if len(out) == epochs else []


def json_default(v):
  """JSON for numpy scalars and arrays (and ``str`` of anything else)."""
  if isinstance(v, (np.integer,)):
    return int(v)
  if isinstance(v, (np.floating,)):
    return float(v)
  if isinstance(v, np.ndarray):
    return v.tolist()
  return str(v)


def write_text(path: str, text: str) -> None:
  """Writes a whole file atomically: a kill leaves the old file or the new."""
  d = os.path.dirname(path) or "."
  os.makedirs(d, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-", suffix=os.path.basename(path))
  try:
    os.fchmod(fd, 0o644)  # mkstemp creates 0600; tables are for everyone
    with os.fdopen(fd, "w") as f:
      f.write(text)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise




def write_jsonl(path: str, rows: Sequence[Mapping]) -> None:
  """Rows as JSON lines, atomically (``inf``/``nan`` as JSON's Infinity and
  NaN, which :func:`read_jsonl` reads back)."""
  write_text(path, "".join(
      json.dumps(r, sort_keys=True, default=json_default) + "\n" for r in rows))


def read_jsonl(path: str) -> list[dict]:
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


# -- tables --------------------------------------------------------------------------


def final_rows(runs: Sequence[Sequence[dict]]) -> list[dict]:
  """One summary dict per run: its last epoch plus time aggregates.

  A run that diverged has ``diverged: True``, ``diverged_epoch`` and NaN
  accuracies (tables print "diverged"); ``group`` identifies the runs that
  differ only in their seed.
  """
  out = []
  for rows in runs:
    if not rows:
      continue
    last = rows[-1]
    diverged = bool(last.get("diverged"))
    out.append({
        "method": last["method"], "dataset": last["dataset"],
        "depth": last["depth"], "hidden": last["hidden"],
        "batch_size": last["batch_size"], "seed": last["seed"],
        "epochs": last["epoch"],
        "test_accuracy": math.nan if diverged else last["test_accuracy"],
        "dev_accuracy": math.nan if diverged else last["dev_accuracy"],
        "seconds_per_epoch": float(np.mean([r["epoch_seconds"] for r in rows])),
        "total_seconds": last["cumulative_seconds"],
        "diverged": diverged,
        "diverged_epoch": last["epoch"] if diverged else None,
        "group": spread.group_key(last),
        "run_id": last.get("run_id"),
    })
  return out


def summary_rows(runs: Sequence[Sequence[dict]]) -> list[dict]:
  """:func:`final_rows` averaged over seeds (``spread.over_seeds``): one
  row per configuration; with one seed each, the rows of final_rows."""
  return spread.over_seeds(final_rows(runs))


def _number(v: float) -> str:
  return f"{v:.4f}" if abs(v) < 10 else f"{v:.1f}"


def cell(row: Mapping[str, Any], key: str) -> str:
  """The table cell of ``row[key]``: numbers to 4 decimals (1 from 10 up),
  ``mean ± std`` where the row has ``<key>_std`` (several seeds),
  "diverged" for a NaN of a run (or of every seed) that diverged, "n/a"
  for another NaN, and for ``seeds`` the count with how many diverged."""
  v = row.get(key, "")
  if key == "seeds":
    bad = int(row.get("diverged") or 0)
    return f"{v} ({bad} diverged)" if bad else str(v)
  if isinstance(v, float):
    if math.isnan(v):
      bad = row.get("diverged")
      if bad and (bad is True or bad == row.get("seeds", 1)):
        return "diverged"
      return "n/a"
    std = row.get(key + "_std")
    if isinstance(std, (int, float)) and not isinstance(std, bool):
      # The spread to the mean's precision: 18.7 ± 0.2, 0.9420 ± 0.0028.
      return f"{_number(v)} ± {_number(std) if abs(v) < 10 else f'{std:.1f}'}"
    return _number(v)
  return str(v)


def seed_columns(columns: Sequence[tuple[str, str]],
                 rows: Sequence[Mapping[str, Any]]
                 ) -> tuple[tuple[str, str], ...]:
  """``columns`` plus a ``seeds`` column (after ``epochs``, else last)
  when some row averages several seeds; unchanged otherwise."""
  columns = tuple(columns)
  if not any((r.get("seeds") or 1) > 1 for r in rows):
    return columns
  keys = [k for k, _ in columns]
  at = keys.index("epochs") + 1 if "epochs" in keys else len(columns)
  return columns[:at] + (("seeds", "seeds"),) + columns[at:]


def markdown_table(rows: Sequence[Mapping[str, Any]],
                   columns: Sequence[tuple[str, str]]) -> str:
  """A Markdown table; ``columns`` are (key, header) pairs (see
  :func:`cell`)."""
  head = "| " + " | ".join(h for _, h in columns) + " |"
  sep = "|" + "|".join("---" for _ in columns) + "|"
  body = ["| " + " | ".join(cell(r, k) for k, _ in columns) + " |"
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
  """A fixed-width table for the terminal (cells as :func:`cell`)."""
  cells = [[h for _, h in columns]] + [[cell(r, k) for k, _ in columns]
                                       for r in rows]
  widths = [max(len(c[i]) for c in cells) for i in range(len(columns))]
  return "\n".join("  ".join(c.rjust(w) for c, w in zip(line, widths))
                   for line in cells)


def pyplot():
  """matplotlib's pyplot on the non-interactive Agg backend."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  return plt


def _band(ax, x, mean, std, **style) -> None:
  """One standard deviation either side of a mean line."""
  if std is None:
    return
  mean, std = np.asarray(mean, float), np.asarray(std, float)
  ax.fill_between(x, mean - std, mean + std, alpha=0.2, linewidth=0,
                  **style)


def plot_depth(summary: Sequence[Mapping[str, Any]], path: str,
               title: str = "") -> None:
  """Final test accuracy and total training time against depth, a line per
  method (and width and batch size, where there are several); several seeds
  draw their mean and a band of one standard deviation."""
  plt = pyplot()
  fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
  agg = spread.over_seeds(summary)
  several = len({(r["hidden"], r["batch_size"]) for r in agg}) > 1
  for line in dict.fromkeys((r["method"], r["hidden"], r["batch_size"])
                            for r in agg):
    rs = sorted((r for r in agg
                 if (r["method"], r["hidden"], r["batch_size"]) == line),
                key=lambda r: r["depth"])
    label = (f"{line[0]} h={line[1]} B={line[2]}" if several else line[0])
    depths = [r["depth"] for r in rs]
    for ax, key in ((ax1, "test_accuracy"), (ax2, "total_seconds")):
      mean = [r[key] for r in rs]
      (drawn,) = ax.plot(depths, mean, marker="o", label=label)
      if any(key + "_std" in r for r in rs):
        _band(ax, depths, mean, [r.get(key + "_std", 0.0) for r in rs],
              color=drawn.get_color())
  ax1.set(xlabel="hidden layers", ylabel="final test accuracy")
  ax2.set(xlabel="hidden layers", ylabel="total training seconds")
  ax2.set_yscale("log")
  for ax in (ax1, ax2):
    ax.grid(alpha=0.3)
    ax.legend()
  if title:
    fig.suptitle(title)
  fig.tight_layout()
  save_figure(fig, path)


def plot_per_epoch(runs: Sequence[Sequence[dict]], path: str, *,
                   y: str = "cumulative_seconds", ylabel: str = "",
                   title: str = "", log_y: bool = False) -> None:
  """A per-epoch quantity (default cumulative training time), a line per
  configuration: the mean over its seeds, with a band of one standard
  deviation when there are several."""
  plt = pyplot()
  fig, ax = plt.subplots(figsize=(6, 4))
  for group in spread.group_runs(runs):
    r0 = group[0][0]
    epochs, mean, std = spread.epoch_stats(group, y)
    (drawn,) = ax.plot(epochs, mean, marker=".",
                       label=f"{r0['method']} d={r0['depth']} "
                       f"B={r0['batch_size']}")
    _band(ax, epochs, mean, std, color=drawn.get_color())
  ax.set(xlabel="epoch", ylabel=ylabel or y, title=title)
  if log_y:
    ax.set_yscale("log")
  ax.grid(alpha=0.3)
  ax.legend(fontsize="small")
  fig.tight_layout()
  save_figure(fig, path)


def save_figure(fig, path: str) -> None:
  """Saves ``fig`` as a PNG atomically and closes it."""
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
    pyplot().close(fig)


# -- run rows ----------------------------------------------------------------------


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


def per_epoch_summary(runs: Sequence[Sequence[Mapping[str, Any]]],
                      keys: Sequence[str]) -> list[dict]:
  """:func:`per_epoch_rows` averaged over seeds: one dict per
  (configuration, epoch), ``mean ± std`` where several seeds count."""
  rows = [dict({k: r.get(k, "") for k in keys}, group=spread.group_key(r),
               seed=r.get("seed"), diverged=bool(r.get("diverged")))
          for rows in runs for r in rows]
  return spread.over_seeds(rows, by=("group", "epoch"))


class Line(NamedTuple):
  """One line of a plot; ``style`` goes to ``Axes.plot`` (e.g. linestyle);
  ``spread``, if given, one standard deviation per point, drawn as a band."""

  label: str
  x: Sequence[float]
  y: Sequence[float]
  style: Mapping[str, Any] = {}
  spread: Sequence[float] | None = None


class Panel(NamedTuple):
  """One subplot."""

  lines: Sequence[Line]
  xlabel: str = ""
  ylabel: str = ""
  title: str = ""
  log_y: bool = False
  integer_x: bool = True  # epochs, layers
  ylim: tuple[float, float] | None = None  # (bottom, top); None: automatic
  legend_outside: bool = False  # legend right of the axes (many lines)


def epoch_lines(runs: Sequence[Sequence[Mapping[str, Any]]], y: str, *,
                label_fn=run_label, style_fn=None) -> list[Line]:
  """A :class:`Line` per configuration of the per-epoch quantity ``y``: the
  mean over its seeds, with their standard deviation as ``spread``.

  Args:
    runs: per run, its rows (one per epoch); empty runs are skipped.
    y: the row key to plot against ``epoch``.
    label_fn: ``label_fn(rows) -> str`` (given one run of the group).
    style_fn: ``style_fn(rows) -> dict`` of ``Axes.plot`` keywords, or None.
  """
  lines = []
  for group in spread.group_runs(runs):
    epochs, mean, std = spread.epoch_stats(group, y)
    lines.append(Line(label_fn(group[0]), epochs, mean,
                      style_fn(group[0]) if style_fn else {}, std))
  return lines


def plot_panels(panels: Sequence[Panel], path: str, *, title: str = "",
                ncols: int = 2) -> None:
  """Subplots in a grid of ``ncols`` columns, each with its own legend
  (inside the axes, or right of them where a panel asks), under
  ``title``."""
  plt = pyplot()
  ncols = max(1, min(ncols, len(panels)))
  nrows = -(-len(panels) // ncols)
  width = 5.5 + (3.5 if any(p.legend_outside for p in panels) else 0.0)
  fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, 4 * nrows),
                           squeeze=False)
  for ax, panel in zip(axes.flat, panels):
    for line in panel.lines:
      (drawn,) = ax.plot(line.x, line.y, marker=".", label=line.label,
                         **dict(line.style))
      _band(ax, line.x, line.y, line.spread, color=drawn.get_color())
    ax.set(xlabel=panel.xlabel, ylabel=panel.ylabel, title=panel.title)
    if panel.log_y:
      ax.set_yscale("log")
    if panel.ylim is not None:
      ax.set_ylim(*panel.ylim)
    if panel.integer_x:
      ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(alpha=0.3)
    if panel.lines:
      ax.legend(fontsize="small", **(
          {"loc": "center left", "bbox_to_anchor": (1.02, 0.5)}
          if panel.legend_outside else {}))
  for ax in list(axes.flat)[len(panels):]:
    ax.set_visible(False)
  if title:
    fig.suptitle(title)
  # tight_layout's room for the suptitle shrinks with the figure's height
  # (the two overlap at four rows): keep 0.3 inches more above the axes.
  fig.tight_layout(rect=(0, 0, 1, 1 - (0.3 if title else 0.0)
                         / fig.get_figheight()))
  save_figure(fig, path)


def plot_grouped_bars(path: str, *, categories: Sequence[str],
                      panels: Sequence[tuple], title: str = "") -> None:
  """Grouped bar charts side by side.

  Args:
    path: the PNG.
    categories: the groups along x (e.g. datasets).
    panels: per subplot ``(title, ylabel, log_y, {series: values})`` with one
      value per category; NaN leaves a gap (e.g. a missing dataset).  A
      fifth element ``{series: stds}`` draws error bars (spread over seeds;
      NaN for none).
    title: the figure title.

  A category with no value in any series is marked "no data".
  """
  plt = pyplot()
  fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.8),
                           squeeze=False)
  x = np.arange(len(categories))
  for ax, (ptitle, ylabel, log_y, series, *rest) in zip(axes.flat, panels):
    errors = rest[0] if rest else {}
    width = 0.8 / max(1, len(series))
    for i, (label, values) in enumerate(series.items()):
      err = errors.get(label)
      ax.bar(x + (i - (len(series) - 1) / 2) * width,
             np.asarray(values, dtype=float), width, label=label,
             yerr=None if err is None else np.nan_to_num(
                 np.asarray(err, dtype=float)), capsize=3)
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
  save_figure(fig, path)
