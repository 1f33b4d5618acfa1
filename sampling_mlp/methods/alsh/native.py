"""Native CPU kernels for ALSH-APPROX (XLA FFI).

At batch size 1 an ALSH step touches a few dozen rows of each weight matrix.
XLA's CPU backend runs a gather, an update and a scatter of those rows as
three element-by-element loops, sorts a whole layer to pick its active set,
and pays a dispatch for each of the step's dozens of small operations; at
one hidden layer that overhead, not arithmetic, sets the step time.
``csrc/alsh_kernels.cc`` does the work in few calls, in place:

* :func:`train_step`: a whole batch-size-1 step of any depth -- every
  layer's query hashing and active set, the sparse forward pass, the exact
  output layer and its loss, backpropagation through the active nodes, and
  lazy Adam (or SGD) of every touched weight;
* :func:`train_hogwild`: N such steps on several threads sharing the
  weights without locks (HOGWILD);
* :func:`train_batch`: one mini-batch step, its update applied once to the
  union of the weights its examples touched;
* :func:`build_tables`: the tables' rebuild, reading the slabs in place
  (and every node's sketch, for the incremental schedule, under which the
  step kernels above re-hash the nodes they touch: :class:`Rehash`);
* :func:`select_active`: the selection alone -- the query's hash codes, its
  collision counts, and the tie-breaking and top-``budget`` selection of
  :func:`sampling_mlp.methods.alsh.kernels.select_active` -- which the tests
  compare with the XLA path's bit for bit.

The hidden blocks after the first layer are gathered and written back in
address order with prefetching: in a wide layer each of their entries is in
its own cache line, and their memory latency, not arithmetic, sets the
step time.

The JAX functions (``kernels``, ``layer.active_layer``, the method's XLA
step) are the definition; the tests hold this kernel equal to them.

The source is compiled on first use -- the first step traced, or
``python -m sampling_mlp.native --build`` (every method's kernels) ahead of
time -- and cached, as ``sampling_mlp.native`` describes.  Any failure to
build, load or register the kernels is caught: :func:`status` says why, and
``--alsh_kernel=auto`` falls back to the pure-XLA path, which computes the
same numbers.
"""

from __future__ import annotations

import pathlib
import sys
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from sampling_mlp import layers as _layers
from sampling_mlp import native as _native
from sampling_mlp.native import NativeUnavailable, Status  # noqa: F401

LIBRARY = _native.Library(
    "ALSH", pathlib.Path(__file__).parent / "csrc" / "alsh_kernels.cc",
    {"sampling_mlp_alsh_select": "AlshSelectActive",
     "sampling_mlp_alsh_train_step": "AlshTrainStep",
     "sampling_mlp_alsh_train_hogwild": "AlshTrainHogwild",
     "sampling_mlp_alsh_train_batch": "AlshTrainBatch",
     "sampling_mlp_alsh_build_tables": "AlshBuildTables"},
    fallback="use --alsh_kernel=xla (or auto) to run the pure-XLA path "
    "instead.")
status, available, require = LIBRARY.status, LIBRARY.available, LIBRARY.require


# -- the kernels ---------------------------------------------------------------


def select_active(qh, vals: jax.Array, rows: jax.Array | None,
                  tables: jax.Array, seed: jax.Array, *,
                  budget: int) -> tuple[jax.Array, jax.Array]:
  """Native ``kernels.select_active(seed, collisions(sparse_query_codes(...)))``.

  Hashes one query, counts its collisions with the tables and picks the
  active set with the same tie-breaking as the XLA path.  The query's
  projection sums in another order than XLA's dot, so a projection within
  rounding of a bucket boundary can land in the other bucket.

  Args:
    qh: the layer's ``kernels.QueryHash``.
    vals: float32 [r] the query's values on ``rows``.
    rows: uint32 [r] indices of the non-zero inputs, or None (dense query).
    tables: int32 [L, n] every node's bucket in each table.
    seed: uint32 [] tie-breaking seed.
    budget: static active-set size, 1 <= budget <= n.

  Returns:
    (idx uint32 [budget], num_colliding int32 []).
  """
  require()
  empty = jnp.zeros((0,), jnp.float32)
  return jax.ffi.ffi_call(
      "sampling_mlp_alsh_select",
      (jax.ShapeDtypeStruct((budget,), jnp.uint32),
       jax.ShapeDtypeStruct((), jnp.int32)))(
           vals.astype(jnp.float32),
           jnp.zeros((0,), jnp.uint32) if rows is None else
           rows.astype(jnp.uint32), qh.proj, qh.tail,
           empty if qh.offsets is None else qh.offsets,
           jnp.float32(1.0) if qh.bucket_width is None else qh.bucket_width,
           qh.multipliers, tables.astype(jnp.int32), seed.astype(jnp.uint32))


