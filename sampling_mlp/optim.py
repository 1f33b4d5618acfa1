"""Optimizers: Optax for dense updates, and row/block-sparse ("lazy") updates.

Exact training (STANDARD) uses :func:`make_optax`.  Sampled methods touch only
a few rows (MC-APPROX) or blocks (ALSH-APPROX) of each weight matrix per step;
updating every weight's Adam moments would cost as much memory traffic as the
dense step they try to avoid.  :class:`LazyOptimizer` applies the same Adam
(or SGD) formula to the touched entries only:

* the moments of untouched weights are left alone (as TensorFlow's
  ``LazyAdamOptimizer`` does), whereas dense Adam would decay them and keep
  moving those weights with their stale momentum;
* bias correction uses the global step count, shared by all entries.

When every entry is touched at every step, the lazy update is exactly
``optax.adam`` (tested), so the two differ only in what happens to weights
a step did not reach.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

OPTIMIZERS = ("adam", "sgd")


@dataclasses.dataclass(frozen=True)
class OptimConfig:
  """Optimizer settings; the defaults are the paper's (Adam, lr 1e-3, eps 1e-4)."""

  name: str = "adam"
  learning_rate: float = 1e-3
  b1: float = 0.9
  b2: float = 0.999
  eps: float = 1e-4

  def __post_init__(self):
    if self.name not in OPTIMIZERS:
      raise ValueError(f"unknown optimizer {self.name!r}; choose one of "
                       f"{', '.join(OPTIMIZERS)}")
    if not self.learning_rate > 0:
      raise ValueError(
          f"learning_rate must be > 0, got {self.learning_rate}")


def make_optax(cfg: OptimConfig) -> optax.GradientTransformation:
  """The dense Optax transformation for ``cfg``."""
  if cfg.name == "adam":
    return optax.adam(cfg.learning_rate, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps)
  return optax.sgd(cfg.learning_rate)


class LazyState(NamedTuple):
  """State of :class:`LazyOptimizer`.

  Attributes:
    count: [] int32, number of updates so far (Adam's bias correction).
    mu: first moments, same pytree as the parameters (empty for SGD).
    nu: second moments, same pytree as the parameters (empty for SGD).
  """

  count: jax.Array
  mu: Any
  nu: Any


# Index modes: sentinel indices (>= size) mark unused slots of a static-size
# buffer; reads give 0 and writes are dropped.
_GET = dict(mode="fill", fill_value=0)
_SET = dict(mode="drop")


