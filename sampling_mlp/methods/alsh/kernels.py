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
* tables, collision counts, the query hash laid out for sparse queries,
  the static-size active set of one example (:func:`select_active`, the
  one selection rule), and recall of the true top-k.

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
  x = jnp.asarray(w).T  # [n_out, n_in]
  sq = jnp.sum(x * x, axis=-1)  # [n_out]
  scale = _common_scale(sq, transform=transform, U=U)
  x = x * scale
  extra = _appended(sq * scale * scale, transform=transform, m=m)
  return jnp.concatenate([x, extra.astype(x.dtype)], axis=-1)


def _common_scale(sq: jax.Array, *, transform: str, U: float) -> jax.Array:
  """The factor that makes the longest of the norms ``sqrt(sq)`` equal to
  ``U`` (1 for ``simple_lsh``); 1 when every norm is 0."""
  if transform == "simple_lsh":
    U = 1.0
  max_norm = jnp.sqrt(jnp.max(sq))
  return U / jnp.where(max_norm > 0, max_norm, 1.0)


def _appended(sq: jax.Array, *, transform: str, m: int) -> jax.Array:
  """``P``'s appended coordinates [..., m] (simple_lsh: [..., 1]) from the
  scaled nodes' squared norms ``sq`` [...]."""
  if transform == "l2_alsh":
    return _norm_powers(sq, m)
  if transform == "sign_alsh":
    return 0.5 - _norm_powers(sq, m)
  # Rounding can push ||x||^2 a hair above 1 for the longest column.
  return jnp.sqrt(jnp.maximum(1.0 - sq, 0.0))[..., None]


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


def bucket_codes(proj: jax.Array, hp, *, trailing: int = 0) -> jax.Array:
  """Each table's bucket code from its K projections.

  Component ``h_k`` is ``[r_k . x > 0]`` for ``srp`` and
  ``floor((r_k . x + b_k) / R)`` for ``l2``; the table's code is
  ``sum_k multipliers_k * h_k`` in int32 with wraparound.  Every hash in
  this package (nodes, queries, sparse queries) goes through here.

  Args:
    proj: projections ``r_k . x`` [..., L, K, *t], the K axis followed by
      ``trailing`` axes t.
    hp: a :class:`HashParams` or :class:`QueryHash` (offsets, bucket width
      and multipliers).
    trailing: number of axes after K.

  Returns:
    int32 [..., L, *t].
  """
  tail = (1,) * trailing
  if hp.offsets is None:
    comps = (proj > 0).astype(jnp.int32)
  else:
    off = hp.offsets.reshape(hp.multipliers.shape + tail)
    comps = jnp.floor((proj + off) / hp.bucket_width).astype(jnp.int32)
  return jnp.sum(comps * hp.multipliers.reshape(hp.multipliers.shape + tail),
                 axis=-1 - trailing, dtype=jnp.int32)


def hash_codes(hp: HashParams, x: jax.Array) -> jax.Array:
  """Bucket code of each vector in each table (see :func:`bucket_codes`).

  Args:
    hp: hash parameters from :func:`init_hash`.
    x: transformed vectors [..., d].

  Returns:
    int32 [..., L].
  """
  return bucket_codes(jnp.einsum("...d,lkd->...lk", x, hp.projections), hp)


# ---------------------------------------------------------------------------
# Tables and queries
# ---------------------------------------------------------------------------


def node_sketch(hp: HashParams, x: jax.Array) -> jax.Array:
  """Each node's projections onto the hash directions and squared norm,
  before the transform: all the tables need of a node's weights.

  A node's projection ``r . P(c x)`` under the common scale ``c`` is ``c (r[:n_in]
  . x)`` plus the appended coordinates' term, a function of ``c^2
  ||x||^2`` (:func:`sketch_codes`), so this sketch determines the node's
  bucket codes under any scale; and it is linear in ``x`` but for the
  norm, so a change of a few weights changes it by their projections
  alone (the incremental re-hash of touched nodes).

  Args:
    hp: hash parameters, projections [L, K, d] with ``d >= n_in``.
    x: [n, n_in] node-major weights (row j: node j's incoming weights).

  Returns:
    float32 [n, L*K + 1]: ``r_h[:n_in] . x_j`` for the L*K directions in
    ``(l, k)`` order, then ``||x_j||^2``.
  """
  L, K, d = hp.projections.shape
  n_in = x.shape[-1]
  proj = x @ hp.projections.reshape(L * K, d)[:, :n_in].T
  return jnp.concatenate([proj, jnp.sum(x * x, axis=-1, keepdims=True)],
                         axis=-1)


def sketch_scale(sketch: jax.Array, *, transform: str,
                 U: float | None = None) -> jax.Array:
  """The transform's common scale of the nodes of ``sketch``
  (:func:`node_sketch`): ``U`` over the longest norm (1 for
  ``simple_lsh``), float32 []."""
  _, U = resolve_transform_params(transform, None, U)
  return _common_scale(sketch[:, -1], transform=transform, U=U)


