"""The method registry: a method name maps to how its training step is built.

A method is one module (``standard.py``, ``mc.py``, ``alsh.py``, ...) that calls
:func:`register` with a :class:`MethodSpec`.  The spec lists the method's own
options (which the experiment entry points turn into absl flags) and a
``build`` function returning a :class:`MethodImpl`.  The training loop
(:mod:`sampling_mlp.train`) only talks to ``MethodImpl``, so adding a method
touches no training-loop or entry-point code: write the module, add its name
to ``_BUILTIN_MODULES``.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any, Callable, Mapping, NamedTuple, Optional

import jax
import jax.numpy as jnp
import optax

from sampling_mlp import layers
from sampling_mlp.optim import OptimConfig


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Shape of the MLP: ``depth`` hidden layers of width ``hidden``."""

  input_dim: int
  num_classes: int
  hidden: int = 1000
  depth: int = 3
  activation: str = "leaky_relu"

  def __post_init__(self):
    layers.check_activation(self.activation)
    layers.layer_sizes(input_dim=self.input_dim, hidden=self.hidden,
                       depth=self.depth, num_classes=self.num_classes)

  @property
  def sizes(self) -> tuple[int, ...]:
    return layers.layer_sizes(input_dim=self.input_dim, hidden=self.hidden,
                              depth=self.depth, num_classes=self.num_classes)


class TrainState(NamedTuple):
  """Everything a training step carries.

  Attributes:
    params: tuple of LayerParams.
    opt_state: the optimizer's state (Optax or LazyState).
    method_state: method-specific arrays (e.g. ALSH hash tables); () if none.
    step: [] int32 global step, folded into the step key.
  """

  params: Any
  opt_state: Any
  method_state: Any
  step: jax.Array


