"""STANDARD: exact training, the baseline every method is compared against.

:class:`DenseStep` is the training step of every method whose forward pass
computes every product densely (STANDARD, Dropout, Adaptive Dropout): the
gradient of the model's training-time forward pass, applied by Optax to
every parameter.  Such a method only builds its model.
"""

from __future__ import annotations

import jax
from flax import nnx
import optax

from sampling_mlp import model as model_lib
from sampling_mlp import optim, registry


class DenseStep(registry.MethodImpl):
  """Dense gradient of ``model.forward`` and a dense Optax update."""

  def __init__(self, model, optim_cfg, config):
    super().__init__(model, optim_cfg, config)
    self.tx = optim.make_optax(optim_cfg)

  def init_optimizer(self, model):
    return self.tx.init(nnx.state(model, nnx.Param))

  def train_step(self, state, x, y, rand):
    graphdef, params, rest = nnx.split(state.view(), nnx.Param, ...)

    def loss_fn(params):
      outs = nnx.merge(graphdef, params, rest).forward(rand, x)
      return registry.cross_entropy(outs[-1].a, y)

    loss, grads = jax.value_and_grad(loss_fn)(params)
    with jax.named_scope("update"):
      updates, opt_state = self.tx.update(grads, state.opt_state, params)
      params = optax.apply_updates(params, updates)
    model = nnx.merge(graphdef, params, rest)
    return state.replace(model=nnx.state(model), opt_state=opt_state,
                         step=state.step + 1), {"loss": loss}


class Standard(DenseStep):
  """STANDARD: exact forward and backward passes, dense Adam."""

  saves_compute = "no: the exact baseline"

  def build_model(self, key, params):
    del key  # nothing to draw
    return model_lib.dense_mlp(params, activation=self.model.activation,
                               **self.model.network)


# paper_batch_size: mini-batches, not the paper's 1 (at batch size 1 a run
# of 3 or more hidden layers takes 2 to 4 hours here).
SPEC = registry.register(registry.MethodSpec(
    name="standard", build=Standard, keep_all={}, paper_batch_size=128))
