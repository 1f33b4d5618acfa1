"""Hashing kernel of ALSH-APPROX (Spring and Shrivastava 2017).

Per hidden layer and per input ``a`` [n_in], only the *active nodes* are
computed: the columns ``w[:, j]`` of the layer's weights ``w`` [n_in, n_out]
whose inner product ``<w[:, j], a>`` is large. They are found by asymmetric
locality-sensitive hashing for maximum inner product search (MIPS): the nodes
are transformed with ``P``, the query with ``Q``, both are hashed into ``L``
tables of ``K`` hash components each, and a node is a candidate when it shares
the query's bucket in at least one table.

This module holds the pure, jit-able kernels only:

* transforms (:data:`TRANSFORMS`): ``l2_alsh`` (Shrivastava and Li 2014, the
  paper's choice), ``sign_alsh`` (Shrivastava and Li 2015), ``simple_lsh``
  (Neyshabur and Srebro 2015);
* hash families (:data:`HASHES`): ``srp`` (sign random projections, Charikar
  2002) and ``l2`` (p-stable, Datar et al. 2004);
* tables, collision counts, a static-size active set per example, recall of
  the true top-k, and the table rebuild schedule.

Tables are plain arrays, not hash maps: the table of a layer is the bucket code
of every node in every table, ``int32 [L, n_out]``, and a lookup is a
vectorised equality compare against the query's ``L`` codes. With
``n_out ~ 1000`` and ``L ~ 5`` that is a few thousand integer compares, cheaper
under XLA than any sorted/bucketed structure, and its shapes are static.
(A sorted representation with ``searchsorted`` would give sublinear lookups
for very wide layers; it is deliberately left out.)

Deliberate differences from the authors' code: hash parameters are drawn once
from an explicit key (their code uses unseeded global random state), and the
active set has a static size (the budget): colliding nodes first, ordered by
the number of tables they collide in, then random non-colliding nodes to fill
up; the authors instead take colliding nodes (capped) and top up with random
nodes to at least 5% of the layer, so their active set size varies.

Which transform fits which hash: ``l2_alsh`` turns MIPS into nearest-neighbour
search in Euclidean distance, so it was designed for the ``l2`` hash. With
``srp`` (what the paper's code uses) the collision probability depends on the
angle between ``Q(a)`` and ``P(w_j)``, which does not order nodes by inner
product. ``sign_alsh`` and ``simple_lsh`` turn MIPS into (near-)cosine
similarity search and fit ``srp``.
"""

from __future__ import annotations

import math
from typing import NamedTuple

from absl import logging

import jax
import jax.numpy as jnp

TRANSFORMS = ("l2_alsh", "sign_alsh", "simple_lsh")
HASHES = ("srp", "l2")

# Per-transform defaults (m, U) recommended by the transforms' authors:
# Shrivastava and Li 2014 (m = 3, U = 0.83, bucket width r = 2.5) and
# Shrivastava and Li 2015 (m = 2, U = 0.75). simple_lsh uses neither: it
# always scales the largest norm to 1 and appends one component.
TRANSFORM_DEFAULTS = {
    "l2_alsh": {"m": 3, "U": 0.83},
    "sign_alsh": {"m": 2, "U": 0.75},
    "simple_lsh": {"m": 1, "U": 1.0},
}

# Bucket width of the l2 hash; Shrivastava and Li 2014 recommend
# r = 2.5 together with m = 3, U = 0.83.
DEFAULT_R = 2.5

# srp packs K sign bits into one non-negative int32, so K <= 31.
MAX_SRP_BITS = 31


# ---------------------------------------------------------------------------
# Validation and defaults
# ---------------------------------------------------------------------------


def _check_choice(name: str, value: str, valid: tuple[str, ...]) -> None:
  if value not in valid:
    raise ValueError(
        f"Unknown {name} {value!r}; valid values are {', '.join(valid)}.")


def resolve_transform_params(
    transform: str, m: int | None = None, U: float | None = None
) -> tuple[int, float]:
  """Fills in the transform's recommended ``m`` and ``U`` where not given.

  Args:
    transform: one of :data:`TRANSFORMS`.
    m: number of appended norm powers, or None for the transform's default.
    U: largest column norm after scaling, or None for the default.

  Returns:
    ``(m, U)`` as Python numbers.
  """
  _check_choice("transform", transform, TRANSFORMS)
  d = TRANSFORM_DEFAULTS[transform]
  return (d["m"] if m is None else int(m)), (d["U"] if U is None else float(U))


def validate_hparams(
    *,
    K: int,
    L: int,
    m: int,
    U: float,
    fraction: float,
    transform: str,
    hash: str,  # pylint: disable=redefined-builtin
) -> None:
  """Raises ValueError, saying what is wrong and what is valid, on bad values.

  Args:
    K: hash components (bits for ``srp``) per table; >= 1 (<= 31 for srp).
    L: number of tables; >= 1.
    m: number of appended norm powers of the ALSH transforms; >= 1.
    U: largest column norm after scaling; in (0, 1). (``simple_lsh`` ignores
      it but it is still checked, so a config is valid for every transform.)
    fraction: active-set fraction of the layer's nodes; in (0, 1].
    transform: one of :data:`TRANSFORMS`.
    hash: one of :data:`HASHES`.
  """
  _check_choice("transform", transform, TRANSFORMS)
  _check_choice("hash", hash, HASHES)
  if int(K) != K or K < 1:
    raise ValueError(f"K (hash components per table) must be an integer >= 1, "
                     f"got {K!r}.")
  if hash == "srp" and K > MAX_SRP_BITS:
    raise ValueError(f"K={K} is too large for hash='srp': the K sign bits are "
                     f"packed into an int32, so K must be <= {MAX_SRP_BITS}.")
  if int(L) != L or L < 1:
    raise ValueError(f"L (number of hash tables) must be an integer >= 1, "
                     f"got {L!r}.")
  if int(m) != m or m < 1:
    raise ValueError(f"m (number of appended norm powers) must be an integer "
                     f">= 1, got {m!r}.")
  if not 0.0 < U < 1.0:
    raise ValueError(f"U (largest column norm after scaling) must lie in "
                     f"(0, 1), got {U!r}; the papers use 0.83 (l2_alsh) and "
                     f"0.75 (sign_alsh).")
  _check_fraction(fraction)


def _check_fraction(fraction: float) -> None:
  if not 0.0 < fraction <= 1.0:
    raise ValueError(f"Active-set fraction must lie in (0, 1], got "
                     f"{fraction!r}; the paper uses 0.05.")


