"""MC-APPROX at batch size 1 against mini-batches: why MC-APPROX_S failed.

The paper reports that MC-APPROX in the single-sample setting (MC-APPROX_S,
batch size 1) failed.  Two explanations compete:

* the method: with one example, the sampling probabilities
  ``p_t ~ ||A[:, t]|| ||W[t, :]||`` come from a single row, and the
  estimator's error may be too large to train through;
* a bug: the public MC-APPROX example (Adelman et al. 2021) computes the
  log-softmax over the *batch* axis.  At batch size 1 that is the log-softmax
  of one number, identically 0: the loss is constant and nothing learns.

This runs ``mc`` at every depth and batch size of the grid (the entry point:
7 hidden layers, batch sizes 1 and 64), at each learning rate (1e-3 and
1e-4) and each loss axis (``classes``, the correct loss, and ``batch``, the
example's), plus ``standard`` at the same batch sizes and learning rates as
a reference.  Each epoch logs the estimator's
relative error per layer, ``||z_approx - z|| / ||z||`` of each layer's
sampled product on batches of the training batch size
(``mc_relative_error``).

Writes under ``<out_dir>/mc_batch_size/``: ``runs.jsonl`` (resumable),
``<dataset>.md`` (table and the reading), ``<dataset>_dev.png`` (dev
accuracy and training loss per epoch, a line per configuration, a row per
learning rate) and ``<dataset>_error.png`` (final relative error per layer,
a line per batch size and loss axis, a panel per learning rate).  The
reading is printed too.

The reading printed (and written to the table) recomputes its statements
from the results of any run; docs/REPRODUCTION.md discusses the quick-scale
results.  With several seeds (``--seeds``) every configuration is their
mean (± standard deviation in the table, bands in the plots) and the
reading is about the means.
"""

from __future__ import annotations

from typing import Sequence

from absl import logging
import numpy as np

from sampling_mlp import data, experiment, report, spread
from sampling_mlp.studies import Grid, Runner

STUDY = "mc_batch_size"

COLUMNS = (("method", "method"), ("depth", "depth"), ("batch_size", "batch"),
           ("learning_rate", "lr"), ("loss_axis", "loss axis"),
           ("steps", "steps"), ("final_loss", "final train loss"),
           ("dev_accuracy", "final dev acc"),
           ("test_accuracy", "final test acc"),
           ("seconds_per_epoch", "train s/epoch"),
           ("mean_error", "mean rel. error"),
           ("error_by_layer", "rel. error per layer (1..L+1)"))


def specs(grid: Grid, *, learning_rates: Sequence[float],
          loss_axes: Sequence[str], reference: bool
          ) -> list[experiment.RunSpec]:
  """MC-APPROX at every depth, width, learning rate, batch size and loss
  axis, and STANDARD at the same settings when ``reference``; every seed of
  the grid."""
  out = []
  for depth in grid.depths:
    for hidden in grid.hidden:
      for lr in learning_rates:
        for batch_size in grid.batch_sizes:
          kw = dict(depth=depth, hidden=hidden, batch_size=batch_size,
                    learning_rate=lr)
          for axis in loss_axes:
            out += [grid.spec(method="mc", mc_loss_axis=axis, seed=seed, **kw)
                    for seed in grid.seed_values]
          if reference:
            out += [grid.spec(method="standard", seed=seed, **kw)
                    for seed in grid.seed_values]
  return out


def _sampled_errors(errors) -> list[float]:
  # Exact layers (the output layer, by default) have error exactly 0.
  return [e for e in errors if e > 0]


