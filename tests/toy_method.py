"""A toy method, registered from outside the package: each hidden layer
keeps, per example, the ``--top_fraction`` of its nodes with the largest
pre-activations.  This module is the whole of adding it; the tests run it
in the contract test, ``depth_sweep``, ``benchmark`` and
``error_propagation`` (``$SAMPLING_MLP_METHODS=toy_method``)."""

import dataclasses

import jax
import jax.numpy as jnp

from sampling_mlp import layers, model, registry
from sampling_mlp.methods.standard import DenseStep


@dataclasses.dataclass(frozen=True)
class TopConfig(registry.MethodConfig):
  prefix = "top_"
  fraction: float = registry.option(
      0.5, "top_half: fraction of each hidden layer's nodes kept",
      check=lambda v: None if 0 < v <= 1 else "must be in (0, 1]")


class TopDense(model.Dense):
  def __init__(self, params, *, activation, keep, **network):
    super().__init__(params, activation=activation, **network)
    self.keep = keep

  def __call__(self, rand, a, delta=None):
    z = layers.dense(self.params(), a)
    kept = z >= jax.lax.top_k(z, self.keep)[0][:, -1:]
    out = jnp.where(kept, layers.activate(self.activation, z), 0.0)
    return layers.LayerOut(z, out, kept), out


class Top(DenseStep):
  """toy: keep each hidden layer's top nodes."""

  saves_compute = "no: computes every node, then keeps the top ones"

  def build_model(self, key, params):
    keep = max(1, round(self.config.fraction * self.model.hidden))
    network = self.model.network  # bias, weight_norm (--network)
    return model.MLP([TopDense(p, activation=self.model.activation, keep=keep,
                               **network) for p in params[:-1]] +
                     [model.Dense(params[-1], activation=None, **network)])


SPEC = registry.register(registry.MethodSpec(
    name="top_half", build=Top, config=TopConfig,
    analysis_grid={"top_fraction": (0.5,)}, keep_all={"top_fraction": 1.0}))
