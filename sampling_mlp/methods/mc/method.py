"""The MC-APPROX training method: every node computed, each product
estimated from sampled column-row pairs (Drineas, Kannan and Mahoney 2006;
Adelman et al. 2021).  Evaluation is exact.

:func:`sampled_layer` is the method's one per-layer function; the training
step, the approximate forward pass and the error analysis all compose it
through :class:`MCDense`, the layer module.

Which products are sampled: the products between hidden layers.  The
output layer is exact unless ``mc_sample_output`` (as in ALSH-APPROX, which
keeps the two methods comparable), and the input layer's ``x @ W1`` is exact
unless ``mc_sample_input``: its pairs are pixels, whose norms over a batch
are nearly equal, so every sampler degenerates to uniform pixel dropout
(``docs/DESIGN.md`` has the measurement).

Forward mode saves real work end to end: a sampled layer reads its weights
only at the sampled rows, the gradient is taken with respect to those rows
(a zero ``delta`` added to them) and never formed densely, and the
optimizer updates only them (lazy Adam; repeated draws of a row are summed
first).  Biases and exact layers get the dense update.  Backward mode's
weight gradient is dense but of low rank, ``A.T @ D`` over the sampled
batch rows: its layers take A and D from the backward pass and update every
weight from them in one pass (:class:`ColumnSampledDense`), never forming
the gradient, and keep their columns' norms, which the next step's draw
reads.  Black-box mode produces a dense weight gradient by construction
(``mc_matmul``'s custom VJP) and updates densely.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

from absl import logging
import jax
import jax.numpy as jnp
from flax import nnx

from sampling_mlp import layers, optim, registry
from sampling_mlp import model as model_lib
from sampling_mlp.layers import LayerOut, LayerParams
from sampling_mlp.methods.mc import kernels


class Draw(NamedTuple):
  """The pairs a forward-mode layer sampled: ``idx`` int32 [s] and
  ``scale`` [s] (see ``kernels.sample_pairs``)."""

  idx: jax.Array
  scale: jax.Array


def sampled_layer(key: jax.Array, a: jax.Array, layer: LayerParams, *,
                  num_samples: int | None, sampler: str, mode: str,
                  activation: str | None,
                  delta: jax.Array | None = None,
                  w_norms: jax.Array | None = None) -> LayerOut:
  """One layer of MC-APPROX: ``f(a @ w + b)`` with a sampled product.

  Args:
    key: typed key of this layer's draw (unused when exact).
    a: [B, n] the layer's input.
    layer: its weights ``w`` [n, m] and bias ``b`` [m].
    num_samples: c, the pairs to sample, or None for the exact product
      (``c >= n`` is exact too).
    sampler: one of ``kernels.SAMPLERS``.
    mode: one of ``kernels.MODES``.
    activation: the hidden activation, or None for the output layer.
    delta: forward mode: zeros [s, m] added to the sampled rows; the
      gradient with respect to it is the sampled rows' gradient.  Backward
      mode: ``mc_matmul``'s ``dw_factors``, whose cotangents are the weight
      gradient's factors.
    w_norms: forward mode: [n] the norms of w's rows; backward mode: [m]
      those of its columns; if the caller keeps them (then the draw does
      not read them from w).

  Returns:
    LayerOut; in forward mode ``aux`` is the :class:`Draw` (else None).
  """
  n = a.shape[1]
  draw = None
  if num_samples is None or num_samples >= n:
    z = a @ layer.w
  elif mode == "forward":
    idx, scale = kernels.sample_pairs(key, a, layer.w,
                                      num_samples=num_samples, sampler=sampler,
                                      w_norms=w_norms)
    with jax.named_scope("gather"):
      rows = layer.w[idx] if delta is None else layer.w[idx] + delta
    z = kernels.sampled_product(a, rows, idx, scale)
    draw = Draw(idx, scale)
  elif mode == "backward":
    z = kernels.mc_matmul(key, a, layer.w, num_samples=num_samples,
                          sampler=sampler, mode=mode, w_norms=w_norms,
                          dw_factors=delta)
  else:
    z = kernels.mc_matmul(key, a, layer.w, num_samples=num_samples,
                          sampler=sampler, mode=mode)
  z = z + layer.b
  return LayerOut(z, layers.activate(activation, z), None, draw)


def _with_bias(w: jax.Array, b) -> LayerParams:
  """``LayerParams(w, b)``; a zero bias for a bias-free layer (``b`` None)."""
  return LayerParams(w, jnp.zeros(w.shape[1], w.dtype) if b is None
                     else b[...])


class RowNorms(nnx.Variable):
  """The norms ``||w[t, :]||`` of a forward-mode layer's rows, [n]."""


