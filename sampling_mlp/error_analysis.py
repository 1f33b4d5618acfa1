"""How the approximate forward passes' errors grow with depth, measured.

Companion of :mod:`sampling_mlp.theory` (the ALSH-APPROX negative result).
The theorem says that with linear activations, if every node's active part
is ``c`` times its inactive part, the approximate activation's error ratio
``e / abar`` grows as ``((c+1)/c)^k - 1`` with depth ``k``.  Here the same
question is asked of real networks: push a batch of real inputs through the
exact network and through each method's approximate (training-time) forward
pass, and measure per layer

* ``rel_err``: ``||abar - a||_F / ||a||_F`` over the evaluation batch
  (``a`` exact, ``abar`` approximate activations; the last entry is the
  logits);
* ``top1``: the fraction of examples whose approximate top-1 class is the
  exact one;
* for ALSH-APPROX only, the theorem's own quantity and condition:
  ``err_ratio`` ``= ||a - abar|| / ||abar||`` over the nodes the method
  computed (its active set; all logits), and the effective ``c`` (active part
  over inactive part of each node's sum, :func:`theory.effective_c`) of every
  *lossy step* (hidden layers 2..d and the output layer read a sparse
  previous layer; the first hidden layer reads the whole input, so its
  active nodes are exact).

Under the theorem's assumption the two error measures are tied:
``a = r^k abar`` with ``r = (c+1)/c``, so ``err_ratio = r^k - 1``
(:func:`theory.error_ratio`) and ``rel_err = 1 - r^-k``
(:func:`theorem_relative_error`), on the nodes that are computed.

Methods (:class:`Variant`): ALSH-APPROX with every transform and hash family,
MC-APPROX with every sampler at several ratios, and Dropout at several keep
probabilities.  Networks are freshly initialised or trained for a few epochs
with exact training (STANDARD); the approximations are then applied to the
same weights, so the measurement isolates the forward pass's error from
training dynamics.

How the passes run: one jitted function per layer, not per pass.  On the
project's 2-core machine, compiling a whole depth-10 ALSH or MC pass took
10-15 s per (variant, depth), and running it eagerly several thousand op
dispatches; since every hidden layer after the first has the same shapes at
every depth, a per-layer function compiles once per variant and is reused
for every depth, network and key.  The layer functions call the methods' own
kernels with the methods' key rules; the tests check that they reproduce
``ALSH.approx_forward``, ``MC.approx_forward`` and ``dropout_forward``.

MC-APPROX's estimates depend on the batch (its sampling probabilities use the
batch's column norms), so its pass runs on batches of ``mc_batch`` examples.
Its input layer and output layer are exact by default (``mc_sample_input``,
``mc_sample_output``), so a depth-d network has d-1 sampled products; an
ALSH-APPROX network has d lossy steps (hidden layers 2..d and the output
layer read a sparse layer).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import time
import zlib
from typing import Any, Mapping, Sequence

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from sampling_mlp import alsh as alsh_lib
from sampling_mlp import dropout as dropout_lib
from sampling_mlp import experiment, layers, mc as mc_lib, registry, theory, train
from sampling_mlp.optim import OptimConfig

METHODS = ("alsh", "mc", "dropout")
ALSH_PAIRS = tuple((t, h) for t in alsh_lib.TRANSFORMS for h in alsh_lib.HASHES)


# ---------------------------------------------------------------------------
# Theory glue.


def theorem_relative_error(c: float, k) -> float | np.ndarray:
  """Relative error against the exact activation, ``1 - (c/(c+1))^k``.

  Under the theorem's assumption ``a = r^k abar`` (``r = (c+1)/c``), so
  ``||a - abar|| / ||a|| = 1 - r^-k``: the same law as
  :func:`theory.error_ratio` (``r^k - 1``), read against the exact value.
  It tends to 1 (the approximation loses everything) instead of infinity.

  Args:
    c: ``c > 0`` (``inf`` gives 0).
    k: nonnegative integer depth, or an array of them.

  Returns:
    A float for scalar ``k``, else a float64 array.
  """
  ratio = theory.error_ratio(c, k)  # validates c and k
  out = np.asarray(ratio) / (1.0 + np.asarray(ratio))
  return float(out) if out.ndim == 0 else out


def layerwise_theorem_ratio(cs: Sequence[float]) -> np.ndarray:
  """The theorem's ``e/abar`` after each step with a per-step ``c``.

  The induction of :mod:`sampling_mlp.theory` goes through with a
  layer-dependent (but node-independent) ``c_l``: ``a^k = prod_l (1 + 1/c_l)
  abar^k``.  So after steps ``1..k`` the ratio is ``prod (1 + 1/c_l) - 1``.

  Args:
    cs: ``c_l > 0`` per step (``inf`` for an exact step).

  Returns:
    float64 ``[len(cs)]``, entry ``k-1`` after ``k`` steps.
  """
  cs = np.asarray(cs, dtype=np.float64)
  if np.any(~(cs > 0)):
    raise ValueError(f"every c must be > 0 (or inf), got {cs.tolist()}.")
  return np.expm1(np.cumsum(np.log1p(1.0 / cs)))


# ---------------------------------------------------------------------------
# Method variants.


@dataclasses.dataclass(frozen=True)
class Variant:
  """One approximate forward pass to measure.

  Attributes:
    method: ``alsh``, ``mc`` or ``dropout``.
    label: short unique name used in tables, plots and rows.
    options: the method's registry options (``keep_prob`` for dropout).
  """

  method: str
  label: str
  options: tuple = ()  # sorted (name, value) pairs

  def __post_init__(self):
    if self.method not in METHODS:
      raise ValueError(f"unknown method {self.method!r}; measurable methods are"
                       f" {', '.join(METHODS)}.")

  @property
  def config(self) -> dict:
    return dict(self.options)

  @property
  def key_salt(self) -> int:
    """A stable per-variant integer (adding variants changes no other key)."""
    return zlib.crc32(self.label.encode()) & 0x7FFFFFFF


def alsh_variant(transform: str, hash: str, **options) -> Variant:  # pylint: disable=redefined-builtin
  """ALSH-APPROX with ``transform`` and ``hash``; other ``alsh_*`` options."""
  opts = dict(options, alsh_transform=transform, alsh_hash=hash)
  registry.get("alsh").config(opts)  # validate now, not mid-run
  label = f"alsh {transform}+{hash}"
  frac = opts.get("alsh_active_fraction")
  if frac is not None and frac != 0.05:
    label += f" f={frac:g}"
  return Variant("alsh", label, tuple(sorted(opts.items())))


def mc_variant(sampler: str, ratio: float, **options) -> Variant:
  """MC-APPROX with ``sampler`` sampling the fraction ``ratio`` of pairs."""
  opts = dict(options, mc_sampler=sampler, mc_ratio=float(ratio))
  registry.get("mc").config(opts)
  return Variant("mc", f"mc {sampler} r={ratio:g}", tuple(sorted(opts.items())))


def dropout_variant(keep_prob: float) -> Variant:
  """Inverted dropout keeping each hidden node with ``keep_prob``."""
  err = dropout_lib.keep_prob_error(keep_prob)
  if err:
    raise ValueError(f"keep_prob={keep_prob!r}: {err}")
  return Variant("dropout", f"dropout p={keep_prob:g}",
                 (("keep_prob", float(keep_prob)),))


def default_variants(*, alsh_pairs: Sequence[tuple[str, str]] = ALSH_PAIRS,
                     mc_samplers: Sequence[str] = mc_lib.SAMPLERS,
                     mc_ratios: Sequence[float] = (0.1, 0.5),
                     keep_probs: Sequence[float] = (0.05, 0.5),
                     alsh_options: Mapping[str, Any] | None = None
                     ) -> list[Variant]:
  """Every ALSH pair, every MC sampler at every ratio, every keep prob."""
  alsh_options = dict(alsh_options or {})
  out = [alsh_variant(t, h, **alsh_options) for t, h in alsh_pairs]
  out += [mc_variant(s, r) for s in mc_samplers for r in mc_ratios]
  out += [dropout_variant(p) for p in keep_probs]
  labels = [v.label for v in out]
  if len(set(labels)) != len(labels):
    raise ValueError(f"duplicate variants: {labels}")
  return out


# ---------------------------------------------------------------------------
# Networks.


def model_config(dataset, *, depth: int, hidden: int,
                 activation: str) -> registry.ModelConfig:
  return registry.ModelConfig(input_dim=dataset.input_dim,
                              num_classes=dataset.num_classes, hidden=hidden,
                              depth=depth, activation=activation)


def train_params(dataset, *, depth: int, hidden: int, activation: str,
                 epochs: int, seed: int, batch_size: int = 32,
                 learning_rate: float = 1e-3) -> layers.Params:
  """Standard-layout params of an MLP after ``epochs`` of exact training.

  ``epochs = 0`` gives the freshly initialised network; for a fixed ``seed``
  every ``epochs`` starts from those same weights (``train.RunKeys``).

  Args:
    dataset: a ``data.Dataset`` (``.train.x`` [N, D], ``.train.y`` [N]).
    depth: hidden layers; hidden: their width; activation: hidden activation.
    epochs: passes of exact (STANDARD, Adam) training, >= 0.
    seed: the run seed (initialisation and shuffling).
    batch_size: training batch size.
    learning_rate: Adam's learning rate.

  Returns:
    A tuple of ``layers.LayerParams``, hidden layers first.
  """
  if epochs < 0:
    raise ValueError(f"epochs must be >= 0 (0: freshly initialised), got {epochs}.")
  model = model_config(dataset, depth=depth, hidden=hidden,
                       activation=activation)
  impl = registry.get("standard").make(
      model, OptimConfig(learning_rate=learning_rate))
  keys = train.RunKeys(seed)
  state = train.init_state(impl, keys)
  if epochs == 0:
    return state.params
  x = jnp.asarray(dataset.train.x)
  y = jnp.asarray(dataset.train.y)
  n = x.shape[0]
  if n < batch_size:
    raise ValueError(f"batch_size {batch_size} exceeds the {n} training "
                     "examples; lower it or raise max_train.")
  epoch_fn = train.make_epoch_fn(impl, batch_size=batch_size,
                                 num_batches=n // batch_size)
  for epoch in range(epochs):
    # The same permutation rule as train.train, so runs are comparable.
    perm = jax.random.permutation(jax.random.fold_in(keys.shuffle, epoch), n)
    state, _ = epoch_fn(state, x, y, perm, keys.train)
  return jax.block_until_ready(state.params)


# ---------------------------------------------------------------------------
# Forward passes, one jitted function per layer.
#
# Compiling a whole depth-d pass costs seconds per (variant, depth) and running
# it eagerly costs thousands of op dispatches, both of which dominated the
# runtime on the project's 2-core machine.  A pass is a chain of layers,
# and every hidden layer after the first has the same shapes at every depth,
# so each layer below is one jitted function, compiled once per (variant,
# layer shape) and reused for every depth, network and key.  The layer
# functions call the methods' own kernels (alsh.sparse_query_codes,
# collisions, select_active; mc.sample_pairs, gathered_product; the dropout
# mask) in the same order with the same keys as the methods' own passes
# (ALSH.approx_forward, MC.approx_forward, dropout.dropout_forward); the tests
# check that they give the same numbers.


def _host_keys(keys: jax.Array) -> np.ndarray:
  """Raw key data on the host, so that slicing it per layer compiles nothing
  (an eager ``keys[k]`` compiles one slice per ``k``, i.e. per depth)."""
  return np.asarray(jax.random.key_data(keys))


def _key(data: np.ndarray) -> jax.Array:
  return jax.random.wrap_key_data(data)


def _act_or_identity(activation: str | None):
  return (lambda z: z) if activation is None else layers.activation_fn(activation)


@functools.partial(jax.jit, static_argnames=("activation",))
def _exact_layer(w, b, a, *, activation):
  return _act_or_identity(activation)(a @ w + b)


def exact_forward(params: layers.Params, x: jax.Array, *,
                  activation: str) -> list[jax.Array]:
  """Exact activations of every hidden layer, then the logits ([B, n_k]).

  The same numbers as ``layers.hidden_activations``, one jitted layer at a
  time.
  """
  a, out = jnp.asarray(x), []
  for k, p in enumerate(params):
    last = k == len(params) - 1
    a = _exact_layer(p.w, p.b, a, activation=None if last else activation)
    out.append(a)
  return out


# -- ALSH-APPROX ----------------------------------------------------------------


@functools.partial(jax.jit, static_argnames=(
    "n_in", "transform", "m", "U", "K", "L", "family", "R"))
def _alsh_layer_hash(key, w, *, n_in, transform, m, U, K, L, family, R):
  """One hidden layer's hash functions and table, as ``ALSH.init`` builds them."""
  hp = alsh_lib.init_hash(
      key, dim=alsh_lib.transformed_dim(n_in, transform=transform, m=m),
      K=K, L=L, family=family, R=R)
  qh = alsh_lib.query_hash(hp, n_in, transform=transform, m=m)
  return qh, alsh_lib.build_tables(hp, w, transform=transform, m=m, U=U)


