"""The depth study: test accuracy and training time against hidden layers.

The paper's depth study trains every method at 1, 3, 5 and 7 hidden layers
of 1000 nodes and compares final test accuracy and training time.  Writes
under ``<out_dir>/depth_sweep/``: ``runs.jsonl`` (one row per run and
epoch; resumable), ``<tag>.md`` (the summary table), ``<tag>_depth.png``
(final test accuracy and total training time against depth) and
``<tag>_time.png`` (cumulative training time against epoch), with
``<tag> = <dataset>_<methods>``.  Several seeds (``--seeds``) give each
configuration's mean ± standard deviation (and a ``seeds`` column) in the
table and a band of one standard deviation in the plots.
"""

from __future__ import annotations

from absl import logging

from sampling_mlp import report
from sampling_mlp.studies import Grid, Runner

STUDY = "depth_sweep"


def run(runner: Runner, grid: Grid) -> str:
  """Runs (or resumes) the sweep, writes its outputs; returns the table."""
  runs = runner.run(grid.specs(), STUDY)
  summary = report.summary_rows(runs)
  columns = report.seed_columns(report.SUMMARY_COLUMNS, summary)
  dataset = grid.settings["dataset"]
  tag = f"{dataset}_{'-'.join(grid.methods)}"
  md = runner.path(STUDY, f"{tag}.md")
  report.write_text(md, report.markdown_table(summary, columns))
  report.plot_depth(report.final_rows(runs),
                    runner.path(STUDY, f"{tag}_depth.png"),
                    title=f"{dataset}: depth study")
  report.plot_per_epoch(runs, runner.path(STUDY, f"{tag}_time.png"),
                        ylabel="cumulative training seconds",
                        title=f"{dataset}: training time")
  logging.info("wrote %s and plots", md)
  return report.text_table(summary, columns)
