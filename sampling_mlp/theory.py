"""The negative result for ALSH-APPROX: closed form, an exact construction, a probe.

Theorem (slides of Ebrahimi, Advani, Asudeh 2025, "Negative result: ALSH-APPROX
does not scale"; PAPER_NOTES.md, "The theorem"), in the form proved here.

Setting. Linear activations ``a = z``, no bias, weights ``W^l`` of shape
``[n_{l-1}, n_l]`` (column ``p`` holds node ``p``'s incoming weights). Every node
``p`` of layer ``l`` has an active set ``A_p^l`` of previous-layer nodes (in
ALSH-APPROX this is the set of active nodes of layer ``l-1``, the same for
every ``p``; the proof allows a different set per node). From one input ``x``
run two forward passes::

    exact:        a^0 = x,     a_p^l    = sum_{i}             a_i^{l-1}    W_ip
    approximate:  abar^0 = x,  abar_p^l = sum_{i in A_p^l}   abar_i^{l-1} W_ip

The approximation propagates: ``abar^l`` is computed from ``abar^{l-1}``, not
from the exact ``a^{l-1}``.

Assumption. There is one constant ``c > 0`` such that for every layer ``l``
and every node ``p``, in the approximate network::

    sum_{i in A_p^l} abar_i^{l-1} W_ip  =  c * sum_{i not in A_p^l} abar_i^{l-1} W_ip     (*)

i.e. the active part of the node's weighted sum (which is ``abar_p^l``) is ``c``
times the inactive part, both formed from the previous layer's approximate
activations.

Claim. For every depth ``k >= 0`` and every node ``j`` of layer ``k``::

    a_j^k = abar_j^k ((c+1)/c)^k,   e_j^k = a_j^k - abar_j^k = abar_j^k (((c+1)/c)^k - 1),

so the error ratio ``e/abar = ((c+1)/c)^k - 1`` depends on neither the node,
the widths, nor the weights. For ``c = 5``, ``k = 1..6``: 0.2, 0.44, 0.728,
1.0736, 1.48832, 1.985984.

Proof (induction on ``k``, ``r = (c+1)/c``). ``k = 0``: ``a^0 = abar^0 = x``.
Step: by (*), the full sum over the approximate activations is
``sum_i abar_i^{k-1} W_ip = abar_p^k + abar_p^k / c = r abar_p^k``. With
``a^{k-1} = r^{k-1} abar^{k-1}`` (one scalar for the whole layer),
``a_p^k = r^{k-1} sum_i abar_i^{k-1} W_ip = r^k abar_p^k``.

Which reading of the slide the result needs.

* Exact or approximate activations in (*): either. The ratio in (*) does not
  change when the previous layer's activations are scaled by one scalar, and
  the induction gives ``a^{k-1} = r^{k-1} abar^{k-1}``; starting from
  ``a^0 = abar^0``, (*) holds with ``abar`` at every layer iff it holds with
  ``a``. ``construct_network`` enforces (*) with ``abar``; ``effective_c``
  measures it with exact activations (what one can observe in a real net).
* The approximation must propagate. If each layer were approximated from exact
  inputs (``abar^k = sum_{A} a^{k-1} W``), the error ratio would be ``1/c`` at
  every depth, with no compounding (``measured_error_ratio(propagate=False)``).
* One ``c`` for all nodes and layers. With node-dependent ``c_p`` the layer is
  no longer a scalar multiple of its approximation and the two readings of (*)
  differ; with (*) in the approximate reading and all activations and weights
  nonnegative, the ratio is then only bracketed by the closed forms at
  ``min c_p`` and ``max c_p``.
* In ALSH-APPROX an inactive node carries 0 in the approximate network; taken
  literally, those zeros would make every inactive part 0 (``c = inf``). The
  ``abar_i`` of an inactive node in (*) is its would-be value
  ``sum_{j in A_i} abar_j W_ji`` (or, by the first point, use exact
  activations). The conclusion is about the nodes that are active, whose
  ``abar`` is what the approximate network carries. Here every node has its
  own active input set, so every ``abar_j`` is computed.

Pure functions; the construction and the check run in float64 numpy.
"""

from __future__ import annotations

import math
from typing import Sequence

import jax.numpy as jnp
import numpy as np


def _check_c(c: float, *, allow_inf: bool = False) -> float:
  c = float(c)
  if math.isnan(c) or c <= 0 or (math.isinf(c) and not allow_inf):
    allowed = "a positive number or inf" if allow_inf else "a finite positive number"
    raise ValueError(
        f"c must be {allowed} (active part / inactive part of a node's weighted"
        f" sum), got c={c}.")
  return c


