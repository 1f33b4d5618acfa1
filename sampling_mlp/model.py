"""Flax NNX modules: an MLP composed of one module per layer.

Every method builds its MLP from layer modules of its own kinds -- this
module's exact :class:`Dense`, MC-APPROX's sampled layer, ALSH-APPROX's
active layer, Dropout's masked layer -- each holding its parameters (and its
method's state, such as hash tables) and calling its method's per-layer
function.  The modules are thin: the math is in those pure functions.

:meth:`MLP.forward` is the training-time forward pass of every method: the
training steps differentiate it, the analysis reads its per-layer outputs.
Training works on the pure view that ``nnx.split`` gives
(``registry.TrainState``) and merges it back inside ``jit``, where merging
costs nothing at run time.
"""

from __future__ import annotations

from typing import Any, Callable, ClassVar, Iterator, NamedTuple, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from sampling_mlp import layers
from sampling_mlp.layers import LayerOut, LayerParams


class NormedParams(NamedTuple):
  """A weight-normalised layer's trained parameters: the direction ``v``
  [n_in, n_out], the lengths ``g`` [n_out] and the bias ``b`` [n_out] (None
  if bias-free); the effective weights are ``layers.weight_norm(v, g)``."""

  v: jax.Array
  g: jax.Array
  b: jax.Array | None


class Slab(nnx.Variable):
  """A parameter stacked with its optimizer moments on a slot axis
  (``optim.init_slab``): sparse methods update it in place."""


class Layer(nnx.Module):
  """What the MLP and the analysis ask of every layer module.

  Attributes:
    activation: the layer's activation; None for the output layer (static).
    draws: whether the layer consumes randomness in its forward pass.
  """

  draws: ClassVar[bool] = False
  activation: str | None = None

  def params(self) -> LayerParams:
    """The layer's weights in the standard layout (``w`` [n_in, n_out])."""
    raise NotImplementedError

  def __call__(self, rand: Any, carry: Any, delta: Any = None
               ) -> tuple[LayerOut, Any]:
    """The layer's training-time forward pass of a batch.

    Args:
      rand: this layer's share of the step's randomness (see
        :func:`split_randomness`), or None if the layer draws nothing.
      carry: what the previous layer passed on; the input [B, n_in] for
        the first layer.
      delta: in training, zeros shaped like the weights the layer gathers
        (:meth:`zero_delta`): the gradient with respect to them is the
        gathered weights' gradient.  None otherwise.

    Returns:
      The layer's :class:`LayerOut` and what the next layer reads.
    """
    raise NotImplementedError

  def zero_delta(self, batch_size: int) -> Any:
    """The ``delta`` of a training step (None: the layer needs none)."""
    del batch_size
    return None


class Dense(Layer):
  """An exact affine layer ``z = a @ w + b``; ``w`` is [n_in, n_out].

  ``bias=False``: no bias parameter (:meth:`params` reports a zero one).
  ``weight_norm=True``: ``w`` is weight-normalised (``layers.weight_norm``,
  Salimans and Kingma 2016): the module keeps the direction ``v`` (in
  ``self.w``) and the lengths ``g`` [n_out], both trained, initialised so
  that the effective weights are ``params.w``.  :meth:`params` is always
  the effective layer; :meth:`raw` the trained parameters.
  """

  def __init__(self, params: LayerParams, *, activation: str | None,
               bias: bool = True, weight_norm: bool = False):
    self.w = nnx.Param(params.w)
    self.g = (nnx.Param(layers.weight_norm_init(params.w)) if weight_norm
              else None)
    self.b = nnx.Param(params.b) if bias else None
    self.activation = activation

  def params(self) -> LayerParams:
    w = self.w[...]
    if self.g is not None:
      w = layers.weight_norm(w, self.g[...])
    b = (self.b[...] if self.b is not None
         else jnp.zeros(w.shape[1], w.dtype))
    return LayerParams(w, b)

  def raw(self) -> LayerParams | NormedParams:
    """The trained parameters: ``LayerParams(w, b)``, or
    :class:`NormedParams` under weight normalisation; ``b`` is None for a
    bias-free layer."""
    b = None if self.b is None else self.b[...]
    if self.g is None:
      return LayerParams(self.w[...], b)
    return NormedParams(self.w[...], self.g[...], b)

  def set_raw(self, raw: LayerParams | NormedParams) -> None:
    """Sets the parameters :meth:`raw` returns."""
    if self.g is None:
      self.w[...] = raw.w
    else:
      self.w[...], self.g[...] = raw.v, raw.g
    if self.b is not None:
      self.b[...] = raw.b

  def __call__(self, rand, a, delta=None):
    del rand, delta
    z = layers.dense(self.params(), a)
    out = layers.activate(self.activation, z)
    return LayerOut(z, out), out


