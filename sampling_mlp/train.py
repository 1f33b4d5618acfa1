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

Resuming: everything an epoch draws derives from the seed, the epoch index
and the state's step counter, so training from epoch ``k`` with the state
saved after epoch ``k - 1`` (``first_epoch`` / ``start_epoch``) continues
exactly as an uninterrupted run would (:mod:`sampling_mlp.checkpoint`).

Divergence: an epoch in which a step's training loss is NaN or infinite
ends the run; its row says ``diverged: true`` and at which step.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import Any, Callable, Iterator, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from sampling_mlp import layers, registry


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


def init_params(impl: registry.MethodImpl, keys: RunKeys) -> layers.Params:
  """The run's initial weights (``layers.init_mlp``; the key is what
  ``nnx.Rngs(params=keys.init).params()`` draws)."""
  return layers.init_mlp(jax.random.fold_in(keys.init, 0), impl.model.sizes,
                         bias=getattr(impl.model, "bias", True))


def init_state(impl: registry.MethodImpl, keys: RunKeys) -> registry.TrainState:
  """The method's training state from the run's initial weights."""
  return impl.init(keys.method, init_params(impl, keys))


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


# The metric under which an epoch reports the global index of its first step
# with a non-finite loss (-1: none); :func:`epochs` moves it out of the means.
NONFINITE_KEY = "_first_nonfinite_step"
# The suffix of a diagnostic of the state before the end-of-epoch work
# (MethodImpl.diagnose_before_end), e.g. ALSH's recall with the tables the
# epoch's last steps used, before the epoch-end rebuild.
BEFORE_END = "_before_epoch_end"


def make_epoch_fn(impl: registry.MethodImpl, *, batch_size: int,
                  num_batches: int) -> Callable:
  """A jitted ``epoch(state, x, y, perm, key) -> (state, mean_metrics)``.

  Args:
    impl: the built method.
    batch_size: static batch size B.
    num_batches: static number of steps in the epoch.

  ``x`` [N, D] and ``y`` [N] stay on device for the whole run; each step
  gathers its batch from ``perm`` [N], so no shuffled copy is made.  Steps
  run in groups of ``impl.steps_per_call(batch_size)`` through
  ``impl.train_steps`` (the epoch's last steps, fewer than a group, one at
  a time); the steps, their order and their randomness are the same
  either way.  The metrics are the means over the steps, plus
  ``NONFINITE_KEY``: the global step index of the first non-finite loss,
  or -1.
  """
  group = max(1, min(impl.steps_per_call(batch_size), num_batches))
  num_groups, rest = divmod(num_batches, group)

  def epoch(state, x, y, perm, key):
    first_step = state.step
    rand = step_randomness(impl, key, first_step, num_batches, batch_size)

    def batches(first, count):
      idx = jax.lax.dynamic_slice_in_dim(perm, first * batch_size,
                                         count * batch_size)
      return (x[idx].reshape(count, batch_size, -1),
              y[idx].reshape(count, batch_size))

    def grouped(state, inputs):
      i, r = inputs
      return impl.train_steps(state, *batches(i * group, group), r)

    def single(state, inputs):
      i, r = inputs
      idx = jax.lax.dynamic_slice_in_dim(perm, i * batch_size, batch_size)
      return impl.train_step(state, x[idx], y[idx], r)

    if group == 1:
      state, metrics = jax.lax.scan(single, state,
                                    (jnp.arange(num_batches), rand))
    else:
      head = jax.tree.map(
          lambda v: v[:num_groups * group].reshape(
              (num_groups, group) + v.shape[1:]), rand)
      state, metrics = jax.lax.scan(grouped, state,
                                    (jnp.arange(num_groups), head))
      metrics = jax.tree.map(
          lambda m: m.reshape((num_groups * group,) + m.shape[2:]), metrics)
      if rest:
        tail = jax.tree.map(lambda v: v[num_groups * group:], rand)
        state, more = jax.lax.scan(
            single, state,
            (num_groups * group + jnp.arange(rest), tail))
        metrics = jax.tree.map(lambda a, b: jnp.concatenate([a, b]),
                               metrics, more)
    means = jax.tree.map(lambda m: jnp.mean(m, axis=0), metrics)
    if "loss" in metrics:
      bad = ~jnp.isfinite(metrics["loss"])
      means[NONFINITE_KEY] = jnp.where(bad.any(),
                                       first_step + jnp.argmax(bad), -1)
    return state, means

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


