"""Native CPU kernels for ALSH-APPROX at batch size 1 (XLA FFI).

At batch size 1 an ALSH step touches a few dozen rows of each weight matrix.
XLA's CPU backend runs a gather, an update and a scatter of those rows as
three element-by-element loops, and sorts a whole layer to pick its active
set; at one hidden layer that overhead, not arithmetic, sets the step time.
``csrc/alsh_kernels.cc`` does the same work in place, in one pass:

* :func:`select_active`: the query's hash codes, its collision counts, and
  the tie-breaking and top-``budget`` selection of
  :func:`sampling_mlp.alsh.select_active`;
* :func:`rows_matvec`: ``w[idx] @ a + b[idx]`` read straight from the slabs;
* :func:`rows_update`: lazy Adam (or SGD) of the active rows, with the
  gradient ``outer(dz, a)`` formed on the fly, written in place;
* :func:`output_step`: the output layer's logits, loss, input gradient and
  in-place update, from the last hidden layer's active nodes.

The source is compiled on first use with the system C++ compiler (``$CXX``,
else ``c++`` or ``g++``) against the FFI headers that ship with jaxlib, for
the machine it runs on (``-march=native``), and cached under
``$SAMPLING_MLP_CACHE`` (default ``~/.cache/sampling_mlp``) keyed by the
source, the jaxlib version, the compiler and the CPU.  Where no compiler is
found or the build fails, :func:`available` says why and ALSH falls back to
its pure-XLA path (``--alsh_kernel=auto``), which computes the same numbers.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import pathlib
import platform
import shutil
import subprocess
import tempfile
import threading

import jax
import jax.numpy as jnp
import numpy as np

SOURCE = pathlib.Path(__file__).parent / "csrc" / "alsh_kernels.cc"
# -mprefer-vector-width=512: where the CPU has AVX-512, the Adam loop runs
# about 15% faster with full-width vectors than with GCC's default of 256.
_FLAGS = ("-O3", "-march=native", "-mprefer-vector-width=512",
          "-fno-math-errno", "-shared", "-fPIC", "-std=c++17")
_TARGETS = {"sampling_mlp_alsh_select": "AlshSelectActive",
            "sampling_mlp_alsh_rows_matvec": "AlshRowsMatvec",
            "sampling_mlp_alsh_rows_update": "AlshRowsUpdate",
            "sampling_mlp_alsh_output_step": "AlshOutputStep"}

_lock = threading.Lock()
_status: dict = {}  # "ok": bool, "error": str, "path": str


class NativeUnavailable(RuntimeError):
  """The native kernels could not be built or loaded (the message says why)."""


def _compiler() -> str | None:
  for name in (os.environ.get("CXX"), "c++", "g++", "clang++"):
    if name and shutil.which(name):
      return shutil.which(name)
  return None


def _cpu_id() -> str:
  """What ``-march=native`` depends on: the CPU's model and feature flags."""
  try:
    with open("/proc/cpuinfo", encoding="utf-8") as f:
      lines = [l for l in f if l.startswith(("model name", "flags"))]
    return "".join(sorted(set(lines)))
  except OSError:
    return platform.processor() or platform.machine()


def cache_dir() -> pathlib.Path:
  root = os.environ.get("SAMPLING_MLP_CACHE")
  base = pathlib.Path(root) if root else pathlib.Path.home() / ".cache"
  return (base if root else base / "sampling_mlp") / "native"


