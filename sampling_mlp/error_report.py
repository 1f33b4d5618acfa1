"""Summaries, tables and plots of the error analysis
(:mod:`sampling_mlp.error_analysis`).

* :func:`summarize`: mean and spread over keys, the theorem's prediction
  for the measured ``c``; :func:`growth`: error growth per added layer;
* :func:`report_markdown`: per (activation, network) the logits' relative
  error and top-1 agreement against depth, the node-subset methods against
  the theorem, and the growth rates;
* :func:`plot_error_vs_depth`, :func:`plot_theorem`: the same as figures;
* :func:`write_report`: ``table.md`` and every figure.
"""

from __future__ import annotations

import math
import os
from typing import Mapping, Sequence

import numpy as np

from sampling_mlp import report, theory


# ---------------------------------------------------------------------------
# Theory glue.


def theorem_relative_error(c: float, k) -> float | np.ndarray:
  """Relative error against the exact activation, ``1 - (c/(c+1))^k``.

  Under the theorem's assumption ``a = r^k abar`` (``r = (c+1)/c``), so
  ``||a - abar|| / ||a|| = 1 - r^-k``: the same law as
  :func:`theory.error_ratio` (``r^k - 1``), read against the exact value.
  It tends to 1 (the approximation loses everything) instead of infinity.

  Args:
    c: ``c > 0`` (``inf`` gives 0).
    k: nonnegative integer depth, or an array of them.

  Returns:
    A float for scalar ``k``, else a float64 array.
  """
  ratio = theory.error_ratio(c, k)  # validates c and k
  out = np.asarray(ratio) / (1.0 + np.asarray(ratio))
  return float(out) if out.ndim == 0 else out


def layerwise_theorem_ratio(cs: Sequence[float]) -> np.ndarray:
  """The theorem's ``e/abar`` after each step with a per-step ``c``.

  The induction of :mod:`sampling_mlp.theory` goes through with a
  layer-dependent (but node-independent) ``c_l``: ``a^k = prod_l (1 + 1/c_l)
  abar^k``.  So after steps ``1..k`` the ratio is ``prod (1 + 1/c_l) - 1``.

  Args:
    cs: ``c_l > 0`` per step (``inf`` for an exact step).

  Returns:
    float64 ``[len(cs)]``, entry ``k-1`` after ``k`` steps.
  """
  cs = np.asarray(cs, dtype=np.float64)
  if np.any(~(cs > 0)):
    raise ValueError(f"every c must be > 0 (or inf), got {cs.tolist()}.")
  return np.expm1(np.cumsum(np.log1p(1.0 / cs)))


# ---------------------------------------------------------------------------
# Summaries.


def mean_std(values) -> tuple[float, float]:
  """Mean and std of the finite values (None skipped); nan if none."""
  v = np.asarray([x for x in values if x is not None], np.float64)
  v = v[np.isfinite(v)]
  if not v.size:
    return math.nan, math.nan
  return float(v.mean()), float(v.std())


def median_finite(values) -> float:
  """Median of the finite values; inf if there are only infinities."""
  v = np.asarray([x for x in values if x is not None], np.float64)
  if not v.size:
    return math.nan
  finite = v[np.isfinite(v)]
  if finite.size:
    return float(np.median(finite))
  return math.inf if np.any(np.isinf(v)) else math.nan