@functools.partial(jax.jit, static_argnames=("budget", "activation"))
def _alsh_hidden_layer(w, b, qh, table, vals, rows, seeds, *, budget,
                       activation):
  """One hidden layer of ``ALSH._example_forward`` for a batch.

  Args:
    w: weights [n_in, n_out]; read node-major (``w.T``, the slab layout).
    b: [n_out]. qh, table: the layer's QueryHash and [L, n_out] table.
    vals: [B, r] the layer's input on ``rows`` (the previous active set), or
      [B, n_in] for the first layer (``rows`` None).
    rows: uint32 [B, r] or None. seeds: uint32 [B].

  Returns:
    (vals [B, s] the active nodes' activations, idx uint32 [B, s]).
  """
  act = layers.activation_fn(activation)
  wt = w.T

  def one(a, r, seed):
    q = alsh_lib.sparse_query_codes(qh, a, r)
    idx, _, _ = alsh_lib.select_active(seed, alsh_lib.collisions(q, table),
                                       budget)
    wk = wt[idx] if r is None else wt[idx[:, None], r[None, :]]
    return act(wk @ a + b[idx]), idx

  if rows is None:
    return jax.vmap(lambda a, s: one(a, None, s))(vals, seeds)
  return jax.vmap(one)(vals, rows, seeds)


