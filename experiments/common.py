"""Flags shared by every entry point, and the glue from flags to the library.

Importing this module defines the common flags once.  Each registered
method's options (``registry.all_options()``) become flags too, so a new
method needs no change here.  ``--hidden``, ``--batch_size`` and ``--depths``
take lists (``--hidden=1000,4096``) in every entry point.

Scale: every reproduction entry point takes ``--scale=quick`` (default: a
reduced setting that finishes in minutes on a 2-core CPU) or
``--scale=paper`` (the paper's sizes: 50 epochs, full data, width 1000);
the time-to-accuracy and scaling entry points also have ``--scale=default``,
their own default, larger than ``quick``.  An entry point declares its presets (:func:`presets`) and builds its ``main``
with :func:`study`, which applies the preset and makes the entry point's one
call into the library; a preset sets a flag only if the command line did
not, so ``--scale=paper --epochs=5`` runs 5 epochs.  :func:`grid` and
:func:`runner` turn the shared flags into the library's
``studies.Grid`` and ``studies.Runner``.

Execution (every sweep entry point): ``--executor`` (``inline``, ``local``,
``slurm``) with ``--max_parallel`` and the ``--slurm_*`` flags, ``--seeds``,
``--dry_run`` and ``--keep_checkpoints``; see
:mod:`sampling_mlp.executors` and the README's "Running on a cluster".  An
entry point whose runs failed prints its table of the others, names the
failed ones and exits with status 1; rerunning it retries them.
"""

from __future__ import annotations

import sys
from typing import Any, Mapping

from absl import app, flags, logging

from sampling_mlp import data, executors, experiment, layers, registry
from sampling_mlp import studies
from sampling_mlp.optim import OPTIMIZERS

DATASETS = ("mnist_small",) + tuple(d for d in data.DATASETS
                                    if d != "mnist_small")

FLAGS = flags.FLAGS

flags.DEFINE_list("method", ["standard"],
                  "Method(s), comma-separated; see registry.names().")
flags.DEFINE_enum("dataset", "mnist_small", DATASETS, "Dataset name.")
flags.DEFINE_string("data_dir", None,
                    "Directory holding the dataset files (searched first).")
flags.DEFINE_list("hidden", ["1000"], "Hidden width(s).")
flags.DEFINE_list("batch_size", ["32"], "Batch size(s).")
flags.DEFINE_integer("epochs", 3, "Training epochs.", lower_bound=1)
flags.DEFINE_float("learning_rate", 1e-3, "Learning rate.", lower_bound=0.0)
flags.DEFINE_enum("optimizer", "adam", OPTIMIZERS, "Optimizer.")
flags.DEFINE_enum("activation", "leaky_relu", layers.ACTIVATIONS,
                  "Hidden activation.")
flags.DEFINE_enum("network", "default", tuple(registry.NETWORKS),
                  "The MLP's layers: 'default' (biases, no weight "
                  "normalisation: this project's), or 'authors' (no bias, "
                  "every layer weight-normalised, as the authors' code "
                  "builds them; --scale=paper's).  --bias and "
                  "--weight_norm, where given, win.")
flags.DEFINE_bool("bias", None, "Layers with biases (default: as --network "
                  "has them; true for 'default', false for 'authors').")
flags.DEFINE_bool("weight_norm", None, "Weight-normalised layers, g * v / "
                  "||v|| per node with g and v trained (Salimans and Kingma "
                  "2016; default: as --network has them).")
flags.DEFINE_integer("seed", 0, "Random seed (one run per configuration); "
                     "--seeds runs several.")
flags.DEFINE_list("seeds", None, "Seeds, comma-separated (--seeds=0,1,2): "
                  "every configuration runs once per seed, and tables and "
                  "plots show the mean and standard deviation over them.  "
                  "Replaces --seed.")
flags.DEFINE_string("out_dir", "results", "Where results are written.")
flags.DEFINE_integer("max_train", None, "Use at most this many training "
                     "examples (quick runs).", lower_bound=1)
flags.DEFINE_integer("max_test", None, "Use at most this many dev and test "
                     "examples (quick runs).", lower_bound=1)
flags.DEFINE_bool("progress", True, "Show progress bars.")
flags.DEFINE_list("depths", ["1", "3", "5", "7"], "Hidden-layer counts "
                  "(each entry point may set its own default).")
flags.DEFINE_bool("download", True, "Download missing dataset files into "
                  "~/.cache/sampling_mlp/ (needs network); with --nodownload "
                  "a missing dataset fails at once.")