def steps_per_epoch(n: int, batch_size: int) -> int:
  """Steps of an epoch over ``n`` examples (the last partial batch
  dropped); raises ValueError if there is not one full batch."""
  if n // batch_size == 0:
    raise ValueError(f"batch_size {batch_size} is larger than the {n} "
                     "training examples; lower --batch_size or raise "
                     "--max_train")
  return n // batch_size


class Epoch(NamedTuple):
  """One trained epoch (see :func:`epochs`).

  Attributes:
    index: 0-based epoch number.
    state: the training state after it (and the method's end-of-epoch work).
    metrics: the means over its steps of what the step returned (Python
      numbers or lists).
    seconds: its training time: the compiled epoch and the end-of-epoch work.
    compile_seconds: compilation time before the first epoch of this call;
      None after.
    nonfinite_step: the global index (0-based) of the epoch's first step
      whose training loss was NaN or infinite; None if every loss was
      finite.
  """

  index: int
  state: registry.TrainState
  metrics: dict
  seconds: float
  compile_seconds: float | None
  nonfinite_step: int | None = None


def epochs(impl: registry.MethodImpl, x: jax.Array, y: jax.Array, *,
           keys: RunKeys, batch_size: int, num_epochs: int,
           state: registry.TrainState | None = None,
           first_epoch: int = 0,
           before_end: Callable[[registry.TrainState, int], None] | None = None
           ) -> Iterator[Epoch]:
  """Trains epoch after epoch; the one epoch loop of the project.

  Args:
    impl: the built method.
    x: [N, D] and y: [N], the training split (on device for the whole run).
    keys: the run's keys (shuffling, step keys, end-of-epoch keys).
    batch_size: examples per step; the last partial batch is dropped.
    num_epochs: the run's epochs in all (the last index is num_epochs - 1).
    state: the initial state (default: ``init_state(impl, keys)``); when
      resuming, the state after epoch ``first_epoch - 1``.
    first_epoch: the index of the first epoch to train (0-based): a run
      resumed after ``k`` epochs passes ``k`` and trains the rest.
    before_end: called as ``before_end(state, epoch)`` after each epoch's
      steps and before its end-of-epoch work (which then takes the state's
      buffers), outside the timed region.

  Yields:
    One :class:`Epoch` per epoch trained; epoch ``e`` shuffles with
    ``fold_in(keys.shuffle, e)``, and steps and end-of-epoch work draw from
    the state's step counter and ``e``, so a resumed run repeats an
    uninterrupted one exactly.  A yielded state is valid until the next
    epoch starts, which donates its buffers: copy what is to be kept.
  """
  if not 0 <= first_epoch <= num_epochs:
    raise ValueError(f"first_epoch must be in [0, {num_epochs}], got "
                     f"{first_epoch}")
  state = init_state(impl, keys) if state is None else state
  n = x.shape[0]
  num_batches = steps_per_epoch(n, batch_size)
  epoch_fn = make_epoch_fn(impl, batch_size=batch_size,
                           num_batches=num_batches)
  end_fn = jax.jit(impl.end_epoch, donate_argnums=0)

  def perm_for(epoch):
    return jax.random.permutation(jax.random.fold_in(keys.shuffle, epoch), n)

  if first_epoch == num_epochs:
    return
  t0 = time.perf_counter()
  epoch_c = epoch_fn.lower(state, x, y, perm_for(first_epoch),
                           keys.train).compile()
  end_c = end_fn.lower(state, keys.end_epoch).compile()
  compile_seconds = time.perf_counter() - t0
  for epoch in range(first_epoch, num_epochs):
    perm = jax.block_until_ready(perm_for(epoch))
    t0 = time.perf_counter()
    state, metrics = epoch_c(state, x, y, perm, keys.train)
    seconds = 0.0
    if before_end is not None:
      jax.block_until_ready(state)
      seconds = time.perf_counter() - t0
      before_end(state, epoch)
      t0 = time.perf_counter()
    state = end_c(state, jax.random.fold_in(keys.end_epoch, epoch))
    jax.block_until_ready((state, metrics))
    seconds += time.perf_counter() - t0
    metrics = _to_python(metrics)
    bad = metrics.pop(NONFINITE_KEY, -1)
    yield Epoch(epoch, state, metrics, seconds,
                compile_seconds if epoch == first_epoch else None,
                None if bad < 0 else int(bad))