@jax.jit
def _alsh_output_layer(w, b, vals, rows):
  """The exact output layer reading the last active set: [B, C]."""
  return jax.vmap(lambda a, r: a @ w[r] + b)(vals, rows)


@functools.partial(jax.jit, static_argnames=("n",))
def _scatter_dense(vals, idx, *, n):
  """[B, s] values on idx -> dense [B, n] (zero elsewhere) and the bool mask."""
  rows = jnp.arange(vals.shape[0])[:, None]
  dense = jnp.zeros((vals.shape[0], n), vals.dtype).at[rows, idx].set(vals)
  mask = jnp.zeros((vals.shape[0], n), bool).at[rows, idx].set(True)
  return dense, mask


def alsh_layers(impl, params: layers.Params, x: jax.Array, key: jax.Array):
  """ALSH-APPROX's approximate pass, layer by layer.

  The numbers of ``impl.approx_forward(impl.init(k_init, params), x,
  k_fwd)`` with ``k_init, k_fwd = split(key)``: fresh hash tables per key.

  Args:
    impl: a built ``alsh.ALSH`` (its transform, hash and budgets are read).
    params: standard params. x: [B, D]. key: typed key.

  Yields:
    Per hidden layer ``(dense [B, n_k], mask bool [B, n_k], idx [B, s_k])``,
    then ``(logits [B, C], None, None)``.
  """
  sizes = impl.model.sizes
  depth = len(params) - 1
  k_init, k_fwd = jax.random.split(key)
  # The key rules of ALSH.init and ALSH.approx_forward.
  layer_keys = _host_keys(jax.random.split(k_init, max(1, len(sizes) - 2)))
  seeds = np.asarray(jax.random.bits(k_fwd, (x.shape[0], max(depth, 1)),
                                     jnp.uint32))
  vals, rows = jnp.asarray(x), None
  for k in range(depth):
    p = params[k]
    qh, table = _alsh_layer_hash(
        _key(layer_keys[k]), p.w, n_in=sizes[k], transform=impl.transform, m=impl.m,
        U=impl.U, K=impl.K, L=impl.L, family=impl.family,
        R=float(impl.config["alsh_R"]))
    vals, rows = _alsh_hidden_layer(
        p.w, p.b, qh, table, vals, rows, seeds[:, k],
        budget=impl.budgets[k], activation=impl.model.activation)
    dense, mask = _scatter_dense(vals, rows, n=sizes[k + 1])
    yield dense, mask, rows
  if rows is None:
    yield _exact_layer(params[-1].w, params[-1].b, vals, activation=None), None, None
  else:
    yield _alsh_output_layer(params[-1].w, params[-1].b, vals, rows), None, None


# -- MC-APPROX --------------------------------------------------------------------


@functools.partial(jax.jit, static_argnames=(
    "sampled", "num_samples", "sampler", "activation"))
def _mc_layer(w, b, a, keys, *, sampled, num_samples, sampler, activation):
  """One layer of ``MC.approx_forward`` on each batch: a [nb, mb, n], keys [nb]."""
  act = _act_or_identity(activation)

  def one(ab, kb):
    if not sampled:
      return act(ab @ w + b)
    idx, scale = mc_lib.sample_pairs(kb, ab, w, num_samples=num_samples,
                                     sampler=sampler)
    return act(mc_lib.gathered_product(ab, w, idx, scale) + b)

  return jax.vmap(one)(a, keys)


def mc_layers(impl, params: layers.Params, x: jax.Array, key: jax.Array, *,
              mc_batch: int):
  """MC-APPROX's approximate pass on batches of ``mc_batch``, layer by layer.

  The numbers of ``impl.approx_forward(params, x_b, k_b)`` for the batches
  ``x_b`` of ``x`` and ``k_b = split(key, num_batches)``.

  Yields:
    Per layer ``(acts [B, n_k], None, None)``, the logits last.
  """
  b = x.shape[0]
  mb = min(mc_batch, b)
  if b % mb:
    raise ValueError(f"MC-APPROX runs on batches of mc_batch={mc_batch}; the "
                     f"{b} evaluation examples must be a multiple of it.")
  nb = b // mb
  # MC.approx_forward splits each batch's key into one key per layer.
  keys = _host_keys(jax.vmap(lambda kb: jax.random.split(kb, len(params)))(
      jax.random.split(key, nb)))  # [nb, depth + 1, key data]
  a = jnp.asarray(x).reshape(nb, mb, -1)
  last = len(params) - 1
  for k, p in enumerate(params):
    a = _mc_layer(p.w, p.b, a, _key(keys[:, k]),
                  sampled=impl._active(k),  # pylint: disable=protected-access
                  num_samples=impl.num_samples[k], sampler=impl.sampler,
                  activation=None if k == last else impl.model.activation)
    yield a.reshape(b, -1), None, None


# -- Dropout --------------------------------------------------------------------


@functools.partial(jax.jit, static_argnames=("keep_prob", "activation"))
def _dropout_layer(w, b, a, key, *, keep_prob, activation):
  h = layers.activation_fn(activation)(a @ w + b)
  m = jax.random.bernoulli(key, keep_prob, h.shape)
  return jnp.where(m, h / keep_prob, jnp.zeros_like(h)), m


def dropout_layers(params: layers.Params, x: jax.Array, key: jax.Array, *,
                   keep_prob: float, activation: str):
  """``dropout.dropout_forward``'s pass, layer by layer (same key rule).

  Yields:
    Per hidden layer ``(acts [B, n_k], kept bool [B, n_k], None)``: the
    propagated ``where(kept, f(z) / keep_prob, 0)``; then the logits.
  """
  err = dropout_lib.keep_prob_error(keep_prob)
  if err:
    raise ValueError(f"keep_prob={keep_prob!r}: {err}")
  depth = len(params) - 1
  keys = _host_keys(jax.random.split(key, depth)) if depth else ()
  a = jnp.asarray(x)
  for k in range(depth):
    a, m = _dropout_layer(params[k].w, params[k].b, a, _key(keys[k]),
                          keep_prob=float(keep_prob), activation=activation)
    yield a, m, None
  yield _exact_layer(params[-1].w, params[-1].b, a, activation=None), None, None


