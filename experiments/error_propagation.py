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
  ``--eval_examples`` test inputs go through the exact
  network and through every method's approximate forward pass (ALSH-APPROX
  with each ``--alsh_pairs`` transform+hash at ``--alsh_active_fraction``
  and the other ``--alsh_*`` flags; MC-APPROX with each ``--mc_samplers``
  at each ``--mc_ratios``, on batches of ``--mc_batch``; Dropout at each
  ``--keep_probs``), ``--num_keys`` times each.
* ``--part=report`` rewrites ``table.md`` and the plots from ``rows.jsonl``.

Scale (``--scale``; flags given on the command line win):

* ``quick`` (default): depths 1..10, width 1000, 1 epoch of training on
  2,000 examples, 256 test inputs, 3 keys, every variant (16).  4 min 23 s
  to 4 min 34 s.
* ``paper``: the same networks trained as in the paper (50 epochs on the
  full training split): hours on a CPU.

``--epochs``, ``--method`` and ``--activation`` of the shared flags are not
used here (``--train_epochs``, the variant lists and ``--activations`` are).

Writes under ``--out_dir``/error_propagation/: ``theorem.md``,
``rows.jsonl`` (one row per network, variant and key: per-layer relative
errors, top-1 agreement, ALSH's effective c), ``table.md`` (means and
spreads over keys, growth rates, ALSH against the theorem),
``error_vs_depth_<activation>_<init|trained>.png`` and
``alsh_theorem_<activation>_<init|trained>.png``.
"""

import os
import time

from absl import app, flags, logging

from experiments import common
from sampling_mlp import alsh, error_analysis, experiment, mc

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
flags.DEFINE_integer("mc_batch", 64, "MC-APPROX's batch size (its estimate "
                     "depends on the batch).", lower_bound=1)
flags.DEFINE_bool("zero_bias", False, "Set every bias to 0 before measuring "
                  "(the theorem's setting; changes what trained networks "
                  "compute).")
flags.DEFINE_list("activations", ["linear", "relu"], "Hidden activations.")
flags.DEFINE_list("alsh_pairs", [f"{t}+{h}" for t, h in error_analysis.ALSH_PAIRS],
                  "ALSH transform+hash pairs; empty for none.")
flags.DEFINE_list("mc_samplers", list(mc.SAMPLERS), "MC samplers; empty for none.")
flags.DEFINE_list("mc_ratios", ["0.1", "0.5"], "MC sample ratios.")
flags.DEFINE_list("keep_probs", ["0.05", "0.5"], "Dropout keep probabilities; "
                  "empty for none.")

FLAGS = flags.FLAGS

DEPTHS = [str(d) for d in range(1, 11)]
PRESETS = {
    "quick": {"depths": DEPTHS, "hidden": ["1000"], "max_train": 2000,
              "train_epochs": 1},
    # The paper does not run this study; "paper" measures its networks: the
    # full splits and 50 epochs of training.
    "paper": {"depths": DEPTHS, "hidden": ["1000"], "max_train": None,
              "max_test": None, "train_epochs": 50},
}

ALSH_FLAGS = ("alsh_K", "alsh_L", "alsh_m", "alsh_U", "alsh_R",
              "alsh_active_fraction")


def variants() -> list:
  pairs = []
  for p in FLAGS.alsh_pairs:
    t, _, h = p.partition("+")
    if t not in alsh.TRANSFORMS or h not in alsh.HASHES:
      raise app.UsageError(f"--alsh_pairs: {p!r} is not transform+hash with "
                           f"transform in {alsh.TRANSFORMS}, hash in {alsh.HASHES}")
    pairs.append((t, h))
  try:
    return error_analysis.default_variants(
        alsh_pairs=pairs, mc_samplers=FLAGS.mc_samplers,
        mc_ratios=[float(r) for r in FLAGS.mc_ratios],
        keep_probs=[float(p) for p in FLAGS.keep_probs],
        alsh_options={k: FLAGS[k].value for k in ALSH_FLAGS})
  except ValueError as e:
    raise app.UsageError(str(e)) from None


def config() -> error_analysis.Config:
  try:
    return error_analysis.Config(
        dataset=FLAGS.dataset, data_dir=FLAGS.data_dir,
        max_train=FLAGS.max_train, eval_examples=FLAGS.eval_examples,
        depths=tuple(common.ints(FLAGS.depths)),
        hidden=common.ints(FLAGS.hidden)[0],
        activations=tuple(FLAGS.activations),
        train_epochs=FLAGS.train_epochs,
        batch_size=common.ints(FLAGS.batch_size)[0],
        learning_rate=FLAGS.learning_rate, seed=FLAGS.seed,
        num_keys=FLAGS.num_keys, variants=tuple(variants()),
        mc_batch=FLAGS.mc_batch, zero_bias=FLAGS.zero_bias,
        progress=FLAGS.progress)
  except ValueError as e:
    raise app.UsageError(str(e)) from None


def main(argv):
  del argv
  common.apply_scale(PRESETS)
  t0 = time.perf_counter()
  out = lambda name: common.out_path("error_propagation", name)
  if FLAGS.part in ("all", "theorem"):
    md, _ = error_analysis.theorem_markdown(FLAGS.c)
    experiment.write_text(out("theorem.md"), md)
    print(md)
  if FLAGS.part in ("all", "networks"):
    cfg = config()
    dataset = common.dataset_loader()(cfg.dataset, data_dir=cfg.data_dir,
                                      max_train=cfg.max_train,
                                      max_test=FLAGS.max_test, seed=cfg.seed)
    rows = error_analysis.run_networks(cfg, dataset)
    error_analysis.write_rows(rows, out("rows.jsonl"))
  if FLAGS.part in ("all", "networks", "report"):
    if not os.path.exists(out("rows.jsonl")):
      raise app.UsageError(f"{out('rows.jsonl')} does not exist; run "
                           "--part=networks (or all) first.")
    rows = error_analysis.read_rows(out("rows.jsonl"))
    for path in error_analysis.write_report(rows, os.path.dirname(out("table.md"))):
      logging.info("wrote %s", path)
  logging.info("error_propagation: %.1f s, wrote %s", time.perf_counter() - t0,
               common.out_path("error_propagation", ""))
  print(f"done in {time.perf_counter() - t0:.1f} s; results in "
        f"{common.out_path('error_propagation', '')}")


if __name__ == "__main__":
  common.run_main(main)
