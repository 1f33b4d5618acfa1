"""The ALSH-APPROX training method (Spring and Shrivastava 2017).

Per example, each hidden layer computes only its active nodes
(:func:`sampling_mlp.methods.alsh.layer.active_layer`), the output layer is
exact and reads only the last active set, and evaluation is exact (all
nodes).  Backpropagation reaches only the gathered blocks, and the
optimizer updates only them: a lazy Adam whose untouched weights keep their
moments.

With the native kernels (``--alsh_kernel``, :mod:`.native`), which update
the slabs in place:

* batch size 1 (the paper's setting) is one fused C++ step: hashing,
  selection, the sparse forward and backward passes and the update of every
  touched weight in one call; with ``--alsh_threads`` above 1, groups of
  ``hogwild_group`` steps run as one call on several threads that update
  the shared weights without locks (HOGWILD), so results then depend on
  the threads' timing (one thread: the sequential steps, bit for bit);
* a mini-batch keeps one active set per example (as SLIDE does), computes
  every example's gradients from the weights before the step, and applies
  one lazy update to the union of the touched weights, at a cost that grows
  with the batch times the active set; the result does not depend on the
  number of threads;
* the tables are rebuilt from the slabs in place (:func:`.native.build_tables`);
  under the incremental schedule (``--alsh_rebuild=incremental``) every
  step kernel re-hashes the nodes it touched, as
  :meth:`.layer.ActiveLayer.rehash` defines.

The pure-XLA step computes the same numbers up to float32 rounding and is
the definition, and what analysis and machines without a compiler use; its
mini-batch update is masked, of dense cost.

The authors' network (no bias, weight normalisation; see :mod:`.layer`)
runs on the native kernels at batch size 1 (single steps and HOGWILD
groups) and in the tables' rebuild; the native mini-batch kernel has no
weight normalisation, so weight-normalised mini-batches take the XLA step
(the method logs so).  Bias-free layers run on every native kernel.
"""

from __future__ import annotations

import dataclasses
import os

from absl import logging
import jax
import jax.numpy as jnp
from flax import nnx

from sampling_mlp import model as model_lib
from sampling_mlp import registry
from sampling_mlp.methods.alsh import kernels, schedule
from sampling_mlp.methods.alsh.layer import (ActiveLayer, SparseOutput,
                                             value_or_none, normed_grads)
from sampling_mlp.optim import update_slab, update_slab_masked, update_slots


def _in_open_unit(v):
  return None if 0 < v < 1 or v == 0 else (
      "must be in (0, 1), or 0 for the transform's default")


def _check_schedule(v):
  try:
    schedule.parse_schedule(v)
  except ValueError as e:
    return str(e)
  return None


@dataclasses.dataclass(frozen=True)
class ALSHConfig(registry.MethodConfig):
  """ALSH-APPROX's options (flags ``--alsh_*``)."""

  prefix = "alsh_"
  K: int = registry.option(
      6, "Hash components per table.",
      check=lambda v: None if v >= 1 else "must be >= 1")
  L: int = registry.option(
      5, "Hash tables.", check=lambda v: None if v >= 1 else "must be >= 1")
  m: int = registry.option(
      0, "Norm powers appended by the transform (0: the transform's "
      "default, 3 for l2_alsh, 2 for sign_alsh).",
      check=lambda v: None if v >= 0 else
      "must be >= 1, or 0 for the transform's default")
  U: float = registry.option(
      0.0, "Largest column norm after scaling (0: the transform's default, "
      "0.83 for l2_alsh, 0.75 for sign_alsh).", check=_in_open_unit)
  R: float = registry.option(
      kernels.DEFAULT_R, "Bucket width of the l2 hash.",
      check=lambda v: None if v > 0 else "must be > 0")
  transform: str = registry.option("l2_alsh", "MIPS transform.",
                                   choices=kernels.TRANSFORMS)
  hash: str = registry.option("srp", "Hash family.", choices=kernels.HASHES)
  active_fraction: float = registry.option(
      0.05, "Active-set budget as a fraction of each hidden layer's nodes.",
      check=lambda v: None if 0 < v <= 1 else "must be in (0, 1]")
  kernel: str = registry.option(
      "auto", "Step kernels: 'native' (C++ via the XLA FFI, compiled on "
      "first use), 'xla' (pure JAX; same numbers, slower; mini-batches at "
      "dense cost) or 'auto' (native where it builds).",
      choices=("auto", "native", "xla"))
  threads: int = registry.option(
      0, "Threads of the native kernels (0: every core this process may "
      "use).  At batch size 1 more than one trains examples concurrently "
      "without locks (HOGWILD); a mini-batch splits its examples and then "
      "its touched nodes among them.",
      check=lambda v: None if v >= 0 else "must be >= 0 (0: every core)")
  rebuild: str = registry.option(
      "paper", "Table rebuild schedule: 'paper' (every 100 steps for the "
      "first 10,000, then every 1,000), 'epoch', 'N' (every N steps), "
      "'E:U:L', or 'adaptive[:DRIFT[:N]]' (every N=100 steps, rebuild the "
      "layers whose sampled weights moved by more than DRIFT=0.05); tables "
      "are also rebuilt at every epoch's end.",
      check=_check_schedule)

  def __post_init__(self):
    super().__post_init__()
    m, U = self.resolved()
    try:  # combinations the per-flag checks cannot see (K <= 31 for srp)
      kernels.validate_hparams(K=self.K, L=self.L, m=m, U=min(U, 0.999999),
                               fraction=self.active_fraction,
                               transform=self.transform, hash=self.hash)
    except ValueError as e:
      raise ValueError(f"bad --alsh_* flags: {e}") from None

  def resolved(self) -> tuple[int, float]:
    """``(m, U)`` with 0 replaced by the transform's default."""
    return kernels.resolve_transform_params(self.transform, self.m or None,
                                            self.U or None)