def budget_for(n_out: int, fraction: float) -> int:
  """Static active-set size: ``max(1, ceil(fraction * n_out))``.

  Args:
    n_out: number of nodes in the layer.
    fraction: active fraction in (0, 1].

  Returns:
    A Python int in [1, n_out].
  """
  _check_fraction(fraction)
  if int(n_out) != n_out or n_out < 1:
    raise ValueError(f"n_out must be a positive integer, got {n_out!r}.")
  # The 1e-9 guards against 0.05 * 1000 = 50.00000000000001 -> 51.
  return min(int(n_out), max(1, math.ceil(fraction * n_out - 1e-9)))


# ---------------------------------------------------------------------------
# Transforms
# ---------------------------------------------------------------------------


def transformed_dim(n_in: int, *, transform: str, m: int | None = None) -> int:
  """Dimension ``d`` of ``P(w_j)`` and ``Q(a)``: ``n_in + m`` (+1 for simple_lsh)."""
  m, _ = resolve_transform_params(transform, m)
  return n_in + (1 if transform == "simple_lsh" else m)


def _safe_normalize(x: jax.Array) -> jax.Array:
  """x / ||x|| over the last axis; a zero vector stays zero (no NaN)."""
  norm = jnp.linalg.norm(x, axis=-1, keepdims=True)
  return x / jnp.where(norm > 0, norm, 1.0)


def _norm_powers(sq_norm: jax.Array, m: int) -> jax.Array:
  """[..., m] with ||x||^(2^i) for i = 1..m, by repeated squaring."""
  powers = [sq_norm]
  for _ in range(m - 1):
    powers.append(powers[-1] * powers[-1])
  return jnp.stack(powers, axis=-1)


def transform_weights(
    w: jax.Array,
    *,
    transform: str,
    m: int | None = None,
    U: float | None = None,
) -> jax.Array:
  """The asymmetric data transform ``P``, one transformed row per node.

  All columns are first scaled by one common factor so that the largest norm
  is ``U`` (1 for ``simple_lsh``); a common factor leaves the MIPS ordering
  unchanged.

  * ``l2_alsh``: ``P(x) = [x; ||x||^2; ||x||^4; ...; ||x||^(2^m)]``.
  * ``sign_alsh``: ``P(x) = [x; 1/2 - ||x||^2; ...; 1/2 - ||x||^(2^m)]``.
  * ``simple_lsh``: ``P(x) = [x; sqrt(1 - ||x||^2)]`` (``m``, ``U`` unused).

  Args:
    w: layer weights [n_in, n_out]; column j is node j's incoming weights.
    transform: one of :data:`TRANSFORMS`.
    m: appended norm powers (default per transform: 3 / 2 / unused).
    U: largest norm after scaling (default 0.83 / 0.75 / 1).

  Returns:
    [n_out, d] float, ``d = transformed_dim(n_in, ...)``. An all-zero ``w``
    gives finite output.
  """
  m, U = resolve_transform_params(transform, m, U)
  if transform == "simple_lsh":
    U = 1.0
  x = jnp.asarray(w).T  # [n_out, n_in]
  sq = jnp.sum(x * x, axis=-1)  # [n_out]
  max_norm = jnp.sqrt(jnp.max(sq))
  scale = U / jnp.where(max_norm > 0, max_norm, 1.0)
  x = x * scale
  sq = sq * scale * scale
  if transform == "l2_alsh":
    extra = _norm_powers(sq, m)
  elif transform == "sign_alsh":
    extra = 0.5 - _norm_powers(sq, m)
  else:
    # Rounding can push ||x||^2 a hair above 1 for the longest column.
    extra = jnp.sqrt(jnp.maximum(1.0 - sq, 0.0))[:, None]
  return jnp.concatenate([x, extra.astype(x.dtype)], axis=-1)


def transform_queries(
    a: jax.Array, *, transform: str, m: int | None = None
) -> jax.Array:
  """The asymmetric query transform ``Q``.

  * ``l2_alsh``: ``Q(a) = [a/||a||; 1/2; ...; 1/2]`` (m halves).
  * ``sign_alsh``: ``Q(a) = [a/||a||; 0; ...; 0]`` (m zeros).
  * ``simple_lsh``: ``Q(a) = [a/||a||; 0]``.

  Args:
    a: queries [..., n_in]. A zero query maps to ``a/||a|| = 0`` (no NaN).
    transform: one of :data:`TRANSFORMS`.
    m: appended components (default per transform).

  Returns:
    [..., d] float.
  """
  m, _ = resolve_transform_params(transform, m)
  q = _safe_normalize(jnp.asarray(a))
  n_extra = 1 if transform == "simple_lsh" else m
  fill = 0.5 if transform == "l2_alsh" else 0.0
  extra = jnp.full(q.shape[:-1] + (n_extra,), fill, dtype=q.dtype)
  return jnp.concatenate([q, extra], axis=-1)


# ---------------------------------------------------------------------------
# Hash families
# ---------------------------------------------------------------------------


class HashParams(NamedTuple):
  """Random hash functions for ``L`` tables of ``K`` components each.

  The family is static under ``jit``: it is encoded in the pytree structure
  (``srp`` has ``offsets is None``), not in a traced value, so one family never
  pays for the other's arithmetic.

  Attributes:
    projections: [L, K, d] float32, i.i.d. standard Gaussian directions.
    multipliers: [L, K] int32 combining the K components into one code:
      ``2^k`` for ``srp`` (bit packing, code in ``[0, 2^K)``), random odd
      int32 for ``l2`` (a universal hash in int32 arithmetic with wraparound).
    offsets: [L, K] float32 drawn from ``U[0, R)`` for ``l2``; None for srp.
    bucket_width: [] float32 ``R`` for ``l2``; None for srp.
  """

  projections: jax.Array
  multipliers: jax.Array
  offsets: jax.Array | None = None
  bucket_width: jax.Array | None = None

  @property
  def family(self) -> str:
    """``'srp'`` or ``'l2'`` (a static Python string, also under jit)."""
    return "srp" if self.offsets is None else "l2"

  @property
  def num_tables(self) -> int:
    return self.projections.shape[0]

  @property
  def num_components(self) -> int:
    return self.projections.shape[1]