class ColumnNorms(nnx.Variable):
  """The norms ``||w[:, j]||`` of a backward-mode layer's columns, [m]."""


class Weight(nnx.Variable):
  """Weights a layer updates itself (not an ``nnx.Param``: the training
  step does not differentiate them)."""


class Moments(nnx.Variable):
  """An optimizer moment of a :class:`Weight` (Adam's m or v), [n, m];
  empty ([0]) for SGD."""


class MCDense(model_lib.Dense):
  """A layer of :func:`sampled_layer` whose weights are read whole and
  updated densely: the MLP's exact layers and black-box mode's sampled
  ones (and every sampled layer of a CNN's head, whose weights the CNN's
  optimizer updates, in backward mode from the dense gradient)."""

  draws = True  # every layer takes a key, used or not (one key per layer)

  def __init__(self, params, *, activation, num_samples, sampler, mode,
               **network):
    super().__init__(params, activation=activation, **network)
    self.num_samples, self.sampler, self.mode = num_samples, sampler, mode

  def __call__(self, rand, a, delta=None):
    del delta
    out = sampled_layer(rand, a, self.params(), num_samples=self.num_samples,
                        sampler=self.sampler, mode=self.mode,
                        activation=self.activation)
    return out, out.a


class RowSampledDense(model_lib.Layer):
  """A forward-mode sampled layer: reads, differentiates and updates only
  its sampled rows.

  The weights and their optimizer moments are one slab [n, S, m]
  (``optim.init_slab``): a step gathers the sampled rows' parameters for
  the product and updates rows, moments included, with one gather and one
  scatter.  The rows' norms, which the draw needs, are kept too
  (``RowNorms``): a step changes only the rows it updates, so it recomputes
  only theirs, and ``refresh_norms`` recomputes all of them (every epoch's
  end) so that the kept norms are always those of the current weights.
  The bias is an ordinary Param with a dense update (none if
  ``bias=False``).
  """

  draws = True

  def __init__(self, params, *, activation, num_samples, sampler,
               optim_cfg, bias=True):
    self.w = model_lib.Slab(optim.init_slab(optim_cfg, params.w, 1))
    self.b = nnx.Param(params.b) if bias else None
    self.norms = RowNorms(kernels.norms(params.w, axis=1))
    self.activation, self.num_samples, self.sampler = (activation,
                                                       num_samples, sampler)

  def params(self) -> LayerParams:
    return _with_bias(self.w[...][:, 0], self.b)

  def slots(self) -> int:
    return kernels.num_slots(self.w.shape[0], num_samples=self.num_samples,
                             sampler=self.sampler)

  def __call__(self, rand, a, delta=None):
    out = sampled_layer(rand, a, self.params(), num_samples=self.num_samples,
                        sampler=self.sampler, mode="forward",
                        activation=self.activation, delta=delta,
                        w_norms=self.norms[...])
    return out, out.a

  def zero_delta(self, batch_size):
    del batch_size
    return jnp.zeros((self.slots(), self.w.shape[2]), self.w.dtype)

  def update_rows(self, cfg: optim.OptimConfig, rows: jax.Array,
                  g: jax.Array, count: jax.Array, *,
                  native: bool = False) -> None:
    """Lazy update of ``rows`` [r] (distinct; >= n unused) with their
    gradient ``g`` [r, m], and of their kept norms; ``native``: by the C++
    kernel (``native.update_rows``), in place, else with jax.numpy (the
    definition)."""
    slab = self.w[...]
    if native:
      from sampling_mlp.methods.mc import native as _native  # pylint: disable=import-outside-toplevel
      self.w[...], self.norms[...] = _native.update_rows(
          slab, self.norms[...], rows, g, count, optim=cfg)
      return
    block = optim.update_slab(cfg, slab.at[rows].get(mode="fill",
                                                     fill_value=0),
                              g, count, axis=1)
    self.w[...] = slab.at[rows].set(block, mode="drop")
    self.norms[...] = self.norms[...].at[rows].set(
        kernels.norms(block[:, 0], axis=1), mode="drop")

  def refresh_norms(self) -> None:
    self.norms[...] = kernels.norms(self.w[...][:, 0], axis=1)


