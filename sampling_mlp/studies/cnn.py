"""The CNN study (the paper's appendix): accuracy and training time of each
method on a convolutional network.

Runs every method of the grid on one CNN (``settings["model"]``: ``lenet``
or ``resnet18``, :mod:`sampling_mlp.cnn`) through the MLP's loop, results,
resume and plots.  Writes under ``<out_dir>/cnn/``: ``runs.jsonl`` (one row
per run and epoch, with ``model``; resumable), ``<tag>.md`` (the summary
table), ``<tag>_accuracy.png`` (test accuracy per epoch) and
``<tag>_time.png`` (cumulative training time per epoch), with ``<tag> =
<dataset>_<model>_<methods>``.
"""

from __future__ import annotations

from absl import logging

from sampling_mlp import report
from sampling_mlp.studies import Grid, Runner

STUDY = "cnn"

COLUMNS = (("model", "model"),) + tuple(
    (k, "head depth" if k == "depth" else "head width" if k == "hidden" else h)
    for k, h in report.SUMMARY_COLUMNS)


def run(runner: Runner, grid: Grid) -> str:
  """Runs (or resumes) the study, writes its outputs; returns the table."""
  model = grid.settings["model"]
  runs = runner.run(grid.specs(), STUDY)
  summary = report.summary_rows(runs)
  for row in summary:
    row["model"] = model
  columns = report.seed_columns(COLUMNS, summary)
  dataset = grid.settings["dataset"]
  tag = f"{dataset}_{model}_{'-'.join(grid.methods)}"
  md = runner.path(STUDY, f"{tag}.md")
  report.write_text(md, report.markdown_table(summary, columns))
  report.plot_per_epoch(runs, runner.path(STUDY, f"{tag}_accuracy.png"),
                        y="test_accuracy", ylabel="test accuracy",
                        title=f"{dataset}: {model}")
  report.plot_per_epoch(runs, runner.path(STUDY, f"{tag}_time.png"),
                        ylabel="cumulative training seconds",
                        title=f"{dataset}: {model}, training time")
  logging.info("wrote %s and plots", md)
  return report.text_table(summary, columns)
