"""Depth study: test accuracy and training time against hidden layers.

Reproduces the paper's depth study (1, 3, 5, 7 hidden layers of 1000 nodes;
final test accuracy and training time per method).

Command (the README's main job; a few minutes on a 2-core CPU, on the
``mnist_small`` digits shipped in the package):

  python -m experiments.depth_sweep --method=standard

Several methods at once: ``--method=standard,mc``.  Writes under
``--out_dir``/depth_sweep/: ``runs.jsonl`` (one row per run and epoch; rerun
the same command to resume), ``<tag>.md`` (summary table), ``<tag>_depth.png``
(final test accuracy and total training time against depth) and
``<tag>_time.png`` (cumulative training time against epoch).
"""

from absl import app, flags, logging

from experiments import common
from sampling_mlp import experiment

flags.DEFINE_list("depths", ["1", "3", "5", "7"], "Hidden-layer counts.")

FLAGS = flags.FLAGS


def sweep_specs() -> list[experiment.RunSpec]:
  specs = []
  for method in FLAGS.method:
    for hidden in common.ints(FLAGS.hidden):
      for batch_size in common.ints(FLAGS.batch_size):
        for depth in common.ints(FLAGS.depths):
          specs.append(experiment.RunSpec.make(
              method=method, method_values=common.method_values(),
              dataset=FLAGS.dataset, depth=depth, hidden=hidden,
              batch_size=batch_size, epochs=FLAGS.epochs, seed=FLAGS.seed,
              learning_rate=FLAGS.learning_rate, optimizer=FLAGS.optimizer,
              activation=FLAGS.activation, max_train=FLAGS.max_train,
              max_test=FLAGS.max_test))
  return specs


def main(argv):
  del argv
  specs = sweep_specs()
  runs = experiment.run_specs(
      specs, results_path=common.out_path("depth_sweep", "runs.jsonl"),
      data_dir=FLAGS.data_dir, progress=FLAGS.progress)
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
  app.run(main)
