"""Error propagation: the ALSH-APPROX theorem, and measured errors against depth.

Reproduces the paper's negative result ("ALSH-APPROX does not scale": with
linear activations and every node's active part c times its inactive part,
the approximate activation's error ratio is ((c+1)/c)^k - 1 at depth k) and
measures the same thing on real networks.

Command (4.5 minutes wall on the project's 2-core CPU, shared with other
jobs; results in docs/error_propagation.md):

  python -m experiments.error_propagation

The theorem's own setting, linear networks with every bias set to 0 (2 min):

  python -m experiments.error_propagation --part=networks --zero_bias --activations=linear

* Part 1 (``--part=theorem``, instant): the theorem's table for ``--c``
  (default 5), closed form beside the measurement on a network built to meet
  the assumption exactly, k = 1..7.
* Part 2 (``--part=networks``): MLPs of ``--hidden`` (first value) nodes
  and each of ``--depths`` hidden layers, for each of ``--activations``,
  freshly initialised and after ``--train_epochs`` of exact training on
  ``--max_train`` examples (batch ``--batch_size``); the first
  ``--eval_examples`` test inputs go through the exact network and through
  the training-time forward pass of every variant of every ``--method``
  (default alsh, mc, dropout; any registered method works), on batches of
  ``--eval_batch``, ``--num_keys`` times each.  A method's variants are
  every combination of its ``analysis_grid`` (ALSH-APPROX: every transform
  and hash; MC-APPROX: every sampler at ratios 0.1 and 0.5; Dropout: keep
  probabilities 0.05 and 0.5), with ``--grid=OPTION=V1,V2`` (repeatable)
  replacing an option's values, e.g. ``--grid=mc_ratio=0.3``; the other
  method flags (``--alsh_K``, ``--alsh_active_fraction``, ...) apply to
  every variant.
* ``--part=report`` rewrites ``table.md`` and the plots from ``rows.jsonl``.

Scale (``--scale``; flags given on the command line win):

* ``quick`` (default): depths 1..10, width 1000, 1 epoch of training on
  2,000 examples, 256 test inputs, 3 keys, every variant (16).  4 min 23 s
  to 4 min 34 s.
* ``paper``: the same networks trained as in the paper (50 epochs on the
  full training split): hours on a CPU.

``--epochs`` and ``--activation`` of the shared flags are not used here
(``--train_epochs`` and ``--activations`` are).

Writes under ``--out_dir``/error_propagation/: ``theorem.md``,
``rows.jsonl`` (one row per network, variant and key: per-layer relative
errors, top-1 agreement, the effective c of node-subset methods),
``table.md`` (means and spreads over keys, growth rates, the node-subset
methods against the theorem), ``error_vs_depth_<activation>_<init|trained>.png``
and ``theorem_<activation>_<init|trained>.png``.
"""

from absl import app, flags

from experiments import common
from sampling_mlp import error_analysis, error_report

flags.DEFINE_enum("part", "all", ["all", "theorem", "networks", "report"],
                  "Which part to run; 'report' rewrites table.md and the "
                  "plots from an existing rows.jsonl.")
flags.DEFINE_float("c", 5.0, "The theorem table's c (active part / inactive "
                   "part of every node's sum).", lower_bound=1e-9)
flags.DEFINE_integer("num_keys", 3, "Repetitions of every approximate pass.",
                     lower_bound=1)
flags.DEFINE_integer("train_epochs", 1, "Epochs of exact training for the "
                     "'trained' networks (0: only freshly initialised ones).",
                     lower_bound=0)
flags.DEFINE_integer("eval_examples", 256, "Test inputs pushed through the "
                     "networks.", lower_bound=1)
flags.DEFINE_integer("eval_batch", 64, "Examples per approximate forward "
                     "pass (MC-APPROX's estimate depends on the batch).",
                     lower_bound=1)
flags.DEFINE_bool("zero_bias", False, "Set every bias to 0 before measuring "
                  "(the theorem's setting; changes what trained networks "
                  "compute).")
flags.DEFINE_list("activations", ["linear", "relu"], "Hidden activations.")
flags.DEFINE_multi_string("grid", [], "OPTION=V1,V2,...: the values of a "
                          "method option to measure (replaces the method's "
                          "default grid for that option); repeatable.")

FLAGS = flags.FLAGS

common.set_defaults(method=list(error_analysis.DEFAULT_METHODS))

DEPTHS = [str(d) for d in range(1, 11)]
PRESETS = {
    "quick": {"depths": DEPTHS, "hidden": ["1000"], "max_train": 2000,
              "train_epochs": 1},
    # The paper does not run this study; "paper" measures its networks: the
    # full splits and 50 epochs of training.
    "paper": {"depths": DEPTHS, "hidden": ["1000"], "max_train": None,
              "max_test": None, "train_epochs": 50},
}


def config() -> error_analysis.Config:
  try:
    variants = error_analysis.default_variants(
        FLAGS.method, error_analysis.parse_grid(FLAGS.grid),
        common.method_values())
    return error_analysis.Config(
        dataset=FLAGS.dataset, data_dir=FLAGS.data_dir,
        max_train=FLAGS.max_train, max_test=FLAGS.max_test,
        eval_examples=FLAGS.eval_examples,
        depths=tuple(common.ints(FLAGS.depths)),
        hidden=common.ints(FLAGS.hidden)[0],
        activations=tuple(FLAGS.activations),
        train_epochs=FLAGS.train_epochs,
        batch_size=common.ints(FLAGS.batch_size)[0],
        learning_rate=FLAGS.learning_rate, seed=FLAGS.seed,
        num_keys=FLAGS.num_keys, variants=tuple(variants),
        eval_batch=FLAGS.eval_batch, zero_bias=FLAGS.zero_bias,
        progress=FLAGS.progress)
  except ValueError as e:
    raise app.UsageError(str(e)) from None


def main(argv):
  del argv
  common.apply_scale(PRESETS)
  try:
    print(error_report.run(
        config(), part=FLAGS.part, c=FLAGS.c,
        out_dir=common.runner().path("error_propagation", ""),
        loader=common.runner().loader()))
  except FileNotFoundError as e:
    raise app.UsageError(str(e)) from None


if __name__ == "__main__":
  common.run_main(main)