def summarize(rows: Sequence[Mapping]) -> list[dict]:
  """Mean and spread over keys: one dict per (activation, training, variant, depth).

  Fields: the identity, ``logits_rel_err`` / ``_std``, ``top1`` / ``_std``,
  ``exact_accuracy``, ``approx_accuracy``, ``rel_err`` (per-layer means),
  and for methods computing a subset of nodes ``logits_err_ratio`` /
  ``_std``, ``err_ratio``, ``c`` (median over keys and
  steps of the per-step median ``|c|``), ``c_steps`` (per step, median over
  keys), ``c_positive``, ``theorem_ratio`` (``error_ratio(c, depth)``),
  ``theorem_rel_err`` (``theorem_relative_error(c, depth)``),
  ``layerwise_theorem_ratio`` (with the per-step ``c``).
  """
  groups: dict[tuple, list] = {}
  for r in rows:
    k = (r["activation"], r["training"], r["variant"], r["depth"])
    groups.setdefault(k, []).append(r)
  out = []
  for (act, training, variant, depth), rs in groups.items():
    s = dict(activation=act, training=training, variant=variant,
             method=rs[0]["method"], depth=depth, num_keys=len(rs),
             exact_accuracy=rs[0]["exact_accuracy"])
    s["logits_rel_err"], s["logits_rel_err_std"] = mean_std(
        r["logits_rel_err"] for r in rs)
    s["top1"], s["top1_std"] = mean_std(r["top1"] for r in rs)
    s["approx_accuracy"], _ = mean_std(r["approx_accuracy"] for r in rs)
    s["rel_err"] = [mean_std(r["rel_err"][l] for r in rs)[0]
                    for l in range(depth + 1)]
    s["rel_err_std"] = [mean_std(r["rel_err"][l] for r in rs)[1]
                        for l in range(depth + 1)]
    if "err_ratio" in rs[0]:
      s["logits_err_ratio"], s["logits_err_ratio_std"] = mean_std(
          r["logits_err_ratio"] for r in rs)
      s["err_ratio"] = [mean_std(r["err_ratio"][l] for r in rs)[0]
                        for l in range(depth + 1)]
      s["c_steps"] = [median_finite(r["effective_c"][l] for r in rs)
                      for l in range(depth)]
      s["c"] = median_finite(c for r in rs for c in r["effective_c"])
      s["c_positive"], _ = mean_std(p for r in rs for p in r["c_positive"])
      c = s["c"]
      ok = c > 0
      s["theorem_ratio"] = theory.error_ratio(c, depth) if ok else math.nan
      s["theorem_rel_err"] = theorem_relative_error(c, depth) if ok else math.nan
      cs = s["c_steps"]
      s["layerwise_theorem_ratio"] = (
          layerwise_theorem_ratio(cs).tolist() if all(v > 0 for v in cs)
          else [math.nan] * depth)
    out.append(s)
  return out


def growth(summary: Sequence[Mapping], *, field: str = "logits_rel_err"
           ) -> list[dict]:
  """How fast an error grows with depth, per (activation, training, variant).

  Fits ``log err = alpha + depth log g`` (least squares over depths with a
  positive error): ``g`` is the growth factor per added layer; also the
  log-log slope ``p`` (``err ~ depth^p``) and the error at the smallest and
  largest depth.

  Returns:
    One dict per group: identity, ``g``, ``p``, ``err_first``, ``err_last``,
    ``depth_first``, ``depth_last``.
  """
  groups: dict[tuple, list] = {}
  for s in summary:
    groups.setdefault((s["activation"], s["training"], s["variant"]), []).append(s)
  out = []
  for (act, training, variant), ss in groups.items():
    ss = sorted(ss, key=lambda s: s["depth"])
    d = np.array([s["depth"] for s in ss], np.float64)
    e = np.array([s[field] for s in ss], np.float64)
    ok = np.isfinite(e) & (e > 0)
    g = p = math.nan
    if ok.sum() >= 2:
      g = float(np.exp(np.polyfit(d[ok], np.log(e[ok]), 1)[0]))
      p = float(np.polyfit(np.log(d[ok]), np.log(e[ok]), 1)[0])
    out.append(dict(activation=act, training=training, variant=variant,
                    method=ss[0]["method"], g=g, p=p,
                    err_first=float(e[0]), err_last=float(e[-1]),
                    depth_first=int(d[0]), depth_last=int(d[-1])))
  return out


# ---------------------------------------------------------------------------
# Tables.


def fmt(v: float, digits: int = 3) -> str:
  """A number for a table cell: 3 significant digits, n/a for nan."""
  if v is None or (isinstance(v, float) and math.isnan(v)):
    return "n/a"
  if isinstance(v, float) and math.isinf(v):
    return "inf"
  if v != 0 and (abs(v) >= 1e4 or abs(v) < 1e-3):
    return f"{v:.{digits - 1}e}"
  return f"{v:.{digits}g}"


