"""Convolutional networks for the paper's appendix (Ebrahimi et al. 2025).

* :mod:`.models`: the Flax NNX trunks (LeNet-5 style, CIFAR ResNet-18) and
  :class:`models.CNNModel`, a trunk with an MLP head;
* :mod:`.method`: :class:`method.CNN`, a registered method's training step
  on such a model.

How the model enters: a method is built for a model config
(``registry.MethodSpec.make``); :class:`CNNConfig` is the config of a CNN
and builds the method's CNN variant (:meth:`CNNConfig.build_method`), so
every registered method, entry point and the benchmark reach CNNs through
the same call that builds an MLP, and the MLP's code path is untouched.
"""

from __future__ import annotations

import dataclasses
import math

from sampling_mlp import layers
from sampling_mlp.cnn.models import (  # noqa: F401
    ARCHS, DEFAULT_HEAD_DEPTH, DEFAULT_HEAD_HIDDEN, DEFAULT_WIDTH)

MODELS = ("mlp",) + ARCHS


def image_shape_of(dataset) -> tuple[int, int, int]:
  """(H, W, C) of a :class:`sampling_mlp.data.Dataset`'s flat examples:
  ``data.IMAGE_SHAPES`` for the known datasets, else square and
  single-channel."""
  from sampling_mlp import data  # pylint: disable=import-outside-toplevel
  if dataset.name in data.IMAGE_SHAPES:
    return data.IMAGE_SHAPES[dataset.name]
  side = math.isqrt(dataset.input_dim)
  if side * side != dataset.input_dim:
    raise ValueError(f"dataset {dataset.name!r}: cannot tell the image shape "
                     f"of {dataset.input_dim} inputs; CNNs need images")
  return (side, side, 1)


@dataclasses.dataclass(frozen=True)
class CNNConfig:
  """Shape of a CNN: a trunk and an MLP head of ``depth`` hidden layers of
  ``hidden`` nodes (the MLP's names, so the benchmark and the results read
  them alike).

  Attributes:
    arch: one of ``ARCHS``.
    image_shape: (H, W, C) of the inputs (they arrive flat, H W C).
    num_classes: output classes.
    width: channels of the first stage (``--cnn_width``; 0: the arch's
      default, 6 for LeNet, 64 for ResNet-18).
    depth: hidden layers of the head (``--head_depth``; -1: the arch's
      default, 2 for LeNet, 0 for ResNet-18 whose head is one layer).
    hidden: width of the head's hidden layers (0: the arch's default).
    activation: the head's hidden activation (the trunk uses ReLU).
  """

  arch: str
  image_shape: tuple
  num_classes: int
  width: int = 0
  depth: int = -1
  hidden: int = 0
  activation: str = "leaky_relu"

  def __post_init__(self):
    if self.arch not in ARCHS:
      raise ValueError(f"unknown CNN {self.arch!r}; known: {', '.join(ARCHS)}")
    shape = tuple(self.image_shape)
    if len(shape) != 3 or not all(isinstance(v, int) and v >= 1
                                  for v in shape):
      raise ValueError(f"image_shape must be (H, W, C) of ints >= 1, got "
                       f"{self.image_shape!r}")
    object.__setattr__(self, "image_shape", shape)
    for name, table in (("width", DEFAULT_WIDTH), ("depth", DEFAULT_HEAD_DEPTH),
                        ("hidden", DEFAULT_HEAD_HIDDEN)):
      value = getattr(self, name)
      default = 0 if name != "depth" else -1
      if value == default:
        object.__setattr__(self, name, table[self.arch])
      elif value < (0 if name == "depth" else 1):
        raise ValueError(f"{name} must be >= {0 if name == 'depth' else 1} "
                         f"(or {default} for the default), got {value}")
    layers.check_activation(self.activation)

  @property
  def input_dim(self) -> int:
    return math.prod(self.image_shape)

  def head(self, feature_dim: int):
    """The head's MLP shape (``registry.ModelConfig``)."""
    from sampling_mlp import registry  # pylint: disable=import-outside-toplevel
    return registry.ModelConfig(input_dim=feature_dim,
                                num_classes=self.num_classes,
                                hidden=self.hidden, depth=self.depth,
                                activation=self.activation)

  @property
  def sizes(self) -> tuple[int, ...]:
    """The head's layer sizes (from the trunk's feature count)."""
    from sampling_mlp.cnn import method  # pylint: disable=import-outside-toplevel
    return self.head(method.feature_dim(self)).sizes

  def build_method(self, spec, optim, config):
    """``spec``'s method on this CNN (``registry.MethodSpec.make``)."""
    from sampling_mlp.cnn import method  # pylint: disable=import-outside-toplevel
    return method.make(spec, self, optim, config)
