"""ALSH-APPROX's layers: the per-layer function and the layer modules.

:func:`active_layer` is the method's one per-layer function: one example's
pass through one hidden layer (hash the input, pick the active set, compute
only the active nodes from the gathered block).  The training step, the
approximate forward pass and the error analysis all compose it through
:class:`ActiveLayer`; the native C++ step is the one other implementation,
held equal to it by the tests.

Layout (the modules own it, and the native step reads it in place).
Selecting active nodes gathers *columns* of ``w`` [n_in, n_out], and on a
CPU a strided gather or scatter costs several times a contiguous one, so
each hidden layer is kept node-major, ``wt = w.T`` [n_out, n_in], and every
parameter is stacked with its Adam moments into one *slab* (S = 3 slots
for Adam, 1 for SGD): a step gathers each touched block once, uses slot 0
for the forward pass, and scatters the updated parameter and moments back
once.  The first hidden layer's weight slab is [n_1, S, D] (slot axis 1:
its update gathers whole rows, contiguous per slot); later hidden layers'
are [n_k, n_{k-1}, S] (slot axis last: their update gathers a scattered
block, whose three slots then share a cache line); biases are [n_k, S];
the output layer's weights [n_d, S, C] and bias [C, S].
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from sampling_mlp import layers, optim
from sampling_mlp import model as model_lib
from sampling_mlp.layers import LayerOut, LayerParams
from sampling_mlp.methods.alsh import kernels, schedule


# -- the per-layer function ------------------------------------------------------


class Active(NamedTuple):
  """One example's pass through one hidden layer.

  Attributes:
    vals: [s] activations of the active nodes.
    idx: uint32 [s] the active set, distinct, best-colliding first.
    z: [s] their pre-activations.
    block: the gathered slab entries, to update without gathering again:
      ``w`` [s, S, D] (first layer) or [s, r, S], ``b`` [s, S].
    colliding: int32 [], nodes colliding with the query in >= 1 table.
    random_fraction: float32 [], the share of the budget filled at random.
  """

  vals: jax.Array
  idx: jax.Array
  z: jax.Array
  block: LayerParams
  colliding: jax.Array
  random_fraction: jax.Array


def active_layer(seed: jax.Array, vals: jax.Array, rows: jax.Array | None,
                 slabs: LayerParams, query: kernels.QueryHash,
                 table: jax.Array, *, budget: int, activation: str,
                 delta: LayerParams | None = None) -> Active:
  """One hidden layer of ALSH-APPROX for one example.

  Args:
    seed: uint32 [] tie-breaking seed.
    vals: [r] the layer's input on ``rows``: the previous layer's active
      nodes (inactive nodes output 0), or the whole input [D].
    rows: uint32 [r] the previous active set, or None (dense input).
    slabs: the layer's weight and bias slabs (module docstring).
    query: the layer's hash functions laid out for queries.
    table: int32 [L, n] every node's bucket codes.
    budget: static active-set size.
    activation: the hidden activation.
    delta: in training, zeros [s, r] and [s] added to the block; their
      gradient is the block's.

  Returns:
    :class:`Active`.
  """
  q = kernels.sparse_query_codes(query, jax.lax.stop_gradient(vals), rows)
  idx, colliding, frac = kernels.select_active(
      seed, kernels.collisions(q, table), budget)
  w, b = slabs
  bb = b[idx]
  if rows is None:
    blk = w[idx]  # [s, S, D]
    # All slots times the input, then slot 0: cheaper than copying the
    # parameter slot out of the gathered rows.
    z = jnp.einsum("ksd,d->ks", blk, vals)[:, 0] + bb[:, 0]
  else:
    blk = w[idx[:, None], rows[None, :]]  # [s, r, S]
    z = blk[..., 0] @ vals + bb[:, 0]
  if delta is not None:
    z = z + delta.w @ vals + delta.b
  return Active(layers.activation_fn(activation)(z), idx, z,
                LayerParams(blk, bb), colliding, frac)


def output_layer(vals: jax.Array, rows: jax.Array | None, slabs: LayerParams,
                 delta: LayerParams | None = None):
  """The exact output layer reading the last active set, for one example.

  Returns:
    (logits [C], the gathered block: ``w`` [r, S, C] (all of it at depth
    0), ``b`` [C, S]).
  """
  w, b = slabs
  blk = w if rows is None else w[rows]
  wk, bk = blk[:, 0], b[:, 0]
  if delta is not None:
    wk, bk = wk + delta.w, bk + delta.b
  return vals @ wk + bk, LayerParams(blk, b)


# -- modules ----------------------------------------------------------------------------


class Sparse(NamedTuple):
  """What an ALSH layer passes on: each example's values on its rows."""

  vals: jax.Array  # [B, s]
  rows: jax.Array  # uint32 [B, s]


def _per_example(fn, batch: int, *args):
  """``vmap(fn)(*args)``; at batch size 1 the example runs unbatched (a
  unit batch axis only adds transposes around every gather)."""
  if batch == 1:
    one = jax.tree.map(lambda t: t[0], args)
    return jax.tree.map(lambda t: t[None], fn(*one))
  return jax.vmap(fn)(*args)


def _scatter(vals: jax.Array, idx: jax.Array, n: int) -> jax.Array:
  """[B, s] values on idx -> dense [B, n], zero elsewhere."""
  return jnp.zeros((vals.shape[0], n), vals.dtype).at[
      jnp.arange(vals.shape[0])[:, None], idx].set(vals)


class Table(nnx.Variable):
  """Every node's bucket code in every table, int32 [L, n]."""


class Snapshot(nnx.Variable):
  """A fixed sample of nodes' weights at the layer's last rebuild, [s, n_in]
  (the adaptive rebuild schedule's reference)."""