def depth_table(summary: Sequence[Mapping], *, field: str,
                spread: str | None = None, activation: str,
                training: str) -> str:
  """Markdown: a row per variant, a column per depth, ``field`` (± ``spread``)."""
  ss = [s for s in summary
        if s["activation"] == activation and s["training"] == training]
  depths = sorted({s["depth"] for s in ss})
  variants = list(dict.fromkeys(s["variant"] for s in ss))
  by = {(s["variant"], s["depth"]): s for s in ss}
  rows = []
  for v in variants:
    row = {"variant": v}
    for d in depths:
      s = by.get((v, d))
      if s is None or field not in s:
        row[str(d)] = ""
        continue
      cell = fmt(s[field])
      if spread and not math.isnan(s.get(spread, math.nan)) and s[spread] > 0:
        cell += f" ± {fmt(s[spread], 2)}"
      row[str(d)] = cell
    rows.append(row)
  cols = [("variant", "variant")] + [(str(d), f"d={d}") for d in depths]
  return report.markdown_table(rows, cols)


def _subset(s: Mapping) -> bool:
  """Whether a summary row is of a method that computes a subset of nodes
  (it then has the theorem's quantities)."""
  return "c" in s


def theorem_table(summary: Sequence[Mapping], *, activation: str,
                  training: str) -> str:
  """Markdown: per node-subset variant and depth, measured logits
  ``e/abar`` beside the theorem's ``((c+1)/c)^d - 1`` for the measured
  ``c``."""
  ss = [s for s in summary if _subset(s)
        and s["activation"] == activation and s["training"] == training]
  rows = []
  for s in sorted(ss, key=lambda s: (s["variant"], s["depth"])):
    rows.append(dict(
        variant=s["variant"], depth=s["depth"], c=fmt(s["c"]),
        c_pos=fmt(s["c_positive"], 2),
        ratio=fmt(s["logits_err_ratio"]), theorem=fmt(s["theorem_ratio"]),
        layerwise=fmt(s["layerwise_theorem_ratio"][-1]),
        rel=fmt(s["logits_rel_err"]), theorem_rel=fmt(s["theorem_rel_err"])))
  cols = (("variant", "variant"), ("depth", "d"), ("c", "measured c"),
          ("c_pos", "frac. c>0"), ("ratio", "measured e/abar"),
          ("theorem", "theorem (c)"), ("layerwise", "theorem (c per layer)"),
          ("rel", "measured rel err"), ("theorem_rel", "theorem rel err"))
  return report.markdown_table(rows, cols)


def growth_table(rows: Sequence[Mapping]) -> str:
  cols = (("variant", "variant"), ("activation", "activation"),
          ("training", "network"), ("err_first", "err d=first"),
          ("err_last", "err d=last"), ("g", "growth/layer g"),
          ("p", "power p (err ~ d^p)"))
  cells = [dict(r, **{k: fmt(r[k]) for k in ("err_first", "err_last", "g", "p")})
           for r in rows]
  return report.markdown_table(cells, cols)


def theorem_growth_table(summary: Sequence[Mapping]) -> str:
  """Markdown: the node-subset methods' measured logits ``e/abar`` growth
  factor per layer (a
  log-linear fit over depths) beside the theorem's ``1 + 1/c`` for the
  measured ``c`` (median over depths)."""
  ss = [s for s in summary if _subset(s)]
  rows = []
  for g in growth(ss, field="logits_err_ratio"):
    c = median_finite(
        s["c"] for s in ss if (s["activation"], s["training"], s["variant"])
        == (g["activation"], g["training"], g["variant"]))
    rows.append(dict(g, c=fmt(c), theorem_g=fmt(1 + 1 / c if c > 0 else math.nan),
                     g_fmt=fmt(g["g"]), first=fmt(g["err_first"]),
                     last=fmt(g["err_last"])))
  cols = (("variant", "variant"), ("activation", "activation"),
          ("training", "network"), ("first", "e/abar d=first"),
          ("last", "e/abar d=last"), ("g_fmt", "measured growth/layer"),
          ("c", "measured c"), ("theorem_g", "theorem 1 + 1/c"))
  return report.markdown_table(rows, cols)


