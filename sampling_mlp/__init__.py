"""sampling_mlp: sampling-based approximate matrix multiplication for MLP training.

The public API (what the README's "Using it from Python" uses, and what
entry points and tests build on):

* :mod:`sampling_mlp.registry`: methods by name -- ``names()``, ``get(name)``
  (a ``MethodSpec``; ``spec.make(model, optim, options)`` builds its
  ``MethodImpl``), ``register``, ``ModelConfig``, ``TrainState``,
  ``MethodConfig`` and ``option`` for new methods;
* :mod:`sampling_mlp.methods`: the methods of the paper -- ``standard``,
  ``dropout`` (Dropout, Adaptive Dropout), ``mc`` (MC-APPROX: kernels such
  as ``mc_matmul``, ``sample_pairs``, ``exact_mse_*`` and the per-layer
  ``sampled_layer``), ``alsh`` (ALSH-APPROX: ``init_hash``,
  ``build_tables``, ``query_hash``, ``sparse_query_codes``,
  ``select_active``, the per-layer ``active_layer``);
* :mod:`sampling_mlp.train`: ``train`` (epochs with evaluation),
  ``epochs`` (the loop), ``init_state``, ``RunKeys``, ``TrainConfig``;
* :mod:`sampling_mlp.layers` (``LayerParams``, ``LayerOut``, the exact
  forward pass), :mod:`sampling_mlp.model` (NNX layers and the MLP),
  :mod:`sampling_mlp.optim` (``OptimConfig``, ``lazy``);
* :mod:`sampling_mlp.data`: ``load_dataset`` and ``DATASETS``;
* :mod:`sampling_mlp.experiment`, :mod:`sampling_mlp.report`,
  :mod:`sampling_mlp.studies`: runs, results files, tables and plots;
  :mod:`sampling_mlp.checkpoint` (epoch checkpoints, Orbax),
  :mod:`sampling_mlp.executors` (inline, local and SLURM execution through
  submitit), :mod:`sampling_mlp.spread` (means and spreads over seeds);
* :mod:`sampling_mlp.bench`: step timing; :mod:`sampling_mlp.theory`,
  :mod:`sampling_mlp.error_analysis`, :mod:`sampling_mlp.error_report`:
  the negative result, closed form and measured.

Names starting with an underscore, and modules not listed, are internal.
"""

__version__ = "0.1.0"