@dataclasses.dataclass(frozen=True)
class LazyOptimizer:
  """Adam or SGD applied to dense, row-sparse or block-sparse gradients.

  All ``update_*`` functions are pure and take the already incremented count
  (``state.count + 1``) so that every parameter of one step shares it.
  """

  cfg: OptimConfig

  def init(self, params) -> LazyState:
    if self.cfg.name == "adam":
      zeros = jax.tree.map(jnp.zeros_like, params)
      return LazyState(jnp.zeros([], jnp.int32), zeros,
                       jax.tree.map(jnp.zeros_like, params))
    empty = jax.tree.map(lambda p: jnp.zeros((0,), p.dtype), params)
    return LazyState(jnp.zeros([], jnp.int32), empty, empty)

  def _adam(self, p, m, v, g, count):
    c = self.cfg
    m = c.b1 * m + (1 - c.b1) * g
    v = c.b2 * v + (1 - c.b2) * jnp.square(g)
    t = count.astype(g.dtype)
    m_hat = m / (1 - c.b1 ** t)
    v_hat = v / (1 - c.b2 ** t)
    return p - c.learning_rate * m_hat / (jnp.sqrt(v_hat) + c.eps), m, v

  def update_dense(self, p, m, v, g, count):
    """Dense update of one parameter array. Returns (p, m, v)."""
    if self.cfg.name == "sgd":
      return p - self.cfg.learning_rate * g, m, v
    return self._adam(p, m, v, g, count)

  # -- slabs: a parameter and its moments stacked on one axis ----------------
  # A sparse step gathers and scatters the same entries of the parameter and
  # of both moments; stacked as one array (the slot axis holds parameter,
  # first and second moment: S = 3 for Adam, 1 for SGD) they cost one gather
  # and one scatter instead of three of each.

  @property
  def slots(self) -> int:
    return 3 if self.cfg.name == "adam" else 1

  def init_slab(self, p: jax.Array, axis: int = 0) -> jax.Array:
    """``p`` with a slot axis inserted at ``axis``: the parameter, then (Adam)
    zero first and second moments."""
    if self.cfg.name == "adam":
      return jnp.stack([p, jnp.zeros_like(p), jnp.zeros_like(p)], axis=axis)
    return jnp.expand_dims(p, axis)

  def update_slots(self, slab: jax.Array, g: jax.Array, count: jax.Array,
                   axis: int = 0) -> tuple:
    """Updated (parameter, moments...) of gathered slab entries.

    Args:
      slab: gathered entries with the slot axis at ``axis``.
      g: their gradient (the same shape without the slot axis).
      count: the step's update count.
      axis: the slot axis.

    Returns:
      A tuple of S arrays shaped like ``g``: new parameter, then (Adam) the
      new first and second moments.  Callers scatter each slot back on its
      own: stacking them first fuses into one unvectorised loop on a CPU.
    """
    take = lambda i: jnp.take(slab, i, axis=axis)
    if self.cfg.name == "sgd":
      return (take(0) - self.cfg.learning_rate * g,)
    return self._adam(take(0), take(1), take(2), g, count)

  def update_slab(self, slab: jax.Array, g: jax.Array, count: jax.Array,
                  axis: int = 0) -> jax.Array:
    """Updated slab entries (slots stacked back on ``axis``)."""
    return jnp.stack(self.update_slots(slab, g, count, axis), axis=axis)

  def update_slab_masked(self, slab, g, mask, count, axis: int = 0):
    """Dense-cost lazy update of a whole slab; False entries stay untouched."""
    return jnp.where(jnp.expand_dims(mask, axis),
                     self.update_slab(slab, g, count, axis), slab)

  def update_rows(self, p, m, v, rows, g, count):
    """Updates only ``p[rows]``.

    Args:
      p, m, v: parameter and its moments, [n, ...].
      rows: [r] int32 unique row indices; indices >= n are ignored.
      g: [r, ...] gradient of those rows.
      count: [] the step's update count.

    Returns:
      (p, m, v) with only the given rows changed.
    """
    if self.cfg.name == "sgd":
      return p.at[rows].add(-self.cfg.learning_rate * g, **_SET), m, v
    pr, mr, vr = self._adam(p.at[rows].get(**_GET), m.at[rows].get(**_GET),
                            v.at[rows].get(**_GET), g, count)
    return (p.at[rows].set(pr, **_SET), m.at[rows].set(mr, **_SET),
            v.at[rows].set(vr, **_SET))

  def update_block(self, p, m, v, rows, cols, g, count):
    """Updates only the block ``p[rows][:, cols]`` of a matrix.

    Args:
      p, m, v: [n, k] parameter and its moments.
      rows: [r] unique row indices; cols: [s] unique column indices.
      g: [r, s] gradient of the block.
      count: [] the step's update count.

    Returns:
      (p, m, v) with only the block changed.
    """
    ix = (rows[:, None], cols[None, :])
    if self.cfg.name == "sgd":
      return p.at[ix].add(-self.cfg.learning_rate * g, **_SET), m, v
    pb, mb, vb = self._adam(p.at[ix].get(**_GET), m.at[ix].get(**_GET),
                            v.at[ix].get(**_GET), g, count)
    return (p.at[ix].set(pb, **_SET), m.at[ix].set(mb, **_SET),
            v.at[ix].set(vb, **_SET))


def dedup_rows(rows: jax.Array, g: jax.Array, n: int):
  """Sums the gradient rows of repeated indices (sampling with replacement).

  Args:
    rows: [r] int32 row indices, possibly repeated.
    g: [r, ...] per-occurrence gradients.
    n: number of rows of the parameter; used as the sentinel for empty slots.

  Returns:
    (unique_rows [r], summed [r, ...]): unique indices padded with ``n``
    (ignored by LazyOptimizer) and the summed gradients.
  """
  r = rows.shape[0]
  uniq = jnp.unique(rows, size=r, fill_value=n)
  slot = jnp.searchsorted(uniq, rows)
  return uniq, jnp.zeros_like(g).at[slot].add(g)