class ALSH(registry.MethodImpl):
  """ALSH-APPROX: active nodes by asymmetric LSH (Spring and Shrivastava
  2017).

  See the module docstring.  ``opt_state`` is the update count: the moments
  live in the layers' slabs.
  """

  saves_compute = "yes: gathers only the active blocks and updates only them"
  recall_k = 10
  # Recall also with the tables the epoch's last steps used, before the
  # epoch-end rebuild (``alsh_recall_at_10_before_epoch_end``): how far
  # the rebuild schedule let them fall behind the weights.
  diagnose_before_end = True

  def __init__(self, model, optim_cfg, config):
    super().__init__(model, optim_cfg, config)
    self.m, self.U = config.resolved()
    self.schedule = schedule.parse_schedule(config.rebuild)
    self.budgets = tuple(kernels.budget_for(n, config.active_fraction)
                         for n in model.sizes[1:-1])
    self.threads = config.threads or len(os.sched_getaffinity(0))

  # -- state ------------------------------------------------------------------
  def build_model(self, key, params):
    sizes, c = self.model.sizes, self.config
    network = self.model.network
    if self.model.weight_norm and c.kernel != "xla":
      logging.info(
          "alsh: the native mini-batch kernel has no weight normalisation; "
          "with %s, steps of batch size above 1 run on the XLA path "
          "(batch size 1 stays native)", network)
    keys = jax.random.split(key, max(1, len(sizes) - 2))
    hidden = []
    for k, p in enumerate(params[:-1]):
      hp = kernels.init_hash(
          keys[k], dim=kernels.transformed_dim(sizes[k], transform=c.transform,
                                               m=self.m),
          K=c.K, L=c.L, family=c.hash, R=c.R)
      hidden.append(ActiveLayer(
          p, hp, reads=self.budgets[k - 1] if k else None,
          budget=self.budgets[k],
          activation=self.model.activation, transform=c.transform, m=self.m,
          U=self.U, optim_cfg=self.optim,
          drift_sample=schedule.DRIFT_SAMPLE if self.schedule.drift else 0,
          incremental=self.schedule.incremental, **network))
    reads = self.budgets[-1] if self.budgets else sizes[0]
    return model_lib.MLP(hidden + [SparseOutput(params[-1],
                                                optim_cfg=self.optim,
                                                reads=reads, **network)])

  def init_optimizer(self, model):
    del model
    return registry.zero_step()

  def end_epoch(self, state, key):
    del key  # rebuilding is deterministic
    model = state.view()
    for layer in model.layers[:-1]:
      layer.set_hash_state(self._rebuilt(layer))
      if layer.snapshot is not None:
        layer.snapshot[...] = layer.sampled_weights()
    return state.replace(model=nnx.state(model))

  def _rebuilt(self, layer: ActiveLayer) -> tuple:
    """The layer's ``hash_state()`` from its current weights:
    ``layer.rebuild()`` (the definition), or the native kernel reading the
    slab in place where the native kernels run (the same codes up to
    float32 rounding)."""
    incremental = layer.sketch is not None
    if not self._use_native():
      state = layer.rebuild()
      return state if incremental else state[:1]
    from sampling_mlp.methods.alsh import native  # pylint: disable=import-outside-toplevel
    state = native.build_tables(layer.hashes, layer.w[...],
                                slot_axis=layer.slot_axis,
                                transform=layer.transform, m=layer.m,
                                U=layer.U, threads=self.threads,
                                scales=layer.scales(), sketches=incremental)
    return state if incremental else (state,)

  # -- training ---------------------------------------------------------------
  def step_randomness(self, key, batch_size):
    """The step's tie-breaking seeds: uint32 [B, max(depth, 1)], one per
    example and hidden layer."""
    depth = len(self.model.sizes) - 2
    return jax.random.bits(key, (batch_size, max(depth, 1)), jnp.uint32)

  def _use_native(self, batch_size: int = 1) -> bool:
    """Whether steps of ``batch_size`` (and the tables' rebuilds, for the
    default 1) run the native kernels (``Library.use``: decided when the
    first one is traced, so nothing is compiled before it is needed)."""
    if self.config.kernel == "xla":
      return False
    if batch_size > 1 and self.model.weight_norm:
      return False  # the reason is logged by build_model
    # Imported here: importing the package must not load the kernels'
    # module (``python -m ...alsh.native --build`` runs it as __main__).
    from sampling_mlp.methods.alsh import native  # pylint: disable=import-outside-toplevel
    return native.LIBRARY.use(self.config.kernel)

  # Consecutive batch-size-1 steps one HOGWILD call takes: a divisor of
  # the paper's rebuild periods (100, 1,000), so that grouped steps rebuild
  # the tables at the same steps as single ones.
  hogwild_group = 100

  def _hogwild(self, batch_size: int) -> bool:
    return (batch_size == 1 and self.threads > 1 and bool(self.budgets)
            and self._use_native(batch_size))

  def steps_per_call(self, batch_size):
    """``hogwild_group`` steps at once at batch size 1 with several native
    threads (HOGWILD), else 1."""
    return self.hogwild_group if self._hogwild(batch_size) else 1

  def _native_step(self, kernel, model, x, y, seeds, count, **kw):
    """A native step kernel on the model's slabs, which it updates (and
    under the incremental schedule the tables, sketches and scales);
    returns the per-example loss and colliding counts [..., depth]."""
    hidden = model.layers[:-1]
    if self.schedule.incremental:
      from sampling_mlp.methods.alsh import native  # pylint: disable=import-outside-toplevel
      kw.update(transform=self.config.transform,
                target=1.0 if self.config.transform == "simple_lsh" else self.U,
                tolerance=schedule.RESCALE_TOLERANCE, rehash=tuple(
          native.Rehash(l.sketch[...], native.appended_projections(
              l.hashes, l.query.proj.shape[0]), l.hash_scale[...])
          for l in hidden))
    with jax.named_scope("native"):
      new, loss, coll, *hashed = kernel(
          tuple((l.w[...], value_or_none(l.b), value_or_none(l.g)) for l in model.layers),
          tuple(l.query for l in hidden),
          tuple(l.table[...] for l in hidden), x, y, seeds, count,
          budgets=self.budgets, optim=self.optim,
          activation=self.model.activation, **kw)
    for layer, (w, b, g) in zip(model.layers, new):
      layer.w[...] = w
      if b is not None:
        layer.b[...] = b
      if g is not None:
        layer.g[...] = g
    if hashed:
      (tables, sketches, scales), = hashed
      for layer, t, sk, sc in zip(hidden, tables, sketches, scales):
        layer.table[...], layer.sketch[...], layer.hash_scale[...] = t, sk, sc
    return loss, coll

  def _collision_metrics(self, coll):
    """Per hidden layer, averaged over the examples of ``coll`` [B, depth]:
    the nodes colliding with the query, and the fraction of the budget
    filled at random (too few collided)."""
    budgets = jnp.asarray(self.budgets, jnp.float32)
    coll = coll.astype(jnp.float32)
    return {"alsh_colliding": jnp.mean(coll, axis=0),
            "alsh_random_fraction": jnp.mean(
                jnp.maximum(budgets - coll, 0) / budgets, axis=0)}

  def _rebuild_if(self, hidden, due):
    """Rebuilds the tables where ``due`` (the adaptive schedule: those of
    the layers that drifted); returns how many layers it rebuilt, int32."""
    if self.schedule.drift:
      return self._rebuild_drifted(hidden, due)
    # Only the small hash states pass through the conditional, so neither
    # branch copies the parameters.
    with jax.named_scope("rebuild"):
      states = jax.lax.cond(
          due, lambda: tuple(self._rebuilt(l) for l in hidden),
          lambda: tuple(l.hash_state() for l in hidden))
    for layer, state in zip(hidden, states):
      layer.set_hash_state(state)
    return jnp.int32(len(hidden)) * due.astype(jnp.int32)

  def _rebuild_drifted(self, hidden, due):
    """The adaptive schedule: where ``due``, each layer whose sampled
    weights drifted past the threshold is rebuilt and its snapshot
    renewed."""
    count = jnp.int32(0)
    with jax.named_scope("rebuild"):
      for layer in hidden:
        rebuild = jax.lax.cond(
            due, lambda l=layer: l.drift() > self.schedule.drift,
            lambda: jnp.bool_(False))
        state, snap = jax.lax.cond(
            rebuild, lambda l=layer: (self._rebuilt(l),
                                      l.sampled_weights()),
            lambda l=layer: (l.hash_state(), l.snapshot[...]))
        layer.set_hash_state(state)
        layer.snapshot[...] = snap
        count = count + rebuild.astype(jnp.int32)
    return count

  def train_step(self, state, x, y, rand):
    seeds, batch = rand, x.shape[0]
    model = state.view()
    hidden = model.layers[:-1]
    depth = len(hidden)
    count = state.opt_state + 1
    if depth and self._use_native(batch):
      from sampling_mlp.methods.alsh import native  # pylint: disable=import-outside-toplevel
      if batch == 1:
        loss, coll = self._native_step(native.train_step, model, x[0], y[0],
                                       seeds[0], count)
        coll = coll[None]
      else:
        loss, coll = self._native_step(native.train_batch, model, x, y,
                                       seeds, count, threads=self.threads)
        loss = jnp.mean(loss)
    else:
      def loss_fn(deltas):
        outs = state.view().forward(seeds, x, deltas)
        return registry.cross_entropy(outs[-1].a, y), [o.aux for o in outs]

      (loss, aux), g = jax.value_and_grad(loss_fn, has_aux=True)(
          model.zero_deltas(batch))
      update = self._update_single if batch == 1 else self._update_batch
      with jax.named_scope("update"):
        update(model, aux, g, count)
      if self.schedule.incremental:
        with jax.named_scope("rehash"):
          for layer, act in zip(hidden, aux):
            layer.rehash(act.idx)
      coll = jnp.stack([a.colliding for a in aux[:-1]], axis=1) if depth \
          else None
    step = state.step + 1
    rebuilt = self._rebuild_if(hidden, schedule.should_rebuild(
        step, schedule=self.schedule))
    metrics = {"loss": loss}
    if depth:  # layers rebuilt after this step
      metrics["alsh_rebuilds"] = rebuilt.astype(jnp.float32)
    if depth:  # per hidden layer, averaged over the batch's examples
      metrics.update(self._collision_metrics(coll))
    return state.replace(model=nnx.state(model), opt_state=count,
                         step=step), metrics

  def train_steps(self, state, xs, ys, rands):
    """Batch-size-1 steps as one HOGWILD call (``native.train_hogwild``)
    where :meth:`steps_per_call` groups them; the tables are rebuilt after
    the group if the schedule rebuilds at any of its steps (the group
    divides the paper's periods, so these are the same steps)."""
    k = xs.shape[0]
    if not self._hogwild(xs.shape[1]):
      return super().train_steps(state, xs, ys, rands)
    from sampling_mlp.methods.alsh import native  # pylint: disable=import-outside-toplevel
    model = state.view()
    loss, coll = self._native_step(
        native.train_hogwild, model, xs[:, 0], ys[:, 0], rands[:, 0],
        state.opt_state + 1, threads=self.threads)
    steps = state.step + 1 + jnp.arange(k, dtype=state.step.dtype)
    due = jnp.any(jax.vmap(lambda t: schedule.should_rebuild(
        t, schedule=self.schedule))(steps))
    rebuilt = self._rebuild_if(model.layers[:-1], due)
    metrics = {"loss": loss,  # the group's rebuilds, after its last step
               "alsh_rebuilds": jnp.zeros(k).at[-1].set(rebuilt)}
    metrics.update(jax.vmap(lambda c: self._collision_metrics(c[None]))(coll))
    return state.replace(model=nnx.state(model), opt_state=state.opt_state + k,
                         step=state.step + k), metrics

  def _update_single(self, model, aux, g, count):
    """Batch size 1: each touched block is updated from the entries the
    forward pass gathered, and each slot is scattered back once."""
    cfg = self.optim
    first = lambda t: jax.tree.map(lambda v: v[0], t)

    def put(slab, index, block, grad, axis):
      for i, vals in enumerate(update_slots(cfg, block, grad, count, axis)):
        slab = slab.at[index(i)].set(vals, unique_indices=True)
      return slab

    rows = None
    for layer, act, gk in zip(model.layers[:-1], aux, g):
      act, gk = first(act), first(gk)
      idx, r = act.idx, rows
      if layer.g is not None:
        # Weight normalisation: the gathered full rows of v and their
        # lengths, updated whole (v's gradient is dense along each row).
        v = jnp.take(act.block.w, 0, axis=layer.slot_axis)  # [s, n_in]
        gw = gk.w if r is None else jnp.zeros_like(v).at[:, r].set(gk.w)
        gv, gg = normed_grads(v, act.lengths[:, 0], gw, axis=1)
        index = ((lambda i: (idx, i)) if r is None
                 else (lambda i: (idx, slice(None), i)))
        w = put(layer.w[...], index, act.block.w, gv, layer.slot_axis)
        layer.g[...] = put(layer.g[...], lambda i: (idx, i), act.lengths,
                           gg, 1)
      elif r is None:
        w = put(layer.w[...], lambda i: (idx, i), act.block.w, gk.w, 1)
      else:
        w = put(layer.w[...], lambda i: (idx[:, None], r[None, :], i),
                act.block.w, gk.w, 2)
      layer.w[...] = w
      if layer.b is not None:
        layer.b[...] = put(layer.b[...], lambda i: (idx, i), act.block.b,
                           gk.b, 1)
      rows = idx
    out, block, go = model.layers[-1], first(aux[-1]), first(g[-1])
    if out.g is not None:
      self._update_normed_output(out, go.w if rows is None else
                                 jnp.zeros(_output_shape(out)).at[rows].set(
                                     go.w), count)
    elif rows is None:
      out.w[...] = update_slab(cfg, out.w[...], go.w, count, axis=1)
    else:
      out.w[...] = put(out.w[...], lambda i: (rows, i), block.w, go.w, 1)
    if out.b is not None:
      out.b[...] = update_slab(cfg, out.b[...], go.b, count, axis=1)

  def _update_normed_output(self, out, grad_w, count):
    """The weight-normalised output layer's dense update from the
    gradient ``grad_w`` [n_d, C] of its effective weights."""
    gv, gg = normed_grads(out.w[...][:, 0], out.g[...][:, 0], grad_w, axis=0)
    out.w[...] = update_slab(self.optim, out.w[...], gv, count, axis=1)
    out.g[...] = update_slab(self.optim, out.g[...], gg, count, axis=1)

  def _update_batch(self, model, aux, g, count):
    """Mini-batches: scatter-add per-example blocks, masked lazy update
    (under weight normalisation: of every touched node's whole row, and of
    the whole output layer)."""
    cfg = self.optim

    def apply(slab, index, grad, axis=1):
      shape = slab.shape[:axis] + slab.shape[axis + 1:]
      gd = jnp.zeros(shape).at[index].add(grad)
      mask = jnp.zeros(shape, bool).at[index].set(True)
      return update_slab_masked(cfg, slab, gd, mask, count, axis=axis)

    rows = None
    for layer, act, gk in zip(model.layers[:-1], aux, g):
      idx = act.idx  # [B, s]
      ix = (idx,) if rows is None else (idx[:, :, None], rows[:, None, :])
      if layer.g is None:
        layer.w[...] = apply(layer.w[...], ix, gk.w, layer.slot_axis)
      else:
        w = layer.w[...]
        v = jnp.take(w, 0, axis=layer.slot_axis)  # [n, n_in]
        gv, gg = normed_grads(v, layer.g[...][:, 0],
                              jnp.zeros(v.shape).at[ix].add(gk.w), axis=1)
        nodes = jnp.zeros(v.shape[0], bool).at[idx].set(True)
        layer.w[...] = update_slab_masked(
            cfg, w, gv, jnp.broadcast_to(nodes[:, None], v.shape), count,
            axis=layer.slot_axis)
        layer.g[...] = update_slab_masked(cfg, layer.g[...], gg, nodes, count,
                                          axis=1)
      if layer.b is not None:
        layer.b[...] = apply(layer.b[...], (idx,), gk.b)
      rows = idx
    out, go = model.layers[-1], g[-1]
    if out.g is not None:
      self._update_normed_output(out, go.w.sum(0) if rows is None else
                                 jnp.zeros(_output_shape(out)).at[rows].add(
                                     go.w), count)
    elif rows is None:
      out.w[...] = update_slab(cfg, out.w[...], go.w.sum(0), count, axis=1)
    else:
      out.w[...] = apply(out.w[...], (rows,), go.w)
    if out.b is not None:
      out.b[...] = update_slab(cfg, out.b[...], go.b.sum(0), count, axis=1)

  # -- analysis -----------------------------------------------------------------
  def diagnostics(self, state, x, key, *, batch_size):
    """Per hidden layer, on a sample of examples: the active-set size,
    recall@10 of the exact top nodes (by inner product with the layer's
    actual input), and the root-mean-square of the layer's activations in
    the approximate pass (``alsh_activation_rms``: how far the signal
    carries through the active sets; it shrinks about tenfold per
    bias-free layer at 5% active)."""
    del batch_size  # active sets are per example
    depth = len(self.budgets)
    if depth == 0:
      return {}
    outs = self.approx_forward(state, x, key)
    params = self.params_of(state)
    inputs = [x] + [o.a for o in outs[:-1]]
    recall = [kernels.recall_at_k(inputs[k], params[k].w, outs[k].computed,
                                  k=min(self.recall_k, params[k].w.shape[1]))
              for k in range(depth)]
    return {"alsh_active_size": jnp.asarray(self.budgets, jnp.float32),
            "alsh_recall_at_10": jnp.stack(recall),
            "alsh_activation_rms": jnp.stack(
                [jnp.sqrt(jnp.mean(o.a * o.a)) for o in outs[:-1]])}

  def step_flops(self, batch_size: int) -> int:
    """Multiply-adds per step: active blocks (forward, weight gradient, input
    gradient), query hashing, and the table rebuild amortised over the
    schedule's early period (the incremental schedule: each example's
    re-hash of the weights it changed, the first layer's whole rows and
    the later layers' blocks)."""
    sizes = self.model.sizes
    LK = self.config.L * self.config.K
    per_example, prev = 0, sizes[0]
    for k, s in enumerate(self.budgets):
      per_example += prev * s * (2 if k == 0 else 3) + LK * prev
      if self.schedule.incremental:
        per_example += LK * s * (sizes[k] if k == 0 or self.model.weight_norm
                                 else self.budgets[k - 1])
      prev = s
    per_example += prev * sizes[-1] * (3 if self.budgets else 2)
    period = self.schedule.early_every or self.schedule.late_every
    rebuild = 0
    if period:
      for n_in, n_out in zip(sizes[:-2], sizes[1:-1]):
        rebuild += n_out * n_in + LK * n_out * kernels.transformed_dim(
            n_in, transform=self.config.transform, m=self.m)
      rebuild //= period
    return batch_size * per_example + rebuild


def _output_shape(out: SparseOutput) -> tuple[int, int]:
  """The output layer's weights' shape [n_d, C] (its slab is [n_d, S, C])."""
  return out.w.shape[0], out.w.shape[2]


# paper_batch_size: one example at a time, as the paper trained it.
SPEC = registry.register(registry.MethodSpec(
    name="alsh", build=ALSH, config=ALSHConfig, paper_batch_size=1,
    keep_all={"alsh_active_fraction": 1.0},
    analysis_grid={"alsh_transform": kernels.TRANSFORMS,
                   "alsh_hash": kernels.HASHES}))