def init_hash(
    key: jax.Array,
    *,
    dim: int,
    K: int,
    L: int,
    family: str,
    R: float = DEFAULT_R,
) -> HashParams:
  """Draws the hash functions once from an explicit key.

  Args:
    key: a typed PRNG key; consumed.
    dim: transformed dimension ``d`` (see :func:`transformed_dim`).
    K: components per table (sign bits for ``srp``; <= 31).
    L: number of tables.
    family: ``'srp'`` (sign random projections, Charikar 2002) or ``'l2'``
      (``floor((r.x + b) / R)``, Datar et al. 2004).
    R: bucket width of the ``l2`` family (ignored by srp). Default 2.5, the
      value Shrivastava and Li 2014 recommend with ``m = 3, U = 0.83``: after
      their transform ``||Q(a) - P(w)||^2 = 1 + m/4 - 2 <a/||a||, w> +
      ||w||^(2^(m+1))``, so distances are O(1) (about 0.3 to 1.9) and the
      projected distances ``r.(Q - P) ~ N(0, ||Q - P||^2)`` are of the order
      of the bucket width.

  Returns:
    HashParams.
  """
  _check_choice("hash", family, HASHES)
  if int(K) != K or int(L) != L or K < 1 or L < 1:
    raise ValueError(f"K and L must be integers >= 1, got K={K!r}, L={L!r}.")
  if family == "srp" and K > MAX_SRP_BITS:
    raise ValueError(f"K={K} is too large for hash='srp': the K sign bits are "
                     f"packed into an int32, so K must be <= {MAX_SRP_BITS}.")
  if not R > 0:
    raise ValueError(f"Bucket width R must be positive, got {R!r}.")
  k_proj, k_off, k_mult = jax.random.split(key, 3)
  projections = jax.random.normal(k_proj, (L, K, dim), jnp.float32)
  if family == "srp":
    multipliers = jnp.broadcast_to(
        jnp.left_shift(jnp.int32(1), jnp.arange(K, dtype=jnp.int32)), (L, K))
    return HashParams(projections, multipliers)
  offsets = jax.random.uniform(k_off, (L, K), jnp.float32, 0.0, R)
  # Odd multipliers are invertible mod 2^32, so a code differing in a single
  # component always gives a different bucket; several differing components
  # collide only by a ~2^-32 accident.
  bits = jax.random.bits(k_mult, (L, K), jnp.uint32) | jnp.uint32(1)
  multipliers = jax.lax.bitcast_convert_type(bits, jnp.int32)
  return HashParams(projections, multipliers, offsets, jnp.float32(R))


def hash_codes(hp: HashParams, x: jax.Array) -> jax.Array:
  """Bucket code of each vector in each table.

  Component ``h_k`` is ``[r_k . x > 0]`` for ``srp`` and
  ``floor((r_k . x + b_k) / R)`` for ``l2``; the table's code is
  ``sum_k multipliers_k * h_k`` in int32 with wraparound.

  Args:
    hp: hash parameters from :func:`init_hash`.
    x: transformed vectors [..., d].

  Returns:
    int32 [..., L].
  """
  proj = jnp.einsum("...d,lkd->...lk", x, hp.projections)  # [..., L, K]
  if hp.offsets is None:
    comps = (proj > 0).astype(jnp.int32)
  else:
    comps = jnp.floor((proj + hp.offsets) / hp.bucket_width).astype(jnp.int32)
  return jnp.sum(comps * hp.multipliers, axis=-1, dtype=jnp.int32)


# ---------------------------------------------------------------------------
# Tables and queries
# ---------------------------------------------------------------------------


def build_tables(
    hp: HashParams,
    w: jax.Array,
    *,
    transform: str,
    m: int | None = None,
    U: float | None = None,
) -> jax.Array:
  """Bucket code of every node in every table.

  Args:
    hp: hash parameters (``dim`` must equal ``transformed_dim(n_in, ...)``).
    w: layer weights [n_in, n_out].
    transform: one of :data:`TRANSFORMS`.
    m, U: transform parameters (defaults per transform).

  Returns:
    int32 [L, n_out]. Deterministic given ``hp`` and ``w``.
  """
  p = transform_weights(w, transform=transform, m=m, U=U)  # [n_out, d]
  # hash_codes(hp, p).T, computed table-major: no transpose, so the tables
  # stay row-major in the training loop, as the native kernels read them.
  proj = jnp.einsum("nd,lkd->lkn", p, hp.projections)  # [L, K, n_out]
  if hp.offsets is None:
    comps = (proj > 0).astype(jnp.int32)
  else:
    comps = jnp.floor((proj + hp.offsets[..., None]) /
                      hp.bucket_width).astype(jnp.int32)
  return jnp.sum(comps * hp.multipliers[..., None], axis=1, dtype=jnp.int32)


def collisions(query_codes: jax.Array, table_codes: jax.Array) -> jax.Array:
  """Number of tables in which each node shares the query's bucket.

  Args:
    query_codes: int32 [L], from :func:`hash_codes` of ``Q(a)``.
    table_codes: int32 [L, n_out], from :func:`build_tables`.

  Returns:
    int32 [n_out] with values in [0, L].
  """
  return jnp.sum(query_codes[:, None] == table_codes, axis=0, dtype=jnp.int32)


class ActiveSetInfo(NamedTuple):
  """Diagnostics of one active set (fields gain a leading [B] when batched).

  Attributes:
    num_colliding: int32, nodes colliding with the query in >= 1 table
      (before capping to the budget).
    random_fraction: float32 in [0, 1], fraction of the budget filled with
      random non-colliding nodes, ``max(budget - num_colliding, 0) / budget``.
  """

  num_colliding: jax.Array
  random_fraction: jax.Array


def active_set(
    key: jax.Array,
    a: jax.Array,
    hp: HashParams,
    table_codes: jax.Array,
    *,
    budget: int,
    transform: str,
    m: int | None = None,
) -> tuple[jax.Array, ActiveSetInfo]:
  """Static-size active set of one input.

  Nodes are ranked by the number of tables they collide in with ``Q(a)``;
  ties -- and so the choice among colliding nodes when they overflow the
  budget, and the random fill from the non-colliding nodes -- are broken
  uniformly at random with ``key``. Taking the top ``budget`` of
  ``collisions + noise`` with ``noise ~ U[0, 1/2)`` does all of this at once:
  the noise is below 1/2 so it never reorders different collision counts
  (even after float32 rounding, for L < 2^22), and among equal counts it is a
  uniformly random permutation.

  Args:
    key: typed PRNG key for tie-breaking and random fill; consumed.
    a: input of the layer [n_in].
    hp: hash parameters.
    table_codes: int32 [L, n_out] from :func:`build_tables`.
    budget: static active-set size, see :func:`budget_for`.
    transform: the transform the tables were built with.
    m: its ``m`` (default per transform).

  Returns:
    ``(idx, info)``: idx int32 [budget], distinct node indices, colliding
    nodes first (more colliding tables first); info an :class:`ActiveSetInfo`.
  """
  n_out = table_codes.shape[-1]
  if not 1 <= budget <= n_out:
    raise ValueError(f"budget must be in [1, n_out={n_out}], got {budget}; "
                     f"use budget_for(n_out, fraction).")
  q = transform_queries(a, transform=transform, m=m)
  counts = collisions(hash_codes(hp, q), table_codes)  # [n_out]
  noise = jax.random.uniform(key, (n_out,), jnp.float32, 0.0, 0.5)
  _, idx = jax.lax.top_k(counts.astype(jnp.float32) + noise, budget)
  num_colliding = jnp.sum(counts > 0, dtype=jnp.int32)
  random_fraction = (jnp.maximum(budget - num_colliding, 0) / budget).astype(
      jnp.float32)
  return idx.astype(jnp.int32), ActiveSetInfo(num_colliding, random_fraction)


