"""MC-APPROX: Monte-Carlo approximate matrix products.

* :mod:`.kernels`: the pure kernels -- samplers of column-row pairs, the
  sampled product ``mc_matmul`` in its three modes, closed-form errors;
* :mod:`.method`: the per-layer function ``sampled_layer``, its layer
  module and the training method registered as ``mc``.
"""

from sampling_mlp.methods.mc.kernels import (  # noqa: F401
    MODES,
    SAMPLERS,
    backward_factor_rows,
    backward_num_samples,
    bernoulli_buffer_size,
    bernoulli_probs,
    crs_probs,
    exact_mse_bernoulli,
    exact_mse_crs,
    exact_mse_uniform,
    gathered_product,
    mc_matmul,
    norms,
    num_samples_for,
    num_slots,
    pair_norms,
    sample_from_weights,
    sample_pairs,
    sample_pairs_with_info,
    sampled_product,
)
from sampling_mlp.methods.mc.method import (  # noqa: F401
    MC,
    SPEC,
    ColumnSampledDense,
    Draw,
    MCConfig,
    MCDense,
    RowSampledDense,
    batch_axis_cross_entropy,
    sampled_layer,
)
