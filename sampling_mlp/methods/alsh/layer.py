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

The authors' network (``ModelConfig.bias``, ``.weight_norm``): a bias-free
layer has no bias slab; under weight normalisation (Salimans and Kingma
2016) the weight slab holds the directions ``v`` and a lengths slab ``g``
([n_k, S], output layer [C, S]) the lengths, the effective weights being
``layers.weight_norm``.  Each active node's norm ``||v_j||`` reads its whole
row, so a hidden layer's pass gathers the active nodes' full rows (not only
the columns of the previous active set), and their update changes the full
rows: the gradient of ``v_j`` is ``g_j / ||v_j|| (G_j - (G_j . u_j) u_j)``
with ``u_j = v_j / ||v_j||``, dense along the row even where ``G_j`` (the
effective weights' gradient) is not.  The output layer, small, is then
normalised and updated densely.
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
      ``w`` [s, S, D] (first layer) or [s, r, S] ([s, n_in, S], the full
      rows, under weight normalisation), ``b`` [s, S] (None if bias-free).
    colliding: int32 [], nodes colliding with the query in >= 1 table.
    random_fraction: float32 [], the share of the budget filled at random.
    lengths: under weight normalisation, the gathered lengths slab [s, S];
      else None.
  """

  vals: jax.Array
  idx: jax.Array
  z: jax.Array
  block: LayerParams
  colliding: jax.Array
  random_fraction: jax.Array
  lengths: jax.Array | None = None


def active_layer(seed: jax.Array, vals: jax.Array, rows: jax.Array | None,
                 slabs: LayerParams, query: kernels.QueryHash,
                 table: jax.Array, *, budget: int, activation: str,
                 delta: LayerParams | None = None,
                 lengths: jax.Array | None = None) -> Active:
  """One hidden layer of ALSH-APPROX for one example.

  Args:
    seed: uint32 [] tie-breaking seed.
    vals: [r] the layer's input on ``rows``: the previous layer's active
      nodes (inactive nodes output 0), or the whole input [D].
    rows: uint32 [r] the previous active set, or None (dense input).
    slabs: the layer's weight and bias slabs (module docstring; the bias
      None for a bias-free layer).
    query: the layer's hash functions laid out for queries.
    table: int32 [L, n] every node's bucket codes.
    budget: static active-set size.
    activation: the hidden activation.
    delta: in training, zeros [s, r] and [s] (None if bias-free) added to
      the block of effective weights; their gradient is the block's.
    lengths: the lengths slab [n, S] under weight normalisation, else None.

  Returns:
    :class:`Active`.
  """
  q = kernels.sparse_query_codes(query, jax.lax.stop_gradient(vals), rows)
  idx, colliding, frac = kernels.select_active(
      seed, kernels.collisions(q, table), budget)
  w, b = slabs
  bb = None if b is None else b[idx]
  gg = None if lengths is None else lengths[idx]
  if rows is None:
    blk = w[idx]  # [s, S, D]
    # All slots times the input, then slot 0: cheaper than copying the
    # parameter slot out of the gathered rows.
    z = jnp.einsum("ksd,d->ks", blk, vals)[:, 0]
    if gg is not None:
      z = z * _scale(blk[:, 0], gg[:, 0])
  elif gg is None:
    blk = w[idx[:, None], rows[None, :]]  # [s, r, S]
    z = blk[..., 0] @ vals
  else:
    blk = w[idx]  # [s, n_in, S]: the norms read whole rows
    z = (blk[:, :, 0][:, rows] @ vals) * _scale(blk[..., 0], gg[:, 0])
  if bb is not None:
    z = z + bb[:, 0]
  if delta is not None:
    z = z + delta.w @ vals
    if delta.b is not None:
      z = z + delta.b
  return Active(layers.activation_fn(activation)(z), idx, z,
                LayerParams(blk, bb), colliding, frac, gg)


def _scale(v: jax.Array, g: jax.Array) -> jax.Array:
  """``g / ||v||`` per node: ``v`` [s, n_in] node-major, ``g`` [s]; the
  effective weights are ``v * _scale(v, g)[:, None]``
  (``layers.weight_norm(v, g, axis=1)``)."""
  return g / jnp.sqrt(jnp.sum(v * v, axis=1))


def normed_grads(v: jax.Array, g: jax.Array, grad_w: jax.Array, *,
                 axis: int) -> tuple[jax.Array, jax.Array]:
  """The gradients of ``v`` and ``g`` from that of the effective weights
  ``layers.weight_norm(v, g, axis=axis)``: its vector-Jacobian product (the
  definition; Salimans and Kingma 2016, eq. 3)."""
  _, vjp = jax.vjp(lambda v, g: layers.weight_norm(v, g, axis=axis), v, g)
  return vjp(grad_w)


def output_layer(vals: jax.Array, rows: jax.Array | None, slabs: LayerParams,
                 delta: LayerParams | None = None,
                 lengths: jax.Array | None = None):
  """The exact output layer reading the last active set, for one example.

  ``slabs.b`` is None for a bias-free layer; ``lengths`` [C, S] the
  lengths slab under weight normalisation (the effective weights are then
  computed whole: the norms read every row).

  Returns:
    (logits [C], the gathered block: ``w`` [r, S, C] (all of it at depth
    0), ``b`` [C, S] or None).
  """
  w, b = slabs
  blk = w if rows is None else w[rows]
  if lengths is None:
    wk = blk[:, 0]
  else:
    wk = layers.weight_norm(w[:, 0], lengths[:, 0])
    wk = wk if rows is None else wk[rows]
  logits = vals @ (wk if delta is None else wk + delta.w)
  if b is not None:
    logits = logits + b[:, 0]
  if delta is not None and delta.b is not None:
    logits = logits + delta.b
  return logits, LayerParams(blk, b)


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


class Sketch(nnx.Variable):
  """The incremental schedule's hash state: every node's sketch [n, L*K +
  1] (``kernels.node_sketch`` of its effective weights), or the common
  scale [] its codes use (set by a full rebuild, held or renewed by
  ``kernels.held_scale`` between rebuilds)."""


class Snapshot(nnx.Variable):
  """A fixed sample of nodes' weights at the layer's last rebuild, [s, n_in]
  (the adaptive rebuild schedule's reference)."""


class ActiveLayer(model_lib.Layer):
  """A hidden layer of ALSH-APPROX: slabs, hash functions and table."""

  draws = True  # a tie-breaking seed per example

  def __init__(self, params: LayerParams, hashes: kernels.HashParams, *,
               reads: int | None, budget: int, activation: str,
               transform: str, m: int, U: float,
               optim_cfg: optim.OptimConfig, drift_sample: int = 0,
               incremental: bool = False, bias: bool = True,
               weight_norm: bool = False):
    """``reads``: inputs per example, the previous layer's budget (None for
    the first hidden layer, which reads the whole input); ``drift_sample``:
    nodes whose weights the layer keeps a snapshot of at every rebuild, for
    the adaptive schedule (0: none); ``incremental``: keep every node's
    sketch and the common scale (``sketch``, ``hash_scale``), from which
    :meth:`rehash` re-hashes touched nodes (the incremental schedule; else
    both are None); ``bias``, ``weight_norm``: the network's layers (module
    docstring), initialised so that the effective weights are
    ``params.w``."""
    n_in = params.w.shape[0]
    first = reads is None
    self.reads = n_in if first else reads
    self.slot_axis = 1 if first else 2
    slab = lambda p, axis: optim.init_slab(optim_cfg, p, axis)
    self.w = model_lib.Slab(slab(params.w.T, self.slot_axis))
    self.b = _vector_slab(optim_cfg, params.b) if bias else None
    self.g = (_vector_slab(optim_cfg, layers.weight_norm_init(params.w))
              if weight_norm else None)
    self.hashes = nnx.data(hashes)
    self.query = nnx.data(kernels.query_hash(hashes, n_in,
                                             transform=transform, m=m))
    self.first, self.budget, self.activation = first, budget, activation
    self.transform, self.m, self.U = transform, m, U
    table, sketch, scale = self.rebuild()
    self.table = Table(table)
    self.sketch = Sketch(sketch) if incremental else None
    self.hash_scale = Sketch(scale) if incremental else None
    n_out = params.w.shape[1]
    count = min(drift_sample, n_out)
    # Evenly spaced nodes: a fixed sample, the same in every run.
    self.drift_nodes = tuple(int(i) for i in np.linspace(
        0, n_out - 1, count).round()) if count else None
    self.snapshot = Snapshot(self.sampled_weights()) if count else None

  def _effective(self, v: jax.Array, nodes=None) -> jax.Array:
    """The effective weights of ``nodes`` (all: None) from their
    directions ``v`` [s, n_in]: ``v`` itself without weight
    normalisation."""
    if self.g is None:
      return v
    g = self.g[...][:, 0]
    return layers.weight_norm(v, g if nodes is None else g[nodes], axis=1)

  def scales(self) -> jax.Array | None:
    """Under weight normalisation each node's ``g / ||v||`` [n_out] (its
    effective weights are ``v`` times it), else None."""
    if self.g is None:
      return None
    return _scale(jnp.take(self.w[...], 0, axis=self.slot_axis),
                  self.g[...][:, 0])

  def sampled_weights(self) -> jax.Array:
    """The drift sample's effective weights now, [s, n_in] (slot 0)."""
    nodes = jnp.asarray(self.drift_nodes)
    w = self.w[...][nodes]
    return self._effective(jnp.take(w, 0, axis=self.slot_axis), nodes)

  def drift(self) -> jax.Array:
    """How far the sampled nodes' weights moved since the last rebuild
    (``schedule.drift``)."""
    return schedule.drift(self.sampled_weights(), self.snapshot[...])

  def weights(self) -> jax.Array:
    """Node-major effective weights [n_out, n_in] (slot 0)."""
    return self._effective(jnp.take(self.w[...], 0, axis=self.slot_axis))

  def params(self) -> LayerParams:
    return LayerParams(self.weights().T, _bias(self.b, self.w.shape[0]))

  def moments(self) -> tuple[LayerParams, LayerParams]:
    """Adam's first and second moments of the trained weights (``v``
    under weight normalisation) and bias (None if bias-free), in the
    standard layout."""
    w = self.w[...]
    if w.shape[self.slot_axis] < 3:
      raise ValueError("this layer has no Adam moments (optimizer is sgd)")
    return tuple(LayerParams(jnp.take(w, i, axis=self.slot_axis).T,
                             None if self.b is None else self.b[...][:, i])
                 for i in (1, 2))

  def rebuild(self) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The full rebuild from the current weights (the definition):
    ``(table int32 [L, n], sketch [n, L*K + 1], scale [])``, the table as
    ``kernels.build_tables`` of the effective weights."""
    sketch = kernels.node_sketch(self.hashes, self.weights())
    scale = kernels.sketch_scale(sketch, transform=self.transform, U=self.U)
    return (kernels.sketch_codes(self.hashes, sketch, scale,
                                 transform=self.transform, m=self.m),
            sketch, scale)

  def build_table(self) -> jax.Array:
    """The table of the current weights (``kernels.build_tables``)."""
    return self.rebuild()[0]

  def hash_state(self) -> tuple:
    """What a rebuild renews: ``(table,)``, and under the incremental
    schedule ``(table, sketch, scale)``."""
    if self.sketch is None:
      return (self.table[...],)
    return self.table[...], self.sketch[...], self.hash_scale[...]

  def set_hash_state(self, state: tuple) -> None:
    """Stores a :meth:`hash_state` (from a rebuild)."""
    self.table[...] = state[0]
    if self.sketch is not None:
      self.sketch[...], self.hash_scale[...] = state[1], state[2]

  def rehash(self, nodes: jax.Array) -> None:
    """The incremental schedule's re-hash (the definition): the sketches
    of ``nodes`` (uint32, any shape, repeats allowed) from their current
    effective weights, written into ``sketch``; then the common scale
    (``kernels.held_scale``): where it holds, the codes of ``nodes`` from
    their sketches, else every node's codes under the renewed scale."""
    nodes = nodes.reshape(-1)
    v = jnp.take(self.w[...][nodes], 0, axis=self.slot_axis)  # [N, n_in]
    touched = kernels.node_sketch(self.hashes, self._effective(v, nodes))
    sketch = self.sketch[...].at[nodes].set(touched)
    old = self.hash_scale[...]
    scale = kernels.held_scale(sketch, old, transform=self.transform,
                               U=self.U, tolerance=schedule.RESCALE_TOLERANCE)
    codes = lambda sk: kernels.sketch_codes(self.hashes, sk, scale,
                                            transform=self.transform,
                                            m=self.m)
    self.table[...] = jax.lax.cond(
        scale != old, lambda: codes(sketch),
        lambda: self.table[...].at[:, nodes].set(codes(touched)))
    self.sketch[...], self.hash_scale[...] = sketch, scale

  def example(self, seed, vals, rows, delta=None) -> Active:
    return active_layer(seed, vals, rows, LayerParams(self.w[...],
                                                      value_or_none(self.b)),
                        self.query, self.table[...], budget=self.budget,
                        activation=self.activation, delta=delta,
                        lengths=value_or_none(self.g))

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
                       None if self.b is None
                       else jnp.zeros((batch_size, self.budget)))


