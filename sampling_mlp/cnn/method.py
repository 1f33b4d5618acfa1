"""A registered method's training step on a CNN (trunk + MLP head).

:func:`make` builds the method's MLP implementation for the head
(``spec.build`` on the head's ``ModelConfig``) and wraps it in :class:`CNN`,
which trains the trunk and the head in one step.  What each method does:

* ``standard``: exact convolutions and head, dense Adam on everything.
* ``dropout``: exact convolutions; the head's hidden layers are Dropout's
  (``--keep_prob``; a head without hidden layers, ResNet-18's default, has
  nothing to drop).
* ``mc``: every convolution after the stem (whose 1 or 3 input channels
  leave nothing to sample) sampled over input channels
  (``mc.conv.mc_conv``, ``--mc_ratio``, ``--mc_min_k``, ``--mc_sampler``,
  ``--mc_mode``); the head's layers sampled as in the MLP (the products
  between hidden layers, ``--mc_sample_input`` / ``--mc_sample_output``),
  through ``mc.sampled_layer`` with weights read whole, and a dense Adam
  update (the head is a small share of a CNN's work, so MC's row-sparse
  slabs are not used here).
* ``alsh``: exact convolutions (dense Adam), and ALSH-APPROX's layers in
  the head, as the paper's appendix did: ALSH's own model, forward pass
  (``alsh.active_layer``), masked lazy update and table-rebuild schedule,
  on its pure-XLA path (the fused C++ step takes raw inputs, not features
  that need a gradient).  ResNet-18's head is one (exact) output layer, so
  ``--head_depth`` >= 1 is what gives ALSH hidden layers to work on.

Other methods (``adaptive_dropout``, whose evaluation is not the exact
head, and methods registered elsewhere) raise a clear error.

Randomness: the step key is split into the trunk's key (one key per
convolution, split again by the trunk) and the head method's own
``step_randomness``.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
import optax

from sampling_mlp import layers, optim, registry
from sampling_mlp import model as model_lib
from sampling_mlp.cnn import CNNConfig
from sampling_mlp.cnn import models
from sampling_mlp.methods.mc import conv as mconv
from sampling_mlp.methods.mc import kernels as mc_kernels
from sampling_mlp.methods.mc.method import MC, MCDense
from sampling_mlp.methods.standard import DenseStep

CNN_METHODS = ("standard", "dropout", "mc", "alsh")


@functools.lru_cache(maxsize=None)
def feature_dim(cfg: CNNConfig) -> int:
  """The trunk's flat feature count for ``cfg`` (from a trunk built
  abstractly)."""
  trunk = nnx.eval_shape(lambda: models.TRUNKS[cfg.arch](
      jax.random.key(0), cfg.image_shape, width=cfg.width, sampling=None))
  return trunk.feature_dim


def _head_kind(head: registry.MethodImpl) -> str:
  from sampling_mlp.methods.alsh.method import ALSH  # pylint: disable=import-outside-toplevel
  from sampling_mlp.methods.dropout import Standout  # pylint: disable=import-outside-toplevel
  if isinstance(head, ALSH):
    return "alsh"
  if isinstance(head, MC):
    return "mc"
  if isinstance(head, DenseStep) and not isinstance(head, Standout):
    return "dense"
  return ""


def make(spec: registry.MethodSpec, cfg: CNNConfig, optim_cfg,
         config: registry.MethodConfig) -> "CNN":
  """``spec``'s method on the CNN ``cfg``: its MLP implementation for the
  head, wrapped in :class:`CNN`.

  Raises:
    ValueError: the method has no CNN variant.
  """
  head = spec.build(cfg.head(feature_dim(cfg)), optim_cfg, config)
  kind = _head_kind(head)
  if not kind:
    raise ValueError(
        f"method {spec.name!r} has no CNN variant; methods that train CNNs: "
        f"{', '.join(CNN_METHODS)}")
  return CNN(cfg, optim_cfg, config, head=head, kind=kind)


class CNN(registry.MethodImpl):
  """A method on a CNN: the trunk by dense Adam (its convolutions exact or,
  for MC-APPROX, sampled), the head by the head method's layers."""

  def __init__(self, model: CNNConfig, optim_cfg, config, *,
               head: registry.MethodImpl, kind: str):
    super().__init__(model, optim_cfg, config)
    self.head, self.kind = head, kind
    self.tx = optim.make_optax(optim_cfg)
    self.sampling = None
    if kind == "mc":
      self.sampling = models.ConvSampling(
          ratio=config.ratio, min_k=config.min_k, sampler=config.sampler,
          mode=config.mode)
    self.saves_compute = (
        "yes in forward mode: convolves only the sampled input channels"
        if kind == "mc" else
        "in the head only: ALSH's active nodes (the convolutions are exact)"
        if kind == "alsh" else head.saves_compute)

  # -- state ------------------------------------------------------------------
  def build_trunk(self, key: jax.Array) -> models._Trunk:  # pylint: disable=protected-access
    return models.TRUNKS[self.model.arch](key, self.model.image_shape,
                                          width=self.model.width,
                                          sampling=self.sampling)

  def _build_head(self, key, params):
    if self.kind != "mc":
      return self.head.build_model(key, params)
    mc, last = self.head, len(params) - 1
    return model_lib.MLP([
        MCDense(p, activation=None if k == last else self.model.activation,
                num_samples=mc.num_samples[k] if mc._active(k) else None,  # pylint: disable=protected-access
                sampler=self.config.sampler, mode=self.config.mode)
        for k, p in enumerate(params)])

  def build_model(self, key, params):
    """The trunk (from ``key``) and the head (the head method's layers on
    ``params``, the head's standard-layout weights)."""
    k_trunk, k_head = jax.random.split(key)
    return models.CNNModel(self.build_trunk(k_trunk),
                           self._build_head(k_head, params),
                           self.model.image_shape)

  def init_optimizer(self, model):
    tx_state = self.tx.init(nnx.state(model, nnx.Param))
    if self.kind == "alsh":
      return (tx_state, self.head.init_optimizer(model.head))
    return tx_state

  def params_of(self, state):
    return state.view().params()

  # -- training ---------------------------------------------------------------
  def step_randomness(self, key, batch_size):
    k_trunk, k_head = jax.random.split(key)
    return (k_trunk, self.head.step_randomness(k_head, batch_size))

  def train_step(self, state, x, y, rand):
    k_trunk, head_rand = rand
    model = state.view()
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    alsh = self.kind == "alsh"
    deltas = model.head.zero_deltas(x.shape[0]) if alsh else None

    def loss_fn(params, deltas):
      m = nnx.merge(graphdef, params, rest, copy=True)
      feats = m.features(k_trunk, x, train=True)
      outs = m.head.forward(head_rand, feats, deltas)
      loss = registry.cross_entropy(outs[-1].a, y)
      return loss, ([o.aux for o in outs], nnx.state(m, nnx.BatchStat))

    (loss, (aux, stats)), (g_params, g_deltas) = jax.value_and_grad(
        loss_fn, argnums=(0, 1), has_aux=True)(params, deltas)
    tx_state = state.opt_state[0] if alsh else state.opt_state
    with jax.named_scope("update"):
      updates, tx_state = self.tx.update(g_params, tx_state, params)
      params = optax.apply_updates(params, updates)
    model = nnx.merge(graphdef, params, rest)
    nnx.update(model, stats)
    step = state.step + 1
    if not alsh:
      return state.replace(model=nnx.state(model), opt_state=tx_state,
                           step=step), {"loss": loss}
    # The head by ALSH's own update and rebuild schedule (its XLA path).
    head, count = self.head, state.opt_state[1] + 1
    hidden = model.head.layers[:-1]
    with jax.named_scope("update"):
      update = (head._update_single if x.shape[0] == 1  # pylint: disable=protected-access
                else head._update_batch)  # pylint: disable=protected-access
      update(model.head, aux, g_deltas, count)
    metrics = {"loss": loss}
    if hidden:
      from sampling_mlp.methods.alsh import schedule  # pylint: disable=import-outside-toplevel
      head._rebuild_if(hidden, schedule.should_rebuild(  # pylint: disable=protected-access
          step, schedule=head.schedule))
      metrics.update(head._collision_metrics(  # pylint: disable=protected-access
          jnp.stack([a.colliding for a in aux[:-1]], axis=1)))
    return state.replace(model=nnx.state(model), opt_state=(tx_state, count),
                         step=step), metrics

  def end_epoch(self, state, key):
    """The head method's end-of-epoch work (ALSH's table rebuild) on the
    head."""
    if type(self.head).end_epoch is registry.MethodImpl.end_epoch:
      return state
    model = state.view()
    graphdef, head_state = nnx.split(model.head)
    head = self.head.end_epoch(
        registry.TrainState(graphdef, head_state, None, state.step), key)
    nnx.update(model.head, nnx.state(head.view(), nnx.Variable))
    return state.replace(model=nnx.state(model))

  # -- evaluation ----------------------------------------------------------------
  def predict(self, state, x):
    """Exact logits: exact convolutions, batch norm by its running
    statistics, the exact head."""
    model = state.view()
    feats = model.features(None, x, train=False)
    return layers.mlp_apply(model.head.params(), feats,
                            activation=self.model.activation)

  def approx_forward(self, state, x, key):
    raise NotImplementedError("the error analysis covers MLPs only")

  # -- cost ---------------------------------------------------------------------
  def conv_shapes(self, batch_size: int) -> list[models.ConvShape]:
    trunk = nnx.eval_shape(lambda: self.build_trunk(jax.random.key(0)))
    return models.trunk_conv_shapes(trunk, self.model.image_shape,
                                    batch_size)

  def _conv_flops(self, batch_size: int, *, exact: bool) -> int:
    """Multiply-adds of the trunk's convolutions in one step: per
    convolution ``F = B H' W' m kh kw n`` forward, ``F`` for the weight
    gradient and ``F`` for the input gradient (not the stem's, whose input
    needs none); a sampled one as MC-APPROX's matrix product counts
    (``MC.step_flops``), with ``s`` of the ``n`` input channels (a
    Bernoulli sample in forward mode at its second bucket), and the norms
    its sampler reads.  Batch norm, pooling and activations are not
    counted (no products)."""
    total = 0
    sampler = self.config.sampler if self.kind == "mc" else None
    mode = self.config.mode if self.kind == "mc" else None
    for i, cs in enumerate(self.conv_shapes(batch_size)):
      n, m, k = cs.x[3], cs.out[3], cs.kernel
      per_channel = cs.out[0] * cs.out[1] * cs.out[2] * m * k * k
      full = per_channel * n
      products = 2 if i == 0 else 3
      if exact or cs.num_samples is None:
        total += full * products
        continue
      s = mc_kernels.num_slots(n, num_samples=cs.num_samples, sampler=sampler)
      if mode == "forward" and sampler == "bernoulli":
        # Counted at the bucket holding c + 2 sqrt(c) kept channels (about
        # 98% of draws; mc.conv.bernoulli_buckets).
        buckets = mconv.bernoulli_buckets(n, cs.num_samples)
        s = buckets[min(1, len(buckets) - 1)]
      x_norms = cs.x[0] * cs.x[1] * cs.x[2] * n
      if mode == "forward":
        total += per_channel * s * products + x_norms + k * k * s * m
      elif mode == "blackbox":
        total += per_channel * s + full * (products - 1) + x_norms + k * k * n * m
      else:
        c_m, c_b = mc_kernels.backward_num_samples(
            batch_size, n, m, num_samples=cs.num_samples)
        total += (full + full * c_b // batch_size + full * c_m // m
                  + cs.out[0] * cs.out[1] * cs.out[2] * m + k * k * n * m)
    return total

  def exact_flops(self, batch_size: int) -> int:
    return (self._conv_flops(batch_size, exact=True)
            + registry.exact_step_flops(self.head.model.sizes, batch_size))

  def step_flops(self, batch_size: int) -> int:
    """The trunk's convolutions (:meth:`_conv_flops`) and the head
    method's own count."""
    head = (registry.exact_step_flops(self.head.model.sizes, batch_size)
            if self.kind == "dense" else self.head.step_flops(batch_size))
    return self._conv_flops(batch_size, exact=False) + head

  def step_traffic(self, batch_size: int) -> Any:
    del batch_size
    return None  # not counted for CNNs