flags.DEFINE_enum("executor", "inline", executors.EXECUTORS,
                  "Where runs execute: 'inline' (this process, one after "
                  "another), 'local' (a worker process per run, "
                  "--max_parallel at a time, each pinned to its own cores) "
                  "or 'slurm' (one SLURM job array per sweep, through "
                  "submitit).")
flags.DEFINE_integer("max_parallel", 0, "--executor=local: workers at a "
                     "time, each pinned to its own share of the cores "
                     "(0: one per core).", lower_bound=0)
flags.DEFINE_string("slurm_partition", None, "--executor=slurm: the "
                    "partition (default: the cluster's).")
flags.DEFINE_integer("slurm_cpus_per_task", 1, "--executor=slurm: CPUs per "
                     "run.", lower_bound=1)
flags.DEFINE_string("slurm_time", "12:00:00", "--executor=slurm: time limit "
                    "per run (minutes, H:M:S or D-H:M:S).  A run that hits "
                    "it is reported; rerunning resumes it from its last "
                    "epoch.")
flags.DEFINE_string("slurm_mem", None, "--executor=slurm: memory per run "
                    "(e.g. 4G; default: the cluster's).")
flags.DEFINE_integer("slurm_array_parallelism", 256, "--executor=slurm: "
                     "array tasks running at a time.", lower_bound=1)
flags.DEFINE_multi_string("slurm_extra", [], "--executor=slurm: any other "
                          "sbatch option as NAME=VALUE (or NAME for a "
                          "switch); repeatable: --slurm_extra=account=lab "
                          "--slurm_extra=qos=high.")
flags.DEFINE_bool("dry_run", False, "Print the runs the sweep would start "
                  "(finished ones skipped) and their count; run nothing.")
flags.DEFINE_bool("keep_checkpoints", False, "Keep finished runs' "
                  "checkpoints (--out_dir/checkpoints/<run_id>/); by default "
                  "a run's checkpoint is deleted once its rows are written.")

# The model (sampling_mlp.cnn): the MLP, or a CNN whose head is an MLP of
# --head_depth hidden layers of --head_hidden nodes.
from sampling_mlp import cnn as _cnn  # pylint: disable=wrong-import-position
flags.DEFINE_enum("model", "mlp", _cnn.MODELS, "Model: 'mlp' (the paper's "
                  "MLP), or a CNN of the paper's appendix: 'lenet' (LeNet-5 "
                  "style) or 'resnet18' (the CIFAR ResNet-18).  Read by "
                  "experiments.cnn and experiments.benchmark.")
flags.DEFINE_integer("cnn_width", 0, "CNN channels of the first stage (0: "
                     "the model's default, 6 for lenet, 64 for resnet18).",
                     lower_bound=0)
flags.DEFINE_integer("head_depth", -1, "Hidden layers of a CNN's MLP head "
                     "(-1: the model's default, 2 for lenet, 0 for resnet18, "
                     "whose head is one layer).", lower_bound=-1)
flags.DEFINE_integer("head_hidden", 0, "Width of a CNN head's hidden layers "
                     "(0: the model's default, 128 for lenet, 512 for "
                     "resnet18).", lower_bound=0)


def cnn_head() -> tuple[int, int]:
  """``(--head_depth, --head_hidden)`` with the model's defaults filled."""
  model = FLAGS.model
  depth = (FLAGS.head_depth if FLAGS.head_depth >= 0
           else _cnn.DEFAULT_HEAD_DEPTH[model])
  hidden = FLAGS.head_hidden or _cnn.DEFAULT_HEAD_HIDDEN[model]
  return depth, hidden


SCALES = ("quick", "default", "paper")
flags.DEFINE_enum("scale", "quick", SCALES,
                  "'quick': a reduced setting that finishes in minutes on a "
                  "2-core CPU (each entry point's docstring gives it); "
                  "'default': the setting of entry points whose own default "
                  "is larger than 'quick' (experiments.frontier, "
                  "experiments.scaling); 'paper': the paper's sizes (50 "
                  "epochs, full data, width 1000), or a bigger machine's.  "
                  "Flags given on the command line win over the scale's "
                  "values.")

# The paper's sizes (Ebrahimi et al. 2025): 50 epochs, the full splits,
# hidden layers of 1000 nodes, the authors' network (no bias, weight
# normalisation); each method at its ``MethodSpec.paper_batch_size`` unless
# --batch_size is given (see :func:`grid`).
PAPER_SCALE = {"epochs": 50, "max_train": None, "max_test": None,
               "hidden": ["1000"], "network": "authors"}


