"""ALSH-APPROX: per example, only the active nodes, found by asymmetric LSH.

* :mod:`.kernels`: transforms, hash families, tables, query hashing and the
  active-set selection (pure JAX);
* :mod:`.schedule`: when the tables are rebuilt;
* :mod:`.layer`: the per-layer function ``active_layer`` and the layer
  modules, which own the parameter-and-moment slabs;
* :mod:`.method`: the training method registered as ``alsh``;
* :mod:`.native`: the fused C++ step at batch size 1 (``csrc/``).
"""

from sampling_mlp.methods.alsh.kernels import (  # noqa: F401
    DEFAULT_R, HASHES, MAX_SRP_BITS, TRANSFORM_DEFAULTS, TRANSFORMS, HashParams,
    QueryHash,
    bucket_codes, budget_for, build_tables, collisions, hash_codes,
    held_scale, init_hash, node_sketch, query_hash, recall_at_k,
    resolve_transform_params, select_active, sketch_codes, sketch_scale,
    sparse_query_codes, tie_noise, transform_queries,
    transform_weights, transformed_dim, validate_hparams)
from sampling_mlp.methods.alsh.layer import (  # noqa: F401
    Active, ActiveLayer, Sparse, SparseOutput, active_layer, output_layer)
from sampling_mlp.methods.alsh.method import ALSH, SPEC, ALSHConfig  # noqa: F401
from sampling_mlp.methods.alsh.schedule import (  # noqa: F401
    EPOCH_ONLY, PAPER_SCHEDULE, RebuildSchedule, parse_schedule,
    should_rebuild)
