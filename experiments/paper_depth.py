"""The paper-scale depth study's report, from rows already written.

Trains nothing: reads the rows of ``experiments.depth_sweep --scale=paper``
runs (any methods, networks and variants in one ``runs.jsonl``), and writes
the report's table (final test accuracy by depth, seconds per epoch, total
training seconds) beside the paper's, the per-epoch test-accuracy curves
and the accuracy-against-depth plot (:mod:`sampling_mlp.studies.paper_depth`).

Regenerate the report's section from the committed rows:

  python -m experiments.paper_depth

While a study is still training, add its checkpoints to show how far each
unfinished run got:

  python -m experiments.paper_depth --results=results/depth_sweep/runs.jsonl \\
      --checkpoints=results/checkpoints --out_dir=results/depth_sweep \
      --figures_dir=results/depth_sweep

(``--figures_dir`` defaults to ``docs/figures``, the committed figures.)
"""

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
FLAGS = flags.FLAGS


def main(argv):
  del argv
  runs = paper_depth.read_runs(FLAGS.results, FLAGS.checkpoints)
  try:
    print(paper_depth.write(runs, FLAGS.out_dir,
                            figures_dir=FLAGS.figures_dir))
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  app.run(main)
