"""Times one full training step (forward, backward, optimizer update).

For every (hidden, depth) it times, in the same process and interleaved
(one shape at a time), ``standard`` and each listed method at every
``--batch_size``, and ``standard`` at every ``--standard_batch_sizes``, and
prints one JSON object per line, for each batch size and method:
``method``, ``hidden``, ``depth``, ``batch_size``, ``step_ms`` (median),
``examples_per_second`` (batch_size / step seconds), ``us_per_example``
(step seconds / batch_size, in microseconds), ``speedup_vs_standard``
(standard's step time at the same batch size over the method's),
``best_standard_batch_size`` and ``best_standard_us_per_example`` (of the
``--standard_batch_sizes``, the one at which standard's microseconds per
example are smallest, and those), ``vs_best_standard``
(best_standard_us_per_example / us_per_example: > 1 means the method is
faster per example than standard at its best batch size; standard's own
line has at most 1 when its batch size is one of ``--standard_batch_sizes``,
exactly 1 when it is the best one), ``flops_fraction`` (counted multiply-adds over standard's),
``gflops`` (achieved) and ``matmul_peak_gflops`` (a plain ``jnp.dot``
[batch, hidden] @ [hidden, hidden] timed in the same process),
``traffic_fraction`` (floats moved in weight-sized arrays over standard's,
where the method counts them), plus the method's options.
``--network`` (``--bias``, ``--weight_norm``) sets the MLP's layers, as in
the sweeps; every MLP line states ``bias`` and ``weight_norm``.
``--breakdown`` ``breakdown_ms``: each method's step profiled, milliseconds
per step by part.  ``--standard_batch_sizes=`` (empty) skips the
comparison with standard's best configuration and omits its three fields.
Standard's reference is timed once per shape and shared by that shape's
batch sizes.  Lines are also appended to
``--out_dir``/benchmark/benchmark.jsonl.

Command (standard is timed at batch sizes 1, 32, 128, 256, 512 and 1024 for
each shape):

  python -m experiments.benchmark --methods=standard --hidden=1000,4096 \
      --depth=3 --batch_size=1,128,1024

CNNs (``--model=lenet|resnet18``, :mod:`sampling_mlp.cnn`): the same fields
for a CNN's training step, with ``model``, ``cnn_width`` and
``image_shape``; ``hidden`` and ``depth`` are the head's (``--head_hidden``,
``--head_depth``), ``flops_fraction`` counts the convolutions' multiply-adds
(``B H' W' m kh kw n`` per product; a sampled one with its ``s`` of ``n``
input channels) and the head's, and ``traffic_fraction`` is omitted.  The
images are ``--dataset``'s shape when it is given, else 28x28x1 for lenet
and 32x32x3 (CIFAR-10) for resnet18; ``--standard_batch_sizes`` defaults to
none (STANDARD at batch 1024 would take minutes a step):

  python -m experiments.benchmark --model=resnet18 --cnn_width=32 \
      --methods=standard,mc --batch_size=64 --mc_ratio=0.1

Machines are shared and noisy: compare ratios from one run, not across runs.
"""

import json

from absl import flags

from experiments import common
from sampling_mlp import bench
from sampling_mlp.optim import OptimConfig

flags.DEFINE_alias("methods", "method")
flags.DEFINE_list("depth", ["3"], "Hidden-layer count(s).")
flags.DEFINE_integer("input_dim", 784, "Input features (784: MNIST-sized).")
flags.DEFINE_integer("num_classes", 10, "Output classes.")
flags.DEFINE_integer("steps_per_call", 0, "Steps per timed jitted call; "
                     "0: enough for a call of about 0.2 s (at most 500).")
flags.DEFINE_integer("repeats", 7, "Timed calls; the median is reported.")
flags.DEFINE_bool("breakdown", False, "Also profile each listed method's "
                  "step and print breakdown_ms: milliseconds per step by "
                  "part (probabilities, draw, hash, select, gather, product, "
                  "update, rebuild, native, forward, backward, other; see "
                  "sampling_mlp/breakdown.py).")

flags.DEFINE_list("standard_batch_sizes",
                  ["1", "32", "128", "256", "512", "1024"],
                  "Batch sizes at which standard is also timed (interleaved "
                  "with the methods, once per shape) for vs_best_standard: "
                  "each method's time per example against standard's best "
                  "over these; empty: no such comparison.")
common.check_int_list("standard_batch_sizes")

FLAGS = flags.FLAGS


CNN_IMAGES = {"lenet": (28, 28, 1), "resnet18": (32, 32, 3)}


def cnn_model_config():
  """``model_config(hidden=, depth=)`` of ``bench.sweep`` for ``--model``,
  or None for the MLP."""
  if FLAGS.model == "mlp":
    return None
  from sampling_mlp import cnn, data  # pylint: disable=import-outside-toplevel
  shape = (data.IMAGE_SHAPES[FLAGS.dataset] if FLAGS["dataset"].present
           else CNN_IMAGES[FLAGS.model])
  head_depth, head_hidden = common.cnn_head()

  def make(*, hidden, depth):
    del hidden, depth  # the MLP's --hidden and --depth; a CNN has its head's
    return cnn.CNNConfig(arch=FLAGS.model, image_shape=shape,
                         num_classes=FLAGS.num_classes, width=FLAGS.cnn_width,
                         depth=head_depth, hidden=head_hidden,
                         activation=FLAGS.activation)
  return make


def main(argv):
  del argv
  model_config = cnn_model_config()
  standard_batch_sizes = common.ints(FLAGS.standard_batch_sizes)
  if model_config is not None and not FLAGS["standard_batch_sizes"].present:
    standard_batch_sizes = []
  for row in bench.sweep(
      FLAGS.method,
      batch_sizes=common.ints(FLAGS.batch_size), input_dim=FLAGS.input_dim,
      num_classes=FLAGS.num_classes, activation=FLAGS.activation,
      optim=OptimConfig(name=FLAGS.optimizer,
                        learning_rate=FLAGS.learning_rate),
      method_values=common.method_values(),
      standard_batch_sizes=standard_batch_sizes,
      model_config=model_config,
      hidden=[0] if model_config else common.ints(FLAGS.hidden),
      depths=[0] if model_config else common.ints(FLAGS.depth),
      log_path=common.runner().path("benchmark", "benchmark.jsonl"),
      steps_per_call=FLAGS.steps_per_call, repeats=FLAGS.repeats,
      seed=FLAGS.seed, breakdown=FLAGS.breakdown,
      network=None if model_config else common.network()):
    print(json.dumps(row), flush=True)


if __name__ == "__main__":
  common.run_main(main)
