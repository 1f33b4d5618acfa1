"""Per-example training cost against hidden width, and where each sampled
method's cost falls below STANDARD's best.

For every method and width (``--hidden``, at ``--depth`` hidden layers)
it times full training steps at each of ``--batch_size`` (and STANDARD
also at each of ``--standard_batch_sizes``), keeps each method's best
batch size, fits a slope on log-log axes and finds the crossover widths;
it also reports each method's training-state memory, and widths that do
not fit in memory as such (:mod:`sampling_mlp.studies.scaling`).

Command:

  python -m experiments.scaling

Scale (``--scale``; flags given on the command line win):

* ``default``: widths 512 to 16,384 (doubling), 3 hidden layers, every
  method at batch sizes 1, 32 and 128, STANDARD also at 512: about 33
  minutes on the project's 2-core CPU (measured 2026-12-02: 12.5 minutes
  up to 8,192, then 20 for 16,384, where a dense step at batch 512 takes
  about 24 s);
* ``quick``: widths 512 to 4,096: about 6 minutes;
* ``paper``: as ``default``.

Timing runs one measurement at a time, each alone in the process (the
largest states do not fit twice); run nothing else meanwhile.  Rows are
appended to ``--out_dir``/scaling/timings.jsonl as they are measured, and
a rerun skips those it finds (delete the file to measure afresh).
"""

from absl import flags

from experiments import common
from sampling_mlp import registry
from sampling_mlp.optim import OptimConfig
from sampling_mlp.studies import scaling

flags.DEFINE_alias("methods", "method")
flags.DEFINE_integer("depth", 3, "Hidden layers.", lower_bound=1)
flags.DEFINE_list("standard_batch_sizes", ["512"], "More batch sizes at "
                  "which STANDARD (the reference) is timed.")
common.check_int_list("standard_batch_sizes")
flags.DEFINE_integer("repeats", 3, "Timed calls per measurement; the "
                     "median is reported.", lower_bound=1)
flags.DEFINE_float("memory_gb", 0.0, "Memory a step may use, in GiB (0: "
                   "what the machine has available at the start).",
                   lower_bound=0.0)

FLAGS = flags.FLAGS

WIDTHS = [str(512 * 2 ** i) for i in range(6)]  # 512 ... 16384
common.set_defaults(method=list(registry.names()), hidden=WIDTHS,
                    batch_size=["1", "32", "128"], scale="default")

PRESETS = {"default": {"hidden": WIDTHS}, "quick": {"hidden": WIDTHS[:4]},
           "paper": {"hidden": WIDTHS}}


def make_scaling() -> scaling.Scaling:
  return scaling.Scaling(
      methods=tuple(FLAGS.method), hidden=tuple(common.ints(FLAGS.hidden)),
      depth=FLAGS.depth, batch_sizes=tuple(common.ints(FLAGS.batch_size)),
      standard_batch_sizes=tuple(common.ints(FLAGS.standard_batch_sizes)),
      method_values=common.method_values(),
      activation=FLAGS.activation,
      optim=OptimConfig(name=FLAGS.optimizer,
                        learning_rate=FLAGS.learning_rate),
      memory_bytes=int(FLAGS.memory_gb * 2**30) or None,
      repeats=FLAGS.repeats)


main = common.study(PRESETS,
                    lambda: scaling.run(common.runner(), make_scaling()))

if __name__ == "__main__":
  common.run_main(main)