def _build(cxx: str) -> pathlib.Path:
  """Compiles the kernels (or finds them in the cache); returns the .so path."""
  import jaxlib  # pylint: disable=import-outside-toplevel
  src = SOURCE.read_bytes()
  version = subprocess.run([cxx, "--version"], capture_output=True, text=True,
                           check=False).stdout
  key = hashlib.sha256(b"\0".join(
      [src, jaxlib.__version__.encode(), version.encode(),
       " ".join(_FLAGS).encode(), _cpu_id().encode()])).hexdigest()[:16]
  out = cache_dir() / f"alsh_kernels-{key}.so"
  if out.exists():
    return out
  out.parent.mkdir(parents=True, exist_ok=True)
  # Build into a temporary name and rename: concurrent processes (parallel
  # tests, several runs) never load a half-written library.
  fd, tmp = tempfile.mkstemp(suffix=".so", dir=out.parent)
  os.close(fd)
  cmd = [cxx, *_FLAGS, "-isystem", jax.ffi.include_dir(), str(SOURCE), "-o",
         tmp]
  try:
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False,
                          timeout=300)
    if proc.returncode != 0:
      raise NativeUnavailable(
          f"compiling {SOURCE.name} failed ({' '.join(cmd)}):\n"
          f"{proc.stderr.strip()[-2000:]}")
    os.replace(tmp, out)
  finally:
    if os.path.exists(tmp):
      os.unlink(tmp)
  return out


def _load() -> None:
  if jax.default_backend() != "cpu":
    raise NativeUnavailable(
        f"the native kernels are CPU kernels, but JAX's default backend is "
        f"{jax.default_backend()!r}")
  cxx = _compiler()
  if cxx is None:
    raise NativeUnavailable(
        "no C++ compiler found (set $CXX, or install g++ or clang++)")
  path = _build(cxx)
  lib = ctypes.cdll.LoadLibrary(str(path))
  for target, symbol in _TARGETS.items():
    jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(lib, symbol)),
                                platform="cpu")
  _status["path"] = str(path)


def available() -> bool:
  """Builds, loads and registers the kernels once; True if that worked."""
  with _lock:
    if "ok" not in _status:
      try:
        _load()
        _status["ok"] = True
      except (NativeUnavailable, OSError, subprocess.SubprocessError) as e:
        _status.update(ok=False, error=str(e))
    return _status["ok"]


def unavailable_reason() -> str:
  """Why :func:`available` is False ('' when it is True)."""
  available()
  return _status.get("error", "")


def require() -> None:
  """Raises NativeUnavailable (saying why) unless the kernels are usable."""
  if not available():
    raise NativeUnavailable(
        f"the native ALSH kernels are unavailable: {_status['error']}; use "
        f"--alsh_kernel=xla (or auto) to run the pure-XLA path instead.")


# -- the kernels ---------------------------------------------------------------


def select_active(qh, vals: jax.Array, rows: jax.Array | None,
                  tables: jax.Array, seed: jax.Array, *,
                  budget: int) -> tuple[jax.Array, jax.Array]:
  """Native ``alsh.select_active(seed, collisions(sparse_query_codes(...)))``.

  Hashes one query, counts its collisions with the tables and picks the
  active set with the same tie-breaking as the XLA path.  The query's
  projection sums in another order than XLA's dot, so a projection within
  rounding of a bucket boundary can land in the other bucket.

  Args:
    qh: the layer's :class:`sampling_mlp.alsh.QueryHash`.
    vals: float32 [r] the query's values on ``rows``.
    rows: uint32 [r] indices of the non-zero inputs, or None (dense query).
    tables: int32 [L, n] every node's bucket in each table.
    seed: uint32 [] tie-breaking seed.
    budget: static active-set size, 1 <= budget <= n.

  Returns:
    (idx uint32 [budget], num_colliding int32 []).
  """
  require()
  empty = jnp.zeros((0,), jnp.float32)
  return jax.ffi.ffi_call(
      "sampling_mlp_alsh_select",
      (jax.ShapeDtypeStruct((budget,), jnp.uint32),
       jax.ShapeDtypeStruct((), jnp.int32)))(
           vals.astype(jnp.float32),
           jnp.zeros((0,), jnp.uint32) if rows is None else
           rows.astype(jnp.uint32), qh.proj, qh.tail,
           empty if qh.offsets is None else qh.offsets,
           jnp.float32(1.0) if qh.bucket_width is None else qh.bucket_width,
           qh.multipliers, tables.astype(jnp.int32), seed.astype(jnp.uint32))