def train(impl: registry.MethodImpl, dataset, cfg: TrainConfig, *,
          state: registry.TrainState | None = None, start_epoch: int = 0,
          prior_seconds: float = 0.0,
          on_epoch: Callable[[registry.TrainState, dict], None] | None = None
          ) -> Iterator[dict]:
  """Trains ``impl`` on ``dataset`` and yields one metrics dict per epoch.

  Each dict holds ``epoch`` (1-based), ``train_loss``, ``dev_accuracy``,
  ``test_accuracy`` (fractions), ``epoch_seconds`` (training only),
  ``cumulative_seconds``, ``steps``, ``diverged``, ``compile_seconds``
  (the first epoch this call trains only), the means of any other metrics
  the step returns, and the method's diagnostics (where the method's
  ``diagnose_before_end`` asks, also of the state before the end-of-epoch
  work, each named with the suffix ``BEFORE_END``).  An epoch in which a
  step's loss was NaN or infinite is the last: its dict says ``diverged:
  True`` and ``diverged_step``, the 1-based number of that step in the run.

  Args:
    impl: the built method.
    dataset: a :class:`sampling_mlp.data.Dataset`.
    cfg: the loop settings; ``cfg.epochs`` is the run's total.
    state: the state to continue from (resuming), else a fresh one.
    start_epoch: epochs already trained (0-based index of the first epoch
      to train); ``state`` must be the state after them.
    prior_seconds: their training seconds, where ``cumulative_seconds``
      starts.
    on_epoch: called as ``on_epoch(state, row)`` after each epoch, before
      the row is yielded, while the state is valid (e.g. to checkpoint it).
  """
  keys = RunKeys(cfg.seed)
  predict = make_predict_fn(impl)
  diag_fn = jax.jit(functools.partial(impl.diagnostics,
                                      batch_size=cfg.batch_size))
  diag_x = jnp.asarray(dataset.dev.x[:cfg.diag_examples]
                       if len(dataset.dev.x) else dataset.train.x[:cfg.diag_examples])
  cumulative = prior_seconds
  diagnose = lambda state, epoch: _to_python(diag_fn(
      state, diag_x, jax.random.fold_in(keys.diagnostics, epoch)))
  before = {}  # the diagnostics of the state the epoch's last steps used

  def before_end(state, epoch):
    before.update({f"{k}{BEFORE_END}": v
                   for k, v in diagnose(state, epoch).items()})

  for ep in epochs(impl, jnp.asarray(dataset.train.x),
                   jnp.asarray(dataset.train.y), keys=keys,
                   batch_size=cfg.batch_size, num_epochs=cfg.epochs,
                   state=state, first_epoch=start_epoch,
                   before_end=before_end if impl.diagnose_before_end
                   else None):
    cumulative += ep.seconds
    metrics = dict(ep.metrics)
    row = {
        "epoch": ep.index + 1,
        "train_loss": metrics.pop("loss"),
        "dev_accuracy": accuracy(predict, ep.state, dataset.dev.x,
                                 dataset.dev.y, batch=cfg.eval_batch),
        "test_accuracy": accuracy(predict, ep.state, dataset.test.x,
                                  dataset.test.y, batch=cfg.eval_batch),
        "epoch_seconds": ep.seconds,
        "cumulative_seconds": cumulative,
        "steps": int(ep.state.step),
        "diverged": ep.nonfinite_step is not None,
    }
    if ep.nonfinite_step is not None:
      row["diverged_step"] = ep.nonfinite_step + 1
    if ep.compile_seconds is not None:
      row["compile_seconds"] = ep.compile_seconds
    row.update(metrics)
    row.update(diagnose(ep.state, ep.index))
    row.update(before)
    if on_epoch is not None:
      on_epoch(ep.state, row)
    yield row
    if row["diverged"]:
      return


