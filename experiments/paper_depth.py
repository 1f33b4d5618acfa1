"""The paper-scale depth study's report, from rows already written.

Trains nothing: reads the rows of ``experiments.depth_sweep --scale=paper``
runs (any methods, networks and variants in one ``runs.jsonl``), and writes
the report's table (final test accuracy by depth, median seconds per
epoch, total training seconds) beside the paper's, the per-epoch
test-accuracy curves, the accuracy-against-depth plot and what is left of
the planned grid (:mod:`sampling_mlp.studies.paper_depth`).

Regenerate the report's section from the committed rows:

  python -m experiments.paper_depth

While a study is still training, add its checkpoints to show how far each
unfinished run got:

  python -m experiments.paper_depth --results=results/depth_sweep/runs.jsonl \\
      --checkpoints=results/checkpoints --out_dir=results/depth_sweep \
      --figures_dir=results/depth_sweep

(``--figures_dir`` defaults to ``docs/figures``, the committed figures.)

The report ends with what is left of the planned grid (``--plan_*``; by
default every method at its paper batch size, both networks, depths 1, 3,
5 and 7, seeds 0 and 1, 50 epochs on the full Fashion-MNIST at width 1000)
and its cost, estimated from the seconds per epoch measured so far, on 1,
2, 4 and 8 machines of ``--cores`` cores (default: this machine's), and
the full grid's cost: the finished runs' measured seconds plus that
estimate.  Once every planned run has finished, that part is headed "The
grid's cost" and gives the full grid's measured cost alone.
"""

import os
import sys

from absl import app, flags

from sampling_mlp.studies import paper_depth

RESULTS = "docs/results/paper_depth/depth_sweep/runs.jsonl"

flags.DEFINE_string("results", RESULTS, "The study's runs.jsonl.")
flags.DEFINE_string("checkpoints", None, "Also report the runs still "
                    "training whose checkpoints are in this folder (the "
                    "sweep's <out_dir>/checkpoints).")
flags.DEFINE_string("out_dir", "docs/results/paper_depth",
                    "Where paper_depth.md is written.")
flags.DEFINE_string("figures_dir", "docs/figures", "Where the figures "
                    "paper_depth_curves.png and paper_depth.png are written.")
flags.DEFINE_list("plan_methods", None, "The planned grid's methods "
                  "(default: every method with a paper batch size).")
flags.DEFINE_list("plan_networks", ["authors", "default"],
                  "The planned grid's networks.")
flags.DEFINE_list("plan_depths", ["1", "3", "5", "7"],
                  "The planned grid's hidden-layer counts.")
flags.DEFINE_list("plan_seeds", ["0", "1"], "The planned grid's seeds.")
flags.DEFINE_integer("plan_epochs", 50, "The planned grid's epochs per run.")
flags.DEFINE_string("plan_dataset", "fashion_mnist", "The planned grid's "
                    "dataset (all of it).")
flags.DEFINE_integer("plan_hidden", 1000, "The planned grid's width.")
flags.DEFINE_integer("cores", len(os.sched_getaffinity(0)), "Runs at once "
                     "(one per core) on each machine, for the cost of what "
                     "is left (default: the cores this process may use).")
FLAGS = flags.FLAGS


def _ints(name: str) -> tuple[int, ...]:
  try:
    return tuple(int(v) for v in FLAGS[name].value)
  except ValueError:
    raise ValueError(f"--{name} takes whole numbers separated by commas, "
                     f"got {','.join(FLAGS[name].value)!r}") from None


def main(argv):
  del argv
  try:
    plan = paper_depth.Plan.paper(
        methods=FLAGS.plan_methods, networks=FLAGS.plan_networks,
        depths=_ints("plan_depths"), seeds=_ints("plan_seeds"),
        epochs=FLAGS.plan_epochs, dataset=FLAGS.plan_dataset,
        hidden=FLAGS.plan_hidden)
    if FLAGS.cores < 1:
      raise ValueError(f"--cores must be at least 1, got {FLAGS.cores}")
    runs = paper_depth.read_runs(FLAGS.results, FLAGS.checkpoints)
    print(paper_depth.write(runs, FLAGS.out_dir,
                            figures_dir=FLAGS.figures_dir, plan=plan,
                            cores=FLAGS.cores))
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  app.run(main)