def rows_matvec(w: jax.Array, b: jax.Array, idx: jax.Array,
                a: jax.Array) -> jax.Array:
  """``w[idx, 0] @ a + b[idx, 0]`` for slabs w [n, S, D], b [n, S].

  Args:
    w: float32 [n, S, D] weight slab (slot 0 is the parameter).
    b: float32 [n, S] bias slab.
    idx: uint32 [s] active rows.
    a: float32 [D] input.

  Returns:
    float32 [s].
  """
  require()
  return jax.ffi.ffi_call(
      "sampling_mlp_alsh_rows_matvec",
      jax.ShapeDtypeStruct(idx.shape, jnp.float32))(w, b, idx, a)


def _optimizer_attrs(cfg) -> dict:
  return dict(lr=np.float32(cfg.learning_rate), b1=np.float32(cfg.b1),
              b2=np.float32(cfg.b2), eps=np.float32(cfg.eps))


def rows_update(w: jax.Array, b: jax.Array, idx: jax.Array, dz: jax.Array,
                a: jax.Array, count: jax.Array, *, optim):
  """Lazy Adam (S = 3) or SGD (S = 1) of rows ``idx`` of the slabs, in place.

  The rows' gradients are ``outer(dz, a)`` (weights) and ``dz`` (biases). The
  formula is :class:`sampling_mlp.optim.LazyOptimizer`'s, with Adam's bias
  corrections folded into the step size and epsilon (Kingma and Ba 2015,
  Sec. 2), which is the same up to float32 rounding.

  Args:
    w: float32 [n, S, D] weight slab; b: float32 [n, S] bias slab.
    idx: uint32 [s] distinct active rows.
    dz: float32 [s] gradient of the rows' pre-activations.
    a: float32 [D] the layer's input.
    count: int32 [] the step's (incremented) update count.
    optim: the :class:`sampling_mlp.optim.OptimConfig`; S must be 3 for
      Adam and 1 for SGD.

  Returns:
    (w, b), the updated slabs (aliasing the inputs' buffers).
  """
  require()
  return jax.ffi.ffi_call(
      "sampling_mlp_alsh_rows_update",
      (jax.ShapeDtypeStruct(w.shape, w.dtype),
       jax.ShapeDtypeStruct(b.shape, b.dtype)),
      input_output_aliases={0: 0, 1: 1})(
          w, b, idx, dz, a, count.astype(jnp.int32), **_optimizer_attrs(optim))


def output_step(w: jax.Array, b: jax.Array, rows: jax.Array, a: jax.Array,
                label: jax.Array, count: jax.Array, *, optim):
  """The output layer of one example: loss, input gradient, in-place update.

  ``logits = a @ w[rows, 0] + b[:, 0]``; the loss is the softmax
  cross-entropy with ``label``; ``da`` is its gradient with respect to ``a``
  (with the weights before the update); then ``w[rows]`` (gradient
  ``outer(a, softmax - onehot)``) and ``b`` are updated as in
  :func:`rows_update`.

  Args:
    w: float32 [n, S, C] weight slab; b: float32 [C, S] bias slab.
    rows: uint32 [s] the active nodes of the last hidden layer.
    a: float32 [s] their activations.
    label: int32 [] in [0, C).
    count: int32 [] the step's update count.
    optim: the OptimConfig.

  Returns:
    (w, b, loss [], da [s]).
  """
  require()
  return jax.ffi.ffi_call(
      "sampling_mlp_alsh_output_step",
      (jax.ShapeDtypeStruct(w.shape, w.dtype),
       jax.ShapeDtypeStruct(b.shape, b.dtype),
       jax.ShapeDtypeStruct((), jnp.float32),
       jax.ShapeDtypeStruct(a.shape, jnp.float32)),
      input_output_aliases={0: 0, 1: 1})(
          w, b, rows, a, label.astype(jnp.int32), count.astype(jnp.int32),
          **_optimizer_attrs(optim))