def error_ratio(c: float, k: int | np.ndarray) -> float | np.ndarray:
  """Closed-form error ratio ``e^k / abar^k = ((c+1)/c)^k - 1`` at depth ``k``.

  Computed as ``expm1(k log1p(1/c))`` so it stays accurate for large ``c``.

  Args:
    c: active part / inactive part of every node's weighted sum; ``c > 0``.
      ``c = inf`` (no inactive part) gives 0.
    k: depth, a nonnegative integer or an integer-valued array of them.

  Returns:
    A Python float for scalar ``k``, else a float64 array of ``k``'s shape.

  Raises:
    ValueError: if ``c <= 0`` or nan, or any ``k`` is negative or not an integer.
  """
  c = _check_c(c, allow_inf=True)
  k_arr = np.asarray(k, dtype=np.float64)
  if not np.all(np.isfinite(k_arr)) or np.any(k_arr < 0) or np.any(k_arr != np.round(k_arr)):
    raise ValueError(f"k must be a nonnegative integer depth (or an array of them), got k={k!r}.")
  out = np.expm1(k_arr * np.log1p(1.0 / c))
  return float(out) if out.ndim == 0 else out


def depth_exceeding(c: float, threshold: float) -> int:
  """Smallest depth ``k`` with ``error_ratio(c, k) > threshold``.

  Closed form ``floor(log1p(threshold) / log1p(1/c)) + 1``, then corrected by
  checking its neighbours against ``error_ratio`` (rounding at exact ties).

  Args:
    c: finite ``c > 0``.
    threshold: finite; any negative threshold gives 0.

  Returns:
    The depth, a Python int.

  Raises:
    ValueError: if ``c`` is not finite and positive or ``threshold`` is not finite.
  """
  c = _check_c(c)
  threshold = float(threshold)
  if not math.isfinite(threshold):
    raise ValueError(f"threshold must be finite, got {threshold}.")
  if threshold < 0:
    return 0
  k = max(0, math.floor(math.log1p(threshold) / math.log1p(1.0 / c)) + 1)
  while k > 0 and error_ratio(c, k - 1) > threshold:
    k -= 1
  while not error_ratio(c, k) > threshold:
    k += 1
  return k


def _active_mask(active_set: np.ndarray, n_in: int) -> np.ndarray:
  """Index array ``[n_out, n_active]`` -> bool mask ``[n_in, n_out]`` (mask[i, p]: i in A_p)."""
  active_set = np.asarray(active_set)
  if active_set.ndim != 2 or not np.issubdtype(active_set.dtype, np.integer):
    raise ValueError(
        f"each active set must be an integer array [n_out, n_active], got dtype"
        f" {active_set.dtype} and shape {active_set.shape}.")
  if active_set.size and (active_set.min() < 0 or active_set.max() >= n_in):
    raise ValueError(f"active-set indices must lie in [0, {n_in}), the previous layer's width.")
  n_out = active_set.shape[0]
  mask = np.zeros((n_in, n_out), dtype=bool)
  mask[active_set, np.arange(n_out)[:, None]] = True
  return mask


def construct_network(
    *, c: float, depth: int, width: int, active: int, seed: int
) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray]]:
  """A linear network and input meeting assumption (*) of the theorem exactly.

  Layer by layer: draw positive weights ``U(0.1, 1)`` and, for every node ``p``,
  ``active`` distinct active inputs; given the previous layer's approximate
  activations ``abar`` (all positive), rescale the inactive entries of column
  ``p`` so that ``sum_inactive = sum_active / c``, then scale the whole column
  (which leaves the ratio alone) so that ``abar_p`` is ``U(0.5, 1.5)`` and the
  activations stay O(1) at any depth. Everything is positive, so no sum is near
  0 and (*) holds to float64 rounding (and, see the module docstring, also with
  exact activations).

  Args:
    c: finite ``c > 0``.
    depth: number of layers, ``>= 1``.
    width: nodes per layer (the input has the same width), ``>= 2``.
    active: active inputs per node, ``1 <= active < width``.
    seed: numpy seed.

  Returns:
    ``(x, weights, active_sets)``: ``x`` float64 ``[width]``; ``weights``, a list of
    ``depth`` float64 arrays ``[width, width]``; ``active_sets``, a list of
    ``depth`` int arrays ``[width, active]`` whose row ``p`` holds node ``p``'s
    active inputs (sorted).

  Raises:
    ValueError: for a bad ``c``, ``depth``, ``width`` or ``active``.
  """
  c = _check_c(c)
  if depth < 1:
    raise ValueError(f"depth must be >= 1, got {depth}.")
  if width < 2:
    raise ValueError(f"width must be >= 2 so a node can have active and inactive inputs, got {width}.")
  if not 1 <= active < width:
    raise ValueError(
        f"active must satisfy 1 <= active < width={width} (both parts of the sum must be"
        f" nonempty), got {active}.")
  rng = np.random.default_rng(seed)
  x = rng.uniform(0.5, 1.5, size=width)
  abar = x
  weights, active_sets = [], []
  for _ in range(depth):
    w = rng.uniform(0.1, 1.0, size=(width, width))
    # Row p of the argsort of iid uniforms: a uniformly random ordering of inputs.
    act = np.sort(np.argsort(rng.random((width, width)), axis=1)[:, :active], axis=1)
    mask = _active_mask(act, width)
    contrib = abar[:, None] * w
    s_act = np.where(mask, contrib, 0.0).sum(axis=0)
    s_inact = np.where(mask, 0.0, contrib).sum(axis=0)
    w = np.where(mask, w, w * (s_act / (c * s_inact))[None, :])
    w = w * (rng.uniform(0.5, 1.5, size=width) / s_act)[None, :]
    abar = np.where(mask, abar[:, None] * w, 0.0).sum(axis=0)
    weights.append(w)
    active_sets.append(act)
  return x, weights, active_sets