class SparseOutput(model_lib.Layer):
  """The exact output layer, reading only the last hidden layer's active
  nodes (all inputs at depth 0)."""

  def __init__(self, params: LayerParams, *, optim_cfg: optim.OptimConfig,
               reads: int, bias: bool = True, weight_norm: bool = False):
    self.w = model_lib.Slab(optim.init_slab(optim_cfg, params.w, 1))
    self.b = _vector_slab(optim_cfg, params.b) if bias else None
    self.g = (_vector_slab(optim_cfg, layers.weight_norm_init(params.w))
              if weight_norm else None)
    self.reads = reads  # inputs per example: the last budget, or n_in
    self.activation = None

  def params(self) -> LayerParams:
    w = self.w[...][:, 0, :]
    if self.g is not None:
      w = layers.weight_norm(w, self.g[...][:, 0])
    return LayerParams(w, _bias(self.b, w.shape[1]))

  def moments(self) -> tuple[LayerParams, LayerParams]:
    """As :meth:`ActiveLayer.moments`."""
    w = self.w[...]
    if w.shape[1] < 3:
      raise ValueError("this layer has no Adam moments (optimizer is sgd)")
    return tuple(LayerParams(w[:, i, :],
                             None if self.b is None else self.b[...][:, i])
                 for i in (1, 2))

  def __call__(self, rand, carry, delta=None):
    del rand
    slabs = LayerParams(self.w[...], value_or_none(self.b))
    lengths = value_or_none(self.g)
    vals, rows = carry if isinstance(carry, Sparse) else (carry, None)
    fn = lambda v, r, d: output_layer(v, r, slabs, d, lengths)
    logits, block = _per_example(fn, vals.shape[0], vals, rows, delta)
    return LayerOut(logits, logits, None, block), logits

  def zero_delta(self, batch_size):
    c = self.w.shape[2]
    return LayerParams(jnp.zeros((batch_size, self.reads, c)),
                       None if self.b is None
                       else jnp.zeros((batch_size, c)))


def _vector_slab(optim_cfg: optim.OptimConfig, p: jax.Array) -> model_lib.Slab:
  """A per-node parameter [n] (bias, lengths) with its moments, [n, S]."""
  return model_lib.Slab(optim.init_slab(optim_cfg, p[:, None], 1)[:, :, 0])


def value_or_none(var):
  """A variable's value, None for an absent one."""
  return None if var is None else var[...]


def _bias(b, n: int) -> jax.Array:
  """The bias (slot 0) of a bias slab, zeros [n] for a bias-free layer."""
  return jnp.zeros((n,), jnp.float32) if b is None else b[...][:, 0]
