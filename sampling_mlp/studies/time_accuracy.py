"""Training time and dev accuracy per epoch (the paper's ``_S`` runs).

Cumulative training time and dev accuracy after each epoch for every
method, by default at batch size 1 and at 3 and 7 hidden layers.  Writes
under ``<out_dir>/time_accuracy/``: ``runs.jsonl`` (resumable),
``<dataset>.md`` (summary table, then every epoch) and one figure per depth,
``<dataset>_depth<d>.png``: cumulative training seconds (log scale) and dev
accuracy against epoch, a line per configuration.  Several seeds give means
± standard deviations in the tables and bands in the plots.
"""

from __future__ import annotations

from absl import logging

from sampling_mlp import report, spread
from sampling_mlp.studies import Grid, Runner

STUDY = "time_accuracy"

COLUMNS = (("method", "method"), ("depth", "depth"), ("batch_size", "batch"),
           ("hidden", "hidden"), ("epochs", "epochs"),
           ("dev_accuracy", "final dev acc"),
           ("test_accuracy", "final test acc"),
           ("seconds_per_epoch", "train s/epoch"),
           ("total_seconds", "total train s"),
           ("dev_by_epoch", "dev acc by epoch"))

EPOCH_COLUMNS = (("method", "method"), ("depth", "depth"),
                 ("batch_size", "batch"), ("epoch", "epoch"),
                 ("cumulative_seconds", "cumulative train s"),
                 ("dev_accuracy", "dev acc"), ("train_loss", "train loss"))


def summarize(runs) -> list[dict]:
  """``report.summary_rows`` plus the dev accuracy of every epoch (the
  mean over seeds)."""
  summary = report.summary_rows(runs)
  for row, group in zip(summary, spread.group_runs(runs)):
    row["dev_by_epoch"] = report.format_values(
        spread.epoch_stats(group, "dev_accuracy")[1])
  return summary


def write_outputs(runner: Runner, grid: Grid, runs) -> list[dict]:
  summary = summarize(runs)
  tag = grid.settings["dataset"]
  batches = ", ".join(map(str, grid.batch_sizes))
  md = runner.path(STUDY, f"{tag}.md")
  epochs = report.per_epoch_summary(runs, [k for k, _ in EPOCH_COLUMNS])
  report.write_text(md, "\n".join([
      f"# Time and dev accuracy per epoch: {tag}, batch size {batches} "
      "(the paper's single-sample runs)\n",
      report.markdown_table(summary, report.seed_columns(COLUMNS, summary)),
      "## Every epoch\n",
      report.markdown_table(epochs,
                            report.seed_columns(EPOCH_COLUMNS, epochs))]))
  one = len(grid.batch_sizes) == 1 and len(grid.hidden) == 1
  label = lambda rows: rows[0]["method"] if one else report.run_label(rows)
  for depth in grid.depths:
    at = [rows for rows in runs if rows and rows[0]["depth"] == depth]
    report.plot_panels([
        report.Panel(report.epoch_lines(at, "cumulative_seconds",
                                        label_fn=label),
                     xlabel="epoch", ylabel="cumulative training seconds",
                     title="training time", log_y=True),
        report.Panel(report.epoch_lines(at, "dev_accuracy", label_fn=label),
                     xlabel="epoch", ylabel="dev accuracy",
                     title="dev accuracy"),
    ], runner.path(STUDY, f"{tag}_depth{depth}.png"),
        title=f"{tag}: {depth} hidden layers, batch size {batches}")
  logging.info("wrote %s and plots", md)
  return summary


def run(runner: Runner, grid: Grid) -> str:
  """Runs (or resumes) every configuration; returns the summary table."""
  runs = runner.run(grid.specs(order=("depth", "hidden", "batch_size",
                                      "method")), STUDY)
  summary = write_outputs(runner, grid, runs)
  return report.text_table(summary, report.seed_columns(COLUMNS, summary))
