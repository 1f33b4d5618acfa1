"""Native CPU kernels for MC-APPROX (XLA FFI): forward mode's row update
and backward mode's update from the weight gradient's factors
(:func:`factored_update`, whose definition is
``ColumnSampledDense.update_factored`` with jax.numpy).

A forward-mode step updates only the weight rows its draw sampled (with
their optimizer moments, which ``RowSampledDense`` keeps beside them in one
slab) and recomputes those rows' norms.  In XLA that is a gather, a
concatenation, the optimizer's fusions and a scatter, each a pass through
memory; ``csrc/mc_kernels.cc`` does it in one pass, in place, on every
thread of XLA's pool: :func:`update_rows`.

``RowSampledDense.update_rows`` with jax.numpy (``optim.update_slab``) is
the definition; ``tests/test_mc_native.py`` holds the kernel equal to it.
The kernel is compiled on first use -- the first forward-mode step, or
``python -m sampling_mlp.native --build`` ahead of time -- and cached, as
``sampling_mlp.native`` describes; where it cannot be built,
``--mc_kernel=auto`` uses the XLA update, which computes the same numbers.
"""

from __future__ import annotations

import pathlib
import sys

import jax
import jax.numpy as jnp

from sampling_mlp import native as _native
from sampling_mlp.native import NativeUnavailable, Status  # noqa: F401

LIBRARY = _native.Library(
    "MC", pathlib.Path(__file__).parent / "csrc" / "mc_kernels.cc",
    {"sampling_mlp_mc_update_rows": "McUpdateRows",
     "sampling_mlp_mc_factored_update": "McFactoredUpdate"},
    fallback="use --mc_kernel=xla (or auto) to update with XLA instead.")
status, available, require = LIBRARY.status, LIBRARY.available, LIBRARY.require


def update_rows(slab: jax.Array, norms: jax.Array, rows: jax.Array,
                grads: jax.Array, count: jax.Array, *,
                optim) -> tuple[jax.Array, jax.Array]:
  """Lazy update of a slab's rows and of their norms, in place.

  Args:
    slab: float32 [n, S, m] weights (slot 0) and moments (S = 3: Adam; S = 1:
      SGD), as ``optim.init_slab`` lays them out.
    norms: float32 [n] the kept row norms.
    rows: int32 [r] the rows to update, distinct; entries outside [0, n)
      are skipped (padding).
    grads: float32 [r, m] their gradients.
    count: int32 [] the update count after this step (Adam's t).
    optim: the :class:`sampling_mlp.optim.OptimConfig`.

  Returns:
    (slab, norms) updated; they alias the inputs' buffers.
  """
  require()
  return jax.ffi.ffi_call(
      "sampling_mlp_mc_update_rows",
      (jax.ShapeDtypeStruct(slab.shape, jnp.float32),
       jax.ShapeDtypeStruct(norms.shape, jnp.float32)),
      input_output_aliases={0: 0, 1: 1})(
          slab.astype(jnp.float32), norms.astype(jnp.float32),
          rows.astype(jnp.int32), grads.astype(jnp.float32),
          count.astype(jnp.int32), **_native.optimizer_attrs(optim))


def factored_update(w: jax.Array, m: jax.Array, v: jax.Array, a: jax.Array,
                    d: jax.Array, count: jax.Array, *, optim
                    ) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
  """Dense update of ``w`` with the gradient ``a.T @ d``, never formed,
  and the updated weights' column norms.

  Args:
    w: float32 [n, m] weights.
    m, v: float32 [n, m] each, Adam's moments; for SGD empty ([0]).
    a, d: float32 [c, n] and [c, m], the gradient's factors.
    count: int32 [] the update count after this step (Adam's t).
    optim: the :class:`sampling_mlp.optim.OptimConfig`.

  Returns:
    (w, m, v, col_norms [m]); the moments alias the inputs' buffers.  The
    weights are written to a new buffer: the backward pass's column gathers
    read the old ones, and an in-place update made XLA copy them twice.
  """
  require()
  return jax.ffi.ffi_call(
      "sampling_mlp_mc_factored_update",
      (jax.ShapeDtypeStruct(w.shape, jnp.float32),
       jax.ShapeDtypeStruct(m.shape, jnp.float32),
       jax.ShapeDtypeStruct(v.shape, jnp.float32),
       jax.ShapeDtypeStruct((w.shape[1],), jnp.float32)),
      input_output_aliases={1: 1, 2: 2})(
          w.astype(jnp.float32), m.astype(jnp.float32),
          v.astype(jnp.float32), a.astype(jnp.float32),
          d.astype(jnp.float32), count.astype(jnp.int32),
          **_native.optimizer_attrs(optim))


def main(argv=None) -> int:
  return LIBRARY.main(argv, prog="python -m sampling_mlp.methods.mc.native")


if __name__ == "__main__":
  sys.exit(main())