# kernels.TRANSFORMS by the code the table kernel switches on.
TRANSFORM_CODES = {"l2_alsh": 0, "sign_alsh": 1, "simple_lsh": 2}


def build_tables(hp, w: jax.Array, *, slot_axis: int, transform: str,
                 m: int, U: float, threads: int,
                 scales: jax.Array | None = None, sketches: bool = False):
  """Native ``kernels.build_tables`` of a hidden layer, read from its slab.

  The same codes as the definition up to float32 rounding: the projections
  sum in another order, so a projection within rounding of a bucket
  boundary can land in the other bucket.  The slab is read in place (no
  copy of its weights), by up to ``threads`` threads.

  Args:
    hp: the layer's ``kernels.HashParams`` (projections [L, K, d]).
    w: the weight slab, [n, S, n_in] (``slot_axis`` 1, the first hidden
      layer) or [n, n_in, S] (``slot_axis`` 2); slot 0 holds the weights.
    slot_axis: 1 or 2.
    transform: a key of TRANSFORM_CODES; m, U: its parameters (resolved).
    threads: at most this many threads.
    scales: under weight normalisation each node's ``g / ||v||`` [n]
      (``layer.ActiveLayer.scales``): the slab then holds the directions
      ``v`` and the codes are those of the effective weights
      ``scales[:, None] * v``; None: the slab holds the weights.
    sketches: also return every node's sketch and the common scale.

  Returns:
    int32 [L, n], as ``kernels.build_tables(hp, weights [n_in, n], ...)``;
    with ``sketches``, ``(tables, sketch [n, L*K + 1], scale [])`` as
    ``kernels.node_sketch`` and ``kernels.sketch_scale`` of the effective
    weights.
  """
  require()
  if transform not in TRANSFORM_CODES:
    raise ValueError(f"unknown transform {transform!r}; choose one of "
                     f"{', '.join(TRANSFORM_CODES)}")
  L, K, _ = hp.projections.shape
  n = w.shape[0]
  if scales is None:
    scales = jnp.zeros((0,), jnp.float32)
  out = jax.ffi.ffi_call(
      "sampling_mlp_alsh_build_tables",
      (jax.ShapeDtypeStruct((L, n), jnp.int32),
       jax.ShapeDtypeStruct((n, L * K + 1), jnp.float32),
       jax.ShapeDtypeStruct((), jnp.float32)))(
           w.astype(jnp.float32), scales.astype(jnp.float32), hp.projections,
           jnp.zeros((0,), jnp.float32) if hp.offsets is None
           else hp.offsets,
           jnp.float32(1.0) if hp.bucket_width is None else hp.bucket_width,
           hp.multipliers, slot_axis=np.int64(slot_axis),
           transform=np.int32(TRANSFORM_CODES[transform]), m=np.int64(m),
           U=np.float32(U), threads=np.int64(threads))
  return tuple(out) if sketches else out[0]


# layers.ACTIVATIONS by the code the kernel switches on.
ACTIVATION_CODES = {"relu": 0, "leaky_relu": 1, "sigmoid": 2, "linear": 3}