def dropout_activations(key: jax.Array, params: layers.Params, x: jax.Array,
                        *, keep_prob: float, activation: str
                        ) -> tuple[list[jax.Array], tuple[jax.Array, ...]]:
  """Per-layer activations and masks of ``dropout.dropout_forward``'s pass.

  Returns:
    (acts, masks): per hidden layer [B, n_k] then the logits [B, C]; the
    bool keep masks [B, n_k] per hidden layer.
  """
  out = list(dropout_layers(params, x, key, keep_prob=keep_prob,
                            activation=activation))
  return [a for a, _, _ in out], tuple(m for _, m, _ in out[:-1])


def build_impl(variant: Variant, model: registry.ModelConfig):
  """The registry method of ``variant`` (None for dropout, a plain kernel)."""
  if variant.method == "dropout":
    return None
  return registry.get(variant.method).make(model, OptimConfig(), variant.config)


def approx_layers(variant: Variant, impl, params: layers.Params, x, key, *,
                  activation: str, mc_batch: int = 64):
  """``variant``'s approximate pass, layer by layer.

  Args:
    variant: what to run. impl: ``build_impl(variant, model)``.
    params: standard params. x: [B, D]. key: typed key (a repetition).
    activation: the network's hidden activation (dropout's; the methods read
      their model's).
    mc_batch: MC-APPROX's batch size (its estimate depends on the batch).

  Returns:
    An iterator over the hidden layers, then the logits, of ``(acts [B, n_k],
    mask, idx)``: ``mask`` is the bool [B, n_k] of nodes the method computed
    (ALSH: active set; dropout: kept nodes) or None (MC computes every node,
    and for the logits), ``idx`` the ALSH active set [B, s_k] (else None).
  """
  if variant.method == "alsh":
    return alsh_layers(impl, params, x, key)
  if variant.method == "mc":
    return mc_layers(impl, params, x, key, mc_batch=mc_batch)
  return dropout_layers(params, x, key, keep_prob=variant.config["keep_prob"],
                        activation=activation)


# ---------------------------------------------------------------------------
# Metrics.


def relative_error(approx, exact, mask=None, *, against: str = "exact") -> float:
  """``||approx - exact||_F / ||ref||_F`` over the entries in ``mask`` (host).

  Args:
    approx, exact: arrays of one shape (e.g. [B, n]).
    mask: bool of that shape, or None for every entry.
    against: ``"exact"`` (``ref = exact``, the usual relative error) or
      ``"approx"`` (``ref = approx``: the theorem's ``e / abar``).

  Returns:
    The ratio (float64); nan if the reference norm is 0.
  """
  approx = np.asarray(approx, np.float64)
  exact = np.asarray(exact, np.float64)
  if approx.shape != exact.shape:
    raise ValueError(f"shapes differ: {approx.shape} vs {exact.shape}.")
  if against not in ("exact", "approx"):
    raise ValueError(f"against must be 'exact' or 'approx', got {against!r}.")
  if mask is not None:
    mask = np.asarray(mask, bool)
    approx, exact = approx[mask], exact[mask]
  ref = exact if against == "exact" else approx
  den = np.linalg.norm(ref)
  return float(np.linalg.norm(approx - exact) / den) if den > 0 else math.nan


@jax.jit
def _sq_norms(approx, exact, mask):
  """Squared norms for the device-side relative errors: ``||d||^2``,
  ``||exact||^2``, and on ``mask`` ``||d||^2`` and ``||approx||^2``."""
  d2 = jnp.square(approx - exact)
  return jnp.stack([d2.sum(), jnp.square(exact).sum(),
                    jnp.where(mask, d2, 0).sum(),
                    jnp.where(mask, jnp.square(approx), 0).sum()])


def _ratio(num_sq: float, den_sq: float) -> float:
  return math.sqrt(num_sq / den_sq) if den_sq > 0 else math.nan


def top1_agreement(approx_logits, exact_logits) -> float:
  """Fraction of rows whose argmax is the same."""
  a = np.asarray(approx_logits).argmax(-1)
  e = np.asarray(exact_logits).argmax(-1)
  return float(np.mean(a == e))


def accuracy(logits, labels) -> float:
  return float(np.mean(np.asarray(logits).argmax(-1) == np.asarray(labels)))


# The theorem's condition as ``theory.effective_c`` states it (two masked
# dense products, on device); the median is taken on the host: XLA's CPU sort
# is ~50x slower than numpy's partition for 256k entries.
_effective_c = jax.jit(theory.effective_c)


def effective_c_summary(ratios) -> tuple[float, float]:
  """(``theory.summarize_effective_c(ratios)``, fraction of finite ratios > 0).

  The theorem assumes every ratio is the same positive ``c``; the second
  number says how far from that sign pattern a real network is.
  """
  r = np.asarray(ratios, np.float64)
  finite = r[np.isfinite(r)]
  pos = float(np.mean(finite > 0)) if finite.size else math.nan
  return theory.summarize_effective_c(r), pos


def measure_network(params: layers.Params, x, y, *, activation: str,
                    variants: Sequence[Variant], key: jax.Array,
                    num_keys: int = 3, mc_batch: int = 64,
                    model: registry.ModelConfig | None = None) -> list[dict]:
  """Every variant's errors on one network, one row per (variant, key).

  Args:
    params: standard params of the network.
    x: [B, D] evaluation inputs; y: [B] their labels.
    activation: the network's hidden activation.
    variants: what to measure.
    key: base key; variant ``v`` uses ``fold_in(key, v.key_salt)`` split into
      ``num_keys`` keys (the repetitions).
    num_keys: repetitions per variant (the spread).
    mc_batch: MC-APPROX's batch size.
    model: the network's ModelConfig (derived from ``params`` if None).

  Returns:
    Rows with ``variant``, ``method``, ``key``, ``depth``, ``config``,
    per-layer lists ``rel_err`` (hidden layers then logits),
    ``logits_rel_err``, ``top1``, ``exact_accuracy``, ``approx_accuracy``,
    ``seconds`` (the pass and its metrics), and for ALSH ``err_ratio`` (per
    layer, ``||a - abar|| / ||abar||`` on the active set; all logits),
    ``logits_err_ratio``, ``effective_c`` and ``c_positive`` (per lossy
    step: ``depth`` of them), ``active_fraction``.
  """
  if num_keys < 1:
    raise ValueError(f"num_keys must be >= 1, got {num_keys}.")
  depth = len(params) - 1
  if model is None:
    model = registry.ModelConfig(
        input_dim=params[0].w.shape[0], num_classes=params[-1].w.shape[1],
        hidden=params[0].w.shape[1], depth=depth, activation=activation)
  x = jnp.asarray(x)
  y = np.asarray(y)
  exact = exact_forward(params, x, activation=activation)
  exact_logits = np.asarray(exact[-1])
  exact_acc = accuracy(exact_logits, y)
  rows = []
  for v in variants:
    impl = build_impl(v, model)
    keys = _host_keys(jax.random.split(jax.random.fold_in(key, v.key_salt),
                                       num_keys))
    for k in range(num_keys):
      t0 = time.perf_counter()
      sq, cs, logits, active_fraction = [], [], None, math.nan
      for l, (a, mask, idx) in enumerate(approx_layers(
          v, impl, params, x, _key(keys[k]), activation=activation,
          mc_batch=mc_batch)):
        if idx is not None:
          # Lossy step l + 1: the next layer reads this layer's active set.
          cs.append(_effective_c(exact[l], params[l + 1].w, mask))
          if l == 0:
            active_fraction = idx.shape[1] / exact[0].shape[1]
        sq.append(_sq_norms(a, exact[l], True if mask is None else mask))
        logits = a
      sq = np.asarray(jnp.stack(sq), np.float64)
      logits = np.asarray(logits)
      seconds = time.perf_counter() - t0
      rel = [_ratio(s[0], s[1]) for s in sq]
      row = dict(variant=v.label, method=v.method, key=k, depth=depth,
                 config=v.config, rel_err=rel, logits_rel_err=rel[-1],
                 top1=top1_agreement(logits, exact_logits),
                 exact_accuracy=exact_acc,
                 approx_accuracy=accuracy(logits, y), seconds=seconds)
      if v.method == "alsh":
        ratio = [_ratio(s[2], s[3]) for s in sq]
        summaries = [effective_c_summary(c) for c in cs]
        row.update(err_ratio=ratio, logits_err_ratio=ratio[-1],
                   effective_c=[c for c, _ in summaries],
                   c_positive=[p for _, p in summaries],
                   active_fraction=active_fraction)
      rows.append(row)
  return rows


