"""The 3-hidden-layer comparison across datasets.

Reproduces the paper's per-dataset table: test accuracy and training time of
every method (Standard, ALSH-APPROX, MC-APPROX, Dropout, Adaptive Dropout)
with 3 hidden layers, on MNIST, Fashion-MNIST, NORB and CIFAR-10 in
grayscale (``--datasets``; ``--dataset`` is not used here).

A dataset whose files are absent (and cannot be downloaded) does not stop
the run: a warning says where to put the files, its rows read
"missing data", and the other datasets run.  When MNIST is missing,
``mnist_small`` (10,000 real MNIST digits shipped in the package) runs in
its place and the table says so (``--nomnist_standin`` to skip).

Command:

  python -m experiments.dataset_table

Scale (``--scale``; flags given on the command line win):

* ``quick`` (default): 3 epochs, at most 10,000 training and 2,000 dev/test
  examples, width 1000, batch 32, 3 hidden layers: 2.3 minutes for
  Fashion-MNIST and the mnist_small stand-in (the others missing) on the
  project's 2-core CPU while other jobs shared it.
* ``paper``: 50 epochs, the full splits, width 1000.

Writes under ``--out_dir``/dataset_table/: ``runs.jsonl`` (resumable),
``table.md`` (accuracy and time, method by dataset, then the long table) and
``table.png`` (final test accuracy and total training time per dataset, a
bar per method).
"""

import math

from absl import app, flags, logging

from experiments import common
from sampling_mlp import data, experiment

PAPER_DATASETS = ["mnist", "fashion_mnist", "norb", "cifar10_gray"]
STANDIN = "mnist_small"
STANDIN_NOTE = ("stand-in for mnist: 10,000 real MNIST digits shipped in the "
                "package (7,000 train, 1,000 dev, 2,000 test)")

flags.DEFINE_list("datasets", PAPER_DATASETS,
                  f"Datasets, comma-separated: {', '.join(common.DATASETS)}.")
flags.DEFINE_bool("mnist_standin", True, "When mnist's files are missing, run "
                  f"{STANDIN} in its place, labelled as a stand-in.")
flags.register_validator(
    "datasets", lambda v: bool(v) and set(v) <= set(common.DATASETS),
    message=f"--datasets must list some of {', '.join(common.DATASETS)}")

FLAGS = flags.FLAGS

common.set_defaults(
    method=["standard", "alsh", "mc", "dropout", "adaptive_dropout"],
    depths=["3"])

PRESETS = {
    "quick": {"epochs": 3, "max_train": 10000, "max_test": 2000},
    "paper": common.PAPER_SCALE,
}

COLUMNS = (("dataset", "dataset"), ("method", "method"), ("status", "status"),
           ("depth", "depth"), ("batch_size", "batch"), ("epochs", "epochs"),
           ("test_accuracy", "final test acc"),
           ("seconds_per_epoch", "train s/epoch"),
           ("total_seconds", "total train s"))

MISSING = "missing data"


def dataset_specs(dataset: str) -> list[experiment.RunSpec]:
  return [common.make_spec(method=method, depth=depth, hidden=hidden,
                           batch_size=batch_size, dataset=dataset)
          for depth in common.ints(FLAGS.depths)
          for hidden in common.ints(FLAGS.hidden)
          for batch_size in common.ints(FLAGS.batch_size)
          for method in FLAGS.method]


def run_dataset(dataset: str) -> tuple[list[list[dict]], str | None]:
  """Runs (or resumes) one dataset's specs.

  Returns:
    (runs, error): the finished runs; error is the loader's message when the
    dataset's files are missing (runs then holds only runs finished earlier).
  """
  specs = dataset_specs(dataset)
  try:
    return common.run(specs, "dataset_table"), None
  except data.DatasetError as e:
    logging.warning(
        "dataset %s is not available, so its rows read %r.  Put its files in "
        "--data_dir/%s/, $%s/%s/ or ~/.cache/sampling_mlp/%s/ (or run with "
        "network access to download them), then rerun the same command: "
        "finished runs are kept.  The loader said: %s", dataset, MISSING,
        dataset, data.DATA_ENV_VAR, dataset, dataset, e)
    log = experiment.ResultsLog(common.out_path("dataset_table", "runs.jsonl"))
    rows = log.read()
    return [log.finished(s, rows) for s in specs], str(e)


def datasets_to_run() -> list[str]:
  return list(dict.fromkeys(FLAGS.datasets))


def main(argv):
  del argv
  common.apply_scale(PRESETS)
  summary = []
  order = []  # (dataset, note) for the pivot table
  missing = {}
  queue = datasets_to_run()
  for dataset in queue:
    runs, error = run_dataset(dataset)
    note = STANDIN_NOTE if dataset == STANDIN else ""
    done = {(r["method"], r["depth"], r["hidden"], r["batch_size"]): r
            for r in experiment.final_rows(runs)}
    for spec in dataset_specs(dataset):
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
      if (dataset == "mnist" and FLAGS.mnist_standin
          and STANDIN not in queue):
        logging.warning("running %s as a %s", STANDIN, STANDIN_NOTE)
        queue.append(STANDIN)
  write_outputs(summary, order)
  print(experiment.text_table(summary, COLUMNS))
  if missing:
    print(f"\nMissing data (see the warnings above for where to put the "
          f"files): {', '.join(missing)}")


def _cell(row) -> str:
  if row["status"] == MISSING:
    return MISSING
  return f"{row['test_accuracy']:.4f} ({row['total_seconds']:.1f} s)"


def write_outputs(summary: list[dict], order: list[tuple[str, str]]) -> None:
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
  experiment.write_text(common.out_path("dataset_table", "table.md"), "\n".join(
      [f"# Methods across datasets ({', '.join(FLAGS.depths)} hidden "
       "layers): final test accuracy (total training seconds)\n",
       experiment.markdown_table(pivot, pivot_columns)]
      + (["\n".join(notes) + "\n"] if notes else [])
      + ["## All runs\n", experiment.markdown_table(summary, COLUMNS)]))

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
  depths = ", ".join(FLAGS.depths)
  experiment.plot_grouped_bars(
      common.out_path("dataset_table", "table.png"), categories=categories,
      panels=[("final test accuracy", "accuracy", False, acc),
              ("training time", "total training seconds", True, sec)],
      title=f"{depths} hidden layers" + ("; * = stand-in" if notes else ""))


if __name__ == "__main__":
  common.run_main(main)
