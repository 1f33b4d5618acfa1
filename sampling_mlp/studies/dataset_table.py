"""The 3-hidden-layer comparison across datasets (the paper's per-dataset
table): test accuracy and training time of every method on each dataset.

A dataset whose files are absent (and cannot be downloaded) does not stop
the study: a warning says where to put the files, its rows read
"missing data", and the other datasets run.  When MNIST is missing,
``mnist_small`` (10,000 real MNIST digits shipped in the package) can run in
its place, and the table says so.

Every available dataset's runs form one sweep (one job array under
``--executor=slurm``): the datasets' files are checked first.

Writes under ``<out_dir>/dataset_table/``: ``runs.jsonl`` (resumable),
``table.md`` (accuracy and time, method by dataset, then the long table)
and ``table.png`` (final test accuracy and total training time per dataset,
a bar per method; error bars of one standard deviation over seeds).
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


def dataset_specs(grid: Grid, dataset: str) -> list[experiment.RunSpec]:
  return grid.specs(order=("depth", "hidden", "batch_size", "method"),
                    dataset=dataset)


def available(runner: Runner, datasets: Sequence[str], *,
              mnist_standin: bool) -> tuple[list[str], dict[str, str]]:
  """The datasets to run, in order, and ``{dataset: error}`` of those whose
  files are missing; ``mnist_small`` joins when ``mnist`` is missing."""
  queue = list(dict.fromkeys(datasets))
  missing = {}
  for dataset in queue:
    try:
      runner.check_data(dataset)
    except data.DatasetError as e:
      missing[dataset] = str(e)
      logging.warning(
          "dataset %s is not available, so its rows read %r.  Put its files "
          "in --data_dir/%s/, $%s/%s/ or ~/.cache/sampling_mlp/%s/ (or run "
          "with network access to download them), then rerun the same "
          "command: finished runs are kept.  The loader said: %s", dataset,
          MISSING, dataset, data.DATA_ENV_VAR, dataset, dataset, e)
      if dataset == "mnist" and mnist_standin and STANDIN not in queue:
        logging.warning("running %s as a %s", STANDIN, STANDIN_NOTE)
        queue.append(STANDIN)
  return queue, missing


def run(runner: Runner, grid: Grid, *, datasets: Sequence[str],
        mnist_standin: bool = True) -> str:
  """Runs (or resumes) every available dataset's runs as one sweep; returns
  the table and what is missing."""
  queue, missing = available(runner, datasets, mnist_standin=mnist_standin)
  specs = [s for d in queue if d not in missing for s in dataset_specs(grid, d)]
  by_id = {s.run_id: rows for s, rows in zip(specs, runner.run(specs, STUDY))}
  # A missing dataset keeps the runs it finished while its files were there.
  log = report.ResultsLog(runner.path(STUDY, "runs.jsonl"))
  logged = log.read()
  summary = []
  order = []  # (dataset, note) for the pivot table
  for dataset in queue:
    note = STANDIN_NOTE if dataset == STANDIN else ""
    dspecs = dataset_specs(grid, dataset)
    runs = [by_id.get(s.run_id) or log.finished(s.run_id, s.epochs, logged)
            for s in dspecs]
    done = {(r["method"], r["depth"], r["hidden"], r["batch_size"]): r
            for r in report.summary_rows(runs)}
    for key in dict.fromkeys((s.method, s.depth, s.hidden, s.batch_size)
                             for s in dspecs):
      if key in done:
        summary.append(dict(done[key],
                            status="stand-in for mnist" if note else "ok"))
      else:
        method, depth, _, batch_size = key
        summary.append({"dataset": dataset, "method": method,
                        "depth": depth, "batch_size": batch_size,
                        "epochs": grid.settings["epochs"], "status": MISSING,
                        "test_accuracy": math.nan,
                        "seconds_per_epoch": math.nan,
                        "total_seconds": math.nan})
    order.append((dataset, note))
  write_outputs(runner, summary, order, grid.depths)
  text = report.text_table(summary, report.seed_columns(COLUMNS, summary))
  if missing:
    text += (f"\n\nMissing data (see the warnings above for where to put the "
             f"files): {', '.join(missing)}")
  return text


def _cell(row) -> str:
  if row["status"] == MISSING:
    return MISSING
  return (f"{report.cell(row, 'test_accuracy')} "
          f"({row['total_seconds']:.1f} s)")


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
      + ["## All runs\n", report.markdown_table(
          summary, report.seed_columns(COLUMNS, summary))]))

  categories = [d + ("*" if note else "") for d, note in order]
  acc, sec, acc_std, sec_std = {}, {}, {}, {}
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
      acc_std[label] = [rows.get(d, {}).get("test_accuracy_std", math.nan)
                        for d, _ in order]
      sec_std[label] = [rows.get(d, {}).get("total_seconds_std", math.nan)
                        for d, _ in order]
  depths = ", ".join(map(str, depths))
  report.plot_grouped_bars(
      runner.path(STUDY, "table.png"), categories=categories,
      panels=[("final test accuracy", "accuracy", False, acc, acc_std),
              ("training time", "total training seconds", True, sec,
               sec_std)],
      title=f"{depths} hidden layers" + ("; * = stand-in" if notes else ""))
