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
* Evaluation (:meth:`Standout.predict`): ``f(z) * pi`` is an ordinary
  deterministic function and ``pi`` is *not* stopped, so differentiating it
  would include ``d pi / d z``.  It is used for evaluation only, never for
  training.

Both methods report the exact step cost (:func:`registry.exact_step_flops`):
masking a dense product saves no multiply-adds, and standout needs ``z`` for
every node before it can draw the mask.

Keys: the step key is split into one key per hidden layer
(``jax.random.split(key, depth)``); each is used for one Bernoulli draw.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Optional

import jax
import jax.numpy as jnp
import optax

from sampling_mlp import layers, optim, registry

DEFAULT_KEEP_PROB = 0.05
DEFAULT_STANDOUT_ALPHA = 0.5
DEFAULT_STANDOUT_BETA = 1.0


# ---------------------------------------------------------------------------
# Hyperparameter checks (shared by the absl Options and the kernels).


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


def _layer_keys(key: jax.Array, depth: int):
  """One key per hidden layer; none at depth 0 (nothing to mask)."""
  return jax.random.split(key, depth) if depth else ()


# ---------------------------------------------------------------------------
# Pure kernels.


def dropout_forward(key: jax.Array, params: layers.Params, x: jax.Array, *,
                    keep_prob: float, activation: str
                    ) -> tuple[jax.Array, tuple[jax.Array, ...]]:
  """Forward pass with inverted dropout on every hidden layer.

  Args:
    key: the step key; split into one key per hidden layer.
    params: tuple of LayerParams, hidden layers first, output layer last.
    x: [B, input_dim] inputs (never dropped).
    keep_prob: Python float in (0, 1], probability of keeping a hidden node.
    activation: hidden activation name.

  Returns:
    logits: [B, num_classes]; the output layer is exact.
    masks: one [B, hidden] bool array per hidden layer, True where kept.
  """
  keep_prob = _check("keep_prob", keep_prob, keep_prob_error)
  act = layers.activation_fn(activation)
  hidden = params[:-1]
  masks = []
  a = x
  for k, p in zip(_layer_keys(key, len(hidden)), hidden):
    h = act(layers.dense(p, a))
    m = jax.random.bernoulli(k, keep_prob, h.shape)
    # Inverted scaling keeps E[a] = f(z), so evaluation needs no rescaling;
    # where (not a multiply) makes dropped nodes exactly 0 even if h is inf.
    a = jnp.where(m, h / keep_prob, jnp.zeros_like(h))
    masks.append(m)
  return layers.dense(params[-1], a), tuple(masks)


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


def standout_forward(key: jax.Array, params: layers.Params, x: jax.Array, *,
                     alpha: float, beta: float, activation: str
                     ) -> tuple[jax.Array, tuple[jax.Array, ...],
                                tuple[jax.Array, ...]]:
  """Training forward pass of standout: ``a = f(z) * m``, ``m ~ Bernoulli(pi)``.

  No gradient reaches ``pi``: it is computed from ``stop_gradient(z)`` and
  enters only through the sampled mask, a constant for backpropagation.

  Args:
    key: the step key; split into one key per hidden layer.
    params: tuple of LayerParams, hidden layers first, output layer last.
    x: [B, input_dim] inputs (never dropped).
    alpha, beta: standout's ``pi = sigmoid(alpha z + beta)``.
    activation: hidden activation name.

  Returns:
    logits: [B, num_classes]; the output layer is exact.
    masks: one [B, hidden] bool array per hidden layer, True where kept.
    keep_probs: one [B, hidden] array of ``pi`` per hidden layer.
  """
  act = layers.activation_fn(activation)
  hidden = params[:-1]
  masks, probs = [], []
  a = x
  for k, p in zip(_layer_keys(key, len(hidden)), hidden):
    z = layers.dense(p, a)
    # The Bernoulli draw already blocks gradients; stop_gradient states that
    # pi gets none (Ba and Frey's tied variant does not backprop the sampling).
    pi = standout_keep_probs(jax.lax.stop_gradient(z), alpha=alpha, beta=beta)
    m = jax.random.bernoulli(k, pi)
    h = act(z)
    # No 1/pi rescaling: Ba and Frey evaluate with the expected mask instead.
    a = jnp.where(m, h, jnp.zeros_like(h))
    masks.append(m)
    probs.append(pi)
  return layers.dense(params[-1], a), tuple(masks), tuple(probs)


def standout_expected_apply(params: layers.Params, x: jax.Array, *,
                            alpha: float, beta: float,
                            activation: str) -> jax.Array:
  """Evaluation forward pass of standout: ``a = f(z) * pi`` (expected mask).

  ``pi`` is differentiable here (this path is for evaluation only).

  Args:
    params: tuple of LayerParams, hidden layers first, output layer last.
    x: [B, input_dim] inputs.
    alpha, beta: standout's ``pi = sigmoid(alpha z + beta)``.
    activation: hidden activation name.

  Returns:
    [B, num_classes] logits.
  """
  act = layers.activation_fn(activation)
  a = x
  for p in params[:-1]:
    z = layers.dense(p, a)
    a = act(z) * standout_keep_probs(z, alpha=alpha, beta=beta)
  return layers.dense(params[-1], a)


