"""Error propagation: the ALSH-APPROX theorem, and measured errors against depth.

Reproduces the paper's negative result ("ALSH-APPROX does not scale": with
linear activations and every node's active part c times its inactive part,
the approximate activation's error ratio is ((c+1)/c)^k - 1 at depth k) and
measures the same thing on real networks.

Command (about 5 minutes on the project's shared 2-core CPU; see
docs/error_propagation.md for the measured runtime):

  python -m experiments.error_propagation

* Part 1 (``--part=theorem``, instant): the theorem's table for ``--c``
  (default 5), closed form beside the measurement on a network built to meet
  the assumption exactly, k = 1..7.
* Part 2 (``--part=networks``): MLPs of ``--hidden`` (first value, default
  1000) nodes and 1..``--max_depth`` hidden layers, for each of
  ``--activations``, freshly initialised and after ``--train_epochs`` of
  exact training on ``--max_train`` examples (default here 2000, batch
  ``--batch_size``); ``--eval_examples`` test inputs go through the exact
  network and through every method's approximate forward pass (ALSH-APPROX
  with each ``--alsh_pairs`` transform+hash at ``--alsh_active_fraction``
  and the other ``--alsh_*`` flags; MC-APPROX with each ``--mc_samplers``
  at each ``--mc_ratios``, on batches of ``--mc_batch``; Dropout at each
  ``--keep_probs``), ``--num_keys`` times each.

``--epochs``, ``--method`` and ``--activation`` of the shared flags are not
used here (``--train_epochs``, the variant lists and ``--activations`` are).

Writes under ``--out_dir``/error_propagation/: ``theorem.md``,
``rows.jsonl`` (one row per network, variant and key: per-layer relative
errors, top-1 agreement, ALSH's effective c), ``table.md`` (means and
spreads over keys, growth rates, ALSH against the theorem),
``error_vs_depth_<activation>_<init|trained>.png`` and
``alsh_theorem_<activation>_<init|trained>.png``.
"""

import json
import time

from absl import app, flags, logging

from experiments import common
from sampling_mlp import alsh, data, error_analysis, experiment, mc

flags.DEFINE_enum("part", "all", ["all", "theorem", "networks"],
                  "Which part to run.")
flags.DEFINE_float("c", 5.0, "The theorem table's c (active part / inactive "
                   "part of every node's sum).", lower_bound=1e-9)
flags.DEFINE_integer("max_depth", 10, "Networks of 1..max_depth hidden layers.",
                     lower_bound=1)
flags.DEFINE_integer("num_keys", 3, "Repetitions of every approximate pass.",
                     lower_bound=1)
flags.DEFINE_integer("train_epochs", 1, "Epochs of exact training for the "
                     "'trained' networks (0: only freshly initialised ones).",
                     lower_bound=0)
flags.DEFINE_integer("eval_examples", 256, "Test inputs pushed through the "
                     "networks.", lower_bound=1)
flags.DEFINE_integer("mc_batch", 64, "MC-APPROX's batch size (its estimate "
                     "depends on the batch).", lower_bound=1)
flags.DEFINE_list("activations", ["linear", "relu"], "Hidden activations.")
flags.DEFINE_list("alsh_pairs", [f"{t}+{h}" for t, h in error_analysis.ALSH_PAIRS],
                  "ALSH transform+hash pairs; empty for none.")
flags.DEFINE_list("mc_samplers", list(mc.SAMPLERS), "MC samplers; empty for none.")
flags.DEFINE_list("mc_ratios", ["0.1", "0.5"], "MC sample ratios.")
flags.DEFINE_list("keep_probs", ["0.05", "0.5"], "Dropout keep probabilities; "
                  "empty for none.")
flags.DEFINE_bool("jit", False, "Compile every approximate pass (one "
                  "compilation per variant and depth; slower here, see "
                  "sampling_mlp/error_analysis.py).")

FLAGS = flags.FLAGS

