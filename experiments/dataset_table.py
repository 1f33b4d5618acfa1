"""The 3-hidden-layer comparison across datasets.

Reproduces the paper's per-dataset table: test accuracy and training time of
every method (Standard, ALSH-APPROX, MC-APPROX, Dropout, Adaptive Dropout)
with 3 hidden layers, on MNIST, Fashion-MNIST, NORB and CIFAR-10 in
grayscale (``--datasets``; ``--dataset`` is not used here).

A dataset whose files are absent (and cannot be downloaded) does not stop
the run: a warning says where to put the files, its rows read
"missing data", and the other datasets run.  When MNIST is missing,
``mnist_small`` (10,000 real MNIST digits shipped in the package) runs in
its place and the table says so (``--nomnist_standin`` to skip).

Command:

  python -m experiments.dataset_table

Scale (``--scale``; flags given on the command line win):

* ``quick`` (default): 3 epochs, at most 10,000 training and 2,000 dev/test
  examples, width 1000, batch 32, 3 hidden layers: 2.3 minutes for
  Fashion-MNIST and the mnist_small stand-in (the others missing) on the
  project's 2-core CPU while other jobs shared it.
* ``paper``: 50 epochs, the full splits, width 1000.

Writes under ``--out_dir``/dataset_table/ (see
:mod:`sampling_mlp.studies.dataset_table`); resumable.
"""

from absl import flags

from experiments import common
from sampling_mlp import registry
from sampling_mlp.studies import dataset_table

flags.DEFINE_list("datasets", list(dataset_table.PAPER_DATASETS),
                  f"Datasets, comma-separated: {', '.join(common.DATASETS)}.")
flags.DEFINE_bool("mnist_standin", True, "When mnist's files are missing, run "
                  f"{dataset_table.STANDIN} in its place, labelled as a "
                  "stand-in.")
flags.register_validator(
    "datasets", lambda v: bool(v) and set(v) <= set(common.DATASETS),
    message=f"--datasets must list some of {', '.join(common.DATASETS)}")

FLAGS = flags.FLAGS

# Every registered method by default.
common.set_defaults(method=list(registry.names()), depths=["3"])

PRESETS = common.presets(epochs=3, max_train=10000, max_test=2000)

main = common.study(PRESETS, lambda: dataset_table.run(
    common.runner(), common.grid(), datasets=FLAGS.datasets,
    mnist_standin=FLAGS.mnist_standin))

if __name__ == "__main__":
  common.run_main(main)