def _layer_slabs(slabs: tuple) -> tuple[list, bool, bool]:
  """Every layer's slabs as the kernels take them -- ``w``, then ``b``
  where the layers have biases, then ``g`` under weight normalisation --
  and the network (bias, weight_norm), the same for every layer."""
  nets = {(len(s) > 1 and s[1] is not None, len(s) > 2 and s[2] is not None)
          for s in slabs}
  if len(nets) != 1:
    raise ValueError("every layer must have a bias or none, and be "
                     "weight-normalised or none")
  (bias, weight_norm), = nets
  return ([[a for a in s if a is not None] for s in slabs], bias,
          weight_norm)


class Rehash(NamedTuple):
  """A hidden layer's state under the incremental schedule, as the step
  kernels take it: its sketches [n, L*K + 1] (``kernels.node_sketch`` of
  every node), the projections of the transform's appended coordinates
  [L*K, m] (:func:`appended_projections`), and the common scale []
  (``kernels.held_scale``)."""

  sketch: jax.Array
  tail: jax.Array
  scale: jax.Array


def appended_projections(hp, n_in: int) -> jax.Array:
  """How each of the L*K hash directions reads the transform's appended
  coordinates: ``projections[:, :, n_in:]`` as [L*K, m]."""
  L, K, d = hp.projections.shape
  return hp.projections[:, :, n_in:].reshape(L * K, d - n_in)


def _call_step(name: str, slabs: tuple, queries: tuple, tables: tuple,
               x: jax.Array, labels: jax.Array, seeds: jax.Array,
               count: jax.Array, *, budgets: tuple[int, ...], optim,
               activation: str, rehash: tuple | None = None,
               transform: str = "l2_alsh", target: float = 1.0,
               tolerance: float = 0.0, **attrs):
  """The FFI call of the step kernel ``name``, shared by the step kernels:
  leading arguments (x, labels,
  count, seeds), then per hidden layer its slabs, hash and table (and its
  :class:`Rehash` under the incremental schedule), then the output slabs;
  results (loss, colliding), then every slab (then each hidden layer's
  tables, sketches and scale under the incremental schedule), aliased.
  Returns the slabs in the structure given (None where absent), and under
  the incremental schedule the tables, sketches and scales."""
  require()
  depth = len(slabs) - 1
  if not depth == len(queries) == len(tables) == len(budgets):
    raise ValueError(f"need one query hash, table and budget per hidden "
                     f"layer ({depth}); got {len(queries)}, {len(tables)} "
                     f"and {len(budgets)}")
  if rehash is not None and len(rehash) != depth:
    raise ValueError(f"need one Rehash per hidden layer ({depth}); got "
                     f"{len(rehash)}")
  if activation not in ACTIVATION_CODES:
    raise ValueError(f"the native kernels have no activation {activation!r}; "
                     f"choose one of {', '.join(ACTIVATION_CODES)}")
  if transform not in TRANSFORM_CODES:
    raise ValueError(f"unknown transform {transform!r}; choose one of "
                     f"{', '.join(TRANSFORM_CODES)}")
  present, bias, weight_norm = _layer_slabs(slabs)
  flat_slabs = [a for layer in present for a in layer]
  args, aliases, lead_args, lead_rets = [], {}, 4, 2
  extra_rets = []  # the incremental schedule's tables, sketches, scales

  def alias(a, ret):
    aliases[lead_args + len(args)] = ret
    args.append(a)

  slab_rets = iter(range(lead_rets, lead_rets + len(flat_slabs)))

  def add_slabs(layer):
    for a in layer:
      alias(a, next(slab_rets))

  for k, (layer, qh, t) in enumerate(zip(present[:-1], queries, tables)):
    add_slabs(layer)
    args.extend([qh.proj, qh.tail,
                 jnp.zeros((0,), jnp.float32) if qh.offsets is None
                 else qh.offsets,
                 jnp.float32(1.0) if qh.bucket_width is None
                 else qh.bucket_width,
                 qh.multipliers])
    t = t.astype(jnp.int32)
    if rehash is None:
      args.append(t)
      continue
    r = rehash[k]
    sketch, scale = (r.sketch.astype(jnp.float32),
                     jnp.asarray(r.scale, jnp.float32))
    base = lead_rets + len(flat_slabs) + 3 * k
    alias(t, base)
    alias(sketch, base + 1)
    args.append(r.tail.astype(jnp.float32))
    alias(scale, base + 2)
    extra_rets += [t, sketch, scale]
  add_slabs(present[-1])
  lead = labels.shape
  out = jax.ffi.ffi_call(
      name,
      (jax.ShapeDtypeStruct(lead, jnp.float32),
       jax.ShapeDtypeStruct(lead + (depth,), jnp.int32)) + tuple(
           jax.ShapeDtypeStruct(a.shape, a.dtype)
           for a in flat_slabs + extra_rets),
      input_output_aliases=aliases)(
          x.astype(jnp.float32), labels.astype(jnp.int32),
          count.astype(jnp.int32), seeds.astype(jnp.uint32), *args,
          **_native.optimizer_attrs(optim),
          activation=np.int32(ACTIVATION_CODES[activation]),
          slope=np.float32(_layers.LEAKY_SLOPE),
          budgets=np.asarray(budgets, np.int64), bias=np.int32(bias),
          weight_norm=np.int32(weight_norm),
          incremental=np.int32(rehash is not None),
          transform=np.int32(TRANSFORM_CODES[transform]),
          target=np.float32(target), tolerance=np.float32(tolerance),
          **attrs)
  loss, colliding, results = out[0], out[1], iter(out[2:])
  new = []
  for s in slabs:
    vals = [None if a is None else next(results) for a in s]
    new.append(s._make(vals) if hasattr(s, "_make") else tuple(vals))
  if rehash is None:
    return tuple(new), loss, colliding
  rest = list(results)
  return tuple(new), loss, colliding, (tuple(rest[0::3]), tuple(rest[1::3]),
                                       tuple(rest[2::3]))


