"""The training loop, shared by every method.

An epoch is one jitted call: a ``lax.scan`` over the batches of a shuffled
permutation, each step a pure function ``impl.train_step(state, x, y, r)``
with ``r = impl.step_randomness(fold_in(train_key, global_step), B)``, drawn
for all of the epoch's steps at once before the scan (see
:func:`step_randomness`).  Keeping the loop inside ``jit`` means batch size 1
(the paper's single-sample setting) is not dominated by Python dispatch.

Timing: ``epoch_seconds`` covers only the compiled epoch call (and the
method's end-of-epoch work, e.g. ALSH's table rebuild); compilation happens
before the first epoch and evaluation after the clock stops.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from sampling_mlp import registry
from sampling_mlp.model import MLP


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """Loop settings.

  Attributes:
    epochs: passes over the training split.
    batch_size: examples per step; the last partial batch of each
      (reshuffled) epoch is dropped so every step has a static shape.
    seed: the one seed every key derives from.
    eval_batch: batch size of the exact, batched evaluation.
    diag_examples: examples used for a method's per-epoch diagnostics.
  """

  epochs: int = 1
  batch_size: int = 32
  seed: int = 0
  eval_batch: int = 1000
  diag_examples: int = 256

  def __post_init__(self):
    if self.epochs < 1:
      raise ValueError(f"epochs must be >= 1, got {self.epochs}")
    if self.batch_size < 1:
      raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")


class RunKeys:
  """The run's keys, each with one purpose; derived from ``seed`` only."""

  def __init__(self, seed: int):
    root = jax.random.key(seed)
    (self.init, self.method, self.train, self.shuffle, self.end_epoch,
     self.diagnostics) = jax.random.split(root, 6)


def init_state(impl: registry.MethodImpl, keys: RunKeys) -> registry.TrainState:
  """Builds the NNX model, takes its pure parameters, and the method state."""
  model = MLP(impl.model.sizes, activation=impl.model.activation,
              rngs=nnx.Rngs(params=keys.init))
  return impl.init(keys.method, model.params())


def step_randomness(impl: registry.MethodImpl, key: jax.Array,
                    first_step: jax.Array, num_steps: int,
                    batch_size: int) -> Any:
  """The random input of steps ``first_step .. first_step + num_steps - 1``.

  Step ``t`` uses ``impl.step_randomness(fold_in(key, t), batch_size)``; all
  are drawn in one vectorised call, so the loop over steps holds no PRNG
  call that a method does not make itself.

  Returns:
    the pytree ``impl.step_randomness`` returns, stacked on a leading axis
    of length ``num_steps``.
  """
  steps = first_step + jnp.arange(num_steps, dtype=jnp.int32)
  return jax.vmap(lambda t: impl.step_randomness(
      jax.random.fold_in(key, t), batch_size))(steps)


def make_epoch_fn(impl: registry.MethodImpl, *, batch_size: int,
                  num_batches: int) -> Callable:
  """A jitted ``epoch(state, x, y, perm, key) -> (state, mean_metrics)``.

  Args:
    impl: the built method.
    batch_size: static batch size B.
    num_batches: static number of steps in the epoch.

  ``x`` [N, D] and ``y`` [N] stay on device for the whole run; each step
  gathers its batch from ``perm`` [N], so no shuffled copy is made.
  """

  def epoch(state, x, y, perm, key):
    rand = step_randomness(impl, key, state.step, num_batches, batch_size)

    def body(state, inputs):
      i, r = inputs
      idx = jax.lax.dynamic_slice_in_dim(perm, i * batch_size, batch_size)
      return impl.train_step(state, x[idx], y[idx], r)

    state, metrics = jax.lax.scan(body, state,
                                  (jnp.arange(num_batches), rand))
    return state, jax.tree.map(lambda m: jnp.mean(m, axis=0), metrics)

  return jax.jit(epoch, donate_argnums=0)


def make_predict_fn(impl: registry.MethodImpl) -> Callable:
  return jax.jit(impl.predict)


