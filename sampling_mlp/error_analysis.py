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

Why the approximate passes run eagerly (not under one ``jit`` per depth):
every (method variant, depth, activation) would need its own compilation, and
on the project's 2-core machine one compilation of a depth-10 ALSH or MC pass
took 10-15 s (measured), i.e. far longer than running it; eager JAX compiles
each primitive once per shape and reuses it across depths (every hidden layer
has the same width), so after the first network a depth-10 ALSH pass of 256
examples costs about 0.5 s.  ``measure_network(..., jit=True)`` compiles the
passes instead, for long runs on a faster machine.

MC-APPROX's estimates depend on the batch (its sampling probabilities use the
batch's column norms), so its pass runs on batches of ``mc_batch`` examples.
"""

from __future__ import annotations

import dataclasses
import math
import time
import zlib
from typing import Any, Callable, Mapping, Sequence

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
# Forward passes: each returns per hidden layer the dense approximate
# activations, then the logits; stacked over keys (axis 0).


def exact_forward(params: layers.Params, x: jax.Array, *,
                  activation: str) -> list[jax.Array]:
  """Exact activations of every hidden layer, then the logits ([B, n_k])."""
  return layers.hidden_activations(params, x, activation=activation)


def dropout_activations(key: jax.Array, params: layers.Params, x: jax.Array,
                        *, keep_prob: float, activation: str
                        ) -> tuple[list[jax.Array], tuple[jax.Array, ...]]:
  """Per-layer activations of :func:`dropout.dropout_forward`'s pass.

  The masks come from ``dropout_forward`` itself (same key, same draws); the
  activations it propagates, ``where(mask, f(z) / keep_prob, 0)``, are
  recomputed from them.

  Args:
    key: the pass's key. params: standard params. x: [B, D].
    keep_prob: in (0, 1]. activation: hidden activation name.

  Returns:
    (acts, masks): per hidden layer [B, n_k] then the logits [B, C]; the
    bool keep masks [B, n_k] per hidden layer.
  """
  logits, masks = dropout_lib.dropout_forward(
      key, params, x, keep_prob=keep_prob, activation=activation)
  act = layers.activation_fn(activation)
  a, acts = x, []
  for p, m in zip(params[:-1], masks):
    h = act(layers.dense(p, a))
    a = jnp.where(m, h / keep_prob, jnp.zeros_like(h))
    acts.append(a)
  acts.append(logits)
  return acts, masks


def _maybe_jit(fn: Callable, jit: bool) -> Callable:
  return jax.jit(fn) if jit else fn


def make_pass(variant: Variant, model: registry.ModelConfig, *,
              mc_batch: int = 64, jit: bool = False) -> Callable:
  """The approximate forward pass of ``variant`` for networks of ``model``.

  Args:
    variant: what to measure.
    model: the network's shape and activation.
    mc_batch: MC-APPROX's batch size (its estimate depends on the batch).
    jit: compile the pass (see the module docstring for why it is off by
      default).

  Returns:
    ``fn(params, x, keys) -> (acts, masks)``: ``x`` [B, D] and ``keys`` [K]
    (one typed key per repetition). ``acts``: per hidden layer [K, B, n_k],
    then the logits [K, B, C]. ``masks``: per hidden layer the bool [K, B,
    n_k] of nodes the method computed (ALSH: active set; dropout: kept
    nodes), or None (MC computes every node). For MC, ``B`` must be a
    multiple of ``mc_batch`` (or smaller than it: one batch).
  """
  cfg = variant.config
  if variant.method == "alsh":
    impl = registry.get("alsh").make(model, OptimConfig(), cfg)
    sizes = model.sizes

    def one_key(params, x, key):
      k_init, k_fwd = jax.random.split(key)
      state = impl.init(k_init, params)
      acts, idxs, _ = impl.approx_forward(state, x, k_fwd)
      b = x.shape[0]
      masks = [jnp.zeros((b, n), bool).at[jnp.arange(b)[:, None], idx].set(True)
               for n, idx in zip(sizes[1:-1], idxs)]
      return acts, masks

    return _maybe_jit(jax.vmap(one_key, in_axes=(None, None, 0)), jit)

  if variant.method == "mc":
    impl = registry.get("mc").make(model, OptimConfig(), cfg)

    def one_key(params, x, key):
      b = x.shape[0]
      mb = min(mc_batch, b)
      if b % mb:
        raise ValueError(f"MC-APPROX runs on batches of mc_batch={mc_batch}; "
                         f"the {b} evaluation examples must be a multiple of it.")
      xb = x.reshape(b // mb, mb, -1)
      kb = jax.random.split(key, b // mb)
      acts, _, _ = jax.vmap(impl.approx_forward, in_axes=(None, 0, 0))(
          params, xb, kb)
      return [a.reshape(b, -1) for a in acts], None

    fn = jax.vmap(one_key, in_axes=(None, None, 0))
    return _maybe_jit(fn, jit)

  keep_prob = cfg["keep_prob"]

  def one_key(params, x, key):
    acts, masks = dropout_activations(key, params, x, keep_prob=keep_prob,
                                      activation=model.activation)
    return acts, list(masks)

  return _maybe_jit(jax.vmap(one_key, in_axes=(None, None, 0)), jit)


# ---------------------------------------------------------------------------
# Metrics (float64 numpy: the errors can be tiny).


def relative_error(approx, exact, mask=None, *, against: str = "exact") -> float:
  """``||approx - exact||_F / ||ref||_F`` over the entries in ``mask``.

  Args:
    approx, exact: arrays of one shape (e.g. [B, n]).
    mask: bool of that shape, or None for every entry.
    against: ``"exact"`` (``ref = exact``, the usual relative error) or
      ``"approx"`` (``ref = approx``: the theorem's ``e / abar``).

  Returns:
    The ratio; nan if the reference norm is 0.
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


def top1_agreement(approx_logits, exact_logits) -> float:
  """Fraction of rows whose argmax is the same."""
  a = np.asarray(approx_logits).argmax(-1)
  e = np.asarray(exact_logits).argmax(-1)
  return float(np.mean(a == e))


def accuracy(logits, labels) -> float:
  return float(np.mean(np.asarray(logits).argmax(-1) == np.asarray(labels)))


def alsh_effective_c(params: layers.Params, exact_acts: Sequence, masks: Sequence
                     ) -> tuple[list[float], list[float]]:
  """Effective ``c`` of every lossy step of one ALSH pass.

  Step ``l`` (``l = 1..d``) is the layer that reads hidden layer ``l``: hidden
  layer ``l+1``, or the output layer for ``l = d``.  Its nodes' active part is
  the sum over hidden layer ``l``'s active set, with the exact activations
  (the theorem's exact reading, :func:`theory.effective_c`).

  Args:
    params: standard params. exact_acts: exact activations per hidden layer
      (then logits, unused). masks: bool [B, n_l] active sets per hidden layer.

  Returns:
    (c, positive): per step the median ``|c|`` over examples and nodes
    (:func:`theory.summarize_effective_c`) and the fraction of finite
    ratios that are positive (the theorem assumes every node's ratio is the
    same positive ``c``).
  """
  cs, pos = [], []
  for l, mask in enumerate(masks):
    r = np.asarray(theory.effective_c(exact_acts[l], params[l + 1].w, mask),
                   np.float64)
    cs.append(theory.summarize_effective_c(r))
    finite = r[np.isfinite(r)]
    pos.append(float(np.mean(finite > 0)) if finite.size else math.nan)
  return cs, pos


def measure_network(params: layers.Params, x, y, *, activation: str,
                    variants: Sequence[Variant], key: jax.Array,
                    num_keys: int = 3, mc_batch: int = 64, jit: bool = False,
                    passes: dict | None = None,
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
    jit: compile the passes.
    passes: optional cache ``{label: pass}`` reused across calls with the
      same network shape (filled in when given).
    model: the network's ModelConfig (derived from ``params`` if None).

  Returns:
    Rows with ``variant``, ``method``, ``key``, ``depth``, per-layer lists
    ``rel_err`` (hidden layers then logits), ``logits_rel_err``, ``top1``,
    ``exact_accuracy``, ``approx_accuracy``, ``seconds`` (the pass, per key),
    and for ALSH ``err_ratio`` (per layer, on computed nodes),
    ``logits_err_ratio``, ``effective_c`` and ``c_positive`` (per lossy
    step, ``depth`` of them).
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
  exact = [np.asarray(a) for a in exact_forward(params, x, activation=activation)]
  exact_acc = accuracy(exact[-1], y)
  passes = {} if passes is None else passes
  rows = []
  for v in variants:
    fn = passes.get(v.label)
    if fn is None:
      fn = passes[v.label] = make_pass(v, model, mc_batch=mc_batch, jit=jit)
    keys = jax.random.split(jax.random.fold_in(key, v.key_salt), num_keys)
    t0 = time.perf_counter()
    acts, masks = jax.block_until_ready(fn(params, x, keys))
    seconds = (time.perf_counter() - t0) / num_keys
    acts = [np.asarray(a) for a in acts]
    masks = None if masks is None else [np.asarray(m) for m in masks]
    for k in range(num_keys):
      rel = [relative_error(a[k], e) for a, e in zip(acts, exact)]
      row = dict(variant=v.label, method=v.method, key=k, depth=depth,
                 config=v.config, rel_err=rel, logits_rel_err=rel[-1],
                 top1=top1_agreement(acts[-1][k], exact[-1]),
                 exact_accuracy=exact_acc,
                 approx_accuracy=accuracy(acts[-1][k], y), seconds=seconds)
      if v.method == "alsh":
        mk = [m[k] for m in masks]
        ratio = [relative_error(a[k], e, m, against="approx")
                 for a, e, m in zip(acts[:-1], exact[:-1], mk)]
        ratio.append(relative_error(acts[-1][k], exact[-1], against="approx"))
        cs, pos = alsh_effective_c(params, exact, mk)
        row.update(err_ratio=ratio, logits_err_ratio=ratio[-1], effective_c=cs,
                   c_positive=pos,
                   active_fraction=float(np.mean(mk[0])) if mk else math.nan)
      rows.append(row)
  return rows


# ---------------------------------------------------------------------------
# The whole experiment.


@dataclasses.dataclass(frozen=True)
class Config:
  """Settings of :func:`run` (the entry point's flags).

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
    c: the theorem table's ``c``; theorem_depths: its depths.
    jit: compile the approximate passes.
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
  c: float = 5.0
  theorem_depths: tuple = tuple(range(1, 8))
  jit: bool = False
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
    passes = {}
    for training in trainings(cfg):
      bar.set_postfix(act=activation, depth=depth, net=training)
      t0 = time.perf_counter()
      epochs = 0 if training == "init" else cfg.train_epochs
      params = train_params(dataset, depth=depth, hidden=cfg.hidden,
                            activation=activation, epochs=epochs,
                            seed=cfg.seed, batch_size=cfg.batch_size,
                            learning_rate=cfg.learning_rate)
      t_train = time.perf_counter() - t0
      key = jax.random.fold_in(jax.random.key(cfg.seed), depth)
      t0 = time.perf_counter()
      net_rows = measure_network(params, x, y, activation=activation,
                                 variants=variants, key=key,
                                 num_keys=cfg.num_keys, mc_batch=cfg.mc_batch,
                                 jit=cfg.jit, passes=passes, model=model)
      t_measure = time.perf_counter() - t0
      for r in net_rows:
        r.update(activation=activation, training=training,
                 train_epochs=epochs, dataset=cfg.dataset, hidden=cfg.hidden,
                 seed=cfg.seed, eval_examples=cfg.eval_examples)
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
          ("dev", "max |measured - closed|"),
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


def plot_error_vs_depth(summary: Sequence[Mapping], path: str, *,
                        activation: str, training: str, title: str = "") -> None:
  """Top row: logits relative error against network depth, a panel per
  method family (ALSH with the theorem's ``1 - (c/(c+1))^d`` for each
  variant's measured ``c``, dashed); bottom row: per-layer relative error in
  the deepest network.  Error bars: std over keys."""
  plt = _plt()
  ss = [s for s in summary
        if s["activation"] == activation and s["training"] == training]
  fig, axes = plt.subplots(2, 3, figsize=(15, 8.5), squeeze=False)
  for col, method in enumerate(METHODS):
    ms = [s for s in ss if s["method"] == method]
    labels = list(dict.fromkeys(s["variant"] for s in ms))
    colors = _family_colors(labels)
    ax, ax2 = axes[0, col], axes[1, col]
    for label in labels:
      vs = sorted((s for s in ms if s["variant"] == label), key=lambda s: s["depth"])
      d = [s["depth"] for s in vs]
      ax.errorbar(d, [s["logits_rel_err"] for s in vs],
                  yerr=[s["logits_rel_err_std"] for s in vs], marker="o",
                  ms=3, capsize=2, color=colors[label], label=label)
      if method == "alsh":
        c = _median_finite(s["c"] for s in vs)
        if c > 0:
          dd = np.arange(min(d), max(d) + 1)
          ax.plot(dd, theorem_relative_error(c, dd), "--", color=colors[label],
                  alpha=0.7, label=f"theorem c={_fmt(c, 2)}")
      deep = vs[-1]
      layer = np.arange(1, deep["depth"] + 2)
      ax2.errorbar(layer, deep["rel_err"], yerr=deep["rel_err_std"], marker="o",
                   ms=3, capsize=2, color=colors[label], label=label)
    ax.set_title(f"{method}: logits")
    ax.set_xlabel("hidden layers d")
    ax.set_ylabel("||approx - exact|| / ||exact||")
    ax2.set_title(f"{method}: per layer, deepest network "
                  "(last point: logits)")
    ax2.set_xlabel("layer")
    ax2.set_ylabel("||approx - exact|| / ||exact||")
    for a in (ax, ax2):
      a.set_yscale("log")
      a.grid(alpha=0.3, which="both")
      if labels:
        a.legend(fontsize=7)
  fig.suptitle(title or f"{activation} network, {training}")
  fig.tight_layout()
  experiment._save(fig, path)  # pylint: disable=protected-access


def plot_alsh_theorem(summary: Sequence[Mapping], path: str, *,
                      activation: str, training: str, title: str = "") -> None:
  """ALSH's theorem quantity ``e/abar`` (computed nodes only) beside the
  theorem's ``((c+1)/c)^k - 1`` for the measured ``c``: against network
  depth (logits, left) and per layer in the deepest network (right, ``k`` =
  lossy steps before the layer)."""
  plt = _plt()
  ss = [s for s in summary if s["method"] == "alsh"
        and s["activation"] == activation and s["training"] == training]
  labels = list(dict.fromkeys(s["variant"] for s in ss))
  colors = _family_colors(labels)
  fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12, 4.8))
  for label in labels:
    vs = sorted((s for s in ss if s["variant"] == label), key=lambda s: s["depth"])
    d = np.array([s["depth"] for s in vs])
    ax.errorbar(d, [s["logits_err_ratio"] for s in vs],
                yerr=[s["logits_err_ratio_std"] for s in vs], marker="o", ms=3,
                capsize=2, color=colors[label], label=label)
    c = _median_finite(s["c"] for s in vs)
    if c > 0:
      ax.plot(d, theory.error_ratio(c, d), "--", color=colors[label], alpha=0.7)
    deep = vs[-1]
    layer = np.arange(1, deep["depth"] + 2)
    ax2.plot(layer, np.maximum(deep["err_ratio"], 1e-12), marker="o", ms=3,
             color=colors[label], label=label)
    if deep["c"] > 0:
      # Hidden layer l has l-1 lossy steps before it; the logits have d.
      ax2.plot(layer, np.maximum(theory.error_ratio(deep["c"], layer - 1), 1e-12),
               "--", color=colors[label], alpha=0.7)
  for a in (ax, ax2):
    a.set_yscale("log")
    a.grid(alpha=0.3, which="both")
    a.set_ylabel("||a - abar|| / ||abar|| (computed nodes)")
  ax.set_xlabel("hidden layers d (logits)")
  ax2.set_xlabel("layer of the deepest network (last: logits)")
  ax.set_title("measured (solid) vs theorem for measured c (dashed)")
  ax2.set_title("per layer; layer 1 is exact on its active set")
  if labels:
    ax.legend(fontsize=7)
  fig.suptitle(title or f"ALSH-APPROX vs theorem: {activation}, {training}")
  fig.tight_layout()
  experiment._save(fig, path)  # pylint: disable=protected-access


def plot_name(kind: str, activation: str, training: str) -> str:
  return f"{kind}_{activation}_{training}.png"