class ColumnSampledDense(model_lib.Layer):
  """A backward-mode sampled layer: exact forward product, sampled backward
  products (``mc_matmul``), and an update from the weight gradient's
  factors.

  The weight gradient of a step is ``A.T @ D`` [n, m] with A [s_b, n] and D
  [s_b, m] the scaled inputs and output gradients of the s_b sampled batch
  rows.  The layer receives A and D (the cotangents of ``zero_delta``) and
  updates every weight and its moments from them (``update_factored``),
  recomputing its columns' norms, which the next step's backward draw reads
  (``ColumnNorms``), from the updated weights in the same pass.  The kept
  norms are those of the current weights up to rounding;
  ``refresh_norms`` recomputes them (every epoch's end).  The bias is an
  ordinary Param with a dense update (none if ``bias=False``).
  """

  draws = True

  def __init__(self, params, *, activation, num_samples, sampler,
               optim_cfg, bias=True):
    self.w = Weight(params.w)
    shape = params.w.shape if optim_cfg.name == "adam" else (0,)
    self.m1 = Moments(jnp.zeros(shape, params.w.dtype))
    self.m2 = Moments(jnp.zeros(shape, params.w.dtype))
    self.b = nnx.Param(params.b) if bias else None
    self.norms = ColumnNorms(kernels.norms(params.w, axis=0))
    self.activation, self.num_samples, self.sampler = (activation,
                                                       num_samples, sampler)

  def params(self) -> LayerParams:
    return _with_bias(self.w[...], self.b)

  def __call__(self, rand, a, delta=None):
    out = sampled_layer(rand, a, self.params(), num_samples=self.num_samples,
                        sampler=self.sampler, mode="backward",
                        activation=self.activation, delta=delta,
                        w_norms=self.norms[...])
    return out, out.a

  def zero_delta(self, batch_size):
    n, m = self.w.shape
    _, c_b = kernels.backward_num_samples(batch_size, n, m,
                                          num_samples=self.num_samples)
    s_b = kernels.backward_factor_rows(batch_size, c_b, sampler=self.sampler)
    return (jnp.zeros((s_b, n), jnp.float32), jnp.zeros((s_b, m), jnp.float32))

  def update_factored(self, cfg: optim.OptimConfig, a: jax.Array,
                      d: jax.Array, count: jax.Array, *,
                      native: bool = False) -> None:
    """The optimizer's update of every weight with gradient ``a.T @ d``
    (a [s_b, n], d [s_b, m]), and of the column norms; ``native``: by the
    C++ kernel (``native.factored_update``: the moments in place, the
    weights into a new buffer), without forming the gradient, else with
    jax.numpy (the definition)."""
    if native:
      from sampling_mlp.methods.mc import native as _native  # pylint: disable=import-outside-toplevel
      self.w[...], self.m1[...], self.m2[...], self.norms[...] = (
          _native.factored_update(self.w[...], self.m1[...], self.m2[...], a,
                                  d, count, optim=cfg))
      return
    g = a.T @ d
    slots = ((self.w[...], self.m1[...], self.m2[...]) if cfg.name == "adam"
             else (self.w[...],))
    new = optim.slot_update(cfg, slots, g, count)
    self.w[...] = new[0]
    if len(new) > 1:
      self.m1[...], self.m2[...] = new[1:]
    self.norms[...] = kernels.norms(new[0], axis=0)

  def refresh_norms(self) -> None:
    self.norms[...] = kernels.norms(self.w[...], axis=0)


def batch_axis_cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """The public MC example's loss: log-softmax over the *batch* axis.

  Wrong on purpose, kept to test whether it explains MC-APPROX_S failing: at
  batch size 1, ``log_softmax`` over a single row is identically 0, so the
  loss is constant and no gradient flows.
  """
  logp = jax.nn.log_softmax(logits, axis=0)
  return -jnp.mean(jnp.take_along_axis(logp, labels[:, None], axis=1))


def _ratio_error(v):
  return None if 0 < v <= 1 else "must be in (0, 1] (a fraction of the pairs)"