def theorem_markdown(c: float, depths: Sequence[int] = range(1, 8), *,
                     width: int = 64, active: int = 8, seed: int = 0) -> tuple[str, list[dict]]:
  """Part 1: the theorem's table, closed form beside the construction.

  Returns:
    (markdown, rows): rows from :func:`theory.theorem_table` with
    ``rel_err_closed_form`` (``theorem_relative_error``) added.
  """
  table = theory.theorem_table(c, depths, width=width, active=active, seed=seed)
  for r in table:
    r["rel_err_closed_form"] = theorem_relative_error(c, r["k"])
  cells = [dict(k=r["k"], closed=f"{r['closed_form']:.10f}",
              measured=f"{r['measured_mean']:.10f}",
              dev=f"{r['measured_max_abs_dev']:.1e}",
              rel=f"{r['rel_err_closed_form']:.6f}") for r in table]
  cols = (("k", "k"), ("closed", "closed form ((c+1)/c)^k - 1"),
          ("measured", "measured e/abar (mean over nodes)"),
          ("dev", "max abs(measured - closed)"),
          ("rel", "1 - (c/(c+1))^k (error vs exact)"))
  md = (f"Theorem table for c = {c:g}: a linear network of width {width} "
        f"built so that every node's active part ({active} of {width} inputs) "
        f"is exactly c times its inactive part (theory.construct_network), "
        f"float64.\n\n" + report.markdown_table(cells, cols))
  return md, table


# ---------------------------------------------------------------------------
# Plots.


def _family_colors(labels):
  plt = report.pyplot()
  cmap = plt.get_cmap("tab10")
  return {l: cmap(i % 10) for i, l in enumerate(labels)}


def _log_errorbar(ax, x, y, std, **kw):
  """Error bars on a log axis: points <= 0 (exact) are left out and the
  lower bar is clipped so it stays positive."""
  x, y, std = (np.asarray(v, np.float64) for v in (x, y, std))
  std = np.nan_to_num(std)
  ok = np.isfinite(y) & (y > 0)
  if not ok.any():
    return
  lower = np.minimum(std[ok], 0.9 * y[ok])
  ax.errorbar(x[ok], y[ok], yerr=[lower, std[ok]], marker="o", ms=3,
              capsize=2, **kw)


def _finish(ax, xlabel, ylabel, title):
  from matplotlib.ticker import MaxNLocator  # pylint: disable=g-import-not-at-top
  ax.set_yscale("log")
  ax.xaxis.set_major_locator(MaxNLocator(integer=True))
  ax.grid(alpha=0.3, which="both")
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  ax.set_title(title, fontsize=10)
  if ax.get_legend_handles_labels()[0]:
    ax.legend(fontsize=7)


def plot_error_vs_depth(summary: Sequence[Mapping], path: str, *,
                        activation: str, training: str, title: str = "") -> None:
  """Top row: logits relative error against network depth, a panel per
  method (node-subset methods with the theorem's ``1 - (c/(c+1))^d`` for each
  variant's measured ``c``, dashed); bottom row: per-layer relative error in
  the deepest network.  Error bars: std over keys; exact points (error 0)
  are left off the log axis."""
  ss = [s for s in summary
        if s["activation"] == activation and s["training"] == training]
  ylabel = "||approx - exact|| / ||exact||"
  methods = list(dict.fromkeys(s["method"] for s in ss))
  cols = max(1, len(methods))
  fig, axes = report.pyplot().subplots(2, cols, figsize=(5 * cols, 8.5),
                                       squeeze=False)
  for col, method in enumerate(methods):
    ms = [s for s in ss if s["method"] == method]
    labels = list(dict.fromkeys(s["variant"] for s in ms))
    colors = _family_colors(labels)
    ax, ax2 = axes[0, col], axes[1, col]
    for label in labels:
      vs = sorted((s for s in ms if s["variant"] == label), key=lambda s: s["depth"])
      d = [s["depth"] for s in vs]
      name = label
      if _subset(vs[0]):
        c = median_finite(s["c"] for s in vs)
        name = f"{label} (c={fmt(c, 2)})"
        if c > 0:
          dd = np.arange(min(d), max(d) + 1)
          ax.plot(dd, theorem_relative_error(c, dd), "--", color=colors[label],
                  alpha=0.7)
      _log_errorbar(ax, d, [s["logits_rel_err"] for s in vs],
                    [s["logits_rel_err_std"] for s in vs], color=colors[label],
                    label=name)
      deep = vs[-1]
      _log_errorbar(ax2, np.arange(1, deep["depth"] + 2), deep["rel_err"],
                    deep["rel_err_std"], color=colors[label], label=label)
    extra = (": dashed = theorem 1-(c/(c+1))^d at measured c"
             if any(_subset(s) for s in ms) else "")
    _finish(ax, "hidden layers d", ylabel, f"{method}, logits{extra}")
    deepest = max((s["depth"] for s in ms), default=0)
    _finish(ax2, "layer (last: logits)", ylabel,
            f"{method}, per layer of the d={deepest} network")
  fig.suptitle(title or f"{activation} network, {training}")
  fig.tight_layout()
  report.save_figure(fig, path)


