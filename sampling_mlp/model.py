"""Flax NNX container for the MLP.

The module is deliberately thin: it holds the parameters as ``nnx.Param``
variables and calls the pure functions of :mod:`sampling_mlp.layers`.  Training
runs on the pure parameter pytree (``MLP.params()``), so every method's step is
a plain jitted function of ``(state, batch, key)``.
"""

from __future__ import annotations

from typing import Sequence

import jax
from flax import nnx

from sampling_mlp import layers


class Dense(nnx.Module):
  """One affine layer; ``w`` is [n_in, n_out]."""

  def __init__(self, params: layers.LayerParams):
    self.w = nnx.Param(params.w)
    self.b = nnx.Param(params.b)

  def pure(self) -> layers.LayerParams:
    return layers.LayerParams(self.w[...], self.b[...])

  def __call__(self, x: jax.Array) -> jax.Array:
    return layers.dense(self.pure(), x)


class MLP(nnx.Module):
  """``depth`` hidden layers of width ``hidden`` and an exact output layer."""

  def __init__(self, sizes: Sequence[int], *, activation: str,
               rngs: nnx.Rngs):
    self.activation = layers.check_activation(activation)
    self.sizes = tuple(sizes)
    init = layers.init_mlp(rngs.params(), self.sizes)
    self.layers = nnx.List([Dense(p) for p in init])

  def params(self) -> layers.Params:
    """The pure parameter pytree: a tuple of LayerParams."""
    return tuple(layer.pure() for layer in self.layers)

  def load(self, params: layers.Params) -> None:
    """Writes a trained parameter pytree back into the module."""
    for layer, p in zip(self.layers, params):
      layer.w[...] = p.w
      layer.b[...] = p.b

  def __call__(self, x: jax.Array) -> jax.Array:
    return layers.mlp_apply(self.params(), x, activation=self.activation)