def active_sets(
    key: jax.Array,
    a: jax.Array,
    hp: HashParams,
    table_codes: jax.Array,
    *,
    budget: int,
    transform: str,
    m: int | None = None,
) -> tuple[jax.Array, ActiveSetInfo]:
  """Batched :func:`active_set`: each example its own key and active set.

  Args:
    key: typed PRNG key; split into one key per example.
    a: inputs [B, n_in].
    hp, table_codes, budget, transform, m: as in :func:`active_set`.

  Returns:
    ``(idx, info)``: idx int32 [B, budget]; info fields of shape [B].
  """
  keys = jax.random.split(key, a.shape[0])
  fn = lambda k, x: active_set(k, x, hp, table_codes, budget=budget,
                               transform=transform, m=m)
  return jax.vmap(fn)(keys, a)


def recall_at_k(
    a: jax.Array, w: jax.Array, idx: jax.Array, *, k: int
) -> jax.Array:
  """Fraction of the exact top-k nodes (by ``a @ w``) that are in the active set.

  Args:
    a: inputs [B, n_in].
    w: layer weights [n_in, n_out].
    idx: active sets int32 [B, budget].
    k: static number of true top nodes, 1 <= k <= n_out.

  Returns:
    float32 scalar in [0, 1], averaged over the batch.
  """
  _, top = jax.lax.top_k(a @ w, k)  # [B, k]
  hit = jnp.any(top[:, :, None] == idx[:, None, :], axis=-1)  # [B, k]
  return jnp.mean(hit.astype(jnp.float32))


# ---------------------------------------------------------------------------
# Rebuild schedule
# ---------------------------------------------------------------------------


class RebuildSchedule(NamedTuple):
  """When to rebuild the tables, by training step (Python ints, static).

  Rebuild at ``step`` if ``step < early_until`` and ``step % early_every ==
  0``, or if ``step >= early_until`` and ``(step - early_until) % late_every
  == 0``. An ``*_every`` of 0 means never in that phase. The default is the
  paper's: every 100 steps during the first 10,000, then every 1,000. The
  rebuild at the end of each epoch is the caller's job, and so is the initial
  build (``should_rebuild(0)`` is True, like ``i % 100 == 0``, which simply
  rebuilds from the initial weights).

  Attributes:
    early_every: rebuild period in the early phase (0: never).
    early_until: first step of the late phase.
    late_every: rebuild period in the late phase (0: never).
  """

  early_every: int = 100
  early_until: int = 10_000
  late_every: int = 1_000


PAPER_SCHEDULE = RebuildSchedule()
EPOCH_ONLY = RebuildSchedule(early_every=0, early_until=0, late_every=0)


def parse_schedule(spec: str) -> RebuildSchedule:
  """Parses a rebuild schedule from a flag string.

  Accepted forms: ``"EARLY_EVERY:EARLY_UNTIL:LATE_EVERY"`` (the paper's is
  ``"100:10000:1000"``), ``"N"`` (every N steps throughout), ``"paper"``, and
  ``"epoch"`` (never by step; only the caller's epoch-end rebuilds).

  Args:
    spec: the string.

  Returns:
    A RebuildSchedule.
  """
  s = spec.strip().lower()
  if s == "epoch":
    return EPOCH_ONLY
  if s == "paper":
    return PAPER_SCHEDULE
  parts = s.split(":")
  help_ = ('use "EARLY_EVERY:EARLY_UNTIL:LATE_EVERY" (e.g. the paper\'s '
           '"100:10000:1000"), "N" (every N steps), "paper" or "epoch"')
  if len(parts) not in (1, 3):
    raise ValueError(f"Bad rebuild schedule {spec!r}: {help_}.")
  try:
    vals = [int(p) for p in parts]
  except ValueError:
    raise ValueError(
        f"Bad rebuild schedule {spec!r}: fields must be integers; {help_}."
    ) from None
  if any(v < 0 for v in vals):
    raise ValueError(
        f"Bad rebuild schedule {spec!r}: fields must be >= 0; {help_}.")
  if len(vals) == 1:
    if vals[0] == 0:
      raise ValueError(f"Bad rebuild schedule {spec!r}: a period of 0 means "
                       f'never; write "epoch" for epoch-end rebuilds only.')
    return RebuildSchedule(early_every=vals[0], early_until=0,
                           late_every=vals[0])
  return RebuildSchedule(*vals)


def should_rebuild(
    step: jax.Array | int, *, schedule: RebuildSchedule = PAPER_SCHEDULE
) -> jax.Array:
  """Whether to rebuild the tables before the update of ``step``.

  Args:
    step: number of updates done so far; an int or a traced int scalar.
    schedule: a static RebuildSchedule (Python ints).

  Returns:
    bool scalar array.
  """
  step = jnp.asarray(step)

  def every(s, period):
    return (s % period == 0) if period > 0 else jnp.zeros_like(s, bool)

  early = every(step, schedule.early_every)
  late = every(step - schedule.early_until, schedule.late_every)
  return jnp.where(step < schedule.early_until, early, late)


# ---------------------------------------------------------------------------
# The training method: ALSH-APPROX
# ---------------------------------------------------------------------------
#
# Layout.  Selecting active nodes gathers *columns* of w [n_in, n_out]; under
# XLA on a CPU a strided gather or scatter costs several times a contiguous
# one.  The method therefore keeps each hidden layer node-major,
# ``wt = w.T`` [n_out, n_in], and stacks every parameter with its Adam
# moments into one "slab" [S, ...] (S = 3 for Adam, 1 for SGD; see
# ``optim.LazyOptimizer.update_slab``), so a step gathers each touched block
# once, uses slot 0 for the forward pass, and scatters the updated block of
# parameter and moments back once.  :meth:`ALSH.standard_params` converts back
# to the usual layout; ``predict`` uses it.
#
# Work per example (batch size 1, the paper's setting), for hidden layer k
# with active set ``A_k`` (``s_k`` nodes) and input rows ``R`` (all inputs for
# the first layer, ``A_{k-1}`` after that, since inactive nodes output 0):
# hash the query (L*K x |R| multiply-adds), count collisions (L x n_k
# compares), pick ``A_k`` (top-k of n_k scores), gather the block
# ``wt[A_k][:, R]`` [s_k, |R|] and multiply.  Backpropagation reaches only the
# gathered blocks, and the optimizer updates only them: a lazy Adam, whose
# untouched weights keep their moments (dense Adam would decay the moments of
# every weight and keep moving untouched weights with stale momentum).
#
# Native kernel (``--alsh_kernel``, see native.py): at batch size 1 the
# first layer's gather, update and scatter of whole 784-wide rows are what
# XLA's CPU backend does worst (element-by-element loops, three passes), and
# a step of dozens of small operations pays a dispatch for each, so by
# default the whole step -- every layer's hashing and active set, the sparse
# forward and backward passes, the output layer and the lazy update of
# every touched weight -- is one C++ kernel working on the slabs in place.
# The pure-XLA step computes the same numbers (up to float32 rounding) and
# is what mini-batches, analysis and machines without a compiler use.
#
# Mini-batches: every example keeps its own active sets (as SLIDE does).
# Their blocks overlap, so the per-example block gradients are scatter-added
# into dense gradients and applied by a masked lazy update: forward and
# backward still skip the inactive nodes, but the update costs a dense pass
# over every slab.  Batch size 1 avoids that.