def is_key(rand: Any) -> bool:
  return (isinstance(rand, jax.Array)
          and jax.dtypes.issubdtype(rand.dtype, jax.dtypes.prng_key))


def _split(key: jax.Array, n: int) -> jax.Array:
  """``jax.random.split(key, n)`` of every key of a batch: [..., n]."""
  if key.ndim == 0:
    return jax.random.split(key, n)
  return jax.vmap(lambda k: _split(k, n))(key)


def split_randomness(rand: Any, draws: Sequence[bool]) -> list:
  """Shares a step's randomness among the layers that draw.

  A key is split into one key per drawing layer (``jax.random.split(key,
  n)``, in layer order); an array of seeds ``[..., n]`` gives each drawing
  layer its column.  Leading batch axes are kept either way.

  Returns:
    One entry per layer, None for layers that draw nothing.
  """
  n = sum(draws)
  if rand is None or n == 0:
    parts = [None] * n
  elif is_key(rand):
    keys = _split(rand, n)
    parts = [keys[..., i] for i in range(n)]
  else:
    parts = [rand[..., i] for i in range(n)]
  it = iter(parts)
  return [next(it) if d else None for d in draws]


def _call(layer, rand, carry, delta):
  return layer(rand, carry, delta)


class MLP(nnx.Module):
  """Hidden layers, then the output layer, each a :class:`Layer`."""

  def __init__(self, layer_list: Sequence[Layer]):
    self.layers = nnx.List(layer_list)

  def params(self) -> layers.Params:
    """The weights in the standard layout: a tuple of LayerParams."""
    return tuple(layer.params() for layer in self.layers)

  def zero_deltas(self, batch_size: int) -> tuple:
    return tuple(layer.zero_delta(batch_size) for layer in self.layers)

  def iterate(self, rand: Any, x: jax.Array, deltas: Sequence | None = None,
              *, call: Callable | None = None) -> Iterator[LayerOut]:
    """:meth:`forward` one layer at a time; ``call(layer, rand, carry,
    delta)`` replaces ``layer(rand, carry, delta)`` (the error analysis
    jits it per layer)."""
    call = call or _call
    parts = split_randomness(rand, [layer.draws for layer in self.layers])
    deltas = deltas or (None,) * len(self.layers)
    carry = x
    for layer, r, d in zip(self.layers, parts, deltas):
      out, carry = call(layer, r, carry, d)
      yield out

  def forward(self, rand: Any, x: jax.Array, deltas: Sequence | None = None
              ) -> list[LayerOut]:
    """The training-time forward pass of a batch ``x`` [B, D].

    Args:
      rand: the step's randomness (a key, or the seeds a method's
        ``step_randomness`` draws), shared by :func:`split_randomness`.
      x: [B, D] inputs.
      deltas: per layer, its ``zero_delta`` (training) or None.

    Returns:
      One :class:`LayerOut` per layer; the last one's ``a`` is the logits.
    """
    return list(self.iterate(rand, x, deltas))


def dense_mlp(params: layers.Params, *, activation: str, bias: bool = True,
              weight_norm: bool = False) -> MLP:
  """An MLP of exact :class:`Dense` layers (``bias``, ``weight_norm``: see
  :class:`Dense`)."""
  last = len(params) - 1
  return MLP([Dense(p, activation=None if k == last else activation,
                    bias=bias, weight_norm=weight_norm)
              for k, p in enumerate(params)])
