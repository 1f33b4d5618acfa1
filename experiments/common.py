"""Flags shared by every entry point, and the glue from flags to the library.

Importing this module defines the common flags once.  Each registered
method's options (``registry.all_options()``) become flags too, so a new
method needs no change here.  ``--hidden`` and ``--batch_size`` take lists
(``--hidden=1000,4096``) in every entry point.
"""

from __future__ import annotations

import os

from absl import flags

from sampling_mlp import layers, registry
from sampling_mlp.optim import OPTIMIZERS

DATASETS = ("mnist_small", "mnist", "fashion_mnist", "norb", "cifar10_gray")

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
flags.DEFINE_integer("seed", 0, "Random seed.")
flags.DEFINE_string("out_dir", "results", "Where results are written.")
flags.DEFINE_integer("max_train", None, "Use at most this many training "
                     "examples (quick runs).", lower_bound=1)
flags.DEFINE_integer("max_test", None, "Use at most this many dev and test "
                     "examples (quick runs).", lower_bound=1)
flags.DEFINE_bool("progress", True, "Show progress bars.")


def _int_list(name: str, lower: int = 1):
  def check(values):
    try:
      ints = [int(v) for v in values]
    except ValueError:
      return False
    return all(v >= lower for v in ints)
  flags.register_validator(
      name, check, message=f"--{name} must be a comma-separated list of "
      f"integers >= {lower}")


_int_list("hidden")
_int_list("batch_size")


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


def out_path(*parts: str) -> str:
  path = os.path.join(FLAGS.out_dir, *parts)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  return path