from sampling_mlp import layers as _layers  # noqa: E402
from sampling_mlp import native as _native  # noqa: E402
from sampling_mlp import optim as _optim  # noqa: E402
from sampling_mlp import registry as _registry  # noqa: E402


class QueryHash(NamedTuple):
  """Hash functions laid out for sparse queries.

  Attributes:
    proj: [n_in, L*K] projections of the input coordinates (row i: how input
      node i enters each component), so a sparse query gathers rows.
    tail: [L*K] projection of the query transform's constant tail.
    offsets: [L*K] or None (srp).
    bucket_width: [] or None (srp).
    multipliers: [L, K] int32.
  """

  proj: jax.Array
  tail: jax.Array
  offsets: jax.Array | None
  bucket_width: jax.Array | None
  multipliers: jax.Array


def query_hash(hp: HashParams, n_in: int, *, transform: str,
               m: int | None = None) -> QueryHash:
  """Re-lays ``hp`` so that a query touching rows ``R`` reads only them."""
  L, K, d = hp.projections.shape
  flat = hp.projections.reshape(L * K, d)
  tail_q = transform_queries(jnp.zeros((n_in,)), transform=transform, m=m)
  tail = flat[:, n_in:] @ tail_q[n_in:]
  off = None if hp.offsets is None else hp.offsets.reshape(L * K)
  # Copies: a donated TrainState must not hold one buffer twice.
  copy = lambda t: None if t is None else jnp.array(t, copy=True)
  return QueryHash(flat[:, :n_in].T, tail, off, copy(hp.bucket_width),
                   copy(hp.multipliers))


def sparse_query_codes(qh: QueryHash, vals: jax.Array,
                       rows: jax.Array | None) -> jax.Array:
  """``hash_codes(hp, transform_queries(a))`` for ``a`` non-zero only on rows.

  Args:
    qh: from :func:`query_hash`.
    vals: [r] the query's values on ``rows``.
    rows: [r] int32 indices of the non-zero inputs, or None (dense query).

  Returns:
    int32 [L].
  """
  norm = jnp.sqrt(jnp.sum(vals * vals))
  unit = vals / jnp.where(norm > 0, norm, 1.0)
  proj = qh.proj if rows is None else qh.proj[rows]
  v = unit @ proj + qh.tail  # [L*K]
  L, K = qh.multipliers.shape
  if qh.offsets is None:
    comps = (v > 0).astype(jnp.int32)
  else:
    comps = jnp.floor((v + qh.offsets) / qh.bucket_width).astype(jnp.int32)
  return jnp.sum(comps.reshape(L, K) * qh.multipliers, axis=-1,
                 dtype=jnp.int32)


def tie_noise(seed: jax.Array, n: int) -> jax.Array:
  """[n] pseudo-random values in [0, 1/2) from one uint32 ``seed``.

  The seed is mixed with the node index by MurmurHash3's finaliser: a few
  integer operations per node instead of a counter-based generator per node,
  which matters at batch size 1 where a step takes microseconds.  Only used
  to break ties among equal collision counts (and so to pick the random
  fill); being below 1/2 it never reorders different counts.
  """
  h = jnp.arange(n, dtype=jnp.uint32) * jnp.uint32(0x9E3779B9)
  h = h ^ seed.astype(jnp.uint32)
  h = h ^ (h >> 16)
  h = h * jnp.uint32(0x85EBCA6B)
  h = h ^ (h >> 13)
  h = h * jnp.uint32(0xC2B2AE35)
  h = h ^ (h >> 16)
  return (h >> 8).astype(jnp.float32) * jnp.float32(2.0 ** -25)


def select_active(seed: jax.Array, counts: jax.Array, budget: int):
  """Static-size active set from collision counts.

  Nodes colliding in more tables come first; ties, overflow beyond the
  budget and the random fill from non-colliding nodes are broken by
  :func:`tie_noise` (the same rule as :func:`active_set`).

  Args:
    seed: uint32 [] per-example, per-layer seed.
    counts: int32 [n] collision counts.
    budget: static active-set size.

  Returns:
    (idx uint32 [budget] distinct, num_colliding int32 [],
    random_fraction float32 []).
  """
  score = counts.astype(jnp.float32) + tie_noise(seed, counts.shape[0])
  _, idx = jax.lax.top_k(score, budget)
  num_colliding = jnp.sum(counts > 0, dtype=jnp.int32)
  frac = (jnp.maximum(budget - num_colliding, 0) / budget).astype(jnp.float32)
  # Unsigned: indexing with it skips the negative-index wrap-around, which
  # XLA otherwise evaluates per gathered element.
  return idx.astype(jnp.uint32), num_colliding, frac


class ALSHState(NamedTuple):
  """Method state carried by training.

  Attributes:
    hashes: per hidden layer, its HashParams (drawn once, never redrawn).
    queries: per hidden layer, the same functions as a QueryHash.
    tables: per hidden layer, int32 [L, n_k] bucket codes of its nodes.
  """

  hashes: tuple
  queries: tuple
  tables: tuple


