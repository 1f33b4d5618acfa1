"""Time to accuracy against the best exact configuration.

Trains a grid of configurations (``--configs``), each to the same budget
of training seconds on the whole machine, one run after another, and
reports for each target dev accuracy which configuration of each method
got there first and how that compares with the fastest STANDARD
configuration, plus the best accuracy within 10, 30 and 100 seconds (see
:mod:`sampling_mlp.studies.frontier` and :mod:`sampling_mlp.budget`).

Command (Fashion-MNIST; Debian's ``dataset-fashion-mnist`` package or
``--data_dir``):

  python -m experiments.frontier

Configurations are ``method@b=B[,lr=LR][,option=value...]``, options by
their flag name or without the method's prefix, separated by commas (an
item without ``@`` continues the configuration before it) or semicolons:

  python -m experiments.frontier --configs=standard@b=128,mc@b=128,ratio=0.3

Scale (``--scale``; flags given on the command line win):

* ``default``: the 16 configurations of ``studies.frontier.DEFAULT_CONFIGS``
  at widths 1000 and 4096, 3 hidden layers, 60 training seconds each, one
  seed: 32 runs, 67 minutes on the project's 2-core CPU (measured
  2026-12-02; the budget was chosen for that: each run also spends a few
  seconds compiling and, at width 4096, about 4 s per dev pass and 8 s per
  test pass, of 9 points, outside the clock: 80 s of wall time per run at
  width 1000, 170 s at 4096);
* ``quick``: width 1000 only, 30 training seconds: about 13 minutes (16
  runs of 30 s plus about 20 s each of compilation and evaluation);
* ``paper``: widths 1000 and 4096, 600 training seconds, seeds 0, 1 and 2
  and learning rates 3e-4, 1e-3 and 3e-3 (each configuration keeps its
  best): for a bigger machine or a cluster (``--executor=slurm``, one node
  per run).

Runs are timed, so at most one runs at a time on a machine: ``--executor=
local`` needs ``--max_parallel=1``; on SLURM give each run a node of its
own (``--slurm_extra=exclusive``).  Rerun the same command to resume.
"""

from absl import app, flags

from experiments import common
from sampling_mlp.studies import frontier

flags.DEFINE_list("configs", list(frontier.DEFAULT_CONFIGS),
                  "Configurations, method@b=B[,lr=LR][,option=value...]; an "
                  "item without @ continues the one before it.")
flags.DEFINE_float("budget_seconds", 60.0, "Training seconds per run.",
                   lower_bound=0.001)
flags.DEFINE_list("targets", [str(t) for t in frontier.DEFAULT_TARGETS],
                  "Dev accuracies whose time to reach is reported.")
flags.DEFINE_list("learning_rates", None, "Learning rates to try for each "
                  "configuration without its own lr= (each keeps the one "
                  "with the best dev accuracy); default: --learning_rate.")

FLAGS = flags.FLAGS

common.set_defaults(dataset="fashion_mnist", hidden=["1000", "4096"],
                    depths=["3"], scale="default")

PRESETS = {
    "default": {"budget_seconds": 60.0, "hidden": ["1000", "4096"]},
    "quick": {"budget_seconds": 30.0, "hidden": ["1000"]},
    "paper": {"budget_seconds": 600.0, "hidden": ["1000", "4096"],
              "seeds": ["0", "1", "2"],
              "learning_rates": ["3e-4", "1e-3", "3e-3"]},
}


def _floats(name: str, values) -> tuple[float, ...]:
  try:
    return tuple(float(v) for v in values)
  except ValueError:
    raise app.UsageError(f"--{name} must be a comma-separated list of "
                         f"numbers, got {','.join(values)}") from None


def make_frontier() -> frontier.Frontier:
  """The study the flags describe (after the scale's preset)."""
  ex = common.executor()
  if ex.kind == "local" and ex.max_parallel != 1:
    raise app.UsageError("the frontier times its runs, so they must not "
                         "share the machine: with --executor=local give "
                         "--max_parallel=1")
  try:
    configs = frontier.parse_configs(FLAGS.configs)
    grid = common.grid()
    return frontier.Frontier(
        configs=tuple(configs), hidden=grid.hidden, depths=grid.depths,
        budget_seconds=FLAGS.budget_seconds,
        learning_rates=(_floats("learning_rates", FLAGS.learning_rates)
                        if FLAGS.learning_rates else (FLAGS.learning_rate,)),
        seeds=common.seeds(), targets=_floats("targets", FLAGS.targets),
        settings={k: grid.settings[k] for k in
                  ("dataset", "optimizer", "activation", "max_train",
                   "max_test", "bias", "weight_norm")},
        method_values=grid.method_values)
  except ValueError as e:
    raise app.UsageError(str(e)) from None


main = common.study(PRESETS,
                    lambda: frontier.run(common.runner(), make_frontier()))

if __name__ == "__main__":
  common.run_main(main)
