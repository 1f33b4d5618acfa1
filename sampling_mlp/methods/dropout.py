"""DROPOUT and ADAPTIVE DROPOUT (standout): the paper's random-subset baselines.

Both methods compute every hidden layer's dense product ``z = a @ w + b`` and
then zero a random subset of its nodes, so they train a random sub-network
per example without skipping any multiply-adds; they are here as accuracy
baselines for the methods that do skip work (ALSH-APPROX, MC-APPROX).

* ``dropout`` (Srivastava et al. 2014): each hidden node of each example is
  kept independently with a fixed probability ``keep_prob``; kept activations
  are divided by ``keep_prob`` ("inverted" dropout) so that
  ``E[a_dropped] = f(z)`` and evaluation uses the exact network unchanged.
  The default ``keep_prob = 0.05`` matches ALSH-APPROX's 5% active set, as
  the paper's authors chose.  Unlike the authors' public code (whose Dropout
  baseline never trained its middle layers), the gradient reaches every
  layer: it flows through the kept nodes of every hidden layer.
* ``adaptive_dropout`` (standout, Ba and Frey 2013): node j is kept with
  probability ``pi_j = sigmoid(alpha * z_j + beta)`` of its own
  pre-activation, with the standout network's weights tied to the main
  network's (Ba and Frey's simplest variant; the authors' code used
  ``alpha = 0.5``, ``beta = 1``).  Training uses ``f(z) * m`` with
  ``m ~ Bernoulli(pi)`` and no rescaling; evaluation uses the expected mask,
  ``f(z) * pi``.

Gradients of standout:

* Training: the sampled mask ``m`` is a constant for backpropagation (no
  gradient flows through a Bernoulli sample), and ``pi`` is computed from
  ``stop_gradient(z)``, so the loss gradient is exactly that of the thinned
  network ``f(z) * m`` with ``m`` fixed.  The keep probabilities are not
  learnt separately: they move only because ``z`` moves with the tied main
  weights.  This is Ba and Frey's tied-weights variant, which does not
  backpropagate through the sampling (no REINFORCE-style or relaxed gradient
  for ``pi``).
* Evaluation (:func:`standout_expected`): ``f(z) * pi`` is an ordinary
  deterministic function and ``pi`` is *not* stopped, so differentiating it
  would include ``d pi / d z``.  It is used for evaluation only, never for
  training.

Both methods report the exact step cost (:func:`registry.exact_step_flops`):
masking a dense product saves no multiply-adds, and standout needs ``z`` for
every node before it can draw the mask.

Keys: the step key is split into one key per hidden layer
(``jax.random.split(key, depth)``, :func:`sampling_mlp.model.split_randomness`);
each is used for one Bernoulli draw.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Any, Optional

import jax
import jax.numpy as jnp

from sampling_mlp import layers, registry
from sampling_mlp import model as model_lib
from sampling_mlp.layers import LayerOut
from sampling_mlp.methods.standard import DenseStep

DEFAULT_KEEP_PROB = 0.05
DEFAULT_STANDOUT_ALPHA = 0.5
DEFAULT_STANDOUT_BETA = 1.0


def keep_prob_error(value: Any) -> Optional[str]:
  """Why ``value`` is not a valid dropout keep probability, or None."""
  if isinstance(value, bool) or not isinstance(value, numbers.Real):
    return (f"keep_prob must be a real number in (0, 1], got "
            f"{type(value).__name__}")
  if not 0.0 < value <= 1.0:
    return ("keep_prob must be in (0, 1] (the fraction of hidden nodes kept; "
            "1 disables dropout, 0.05 matches ALSH's 5% active set)")
  return None


def finite_real_error(value: Any) -> Optional[str]:
  """Why ``value`` is not a finite real number, or None."""
  if isinstance(value, bool) or not isinstance(value, numbers.Real):
    return f"must be a finite real number, got {type(value).__name__}"
  if not math.isfinite(value):
    return "must be a finite real number"
  return None


def _check(name: str, value: Any, error) -> float:
  err = error(value)
  if err:
    raise ValueError(f"{name}={value!r}: {err}")
  return float(value)


# -- the per-layer functions ---------------------------------------------------


def dropout_layer(key: jax.Array, a: jax.Array, layer: layers.LayerParams, *,
                  keep_prob: float, activation: str) -> LayerOut:
  """A hidden layer with inverted dropout.

  Args:
    key: typed key of this layer's Bernoulli draw.
    a: [B, n] the layer's input.
    layer: its weights ``w`` [n, m] and bias ``b`` [m].
    keep_prob: Python float in (0, 1], the probability of keeping a node.
    activation: the hidden activation.

  Returns:
    LayerOut with ``a = where(kept, f(z) / keep_prob, 0)`` and ``computed``
    the bool [B, m] keep mask.
  """
  keep_prob = _check("keep_prob", keep_prob, keep_prob_error)
  z = layers.dense(layer, a)
  h = layers.activation_fn(activation)(z)
  m = jax.random.bernoulli(key, keep_prob, h.shape)
  # Inverted scaling keeps E[a] = f(z), so evaluation needs no rescaling;
  # where (not a multiply) makes dropped nodes exactly 0 even if h is inf.
  return LayerOut(z, jnp.where(m, h / keep_prob, jnp.zeros_like(h)), m)


def standout_keep_probs(z: jax.Array, *, alpha: float,
                        beta: float) -> jax.Array:
  """Standout keep probabilities ``sigmoid(alpha z + beta)`` (Ba and Frey 2013).

  Args:
    z: [B, m] pre-activations of a hidden layer.
    alpha, beta: the tied standout network's scale and shift.

  Returns:
    [B, m] keep probabilities in (0, 1).
  """
  return jax.nn.sigmoid(alpha * z + beta)


def standout_layer(key: jax.Array, a: jax.Array, layer: layers.LayerParams, *,
                   alpha: float, beta: float, activation: str) -> LayerOut:
  """A hidden layer of standout in training: ``f(z) * m``, ``m ~ Bernoulli(pi)``.

  No gradient reaches ``pi``: it is computed from ``stop_gradient(z)`` and
  enters only through the sampled mask, a constant for backpropagation.

  Args:
    key: typed key of this layer's Bernoulli draw.
    a: [B, n] the layer's input.
    layer: its weights and bias.
    alpha, beta: standout's ``pi = sigmoid(alpha z + beta)``.
    activation: the hidden activation.

  Returns:
    LayerOut with ``computed`` the bool [B, m] keep mask and ``aux`` the
    keep probabilities ``pi`` [B, m].
  """
  z = layers.dense(layer, a)
  # The Bernoulli draw already blocks gradients; stop_gradient states that
  # pi gets none (Ba and Frey's tied variant does not backprop the sampling).
  pi = standout_keep_probs(jax.lax.stop_gradient(z), alpha=alpha, beta=beta)
  m = jax.random.bernoulli(key, pi)
  h = layers.activation_fn(activation)(z)
  # No 1/pi rescaling: Ba and Frey evaluate with the expected mask instead.
  return LayerOut(z, jnp.where(m, h, jnp.zeros_like(h)), m, pi)


def standout_expected(params: layers.Params, x: jax.Array, *, alpha: float,
                      beta: float, activation: str
                      ) -> tuple[jax.Array, list[jax.Array]]:
  """Evaluation forward pass of standout: ``a = f(z) * pi`` (expected mask).

  ``pi`` is differentiable here (this path is for evaluation only).

  Args:
    params: tuple of LayerParams, hidden layers first, output layer last.
    x: [B, input_dim] inputs.
    alpha, beta: standout's ``pi = sigmoid(alpha z + beta)``.
    activation: hidden activation name.

  Returns:
    ([B, num_classes] logits, per hidden layer its keep probabilities
    [B, n_k]).
  """
  act = layers.activation_fn(activation)
  a, probs = x, []
  for p in params[:-1]:
    z = layers.dense(p, a)
    pi = standout_keep_probs(z, alpha=alpha, beta=beta)
    a = act(z) * pi
    probs.append(pi)
  return layers.dense(params[-1], a), probs


# -- layer modules ------------------------------------------------------------------


class DropoutDense(model_lib.Dense):
  """A hidden layer with inverted dropout (:func:`dropout_layer`)."""

  draws = True

  def __init__(self, params, *, activation, keep_prob, **network):
    super().__init__(params, activation=activation, **network)
    self.keep_prob = keep_prob

  def __call__(self, rand, a, delta=None):
    del delta
    out = dropout_layer(rand, a, self.params(), keep_prob=self.keep_prob,
                        activation=self.activation)
    return out, out.a


class StandoutDense(model_lib.Dense):
  """A hidden layer of standout (:func:`standout_layer`)."""

  draws = True

  def __init__(self, params, *, activation, alpha, beta, **network):
    super().__init__(params, activation=activation, **network)
    self.alpha, self.beta = alpha, beta

  def __call__(self, rand, a, delta=None):
    del delta
    out = standout_layer(rand, a, self.params(), alpha=self.alpha,
                         beta=self.beta, activation=self.activation)
    return out, out.a


def _masked_mlp(params, hidden_layer, network) -> model_lib.MLP:
  """Masked hidden layers (``hidden_layer(params)``), exact output layer;
  ``network``: the layers' ``bias`` and ``weight_norm``."""
  return model_lib.MLP([hidden_layer(p) for p in params[:-1]] +
                       [model_lib.Dense(params[-1], activation=None,
                                        **network)])