def check_int_list(name: str, lower: int = 1) -> None:
  """Validates the list flag ``name``: every entry an integer >= ``lower``
  (an empty list passes)."""
  def check(values):
    if values is None:  # a list flag without a default
      return True
    try:
      ints = [int(v) for v in values]
    except ValueError:
      return False
    return all(v >= lower for v in ints)
  flags.register_validator(
      name, check, message=f"--{name} must be a comma-separated list of "
      f"integers >= {lower}")


check_int_list("hidden")
check_int_list("batch_size")
check_int_list("depths")
check_int_list("seeds", lower=0)


def _check_slurm_time(value):
  try:
    executors.parse_slurm_time(value)
  except ValueError as e:
    raise flags.ValidationError(str(e)) from None
  return True


flags.register_validator("slurm_time", _check_slurm_time)


def _define_method_options() -> None:
  for opt in registry.all_options():
    if opt.name in FLAGS:
      continue
    if opt.choices is not None:
      flags.DEFINE_enum(opt.name, opt.default, opt.choices, opt.help)
    elif isinstance(opt.default, bool):
      flags.DEFINE_bool(opt.name, opt.default, opt.help)
    elif isinstance(opt.default, int):
      flags.DEFINE_integer(opt.name, opt.default, opt.help)
    elif isinstance(opt.default, float):
      flags.DEFINE_float(opt.name, opt.default, opt.help)
    else:
      flags.DEFINE_string(opt.name, opt.default, opt.help)

    def check(value, opt=opt):
      try:
        opt.validate(value)
      except ValueError as e:
        raise flags.ValidationError(str(e)) from None
      return True
    flags.register_validator(opt.name, check)


_define_method_options()


def _check_methods(values):
  known = registry.names()
  bad = [m for m in values if m not in known]
  if bad:
    raise flags.ValidationError(
        f"unknown method(s) {', '.join(bad)}; known methods: "
        f"{', '.join(known)}")
  return True


flags.register_validator("method", _check_methods)


def ints(values) -> list[int]:
  return [int(v) for v in values]


def method_values() -> dict:
  """The current value of every method option flag."""
  return {opt.name: FLAGS[opt.name].value for opt in registry.all_options()}


def set_defaults(**defaults: Any) -> None:
  """An entry point's own flag defaults (call at import time)."""
  for name, value in defaults.items():
    FLAGS.set_default(name, value)


def apply_scale(presets: Mapping[str, Mapping[str, Any]],
                scale: str | None = None) -> dict[str, Any]:
  """Applies the ``scale`` preset (default ``--scale``) to the flags.

  Args:
    presets: ``{scale: {flag name: value}}``; list flags take lists.
    scale: one of ``SCALES``; None reads ``--scale``.

  Returns:
    The flags actually set, ``{name: value}``: a flag given on the command
    line (``FLAGS[name].present``) keeps its value.

  Raises:
    ValueError: ``scale`` has no preset, or a preset names an unknown flag.
  """
  scale = FLAGS.scale if scale is None else scale
  if scale not in presets:
    raise ValueError(f"no preset for --scale={scale}; this entry point has "
                     f"{', '.join(presets)}")
  applied = {}
  for name, value in presets[scale].items():
    if name not in FLAGS:
      raise ValueError(f"the {scale!r} preset sets --{name}, which is not a "
                       "defined flag")
    if FLAGS[name].present:
      continue
    if isinstance(value, (list, tuple)):
      value = [str(v) for v in value]
    setattr(FLAGS, name, value)
    applied[name] = value
  logging.info("--scale=%s set %s", scale, applied)
  return applied


def seeds() -> tuple[int, ...]:
  """``--seeds``, else ``(--seed,)``."""
  if FLAGS.seeds:
    if FLAGS["seed"].present and FLAGS["seeds"].present:
      raise app.UsageError("give --seeds or --seed, not both "
                           "(--seeds=0,1,2 runs every seed listed)")
    if not FLAGS["seed"].present:
      return tuple(dict.fromkeys(ints(FLAGS.seeds)))
  return (FLAGS.seed,)


def network() -> dict[str, bool]:
  """``bias`` and ``weight_norm`` from ``--network``, ``--bias`` and
  ``--weight_norm`` (the last two win where given)."""
  out = dict(registry.NETWORKS[FLAGS.network])
  for name in out:
    if FLAGS[name].value is not None:
      out[name] = FLAGS[name].value
  return out