# ---------------------------------------------------------------------------
# The whole experiment.


@dataclasses.dataclass(frozen=True)
class Config:
  """Settings of :func:`run_networks` (the entry point's flags).

  Attributes:
    dataset: dataset name (``data.load_dataset``); data_dir: where its files are.
    max_train: training examples used; eval_examples: test examples pushed
      through the networks (the first ones of the test split).
    depths: hidden-layer counts; hidden: their width.
    activations: hidden activations (the theorem's is ``linear``).
    train_epochs: epochs of exact training for the "trained" networks; 0
      measures only the freshly initialised ones.
    batch_size, learning_rate: exact training's.
    seed: network seed; the method keys derive from it too.
    num_keys: repetitions of every approximate pass.
    variants: what to measure.
    mc_batch: MC-APPROX's batch size.
    zero_bias: set every bias to 0 before measuring (the theorem's setting;
      for trained networks this changes the function they compute).
    progress: show a progress bar.
  """

  dataset: str = "mnist_small"
  data_dir: str | None = None
  max_train: int = 2000
  eval_examples: int = 256
  depths: tuple = tuple(range(1, 11))
  hidden: int = 1000
  activations: tuple = ("linear", "relu")
  train_epochs: int = 1
  batch_size: int = 32
  learning_rate: float = 1e-3
  seed: int = 0
  num_keys: int = 3
  variants: tuple = ()
  mc_batch: int = 64
  zero_bias: bool = False
  progress: bool = True

  def __post_init__(self):
    if not self.depths or min(self.depths) < 1:
      raise ValueError(f"depths must be a nonempty list of depths >= 1, got {self.depths}.")
    if self.eval_examples < 1 or self.num_keys < 1 or self.mc_batch < 1:
      raise ValueError("eval_examples, num_keys and mc_batch must be >= 1.")
    if self.train_epochs < 0:
      raise ValueError(f"train_epochs must be >= 0, got {self.train_epochs}.")
    mb = min(self.mc_batch, self.eval_examples)
    if self.eval_examples % mb:
      raise ValueError(f"eval_examples={self.eval_examples} must be a multiple "
                       f"of mc_batch={self.mc_batch} (MC-APPROX runs on whole batches).")
    for a in self.activations:
      layers.check_activation(a)


def trainings(cfg: Config) -> tuple[str, ...]:
  return ("init",) + (("trained",) if cfg.train_epochs > 0 else ())


def run_networks(cfg: Config, dataset) -> list[dict]:
  """Part 2: every (activation, training, depth) network, every variant."""
  from tqdm.auto import tqdm  # pylint: disable=g-import-not-at-top
  variants = list(cfg.variants) or default_variants()
  x = dataset.test.x[:cfg.eval_examples]
  y = dataset.test.y[:cfg.eval_examples]
  if len(x) < cfg.eval_examples:
    raise ValueError(f"the test split has {len(x)} examples, fewer than "
                     f"eval_examples={cfg.eval_examples}.")
  rows = []
  tasks = [(a, d) for a in cfg.activations for d in cfg.depths]
  bar = tqdm(tasks, desc="networks", disable=not cfg.progress, unit="net")
  for activation, depth in bar:
    model = model_config(dataset, depth=depth, hidden=cfg.hidden,
                         activation=activation)
    for training in trainings(cfg):
      bar.set_postfix(act=activation, depth=depth, net=training)
      t0 = time.perf_counter()
      epochs = 0 if training == "init" else cfg.train_epochs
      params = train_params(dataset, depth=depth, hidden=cfg.hidden,
                            activation=activation, epochs=epochs,
                            seed=cfg.seed, batch_size=cfg.batch_size,
                            learning_rate=cfg.learning_rate)
      if cfg.zero_bias:
        params = tuple(layers.LayerParams(p.w, jnp.zeros_like(p.b))
                       for p in params)
      t_train = time.perf_counter() - t0
      key = jax.random.fold_in(jax.random.key(cfg.seed), depth)
      t0 = time.perf_counter()
      net_rows = measure_network(params, x, y, activation=activation,
                                 variants=variants, key=key,
                                 num_keys=cfg.num_keys, mc_batch=cfg.mc_batch,
                                 model=model)
      t_measure = time.perf_counter() - t0
      for r in net_rows:
        r.update(activation=activation, training=training,
                 train_epochs=epochs, dataset=cfg.dataset, hidden=cfg.hidden,
                 seed=cfg.seed, eval_examples=cfg.eval_examples,
                 zero_bias=cfg.zero_bias)
      rows += net_rows
      logging.info("%s depth %d %s: exact acc %.3f; train %.1fs, measure %.1fs",
                   activation, depth, training, net_rows[0]["exact_accuracy"],
                   t_train, t_measure)
  bar.close()
  return rows


# ---------------------------------------------------------------------------
# Summaries.


def _mean_std(values) -> tuple[float, float]:
  v = np.asarray([x for x in values if x is not None], np.float64)
  v = v[np.isfinite(v)]
  if not v.size:
    return math.nan, math.nan
  return float(v.mean()), float(v.std())


def _median_finite(values) -> float:
  v = np.asarray([x for x in values if x is not None], np.float64)
  if not v.size:
    return math.nan
  finite = v[np.isfinite(v)]
  if finite.size:
    return float(np.median(finite))
  return math.inf if np.any(np.isinf(v)) else math.nan