def held_scale(sketch: jax.Array, scale: jax.Array, *, transform: str,
               U: float | None = None, tolerance: float) -> jax.Array:
  """The common scale the incremental schedule hashes with: ``scale``
  while the longest node of ``sketch`` stays within ``tolerance``
  (relative) of ``U`` after scaling, and at most 1, else renewed
  (:func:`sketch_scale`).

  A full rebuild scales the longest node to ``U`` exactly; between
  rebuilds the weights grow, and a norm past 1 would blow up ``l2_alsh``'s
  appended powers ``||x||^(2^i)`` (and clip ``simple_lsh``'s
  ``sqrt(1 - ||x||^2)``), so the scale follows the longest norm, and every
  node is recoded when it moves.

  Args:
    sketch: [n, L*K + 1] (:func:`node_sketch`), the nodes now.
    scale: float32 [] the scale in use.
    transform, U: the transform and its parameter.
    tolerance: the relative band around ``U``.

  Returns:
    float32 [], ``scale`` itself where kept.
  """
  _, U = resolve_transform_params(transform, None, U)
  target = 1.0 if transform == "simple_lsh" else U
  longest = jnp.sqrt(jnp.max(sketch[:, -1])) * scale
  # The band's top stops at 1, past which the transforms break down.
  keep = ((longest >= target * (1 - tolerance))
          & (longest <= min(target * (1 + tolerance), 1.0)))
  return jnp.where(keep, scale,
                   sketch_scale(sketch, transform=transform, U=U))


def sketch_codes(hp: HashParams, sketch: jax.Array, scale: jax.Array, *,
                 transform: str, m: int | None = None) -> jax.Array:
  """Bucket code of every node of ``sketch`` in every table, with the
  transform's common scale ``scale``: ``hash_codes(hp, P(scale x_j))``
  from the sketch alone (the one formula of a node's codes).

  Args:
    hp: hash parameters (``dim = transformed_dim(n_in, ...)``).
    sketch: [n, L*K + 1] from :func:`node_sketch`.
    scale: float32 [] the common scale (:func:`sketch_scale` at a full
      rebuild, :func:`held_scale` between them).
    transform, m: the transform and its parameter.

  Returns:
    int32 [L, n].
  """
  m, _ = resolve_transform_params(transform, m)
  L, K, d = hp.projections.shape
  n = sketch.shape[0]
  extra = _appended(sketch[:, -1] * scale * scale, transform=transform, m=m)
  n_in = d - extra.shape[-1]
  proj = (scale * sketch[:, :-1].T.reshape(L, K, n)
          + jnp.einsum("ne,lke->lkn", extra, hp.projections[:, :, n_in:]))
  return bucket_codes(proj, hp, trailing=1)


def build_tables(
    hp: HashParams,
    w: jax.Array,
    *,
    transform: str,
    m: int | None = None,
    U: float | None = None,
) -> jax.Array:
  """Bucket code of every node in every table: ``hash_codes(hp,
  transform_weights(w))``, computed from :func:`node_sketch` by
  :func:`sketch_codes` (the common scale applied after the projections).

  Args:
    hp: hash parameters (``dim`` must equal ``transformed_dim(n_in, ...)``).
    w: layer weights [n_in, n_out].
    transform: one of :data:`TRANSFORMS`.
    m, U: transform parameters (defaults per transform).

  Returns:
    int32 [L, n_out] (table-major, as the native kernels read them).
    Deterministic given ``hp`` and ``w``.
  """
  sketch = node_sketch(hp, jnp.asarray(w).T)
  return sketch_codes(hp, sketch,
                      sketch_scale(sketch, transform=transform, U=U),
                      transform=transform, m=m)


def collisions(query_codes: jax.Array, table_codes: jax.Array) -> jax.Array:
  """Number of tables in which each node shares the query's bucket.

  Args:
    query_codes: int32 [L], from :func:`hash_codes` of ``Q(a)``.
    table_codes: int32 [L, n_out], from :func:`build_tables`.

  Returns:
    int32 [n_out] with values in [0, L].
  """
  return jnp.sum(query_codes[:, None] == table_codes, axis=0, dtype=jnp.int32)


def recall_at_k(a: jax.Array, w: jax.Array, computed: jax.Array, *,
                k: int) -> jax.Array:
  """Fraction of the exact top-k nodes (by ``a @ w``) that were computed.

  Args:
    a: inputs [B, n_in].
    w: layer weights [n_in, n_out].
    computed: bool [B, n_out], each example's active set.
    k: static number of true top nodes, 1 <= k <= n_out.

  Returns:
    float32 scalar in [0, 1], averaged over the batch.
  """
  _, top = jax.lax.top_k(a @ w, k)  # [B, k]
  hit = jnp.take_along_axis(computed, top, axis=1)
  return jnp.mean(hit.astype(jnp.float32))


# ---------------------------------------------------------------------------
# Queries and the active set
# ---------------------------------------------------------------------------


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
  return bucket_codes(v.reshape(qh.multipliers.shape), qh)


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
  budget and the random fill from non-colliding nodes are broken uniformly
  at random by :func:`tie_noise`: below 1/2, the noise never reorders
  different counts (even after float32 rounding, for L < 2^22), and among
  equal counts it is a random permutation.  This is the one selection rule:
  training, analysis and the native kernel all use it.

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