class ActiveLayer(model_lib.Layer):
  """A hidden layer of ALSH-APPROX: slabs, hash functions and table."""

  draws = True  # a tie-breaking seed per example

  def __init__(self, params: LayerParams, hashes: kernels.HashParams, *,
               reads: int | None, budget: int, activation: str,
               transform: str, m: int, U: float,
               optim_cfg: optim.OptimConfig, drift_sample: int = 0):
    """``reads``: inputs per example, the previous layer's budget (None for
    the first hidden layer, which reads the whole input); ``drift_sample``:
    nodes whose weights the layer keeps a snapshot of at every rebuild, for
    the adaptive schedule (0: none)."""
    n_in = params.w.shape[0]
    first = reads is None
    self.reads = n_in if first else reads
    self.slot_axis = 1 if first else 2
    slab = lambda p, axis: optim.init_slab(optim_cfg, p, axis)
    self.w = model_lib.Slab(slab(params.w.T, self.slot_axis))
    self.b = model_lib.Slab(slab(params.b[:, None], 1)[:, :, 0])
    self.hashes = nnx.data(hashes)
    self.query = nnx.data(kernels.query_hash(hashes, n_in,
                                             transform=transform, m=m))
    self.first, self.budget, self.activation = first, budget, activation
    self.transform, self.m, self.U = transform, m, U
    self.table = Table(self.build_table())
    n_out = params.w.shape[1]
    count = min(drift_sample, n_out)
    # Evenly spaced nodes: a fixed sample, the same in every run.
    self.drift_nodes = tuple(int(i) for i in np.linspace(
        0, n_out - 1, count).round()) if count else None
    self.snapshot = Snapshot(self.sampled_weights()) if count else None

  def sampled_weights(self) -> jax.Array:
    """The drift sample's weights now, [s, n_in] (slot 0)."""
    w = self.w[...][jnp.asarray(self.drift_nodes)]
    return jnp.take(w, 0, axis=self.slot_axis)

  def drift(self) -> jax.Array:
    """How far the sampled nodes' weights moved since the last rebuild
    (``schedule.drift``)."""
    return schedule.drift(self.sampled_weights(), self.snapshot[...])

  def weights(self) -> jax.Array:
    """Node-major weights [n_out, n_in] (slot 0)."""
    return jnp.take(self.w[...], 0, axis=self.slot_axis)

  def params(self) -> LayerParams:
    return LayerParams(self.weights().T, self.b[...][:, 0])

  def moments(self) -> tuple[LayerParams, LayerParams]:
    """Adam's first and second moments in the standard layout."""
    if self.b.shape[1] < 3:
      raise ValueError("this layer has no Adam moments (optimizer is sgd)")
    w, b = self.w[...], self.b[...]
    return tuple(LayerParams(jnp.take(w, i, axis=self.slot_axis).T, b[:, i])
                 for i in (1, 2))

  def build_table(self) -> jax.Array:
    """The table of the current weights (``kernels.build_tables``)."""
    return kernels.build_tables(self.hashes, self.weights().T,
                                transform=self.transform, m=self.m, U=self.U)

  def example(self, seed, vals, rows, delta=None) -> Active:
    return active_layer(seed, vals, rows, LayerParams(self.w[...], self.b[...]),
                        self.query, self.table[...], budget=self.budget,
                        activation=self.activation, delta=delta)

  def __call__(self, rand, carry, delta=None):
    vals, rows = carry if isinstance(carry, Sparse) else (carry, None)
    act = _per_example(self.example, vals.shape[0], rand, vals, rows, delta)
    n = self.w.shape[0]
    mask = _scatter(jnp.ones_like(act.vals, bool), act.idx, n)
    out = LayerOut(_scatter(act.z, act.idx, n), _scatter(act.vals, act.idx, n),
                   mask, act)
    return out, Sparse(act.vals, act.idx)

  def zero_delta(self, batch_size):
    return LayerParams(jnp.zeros((batch_size, self.budget, self.reads)),
                       jnp.zeros((batch_size, self.budget)))


class SparseOutput(model_lib.Layer):
  """The exact output layer, reading only the last hidden layer's active
  nodes (all inputs at depth 0)."""

  def __init__(self, params: LayerParams, *, optim_cfg: optim.OptimConfig,
               reads: int):
    self.w = model_lib.Slab(optim.init_slab(optim_cfg, params.w, 1))
    self.b = model_lib.Slab(
        optim.init_slab(optim_cfg, params.b[:, None], 1)[:, :, 0])
    self.reads = reads  # inputs per example: the last budget, or n_in
    self.activation = None

  def params(self) -> LayerParams:
    return LayerParams(self.w[...][:, 0, :], self.b[...][:, 0])

  def moments(self) -> tuple[LayerParams, LayerParams]:
    if self.b.shape[1] < 3:
      raise ValueError("this layer has no Adam moments (optimizer is sgd)")
    w, b = self.w[...], self.b[...]
    return tuple(LayerParams(w[:, i, :], b[:, i]) for i in (1, 2))

  def __call__(self, rand, carry, delta=None):
    del rand
    slabs = LayerParams(self.w[...], self.b[...])
    vals, rows = carry if isinstance(carry, Sparse) else (carry, None)
    fn = lambda v, r, d: output_layer(v, r, slabs, d)
    logits, block = _per_example(fn, vals.shape[0], vals, rows, delta)
    return LayerOut(logits, logits, None, block), logits

  def zero_delta(self, batch_size):
    c = self.w.shape[2]
    return LayerParams(jnp.zeros((batch_size, self.reads, c)),
                       jnp.zeros((batch_size, c)))