def summarize(rows: Sequence[Mapping]) -> list[dict]:
  """Mean and spread over keys: one dict per (activation, training, variant, depth).

  Fields: the identity, ``logits_rel_err`` / ``_std``, ``top1`` / ``_std``,
  ``exact_accuracy``, ``approx_accuracy``, ``rel_err`` (per-layer means),
  and for ALSH ``logits_err_ratio`` / ``_std``, ``c`` (median over keys and
  steps of the per-step median ``|c|``), ``c_steps`` (per step, median over
  keys), ``c_positive``, ``theorem_ratio`` (``error_ratio(c, depth)``),
  ``theorem_rel_err`` (``theorem_relative_error(c, depth)``),
  ``layerwise_theorem_ratio`` (with the per-step ``c``).
  """
  groups: dict[tuple, list] = {}
  for r in rows:
    k = (r["activation"], r["training"], r["variant"], r["depth"])
    groups.setdefault(k, []).append(r)
  out = []
  for (act, training, variant, depth), rs in groups.items():
    s = dict(activation=act, training=training, variant=variant,
             method=rs[0]["method"], depth=depth, num_keys=len(rs),
             exact_accuracy=rs[0]["exact_accuracy"])
    s["logits_rel_err"], s["logits_rel_err_std"] = _mean_std(
        r["logits_rel_err"] for r in rs)
    s["top1"], s["top1_std"] = _mean_std(r["top1"] for r in rs)
    s["approx_accuracy"], _ = _mean_std(r["approx_accuracy"] for r in rs)
    s["rel_err"] = [_mean_std(r["rel_err"][l] for r in rs)[0]
                    for l in range(depth + 1)]
    s["rel_err_std"] = [_mean_std(r["rel_err"][l] for r in rs)[1]
                        for l in range(depth + 1)]
    if s["method"] == "alsh":
      s["logits_err_ratio"], s["logits_err_ratio_std"] = _mean_std(
          r["logits_err_ratio"] for r in rs)
      s["err_ratio"] = [_mean_std(r["err_ratio"][l] for r in rs)[0]
                        for l in range(depth + 1)]
      s["c_steps"] = [_median_finite(r["effective_c"][l] for r in rs)
                      for l in range(depth)]
      s["c"] = _median_finite(c for r in rs for c in r["effective_c"])
      s["c_positive"], _ = _mean_std(p for r in rs for p in r["c_positive"])
      c = s["c"]
      ok = c > 0
      s["theorem_ratio"] = theory.error_ratio(c, depth) if ok else math.nan
      s["theorem_rel_err"] = theorem_relative_error(c, depth) if ok else math.nan
      cs = s["c_steps"]
      s["layerwise_theorem_ratio"] = (
          layerwise_theorem_ratio(cs).tolist() if all(v > 0 for v in cs)
          else [math.nan] * depth)
    out.append(s)
  return out


def growth(summary: Sequence[Mapping], *, field: str = "logits_rel_err"
           ) -> list[dict]:
  """How fast an error grows with depth, per (activation, training, variant).

  Fits ``log err = alpha + depth log g`` (least squares over depths with a
  positive error): ``g`` is the growth factor per added layer; also the
  log-log slope ``p`` (``err ~ depth^p``) and the error at the smallest and
  largest depth.

  Returns:
    One dict per group: identity, ``g``, ``p``, ``err_first``, ``err_last``,
    ``depth_first``, ``depth_last``.
  """
  groups: dict[tuple, list] = {}
  for s in summary:
    groups.setdefault((s["activation"], s["training"], s["variant"]), []).append(s)
  out = []
  for (act, training, variant), ss in groups.items():
    ss = sorted(ss, key=lambda s: s["depth"])
    d = np.array([s["depth"] for s in ss], np.float64)
    e = np.array([s[field] for s in ss], np.float64)
    ok = np.isfinite(e) & (e > 0)
    g = p = math.nan
    if ok.sum() >= 2:
      g = float(np.exp(np.polyfit(d[ok], np.log(e[ok]), 1)[0]))
      p = float(np.polyfit(np.log(d[ok]), np.log(e[ok]), 1)[0])
    out.append(dict(activation=act, training=training, variant=variant,
                    method=ss[0]["method"], g=g, p=p,
                    err_first=float(e[0]), err_last=float(e[-1]),
                    depth_first=int(d[0]), depth_last=int(d[-1])))
  return out


def _fmt(v: float, digits: int = 3) -> str:
  if v is None or (isinstance(v, float) and math.isnan(v)):
    return "n/a"
  if isinstance(v, float) and math.isinf(v):
    return "inf"
  if v != 0 and (abs(v) >= 1e4 or abs(v) < 1e-3):
    return f"{v:.{digits - 1}e}"
  return f"{v:.{digits}g}"


def depth_table(summary: Sequence[Mapping], *, field: str,
                spread: str | None = None, activation: str,
                training: str) -> str:
  """Markdown: a row per variant, a column per depth, ``field`` (± ``spread``)."""
  ss = [s for s in summary
        if s["activation"] == activation and s["training"] == training]
  depths = sorted({s["depth"] for s in ss})
  variants = list(dict.fromkeys(s["variant"] for s in ss))
  by = {(s["variant"], s["depth"]): s for s in ss}
  rows = []
  for v in variants:
    row = {"variant": v}
    for d in depths:
      s = by.get((v, d))
      if s is None or field not in s:
        row[str(d)] = ""
        continue
      cell = _fmt(s[field])
      if spread and not math.isnan(s.get(spread, math.nan)) and s[spread] > 0:
        cell += f" ± {_fmt(s[spread], 2)}"
      row[str(d)] = cell
    rows.append(row)
  cols = [("variant", "variant")] + [(str(d), f"d={d}") for d in depths]
  return experiment.markdown_table(rows, cols)


def alsh_theorem_table(summary: Sequence[Mapping], *, activation: str,
                       training: str) -> str:
  """Markdown: per ALSH variant and depth, measured logits ``e/abar`` beside
  the theorem's ``((c+1)/c)^d - 1`` for the measured ``c``."""
  ss = [s for s in summary if s["method"] == "alsh"
        and s["activation"] == activation and s["training"] == training]
  rows = []
  for s in sorted(ss, key=lambda s: (s["variant"], s["depth"])):
    rows.append(dict(
        variant=s["variant"], depth=s["depth"], c=_fmt(s["c"]),
        c_pos=_fmt(s["c_positive"], 2),
        ratio=_fmt(s["logits_err_ratio"]), theorem=_fmt(s["theorem_ratio"]),
        layerwise=_fmt(s["layerwise_theorem_ratio"][-1]),
        rel=_fmt(s["logits_rel_err"]), theorem_rel=_fmt(s["theorem_rel_err"])))
  cols = (("variant", "variant"), ("depth", "d"), ("c", "measured c"),
          ("c_pos", "frac. c>0"), ("ratio", "measured e/abar"),
          ("theorem", "theorem (c)"), ("layerwise", "theorem (c per layer)"),
          ("rel", "measured rel err"), ("theorem_rel", "theorem rel err"))
  return experiment.markdown_table(rows, cols)


