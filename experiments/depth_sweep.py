"""Depth study: test accuracy and training time against hidden layers.

Reproduces the paper's depth study (1, 3, 5, 7 hidden layers of 1000 nodes;
final test accuracy and training time per method).

Command (the README's main job; a few minutes on a 2-core CPU, on the
``mnist_small`` digits shipped in the package):

  python -m experiments.depth_sweep --method=standard

Several methods at once, on Fashion-MNIST (one combined table and plot):

  python -m experiments.depth_sweep \
      --method=standard,alsh,mc,dropout,adaptive_dropout --dataset=fashion_mnist

Scale (``--scale``; flags given on the command line win):

* ``quick`` (default): 3 epochs on the full splits, width 1000, batch 32 --
  the flag defaults, so that a plain command trains on all the training data
  (the main job on ``mnist_small``: well under a minute per method).  For a
  quick look at a large dataset add ``--max_train=5000 --max_test=2000`` (as
  ``scripts/reproduce_paper.sh quick`` does): all five methods on
  Fashion-MNIST then take about 4 minutes on the project's 2-core CPU.
* ``paper``: 50 epochs, the full splits, width 1000.

Writes under ``--out_dir``/depth_sweep/: ``runs.jsonl`` (one row per run and
epoch; rerun the same command to resume), ``<tag>.md`` (summary table),
``<tag>_depth.png`` (final test accuracy and total training time against
depth) and ``<tag>_time.png`` (cumulative training time against epoch), with
``<tag> = <dataset>_<methods>``.
"""

from absl import app, flags, logging

from experiments import common
from sampling_mlp import experiment

FLAGS = flags.FLAGS

PRESETS = {
    "quick": {"epochs": 3},
    "paper": common.PAPER_SCALE,
}


def sweep_specs() -> list[experiment.RunSpec]:
  return [common.make_spec(method=method, depth=depth, hidden=hidden,
                           batch_size=batch_size)
          for method in FLAGS.method
          for hidden in common.ints(FLAGS.hidden)
          for batch_size in common.ints(FLAGS.batch_size)
          for depth in common.ints(FLAGS.depths)]


def main(argv):
  del argv
  common.apply_scale(PRESETS)
  runs = common.run(sweep_specs(), "depth_sweep")
  summary = experiment.final_rows(runs)
  tag = f"{FLAGS.dataset}_{'-'.join(FLAGS.method)}"
  md = common.out_path("depth_sweep", f"{tag}.md")
  experiment.write_text(md, experiment.markdown_table(
      summary, experiment.SUMMARY_COLUMNS))
  experiment.plot_depth(summary, common.out_path("depth_sweep",
                                                 f"{tag}_depth.png"),
                        title=f"{FLAGS.dataset}: depth study")
  experiment.plot_per_epoch(runs, common.out_path("depth_sweep",
                                                  f"{tag}_time.png"),
                            ylabel="cumulative training seconds",
                            title=f"{FLAGS.dataset}: training time")
  print(experiment.text_table(summary, experiment.SUMMARY_COLUMNS))
  logging.info("wrote %s and plots", md)


if __name__ == "__main__":
  common.run_main(main)
