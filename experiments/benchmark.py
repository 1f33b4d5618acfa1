"""Times one full training step (forward, backward, optimizer update).

For every (hidden, depth, batch_size) it times ``standard`` and each listed
method in the same process, and prints one JSON object per line:
``method``, ``hidden``, ``depth``, ``batch_size``, ``step_ms`` (median),
``speedup_vs_standard``, ``flops_fraction`` (counted multiply-adds over
standard's), ``gflops`` (achieved) and ``matmul_peak_gflops`` (a plain
``jnp.dot`` [batch, hidden] @ [hidden, hidden] timed in the same process),
``traffic_fraction`` (floats moved in weight-sized arrays over standard's,
where the method counts them), plus the method's options, and with
``--breakdown`` ``breakdown_ms``: each method's step profiled, milliseconds
per step by part.  Lines are also appended to
``--out_dir``/benchmark/benchmark.jsonl.

Command (about a minute on a 2-core CPU):

  python -m experiments.benchmark --methods=standard --hidden=1000,4096 \
      --depth=3 --batch_size=1,128,1024

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

FLAGS = flags.FLAGS


def main(argv):
  del argv
  for row in bench.sweep(
      FLAGS.method, hidden=common.ints(FLAGS.hidden),
      depths=common.ints(FLAGS.depth),
      batch_sizes=common.ints(FLAGS.batch_size), input_dim=FLAGS.input_dim,
      num_classes=FLAGS.num_classes, activation=FLAGS.activation,
      optim=OptimConfig(name=FLAGS.optimizer,
                        learning_rate=FLAGS.learning_rate),
      method_values=common.method_values(),
      log_path=common.runner().path("benchmark", "benchmark.jsonl"),
      steps_per_call=FLAGS.steps_per_call, repeats=FLAGS.repeats,
      seed=FLAGS.seed, breakdown=FLAGS.breakdown):
    print(json.dumps(row), flush=True)


if __name__ == "__main__":
  common.run_main(main)