def train_step(slabs: tuple, queries: tuple, tables: tuple, x: jax.Array,
               label: jax.Array, seeds: jax.Array, count: jax.Array, *,
               budgets: tuple[int, ...], optim, activation: str,
               rehash: tuple | None = None, transform: str = "l2_alsh",
               target: float = 1.0, tolerance: float = 0.0):
  """One ALSH-APPROX training step at batch size 1, in place.

  What ``ALSH.train_step`` computes at batch size 1 with jax.numpy, in one
  kernel: per hidden layer the active set (as
  :func:`select_active`) and its nodes' activations from the previous
  layer's active nodes; the exact output layer and the softmax
  cross-entropy; backpropagation through the active nodes, every gradient
  taken from the weights before the step; and lazy Adam (or SGD) of every
  weight the example touched: the first layer's active rows, the [active x
  previous active] blocks after it, the output layer's rows of the last
  active set, and all biases on the way.  Adam's bias corrections are folded
  into the step size and epsilon (Kingma and Ba 2015, Sec. 2), which is the
  same update up to float32 rounding.

  Under weight normalisation (each layer's slabs ending with its lengths
  ``g``) the active nodes' whole rows and lengths are updated, and the
  output layer whole, as the XLA step does; a bias-free network (``b``
  None) has no bias slabs.

  Args:
    slabs: per layer (d hidden layers, then the output layer) its slabs
      ``(w, b)`` or ``(w, b, g)``, in the layouts ``layer.py`` documents,
      with S = 3 slots (Adam) or 1 (SGD); ``b`` is None for bias-free
      layers, ``g`` (the lengths) is None or absent without weight
      normalisation; the same network in every layer.
    queries: d ``kernels.QueryHash``, one per hidden layer.
    tables: d int32 [L, n_k] bucket codes.
    x: float32 [D] the example.
    label: int32 [] in [0, C).
    seeds: uint32 [d] tie-breaking seeds, one per hidden layer.
    count: int32 [] the update count after this step (Adam's t).
    budgets: d static active-set sizes.
    optim: the :class:`sampling_mlp.optim.OptimConfig`.
    activation: the hidden layers' activation (a key of ACTIVATION_CODES).
    rehash: under the incremental schedule, d :class:`Rehash`: after each
      layer's update the touched nodes' sketches follow their weights and
      their codes are rewritten in ``tables``, and the scale is renewed
      (every node recoded) where the longest node's scaled norm left the
      band ``target * (1 +- tolerance)`` (``ActiveLayer.rehash``); None:
      the tables are only read.
    transform: the layers' transform (a key of TRANSFORM_CODES), which
      the re-hash's codes use; target, tolerance: the scale's band.

  Returns:
    (slabs, loss [], colliding int32 [d]): the updated slabs, structured
    as given (aliasing the inputs' buffers), the example's loss before the
    update, and the number of nodes colliding with the query in each
    hidden layer; with ``rehash``, then ``(tables, sketches, scales)``, d
    each, updated (aliasing the inputs).
  """
  return _call_step("sampling_mlp_alsh_train_step", slabs, queries, tables,
                    x, label, seeds, count, budgets=budgets, optim=optim,
                    activation=activation, rehash=rehash,
                    transform=transform, target=target, tolerance=tolerance)