@dataclasses.dataclass(frozen=True)
class Option:
  """One hyperparameter of a method, exposed as an absl flag ``--name``.

  Attributes:
    name: flag name (prefixed by the method, e.g. ``mc_ratio``).
    default: default value; its type sets the flag type.
    help: one-line help.
    choices: allowed values for string options (an enum flag).
    check: returns an error message for a bad value, or None.
  """

  name: str
  default: Any
  help: str
  choices: Optional[tuple[str, ...]] = None
  check: Optional[Callable[[Any], Optional[str]]] = None

  def validate(self, value) -> None:
    kind = type(self.default)
    ok = (isinstance(value, bool) if kind is bool else
          isinstance(value, int) and not isinstance(value, bool)
          if kind is int else
          isinstance(value, (int, float)) and not isinstance(value, bool)
          if kind is float else isinstance(value, kind))
    if not ok:
      raise ValueError(f"--{self.name}={value!r}: expected a "
                       f"{kind.__name__}, like the default {self.default!r}")
    if self.choices is not None and value not in self.choices:
      raise ValueError(f"--{self.name}={value!r} is not one of "
                       f"{', '.join(map(str, self.choices))}")
    if self.check is not None:
      err = self.check(value)
      if err:
        raise ValueError(f"--{self.name}={value!r}: {err}")


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Mean softmax cross-entropy over the batch (log-softmax over classes)."""
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


class MethodImpl:
  """A built method: pure functions of arrays; static config on ``self``.

  Subclasses implement :meth:`init` and :meth:`train_step`; the defaults give
  exact evaluation and no per-epoch work.
  """

  def __init__(self, model: ModelConfig, optim: OptimConfig,
               config: Mapping[str, Any]):
    self.model = model
    self.optim = optim
    self.config = dict(config)

  # -- training ------------------------------------------------------------
  def init(self, key: jax.Array, params) -> TrainState:
    raise NotImplementedError

  def train_step(self, state: TrainState, x: jax.Array, y: jax.Array,
                 key: jax.Array) -> tuple[TrainState, dict]:
    """One step on a batch ``x`` [B, D], ``y`` [B]; returns metrics with 'loss'.

    ``key`` is the step's key, or what :meth:`step_randomness` drew from it
    (the training loop passes the latter).
    """
    raise NotImplementedError

  def step_randomness(self, key: jax.Array, batch_size: int) -> Any:
    """What :meth:`train_step` consumes of its step key (default: the key).

    The training loop draws this for all of an epoch's steps at once,
    vectorised, before its loop over steps, so that a method needing only a
    few random bits per step (ALSH-APPROX's tie-breaking seeds) does not pay
    for a PRNG call inside the loop: on XLA's CPU backend each threefry call
    is a rolled loop of small kernels, several microseconds.  A method that
    overrides this must accept both a key and its result in train_step.
    """
    del batch_size
    return key

  def end_epoch(self, state: TrainState, key: jax.Array) -> TrainState:
    """Work done once per epoch, inside jit (e.g. ALSH's table rebuild)."""
    del key
    return state

  # -- evaluation ----------------------------------------------------------
  def predict(self, state: TrainState, x: jax.Array) -> jax.Array:
    """Logits used for evaluation: exact (all nodes) by default."""
    return layers.mlp_apply(state.params, x,
                            activation=self.model.activation)

  def diagnostics(self, state: TrainState, x: jax.Array,
                  key: jax.Array) -> dict:
    """Per-epoch diagnostics on a sample of examples; scalars or lists."""
    del state, x, key
    return {}

  # -- cost ----------------------------------------------------------------
  def step_flops(self, batch_size: int) -> int:
    """Multiply-adds of the matrix products in one training step."""
    return exact_step_flops(self.model.sizes, batch_size)

  saves_compute: str = "n/a"
  # Set by the training loop before compiling; methods whose diagnostics
  # depend on the batch composition (MC-APPROX) read it.
  train_batch_size: int | None = None


def exact_step_flops(sizes, batch_size: int) -> int:
  """Multiply-adds of exact forward + backward: per layer ``B n m`` forward,
  ``B n m`` for the weight gradient, and ``B n m`` for the input gradient
  (except the first layer, whose input needs no gradient)."""
  total = 0
  for i, (n, m) in enumerate(zip(sizes[:-1], sizes[1:])):
    total += batch_size * n * m * (2 if i == 0 else 3)
  return total


@dataclasses.dataclass(frozen=True)
class MethodSpec:
  """A registry entry.

  Attributes:
    name: the ``--method`` value.
    summary: one line for help texts and tables.
    build: ``build(model, optim, config) -> MethodImpl``.
    options: the method's hyperparameters (absl flags).
    saves_compute: honest one-line statement of whether training skips work.
  """

  name: str
  summary: str
  build: Callable[[ModelConfig, OptimConfig, Mapping[str, Any]], MethodImpl]
  options: tuple[Option, ...] = ()
  saves_compute: str = ""

  def config(self, values: Mapping[str, Any] | None = None) -> dict:
    """The method's config: defaults overridden by ``values`` (extra keys are
    ignored, so a flag dictionary of every method can be passed), validated."""
    values = values or {}
    out = {}
    for opt in self.options:
      v = values.get(opt.name, opt.default)
      opt.validate(v)
      out[opt.name] = v
    return out

  def make(self, model: ModelConfig, optim: OptimConfig,
           values: Mapping[str, Any] | None = None) -> MethodImpl:
    impl = self.build(model, optim, self.config(values))
    impl.saves_compute = self.saves_compute
    return impl


_REGISTRY: dict[str, MethodSpec] = {}
# Modules that register the built-in methods, imported on first lookup.
_BUILTIN_MODULES = ("standard", "mc", "alsh", "dropout")


def register(spec: MethodSpec) -> MethodSpec:
  if spec.name in _REGISTRY and _REGISTRY[spec.name] is not spec:
    raise ValueError(f"method {spec.name!r} is already registered")
  _REGISTRY[spec.name] = spec
  return spec


def _load_builtins() -> None:
  for mod in _BUILTIN_MODULES:
    try:
      importlib.import_module(f"sampling_mlp.{mod}")
    except ModuleNotFoundError as e:
      if e.name != f"sampling_mlp.{mod}":
        raise


def names() -> tuple[str, ...]:
  _load_builtins()
  return tuple(_REGISTRY)


def get(name: str) -> MethodSpec:
  """The spec registered as ``name``; a clear error lists the known ones."""
  _load_builtins()
  if name not in _REGISTRY:
    raise ValueError(f"unknown method {name!r}; known methods: "
                     f"{', '.join(_REGISTRY)}")
  return _REGISTRY[name]


def all_options() -> tuple[Option, ...]:
  """Every registered method's options (for defining flags once)."""
  _load_builtins()
  seen = {}
  for spec in _REGISTRY.values():
    for opt in spec.options:
      seen.setdefault(opt.name, opt)
  return tuple(seen.values())


def zero_step() -> jax.Array:
  return jnp.zeros([], jnp.int32)