def _check_network(x, weights, active_sets):
  x = np.asarray(x, dtype=np.float64)
  if x.ndim != 1:
    raise ValueError(f"x must be a vector [n_0], got shape {x.shape}.")
  if len(weights) != len(active_sets) or not weights:
    raise ValueError(
        f"need one active set per weight matrix and at least one layer, got"
        f" {len(weights)} weights and {len(active_sets)} active sets.")
  ws, masks = [], []
  n_in = x.shape[0]
  for l, (w, act) in enumerate(zip(weights, active_sets)):
    w = np.asarray(w, dtype=np.float64)
    if w.ndim != 2 or w.shape[0] != n_in:
      raise ValueError(f"weights[{l}] must be [{n_in}, n_out], got shape {w.shape}.")
    mask = _active_mask(act, n_in)
    if mask.shape[1] != w.shape[1]:
      raise ValueError(
          f"active_sets[{l}] has {mask.shape[1]} rows but layer {l} has {w.shape[1]} nodes.")
    ws.append(w)
    masks.append(mask)
    n_in = w.shape[1]
  return x, ws, masks


def assumption_ratios(
    x: np.ndarray,
    weights: Sequence[np.ndarray],
    active_sets: Sequence[np.ndarray],
    *,
    reading: str = "approximate",
) -> list[np.ndarray]:
  """Per layer and node, active part / inactive part of the weighted sum, as in (*).

  Args:
    x: input ``[n_0]``.
    weights: ``W^l`` ``[n_{l-1}, n_l]``, one per layer.
    active_sets: int ``[n_l, n_active]`` per layer, row ``p`` = node ``p``'s active inputs.
    reading: ``"approximate"`` forms both parts from the approximate activations
      ``abar^{l-1}`` (what the construction enforces); ``"exact"`` from the exact
      ``a^{l-1}`` (what ``effective_c`` measures).

  Returns:
    A list of float64 arrays ``[n_l]``, one per layer (inf/nan where the inactive
    part is 0, as in ``effective_c``).
  """
  if reading not in ("approximate", "exact"):
    raise ValueError(f"reading must be 'approximate' or 'exact', got {reading!r}.")
  x, ws, masks = _check_network(x, weights, active_sets)
  a = abar = x
  out = []
  for w, mask in zip(ws, masks):
    prev = abar if reading == "approximate" else a
    contrib = prev[:, None] * w
    with np.errstate(divide="ignore", invalid="ignore"):
      out.append(np.where(mask, contrib, 0.0).sum(0) / np.where(mask, 0.0, contrib).sum(0))
    a, abar = a @ w, abar @ np.where(mask, w, 0.0)
  return out


def measured_error_ratio(
    x: np.ndarray,
    weights: Sequence[np.ndarray],
    active_sets: Sequence[np.ndarray],
    *,
    propagate: bool = True,
) -> np.ndarray:
  """Measured ``e_j^k / abar_j^k = (a_j^k - abar_j^k) / abar_j^k`` for a linear network.

  Pushes ``x`` through the exact network and the approximate one (active terms
  only), in float64.

  Args:
    x: input ``[n_0]``.
    weights: ``W^l`` ``[n_{l-1}, n_l]``, one per layer; all ``n_l`` equal.
    active_sets: int ``[n_l, n_active]`` per layer, row ``p`` = node ``p``'s active inputs.
    propagate: if True (ALSH-APPROX, the theorem), ``abar^l`` is computed from
      ``abar^{l-1}``; if False, every layer's approximation starts from the exact
      ``a^{l-1}`` (then the ratio under (*) is ``1/c`` at every depth).

  Returns:
    float64 ``[depth, width]``; row ``k-1`` is layer ``k``.
  """
  x, ws, masks = _check_network(x, weights, active_sets)
  if len({w.shape[1] for w in ws}) != 1:
    raise ValueError("measured_error_ratio returns [depth, width]; all layers must have one width.")
  a = abar = x
  rows = []
  for w, mask in zip(ws, masks):
    w_act = np.where(mask, w, 0.0)
    abar = (abar if propagate else a) @ w_act
    a = a @ w
    rows.append((a - abar) / abar)
  return np.stack(rows)