class ALSH(_registry.MethodImpl):
  """ALSH-APPROX: per example, each hidden layer computes only its active
  nodes, found by asymmetric LSH; the output layer is exact; evaluation is
  exact (all nodes).

  ``TrainState.params`` holds slabs (see the module comment): the first
  hidden layer as ``LayerParams(w=[n_1, S, D], b=[n_1, S])`` (slot axis 1:
  its update gathers whole rows, which stay contiguous per slot), later
  hidden layers as ``w=[n_k, n_{k-1}, S]`` (slot axis last: their update
  gathers a scattered block, and the three slots of one weight then share a
  cache line), the output layer as ``LayerParams(w=[n_d, S, C], b=[C, S])``;
  ``opt_state`` is the update count.
  """

  def __init__(self, model, optim_cfg, config):
    super().__init__(model, optim_cfg, config)
    c = self.config
    self.transform = c["alsh_transform"]
    self.m, self.U = resolve_transform_params(
        self.transform, c["alsh_m"] or None, c["alsh_U"] or None)
    self.K, self.L = c["alsh_K"], c["alsh_L"]
    self.family = c["alsh_hash"]
    self.schedule = parse_schedule(c["alsh_rebuild"])
    try:  # combinations the per-flag checks cannot see (K <= 31 for srp)
      validate_hparams(K=self.K, L=self.L, m=self.m,
                       U=min(self.U, 0.999999), fraction=c["alsh_active_fraction"],
                       transform=self.transform, hash=self.family)
    except ValueError as e:
      raise ValueError(f"bad --alsh_* flags: {e}") from None
    self.budgets = tuple(budget_for(n, c["alsh_active_fraction"])
                         for n in model.sizes[1:-1])
    self.lazy = _optim.LazyOptimizer(optim_cfg)
    self.act = _layers.activation_fn(model.activation)
    self.recall_k = 10
    self.native = self._resolve_kernel(c["alsh_kernel"])

  @staticmethod
  def _resolve_kernel(choice: str) -> bool:
    """Whether batch-size-1 steps use the native kernels (native.py)."""
    if choice == "xla":
      return False
    if choice == "native":
      _native.require()
      return True
    if not _native.available() and not ALSH._warned:
      ALSH._warned = True
      logging.warning("ALSH: native kernels unavailable (%s); using the "
                      "slower pure-XLA path, which computes the same numbers.",
                      _native.unavailable_reason())
    return _native.available()

  _warned = False

  # -- layout ------------------------------------------------------------------
  @staticmethod
  def _slot_axis(k: int) -> int:
    """Slot axis of hidden layer k's weight slab."""
    return 1 if k == 0 else 2

  @classmethod
  def _slot(cls, state, i) -> tuple:
    p = state.params
    return tuple(
        _layers.LayerParams(jnp.take(l.w, i, axis=cls._slot_axis(k)).T,
                            l.b[:, i]) for k, l in enumerate(p[:-1])) + (
                                _layers.LayerParams(p[-1].w[:, i, :],
                                                    p[-1].b[:, i]),)

  @classmethod
  def standard_params(cls, state) -> tuple:
    """The trained weights in the usual layout (tuple of LayerParams)."""
    return cls._slot(state, 0)

  @classmethod
  def moments(cls, state) -> tuple:
    """Adam's (first, second) moments in the usual layout."""
    if state.params[-1].b.shape[1] < 3:
      raise ValueError("this state has no Adam moments (optimizer is sgd)")
    return cls._slot(state, 1), cls._slot(state, 2)

  @classmethod
  def _hidden_wt(cls, params):
    """Node-major hidden weights [n_k, n_{k-1}] (slot 0)."""
    return tuple(jnp.take(l.w, 0, axis=cls._slot_axis(k))
                 for k, l in enumerate(params[:-1]))

  # -- hashing ---------------------------------------------------------------
  def _build(self, hashes, wts):
    return tuple(
        build_tables(hp, wt.T, transform=self.transform, m=self.m, U=self.U)
        for hp, wt in zip(hashes, wts))

  def init(self, key, params):
    sizes = self.model.sizes
    keys = jax.random.split(key, max(1, len(sizes) - 2))
    hashes, queries = [], []
    for k, n_in in zip(keys, sizes[:-2]):
      hp = init_hash(k, dim=transformed_dim(n_in, transform=self.transform,
                                            m=self.m),
                     K=self.K, L=self.L, family=self.family,
                     R=self.config["alsh_R"])
      hashes.append(hp)
      queries.append(query_hash(hp, n_in, transform=self.transform, m=self.m))
    slab = lambda a, axis=1: self.lazy.init_slab(a, axis=axis)
    slabs = tuple(_layers.LayerParams(slab(p.w.T, self._slot_axis(k)),
                                      slab(p.b[:, None])[:, :, 0])
                  for k, p in enumerate(params[:-1])) + (
                      _layers.LayerParams(slab(params[-1].w),
                                          slab(params[-1].b[:, None])[:, :, 0]),)
    mstate = ALSHState(tuple(hashes), tuple(queries),
                       self._build(hashes, self._hidden_wt(slabs)))
    return _registry.TrainState(slabs, _registry.zero_step(), mstate,
                                _registry.zero_step())

  def end_epoch(self, state, key):
    del key  # rebuilding is deterministic
    ms = state.method_state
    return state._replace(method_state=ms._replace(
        tables=self._build(ms.hashes, self._hidden_wt(state.params))))

  # -- the sparse forward pass of one example ----------------------------------
  def _hidden_forward(self, slabs, deltas, mstate, x, seeds):
    """Forward pass of one example through the hidden layers' active nodes.

    Args:
      slabs: the TrainState's params (treated as constants).
      deltas: per hidden layer, zeros shaped like its gathered block (the
        gradient target; see :meth:`_zero_deltas`), or None for a plain
        forward pass.
      mstate: ALSHState.
      x: [D] one input.
      seeds: uint32 [depth], one per hidden layer.

    Returns:
      ``(a, rows, aux)``: the last hidden layer's activations on its active
      set ``rows`` (or ``x`` and None at depth 0), and aux, per hidden layer:
      the active set, the gathered slab block (to update without gathering
      again: [s, S, D] for the first layer, [s_k, s_{k-1}, S] after it; None
      the layer's input values, and the stacked
      collision counts and random fill.
    """
    a, rows = x, None
    idxs, blocks, inputs, coll, frac = [], [], [], [], []
    for k in range(len(slabs) - 1):
      query = jax.lax.stop_gradient(a)
      q = sparse_query_codes(mstate.queries[k], query, rows)
      idx, nc, fr = select_active(seeds[k], collisions(q, mstate.tables[k]),
                                  self.budgets[k])
      w, b = slabs[k]
      bb = b[idx]
      if rows is None:
        blk = w[idx]  # [s, S, D]
        # All slots times the input, then slot 0: cheaper than copying the
        # parameter slot out of the gathered rows.
        z = jnp.einsum("ksd,d->ks", blk, a)[:, 0] + bb[:, 0]
      else:
        blk = w[idx[:, None], rows[None, :]]  # [s, r, S]
        z = blk[..., 0] @ a + bb[:, 0]
      if deltas is not None:
        z = z + deltas[k].w @ a + deltas[k].b
      block = _layers.LayerParams(blk, bb)
      inputs.append(a)
      a, rows = self.act(z), idx
      idxs.append(idx)
      blocks.append(block)
      coll.append(nc)
      frac.append(fr)
    stack = lambda t: jnp.stack(t) if t else jnp.zeros((0,))
    return a, rows, (tuple(idxs), tuple(blocks), tuple(inputs), stack(coll),
                     stack(frac))

  def _output_forward(self, slab, delta, a, rows):
    """Logits [C] from the last hidden layer's active activations ``a``, and
    the output slab's gathered block ([s, S, C], or all of it at depth 0)."""
    w, b = slab
    blk = w if rows is None else w[rows]
    wk, bk = blk[:, 0], b[:, 0]
    if delta is not None:
      wk, bk = wk + delta.w, bk + delta.b
    return a @ wk + bk, _layers.LayerParams(blk, b)

  def _example_forward(self, slabs, deltas, mstate, x, seeds):
    """The pure-XLA forward pass of one example (vmap-able).

    Returns:
      logits [C] and aux as in :meth:`_hidden_forward`, with the output
      layer's block appended to the blocks.
    """
    a, rows, (idxs, blocks, inputs, coll, frac) = self._hidden_forward(
        slabs, None if deltas is None else deltas[:-1], mstate, x, seeds)
    logits, block = self._output_forward(
        slabs[-1], None if deltas is None else deltas[-1], a, rows)
    return logits, (idxs, blocks + (block,), inputs, coll, frac)

  def _zero_deltas(self, batch):
    sizes = self.model.sizes
    out, prev = [], sizes[0]
    for s in self.budgets:
      out.append(_layers.LayerParams(jnp.zeros(batch + (s, prev)),
                                     jnp.zeros(batch + (s,))))
      prev = s
    c = sizes[-1]
    out.append(_layers.LayerParams(jnp.zeros(batch + (prev, c)),
                                   jnp.zeros(batch + (c,))))
    return tuple(out)

  def step_randomness(self, key, batch_size):
    """The step's tie-breaking seeds: uint32 [B, max(depth, 1)], one per
    example and hidden layer."""
    depth = len(self.model.sizes) - 2
    return jax.random.bits(key, (batch_size, max(depth, 1)), jnp.uint32)

  def train_step(self, state, x, y, key):
    """One step; ``key`` is the step key or its :meth:`step_randomness`."""
    slabs, ms = state.params, state.method_state
    depth = len(slabs) - 1
    batch = x.shape[0]
    seeds = (self.step_randomness(key, batch)
             if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key) else key)
    frozen = jax.lax.stop_gradient(slabs)
    count = state.opt_state + 1

    def example_loss(deltas, xi, yi, si):
      logits, aux = self._example_forward(frozen, deltas, ms, xi, si)
      return _registry.cross_entropy(logits[None], yi[None]), aux

    if batch == 1 and self.native and depth:
      slabs, loss, coll = _native.train_step(
          slabs, ms.queries, ms.tables, x[0], y[0], seeds[0], count,
          budgets=self.budgets, optim=self.lazy.cfg,
          activation=self.model.activation)
      budgets = jnp.asarray(self.budgets, jnp.float32)
      frac = jnp.maximum(budgets - coll, 0) / budgets
    elif batch == 1:
      # No vmap at batch size 1: a unit batch axis would only add
      # transposes around every gather.
      (loss, (idxs, blocks, _, coll, frac)), g = jax.value_and_grad(
          example_loss, has_aux=True)(self._zero_deltas(()), x[0], y[0],
                                      seeds[0])
      slabs = self._update_single(slabs, blocks, g, idxs, count)
    else:
      def loss_fn(deltas):
        losses, aux = jax.vmap(example_loss)(deltas, x, y, seeds)
        return jnp.mean(losses), aux
      (loss, (idxs, _, _, coll, frac)), g = jax.value_and_grad(
          loss_fn, has_aux=True)(self._zero_deltas((batch,)))
      slabs = self._update_batch(slabs, g, idxs, count)
    step = state.step + 1
    # Only the small tables pass through the conditional, so neither branch
    # copies the parameters.
    tables = jax.lax.cond(
        should_rebuild(step, schedule=self.schedule),
        lambda: self._build(ms.hashes, self._hidden_wt(slabs)),
        lambda: ms.tables)
    state = _registry.TrainState(slabs, count, ms._replace(tables=tables),
                                 step)
    metrics = {"loss": loss}
    if depth:
      # Per hidden layer; averaged over the batch's examples.
      per_layer = lambda t: (t if batch == 1 else jnp.mean(t, axis=0))
      metrics["alsh_colliding"] = per_layer(coll.astype(jnp.float32))
      metrics["alsh_random_fraction"] = per_layer(frac)
    return state, metrics

  def _update_single(self, slabs, blocks, g, idxs, count):
    """Batch size 1: each touched block is updated from the entries the
    forward pass gathered, and each slot is scattered back once."""
    def put(slab, index, block, grad, axis):
      for i, vals in enumerate(self.lazy.update_slots(block, grad, count,
                                                      axis)):
        slab = slab.at[index(i)].set(vals, unique_indices=True)
      return slab

    new, rows = [], None
    for k in range(len(slabs) - 1):
      (w, b), idx = slabs[k], idxs[k]
      if rows is None:
        w = put(w, lambda i: (idx, i), blocks[k].w, g[k].w, 1)
      else:
        r = rows
        w = put(w, lambda i: (idx[:, None], r[None, :], i), blocks[k].w,
                g[k].w, 2)
      b = put(b, lambda i: (idx, i), blocks[k].b, g[k].b, 1)
      new.append(_layers.LayerParams(w, b))
      rows = idx
    w, b = slabs[-1]
    if rows is None:
      w = self.lazy.update_slab(w, g[-1].w, count, axis=1)
    else:
      w = put(w, lambda i: (rows, i), blocks[-1].w, g[-1].w, 1)
    new.append(_layers.LayerParams(
        w, self.lazy.update_slab(b, g[-1].b, count, axis=1)))
    return tuple(new)

  def _update_batch(self, slabs, g, idxs, count):
    """Mini-batches: scatter-add per-example blocks, masked lazy update."""
    def apply(slab, index, grad, axis=1):
      shape = slab.shape[:axis] + slab.shape[axis + 1:]
      gd = jnp.zeros(shape).at[index].add(grad)
      mask = jnp.zeros(shape, bool).at[index].set(True)
      return self.lazy.update_slab_masked(slab, gd, mask, count, axis=axis)

    new, rows = [], None
    for k in range(len(slabs) - 1):
      (w, b), idx = slabs[k], idxs[k]  # idx [B, s]
      ix = (idx,) if rows is None else (idx[:, :, None], rows[:, None, :])
      new.append(_layers.LayerParams(apply(w, ix, g[k].w, self._slot_axis(k)),
                                     apply(b, (idx,), g[k].b)))
      rows = idx
    w, b = slabs[-1]
    if rows is None:
      w = self.lazy.update_slab(w, g[-1].w.sum(0), count, axis=1)
    else:
      w = apply(w, (rows,), g[-1].w)
    b = self.lazy.update_slab(b, g[-1].b.sum(0), count, axis=1)
    new.append(_layers.LayerParams(w, b))
    return tuple(new)

  # -- evaluation and diagnostics ---------------------------------------------
  def predict(self, state, x):
    return _layers.mlp_apply(self.standard_params(state), x,
                             activation=self.model.activation)

  def approx_forward(self, state, x, key):
    """The training-time (approximate) forward pass of a batch, for analysis.

    Args:
      state: a TrainState of this method.
      x: [B, D] inputs.
      key: split into a seed per example and layer.

    Returns:
      (acts, idxs, inputs): acts, per hidden layer the dense [B, n_k]
      approximate activations (zero off the active set), then the logits
      [B, C]; idxs, per hidden layer the active sets [B, s_k]; inputs, per
      hidden layer the dense [B, n_{k-1}] input it received.
    """
    slabs = state.params
    depth = len(slabs) - 1
    seeds = jax.random.bits(key, (x.shape[0], max(depth, 1)), jnp.uint32)
    sizes = self.model.sizes

    def one(xi, si):
      logits, (idxs, _, inputs, _, _) = self._example_forward(
          slabs, None, state.method_state, xi, si)
      # inputs[k] is layer k's input on its rows; layer k's output on its
      # active set is inputs[k + 1] (or, for the last hidden layer, what the
      # output layer read: recompute it from the logits' input below).
      dense_in, prev = [], None
      for k in range(depth):
        dense_in.append(inputs[k] if prev is None else
                        jnp.zeros(sizes[k]).at[prev].set(inputs[k]))
        prev = idxs[k]
      acts = dense_in[1:]
      if depth:
        w, b = slabs[depth - 1]
        rows = None if depth == 1 else idxs[depth - 2]
        wt = jnp.take(w, 0, axis=self._slot_axis(depth - 1))
        blk = wt[idxs[-1]] if rows is None else wt[idxs[-1][:, None],
                                                   rows[None, :]]
        last = self.act(blk @ inputs[-1] + b[idxs[-1], 0])
        acts.append(jnp.zeros(sizes[depth]).at[idxs[-1]].set(last))
      return acts, logits, idxs, dense_in

    acts, logits, idxs, dense_in = jax.vmap(one)(x, seeds)
    return list(acts) + [logits], list(idxs), list(dense_in)

  def diagnostics(self, state, x, key):
    """Active-set size and recall@10 of the exact top nodes (by inner product
    with the layer's actual input), per hidden layer, on a sample of
    examples."""
    depth = len(state.params) - 1
    if depth == 0:
      return {}
    _, idxs, inputs = self.approx_forward(state, x, key)
    wts = self._hidden_wt(state.params)
    recall = [recall_at_k(inputs[k], wts[k].T, idxs[k],
                          k=min(self.recall_k, wts[k].shape[0]))
              for k in range(depth)]
    return {"alsh_active_size": jnp.asarray(self.budgets, jnp.float32),
            "alsh_recall_at_10": jnp.stack(recall)}

  # -- cost --------------------------------------------------------------------
  def step_flops(self, batch_size: int) -> int:
    """Multiply-adds per step: active blocks (forward, weight gradient, input
    gradient), query hashing, and the table rebuild amortised over the
    schedule's early period."""
    sizes = self.model.sizes
    LK = self.L * self.K
    per_example, prev = 0, sizes[0]
    for k, s in enumerate(self.budgets):
      per_example += prev * s * (2 if k == 0 else 3) + LK * prev
      prev = s
    per_example += prev * sizes[-1] * (3 if self.budgets else 2)
    period = self.schedule.early_every or self.schedule.late_every
    rebuild = 0
    if period:
      for n_in, n_out in zip(sizes[:-2], sizes[1:-1]):
        rebuild += n_out * n_in + LK * n_out * transformed_dim(
            n_in, transform=self.transform, m=self.m)
      rebuild //= period
    return batch_size * per_example + rebuild


