"""Training time and dev accuracy per epoch, single-sample setting.

Reproduces the paper's per-epoch comparison in the single-sample setting
(the ``_S`` runs, batch size 1): cumulative training time and dev accuracy
after each epoch for every method, at 3 and at 7 hidden layers.

Command:

  python -m experiments.time_accuracy --dataset=fashion_mnist

Scale (``--scale``; flags given on the command line win):

* ``quick`` (default): 3 epochs on 1,500 training examples (2,000 dev and
  test), width 1000, batch size 1, depths 3 and 7, all five methods:
  8.5 minutes on the project's 2-core CPU while other jobs shared it.
  Batch size 1 means one training step per example; that is what makes
  these runs slow.
* ``paper``: 50 epochs, the full splits, width 1000.

Writes under ``--out_dir``/time_accuracy/: ``runs.jsonl`` (resumable),
``<dataset>.md`` (summary table, then every epoch), and one figure per depth,
``<dataset>_depth<d>.png``: cumulative training seconds (log scale) and dev
accuracy against epoch, a line per method.
"""

from absl import app, flags, logging

from experiments import common
from sampling_mlp import experiment

FLAGS = flags.FLAGS

ALL_METHODS = ["standard", "alsh", "mc", "dropout", "adaptive_dropout"]
common.set_defaults(method=ALL_METHODS, depths=["3", "7"], batch_size=["1"])

PRESETS = {
    "quick": {"epochs": 3, "max_train": 1500, "max_test": 2000},
    "paper": common.PAPER_SCALE,
}

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


def specs() -> list[experiment.RunSpec]:
  return [common.make_spec(method=method, depth=depth, hidden=hidden,
                           batch_size=batch_size)
          for depth in common.ints(FLAGS.depths)
          for hidden in common.ints(FLAGS.hidden)
          for batch_size in common.ints(FLAGS.batch_size)
          for method in FLAGS.method]


def summarize(runs) -> list[dict]:
  """``final_rows`` plus the dev accuracy of every epoch."""
  summary = experiment.final_rows(runs)
  for row, rows in zip(summary, [r for r in runs if r]):
    row["dev_by_epoch"] = experiment.format_values(
        [r["dev_accuracy"] for r in rows])
  return summary


def write_outputs(runs) -> list[dict]:
  summary = summarize(runs)
  tag = FLAGS.dataset
  md = common.out_path("time_accuracy", f"{tag}.md")
  experiment.write_text(md, "\n".join([
      f"# Time and dev accuracy per epoch: {tag}, batch size "
      f"{', '.join(FLAGS.batch_size)} (the paper's single-sample runs)\n",
      experiment.markdown_table(summary, COLUMNS),
      "## Every epoch\n",
      experiment.markdown_table(
          experiment.per_epoch_rows(runs, [k for k, _ in EPOCH_COLUMNS]),
          EPOCH_COLUMNS)]))
  label = lambda rows: (rows[0]["method"] if len(FLAGS.batch_size) == 1
                        and len(FLAGS.hidden) == 1
                        else experiment.run_label(rows))
  for depth in common.ints(FLAGS.depths):
    at = [rows for rows in runs if rows and rows[0]["depth"] == depth]
    experiment.plot_panels([
        experiment.Panel(experiment.epoch_lines(at, "cumulative_seconds",
                                                label_fn=label),
                         xlabel="epoch", ylabel="cumulative training seconds",
                         title="training time", log_y=True),
        experiment.Panel(experiment.epoch_lines(at, "dev_accuracy",
                                                label_fn=label),
                         xlabel="epoch", ylabel="dev accuracy",
                         title="dev accuracy"),
    ], common.out_path("time_accuracy", f"{tag}_depth{depth}.png"),
        title=f"{tag}: {depth} hidden layers, batch size "
        f"{', '.join(FLAGS.batch_size)}")
  logging.info("wrote %s and plots", md)
  return summary


def main(argv):
  del argv
  common.apply_scale(PRESETS)
  runs = common.run(specs(), "time_accuracy")
  summary = write_outputs(runs)
  print(experiment.text_table(summary, COLUMNS))


if __name__ == "__main__":
  common.run_main(main)