def summarize(runs) -> list[dict]:
  """``final_rows`` plus the learning rate, loss axis, loss and the last
  epoch's relative error per layer, averaged over seeds (one row per
  configuration)."""
  runs = [r for r in runs if r]
  per_run = report.final_rows(runs)
  for row, rows in zip(per_run, runs):
    last = rows[-1]
    row["config"] = last.get("config")
    row["learning_rate"] = report.config_value(last, "learning_rate")
    row["loss_axis"] = report.config_value(last, "mc_loss_axis", "classes")
    row["final_loss"] = last["train_loss"]
    row["steps"] = last.get("steps", "")
    row["max_abs_loss"] = max(abs(r["train_loss"]) for r in rows)
    errors = last.get("mc_relative_error")
    row["errors"] = errors
    sampled = _sampled_errors(errors or [])
    row["mean_error"] = float(np.mean(sampled)) if sampled else float("nan")
  summary = spread.over_seeds(per_run)
  for row in summary:
    row["error_by_layer"] = report.format_values(row.get("errors"), 2, "/")
  return summary


def _chance(dataset: str) -> float:
  return 1.0 / data.info(dataset).num_classes


def _find(summary, **match):
  for row in summary:
    if all(row.get(k) == v for k, v in match.items()):
      return row
  return None


def reading(summary: list[dict], dataset: str) -> list[str]:
  """Plain-language conclusions drawn from ``summary``, one line each."""
  chance = _chance(dataset)
  lines = []
  sizes = sorted({r["batch_size"] for r in summary})
  big = sizes[-1]
  for depth in sorted({r["depth"] for r in summary}):
    for lr in sorted({r["learning_rate"] for r in summary}, reverse=True):
      at = dict(depth=depth, learning_rate=lr)
      head = f"depth {depth}, lr {lr:g}:"
      bug = _find(summary, method="mc", batch_size=1, loss_axis="batch", **at)
      if bug is not None:
        if bug["max_abs_loss"] < 1e-6:
          loss = "exactly 0 in every epoch (a log-softmax over one row)"
        else:
          loss = f"up to {bug['max_abs_loss']:.3g}"
        learns = ("no learning" if bug["dev_accuracy"] < 2 * chance
                  else "it learns")
        line = (f"{head} MC, B=1, log-softmax over the batch axis: training "
                f"loss {loss}, dev accuracy {bug['dev_accuracy']:.3f} (chance "
                f"{chance:.2f}): {learns}.")
        if bug["max_abs_loss"] == 0.0 and not np.isnan(bug["mean_error"]):
          # A zero loss gives zero gradients and zero Adam updates.
          line += (" Its weights never move, so its relative error, "
                   f"{bug['mean_error']:.3f}, is the estimator's at "
                   "initialisation with B=1.")
        lines.append(line)
      mc1 = _find(summary, method="mc", batch_size=1, loss_axis="classes",
                  **at)
      std1 = _find(summary, method="standard", batch_size=1, **at)
      mcb = (_find(summary, method="mc", batch_size=big, loss_axis="classes",
                   **at) if big != 1 else None)
      if mc1 is not None:
        if mc1["dev_accuracy"] < 2 * chance:
          verdict = "does not learn"
        elif (std1 is not None
              and mc1["dev_accuracy"] >= std1["dev_accuracy"] - 0.05):
          verdict = "learns (within 0.05 of standard)"
        else:
          verdict = "learns, but clearly below the reference"
        parts = [f"{head} MC, B=1, correct loss: dev accuracy "
                 f"{mc1['dev_accuracy']:.3f}"]
        if std1 is not None:
          parts.append(f"standard B=1 {std1['dev_accuracy']:.3f}")
        if mcb is not None:
          parts.append(f"MC B={big} {mcb['dev_accuracy']:.3f}")
        lines.append(", ".join(parts) + f": MC at B=1 {verdict}.")
        if mcb is not None:
          lines.append(
              f"{head} estimator relative error, mean over sampled layers "
              f"(last epoch): {mc1['mean_error']:.3f} at B=1 vs "
              f"{mcb['mean_error']:.3f} at B={big}; per layer B=1 "
              f"{mc1['error_by_layer']}, B={big} {mcb['error_by_layer']}.")
      for b in sizes:
        wrong = _find(summary, method="mc", batch_size=b, loss_axis="batch",
                      **at)
        right = _find(summary, method="mc", batch_size=b, loss_axis="classes",
                      **at)
        if b == 1 or wrong is None:
          continue
        line = (f"{head} MC, B={b}, batch-axis loss: dev accuracy "
                f"{wrong['dev_accuracy']:.3f}, training loss "
                f"{wrong['final_loss']:.3f}")
        if right is not None:
          line += (f" (correct loss: dev accuracy "
                   f"{right['dev_accuracy']:.3f})")
        lines.append(line + ".")
  return lines


