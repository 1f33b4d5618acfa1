"""Pure layer math shared by every method.

Weights are stored as ``w: [n_in, n_out]`` so that column ``j`` holds node
``j``'s incoming weights and a layer computes ``z = a @ w + b`` (the paper's
``z^k = a^{k-1} W^k + b^k``).  :class:`LayerOut` is what every method's
per-layer function returns for a batch.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp

ACTIVATIONS = ("relu", "leaky_relu", "sigmoid", "linear")

# PyTorch's default negative slope; the reference code used nn.LeakyReLU().
LEAKY_SLOPE = 0.01


class LayerParams(NamedTuple):
  """Parameters of one fully connected layer.

  Attributes:
    w: [n_in, n_out] weights; column j is node j's incoming weights.
    b: [n_out] bias.
  """

  w: jax.Array
  b: jax.Array


Params = tuple  # tuple[LayerParams, ...], hidden layers first, output layer last.


class LayerOut(NamedTuple):
  """One layer of a method's training-time forward pass over a batch.

  Attributes:
    z: [B, n] pre-activations as the method computed them (0 where a node
      was not computed).
    a: [B, n] what the layer passes on: its activations (the logits for the
      output layer), 0 where a node was not computed or was dropped.
    computed: [B, n] bool, the nodes the method computed or kept for each
      example, or None when it computed every node.
    aux: what the method's training step needs besides (sampled pairs,
      active sets, gathered blocks); None if nothing.
  """

  z: jax.Array
  a: jax.Array
  computed: jax.Array | None = None
  aux: Any = None


def check_activation(name: str) -> str:
  if name not in ACTIVATIONS:
    raise ValueError(
        f"unknown activation {name!r}; choose one of {', '.join(ACTIVATIONS)}")
  return name


def activation_fn(name: str) -> Callable[[jax.Array], jax.Array]:
  """Returns the elementwise activation called ``name``."""
  check_activation(name)
  if name == "relu":
    return jax.nn.relu
  if name == "leaky_relu":
    return lambda z: jax.nn.leaky_relu(z, LEAKY_SLOPE)
  if name == "sigmoid":
    return jax.nn.sigmoid
  return lambda z: z


def activate(name: str | None, z: jax.Array) -> jax.Array:
  """``activation_fn(name)(z)``; ``name=None`` is the output layer (no
  activation)."""
  return z if name is None else activation_fn(name)(z)


def dense(params: LayerParams, x: jax.Array) -> jax.Array:
  """Exact affine layer.

  Args:
    params: layer weights ``w`` [n, m] and bias ``b`` [m].
    x: [B, n] inputs.

  Returns:
    [B, m] pre-activations ``x @ w + b``.
  """
  return x @ params.w + params.b


def init_layer(key: jax.Array, n_in: int, n_out: int,
               dtype=jnp.float32, *, bias: bool = True) -> LayerParams:
  """PyTorch's default ``nn.Linear`` initialisation (the paper's code base).

  Both weights and bias are drawn from U(-1/sqrt(n_in), 1/sqrt(n_in)); a
  bias-free layer (``bias=False``) gets the same weights and a zero bias,
  which its module does not keep (:class:`sampling_mlp.model.Dense`).
  """
  kw, kb = jax.random.split(key)
  bound = 1.0 / (n_in ** 0.5)
  w = jax.random.uniform(kw, (n_in, n_out), dtype, -bound, bound)
  b = (jax.random.uniform(kb, (n_out,), dtype, -bound, bound) if bias
       else jnp.zeros((n_out,), dtype))
  return LayerParams(w, b)


def weight_norm(v: jax.Array, g: jax.Array, *, axis: int = 0) -> jax.Array:
  """Weight normalisation (Salimans and Kingma 2016): each node's incoming
  weights as ``g * v / ||v||``.

  Args:
    v: the direction parameters; node j's incoming weights lie along
      ``axis`` (``axis=0`` for ``w`` [n_in, n_out], column j is node j;
      ``axis=1`` for node-major [n_out, n_in]).
    g: [n_out] each node's length.
    axis: the axis of the incoming weights.

  Returns:
    The effective weights, shaped like ``v``.
  """
  norm = jnp.sqrt(jnp.sum(v * v, axis=axis, keepdims=True))
  return v * (jnp.expand_dims(g, axis) / norm)


def weight_norm_init(w: jax.Array, *, axis: int = 0) -> jax.Array:
  """The length ``g`` [n_out] that makes ``weight_norm(w, g) == w``: each
  node's norm, as ``torch.nn.utils.weight_norm`` initialises it."""
  return jnp.sqrt(jnp.sum(w * w, axis=axis))


def layer_sizes(*, input_dim: int, hidden: int, depth: int,
                num_classes: int) -> tuple[int, ...]:
  """Sizes ``(input_dim, hidden, ..., hidden, num_classes)`` of an MLP."""
  if depth < 0:
    raise ValueError(f"depth must be >= 0 hidden layers, got {depth}")
  if hidden < 1:
    raise ValueError(f"hidden width must be >= 1, got {hidden}")
  return (input_dim,) + (hidden,) * depth + (num_classes,)


def init_mlp(key: jax.Array, sizes: Sequence[int], *,
             bias: bool = True) -> Params:
  """Initialises an MLP with the given layer sizes; one key per layer.
  ``bias=False``: zero biases, the weights unchanged (same key, same
  weights)."""
  keys = jax.random.split(key, len(sizes) - 1)
  return tuple(init_layer(k, n, m, bias=bias)
               for k, n, m in zip(keys, sizes[:-1], sizes[1:]))


def hidden_activations(params: Params, x: jax.Array, *,
                       activation: str) -> list[jax.Array]:
  """The exact forward pass: every hidden layer's activations, then the
  logits.

  Args:
    params: tuple of LayerParams, hidden layers first.
    x: [B, input_dim] inputs.
    activation: hidden activation name.

  Returns:
    [B, n_k] per hidden layer, then [B, num_classes] logits.
  """
  act = activation_fn(activation)
  outs = []
  for p in params[:-1]:
    x = act(dense(p, x))
    outs.append(x)
  outs.append(dense(params[-1], x))
  return outs


def mlp_apply(params: Params, x: jax.Array, *, activation: str) -> jax.Array:
  """The exact logits [B, num_classes] (:func:`hidden_activations`' last)."""
  return hidden_activations(params, x, activation=activation)[-1]
