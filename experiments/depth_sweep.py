"""Depth study: test accuracy and training time against hidden layers.

Reproduces the paper's depth study (1, 3, 5, 7 hidden layers of 1000 nodes;
final test accuracy and training time per method).

Command (the README's main job; a few minutes on a 2-core CPU, on the
``mnist_small`` digits shipped in the package):

  python -m experiments.depth_sweep --method=standard

Several methods at once, on Fashion-MNIST (one combined table and plot):

  python -m experiments.depth_sweep \
      --method=standard,alsh,mc,dropout,adaptive_dropout --dataset=fashion_mnist

Scale (``--scale``; flags given on the command line win):

* ``quick`` (default): 3 epochs on the full splits, width 1000, batch 32 --
  the flag defaults, so that a plain command trains on all the training data
  (the main job on ``mnist_small``: well under a minute per method).  For a
  quick look at a large dataset add ``--max_train=5000 --max_test=2000`` (as
  ``scripts/reproduce_paper.sh quick`` does): all five methods on
  Fashion-MNIST then take about 4 minutes on the project's 2-core CPU.
* ``paper``: 50 epochs, the full splits, width 1000, the authors' network
  (no bias, weight normalisation), and each method at its paper batch size
  unless ``--batch_size`` is given (ALSH-APPROX 1, the others 128).  Many
  hours per method on the project's 2-core CPU; ``experiments.paper_depth``
  reports the rows beside the paper's table.

Writes under ``--out_dir``/depth_sweep/ (see
:mod:`sampling_mlp.studies.depth_sweep`); rerun the same command to resume.
"""

from experiments import common
from sampling_mlp.studies import depth_sweep

PRESETS = common.presets(epochs=3)

main = common.study(PRESETS,
                    lambda: depth_sweep.run(common.runner(), common.grid()))

if __name__ == "__main__":
  common.run_main(main)