class Chunk(NamedTuple):
  """Steps trained by :func:`timed_chunks` in one jitted call.

  Attributes:
    state: the training state after them (valid until the next chunk).
    steps: how many steps the call ran.
    loss_sum: the sum of their training losses.
    seconds: the call's training time (plus the end-of-epoch work when the
      chunk ended an epoch).
    nonfinite_step: the global index (0-based) of the first step with a
      NaN or infinite loss, or None.
  """

  state: registry.TrainState
  steps: int
  loss_sum: float
  seconds: float
  nonfinite_step: int | None = None


def chunk_steps(step_seconds: float, *, chunk_seconds: float,
                limit: int) -> int:
  """Steps per chunk for calls of about ``chunk_seconds``, given one
  step's measured ``step_seconds``: a power of two from 1 up, or ``limit``
  (an epoch's steps) if that is fewer."""
  want = max(1.0, chunk_seconds / max(step_seconds, 1e-9))
  return int(min(limit, 2 ** int(np.floor(np.log2(want)))))


def timed_chunks(impl: registry.MethodImpl, x: jax.Array, y: jax.Array, *,
                 keys: RunKeys, batch_size: int, state: registry.TrainState,
                 chunk_seconds: float = 0.25) -> Iterator[Chunk]:
  """Trains without end in short timed calls, for training to a
  wall-clock budget; the caller stops when its budget is spent.

  The steps are exactly those of :func:`epochs` (the same permutations,
  step keys and end-of-epoch work, at the same global steps), only cut
  into calls of ``K`` steps that never straddle an epoch's end, so that a
  run can be evaluated and checkpointed every ``chunk_seconds`` or so.
  Where it starts is read off ``state.step`` (epoch ``step // N`` at batch
  ``step % N`` of ``N`` per epoch), so resuming from a saved state
  continues the same sequence.  ``K`` is picked from a first call of one
  step, then once more from the first call of ``K`` steps (a power of two;
  :func:`chunk_steps`); each call size is compiled once, before it is
  timed.

  Args:
    impl: the built method.
    x: [N, D] and y: [N], the training split.
    keys: the run's keys.
    batch_size: examples per step (the last partial batch of each epoch is
      dropped, as in :func:`epochs`).
    state: the state to train from (``init_state`` for a new run).  Each
      call donates it: copy what is to be kept.
    chunk_seconds: the target duration of one call.

  Yields:
    One :class:`Chunk` per call, its ``seconds`` timed around the call
    alone (compilation, slicing the permutation and the caller's own work
    between chunks are outside).
  """
  n = x.shape[0]
  per_epoch = steps_per_epoch(n, batch_size)
  compiled: dict[int, Callable] = {}
  end_fn = jax.jit(impl.end_epoch, donate_argnums=0)
  end_c = end_fn.lower(state, keys.end_epoch).compile()
  perm_cache: dict[int, jax.Array] = {}

  def perm_for(epoch):
    if epoch not in perm_cache:
      perm_cache.clear()
      perm_cache[epoch] = jax.random.permutation(
          jax.random.fold_in(keys.shuffle, epoch), n)
    return perm_cache[epoch]

  def call_for(k, state, perm):
    if k not in compiled:
      fn = make_epoch_fn(impl, batch_size=batch_size, num_batches=k)
      compiled[k] = fn.lower(state, x, y, perm, keys.train).compile()
    return compiled[k]

  k, calibrated = 1, 0
  while True:
    step = int(state.step)
    epoch, offset = divmod(step, per_epoch)
    size = min(k, per_epoch - offset)
    perm = jax.block_until_ready(jax.lax.dynamic_slice_in_dim(
        perm_for(epoch), offset * batch_size, size * batch_size))
    fn = call_for(size, state, perm)
    t0 = time.perf_counter()
    state, metrics = fn(state, x, y, perm, keys.train)
    if offset + size == per_epoch:
      state = end_c(state, jax.random.fold_in(keys.end_epoch, epoch))
    jax.block_until_ready((state, metrics))
    seconds = time.perf_counter() - t0
    bad = int(metrics.get(NONFINITE_KEY, -1))
    yield Chunk(state, size, float(metrics["loss"]) * size, seconds,
                None if bad < 0 else bad)
    if calibrated < 2 and size == k:
      k = chunk_steps(seconds / size, chunk_seconds=chunk_seconds,
                      limit=per_epoch)
      calibrated += 1