def _label(r0) -> str:
  """The legend label of a run's (or a summary's) row."""
  if r0["method"] == "mc":
    axis = report.config_value(r0, "mc_loss_axis")
    return f"mc B={r0['batch_size']} loss over {axis}"
  return f"{r0['method']} B={r0['batch_size']}"


def _style(r0) -> dict:
  if r0["method"] != "mc":
    return {"linestyle": ":", "color": "gray" if r0["batch_size"] == 1
            else "black"}
  dashed = report.config_value(r0, "mc_loss_axis") == "batch"
  return {"linestyle": "--" if dashed else "-"}


def write_outputs(runner: Runner, dataset: str, runs,
                  learning_rates: Sequence[float]
                  ) -> tuple[list[dict], list[str]]:
  runs = [r for r in runs if r]
  summary = summarize(runs)
  lines = reading(summary, dataset)
  tag = dataset
  md = runner.path(STUDY, f"{tag}.md")
  report.write_text(md, "\n".join([
      f"# MC-APPROX at batch size 1 against mini-batches: {tag}\n",
      "Relative error: ||z_approx - z|| / ||z|| of each layer's sampled "
      "product (last epoch, on dev batches of the training batch size); "
      "the last layer is exact unless --mc_sample_output.  'loss axis = "
      "batch' is the public MC example's log-softmax over the batch axis.\n",
      report.markdown_table(summary, report.seed_columns(COLUMNS, summary)),
      "## Reading\n",
      "\n".join(f"* {line}" for line in lines) + "\n"]))

  panels = []
  for lr in learning_rates:
    at = [rows for rows in runs
          if report.config_value(rows[0], "learning_rate") == lr]
    styled = dict(label_fn=lambda rows: _label(rows[0]),
                  style_fn=lambda rows: _style(rows[0]))
    panels.append(report.Panel(
        report.epoch_lines(at, "dev_accuracy", **styled),
        xlabel="epoch", ylabel="dev accuracy", title=f"lr {lr:g}"))
    panels.append(report.Panel(
        report.epoch_lines(at, "train_loss", **styled),
        xlabel="epoch", ylabel="mean training loss", title=f"lr {lr:g}"))
  report.plot_panels(panels, runner.path(STUDY, f"{tag}_dev.png"),
                         title=f"{tag}: MC-APPROX by batch size")

  error_panels = []
  for lr in learning_rates:
    lines_lr = []
    for row in summary:
      if row["learning_rate"] != lr or not row["errors"]:
        continue
      errors = row["errors"]
      lines_lr.append(report.Line(
          _label(row), list(range(1, len(errors) + 1)), errors,
          _style(row), row.get("errors_std")))
    error_panels.append(report.Panel(
        lines_lr, xlabel="layer", ylabel="relative error of the sampled "
        "product", title=f"lr {lr:g} (last epoch)"))
  report.plot_panels(error_panels, runner.path(STUDY, f"{tag}_error.png"),
                         title=f"{tag}: MC estimator error per layer")
  logging.info("wrote %s and plots", md)
  return summary, lines


def run(runner: Runner, grid: Grid, *, learning_rates: Sequence[float],
        loss_axes: Sequence[str], reference: bool) -> str:
  """Runs (or resumes) the study; returns the table and the reading."""
  runs = runner.run(specs(grid, learning_rates=learning_rates,
                          loss_axes=loss_axes, reference=reference), STUDY)
  summary, lines = write_outputs(runner, grid.settings["dataset"], runs,
                                 learning_rates)
  table = report.text_table(summary, report.seed_columns(COLUMNS, summary))
  return "\n".join([table, "", "Reading:"] +
                   [f"* {line}" for line in lines])