def _in_open_unit(v):
  return None if 0 < v < 1 or v == 0 else (
      "must be in (0, 1), or 0 for the transform's default")


def _check_schedule(v):
  try:
    parse_schedule(v)
  except ValueError as e:
    return str(e)
  return None


SPEC = _registry.register(_registry.MethodSpec(
    name="alsh",
    summary="ALSH-APPROX: active nodes by asymmetric LSH (Spring and "
    "Shrivastava 2017)",
    build=ALSH,
    saves_compute="yes: gathers only the active blocks and updates only them",
    options=(
        _registry.Option("alsh_K", 6, "Hash components per table.",
                         check=lambda v: None if v >= 1 else "must be >= 1"),
        _registry.Option("alsh_L", 5, "Hash tables.",
                         check=lambda v: None if v >= 1 else "must be >= 1"),
        _registry.Option("alsh_m", 0, "Norm powers appended by the transform "
                         "(0: the transform's default, 3 for l2_alsh, 2 for "
                         "sign_alsh).",
                         check=lambda v: None if v >= 0 else "must be >= 1, "
                         "or 0 for the transform's default"),
        _registry.Option("alsh_U", 0.0, "Largest column norm after scaling "
                         "(0: the transform's default, 0.83 for l2_alsh, 0.75 "
                         "for sign_alsh).", check=_in_open_unit),
        _registry.Option("alsh_R", DEFAULT_R, "Bucket width of the l2 hash.",
                         check=lambda v: None if v > 0 else "must be > 0"),
        _registry.Option("alsh_transform", "l2_alsh", "MIPS transform.",
                         choices=TRANSFORMS),
        _registry.Option("alsh_hash", "srp", "Hash family.", choices=HASHES),
        _registry.Option("alsh_active_fraction", 0.05,
                         "Active-set budget as a fraction of each hidden "
                         "layer's nodes.",
                         check=lambda v: None if 0 < v <= 1 else
                         "must be in (0, 1]"),
        _registry.Option("alsh_kernel", "auto",
                         "Batch-size-1 kernels: 'native' (C++ via the XLA "
                         "FFI, compiled on first use), 'xla' (pure JAX; same "
                         "numbers, slower) or 'auto' (native where it "
                         "builds).", choices=("auto", "native", "xla")),
        _registry.Option("alsh_rebuild", "paper",
                         "Table rebuild schedule: 'paper' (every 100 steps "
                         "for the first 10,000, then every 1,000), 'epoch', "
                         "'N' (every N steps) or 'E:U:L'; tables are also "
                         "rebuilt at every epoch's end.",
                         check=_check_schedule),
    ),
))