def theorem_table(
    c: float,
    depths: Sequence[int] = range(1, 8),
    *,
    width: int = 64,
    active: int = 8,
    seed: int = 0,
) -> list[dict]:
  """Closed form next to the measurement on ``construct_network``, per depth.

  Args:
    c: finite ``c > 0``.
    depths: depths ``k >= 1`` to report; one network of depth ``max(depths)`` is built.
    width, active, seed: passed to ``construct_network``.

  Returns:
    One dict per depth: ``k``, ``closed_form`` (``error_ratio(c, k)``),
    ``measured_mean`` (mean over layer ``k``'s nodes of the measured ratio),
    ``measured_max_abs_dev`` (max over nodes of ``|measured - closed_form|``).
  """
  depths = [int(k) for k in depths]
  if not depths or min(depths) < 1:
    raise ValueError(f"depths must be a nonempty list of depths >= 1, got {depths}.")
  x, weights, active_sets = construct_network(
      c=c, depth=max(depths), width=width, active=active, seed=seed)
  measured = measured_error_ratio(x, weights, active_sets)
  table = []
  for k in depths:
    closed = error_ratio(c, k)
    row = measured[k - 1]
    table.append(dict(
        k=k,
        closed_form=closed,
        measured_mean=float(row.mean()),
        measured_max_abs_dev=float(np.max(np.abs(row - closed))),
    ))
  return table


def effective_c(a_prev, w, prev_active):
  """Effective ``c`` of each node: active part / inactive part of its weighted sum.

  For a real network's approximate forward pass (ALSH-APPROX: the active set is
  over a layer's output nodes, so from layer ``l``'s side its inputs are active
  or not). For row ``b`` and node ``p`` of layer ``l``::

    active   = sum_{i active at layer l-1}     a_i W_ip
    inactive = sum_{i not active at layer l-1} a_i W_ip

  with ``a`` the *exact* activations of layer ``l-1`` (the theorem's condition
  in its exact reading; see the module docstring for why that is equivalent).
  A node with ratio ``c`` loses the fraction ``1/(c+1)`` of its exact sum in one
  layer, i.e. its one-layer error ratio is ``1/c``. Bias is left out, as in the
  theorem. Pure ``jnp``; works under ``jit``.

  Args:
    a_prev: exact activations of layer ``l-1``, ``[B, n]``.
    w: weights ``[n, m]``.
    prev_active: bool ``[B, n]``, True where input node ``i`` is active for row ``b``.

  Returns:
    ``[B, m]`` ratios. Where the inactive part is exactly 0 (e.g. every input
    active) the ratio is ``+-inf`` if the active part is nonzero and ``nan`` if
    both are 0 (IEEE division); ``summarize_effective_c`` handles both.
  """
  a_prev = jnp.asarray(a_prev)
  w = jnp.asarray(w)
  prev_active = jnp.asarray(prev_active, dtype=bool)
  if a_prev.ndim != 2 or w.ndim != 2 or a_prev.shape[1] != w.shape[0]:
    raise ValueError(f"need a_prev [B, n] and w [n, m], got {a_prev.shape} and {w.shape}.")
  if prev_active.shape != a_prev.shape:
    raise ValueError(f"prev_active must have a_prev's shape {a_prev.shape}, got {prev_active.shape}.")
  act = jnp.where(prev_active, a_prev, 0) @ w
  inact = jnp.where(prev_active, 0, a_prev) @ w
  return act / inact


def summarize_effective_c(ratios) -> float:
  """Robust summary of ``effective_c`` output: median of ``|ratio|`` over finite values.

  Args:
    ratios: any array of ratios.

  Returns:
    The median of ``|ratio|`` over the finite entries. If no entry is finite:
    ``inf`` when some entry is ``+-inf`` (no node has an inactive part, so the
    effective ``c`` is infinite and the error 0), else ``nan``.
  """
  r = np.abs(np.asarray(ratios, dtype=np.float64)).ravel()
  finite = r[np.isfinite(r)]
  if finite.size:
    return float(np.median(finite))
  return math.inf if np.any(np.isinf(r)) else math.nan
