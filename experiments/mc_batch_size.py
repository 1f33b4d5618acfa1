"""MC-APPROX at batch size 1 against mini-batches: why MC-APPROX_S failed.

Runs ``mc`` at 7 hidden layers for batch sizes 1 and 64 (``--batch_sizes``),
learning rates 1e-3 and 1e-4 (``--learning_rates``) and both loss axes
(``--loss_axes=classes,batch``: the correct loss and the public MC example's
log-softmax over the batch axis), plus ``standard`` at the same batch sizes
and learning rates as a reference (``--noreference`` to skip); see
:mod:`sampling_mlp.studies.mc_batch_size`.  ``--method`` is not used here;
the other MC options (``--mc_ratio``, ``--mc_sampler``, ``--mc_mode``, ...)
are.

Command:

  python -m experiments.mc_batch_size --dataset=fashion_mnist

Scale (``--scale``; flags given on the command line win):

* ``quick`` (default): 3 epochs on 1,500 training examples (2,000 dev and
  test), width 1000: 8.5 minutes on the project's 2-core CPU while other
  jobs shared it (the batch-size-1 runs take almost all of it).
* ``paper``: 50 epochs, the full splits, width 1000.

Writes under ``--out_dir``/mc_batch_size/ and prints the table and its
reading; the results are discussed in docs/REPRODUCTION.md.
"""

from absl import flags

from experiments import common
from sampling_mlp.studies import mc_batch_size

flags.DEFINE_alias("batch_sizes", "batch_size")
flags.DEFINE_list("learning_rates", ["1e-3", "1e-4"], "Learning rates.")
flags.DEFINE_list("loss_axes", ["classes", "batch"],
                  "Axes of the training loss's log-softmax: 'classes' "
                  "(correct) and/or 'batch' (the public MC example's bug).")
flags.DEFINE_bool("reference", True, "Also run 'standard' at every batch "
                  "size and learning rate.")

FLAGS = flags.FLAGS

common.set_defaults(batch_size=["1", "64"], depths=["7"])

flags.register_validator(
    "loss_axes", lambda v: bool(v) and set(v) <= {"classes", "batch"},
    message="--loss_axes must list 'classes' and/or 'batch'")
flags.register_validator(
    "learning_rates", lambda v: bool(v) and all(_is_positive(x) for x in v),
    message="--learning_rates must be a comma-separated list of numbers > 0")


def _is_positive(text: str) -> bool:
  try:
    return float(text) > 0
  except ValueError:
    return False


PRESETS = common.presets(epochs=3, max_train=1500, max_test=2000)

main = common.study(PRESETS, lambda: mc_batch_size.run(
    common.runner(), common.grid(),
    learning_rates=[float(v) for v in FLAGS.learning_rates],
    loss_axes=FLAGS.loss_axes, reference=FLAGS.reference))

if __name__ == "__main__":
  common.run_main(main)