def growth_table(rows: Sequence[Mapping]) -> str:
  cols = (("variant", "variant"), ("activation", "activation"),
          ("training", "network"), ("err_first", "err d=first"),
          ("err_last", "err d=last"), ("g", "growth/layer g"),
          ("p", "power p (err ~ d^p)"))
  fmt = [dict(r, **{k: _fmt(r[k]) for k in ("err_first", "err_last", "g", "p")})
         for r in rows]
  return experiment.markdown_table(fmt, cols)


def alsh_growth_table(summary: Sequence[Mapping]) -> str:
  """Markdown: ALSH's measured logits ``e/abar`` growth factor per layer (a
  log-linear fit over depths) beside the theorem's ``1 + 1/c`` for the
  measured ``c`` (median over depths)."""
  ss = [s for s in summary if s["method"] == "alsh"]
  rows = []
  for g in growth(ss, field="logits_err_ratio"):
    c = _median_finite(
        s["c"] for s in ss if (s["activation"], s["training"], s["variant"])
        == (g["activation"], g["training"], g["variant"]))
    rows.append(dict(g, c=_fmt(c), theorem_g=_fmt(1 + 1 / c if c > 0 else math.nan),
                     g_fmt=_fmt(g["g"]), first=_fmt(g["err_first"]),
                     last=_fmt(g["err_last"])))
  cols = (("variant", "variant"), ("activation", "activation"),
          ("training", "network"), ("first", "e/abar d=first"),
          ("last", "e/abar d=last"), ("g_fmt", "measured growth/layer"),
          ("c", "measured c"), ("theorem_g", "theorem 1 + 1/c"))
  return experiment.markdown_table(rows, cols)


def theorem_markdown(c: float, depths: Sequence[int] = range(1, 8), *,
                     width: int = 64, active: int = 8, seed: int = 0) -> tuple[str, list[dict]]:
  """Part 1: the theorem's table, closed form beside the construction.

  Returns:
    (markdown, rows): rows from :func:`theory.theorem_table` with
    ``rel_err_closed_form`` (``theorem_relative_error``) added.
  """
  table = theory.theorem_table(c, depths, width=width, active=active, seed=seed)
  for r in table:
    r["rel_err_closed_form"] = theorem_relative_error(c, r["k"])
  fmt = [dict(k=r["k"], closed=f"{r['closed_form']:.10f}",
              measured=f"{r['measured_mean']:.10f}",
              dev=f"{r['measured_max_abs_dev']:.1e}",
              rel=f"{r['rel_err_closed_form']:.6f}") for r in table]
  cols = (("k", "k"), ("closed", "closed form ((c+1)/c)^k - 1"),
          ("measured", "measured e/abar (mean over nodes)"),
          ("dev", "max abs(measured - closed)"),
          ("rel", "1 - (c/(c+1))^k (error vs exact)"))
  md = (f"Theorem table for c = {c:g}: a linear network of width {width} "
        f"built so that every node's active part ({active} of {width} inputs) "
        f"is exactly c times its inactive part (theory.construct_network), "
        f"float64.\n\n" + experiment.markdown_table(fmt, cols))
  return md, table


# ---------------------------------------------------------------------------
# Plots.


def _plt():
  return experiment._pyplot()  # pylint: disable=protected-access


def _family_colors(labels):
  plt = _plt()
  cmap = plt.get_cmap("tab10")
  return {l: cmap(i % 10) for i, l in enumerate(labels)}


def _log_errorbar(ax, x, y, std, **kw):
  """Error bars on a log axis: points <= 0 (exact) are left out and the
  lower bar is clipped so it stays positive."""
  x, y, std = (np.asarray(v, np.float64) for v in (x, y, std))
  std = np.nan_to_num(std)
  ok = np.isfinite(y) & (y > 0)
  if not ok.any():
    return
  lower = np.minimum(std[ok], 0.9 * y[ok])
  ax.errorbar(x[ok], y[ok], yerr=[lower, std[ok]], marker="o", ms=3,
              capsize=2, **kw)


def _finish(ax, xlabel, ylabel, title):
  from matplotlib.ticker import MaxNLocator  # pylint: disable=g-import-not-at-top
  ax.set_yscale("log")
  ax.xaxis.set_major_locator(MaxNLocator(integer=True))
  ax.grid(alpha=0.3, which="both")
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  ax.set_title(title, fontsize=10)
  if ax.get_legend_handles_labels()[0]:
    ax.legend(fontsize=7)


def plot_error_vs_depth(summary: Sequence[Mapping], path: str, *,
                        activation: str, training: str, title: str = "") -> None:
  """Top row: logits relative error against network depth, a panel per
  method family (ALSH with the theorem's ``1 - (c/(c+1))^d`` for each
  variant's measured ``c``, dashed); bottom row: per-layer relative error in
  the deepest network.  Error bars: std over keys; exact points (error 0)
  are left off the log axis."""
  plt = _plt()
  ss = [s for s in summary
        if s["activation"] == activation and s["training"] == training]
  fig, axes = plt.subplots(2, 3, figsize=(15, 8.5), squeeze=False)
  ylabel = "||approx - exact|| / ||exact||"
  for col, method in enumerate(METHODS):
    ms = [s for s in ss if s["method"] == method]
    labels = list(dict.fromkeys(s["variant"] for s in ms))
    colors = _family_colors(labels)
    ax, ax2 = axes[0, col], axes[1, col]
    for label in labels:
      vs = sorted((s for s in ms if s["variant"] == label), key=lambda s: s["depth"])
      d = [s["depth"] for s in vs]
      name = label
      if method == "alsh":
        c = _median_finite(s["c"] for s in vs)
        name = f"{label} (c={_fmt(c, 2)})"
        if c > 0:
          dd = np.arange(min(d), max(d) + 1)
          ax.plot(dd, theorem_relative_error(c, dd), "--", color=colors[label],
                  alpha=0.7)
      _log_errorbar(ax, d, [s["logits_rel_err"] for s in vs],
                    [s["logits_rel_err_std"] for s in vs], color=colors[label],
                    label=name)
      deep = vs[-1]
      _log_errorbar(ax2, np.arange(1, deep["depth"] + 2), deep["rel_err"],
                    deep["rel_err_std"], color=colors[label], label=label)
    extra = (": dashed = theorem 1-(c/(c+1))^d at measured c"
             if method == "alsh" else "")
    _finish(ax, "hidden layers d", ylabel, f"{method}, logits{extra}")
    deepest = max((s["depth"] for s in ms), default=0)
    _finish(ax2, "layer (last: logits)", ylabel,
            f"{method}, per layer of the d={deepest} network")
  fig.suptitle(title or f"{activation} network, {training}")
  fig.tight_layout()
  experiment._save(fig, path)  # pylint: disable=protected-access


