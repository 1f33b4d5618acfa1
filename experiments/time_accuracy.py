"""Training time and dev accuracy per epoch, single-sample setting.

Reproduces the paper's per-epoch comparison in the single-sample setting
(the ``_S`` runs, batch size 1): cumulative training time and dev accuracy
after each epoch for every method, at 3 and at 7 hidden layers.

Command:

  python -m experiments.time_accuracy --dataset=fashion_mnist

Scale (``--scale``; flags given on the command line win):

* ``quick`` (default): 3 epochs on 1,500 training examples (2,000 dev and
  test), width 1000, batch size 1, depths 3 and 7, all five methods:
  8.5 minutes on the project's 2-core CPU while other jobs shared it.
  Batch size 1 means one training step per example; that is what makes
  these runs slow.
* ``paper``: 50 epochs, the full splits, width 1000.

Writes under ``--out_dir``/time_accuracy/ (see
:mod:`sampling_mlp.studies.time_accuracy`); resumable.
"""

from experiments import common
from sampling_mlp import registry
from sampling_mlp.studies import time_accuracy

# Every registered method by default.
common.set_defaults(method=list(registry.names()), depths=["3", "7"],
                    batch_size=["1"])

PRESETS = common.presets(epochs=3, max_train=1500, max_test=2000)

main = common.study(PRESETS,
                    lambda: time_accuracy.run(common.runner(), common.grid()))

if __name__ == "__main__":
  common.run_main(main)
