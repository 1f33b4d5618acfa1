"""The paper's convolutional extension: each method on a CNN.

Reproduces the appendix of Ebrahimi et al. (2025): MC-APPROX inside the
convolutions of a CNN (every convolution after the stem sampled over input
channels, Adelman et al. 2021), ALSH-APPROX in the fully connected head
(the paper's ResNet-18 on CIFAR-10 reached 10.3%), against STANDARD and
Dropout in the head.  Models (:mod:`sampling_mlp.cnn`): ``lenet`` (LeNet-5
style) and ``resnet18`` (the CIFAR ResNet-18 of He et al. 2016, with batch
norm), each with an MLP head of ``--head_depth`` hidden layers.

Commands (one model per call; several methods give one table and plot):

  python -m experiments.cnn --model=lenet --method=standard,mc --mc_ratio=0.5
  python -m experiments.cnn --model=resnet18 --method=standard,mc,alsh \
      --head_depth=2 --dataset=cifar10

Scale (``--scale``; flags given on the command line win), on Fashion-MNIST
by default:

* ``quick`` (default), within about 15 minutes per method on one core of
  the project's CPU: ``lenet``: the full splits, 5 epochs, batch 64 (it
  trims only the epochs; about 1 minute per epoch here).  ``resnet18``:
  width 16 (``--cnn_width``; the real network has 64), 10,000 training and
  2,000 dev/test examples, 3 epochs, batch 64 (it trims the width, the data
  and the epochs).
* ``paper``: 50 epochs, the full splits, the real width (64 for ResNet-18).

Writes under ``--out_dir``/cnn/ (see :mod:`sampling_mlp.studies.cnn`);
rerun the same command to resume.
"""

from absl import app, flags

from experiments import common
from sampling_mlp import studies
from sampling_mlp.studies import cnn as cnn_study

FLAGS = flags.FLAGS

common.set_defaults(model="lenet", dataset="fashion_mnist")

PRESETS = {
    "lenet": {"quick": dict(epochs=5, batch_size=["64"]),
              "paper": dict(epochs=50, max_train=None, max_test=None)},
    "resnet18": {"quick": dict(epochs=3, batch_size=["64"], cnn_width=16,
                               max_train=10000, max_test=2000),
                 "paper": dict(epochs=50, max_train=None, max_test=None,
                               cnn_width=64)},
}


def grid() -> studies.Grid:
  base = common.grid()
  depth, hidden = common.cnn_head()
  settings = dict(base.settings, model=FLAGS.model, cnn_width=FLAGS.cnn_width)
  return studies.Grid(methods=base.methods, depths=(depth,), hidden=(hidden,),
                      batch_sizes=base.batch_sizes, settings=settings,
                      method_values=base.method_values, seeds=base.seeds)


def main(argv):
  if FLAGS.model == "mlp":
    raise app.UsageError("experiments.cnn trains CNNs: --model=lenet or "
                         "--model=resnet18 (the MLP's entry points are "
                         "depth_sweep and the others)")
  return common.study(PRESETS[FLAGS.model],
                      lambda: cnn_study.run(common.runner(), grid()))(argv)


if __name__ == "__main__":
  common.run_main(main)