def plot_theorem(summary: Sequence[Mapping], path: str, *,
                 activation: str, training: str, title: str = "") -> None:
  """The node-subset methods' theorem quantity ``e/abar`` (computed nodes only) beside the
  theorem's ``((c+1)/c)^k - 1`` for the measured ``c`` (dashed): against
  network depth (logits, left) and per layer in the deepest network (right;
  ``k`` = lossy steps before the layer, so hidden layer 1, exact on its
  active set, is left out)."""
  plt = report.pyplot()
  ss = [s for s in summary if _subset(s)
        and s["activation"] == activation and s["training"] == training]
  labels = list(dict.fromkeys(s["variant"] for s in ss))
  colors = _family_colors(labels)
  fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12, 4.8))
  for label in labels:
    vs = sorted((s for s in ss if s["variant"] == label), key=lambda s: s["depth"])
    d = np.array([s["depth"] for s in vs])
    c = median_finite(s["c"] for s in vs)
    _log_errorbar(ax, d, [s["logits_err_ratio"] for s in vs],
                  [s["logits_err_ratio_std"] for s in vs], color=colors[label],
                  label=f"{label} (c={fmt(c, 2)})")
    if c > 0:
      ax.plot(d, theory.error_ratio(c, d), "--", color=colors[label], alpha=0.7)
    deep = vs[-1]
    layer = np.arange(2, deep["depth"] + 2)
    _log_errorbar(ax2, layer, deep["err_ratio"][1:], np.zeros(len(layer)),
                  color=colors[label], label=label)
    if deep["c"] > 0:
      ax2.plot(layer, theory.error_ratio(deep["c"], layer - 1), "--",
               color=colors[label], alpha=0.7)
  ylabel = "||a - abar|| / ||abar|| (computed nodes)"
  _finish(ax, "hidden layers d (logits)", ylabel,
          "measured (solid) vs theorem ((c+1)/c)^d - 1 (dashed)")
  _finish(ax2, "layer of the deepest network (last: logits)", ylabel,
          "per layer (theorem: k = layer - 1 lossy steps)")
  fig.suptitle(title or f"measured vs the theorem: {activation}, {training}")
  fig.tight_layout()
  report.save_figure(fig, path)


def plot_name(kind: str, activation: str, training: str) -> str:
  return f"{kind}_{activation}_{training}.png"


# ---------------------------------------------------------------------------
# Outputs.


def report_markdown(rows: Sequence[Mapping]) -> str:
  """``table.md``: per (activation, network) the logits relative error and
  top-1 agreement against depth, ALSH against the theorem, then the growth
  rates."""
  if not rows:
    raise ValueError("no rows to report.")
  summary = summarize(rows)
  r0 = rows[0]
  num_keys = max(r["key"] for r in rows) + 1
  epochs = max(r["train_epochs"] for r in rows)
  nobias = ", biases set to 0" if r0.get("zero_bias") else ""
  parts = [f"# Error propagation: {r0['dataset']}, width {r0['hidden']}, "
           f"{r0['eval_examples']} test inputs, {num_keys} key(s){nobias}\n",
           "Cells: mean ± std over keys. Relative error: "
           "||approx - exact||_F / ||exact||_F over the evaluation batch. "
           "Top-1 agreement: fraction of inputs whose approximate top-1 class "
           "is the exact network's.\n"]
  for act in dict.fromkeys(r["activation"] for r in rows):
    for training in dict.fromkeys(r["training"] for r in rows):
      ss = [s for s in summary
            if s["activation"] == act and s["training"] == training]
      if not ss:
        continue
      accs = {s["depth"]: s["exact_accuracy"] for s in ss}
      net = ("freshly initialised" if training == "init" else
             f"after {epochs} epoch(s) of exact training")
      parts.append(f"\n## {act}, {net}\n")
      parts.append("Exact test accuracy on the evaluation batch: " + ", ".join(
          f"d={d}: {a:.3f}" for d, a in sorted(accs.items())) + "\n")
      parts.append("\n### Logits relative error\n\n" + depth_table(
          summary, field="logits_rel_err", spread="logits_rel_err_std",
          activation=act, training=training))
      parts.append("\n### Top-1 agreement with the exact network\n\n" +
                   depth_table(summary, field="top1", spread="top1_std",
                               activation=act, training=training))
      if any(_subset(s) for s in ss):
        parts.append(
            "\n### Node-subset methods against the theorem (logits)\n\n"
            "measured c: median over keys and lossy steps of each step's "
            "median |active part / inactive part| (exact activations); "
            "frac. c>0: share of (example, node) ratios that are positive, "
            "as the theorem assumes; e/abar: ||a - abar|| / ||abar||.\n\n" +
            theorem_table(summary, activation=act, training=training))
  parts.append("\n## Growth of the logits relative error with depth\n\n"
               "Least-squares fits over the depths with a nonzero error: "
               "err ~ g^d (g: factor per added layer) and err ~ d^p.\n\n" +
               growth_table(growth(summary)))
  if any(_subset(s) for s in summary):
    parts.append("\n## Node-subset methods: growth of e/abar against the "
                 "theorem's "
                 "factor\n\nUnder the theorem e/abar = (1 + 1/c)^d - 1, "
                 "i.e. it grows by 1 + 1/c per lossy step.\n\n" +
                 theorem_growth_table(summary))
  return "\n".join(parts)


