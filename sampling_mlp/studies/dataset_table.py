"""The 3-hidden-layer comparison across datasets (the paper's per-dataset
table): test accuracy and training time of every method on each dataset.

A dataset whose files are absent (and cannot be downloaded) does not stop
the study: a warning says where to put the files, its rows read
"missing data", and the other datasets run.  When MNIST is missing,
``mnist_small`` (10,000 real MNIST digits shipped in the package) can run in
its place, and the table says so.

Writes under ``<out_dir>/dataset_table/``: ``runs.jsonl`` (resumable),
``table.md`` (accuracy and time, method by dataset, then the long table)
and ``table.png`` (final test accuracy and total training time per dataset,
a bar per method).
"""

from __future__ import annotations

import math
from typing import Sequence

from absl import logging

from sampling_mlp import data, experiment, report
from sampling_mlp.studies import Grid, Runner

STUDY = "dataset_table"
PAPER_DATASETS = ("mnist", "fashion_mnist", "norb", "cifar10_gray")
STANDIN = "mnist_small"
STANDIN_NOTE = ("stand-in for mnist: 10,000 real MNIST digits shipped in the "
                "package (7,000 train, 1,000 dev, 2,000 test)")

COLUMNS = (("dataset", "dataset"), ("method", "method"), ("status", "status"),
           ("depth", "depth"), ("batch_size", "batch"), ("epochs", "epochs"),
           ("test_accuracy", "final test acc"),
           ("seconds_per_epoch", "train s/epoch"),
           ("total_seconds", "total train s"))

MISSING = "missing data"


MISSING = "missing data"


def dataset_specs(grid: Grid, dataset: str) -> list[experiment.RunSpec]:
  return grid.specs(order=("depth", "hidden", "batch_size", "method"),
                    dataset=dataset)


def run_dataset(runner: Runner, grid: Grid, dataset: str
                ) -> tuple[list[list[dict]], str | None]:
  """Runs (or resumes) one dataset's specs.

  Returns:
    (runs, error): the finished runs; error is the loader's message when the
    dataset's files are missing (runs then holds only runs finished earlier).
  """
  specs = dataset_specs(grid, dataset)
  try:
    return runner.run(specs, STUDY), None
  except data.DatasetError as e:
    logging.warning(
        "dataset %s is not available, so its rows read %r.  Put its files in "
        "--data_dir/%s/, $%s/%s/ or ~/.cache/sampling_mlp/%s/ (or run with "
        "network access to download them), then rerun the same command: "
        "finished runs are kept.  The loader said: %s", dataset, MISSING,
        dataset, data.DATA_ENV_VAR, dataset, dataset, e)
    log = report.ResultsLog(runner.path(STUDY, "runs.jsonl"))
    rows = log.read()
    return [log.finished(s.run_id, s.epochs, rows) for s in specs], str(e)


def run(runner: Runner, grid: Grid, *, datasets: Sequence[str],
        mnist_standin: bool = True) -> str:
  """Runs (or resumes) every dataset; returns the table and what is missing."""
  summary = []
  order = []  # (dataset, note) for the pivot table
  missing = {}
  queue = list(dict.fromkeys(datasets))
  for dataset in queue:
    runs, error = run_dataset(runner, grid, dataset)
    note = STANDIN_NOTE if dataset == STANDIN else ""
    done = {(r["method"], r["depth"], r["hidden"], r["batch_size"]): r
            for r in report.final_rows(runs)}
    for spec in dataset_specs(grid, dataset):
      key = (spec.method, spec.depth, spec.hidden, spec.batch_size)
      if key in done:
        summary.append(dict(done[key],
                            status="stand-in for mnist" if note else "ok"))
      else:
        summary.append({"dataset": dataset, "method": spec.method,
                        "depth": spec.depth, "batch_size": spec.batch_size,
                        "epochs": spec.epochs, "status": MISSING,
                        "test_accuracy": math.nan,
                        "seconds_per_epoch": math.nan,
                        "total_seconds": math.nan})
    order.append((dataset, note))
    if error is not None:
      missing[dataset] = error
      if (dataset == "mnist" and mnist_standin
          and STANDIN not in queue):
        logging.warning("running %s as a %s", STANDIN, STANDIN_NOTE)
        queue.append(STANDIN)
  write_outputs(runner, summary, order, grid.depths)
  text = report.text_table(summary, COLUMNS)
  if missing:
    text += (f"\n\nMissing data (see the warnings above for where to put the "
             f"files): {', '.join(missing)}")
  return text


def _cell(row) -> str:
  if row["status"] == MISSING:
    return MISSING
  return f"{row['test_accuracy']:.4f} ({row['total_seconds']:.1f} s)"


def write_outputs(runner: Runner, summary: list[dict],
                  order: list[tuple[str, str]], depths: Sequence[int]) -> None:
  headers = [(d, f"{d} (stand-in for mnist)" if note else d)
             for d, note in order]
  methods = list(dict.fromkeys(r["method"] for r in summary))
  configs = list(dict.fromkeys((r["depth"], r["batch_size"])
                               for r in summary))
  pivot = []
  for depth, batch in configs:
    for method in methods:
      line = {"method": method, "depth": depth, "batch_size": batch}
      for dataset, _ in order:
        for r in summary:
          if (r["dataset"], r["method"], r["depth"],
              r["batch_size"]) == (dataset, method, depth, batch):
            line[dataset] = _cell(r)
      pivot.append(line)
  pivot_columns = ((("method", "method"), ("depth", "depth"),
                    ("batch_size", "batch")) + tuple(headers))
  notes = [f"* {d}: {note}" for d, note in order if note]
  report.write_text(runner.path(STUDY, "table.md"), "\n".join(
      [f"# Methods across datasets ({', '.join(map(str, depths))} hidden "
       "layers): final test accuracy (total training seconds)\n",
       report.markdown_table(pivot, pivot_columns)]
      + (["\n".join(notes) + "\n"] if notes else [])
      + ["## All runs\n", report.markdown_table(summary, COLUMNS)]))

  categories = [d + ("*" if note else "") for d, note in order]
  acc, sec = {}, {}
  for depth, batch in configs:
    for method in methods:
      label = (method if len(configs) == 1
               else f"{method} d={depth} B={batch}")
      rows = {r["dataset"]: r for r in summary
              if (r["method"], r["depth"], r["batch_size"])
              == (method, depth, batch)}
      acc[label] = [rows[d]["test_accuracy"] if d in rows else math.nan
                    for d, _ in order]
      sec[label] = [rows[d]["total_seconds"] if d in rows else math.nan
                    for d, _ in order]
  depths = ", ".join(map(str, depths))
  report.plot_grouped_bars(
      runner.path(STUDY, "table.png"), categories=categories,
      panels=[("final test accuracy", "accuracy", False, acc),
              ("training time", "total training seconds", True, sec)],
      title=f"{depths} hidden layers" + ("; * = stand-in" if notes else ""))
