"""A test method: STANDARD whose end-of-epoch work waits while a file
exists, so a test can kill a worker at a known point of a run.

Registered only in subprocesses (``$SAMPLING_MLP_METHODS=gated_method``),
so the in-process contract tests never see it.  With ``--gate_file=PATH``,
every epoch that ends after step ``--gate_after_steps`` blocks until PATH
is gone: a run with 6 steps per epoch and ``--gate_after_steps=6``
checkpoints epoch 1, then stops in epoch 2 until the test removes the file
(or kills it there).  Without the file it trains exactly as STANDARD does.
"""

import dataclasses
import os
import time

import jax
from jax.experimental import io_callback
import jax.numpy as jnp
import numpy as np

from sampling_mlp import registry
from sampling_mlp.methods.standard import Standard


@dataclasses.dataclass(frozen=True)
class GateConfig(registry.MethodConfig):
  prefix = "gate_"
  file: str = registry.option(
      "", "gated: epochs ending after --gate_after_steps wait while this "
      "file exists")
  after_steps: int = registry.option(
      0, "gated: the step after which epochs wait for --gate_file")


class Gated(Standard):
  """gated: STANDARD, waiting at epoch ends while a file exists."""

  def end_epoch(self, state, key):
    del key
    path, after = self.config.file, self.config.after_steps

    def wait(step):
      if path and int(step) > after:
        while os.path.exists(path):
          time.sleep(0.05)
      return np.int32(0)

    zero = io_callback(wait, jax.ShapeDtypeStruct((), jnp.int32), state.step,
                       ordered=True)
    return state.replace(step=state.step + zero)


SPEC = registry.register(registry.MethodSpec(
    name="gated", build=Gated, config=GateConfig))