@dataclasses.dataclass(frozen=True)
class MCConfig(registry.MethodConfig):
  """MC-APPROX's options (flags ``--mc_*``)."""

  prefix = "mc_"
  sampler: str = registry.option(
      "bernoulli", "Column-row pair sampler (bernoulli: Adelman et al. 2021).",
      choices=kernels.SAMPLERS)
  ratio: float = registry.option(
      0.1, "Fraction of column-row pairs sampled per product (the MC code's "
      "sample_ratio).", check=_ratio_error)
  min_k: int = registry.option(
      1, "Sample at least this many pairs (the MC code's minimal_k).",
      check=lambda v: None if v >= 0 else "must be >= 0")
  mode: str = registry.option(
      "forward", "Where sampling happens: forward, backward or blackbox "
      "(Adelman et al.).", choices=kernels.MODES)
  sample_output: bool = registry.option(
      False, "Also sample the output layer's product (default: exact output "
      "layer).")
  sample_input: bool = registry.option(
      False, "Also sample the input layer's product x @ W1 (its columns are "
      "pixels).")
  kernel: str = registry.option(
      "auto", "How forward mode updates its sampled rows and backward mode "
      "its weights: 'native' (C++ kernels, one pass), 'xla' (jax.numpy, the "
      "definition) or 'auto' (native where it builds).",
      choices=("auto", "native", "xla"))
  loss_axis: str = registry.option(
      "classes", "Axis of the training loss's log-softmax: 'classes' "
      "(correct) or 'batch' (the public MC example's bug, for the "
      "MC-APPROX_S study).", choices=("classes", "batch"))