def train_hogwild(slabs: tuple, queries: tuple, tables: tuple, x: jax.Array,
                  labels: jax.Array, seeds: jax.Array, count: jax.Array, *,
                  budgets: tuple[int, ...], optim, activation: str,
                  threads: int, rehash: tuple | None = None,
                  transform: str = "l2_alsh", target: float = 1.0,
                  tolerance: float = 0.0):
  """N batch-size-1 steps, example i with update count ``count + i``, on
  up to ``threads`` threads updating the weights without locks (HOGWILD,
  Recht et al. 2011, as SLIDE does).  With ``threads=1`` it is N calls of
  :func:`train_step`, in order, bit for bit; with more, two examples'
  updates of a shared weight may race (one overwrites the other), which
  SGD tolerates.

  Args:
    x: float32 [N, D]; labels int32 [N]; seeds uint32 [N, d].
    count: int32 [] the update count of the first example's step.
    threads: at most this many threads (XLA's pool and the caller's).
    (the rest as :func:`train_step`)

  Returns:
    (slabs, loss [N], colliding int32 [N, d]).
  """
  return _call_step("sampling_mlp_alsh_train_hogwild", slabs, queries,
                    tables, x, labels, seeds, count, budgets=budgets,
                    optim=optim, activation=activation,
                    threads=np.int64(threads), rehash=rehash,
                    transform=transform, target=target, tolerance=tolerance)


def train_batch(slabs: tuple, queries: tuple, tables: tuple, x: jax.Array,
                labels: jax.Array, seeds: jax.Array, count: jax.Array, *,
                budgets: tuple[int, ...], optim, activation: str,
                threads: int, rehash: tuple | None = None,
                transform: str = "l2_alsh", target: float = 1.0,
                tolerance: float = 0.0):
  """One mini-batch step of ALSH-APPROX on B examples, in place.

  What ``ALSH.train_step`` computes for a mini-batch with jax.numpy: every
  example's active sets and gradients from the weights before the step
  (the loss is the batch mean), then one lazy Adam (or SGD) step of every
  weight some example touched, with the sum of the examples' gradients --
  at a cost that grows with B times the active sets, not with the layers.
  Examples are split among up to ``threads`` threads and then the touched
  nodes; every sum runs over the examples in order, so the result does not
  depend on the number of threads.  It has no weight normalisation (the
  kernel says so; the method takes the XLA step for that network).

  Args:
    x: float32 [B, D]; labels int32 [B]; seeds uint32 [B, d].
    count: int32 [] the update count after this step.
    threads: at most this many threads.
    (the rest as :func:`train_step`)

  Returns:
    (slabs, loss [B], colliding int32 [B, d]).
  """
  return _call_step("sampling_mlp_alsh_train_batch", slabs, queries, tables,
                    x, labels, seeds, count, budgets=budgets, optim=optim,
                    activation=activation, threads=np.int64(threads),
                    rehash=rehash, transform=transform, target=target,
                    tolerance=tolerance)


def main(argv=None) -> int:
  return LIBRARY.main(argv, prog="python -m sampling_mlp.methods.alsh.native")


if __name__ == "__main__":
  sys.exit(main())