def write_report(rows: Sequence[Mapping], out_dir: str) -> list[str]:
  """Writes ``table.md`` and the plots for ``rows`` into ``out_dir``.

  Returns:
    The paths written.
  """
  summary = summarize(rows)
  paths = [os.path.join(out_dir, "table.md")]
  report.write_text(paths[0], report_markdown(rows))
  r0 = rows[0]
  nobias = ", biases set to 0" if r0.get("zero_bias") else ""
  for act in dict.fromkeys(r["activation"] for r in rows):
    for training in dict.fromkeys(r["training"] for r in rows):
      if not any(s["activation"] == act and s["training"] == training
                 for s in summary):
        continue
      figures = [("error_vs_depth", plot_error_vs_depth,
                  f"{r0['dataset']}, width {r0['hidden']}, {act}, {training}"
                  f"{nobias}: approximate vs exact forward pass")]
      if any(_subset(s) for s in summary):
        figures.append(("theorem", plot_theorem,
                        f"measured vs the theorem: {r0['dataset']}, width "
                        f"{r0['hidden']}, {act}, {training}{nobias}"))
      for kind, plot, title in figures:
        path = os.path.join(out_dir, plot_name(kind, act, training))
        plot(summary, path, activation=act, training=training, title=title)
        paths.append(path)
  return paths


# ---------------------------------------------------------------------------
# The study.


def run(cfg, *, part: str, out_dir: str, c: float = 5.0,
        loader=None) -> str:
  """The error-propagation study (``experiments.error_propagation``).

  Args:
    cfg: an ``error_analysis.Config``.
    part: ``theorem`` (the theorem's table for ``c``), ``networks``
      (measure, then report), ``report`` (rewrite the report from
      ``rows.jsonl``) or ``all``.
    out_dir: where ``theorem.md``, ``rows.jsonl``, ``table.md`` and the
      figures go.
    c: the theorem table's c.
    loader: ``loader(name, data_dir=, max_train=, max_test=, seed=)``
      (default ``data.load_dataset``).

  Returns:
    What to print: the theorem's table and the files written.
  """
  from sampling_mlp import data, error_analysis  # pylint: disable=import-outside-toplevel
  out = lambda name: os.path.join(out_dir, name)
  os.makedirs(out_dir, exist_ok=True)
  printed = []
  if part in ("all", "theorem"):
    md, _ = theorem_markdown(c)
    report.write_text(out("theorem.md"), md)
    printed.append(md)
  if part in ("all", "networks"):
    dataset = (loader or data.load_dataset)(
        cfg.dataset, data_dir=cfg.data_dir, max_train=cfg.max_train,
        max_test=cfg.max_test, seed=cfg.seed)
    report.write_jsonl(out("rows.jsonl"),
                       error_analysis.run_networks(cfg, dataset))
  if part in ("all", "networks", "report"):
    if not os.path.exists(out("rows.jsonl")):
      raise FileNotFoundError(f"{out('rows.jsonl')} does not exist; run "
                              "--part=networks (or all) first.")
    paths = write_report(report.read_jsonl(out("rows.jsonl")), out_dir)
    printed.append("wrote " + ", ".join(paths))
  return "\n".join(printed)
