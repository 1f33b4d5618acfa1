"""STANDARD: exact training, the baseline every method is compared against."""

from __future__ import annotations

import jax
import optax

from sampling_mlp import layers, optim, registry


class Standard(registry.MethodImpl):
  """Exact forward and backward passes; a dense Optax update."""

  def __init__(self, model, optim_cfg, config):
    super().__init__(model, optim_cfg, config)
    self.tx = optim.make_optax(optim_cfg)

  def init(self, key, params):
    del key
    return registry.TrainState(params, self.tx.init(params), (),
                               registry.zero_step())

  def loss(self, params, x, y):
    logits = layers.mlp_apply(params, x, activation=self.model.activation)
    return registry.cross_entropy(logits, y)

  def train_step(self, state, x, y, key):
    del key  # exact training draws nothing
    loss, grads = jax.value_and_grad(self.loss)(state.params, x, y)
    updates, opt_state = self.tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    return state._replace(params=params, opt_state=opt_state,
                          step=state.step + 1), {"loss": loss}


SPEC = registry.register(registry.MethodSpec(
    name="standard",
    summary="exact training (STANDARD)",
    build=Standard,
    saves_compute="no: the exact baseline",
))
