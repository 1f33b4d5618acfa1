"""The method registry: a method's name maps to how it is built and trained.

A method is one registry entry, a :class:`MethodSpec`: its name, a typed
options class (a :class:`MethodConfig`, whose fields every entry point
exposes as absl flags) and a builder of its :class:`MethodImpl`.  The
training loop, the entry points, the benchmark and the error analysis talk
only to these, so registering a method is the whole of adding it.  The
built-in methods are the modules of :mod:`sampling_mlp.methods`, imported on
the first lookup, together with the modules named in
``$SAMPLING_MLP_METHODS`` (comma-separated); a method registered anywhere
else (a test, a notebook) works the same way.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import pkgutil
from typing import Any, Callable, ClassVar, Mapping, Optional

import jax
import jax.numpy as jnp
from flax import nnx, struct
import optax

from sampling_mlp import layers
from sampling_mlp.optim import OptimConfig


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Shape of the MLP: ``depth`` hidden layers of width ``hidden``.

  ``bias``: whether every layer has a bias (this project's default);
  ``weight_norm``: whether every layer is weight-normalised (Salimans and
  Kingma 2016; ``layers.weight_norm``), its ``v`` and ``g`` trained by the
  optimizer.  The authors' code has no bias and weight normalisation
  (:data:`AUTHORS_NETWORK`).
  """

  input_dim: int
  num_classes: int
  hidden: int = 1000
  depth: int = 3
  activation: str = "leaky_relu"
  bias: bool = True
  weight_norm: bool = False

  def __post_init__(self):
    layers.check_activation(self.activation)
    layers.layer_sizes(input_dim=self.input_dim, hidden=self.hidden,
                       depth=self.depth, num_classes=self.num_classes)

  @property
  def sizes(self) -> tuple[int, ...]:
    return layers.layer_sizes(input_dim=self.input_dim, hidden=self.hidden,
                              depth=self.depth, num_classes=self.num_classes)

  @property
  def network(self) -> dict[str, bool]:
    """``bias`` and ``weight_norm``, the keywords of every layer module."""
    return {"bias": self.bias, "weight_norm": self.weight_norm}


# The layers of this project's default network and of the authors' code
# (every layer bias-free and wrapped in ``torch.nn.utils.weight_norm``).
NETWORKS = {"default": {"bias": True, "weight_norm": False},
            "authors": {"bias": False, "weight_norm": True}}
AUTHORS_NETWORK = NETWORKS["authors"]


# -- typed options --------------------------------------------------------------


def option(default: Any, help: str, *,  # pylint: disable=redefined-builtin
           choices: Optional[tuple[str, ...]] = None,
           check: Optional[Callable[[Any], Optional[str]]] = None):
  """A field of a :class:`MethodConfig`, exposed as a flag.

  Args:
    default: the default value; its type sets the flag's type.
    help: one line of help.
    choices: the allowed values of a string option (an enum flag).
    check: ``check(value)`` returns why a value is bad, or None.
  """
  return dataclasses.field(default=default, metadata=dict(
      help=help, choices=choices, check=check))


@dataclasses.dataclass(frozen=True)
class Option:
  """One method option as a flag ``--name`` (``attr`` on the config)."""

  name: str
  attr: str
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


@dataclasses.dataclass(frozen=True)
class MethodConfig:
  """Base of a method's options: a frozen dataclass of :func:`option` fields.

  Field ``attr`` is the flag ``--{prefix}{attr}``; values are validated on
  construction, so a config that exists is valid.
  """

  prefix: ClassVar[str] = ""

  def __post_init__(self):
    for opt in self.options():
      opt.validate(getattr(self, opt.attr))

  @classmethod
  def options(cls) -> tuple[Option, ...]:
    return tuple(
        Option(cls.prefix + f.name, f.name, f.default, f.metadata["help"],
               f.metadata["choices"], f.metadata["check"])
        for f in dataclasses.fields(cls))

  @classmethod
  def from_flags(cls, values: Mapping[str, Any] | None = None):
    """The config from flag values (``{flag name: value}``); missing flags
    take their defaults and flags of other methods are ignored."""
    values = values or {}
    return cls(**{o.attr: values[o.name] for o in cls.options()
                  if o.name in values})

  def flags(self) -> dict[str, Any]:
    """``{flag name: value}``, the inverse of :meth:`from_flags`."""
    return {o.name: getattr(self, o.attr) for o in self.options()}


