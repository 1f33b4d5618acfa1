"""Building and loading the methods' native CPU kernels (XLA FFI).

A method with native kernels keeps their C++ source in its package's
``csrc/`` and wraps them in a ``native.py`` that makes one
:class:`Library`.  The JAX functions of the method are the definition; the
kernels compute the same numbers faster, and the method's tests hold them
equal.  Headers shared by every method's kernels (the optimizer of touched
rows, a parallel loop over XLA's thread pool) are in ``sampling_mlp/csrc/``.

A library is compiled on first use -- or ahead of time with
``python -m sampling_mlp.native --build``, which builds every method's --
with the system C++ compiler (``$CXX``, else ``c++``, ``g++`` or
``clang++``) against the FFI headers that ship with jaxlib, for the machine
it runs on (``-march=native``), and cached under ``$SAMPLING_MLP_CACHE``
(default ``~/.cache/sampling_mlp``) keyed by its sources and the shared
headers, the jaxlib version, the compiler, the flags and the CPU.  Any
failure to build, load or register is caught: :meth:`Library.status` says
why, and the method's ``auto`` kernel choice falls back to its pure-XLA
path.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import dataclasses
import hashlib
import importlib
import os
import pathlib
import pkgutil
import platform
import shutil
import subprocess
import sys
import tempfile
import threading

from absl import logging
import jax
import numpy as np

SHARED = pathlib.Path(__file__).parent / "csrc"
# -mprefer-vector-width=512: where the CPU has AVX-512, the optimizer loops
# run about 15% faster with full-width vectors than with GCC's default 256.
# -fopenmp-simd: `#pragma omp simd` vectorises the loops it marks (sums may
# be reordered there, and only there); no OpenMP runtime is linked.
FLAGS = ("-O3", "-march=native", "-mprefer-vector-width=512",
         "-fno-math-errno", "-fopenmp-simd", "-shared", "-fPIC",
         "-std=c++17", "-pthread")


@dataclasses.dataclass(frozen=True)
class Status:
  """Whether a library's kernels are usable.

  Attributes:
    ok: built, loaded and registered with XLA.
    reason: why not ('' when ok).
    path: the shared library ('' when not built).
  """

  ok: bool
  reason: str = ""
  path: str = ""


class NativeUnavailable(RuntimeError):
  """Native kernels could not be built or loaded (the message says why)."""


def compiler() -> str | None:
  """The C++ compiler: ``$CXX``, else the first of c++, g++, clang++."""
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
  """Where built libraries are kept."""
  root = os.environ.get("SAMPLING_MLP_CACHE")
  base = pathlib.Path(root) if root else pathlib.Path.home() / ".cache"
  return (base if root else base / "sampling_mlp") / "native"


def _sources(*dirs: pathlib.Path) -> list[pathlib.Path]:
  return [f for d in dirs for f in sorted(d.iterdir())
          if f.suffix in (".cc", ".h")]


# Every Library made, in order (the benchmark's breakdown asks the loaded
# ones for their phases).
LIBRARIES: list["Library"] = []


class Library:
  """One shared library of FFI kernels, built, loaded and registered once.

  Args:
    name: what messages call it (e.g. 'ALSH').
    source: the .cc file; the headers beside it and in ``SHARED`` are part
      of the cache key.
    targets: FFI target name -> the handler symbol the library exports.
    fallback: what to tell a user whose kernels are unavailable (e.g. 'use
      --alsh_kernel=xla (or auto) ...').
  """

  def __init__(self, name: str, source: pathlib.Path,
               targets: dict[str, str], fallback: str):
    self.name, self.source, self.fallback = name, pathlib.Path(source), fallback
    self.targets = dict(targets)
    self._status: Status | None = None
    self._lock = threading.Lock()
    self._lib = None
    self.warned = False  # the 'auto' fallback is logged once per process
    LIBRARIES.append(self)

  def _build(self, cxx: str) -> pathlib.Path:
    """Compiles the library (or finds it in the cache); returns its path."""
    import jaxlib  # pylint: disable=import-outside-toplevel
    src = b"\0".join(f.read_bytes()
                     for f in _sources(self.source.parent, SHARED))
    version = subprocess.run([cxx, "--version"], capture_output=True,
                             text=True, check=False).stdout
    key = hashlib.sha256(b"\0".join(
        [src, jaxlib.__version__.encode(), version.encode(),
         " ".join(FLAGS).encode(), _cpu_id().encode()])).hexdigest()[:16]
    out = cache_dir() / f"{self.source.stem}-{key}.so"
    if out.exists():
      return out
    out.parent.mkdir(parents=True, exist_ok=True)
    # Build into a temporary name and rename: concurrent processes (parallel
    # tests, several runs) never load a half-written library.
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=out.parent)
    os.close(fd)
    cmd = [cxx, *FLAGS, "-isystem", jax.ffi.include_dir(), "-I", str(SHARED),
           str(self.source), "-o", tmp]
    try:
      proc = subprocess.run(cmd, capture_output=True, text=True, check=False,
                            timeout=300)
      if proc.returncode != 0:
        raise NativeUnavailable(
            f"compiling {self.source.name} failed ({' '.join(cmd)}):\n"
            f"{proc.stderr.strip()[-2000:]}")
      os.replace(tmp, out)
    finally:
      if os.path.exists(tmp):
        os.unlink(tmp)
    return out

  def _load(self) -> str:
    if jax.default_backend() != "cpu":
      raise NativeUnavailable(
          f"the native kernels are CPU kernels, but JAX's default backend is "
          f"{jax.default_backend()!r}")
    cxx = compiler()
    if cxx is None:
      raise NativeUnavailable(
          "no C++ compiler found (set $CXX, or install g++ or clang++)")
    path = self._build(cxx)
    lib = ctypes.cdll.LoadLibrary(str(path))
    self._lib = lib
    for target, symbol in self.targets.items():
      if not hasattr(lib, symbol):
        raise NativeUnavailable(f"{path} has no symbol {symbol}")
      jax.ffi.register_ffi_target(
          target, jax.ffi.pycapsule(getattr(lib, symbol)), platform="cpu")
    return str(path)

  def status(self) -> Status:
    """Builds, loads and registers the kernels once and says whether that
    worked; any error on the way is caught and becomes the reason."""
    with self._lock:
      if self._status is None:
        try:
          self._status = Status(True, path=self._load())
        except Exception as e:  # pylint: disable=broad-except
          self._status = Status(
              False, reason=str(e) if isinstance(e, NativeUnavailable)
              else f"{type(e).__name__}: {e}")
      return self._status

  def phases(self) -> tuple[str, ...]:
    """The phases a loaded library times for ``--breakdown``
    (``csrc/profile.h``); () if it is not loaded or times none."""
    lib = self._lib
    if lib is None or not hasattr(lib, "sampling_mlp_phase_names"):
      return ()
    lib.sampling_mlp_phase_names.restype = ctypes.c_char_p
    names = lib.sampling_mlp_phase_names().decode()
    return tuple(n.strip().strip('"') for n in names.split(","))

  @contextlib.contextmanager
  def profiling(self):
    """Times the library's phases while the block runs; yields a dict that
    then holds seconds by phase, summed over threads (empty if the library
    times none)."""
    phases, out = self.phases(), {}
    if not phases:
      yield out
      return
    self._lib.sampling_mlp_profile(ctypes.c_int32(1))
    try:
      yield out
    finally:
      ns = (ctypes.c_uint64 * 8)()
      self._lib.sampling_mlp_phase_ns(ns)
      self._lib.sampling_mlp_profile(ctypes.c_int32(0))
      out.update({name: ns[i] * 1e-9 for i, name in enumerate(phases)})

  def use(self, kernel: str) -> bool:
    """Whether a method's ``--*_kernel`` choice runs these kernels, decided
    when its first step is traced (nothing is compiled before): 'xla'
    never; 'native' always, raising NativeUnavailable (saying why) where
    they do not work; 'auto' where they work, logging once why not."""
    if kernel == "xla":
      return False
    if kernel == "native":
      self.require()
      return True
    status = self.status()
    if not status.ok and not self.warned:
      self.warned = True
      logging.warning("%s: native kernels unavailable (%s); using the "
                      "pure-XLA path, which computes the same numbers up to "
                      "float32 rounding.", self.name, status.reason)
    return status.ok

  def available(self) -> bool:
    """``status().ok``."""
    return self.status().ok

  def require(self) -> None:
    """Raises NativeUnavailable (saying why) unless the kernels are usable."""
    st = self.status()
    if not st.ok:
      raise NativeUnavailable(
          f"the native {self.name} kernels are unavailable: {st.reason}; "
          f"{self.fallback}")

  def main(self, argv=None, prog: str | None = None) -> int:
    """``--build``: build now and say whether the kernels work (exit 1 if
    not)."""
    parser = argparse.ArgumentParser(
        prog=prog, description=f"Build (or find in the cache) {self.name}'s "
        "native kernels and say whether they work.")
    parser.add_argument("--build", action="store_true",
                        help="build the kernels now (otherwise their first "
                        "use does)")
    args = parser.parse_args(argv)
    if not args.build:
      parser.print_help()
      return 0
    return 0 if self.report() else 1

  def report(self) -> bool:
    st = self.status()
    if st.ok:
      print(f"native {self.name} kernels: ok ({st.path})")
    else:
      print(f"native {self.name} kernels: unavailable: {st.reason}",
            file=sys.stderr)
    return st.ok


def optimizer_attrs(cfg) -> dict:
  """An ``optim.OptimConfig`` as the FFI attributes ``optimizer.h`` reads."""
  return dict(lr=np.float32(cfg.learning_rate), b1=np.float32(cfg.b1),
              b2=np.float32(cfg.b2), eps=np.float32(cfg.eps))


def libraries() -> list[Library]:
  """Every method package's native library (a ``native`` module in
  ``sampling_mlp/methods/<name>/`` whose ``LIBRARY`` is a Library)."""
  from sampling_mlp import methods  # pylint: disable=import-outside-toplevel
  out = []
  for info in pkgutil.iter_modules(methods.__path__):
    if info.ispkg and (pathlib.Path(methods.__path__[0]) / info.name /
                       "native.py").exists():
      mod = importlib.import_module(f"sampling_mlp.methods.{info.name}.native")
      if isinstance(getattr(mod, "LIBRARY", None), Library):
        out.append(mod.LIBRARY)
  return out


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(
      prog="python -m sampling_mlp.native",
      description="Build (or find in the cache) every method's native "
      "kernels and say whether they work.")
  parser.add_argument("--build", action="store_true",
                      help="build them now (otherwise their first use does)")
  args = parser.parse_args(argv)
  if not args.build:
    parser.print_help()
    return 0
  results = [lib.report() for lib in libraries()]
  return 0 if all(results) else 1


if __name__ == "__main__":
  # The method packages' libraries are instances of the imported module's
  # Library, not of this __main__ copy's.
  from sampling_mlp import native as _imported  # pylint: disable=import-self
  sys.exit(_imported.main())