def method_batch_sizes() -> dict[str, tuple[int, ...]]:
  """At ``--scale=paper`` without ``--batch_size``: each method's
  ``paper_batch_size`` (ALSH-APPROX one example at a time, as the paper
  trained it); else nothing (every method at ``--batch_size``)."""
  if FLAGS.scale != "paper" or FLAGS["batch_size"].present:
    return {}
  return {m: (registry.get(m).paper_batch_size,) for m in FLAGS.method
          if registry.get(m).paper_batch_size is not None}


def grid() -> studies.Grid:
  """The runs the shared flags describe."""
  return studies.Grid(
      methods=tuple(FLAGS.method), depths=tuple(ints(FLAGS.depths)),
      hidden=tuple(ints(FLAGS.hidden)),
      batch_sizes=tuple(ints(FLAGS.batch_size)),
      settings=dict(dataset=FLAGS.dataset, epochs=FLAGS.epochs,
                    seed=FLAGS.seed, learning_rate=FLAGS.learning_rate,
                    optimizer=FLAGS.optimizer, activation=FLAGS.activation,
                    max_train=FLAGS.max_train, max_test=FLAGS.max_test,
                    **network()),
      method_values=method_values(), seeds=seeds(),
      method_batch_sizes=method_batch_sizes())


def executor() -> executors.ExecutorConfig:
  """The executor the ``--executor``, ``--max_parallel`` and ``--slurm_*``
  flags describe."""
  try:
    return _executor()
  except ValueError as e:
    raise app.UsageError(str(e)) from None


def _executor() -> executors.ExecutorConfig:
  return executors.ExecutorConfig(
      kind=FLAGS.executor, max_parallel=FLAGS.max_parallel,
      slurm_partition=FLAGS.slurm_partition,
      slurm_cpus_per_task=FLAGS.slurm_cpus_per_task,
      slurm_time=FLAGS.slurm_time, slurm_mem=FLAGS.slurm_mem,
      slurm_array_parallelism=FLAGS.slurm_array_parallelism,
      slurm_extra=executors.ExecutorConfig.parse_extra(FLAGS.slurm_extra))


# Every runner made from the flags, so that an entry point's main can
# report the runs that failed under it.
_RUNNERS: list[studies.Runner] = []


def runner() -> studies.Runner:
  """Where results go and how runs execute, from ``--out_dir``,
  ``--data_dir``, ``--download``, ``--progress``, the executor flags,
  ``--keep_checkpoints`` and ``--dry_run``."""
  made = studies.Runner(out_dir=FLAGS.out_dir, data_dir=FLAGS.data_dir,
                        download=FLAGS.download, progress=FLAGS.progress,
                        executor=executor(),
                        keep_checkpoints=FLAGS.keep_checkpoints,
                        dry_run=FLAGS.dry_run)
  _RUNNERS.append(made)
  return made


def presets(**quick: Any) -> dict[str, dict[str, Any]]:
  """An entry point's scale presets: ``quick`` as given, ``paper`` the
  paper's sizes."""
  return {"quick": quick, "paper": PAPER_SCALE}


def study(presets_: Mapping[str, Mapping[str, Any]], call):
  """The ``main`` of an entry point that applies its scale preset and
  prints what ``call()`` (one call into the library) returns.

  With ``--dry_run`` it stops once the runs are listed.  If runs failed,
  it names them after the table and exits with status 1.
  """

  def main(argv):
    del argv
    try:
      apply_scale(presets_)
    except ValueError as e:
      raise app.UsageError(str(e)) from None
    _RUNNERS.clear()
    try:
      print(call())
    except experiment.DryRun:
      return
    failures = [f for r in _RUNNERS for f in r.failures]
    if failures:
      print(f"error: {len(failures)} run(s) failed (their logs are quoted "
            "above): " + "; ".join(f.label for f in failures) + ".  Rerun "
            "the same command to retry them; finished runs are kept and the "
            "failed ones resume from their last checkpoint.",
            file=sys.stderr)
      sys.exit(1)

  return main


def run_main(main) -> None:
  """``app.run(main)``, with a dataset problem reported as one clear error
  (what is missing or wrong and where to put the files), not a traceback.
  Results already written stay: runs finish or resume one at a time."""
  from sampling_mlp import data

  from sampling_mlp import checkpoint

  def guarded(argv):
    try:
      return main(argv)
    except (data.DatasetError, checkpoint.LockHeld,
            checkpoint.CheckpointError) as e:
      print(f"error: {e}", file=sys.stderr)
      sys.exit(2)

  app.run(guarded)