@dataclasses.dataclass(frozen=True)
class NoOptions(MethodConfig):
  """The config of a method without options."""


# -- the built method -------------------------------------------------------------


@struct.dataclass
class TrainState:
  """Everything a training step carries: a pure view of the method's model.

  A state belongs to the method that made it: its graphdef holds the
  method's static settings (sample sizes, budgets), so another method's
  step must not be given it.

  Attributes:
    graphdef: the NNX model's structure (static: part of the pytree's
      definition, so jit and scan see it as a constant).
    model: ``nnx.State``, the model's arrays: parameters and the method's
      own state (hash tables, ALSH's parameter-and-moment slabs).
    opt_state: the optimizer's state (Optax, ``optim.LazyState``, or an
      update count).
    step: [] int32 global step, folded into the step key.
  """

  graphdef: Any = struct.field(pytree_node=False)
  model: Any
  opt_state: Any
  step: jax.Array

  def view(self) -> nnx.Module:
    """The model as a module (``nnx.merge``); inside jit this costs
    nothing at run time."""
    return nnx.merge(self.graphdef, self.model)


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Mean softmax cross-entropy over the batch (log-softmax over classes)."""
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def exact_step_flops(sizes, batch_size: int) -> int:
  """Multiply-adds of exact forward + backward: per layer ``B n m`` forward,
  ``B n m`` for the weight gradient, and ``B n m`` for the input gradient
  (except the first layer, whose input needs no gradient)."""
  total = 0
  for i, (n, m) in enumerate(zip(sizes[:-1], sizes[1:])):
    total += batch_size * n * m * (2 if i == 0 else 3)
  return total


def optimizer_floats(optim_name: str) -> int:
  """Floats an optimizer moves per updated parameter: Adam reads the
  parameter, its two moments and its gradient and writes three (7); SGD
  reads two and writes one (3)."""
  return 7 if optim_name == "adam" else 3


def exact_step_traffic(sizes, batch_size: int, optim_name: str) -> int:
  """Floats the exact step moves through memory in weight-sized arrays: per
  layer ``n m`` read by the forward product, ``n m`` written as the weight
  gradient, ``n m`` read again by the input gradient (not the first
  layer's), and the optimizer's :func:`optimizer_floats` per weight.
  Activations ([B, n]; ``B / m`` times smaller) are left out."""
  del batch_size  # the weight-sized traffic does not depend on it
  total = 0
  for i, (n, m) in enumerate(zip(sizes[:-1], sizes[1:])):
    total += n * m * ((2 if i == 0 else 3) + optimizer_floats(optim_name))
  return total


def zero_step() -> jax.Array:
  return jnp.zeros([], jnp.int32)


class MethodImpl:
  """A built method: pure functions of arrays, static settings on ``self``.

  Subclasses implement :meth:`build_model`, :meth:`init_optimizer` and
  :meth:`train_step`; the rest has defaults that fit every method whose
  layer modules follow :class:`sampling_mlp.model.Layer`.
  """

  saves_compute: ClassVar[str] = "n/a"

  def __init__(self, model: ModelConfig, optim: OptimConfig,
               config: MethodConfig):
    self.model = model
    self.optim = optim
    self.config = config

  # -- state ------------------------------------------------------------------
  def build_model(self, key: jax.Array, params: layers.Params) -> nnx.Module:
    """The method's :class:`sampling_mlp.model.MLP` from standard-layout
    ``params``; ``key`` draws whatever the method draws once (hashes)."""
    raise NotImplementedError

  def init_optimizer(self, model: nnx.Module) -> Any:
    raise NotImplementedError

  def init(self, key: jax.Array, params: layers.Params) -> TrainState:
    """The training state of a network with standard-layout ``params``."""
    model = self.build_model(key, params)
    opt_state = self.init_optimizer(model)
    graphdef, arrays = nnx.split(model)
    return TrainState(graphdef, arrays, opt_state, zero_step())

  def params_of(self, state: TrainState) -> layers.Params:
    """The weights in the standard layout (a tuple of LayerParams)."""
    return state.view().params()

  # -- training ---------------------------------------------------------------
  def step_randomness(self, key: jax.Array, batch_size: int) -> Any:
    """What :meth:`train_step` consumes of its step key (default: the key).

    The training loop draws this for all of an epoch's steps at once,
    vectorised, before its loop over steps (a method needing a few random
    bits per step then pays for no PRNG call inside the loop).
    """
    del batch_size
    return key

  def train_step(self, state: TrainState, x: jax.Array, y: jax.Array,
                 rand: Any) -> tuple[TrainState, dict]:
    """One step on ``x`` [B, D], ``y`` [B] with ``rand`` from
    :meth:`step_randomness`; returns metrics including 'loss'."""
    raise NotImplementedError

  def steps_per_call(self, batch_size: int) -> int:
    """How many consecutive steps :meth:`train_steps` takes at once (the
    training loop groups its steps so); 1, the default, is one
    :meth:`train_step` at a time.  A method whose steps run faster together
    (ALSH's HOGWILD threads at batch size 1) returns more."""
    del batch_size
    return 1

  def train_steps(self, state: TrainState, xs: jax.Array, ys: jax.Array,
                  rands: Any) -> tuple[TrainState, dict]:
    """:meth:`steps_per_call` consecutive steps on ``xs`` [k, B, D], ``ys``
    [k, B] with ``rands`` stacked on a leading axis of k; returns the
    per-step metrics stacked the same way.  The default is
    :meth:`train_step` k times, in order."""
    return jax.lax.scan(lambda st, b: self.train_step(st, *b), state,
                        (xs, ys, rands))

  def end_epoch(self, state: TrainState, key: jax.Array) -> TrainState:
    """Work done once per epoch, inside jit (e.g. ALSH's table rebuild)."""
    del key
    return state

  # -- evaluation and analysis -------------------------------------------------
  def predict(self, state: TrainState, x: jax.Array) -> jax.Array:
    """Logits used for evaluation: exact (all nodes) by default."""
    return layers.mlp_apply(self.params_of(state), x,
                            activation=self.model.activation)

  def approx_forward(self, state: TrainState, x: jax.Array,
                     key: jax.Array) -> list[layers.LayerOut]:
    """The training-time forward pass of a batch ``x`` [B, D], one
    :class:`layers.LayerOut` per layer (the logits last), with the
    randomness of a training step drawn from ``key``."""
    return state.view().forward(self.step_randomness(key, x.shape[0]), x)

  # Whether the training loop also reports the diagnostics of the state
  # before end_epoch's work (suffixed ``train.BEFORE_END``): for a method
  # whose end-of-epoch work changes what they measure (ALSH's rebuild).
  diagnose_before_end = False

  def diagnostics(self, state: TrainState, x: jax.Array, key: jax.Array, *,
                  batch_size: int) -> dict:
    """Per-epoch diagnostics on a sample ``x`` of examples (scalars or
    per-layer vectors); ``batch_size`` is the training batch size."""
    del state, x, key, batch_size
    return {}

  # -- cost ---------------------------------------------------------------------
  def step_flops(self, batch_size: int) -> int:
    """Multiply-adds of one training step (all its matrix products)."""
    return exact_step_flops(self.model.sizes, batch_size)

  def exact_flops(self, batch_size: int) -> int:
    """Multiply-adds of the exact step of the same model (the reference
    of ``flops_fraction``)."""
    return exact_step_flops(self.model.sizes, batch_size)

  def step_traffic(self, batch_size: int) -> int | None:
    """Floats one step moves through memory in weight-sized arrays (see
    :func:`exact_step_traffic`), or None where the method does not count
    them.  The default is the exact step's, for methods whose products are
    the exact step's (those that keep the default :meth:`step_flops`)."""
    if type(self).step_flops is not MethodImpl.step_flops:
      return None
    return exact_step_traffic(self.model.sizes, batch_size, self.optim.name)


@dataclasses.dataclass(frozen=True)
class MethodSpec:
  """A registry entry.

  Attributes:
    name: the ``--method`` value.
    build: ``build(model, optim, config) -> MethodImpl``.
    config: the method's :class:`MethodConfig` class.
    analysis_grid: the option values the error analysis sweeps by default,
      ``{flag: values}`` (every combination is measured).
    keep_all: option values under which the method computes every product
      exactly (it must then train as STANDARD does; the tests hold it to
      that), or None if it has no such setting.
    summary: one line for help texts (default: the first paragraph of
      ``build``'s docstring).
    paper_batch_size: the batch size ``--scale=paper`` trains the method at
      when ``--batch_size`` is not given (the paper's, where a run here
      finishes in reasonable time); None: ``--batch_size``.
  """

  name: str
  build: Callable[[ModelConfig, OptimConfig, Any], MethodImpl]
  config: type = NoOptions
  analysis_grid: Mapping[str, tuple] = dataclasses.field(default_factory=dict)
  keep_all: Mapping[str, Any] | None = None
  summary: str = ""
  paper_batch_size: int | None = None

  def __post_init__(self):
    if not self.summary:
      doc = (getattr(self.build, "__doc__", None) or self.name).strip()
      object.__setattr__(self, "summary", " ".join(doc.split("\n\n")[0].split()))

  @property
  def options(self) -> tuple[Option, ...]:
    return self.config.options()

  def make_config(self, values: Mapping[str, Any] | MethodConfig | None = None):
    """The method's config from flag values (others' are ignored)."""
    if isinstance(values, MethodConfig):
      if not isinstance(values, self.config):
        raise ValueError(f"method {self.name!r} takes a "
                         f"{self.config.__name__}, got {type(values).__name__}")
      return values
    return self.config.from_flags(values)

  def make(self, model: ModelConfig, optim: OptimConfig,
           values: Mapping[str, Any] | MethodConfig | None = None
           ) -> MethodImpl:
    """The method built for ``model``: an MLP's :class:`ModelConfig`, or
    another model's config, which builds the method's variant for itself
    (its ``build_method(spec, optim, config)``; see
    :class:`sampling_mlp.cnn.CNNConfig`)."""
    config = self.make_config(values)
    build_method = getattr(model, "build_method", None)
    if build_method is not None:
      return build_method(self, optim, config)
    return self.build(model, optim, config)


_REGISTRY: dict[str, MethodSpec] = {}
_loaded = False


def register(spec: MethodSpec) -> MethodSpec:
  """Adds ``spec``; registering the same spec again is a no-op."""
  old = _REGISTRY.get(spec.name)
  if old is not None and old is not spec:
    raise ValueError(f"method {spec.name!r} is already registered")
  _REGISTRY[spec.name] = spec
  return spec


def unregister(name: str) -> None:
  """Removes a method (for tests that register their own)."""
  _REGISTRY.pop(name, None)


# Modules of methods defined outside the package, imported with the
# built-ins: a comma-separated list of importable module names.
PLUGINS_ENV_VAR = "SAMPLING_MLP_METHODS"


def _load_builtins() -> None:
  global _loaded
  if _loaded:
    return
  _loaded = True
  from sampling_mlp import methods  # pylint: disable=import-outside-toplevel
  # STANDARD first: it is the reference every listing starts from.
  for info in sorted(pkgutil.iter_modules(methods.__path__),
                     key=lambda i: i.name != "standard"):
    importlib.import_module(f"{methods.__name__}.{info.name}")
  for name in os.environ.get(PLUGINS_ENV_VAR, "").split(","):
    if name.strip():
      try:
        importlib.import_module(name.strip())
      except ImportError as e:
        raise ImportError(f"${PLUGINS_ENV_VAR} names module {name.strip()!r}, "
                          f"which cannot be imported: {e}") from e


def _rank(spec: MethodSpec) -> int:
  """STANDARD first, then the built-in methods, then any others."""
  if spec.name == "standard":
    return 0
  module = getattr(spec.build, "__module__", "") or ""
  return 1 if module.startswith("sampling_mlp.methods") else 2


def names() -> tuple[str, ...]:
  """Every registered method: STANDARD, the built-ins in the order their
  modules register them, then methods registered elsewhere."""
  _load_builtins()
  return tuple(sorted(_REGISTRY, key=lambda n: _rank(_REGISTRY[n])))


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