# ---------------------------------------------------------------------------
# Registry methods.


class _MaskedDense(registry.MethodImpl):
  """Shared step: a dense Optax update of the gradient of a masked forward."""

  def __init__(self, model, optim_cfg, config):
    super().__init__(model, optim_cfg, config)
    self.tx = optim.make_optax(optim_cfg)

  def init(self, key, params):
    del key  # the masks are drawn per step from the step key
    return registry.TrainState(params, self.tx.init(params), (),
                               registry.zero_step())

  def sampled_logits(self, key, params, x):
    raise NotImplementedError

  def loss(self, params, x, y, key):
    return registry.cross_entropy(self.sampled_logits(key, params, x), y)

  def train_step(self, state, x, y, key):
    loss, grads = jax.value_and_grad(self.loss)(state.params, x, y, key)
    updates, opt_state = self.tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    return state._replace(params=params, opt_state=opt_state,
                          step=state.step + 1), {"loss": loss}

  def step_flops(self, batch_size):
    # Every product is computed densely and then masked: no savings to claim.
    return registry.exact_step_flops(self.model.sizes, batch_size)


class Dropout(_MaskedDense):
  """Inverted dropout on every hidden layer; exact evaluation (the default)."""

  def __init__(self, model, optim_cfg, config):
    super().__init__(model, optim_cfg, config)
    self.keep_prob = _check("keep_prob", self.config["keep_prob"],
                            keep_prob_error)

  def sampled_logits(self, key, params, x):
    logits, _ = dropout_forward(key, params, x, keep_prob=self.keep_prob,
                                activation=self.model.activation)
    return logits


class Standout(_MaskedDense):
  """Adaptive dropout (Ba and Frey 2013); evaluation with the expected mask."""

  def __init__(self, model, optim_cfg, config):
    super().__init__(model, optim_cfg, config)
    self.alpha = _check("standout_alpha", self.config["standout_alpha"],
                        finite_real_error)
    self.beta = _check("standout_beta", self.config["standout_beta"],
                       finite_real_error)

  def sampled_logits(self, key, params, x):
    logits, _, _ = standout_forward(key, params, x, alpha=self.alpha,
                                    beta=self.beta,
                                    activation=self.model.activation)
    return logits

  def predict(self, state, x):
    return standout_expected_apply(state.params, x, alpha=self.alpha,
                                   beta=self.beta,
                                   activation=self.model.activation)

  def diagnostics(self, state, x, key):
    """Mean keep probability per hidden layer (exact activations, no masks).

    Standout keeps far more than dropout's 5% at the authors' alpha and beta
    (``sigmoid(1) = 0.73`` at ``z = 0``), which matters when comparing them.
    """
    del key
    act = layers.activation_fn(self.model.activation)
    means = []
    a = x
    for p in state.params[:-1]:
      z = layers.dense(p, a)
      pi = standout_keep_probs(z, alpha=self.alpha, beta=self.beta)
      means.append(jnp.mean(pi))
      a = act(z) * pi
    return {"standout_keep_prob": jnp.stack(means)} if means else {}


DROPOUT_SPEC = registry.register(registry.MethodSpec(
    name="dropout",
    summary=("Dropout: keep each hidden node with probability keep_prob "
             "(inverted scaling), exact evaluation"),
    build=Dropout,
    options=(
        registry.Option(
            "keep_prob", DEFAULT_KEEP_PROB,
            "dropout: probability of keeping each hidden node, in (0, 1] "
            "(0.05 = ALSH's 5% active set)",
            check=keep_prob_error),
    ),
    saves_compute="no: masks a dense product",
))

STANDOUT_SPEC = registry.register(registry.MethodSpec(
    name="adaptive_dropout",
    summary=("Adaptive dropout / standout (Ba and Frey 2013): keep node j "
             "with probability sigmoid(alpha z_j + beta), evaluate with the "
             "expected mask"),
    build=Standout,
    options=(
        registry.Option(
            "standout_alpha", DEFAULT_STANDOUT_ALPHA,
            "adaptive_dropout: alpha in keep probability "
            "sigmoid(alpha z + beta)",
            check=finite_real_error),
        registry.Option(
            "standout_beta", DEFAULT_STANDOUT_BETA,
            "adaptive_dropout: beta in keep probability "
            "sigmoid(alpha z + beta)",
            check=finite_real_error),
    ),
    saves_compute=("no: needs every node's pre-activation z for its keep "
                   "probability, then masks the dense product"),
))
