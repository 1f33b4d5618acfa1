"""How the approximate forward passes' errors grow with depth, measured.

Companion of :mod:`sampling_mlp.theory` (the ALSH-APPROX negative result).
The theorem says that with linear activations, if every node's active part
is ``c`` times its inactive part, the approximate activation's error ratio
``e / abar`` grows as ``((c+1)/c)^k - 1`` with depth ``k``.  Here the same
question is asked of real networks, for any registered method: push a batch
of real inputs through the exact network and through the method's
training-time forward pass (``MethodImpl.approx_forward``, run one jitted
layer at a time), and measure per layer

* ``rel_err``: ``||abar - a||_F / ||a||_F`` over the evaluation batch
  (``a`` exact, ``abar`` approximate activations; the last entry is the
  logits);
* ``top1``: the fraction of examples whose approximate top-1 class is the
  exact one;
* for methods that compute a subset of each layer's nodes (their layers
  report ``computed``: ALSH-APPROX, Dropout), the theorem's own quantity and
  condition: ``err_ratio`` ``= ||a - abar|| / ||abar||`` over the computed
  nodes (all logits), and the effective ``c`` (active part over inactive
  part of each node's sum, :func:`theory.effective_c`) of every step that
  reads a subset of the previous layer.

Under the theorem's assumption the two error measures are tied:
``a = r^k abar`` with ``r = (c+1)/c``, so ``err_ratio = r^k - 1``
(:func:`theory.error_ratio`) and ``rel_err = 1 - r^-k``
(``error_report.theorem_relative_error``), on the nodes that are computed.

What is measured (:class:`Variant`): a registered method with some of its
options set; by default every combination of the values in the method's
``MethodSpec.analysis_grid``.  Networks are freshly initialised or trained
for a few epochs with exact training (STANDARD); each variant is then
applied to the same weights (``impl.init(key, params)``: ALSH-APPROX draws
fresh hash tables per key), so the measurement isolates the forward pass's
error from training dynamics.  The evaluation batch runs in batches of
``eval_batch`` examples, each with its own key (MC-APPROX's estimate depends
on the batch: its probabilities use the batch's column norms).

Summaries, tables and plots of the results are in
:mod:`sampling_mlp.error_report`.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
import time
import zlib
from typing import Any, Mapping, Sequence

from absl import logging
import jax
import jax.numpy as jnp
from flax import nnx
import numpy as np

from sampling_mlp import layers, registry, theory, train
from sampling_mlp import model as model_lib
from sampling_mlp.optim import OptimConfig

DEFAULT_METHODS = ("alsh", "mc", "dropout")


# ---------------------------------------------------------------------------
# What is measured.


@dataclasses.dataclass(frozen=True)
class Variant:
  """One approximate forward pass to measure: a method with options.

  Attributes:
    method: a registered method's name.
    label: short unique name used in tables, plots and rows.
    options: sorted ``(flag, value)`` pairs of the method's options.
  """

  method: str
  label: str
  options: tuple = ()

  @property
  def config(self) -> dict:
    return dict(self.options)

  @property
  def key_salt(self) -> int:
    """A stable per-variant integer (adding variants changes no other key)."""
    return zlib.crc32(self.label.encode()) & 0x7FFFFFFF


def variant(method: str, **options) -> Variant:
  """``method`` with the given options (flags), validated now, not mid-run;
  the label names the options given."""
  spec = registry.get(method)
  spec.make_config(options)
  known = {o.name: o for o in spec.options}
  bad = sorted(set(options) - set(known))
  if bad:
    raise ValueError(f"method {method!r} has no option(s) {', '.join(bad)}; "
                     f"its options: {', '.join(known) or 'none'}")
  label = " ".join([method] + [f"{known[k].attr}={v:g}" if isinstance(v, float)
                               else f"{known[k].attr}={v}"
                               for k, v in options.items()])
  return Variant(method, label, tuple(sorted(options.items())))


def method_variants(method: str, grid: Mapping[str, Sequence] | None = None,
                    base: Mapping[str, Any] | None = None) -> list[Variant]:
  """Every combination of ``grid`` (default: the method's
  ``analysis_grid``), on top of the option values in ``base``.

  Args:
    method: a registered method.
    grid: ``{flag: values}``; flags the method does not have are ignored.
    base: ``{flag: value}`` for every variant (e.g. the command line's);
      flags the method does not have are ignored.
  """
  spec = registry.get(method)
  names = {o.name for o in spec.options}
  grid = dict(spec.analysis_grid if grid is None else grid)
  grid = {k: tuple(v) for k, v in grid.items() if k in names}
  base = {k: v for k, v in (base or {}).items() if k in names and k not in grid}
  if not grid:
    return [dataclasses.replace(variant(method, **base), label=method)]
  out = []
  for values in itertools.product(*grid.values()):
    opts = dict(zip(grid, values))
    v = variant(method, **opts)
    out.append(Variant(method, v.label, tuple(sorted({**base, **opts}.items()))))
  return out


def default_variants(methods: Sequence[str] = DEFAULT_METHODS,
                     grid: Mapping[str, Sequence] | None = None,
                     base: Mapping[str, Any] | None = None) -> list[Variant]:
  """:func:`method_variants` of every method; a ``grid`` entry overrides the
  method's own grid for that option, and one that no method has is an
  error."""
  if grid:
    known = {o.name for m in methods for o in registry.get(m).options}
    bad = sorted(set(grid) - known)
    if bad:
      raise ValueError(f"--grid names option(s) {', '.join(bad)} that none of "
                       f"{', '.join(methods)} has")
  out = []
  for m in methods:
    own = dict(registry.get(m).analysis_grid)
    own.update({k: v for k, v in (grid or {}).items()})
    out += method_variants(m, own, base)
  labels = [v.label for v in out]
  if len(set(labels)) != len(labels):
    raise ValueError(f"duplicate variants: {labels}")
  return out


def parse_grid(entries: Sequence[str]) -> dict[str, tuple]:
  """``["mc_ratio=0.1,0.5", ...]`` -> ``{"mc_ratio": (0.1, 0.5), ...}``,
  each value parsed by its option's type (any registered method's)."""
  options = {o.name: o for o in registry.all_options()}
  out = {}
  for entry in entries:
    name, sep, values = entry.partition("=")
    name = name.strip().lstrip("-")
    if not sep or not values.strip():
      raise ValueError(f"--grid={entry!r}: write OPTION=V1,V2,... (e.g. "
                       "mc_ratio=0.1,0.5)")
    if name not in options:
      raise ValueError(f"--grid={entry!r}: no method has an option {name!r}; "
                       f"options: {', '.join(options)}")
    kind = type(options[name].default)
    parse = ((lambda v: v.lower() in ("1", "true", "yes")) if kind is bool
             else kind)
    try:
      vals = tuple(parse(v.strip()) for v in values.split(","))
    except ValueError:
      raise ValueError(f"--grid={entry!r}: values of {name} must be "
                       f"{kind.__name__}s") from None
    for v in vals:
      options[name].validate(v)
    out[name] = vals
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
  every ``epochs`` starts from those same weights (``train.RunKeys``), and
  the epochs are the training loop's own (``train.epochs``).

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
  if epochs == 0:
    return train.init_params(impl, keys)
  n = len(dataset.train.x)
  if n < batch_size:
    raise ValueError(f"batch_size {batch_size} exceeds the {n} training "
                     "examples; lower it or raise max_train.")
  for ep in train.epochs(impl, jnp.asarray(dataset.train.x),
                         jnp.asarray(dataset.train.y), keys=keys,
                         batch_size=batch_size, num_epochs=epochs):
    state = ep.state
  return jax.block_until_ready(impl.params_of(state))


# ---------------------------------------------------------------------------
# Forward passes, one jitted layer at a time.
#
# Compiling a whole depth-d pass costs seconds per (variant, depth), which
# dominated the runtime on the project's 2-core machine.  Every hidden
# layer after the first has the same structure at every depth, so each layer
# is jitted on its own, keyed by its module's static structure (its
# ``nnx.GraphDef``): it compiles once per (variant, layer structure) and is
# reused for every depth, network and key.


@functools.partial(jax.jit, static_argnums=0)
def _layer_call(graphdef, arrays, rand, carry):
  """One layer module's forward pass on each of ``nb`` batches (vmapped);
  ``aux`` (gathered blocks) is dropped so that it is never materialised."""
  layer = nnx.merge(graphdef, arrays)
  out, carry = jax.vmap(lambda r, c: layer(r, c))(rand, carry)
  return out._replace(aux=None), carry


def _jitted(layer, rand, carry, delta):
  del delta
  graphdef, arrays = nnx.split(layer)
  return _layer_call(graphdef, arrays, rand, carry)


def approx_layers(impl: registry.MethodImpl, state: registry.TrainState,
                  x: jax.Array, key: jax.Array, *, eval_batch: int):
  """``impl.approx_forward`` on batches of ``eval_batch``, layer by layer.

  The numbers of ``impl.approx_forward(state, x_b, k_b)`` for the batches
  ``x_b`` of ``x`` and ``k_b = split(key, num_batches)``.

  Yields:
    Per layer a :class:`layers.LayerOut` over all of ``x`` (``aux`` None).
  """
  b = x.shape[0]
  mb = min(eval_batch, b)
  if b % mb:
    raise ValueError(f"the {b} evaluation examples must be a multiple of "
                     f"eval_batch={eval_batch} (each batch is one pass).")
  nb = b // mb
  rand = jax.vmap(lambda k: impl.step_randomness(k, mb))(
      jax.random.split(key, nb))
  flat = lambda t: None if t is None else t.reshape((b,) + t.shape[2:])
  for out in state.view().iterate(rand, jnp.asarray(x).reshape(nb, mb, -1),
                                  call=_jitted):
    yield layers.LayerOut(flat(out.z), flat(out.a), flat(out.computed))


def exact_forward(params: layers.Params, x: jax.Array, *,
                  activation: str) -> list[jax.Array]:
  """Exact activations of every hidden layer, then the logits ([B, n_k]):
  the exact network's forward pass (``model.dense_mlp``), one jitted layer
  at a time."""
  mlp = model_lib.dense_mlp(params, activation=activation)
  return [out.a[0] for out in mlp.iterate(None, jnp.asarray(x)[None],
                                          call=_jitted)]


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
                    num_keys: int = 3, eval_batch: int = 64,
                    model: registry.ModelConfig | None = None) -> list[dict]:
  """Every variant's errors on one network, one row per (variant, key).

  Args:
    params: standard params of the network.
    x: [B, D] evaluation inputs; y: [B] their labels.
    activation: the network's hidden activation.
    variants: what to measure.
    key: base key; variant ``v`` uses ``fold_in(key, v.key_salt)`` split into
      ``num_keys`` keys (the repetitions), each split into the key of the
      method's state (``impl.init``) and of its forward pass.
    num_keys: repetitions per variant (the spread).
    eval_batch: examples per forward pass.
    model: the network's ModelConfig (derived from ``params`` if None).

  Returns:
    Rows with ``variant``, ``method``, ``key``, ``depth``, ``config``,
    per-layer lists ``rel_err`` (hidden layers then logits),
    ``logits_rel_err``, ``top1``, ``exact_accuracy``, ``approx_accuracy``,
    ``seconds`` (the pass and its metrics), and for methods that compute a
    subset of nodes ``err_ratio`` (per layer, ``||a - abar|| / ||abar||`` on
    the computed nodes; all logits), ``logits_err_ratio``, ``effective_c``
    and ``c_positive`` (per step that reads a subset: ``depth`` of them),
    ``active_fraction`` (of the first hidden layer).
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
    impl = registry.get(v.method).make(model, OptimConfig(), v.config)
    keys = jax.random.split(jax.random.fold_in(key, v.key_salt), num_keys)
    for k in range(num_keys):
      t0 = time.perf_counter()
      k_init, k_fwd = jax.random.split(keys[k])
      state = impl.init(k_init, params)
      sq, cs, logits, active_fraction = [], [], None, math.nan
      for l, out in enumerate(approx_layers(impl, state, x, k_fwd,
                                            eval_batch=eval_batch)):
        mask = out.computed
        if mask is not None and l < depth:
          # The next layer reads only this layer's computed nodes.
          cs.append(_effective_c(exact[l], params[l + 1].w, mask))
          if l == 0:
            active_fraction = float(jnp.mean(mask))
        sq.append(_sq_norms(out.a, exact[l], True if mask is None else mask))
        logits = out.a
      sq = np.asarray(jnp.stack(sq), np.float64)
      logits = np.asarray(logits)
      seconds = time.perf_counter() - t0
      rel = [_ratio(s[0], s[1]) for s in sq]
      row = dict(variant=v.label, method=v.method, key=k, depth=depth,
                 config=v.config, rel_err=rel, logits_rel_err=rel[-1],
                 top1=top1_agreement(logits, exact_logits),
                 exact_accuracy=exact_acc,
                 approx_accuracy=accuracy(logits, y), seconds=seconds)
      if cs:
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
    max_train: training examples used; max_test: dev and test examples
      kept; eval_examples: test examples pushed through the networks (the
      first ones of the test split).
    depths: hidden-layer counts; hidden: their width.
    activations: hidden activations (the theorem's is ``linear``).
    train_epochs: epochs of exact training for the "trained" networks; 0
      measures only the freshly initialised ones.
    batch_size, learning_rate: exact training's.
    seed: network seed; the method keys derive from it too.
    num_keys: repetitions of every approximate pass.
    variants: what to measure.
    eval_batch: examples per approximate forward pass.
    zero_bias: set every bias to 0 before measuring (the theorem's setting;
      for trained networks this changes the function they compute).
    progress: show a progress bar.
  """

  dataset: str = "mnist_small"
  data_dir: str | None = None
  max_train: int = 2000
  max_test: int | None = None
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
  eval_batch: int = 64
  zero_bias: bool = False
  progress: bool = True

  def __post_init__(self):
    if not self.depths or min(self.depths) < 1:
      raise ValueError(f"depths must be a nonempty list of depths >= 1, got {self.depths}.")
    if self.eval_examples < 1 or self.num_keys < 1 or self.eval_batch < 1:
      raise ValueError("eval_examples, num_keys and eval_batch must be >= 1.")
    if self.train_epochs < 0:
      raise ValueError(f"train_epochs must be >= 0, got {self.train_epochs}.")
    mb = min(self.eval_batch, self.eval_examples)
    if self.eval_examples % mb:
      raise ValueError(f"eval_examples={self.eval_examples} must be a multiple "
                       f"of eval_batch={self.eval_batch} (each batch is one "
                       "forward pass).")
    for a in self.activations:
      layers.check_activation(a)


def trainings(cfg: Config) -> tuple[str, ...]:
  return ("init",) + (("trained",) if cfg.train_epochs > 0 else ())


def run_networks(cfg: Config, dataset) -> list[dict]:
  """Every (activation, training, depth) network, every variant."""
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
                                 num_keys=cfg.num_keys,
                                 eval_batch=cfg.eval_batch, model=model)
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
