"""Times one full training step (forward, backward, optimizer update).

For every (hidden, depth, batch_size) it times ``standard`` and each listed
method in the same process, and prints one JSON object per line:
``method``, ``hidden``, ``depth``, ``batch_size``, ``step_ms`` (median),
``speedup_vs_standard``, ``flops_fraction`` (counted multiply-adds over
standard's), ``gflops`` (achieved) and ``matmul_peak_gflops`` (a plain
``jnp.dot`` [batch, hidden] @ [hidden, hidden] timed in the same process),
plus the method's options.  Lines are also appended to
``--out_dir``/benchmark/benchmark.jsonl.

Command (about a minute on a 2-core CPU):

  python -m experiments.benchmark --methods=standard --hidden=1000,4096 \
      --depth=3 --batch_size=1,128,1024

Machines are shared and noisy: compare ratios from one run, not across runs.
"""

import json

from absl import app, flags

from experiments import common
from sampling_mlp import bench, experiment, registry
from sampling_mlp.optim import OptimConfig

flags.DEFINE_alias("methods", "method")
flags.DEFINE_list("depth", ["3"], "Hidden-layer count(s).")
flags.DEFINE_integer("input_dim", 784, "Input features (784: MNIST-sized).")
flags.DEFINE_integer("num_classes", 10, "Output classes.")
flags.DEFINE_integer("steps_per_call", 0, "Steps per timed jitted call; "
                     "0: enough for a call of about 0.2 s (at most 500).")
flags.DEFINE_integer("repeats", 7, "Timed calls; the median is reported.")

FLAGS = flags.FLAGS


def main(argv):
  del argv
  timing = dict(steps_per_call=FLAGS.steps_per_call, repeats=FLAGS.repeats,
                seed=FLAGS.seed)
  optim = OptimConfig(name=FLAGS.optimizer, learning_rate=FLAGS.learning_rate)
  path = common.out_path("benchmark", "benchmark.jsonl")
  log = experiment.ResultsLog(path)
  for hidden in common.ints(FLAGS.hidden):
    for depth in common.ints(FLAGS.depth):
      model = registry.ModelConfig(
          input_dim=FLAGS.input_dim, num_classes=FLAGS.num_classes,
          hidden=hidden, depth=depth, activation=FLAGS.activation)
      for batch_size in common.ints(FLAGS.batch_size):
        peak = bench.matmul_peak_gflops(batch_size=batch_size, hidden=hidden)
        impls = [registry.get(m).make(model, optim, common.method_values())
                 for m in FLAGS.method if m != "standard"]
        standard = registry.get("standard").make(model, optim)
        seconds = bench.time_train_steps([standard] + impls,
                                         batch_size=batch_size, **timing)
        timed = dict(zip([standard] + impls, seconds))
        for method in FLAGS.method:
          impl = (standard if method == "standard" else
                  impls[[m for m in FLAGS.method if m != "standard"].index(method)])
          row = {"method": method, "hidden": hidden, "depth": depth,
                 "batch_size": batch_size}
          row.update(bench.benchmark_row(
              impl, batch_size=batch_size, seconds=timed[impl],
              standard_seconds=seconds[0], peak_gflops=peak))
          row["config"] = impl.config.flags()
          print(json.dumps(row), flush=True)
          log.append(dict(row, run_id="benchmark"))

if __name__ == "__main__":
  common.run_main(main)
