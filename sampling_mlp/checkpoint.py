"""Epoch checkpoints of a training run (Orbax): a killed run resumes where
it stopped, and reaches the numbers an uninterrupted run reaches, bit for
bit.

A run's checkpoint (``<out_dir>/checkpoints/<run_id>/``) holds its latest
epoch only: every array of its :class:`~sampling_mlp.registry.TrainState`
(the parameters and the method's own state -- ALSH's hash tables and
parameter-and-moment slabs, MC-APPROX's state --, the optimizer's moments,
and the step counter, which positions ALSH's rebuild schedule and every
step key) and the result rows of the epochs so far.  The rest of what an
epoch draws derives from the seed and the epoch index
(:class:`~sampling_mlp.train.RunKeys`, the epoch's permutation), so nothing
else needs saving.  The state's structure (its graphdef) is not saved: a
restore fills a freshly built state of the same run, and checks that every
array matches it in shape and dtype.

Writes are atomic: Orbax writes each epoch into a temporary directory and
renames it into place, then deletes the previous epoch's, so a kill at any
moment leaves a whole checkpoint (the old one or the new one).

:func:`run_lock` keeps two processes from training one run at once (say, a
worker left running by a killed driver, and its replacement): the second
waits for the first to finish, then finds its finished checkpoint.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import time
from typing import Any, Iterator, Mapping

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from sampling_mlp import registry

_STATE = "state"
_META = "meta"


class CheckpointError(RuntimeError):
  """A checkpoint that does not belong to the run restoring it."""


class LockHeld(RuntimeError):
  """:func:`run_lock` with ``wait=False`` found the lock held."""


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
  """Orbax logs a dozen INFO lines per save (and warns that a reader's
  manager is read-only); keep the run's log readable."""
  old = logging.get_verbosity()
  logging.set_verbosity(logging.ERROR)
  try:
    yield
  finally:
    logging.set_verbosity(old)


def _is_key(leaf) -> bool:
  dtype = getattr(leaf, "dtype", None)
  return dtype is not None and jnp.issubdtype(dtype, jax.dtypes.prng_key)


def _to_numpy(leaf) -> np.ndarray:
  # Typed PRNG keys are saved as their raw key data.
  return np.asarray(jax.random.key_data(leaf) if _is_key(leaf) else leaf)