DEFAULT_MAX_TRAIN = 2000

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
  max_train = FLAGS.max_train if FLAGS["max_train"].present else DEFAULT_MAX_TRAIN
  try:
    return error_analysis.Config(
        dataset=FLAGS.dataset, data_dir=FLAGS.data_dir, max_train=max_train,
        eval_examples=FLAGS.eval_examples,
        depths=tuple(range(1, FLAGS.max_depth + 1)),
        hidden=common.ints(FLAGS.hidden)[0],
        activations=tuple(FLAGS.activations),
        train_epochs=FLAGS.train_epochs,
        batch_size=common.ints(FLAGS.batch_size)[0],
        learning_rate=FLAGS.learning_rate, seed=FLAGS.seed,
        num_keys=FLAGS.num_keys, variants=tuple(variants()),
        mc_batch=FLAGS.mc_batch, c=FLAGS.c, jit=FLAGS.jit,
        progress=FLAGS.progress)
  except ValueError as e:
    raise app.UsageError(str(e)) from None


def write_networks(cfg, rows) -> None:
  out = lambda name: common.out_path("error_propagation", name)
  experiment.write_text(out("rows.jsonl"), "".join(
      json.dumps(r, sort_keys=True, default=experiment._json_default) + "\n"  # pylint: disable=protected-access
      for r in rows))
  summary = error_analysis.summarize(rows)
  growth = error_analysis.growth(summary)
  parts = [f"# Error propagation: {cfg.dataset}, width {cfg.hidden}, "
           f"{cfg.eval_examples} test inputs, {cfg.num_keys} keys\n",
           "Cells: mean ± std over keys. Relative error "
           "||approx - exact||_F / ||exact||_F over the evaluation batch.\n"]
  for act in cfg.activations:
    for training in error_analysis.trainings(cfg):
      ss = [s for s in summary
            if s["activation"] == act and s["training"] == training]
      accs = {s["depth"]: s["exact_accuracy"] for s in ss}
      net = ("freshly initialised" if training == "init" else
             f"after {cfg.train_epochs} epoch(s) of exact training")
      parts.append(f"\n## {act}, {net}\n")
      parts.append("Exact test accuracy of the networks (eval batch): " +
                   ", ".join(f"d={d}: {a:.3f}" for d, a in sorted(accs.items())) + "\n")
      parts.append("\n### Logits relative error\n\n" + error_analysis.depth_table(
          summary, field="logits_rel_err", spread="logits_rel_err_std",
          activation=act, training=training))
      parts.append("\n### Top-1 agreement with the exact network\n\n" +
                   error_analysis.depth_table(summary, field="top1",
                                              spread="top1_std", activation=act,
                                              training=training))
      if any(s["method"] == "alsh" for s in ss):
        parts.append("\n### ALSH-APPROX against the theorem (logits)\n\n" +
                     error_analysis.alsh_theorem_table(
                         summary, activation=act, training=training))
  parts.append("\n## Growth of the logits relative error with depth\n\n"
               "Least-squares fit over depths: err ~ g^d (g: growth factor "
               "per added layer) and err ~ d^p.\n\n" +
               error_analysis.growth_table(growth))
  experiment.write_text(out("table.md"), "\n".join(parts))
  for act in cfg.activations:
    for training in error_analysis.trainings(cfg):
      error_analysis.plot_error_vs_depth(
          summary, out(error_analysis.plot_name("error_vs_depth", act, training)),
          activation=act, training=training,
          title=f"{cfg.dataset}, width {cfg.hidden}, {act}, {training}: "
          "approximate vs exact forward pass")
      if any(v.method == "alsh" for v in cfg.variants):
        error_analysis.plot_alsh_theorem(
            summary, out(error_analysis.plot_name("alsh_theorem", act, training)),
            activation=act, training=training)


def main(argv):
  del argv
  t0 = time.perf_counter()
  if FLAGS.part in ("all", "theorem"):
    md, _ = error_analysis.theorem_markdown(FLAGS.c)
    experiment.write_text(common.out_path("error_propagation", "theorem.md"), md)
    print(md)
  if FLAGS.part in ("all", "networks"):
    cfg = config()
    dataset = data.load_dataset(cfg.dataset, data_dir=cfg.data_dir,
                                max_train=cfg.max_train,
                                max_test=FLAGS.max_test, seed=cfg.seed)
    rows = error_analysis.run_networks(cfg, dataset)
    write_networks(cfg, rows)
  logging.info("error_propagation: %.1f s, wrote %s", time.perf_counter() - t0,
               common.out_path("error_propagation", ""))
  print(f"done in {time.perf_counter() - t0:.1f} s; results in "
        f"{common.out_path('error_propagation', '')}")


if __name__ == "__main__":
  app.run(main)