def accuracy(predict: Callable, state, x: np.ndarray, y: np.ndarray, *,
             batch: int) -> float:
  """Exact, batched accuracy; the last chunk is padded to a static shape."""
  n = x.shape[0]
  if n == 0:
    return float("nan")
  correct = 0
  for start in range(0, n, batch):
    xb = x[start:start + batch]
    k = xb.shape[0]
    if k < batch and n > batch:
      xb = np.concatenate([xb, np.zeros((batch - k,) + xb.shape[1:], xb.dtype)])
    logits = np.asarray(predict(state, jnp.asarray(xb)))[:k]
    correct += int((logits.argmax(-1) == y[start:start + k]).sum())
  return correct / n


def _to_python(tree) -> Any:
  return jax.tree.map(lambda v: np.asarray(v).tolist(), tree)


def train(impl: registry.MethodImpl, dataset, cfg: TrainConfig, *,
          epoch_callback: Callable[[int], None] | None = None
          ) -> Iterator[dict]:
  """Trains ``impl`` on ``dataset`` and yields one metrics dict per epoch.

  Each dict holds ``epoch`` (1-based), ``train_loss``, ``dev_accuracy``,
  ``test_accuracy`` (fractions), ``epoch_seconds`` (training only),
  ``cumulative_seconds``, ``compile_seconds`` (first epoch only), the means
  of any other metrics the step returns, and the method's diagnostics.
  """
  keys = RunKeys(cfg.seed)
  state = init_state(impl, keys)
  x = jnp.asarray(dataset.train.x)
  y = jnp.asarray(dataset.train.y)
  n = x.shape[0]
  num_batches = n // cfg.batch_size
  if num_batches == 0:
    raise ValueError(f"batch_size {cfg.batch_size} is larger than the "
                     f"{n} training examples; lower --batch_size or raise "
                     "--max_train")
  impl.train_batch_size = cfg.batch_size
  epoch_fn = make_epoch_fn(impl, batch_size=cfg.batch_size,
                           num_batches=num_batches)
  end_fn = jax.jit(impl.end_epoch, donate_argnums=0)
  predict = make_predict_fn(impl)
  diag_fn = jax.jit(impl.diagnostics)
  diag_x = jnp.asarray(dataset.dev.x[:cfg.diag_examples]
                       if len(dataset.dev.x) else dataset.train.x[:cfg.diag_examples])

  def perm_for(epoch):
    return jax.random.permutation(jax.random.fold_in(keys.shuffle, epoch), n)

  t0 = time.perf_counter()
  epoch_c = epoch_fn.lower(state, x, y, perm_for(0), keys.train).compile()
  end_c = end_fn.lower(state, keys.end_epoch).compile()
  compile_seconds = time.perf_counter() - t0

  cumulative = 0.0
  for epoch in range(cfg.epochs):
    perm = jax.block_until_ready(perm_for(epoch))
    t0 = time.perf_counter()
    state, metrics = epoch_c(state, x, y, perm, keys.train)
    state = end_c(state, jax.random.fold_in(keys.end_epoch, epoch))
    jax.block_until_ready((state, metrics))
    seconds = time.perf_counter() - t0
    cumulative += seconds
    metrics = _to_python(metrics)
    row = {
        "epoch": epoch + 1,
        "train_loss": metrics.pop("loss"),
        "dev_accuracy": accuracy(predict, state, dataset.dev.x, dataset.dev.y,
                                 batch=cfg.eval_batch),
        "test_accuracy": accuracy(predict, state, dataset.test.x,
                                  dataset.test.y, batch=cfg.eval_batch),
        "epoch_seconds": seconds,
        "cumulative_seconds": cumulative,
        "steps": int(state.step),
    }
    if epoch == 0:
      row["compile_seconds"] = compile_seconds
    row.update(metrics)
    row.update(_to_python(diag_fn(state, diag_x,
                                  jax.random.fold_in(keys.diagnostics, epoch))))
    if epoch_callback is not None:
      epoch_callback(epoch + 1)
    yield row
