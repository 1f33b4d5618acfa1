"""Convolutional models: a convolutional trunk, then an MLP head.

The paper's appendix (Ebrahimi et al. 2025) extends the study to CNNs:
MC-APPROX inside the convolutions, ALSH-APPROX in the fully connected
layers.  A model here is a trunk of convolutions (:class:`LeNetTrunk`, a
LeNet-5-style network, LeCun et al. 1998; :class:`ResNetTrunk`, the CIFAR
ResNet-18 of He et al. 2016: a 3x3 stem, four stages of two basic blocks,
global average pooling) whose flat features feed an MLP head built by a
registered method (:class:`sampling_mlp.model.MLP`), so the head's layers
are the MLP's.

Convolutions are :class:`Conv` modules: exact, or sampled over input
channels by ``mc.conv.mc_conv`` when given a sample size.  Batch norm is
``nnx.BatchNorm``: its running statistics are ``nnx.BatchStat`` variables
of the model's state, which a training step updates and carries in
``TrainState.model`` like any other state (and checkpoints save); the
forward pass in training normalises by the batch's statistics, evaluation
by the running ones.

Inputs arrive flat, [B, H * W * C] (the training loop's layout), and are
reshaped to NHWC by :meth:`CNNModel.features`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from sampling_mlp import layers
from sampling_mlp.methods.mc import conv as mconv

ARCHS = ("lenet", "resnet18")
DEFAULT_WIDTH = {"lenet": 6, "resnet18": 64}
DEFAULT_HEAD_DEPTH = {"lenet": 2, "resnet18": 0}
DEFAULT_HEAD_HIDDEN = {"lenet": 128, "resnet18": 512}


@dataclasses.dataclass(frozen=True)
class ConvSampling:
  """How a trunk's sampled convolutions sample (see ``mc.conv.mc_conv``):
  ``ratio`` and ``min_k`` give each convolution's channel count by
  ``kernels.num_samples_for``; every convolution but the stem is sampled."""

  ratio: float
  min_k: int
  sampler: str
  mode: str


class Conv(nnx.Module):
  """A convolution ``x`` [B, H, W, n] -> [B, H', W', m], HWIO weights.

  Initialised as PyTorch's ``nn.Conv2d`` (weights and bias from
  U(-1/sqrt(fan_in), 1/sqrt(fan_in)), as :func:`layers.init_layer` does for
  the MLP).  ``num_samples`` (a Python int, or None for exact) samples the
  input channels in training; evaluation is exact.
  """

  def __init__(self, key: jax.Array, n: int, m: int, *, kernel: int,
               stride: int = 1, padding: Any = "SAME", bias: bool = True,
               sampling: ConvSampling | None = None):
    kw, kb = jax.random.split(key)
    bound = 1.0 / math.sqrt(n * kernel * kernel)
    self.w = nnx.Param(jax.random.uniform(kw, (kernel, kernel, n, m),
                                          jnp.float32, -bound, bound))
    self.b = nnx.Param(jax.random.uniform(kb, (m,), jnp.float32, -bound,
                                          bound)) if bias else None
    self.stride, self.padding, self.kernel = stride, padding, kernel
    self.num_samples = None
    self.sampler = self.mode = None
    if sampling is not None:
      from sampling_mlp.methods.mc import kernels  # pylint: disable=import-outside-toplevel
      c = kernels.num_samples_for(n, ratio=sampling.ratio,
                                  min_k=sampling.min_k)
      if c < n:
        self.num_samples = c
        self.sampler, self.mode = sampling.sampler, sampling.mode

  @property
  def sampled(self) -> bool:
    return self.num_samples is not None

  def __call__(self, key: jax.Array | None, x: jax.Array, *,
               train: bool) -> jax.Array:
    w = self.w[...]
    if self.sampled and train:
      if key is None:
        raise ValueError("a sampled convolution draws its channels in "
                         "training: pass a key (or train=False, exact)")
      y = mconv.mc_conv(key, x, w, num_samples=self.num_samples,
                        sampler=self.sampler, mode=self.mode,
                        stride=self.stride, padding=self.padding)
    else:
      y = mconv.conv(x, w, stride=self.stride, padding=self.padding)
    if _RECORDING is not None:
      _RECORDING.append(ConvShape(tuple(x.shape), tuple(y.shape), self.kernel,
                                  self.num_samples))
    return y if self.b is None else y + self.b[...]


def _bn(m: int) -> nnx.BatchNorm:
  # PyTorch's BatchNorm2d: momentum 0.1 of the new statistics, eps 1e-5.
  return nnx.BatchNorm(m, momentum=0.9, epsilon=1e-5, rngs=nnx.Rngs(0))


def _max_pool(x: jax.Array) -> jax.Array:
  return nnx.max_pool(x, (2, 2), strides=(2, 2))


class _Trunk(nnx.Module):
  """A trunk: its convolutions in order, each given its own key."""

  def convs(self) -> list[Conv]:
    raise NotImplementedError

  def _keys(self, key):
    convs = self.convs()
    if key is None or not any(c.sampled for c in convs):
      return [None] * len(convs)
    keys = jax.random.split(key, len(convs))
    return [keys[i] for i in range(len(convs))]


class LeNetTrunk(_Trunk):
  """LeNet-5 style: conv 5x5 (w channels, padded) - ReLU - max-pool 2 -
  conv 5x5 (8w/3 channels; 16 at w = 6) - ReLU - max-pool 2 - flatten."""

  def __init__(self, key, image_shape, *, width: int,
               sampling: ConvSampling | None):
    h, wd, c = image_shape
    k1, k2 = jax.random.split(key)
    c2 = max(1, round(width * 8 / 3))
    self.conv1 = Conv(k1, c, width, kernel=5, padding="SAME")
    self.conv2 = Conv(k2, width, c2, kernel=5, padding="VALID",
                      sampling=sampling)
    ho, wo = ((h // 2) - 4) // 2, ((wd // 2) - 4) // 2
    if ho < 1 or wo < 1:
      raise ValueError(f"LeNet needs images of at least 12x12, got "
                       f"{h}x{wd}")
    self.feature_dim = ho * wo * c2

  def convs(self):
    return [self.conv1, self.conv2]

  def __call__(self, key, x, *, train):
    k1, k2 = self._keys(key)
    x = _max_pool(jax.nn.relu(self.conv1(k1, x, train=train)))
    x = _max_pool(jax.nn.relu(self.conv2(k2, x, train=train)))
    return x.reshape(x.shape[0], -1)


class BasicBlock(nnx.Module):
  """He et al. 2016's basic block: two 3x3 convolutions with batch norm and
  an identity shortcut (a 1x1 convolution and batch norm when the shape
  changes)."""

  def __init__(self, key, n, m, *, stride, sampling):
    k1, k2, k3 = jax.random.split(key, 3)
    self.conv1 = Conv(k1, n, m, kernel=3, stride=stride, padding=((1, 1),) * 2,
                      bias=False, sampling=sampling)
    self.bn1 = _bn(m)
    self.conv2 = Conv(k2, m, m, kernel=3, padding=((1, 1),) * 2, bias=False,
                      sampling=sampling)
    self.bn2 = _bn(m)
    if stride != 1 or n != m:
      self.short = Conv(k3, n, m, kernel=1, stride=stride, padding="VALID",
                        bias=False, sampling=sampling)
      self.short_bn = _bn(m)
    else:
      self.short = self.short_bn = None

  def convs(self):
    return [self.conv1, self.conv2] + ([self.short] if self.short else [])

  def __call__(self, keys, x, *, train):
    ra = not train
    out = jax.nn.relu(self.bn1(self.conv1(keys[0], x, train=train),
                               use_running_average=ra))
    out = self.bn2(self.conv2(keys[1], out, train=train),
                   use_running_average=ra)
    if self.short is not None:
      x = self.short_bn(self.short(keys[2], x, train=train),
                        use_running_average=ra)
    return jax.nn.relu(out + x)


class ResNetTrunk(_Trunk):
  """The CIFAR ResNet-18 (He et al. 2016): conv 3x3 stem (w channels), batch
  norm, ReLU; stages of w, 2w, 4w, 8w channels, two basic blocks each,
  strides 1, 2, 2, 2; global average pooling (8w features)."""

  def __init__(self, key, image_shape, *, width: int,
               sampling: ConvSampling | None):
    keys = jax.random.split(key, 9)
    self.stem = Conv(keys[0], image_shape[2], width, kernel=3,
                     padding=((1, 1),) * 2, bias=False)
    self.stem_bn = _bn(width)
    blocks, n, i = [], width, 1
    for stage, stride in enumerate((1, 2, 2, 2)):
      m = width * 2 ** stage
      for j in range(2):
        blocks.append(BasicBlock(keys[i], n, m, stride=stride if j == 0 else 1,
                                 sampling=sampling))
        n, i = m, i + 1
    self.blocks = nnx.List(blocks)
    self.feature_dim = n

  def convs(self):
    return [self.stem] + [c for b in self.blocks for c in b.convs()]

  def __call__(self, key, x, *, train):
    keys = self._keys(key)
    x = jax.nn.relu(self.stem_bn(self.stem(keys[0], x, train=train),
                                 use_running_average=not train))
    i = 1
    for block in self.blocks:
      k = len(block.convs())
      x = block(keys[i:i + k], x, train=train)
      i += k
    return jnp.mean(x, axis=(1, 2))


TRUNKS = {"lenet": LeNetTrunk, "resnet18": ResNetTrunk}


class CNNModel(nnx.Module):
  """A trunk and an MLP head (``model.MLP`` of the head method's layers)."""

  def __init__(self, trunk: _Trunk, head: nnx.Module,
               image_shape: Sequence[int]):
    self.trunk, self.head = trunk, head
    self.image_shape = tuple(image_shape)

  def params(self) -> layers.Params:
    """The head's weights in the MLP's standard layout."""
    return self.head.params()

  def features(self, key: jax.Array | None, x: jax.Array, *,
               train: bool) -> jax.Array:
    """The trunk's flat features [B, F] of flat inputs ``x`` [B, H W C]."""
    return self.trunk(key, x.reshape((x.shape[0],) + self.image_shape),
                      train=train)


class ConvShape(NamedTuple):
  """One convolution of a trunk at a batch size: its input ``x`` [B, H, W,
  n] and output [B, H', W', m] shapes, its kernel size and its sample size
  (None: exact)."""

  x: tuple
  out: tuple
  kernel: int
  num_samples: int | None


_RECORDING: list | None = None


def trunk_conv_shapes(trunk: _Trunk, image_shape: Sequence[int],
                      batch_size: int) -> list[ConvShape]:
  """Each convolution of ``trunk``, in order, for a batch of
  ``batch_size`` (traced abstractly with ``jax.eval_shape``; nothing is
  computed)."""
  global _RECORDING  # pylint: disable=global-statement
  graphdef, state = nnx.split(trunk)
  x = jax.ShapeDtypeStruct((batch_size,) + tuple(image_shape), jnp.float32)
  _RECORDING = []
  try:
    jax.eval_shape(lambda s, x: nnx.merge(graphdef, s)(None, x, train=False),
                   state, x)
    return list(_RECORDING)
  finally:
    _RECORDING = None