# -- the methods ------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class DropoutConfig(registry.MethodConfig):
  keep_prob: float = registry.option(
      DEFAULT_KEEP_PROB, "dropout: probability of keeping each hidden node, "
      "in (0, 1] (0.05 = ALSH's 5% active set)", check=keep_prob_error)


@dataclasses.dataclass(frozen=True)
class StandoutConfig(registry.MethodConfig):
  prefix = "standout_"
  alpha: float = registry.option(
      DEFAULT_STANDOUT_ALPHA, "adaptive_dropout: alpha in keep probability "
      "sigmoid(alpha z + beta)", check=finite_real_error)
  beta: float = registry.option(
      DEFAULT_STANDOUT_BETA, "adaptive_dropout: beta in keep probability "
      "sigmoid(alpha z + beta)", check=finite_real_error)


class Dropout(DenseStep):
  """Dropout: keep each hidden node with probability keep_prob (inverted
  scaling); exact evaluation."""

  saves_compute = "no: masks a dense product"

  def build_model(self, key, params):
    del key  # the masks are drawn per step from the step key
    network = self.model.network
    return _masked_mlp(params, lambda p: DropoutDense(
        p, activation=self.model.activation,
        keep_prob=float(self.config.keep_prob), **network), network)


class Standout(DenseStep):
  """Adaptive dropout / standout (Ba and Frey 2013): keep node j with
  probability sigmoid(alpha z_j + beta); evaluation with the expected mask."""

  saves_compute = ("no: needs every node's pre-activation z for its keep "
                   "probability, then masks the dense product")

  def build_model(self, key, params):
    del key
    network = self.model.network
    return _masked_mlp(params, lambda p: StandoutDense(
        p, activation=self.model.activation, alpha=float(self.config.alpha),
        beta=float(self.config.beta), **network), network)

  def _expected(self, state, x):
    return standout_expected(
        self.params_of(state), x, alpha=float(self.config.alpha),
        beta=float(self.config.beta), activation=self.model.activation)

  def predict(self, state, x):
    return self._expected(state, x)[0]

  def diagnostics(self, state, x, key, *, batch_size):
    """Mean keep probability per hidden layer of the evaluation pass.

    Standout keeps far more than dropout's 5% at the authors' alpha and beta
    (``sigmoid(1) = 0.73`` at ``z = 0``), which matters when comparing them.
    """
    del key, batch_size
    probs = self._expected(state, x)[1]
    return ({"standout_keep_prob": jnp.stack([jnp.mean(p) for p in probs])}
            if probs else {})


# paper_batch_size: mini-batches, as for STANDARD (a dense step per example
# is too slow here for the paper's batch size 1).
DROPOUT_SPEC = registry.register(registry.MethodSpec(
    name="dropout", build=Dropout, config=DropoutConfig,
    analysis_grid={"keep_prob": (0.05, 0.5)}, keep_all={"keep_prob": 1.0},
    paper_batch_size=128))

STANDOUT_SPEC = registry.register(registry.MethodSpec(
    name="adaptive_dropout", build=Standout, config=StandoutConfig,
    paper_batch_size=128))
