"""Where a training step's time goes: a profile of the compiled step, by part.

The benchmark's ``--breakdown`` runs one call of a method's compiled
training loop under ``jax.profiler`` and adds up the time of each XLA
operation it ran, by *part*.  An operation's part is read from the JAX name
stack that XLA keeps in its metadata (``op_name``):

* a named scope of :data:`PARTS` (``jax.named_scope("draw")``, which
  differentiation wraps as ``jvp(draw)`` and ``transpose(jvp(draw))``), the
  innermost one, where a method marks its work -- the sampling
  probabilities, the draw, hashing and selecting active nodes, gathers, the
  small products, the optimizer update, rebuilding hash tables, a native
  kernel;
* else ``forward`` (under ``jvp``), ``backward`` (under ``transpose``) or
  ``other`` (the loop, the batch's slicing, the loss's bookkeeping).

XLA fuses operations; a fusion is charged to the part of the operation it
was named after (its root), so the parts are an attribution, not an exact
partition.

A native kernel is one operation to XLA; where its library times its own
phases (``csrc/profile.h``: ALSH's hash, select, forward, backward,
update and the incremental schedule's rehash), the ``native`` part is split among them as ``native.<phase>``, in
proportion to the time each took summed over the kernel's threads, and
``native.other`` is what no phase timed (parsing, bookkeeping).  Parts are milliseconds per step; ``unattributed`` is the call's
time outside any operation (dispatch, the loop's own control).
"""

from __future__ import annotations

import collections
import contextlib
import glob
import gzip
import json
import os
import re
import tempfile
import time
from typing import Callable

import jax

# Named scopes a method may put its work under, in the order they print.
PARTS = ("probabilities", "draw", "hash", "select", "gather", "product",
         "update", "rebuild", "native")
# Then the parts every step has.
DEFAULT_PARTS = ("forward", "backward", "other")

# The opcode is the first 'word(' after the '=' (a tuple type's '(' follows
# a space, and its /*index=N*/ comments hold no '(').
_INSTRUCTION = re.compile(
    r"^\s*(?:ROOT\s+)?%?(?P<name>[\w.\-]+)\s*=\s.*?(?<![\w\-])"
    r"(?P<opcode>[a-z][\w\-]*)\((?:.*?metadata=\{(?P<meta>[^}]*)\})?")
_OP_NAME = re.compile(r'op_name="([^"]*)"')
# Operations that contain others (their time is their children's).
_CONTAINERS = ("while", "conditional", "call", "async-start", "async-done")


def part_of(op_name: str) -> str:
  """The part of an operation, from its JAX name stack ``op_name``."""
  path = op_name.split("/")[:-1]  # the last component is the primitive
  for component in reversed(path):
    # Differentiation wraps a scope's name: 'transpose(jvp(product))'.
    for name in reversed(re.findall(r"[\w.]+", component)):
      if name in PARTS:
        return name
  if any(c.startswith("transpose(") for c in path):
    return "backward"
  if any(c.startswith("jvp(") for c in path):
    return "forward"
  return "other"


def op_parts(hlo_text: str) -> dict[str, str]:
  """Part of every operation of a compiled module, by instruction name
  (operations that contain others are left out)."""
  out = {}
  for line in hlo_text.splitlines():
    match = _INSTRUCTION.match(line)
    if not match or match["opcode"] in _CONTAINERS:
      continue
    # Operations XLA adds (copies) carry no metadata: 'other'.
    op_name = _OP_NAME.search(match["meta"] or "")
    out[match["name"]] = part_of(op_name[1] if op_name else "")
  return out


def _trace_events(log_dir: str) -> list[dict]:
  files = glob.glob(os.path.join(log_dir, "**", "*.trace.json.gz"),
                    recursive=True)
  if not files:
    raise RuntimeError(f"jax.profiler wrote no trace under {log_dir}")
  with gzip.open(max(files, key=os.path.getmtime)) as f:
    return json.load(f)["traceEvents"]


def profile_call(call: Callable[[], object], parts: dict[str, str], *,
                 warm: bool = True) -> tuple[dict[str, float], float]:
  """Runs ``call`` once under the profiler (after one untimed call, unless
  ``warm`` is False).

  Returns:
    (seconds by part, the call's wall-clock seconds).
  """
  if warm:
    jax.block_until_ready(call())  # compiled and warm
  with tempfile.TemporaryDirectory() as log_dir:
    with jax.profiler.trace(log_dir):
      t0 = time.perf_counter()
      jax.block_until_ready(call())
      wall = time.perf_counter() - t0
    events = _trace_events(log_dir)
  seconds = collections.Counter()
  for event in events:
    if event.get("ph") == "X" and event.get("name") in parts:
      seconds[parts[event["name"]]] += event.get("dur", 0) * 1e-6
  return dict(seconds), wall


def step_breakdown(call: Callable[[], object], *, steps: int
                   ) -> dict[str, float]:
  """Milliseconds per step by part for a ``bench.step_runner`` call of
  ``steps`` steps (its ``compiled`` executable names the operations)."""
  from sampling_mlp import native  # pylint: disable=import-outside-toplevel
  parts = op_parts(call.compiled.as_text())
  jax.block_until_ready(call())  # compiled and warm
  with contextlib.ExitStack() as stack:
    phases = [stack.enter_context(lib.profiling())
              for lib in native.LIBRARIES]
    seconds, wall = profile_call(call, parts, warm=False)
  out = {}
  for p in PARTS + DEFAULT_PARTS:
    if p == "native" and p in seconds:
      out.update({k: v / steps for k, v in split_native(
          seconds[p] * 1e3, phases).items()})
    elif p in seconds:
      out[p] = seconds[p] * 1e3 / steps
  out["unattributed"] = max(0.0, wall - sum(seconds.values())) * 1e3 / steps
  return out


def split_native(native_ms: float, phases: list[dict[str, float]]
                 ) -> dict[str, float]:
  """The ``native`` part's milliseconds split among the phases the
  libraries timed (seconds, summed over threads, as ``Library.profiling``
  gives them).

  Where the phases add up to less than the kernels' time (one thread),
  each phase gets its own time and ``native.other`` the rest; where they
  add up to more (several threads at once), each gets its share of the
  kernels' time.  ``{'native': native_ms}`` if no phase was timed.
  """
  timed = collections.Counter()
  for p in phases:
    timed.update(p)
  total_ms = sum(timed.values()) * 1e3
  if total_ms <= 0:
    return {"native": native_ms}
  scale = min(1.0, native_ms / total_ms)
  out = {f"native.{name}": t * 1e3 * scale for name, t in timed.items()}
  if total_ms < native_ms:
    out["native.other"] = native_ms - total_ms
  return out