def plot_alsh_theorem(summary: Sequence[Mapping], path: str, *,
                      activation: str, training: str, title: str = "") -> None:
  """ALSH's theorem quantity ``e/abar`` (computed nodes only) beside the
  theorem's ``((c+1)/c)^k - 1`` for the measured ``c`` (dashed): against
  network depth (logits, left) and per layer in the deepest network (right;
  ``k`` = lossy steps before the layer, so hidden layer 1, exact on its
  active set, is left out)."""
  plt = _plt()
  ss = [s for s in summary if s["method"] == "alsh"
        and s["activation"] == activation and s["training"] == training]
  labels = list(dict.fromkeys(s["variant"] for s in ss))
  colors = _family_colors(labels)
  fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12, 4.8))
  for label in labels:
    vs = sorted((s for s in ss if s["variant"] == label), key=lambda s: s["depth"])
    d = np.array([s["depth"] for s in vs])
    c = _median_finite(s["c"] for s in vs)
    _log_errorbar(ax, d, [s["logits_err_ratio"] for s in vs],
                  [s["logits_err_ratio_std"] for s in vs], color=colors[label],
                  label=f"{label} (c={_fmt(c, 2)})")
    if c > 0:
      ax.plot(d, theory.error_ratio(c, d), "--", color=colors[label], alpha=0.7)
    deep = vs[-1]
    layer = np.arange(2, deep["depth"] + 2)
    _log_errorbar(ax2, layer, deep["err_ratio"][1:], np.zeros(len(layer)),
                  color=colors[label], label=label)
    if deep["c"] > 0:
      ax2.plot(layer, theory.error_ratio(deep["c"], layer - 1), "--",
               color=colors[label], alpha=0.7)
  ylabel = "||a - abar|| / ||abar|| (computed nodes)"
  _finish(ax, "hidden layers d (logits)", ylabel,
          "measured (solid) vs theorem ((c+1)/c)^d - 1 (dashed)")
  _finish(ax2, "layer of the deepest network (last: logits)", ylabel,
          "per layer (theorem: k = layer - 1 lossy steps)")
  fig.suptitle(title or f"ALSH-APPROX vs the theorem: {activation}, {training}")
  fig.tight_layout()
  experiment._save(fig, path)  # pylint: disable=protected-access


def plot_name(kind: str, activation: str, training: str) -> str:
  return f"{kind}_{activation}_{training}.png"


# ---------------------------------------------------------------------------
# Outputs.


def write_rows(rows: Sequence[Mapping], path: str) -> None:
  """JSON lines (``inf``/``nan`` as JSON's Infinity/NaN, which json reads)."""
  experiment.write_text(path, "".join(
      json.dumps(r, sort_keys=True, default=experiment._json_default) + "\n"  # pylint: disable=protected-access
      for r in rows))


def read_rows(path: str) -> list[dict]:
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def report_markdown(rows: Sequence[Mapping]) -> str:
  """``table.md``: per (activation, network) the logits relative error and
  top-1 agreement against depth, ALSH against the theorem, then the growth
  rates."""
  if not rows:
    raise ValueError("no rows to report.")
  summary = summarize(rows)
  r0 = rows[0]
  num_keys = max(r["key"] for r in rows) + 1
  epochs = max(r["train_epochs"] for r in rows)
  nobias = ", biases set to 0" if r0.get("zero_bias") else ""
  parts = [f"# Error propagation: {r0['dataset']}, width {r0['hidden']}, "
           f"{r0['eval_examples']} test inputs, {num_keys} key(s){nobias}\n",
           "Cells: mean ± std over keys. Relative error: "
           "||approx - exact||_F / ||exact||_F over the evaluation batch. "
           "Top-1 agreement: fraction of inputs whose approximate top-1 class "
           "is the exact network's.\n"]
  for act in dict.fromkeys(r["activation"] for r in rows):
    for training in dict.fromkeys(r["training"] for r in rows):
      ss = [s for s in summary
            if s["activation"] == act and s["training"] == training]
      if not ss:
        continue
      accs = {s["depth"]: s["exact_accuracy"] for s in ss}
      net = ("freshly initialised" if training == "init" else
             f"after {epochs} epoch(s) of exact training")
      parts.append(f"\n## {act}, {net}\n")
      parts.append("Exact test accuracy on the evaluation batch: " + ", ".join(
          f"d={d}: {a:.3f}" for d, a in sorted(accs.items())) + "\n")
      parts.append("\n### Logits relative error\n\n" + depth_table(
          summary, field="logits_rel_err", spread="logits_rel_err_std",
          activation=act, training=training))
      parts.append("\n### Top-1 agreement with the exact network\n\n" +
                   depth_table(summary, field="top1", spread="top1_std",
                               activation=act, training=training))
      if any(s["method"] == "alsh" for s in ss):
        parts.append(
            "\n### ALSH-APPROX against the theorem (logits)\n\n"
            "measured c: median over keys and lossy steps of each step's "
            "median |active part / inactive part| (exact activations); "
            "frac. c>0: share of (example, node) ratios that are positive, "
            "as the theorem assumes; e/abar: ||a - abar|| / ||abar||.\n\n" +
            alsh_theorem_table(summary, activation=act, training=training))
  parts.append("\n## Growth of the logits relative error with depth\n\n"
               "Least-squares fits over the depths with a nonzero error: "
               "err ~ g^d (g: factor per added layer) and err ~ d^p.\n\n" +
               growth_table(growth(summary)))
  if any(s["method"] == "alsh" for s in summary):
    parts.append("\n## ALSH-APPROX: growth of e/abar against the theorem's "
                 "factor\n\nUnder the theorem e/abar = (1 + 1/c)^d - 1, "
                 "i.e. it grows by 1 + 1/c per lossy step.\n\n" +
                 alsh_growth_table(summary))
  return "\n".join(parts)


def write_report(rows: Sequence[Mapping], out_dir: str) -> list[str]:
  """Writes ``table.md`` and the plots for ``rows`` into ``out_dir``.

  Returns:
    The paths written.
  """
  summary = summarize(rows)
  paths = [os.path.join(out_dir, "table.md")]
  experiment.write_text(paths[0], report_markdown(rows))
  r0 = rows[0]
  nobias = ", biases set to 0" if r0.get("zero_bias") else ""
  for act in dict.fromkeys(r["activation"] for r in rows):
    for training in dict.fromkeys(r["training"] for r in rows):
      if not any(s["activation"] == act and s["training"] == training
                 for s in summary):
        continue
      path = os.path.join(out_dir, plot_name("error_vs_depth", act, training))
      plot_error_vs_depth(
          summary, path, activation=act, training=training,
          title=f"{r0['dataset']}, width {r0['hidden']}, {act}, {training}"
          f"{nobias}: approximate vs exact forward pass")
      paths.append(path)
      if any(s["method"] == "alsh" for s in summary):
        path = os.path.join(out_dir, plot_name("alsh_theorem", act, training))
        plot_alsh_theorem(
            summary, path, activation=act, training=training,
            title=f"ALSH-APPROX vs the theorem: {r0['dataset']}, width "
            f"{r0['hidden']}, {act}, {training}{nobias}")
        paths.append(path)
  return paths