class MC(registry.MethodImpl):
  """MC-APPROX: products estimated from sampled column-row pairs (Drineas et
  al. 2006; Adelman et al. 2021).

  See the module docstring.
  """

  saves_compute = ("yes in forward mode: multiplies only the sampled rows "
                   "and updates only them; backward mode samples both "
                   "backward products and updates from the weight "
                   "gradient's factors")

  def __init__(self, model, optim_cfg, config):
    super().__init__(model, optim_cfg, config)
    sizes, c = model.sizes, config
    last = len(sizes) - 2
    self.sampled = tuple(
        (k > 0 or c.sample_input) and (k < last or c.sample_output)
        for k in range(last + 1))
    self.num_samples = tuple(
        kernels.num_samples_for(n, ratio=c.ratio, min_k=c.min_k)
        for n in sizes[:-1])
    self.lazy = optim.lazy(optim_cfg)
    self.loss = (batch_axis_cross_entropy if c.loss_axis == "batch"
                 else registry.cross_entropy)

  def _use_native(self) -> bool:
    """Whether forward mode's row updates and backward mode's factored
    updates run the C++ kernels
    (``Library.use``: decided when the first step is traced, so nothing is
    compiled before it is needed)."""
    if self.config.kernel == "xla":
      return False
    from sampling_mlp.methods.mc import native  # pylint: disable=import-outside-toplevel
    return native.LIBRARY.use(self.config.kernel)

  def _active(self, k: int) -> bool:
    """Whether layer k is sampled (c < n; c >= n is the exact product)."""
    return self.sampled[k] and self.num_samples[k] < self.model.sizes[k]

  def _self_updating(self, c: int | None) -> bool:
    """Whether a layer sampling ``c`` pairs updates its own weights (forward
    and backward modes).  Not under weight normalisation: the gradient of
    every node's ``v`` is then dense (the normalisation couples each node's
    weights), so those layers fall back to :class:`MCDense`, the same
    sampled products with the gradient by autodiff and a dense update."""
    return (c is not None and self.config.mode in ("forward", "backward")
            and not self.model.weight_norm)

  def build_model(self, key, params):
    del key
    last = len(params) - 1
    out = []
    network = self.model.network
    if self.model.weight_norm and self.config.mode in ("forward",
                                                       "backward"):
      logging.info(
          "mc: with --weight_norm the %s-mode layers are updated densely "
          "(MCDense): each node's whole v gets a gradient, so the sparse "
          "row update (forward) and the factored update (backward) do not "
          "apply; the sampled products are unchanged", self.config.mode)
    for k, p in enumerate(params):
      act = None if k == last else self.model.activation
      c = self.num_samples[k] if self._active(k) else None
      if self._self_updating(c):
        cls = (RowSampledDense if self.config.mode == "forward"
               else ColumnSampledDense)
        out.append(cls(p, activation=act, num_samples=c,
                       sampler=self.config.sampler, optim_cfg=self.optim,
                       bias=network["bias"]))
      else:
        out.append(MCDense(p, activation=act, num_samples=c,
                           sampler=self.config.sampler,
                           mode=self.config.mode, **network))
    return model_lib.MLP(out)

  def _dense_part(self, model):
    """The parameters the lazy optimizer updates densely (``raw()``; the
    sampled layers of forward and backward modes update their own weights,
    and bias-free layers have no bias)."""
    return tuple(LayerParams(None, None if l.b is None else l.b[...])
                 if isinstance(l, _SELF_UPDATED) else l.raw()
                 for l in model.layers)

  def init_optimizer(self, model):
    return self.lazy.init(self._dense_part(model))

  def end_epoch(self, state, key):
    """Recomputes every kept row or column norm from the weights (see
    ``RowSampledDense``, ``ColumnSampledDense``)."""
    del key
    model = state.view()
    for layer in model.layers:
      if isinstance(layer, _SELF_UPDATED):
        layer.refresh_norms()
    return state.replace(model=nnx.state(model))

  def train_step(self, state, x, y, rand):
    model = state.view()
    # Differentiable: the Params (exact and black-box weights, all biases);
    # the forward- and backward-mode sampled weights get their gradient
    # through deltas (the sampled rows' gradient; the gradient's factors).
    graphdef, diff, rest = nnx.split(model, nnx.Param, ...)
    deltas = model.zero_deltas(x.shape[0])

    def loss_fn(diff, deltas):
      outs = nnx.merge(graphdef, diff, rest).forward(rand, x, deltas)
      return self.loss(outs[-1].a, y), [o.aux for o in outs]

    (loss, draws), (g_diff, g_deltas) = jax.value_and_grad(
        loss_fn, argnums=(0, 1), has_aux=True)(diff, deltas)
    # The optimizer: sampled rows by the lazy row update, backward mode's
    # weights from their gradient's factors, the rest by the lazy
    # optimizer.
    with jax.named_scope("update"):
      g_model = nnx.merge(graphdef, g_diff, rest)
      count = state.opt_state.count + 1
      grads, native = [], None
      for k, layer in enumerate(model.layers):
        g = g_model.layers[k]
        if isinstance(layer, RowSampledDense):
          native = self._use_native() if native is None else native
          rows, grows = self._rows(draws[k], g_deltas[k], layer.w.shape[0])
          layer.update_rows(self.optim, rows, grows, count, native=native)
          grads.append(LayerParams(None, _bias_of(g)))
        elif isinstance(layer, ColumnSampledDense):
          native = self._use_native() if native is None else native
          layer.update_factored(self.optim, *g_deltas[k], count,
                                native=native)
          grads.append(LayerParams(None, _bias_of(g)))
        else:
          grads.append(g.raw())
      new, opt_state = self.lazy.update(tuple(grads), state.opt_state,
                                        self._dense_part(model))
      for layer, p in zip(model.layers, new):
        if not isinstance(layer, _SELF_UPDATED):
          layer.set_raw(p)
        elif layer.b is not None:
          layer.b[...] = p.b
    return state.replace(model=nnx.state(model), opt_state=opt_state,
                         step=state.step + 1), {"loss": loss}

  def _rows(self, draw: Draw, g: jax.Array, n: int):
    """The distinct rows a draw touched and their summed gradient."""
    if self.config.sampler == "bernoulli":
      # Unused buffer slots (scale 0) must not be updated; kept pairs are
      # distinct.
      return jnp.where(draw.scale > 0, draw.idx, n), g
    if self.config.sampler == "topk":
      return draw.idx, g
    return optim.dedup_rows(draw.idx, g, n)  # with replacement

  def diagnostics(self, state, x, key, *, batch_size):
    """Per layer, the relative error ``||z_approx - z|| / ||z||`` of the
    sampled pre-activation against the exact product of the same input, on
    batches of the training batch size (the estimator's quality depends on
    it: the sampling probabilities use the batch's column norms)."""
    batch = min(batch_size, x.shape[0])
    nb = x.shape[0] // batch
    xb = x[:nb * batch].reshape(nb, batch, -1)
    params = self.params_of(state)

    def errors(xi, ki):
      outs = self.approx_forward(state, xi, ki)
      inputs = [xi] + [o.a for o in outs[:-1]]
      return jnp.stack([
          jnp.linalg.norm(o.z - e) / jnp.maximum(jnp.linalg.norm(e), 1e-30)
          for o, e in zip(outs, (a @ p.w + p.b
                                 for a, p in zip(inputs, params)))])

    errs = jax.vmap(errors)(xb, jax.random.split(key, nb))
    return {"mc_relative_error": jnp.mean(errs, axis=0)}

  def step_flops(self, batch_size: int) -> int:
    """Multiply-adds per step, including the norms the samplers read: the
    batch's column norms, and the weights' row norms -- in forward mode
    only those of the rows a step updates (the rest are kept), in
    black-box mode all of them, in backward mode the column norms (which
    the update recomputes)."""
    B, sizes, total = batch_size, self.model.sizes, 0
    for k, (n, m) in enumerate(zip(sizes[:-1], sizes[1:])):
      input_grad = k > 0
      if not self._active(k):
        total += B * n * m * (3 if input_grad else 2)
        continue
      s = kernels.num_slots(n, num_samples=self.num_samples[k],
                            sampler=self.config.sampler)
      if self.config.mode == "forward":
        total += B * s * m * (3 if input_grad else 2) + B * n + s * m
      elif self.config.mode == "blackbox":
        total += (B * s * m + B * n * m * (2 if input_grad else 1) + B * n
                  + n * m)
      else:  # backward: exact forward, both backward products sampled
        c_m, c_b = kernels.backward_num_samples(
            B, n, m, num_samples=self.num_samples[k])
        total += (B * n * m + c_b * n * m + (B * n * c_m if input_grad else 0)
                  + B * m + n * m + B * n)
    return total

  def step_traffic(self, batch_size: int) -> int:
    """Floats moved in weight-sized arrays per step (the counting of
    ``registry.exact_step_traffic``).  Forward mode: the sampled rows, read
    by the product (and the input gradient), their gradient written, their
    optimizer update and their norms (and, with the XLA update, a gather
    and a scatter of their slab rows); backward mode: w read by the exact
    forward product and by the column gather (which touches every cache
    line of w), the gathered columns, and the update from the gradient's
    factors -- with the native kernel the optimizer's reads and writes but
    no gradient, and the one copy of w XLA still makes a step (measured;
    the update writes w to a new buffer because XLA does not order the
    gather before it, and copied it twice when it was updated in place); with
    the XLA update the gradient written, the dense update and the column
    norms' read; black-box mode: the sampled rows, the exact backward
    products, every row's norm and the dense update."""
    sizes, total = self.model.sizes, 0
    opt = registry.optimizer_floats(self.optim.name)
    slots = 3 if self.optim.name == "adam" else 1
    for k, (n, m) in enumerate(zip(sizes[:-1], sizes[1:])):
      products = 3 if k > 0 else 2
      if not self._active(k):
        total += n * m * (products + opt)
        continue
      s = kernels.num_slots(n, num_samples=self.num_samples[k],
                            sampler=self.config.sampler)
      if self.config.mode == "forward":
        total += s * m * (products + opt + 1)
        if not self._use_native():
          total += 2 * slots * s * m
      elif self.config.mode == "blackbox":
        total += s * m + n * m * (products - 1 + opt + 1)
      else:
        c_m, _ = kernels.backward_num_samples(
            batch_size, n, m, num_samples=self.num_samples[k])
        gather = n * m + 2 * n * c_m if k > 0 else 0
        if self._use_native():
          # Forward read, the update from the factors (the optimizer's
          # floats but the gradient's), XLA's copy of w.
          total += n * m * (1 + (opt - 1) + 2) + gather
        else:
          # Forward read, the gradient written, the dense update, the
          # column norms' read.
          total += n * m * (2 + opt + 1) + gather
    return total


_SELF_UPDATED = (RowSampledDense, ColumnSampledDense)


def _bias_of(layer):
  """A layer's bias (or its gradient), None if it has none."""
  return None if layer.b is None else layer.b[...]


# paper_batch_size: the paper's mini-batch setting (MC-APPROX_M).
SPEC = registry.register(registry.MethodSpec(
    name="mc", build=MC, config=MCConfig, keep_all={"mc_ratio": 1.0},
    paper_batch_size=128,
    analysis_grid={"mc_sampler": kernels.SAMPLERS, "mc_ratio": (0.1, 0.5)}))