class RunCheckpoint:
  """The latest-epoch checkpoint of one run, in ``directory``.

  Args:
    directory: the run's own folder (created on the first save).
    run_id: the run's id, stored and checked on restore.
  """

  def __init__(self, directory: str, *, run_id: str):
    self.directory = os.path.abspath(directory)
    self.run_id = run_id

  def _manager(self, write: bool = False):
    import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel
    # Only the writer (who holds the run's lock) may clean up a killed
    # save's temporary folder: a reader could delete one being written.
    options = ocp.CheckpointManagerOptions(
        max_to_keep=1, create=write, enable_async_checkpointing=False,
        cleanup_tmp_directories=write, read_only=not write)
    with _quiet():
      return ocp.CheckpointManager(self.directory, options=options)

  def latest_epoch(self) -> int | None:
    """The epoch (1-based) the checkpoint holds, or None if there is none."""
    if not os.path.isdir(self.directory):
      return None
    with _quiet():
      return self._manager().latest_step()

  def save(self, state: registry.TrainState, rows: list[dict]) -> None:
    """Saves the state after epoch ``len(rows)`` and the rows so far,
    atomically, replacing the previous epoch's checkpoint.

    The state's buffers are read before this returns (the next epoch may
    donate them).
    """
    import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel
    paths, _ = jax.tree_util.tree_flatten_with_path(state)
    arrays = {f"leaf_{i:05d}": _to_numpy(leaf)
              for i, (_, leaf) in enumerate(paths)}
    meta = {"run_id": self.run_id, "epoch": len(rows),
            "leaves": [jax.tree_util.keystr(p) for p, _ in paths],
            "rows": json.loads(json.dumps(rows, default=_json_default))}
    with _quiet():
      manager = self._manager(write=True)
      manager.save(len(rows), args=ocp.args.Composite(**{
          _STATE: ocp.args.StandardSave(arrays),
          _META: ocp.args.JsonSave(meta)}))
      manager.wait_until_finished()
      manager.close()

  def _meta(self, manager, epoch: int) -> dict:
    import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel
    meta = manager.restore(epoch, args=ocp.args.Composite(**{
        _META: ocp.args.JsonRestore()}))[_META]
    if meta.get("run_id") != self.run_id:
      raise CheckpointError(
          f"{self.directory} holds run {meta.get('run_id')!r}, not "
          f"{self.run_id!r}; remove the folder to start the run over")
    return meta

  def rows(self) -> list[dict] | None:
    """The rows saved with the latest epoch (no state is read), or None."""
    epoch = self.latest_epoch()
    if epoch is None:
      return None
    with _quiet():
      return self._meta(self._manager(), epoch)["rows"]

  def restore(self, target: registry.TrainState
              ) -> tuple[registry.TrainState, list[dict]] | None:
    """The saved state and rows, or None if there is no checkpoint.

    Args:
      target: a freshly built state of the same run (``train.init_state``):
        it gives the structure, shapes and dtypes to fill.

    Raises:
      CheckpointError: the checkpoint is another run's, or its arrays do
        not match ``target`` (written by other code); the message says which
        folder to remove.
    """
    import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel
    epoch = self.latest_epoch()
    if epoch is None:
      return None
    paths, treedef = jax.tree_util.tree_flatten_with_path(target)
    want = {f"leaf_{i:05d}": _to_numpy(leaf)
            for i, (_, leaf) in enumerate(paths)}
    with _quiet():
      manager = self._manager()
      meta = self._meta(manager, epoch)
      names = [jax.tree_util.keystr(p) for p, _ in paths]
      if meta["leaves"] != names:
        raise CheckpointError(
            f"{self.directory}: its arrays ({len(meta['leaves'])}) are not "
            f"those of this run's state ({len(names)}); it was written by "
            "other code.  Remove the folder to start the run over")
      got = manager.restore(epoch, args=ocp.args.Composite(**{
          _STATE: ocp.args.StandardRestore(want)}))[_STATE]
      manager.close()
    leaves = []
    for (path, leaf), name in zip(paths, want):
      value = np.asarray(got[name])
      if value.shape != want[name].shape or value.dtype != want[name].dtype:
        raise CheckpointError(
            f"{self.directory}: {jax.tree_util.keystr(path)} is "
            f"{value.dtype}{list(value.shape)}, the run expects "
            f"{want[name].dtype}{list(want[name].shape)}.  Remove the folder "
            "to start the run over")
      if _is_key(leaf):
        leaves.append(jax.random.wrap_key_data(
            value, impl=jax.random.key_impl(leaf)))
      else:
        leaves.append(jnp.asarray(value))
    return jax.tree.unflatten(treedef, leaves), meta["rows"]

  def remove(self) -> None:
    """Deletes the checkpoint (a finished run's)."""
    shutil.rmtree(self.directory, ignore_errors=True)


def _json_default(v):
  if isinstance(v, np.integer):
    return int(v)
  if isinstance(v, np.floating):
    return float(v)
  if isinstance(v, np.ndarray):
    return v.tolist()
  return str(v)


def lock_path(checkpoint_dir: str) -> str:
  """The lock file of the run whose checkpoint is ``checkpoint_dir``."""
  return os.path.abspath(checkpoint_dir).rstrip(os.sep) + ".lock"


def lock_holder(path: str) -> dict | None:
  """Who holds (or last held) the lock at ``path``: pid, host, job."""
  try:
    with open(path) as f:
      return json.loads(f.read() or "null")
  except (OSError, ValueError):
    return None


@contextlib.contextmanager
def run_lock(path: str, *, holder: Mapping[str, Any], label: str = "",
             wait: bool = True) -> Iterator[None]:
  """Holds an exclusive lock on ``path`` (``fcntl.flock``) for the block.

  A second process asking for the lock logs who holds it and waits (or,
  with ``wait=False``, raises :class:`LockHeld`): a run is trained, and a
  results file written, by one process at a time.  The lock dies with its
  process (a kill releases it); on NFS, ``flock`` works across nodes (Linux
  maps it to POSIX locks there).

  Args:
    path: the lock file (created if absent).
    holder: what to write into it once held (pid, host, job id), for
      whoever waits and for the tests.
    label: the run, for the log message.
  """
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
  try:
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      if not wait:
        raise LockHeld(
            f"{label or path} is in use by another process "
            f"({lock_holder(path)}); wait for it to finish or stop it, then "
            "run again") from None
      logging.warning("run %s is being trained by another process (%s); "
                      "waiting for it to finish", label or path,
                      lock_holder(path))
      t0 = time.monotonic()
      fcntl.flock(fd, fcntl.LOCK_EX)
      logging.info("got the lock of %s after %.0f s", label or path,
                   time.monotonic() - t0)
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(dict(holder)).encode(), 0)
    os.fsync(fd)
    yield
  finally:
    os.close(fd)
