"""Where a sweep's runs execute: in this process, in local worker processes,
or as a SLURM job array, through submitit (Meta's library for SLURM jobs).

:func:`execute` calls ``fn(item)`` for every item and yields each outcome as
it comes in: the function's return value, or a :class:`Failure` that names
the item, says what happened and quotes the end of its log.  The caller
(the sweep's driver) records the outcomes; workers only compute.

* ``inline``: one item after another, in this process.
* ``local``: a subprocess per item (submitit's ``LocalExecutor``), at most
  ``max_parallel`` at a time, each pinned (``taskset``) to its own share of
  the cores this process may use, so that concurrent runs do not take each
  other's cores and their timings stay honest.
* ``slurm``: one job array for all items (submitit's ``SlurmExecutor``),
  ``array_parallelism`` tasks at a time.  The driver follows the tasks with
  ``squeue`` (not ``sacct``, which needs SLURM's accounting database) and
  reads each task's result file.

Jobs write their files and logs under ``folder/<job id>/`` (submitit's
pickles, ``<job id>_0_log.out`` and ``<job id>_0_log.err``).  A job that
raises, is killed (SIGKILL, ``scancel``), loses its node or hits its time
limit becomes a :class:`Failure`; the other jobs go on.  Interrupting the
driver cancels nothing: SLURM jobs, and local workers outside the
terminal's process group, finish their runs.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
from typing import Any, Callable, Iterator, NamedTuple, Sequence

from absl import logging
from tqdm.auto import tqdm

EXECUTORS = ("inline", "local", "slurm")

# submitit's local jobs default to a 2-minute limit; a run has none.
_LOCAL_TIMEOUT_MIN = 60 * 24 * 365
# How long a job may be gone from the queue before its result file shows
# up (a shared filesystem may lag), by how it ended.
_GRACE_SECONDS = {"COMPLETED": 15.0, None: 15.0}
_GRACE_FAILED = 2.0
_LIVE_STATES = {"PENDING", "RUNNING", "CONFIGURING", "COMPLETING",
                "SUSPENDED", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED",
                "RESIZING", "SIGNALING", "STAGE_OUT", "STOPPED",
                "RESV_DEL_HOLD"}
# Pending reasons of jobs that will run in time; any other is reported.
_WAITING_REASONS = {"None", "Priority", "Resources", "JobArrayTaskLimit",
                    "BeginTime", "Dependency", "QOSMaxJobsPerUserLimit",
                    "AssocMaxJobsLimit", "ReqNodeNotAvail", "Prolog"}


def parse_slurm_time(text: str) -> int:
  """Minutes in a SLURM time limit: ``M``, ``M:S``, ``H:M:S``, ``D-H``,
  ``D-H:M`` or ``D-H:M:S`` (seconds round up)."""
  m = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", text.strip())
  if not m or not text.strip():
    raise ValueError(f"--slurm_time={text!r} is not a SLURM time limit; "
                     "give minutes (90), H:M:S (1:30:00) or D-H:M:S "
                     "(2-00:00:00)")
  days, a, b, c = (int(g) if g is not None else None for g in m.groups())
  if days is not None:  # D-H[:M[:S]]
    seconds = ((days * 24 + a) * 60 + (b or 0)) * 60 + (c or 0)
  elif c is not None:  # H:M:S
    seconds = (a * 60 + b) * 60 + c
  elif b is not None:  # M:S
    seconds = a * 60 + b
  else:  # M
    seconds = a * 60
  if seconds <= 0:
    raise ValueError(f"--slurm_time={text!r} must be positive")
  return -(-seconds // 60)


@dataclasses.dataclass(frozen=True)
class ExecutorConfig:
  """How a sweep's runs execute (the ``--executor`` and ``--slurm_*`` flags).

  Attributes:
    kind: ``inline``, ``local`` or ``slurm``.
    max_parallel: local workers at a time (0: one per available core).
    slurm_partition: the partition (None: the cluster's default).
    slurm_cpus_per_task: CPUs of each job (one run).
    slurm_time: each job's time limit (SLURM's format, e.g. ``12:00:00``).
    slurm_mem: each job's memory (``4G``; None: the cluster's default).
    slurm_array_parallelism: array tasks running at a time.
    slurm_extra: other ``sbatch`` options as (name, value) pairs, e.g.
      ``(("account", "lab"), ("qos", "high"))``.
    poll_seconds: how often the driver looks at its jobs.
  """

  kind: str = "inline"
  max_parallel: int = 0
  slurm_partition: str | None = None
  slurm_cpus_per_task: int = 1
  slurm_time: str = "12:00:00"
  slurm_mem: str | None = None
  slurm_array_parallelism: int = 256
  slurm_extra: tuple[tuple[str, str | bool], ...] = ()
  poll_seconds: float = 2.0

  def __post_init__(self):
    if self.kind not in EXECUTORS:
      raise ValueError(f"--executor={self.kind!r} is not one of "
                       f"{', '.join(EXECUTORS)}")
    if self.max_parallel < 0:
      raise ValueError(f"--max_parallel must be >= 0, got "
                       f"{self.max_parallel}")
    for name in ("slurm_cpus_per_task", "slurm_array_parallelism"):
      if getattr(self, name) < 1:
        raise ValueError(f"--{name} must be >= 1, got {getattr(self, name)}")
    parse_slurm_time(self.slurm_time)
    if self.kind == "local":
      _core_slots(self.max_parallel)
    for pair in self.slurm_extra:
      if len(pair) != 2 or not pair[0]:
        raise ValueError(f"--slurm_extra: {pair!r} is not NAME=VALUE")

  @staticmethod
  def parse_extra(values: Sequence[str]
                  ) -> tuple[tuple[str, str | bool], ...]:
    """``["account=lab", "exclusive"]`` -> (name, value) pairs (a bare name
    is a switch, like ``--exclusive``)."""
    out = []
    for v in values:
      name, eq, value = v.partition("=")
      name = name.strip().lstrip("-")
      if not name:
        raise ValueError(f"--slurm_extra={v!r}: expected an sbatch option "
                         "as NAME=VALUE (e.g. account=mylab) or NAME")
      out.append((name, value if eq else True))
    return tuple(out)

  def describe(self) -> str:
    if self.kind == "slurm":
      return (f"SLURM (one job array, {self.slurm_cpus_per_task} CPU(s) "
              f"and {self.slurm_time} per run)")
    if self.kind == "local":
      return f"local workers ({len(_core_slots(self.max_parallel))} at a time)"
    return "this process, one run after another"


class Failure(NamedTuple):
  """An item that produced no result.

  Attributes:
    label: the item's name (the caller's).
    reason: what happened, in words.
    log_path: the job's log, or None (inline).
    log_tail: the end of that log (or the traceback).
  """

  label: str
  reason: str
  log_path: str | None
  log_tail: str

  def message(self) -> str:
    where = f" ({self.log_path})" if self.log_path else ""
    tail = "\n".join("  | " + line for line in self.log_tail.splitlines())
    return (f"{self.label} failed: {self.reason}.  The end of its "
            f"log{where}:\n{tail}")


def worker_info() -> dict[str, Any]:
  """Where this process runs: executor, host, job id and the CPUs it may
  use (``pinned`` when they are fewer than the machine's); recorded in
  every row, so timings say what they were measured on."""
  kind = os.environ.get("SUBMITIT_EXECUTOR", "inline")
  if os.environ.get("SLURM_ARRAY_JOB_ID"):
    job = (f"{os.environ['SLURM_ARRAY_JOB_ID']}_"
           f"{os.environ.get('SLURM_ARRAY_TASK_ID', '')}")
  else:
    job = (os.environ.get("SLURM_JOB_ID")
           or os.environ.get("SUBMITIT_LOCAL_JOB_ID") or None)
  cpus = sorted(_available_cores())
  return {"executor": kind if kind in EXECUTORS else "inline",
          "host": socket.gethostname(), "pid": os.getpid(), "job_id": job,
          "cpus": _cpu_list(cpus), "num_cpus": len(cpus),
          "pinned": len(cpus) < (os.cpu_count() or len(cpus))}


def _available_cores() -> set[int]:
  if hasattr(os, "sched_getaffinity"):
    return set(os.sched_getaffinity(0))
  return set(range(os.cpu_count() or 1))


def _cpu_list(cpus: Sequence[int]) -> str:
  return ",".join(map(str, cpus))


def _core_slots(max_parallel: int) -> list[list[int]]:
  """Disjoint core sets, one per local worker."""
  cores = sorted(_available_cores())
  n = max_parallel or len(cores)
  if n > len(cores):
    raise ValueError(
        f"--max_parallel={n} exceeds the {len(cores)} core(s) this process "
        "may use; each local worker is pinned to its own cores, so lower "
        f"--max_parallel to at most {len(cores)}")
  per = len(cores) // n
  return [cores[i * per:(i + 1) * per] for i in range(n)]


def execute(config: ExecutorConfig, fn: Callable[[Any], Any],
            items: Sequence[Any], *, labels: Sequence[str], folder: str,
            progress: bool = True, job_name: str = "sampling_mlp"
            ) -> Iterator[tuple[int, Any]]:
  """Runs ``fn(item)`` for every item; yields ``(index, outcome)`` as each
  finishes, the outcome being ``fn``'s value or a :class:`Failure`.

  Args:
    config: the executor.
    fn: a module-level function (or ``functools.partial`` of one): local and
      SLURM workers unpickle it.
    items: its arguments, one call each.
    labels: a name per item, for messages.
    folder: where jobs write their files and logs.
    progress: a progress bar over items (local and SLURM).
    job_name: SLURM's job name.
  """
  if not items:
    return
  if config.kind == "inline":
    yield from _inline(fn, items, labels)
  elif config.kind == "local":
    yield from _local(config, fn, items, labels, folder, progress)
  else:
    yield from _slurm(config, fn, items, labels, folder, progress, job_name)


def _inline(fn, items, labels) -> Iterator[tuple[int, Any]]:
  import traceback  # pylint: disable=import-outside-toplevel
  for i, item in enumerate(items):
    try:
      value = fn(item)
    except Exception as e:  # pylint: disable=broad-except
      value = Failure(labels[i], f"{type(e).__name__}: {e}", None,
                      traceback.format_exc(limit=-8))
    yield i, value


def _tail(path, lines: int = 30) -> str:
  try:
    with open(path, errors="replace") as f:
      return "".join(collections.deque(f, maxlen=lines)).rstrip()
  except OSError:
    return ""


def _job_outcome(job, label: str, reason_if_none: str) -> Any:
  """The job's return value, or a Failure quoting its log."""
  import submitit  # pylint: disable=import-outside-toplevel
  err, out = str(job.paths.stderr), str(job.paths.stdout)
  log = err if _tail(err) else out
  if job.paths.result_pickle.exists():
    try:
      return job.result()
    except submitit.core.utils.FailedJobError as e:
      trace = str(e).split("----------------------")
      last = trace[1].strip().splitlines()[-1] if len(trace) > 1 else str(e)
      return Failure(label, f"it raised {last}", log, _tail(log))
    except submitit.core.utils.UncompletedJobError as e:
      return Failure(label, str(e).splitlines()[0], log, _tail(log))
  return Failure(label, reason_if_none, log, _tail(log))


def _local(config, fn, items, labels, folder, progress):
  import submitit  # pylint: disable=import-outside-toplevel
  slots = _core_slots(config.max_parallel)
  taskset = shutil.which("taskset")
  if taskset is None:
    logging.warning("taskset not found: local workers are not pinned to "
                    "cores (their rows say so)")
  python = shlex.quote(sys.executable)
  queue = collections.deque(enumerate(items))
  free = list(range(len(slots)))
  running: dict[int, tuple[int, Any]] = {}
  bar = tqdm(total=len(items), desc="runs", unit="run", disable=not progress)
  try:
    while queue or running:
      while queue and free:
        slot = free.pop(0)
        i, item = queue.popleft()
        prefix = (f"{shlex.quote(taskset)} -c {_cpu_list(slots[slot])} "
                  if taskset else "")
        executor = submitit.LocalExecutor(folder=os.path.join(folder, "%j"),
                                          python=prefix + python)
        executor.update_parameters(timeout_min=_LOCAL_TIMEOUT_MIN)
        job = executor.submit(fn, item)
        logging.info("%s: local worker %s on cores %s", labels[i], job.job_id,
                     _cpu_list(slots[slot]))
        running[slot] = (i, job)
      for slot, (i, job) in list(running.items()):
        if job.done():
          del running[slot]
          free.append(slot)
          bar.update(1)
          yield i, _job_outcome(
              job, labels[i], "its worker process ended without a result "
              "(killed?)")
      if running:
        time.sleep(min(config.poll_seconds, 0.5))
  finally:
    bar.close()
    try:  # submitit's controller also makes the folder's literal "%j"
      os.rmdir(os.path.join(folder, "%j"))
    except OSError:
      pass


def _squeue(main_ids: set[str]) -> dict[str, tuple[str, str]] | None:
  """``{job id: (state, reason)}`` of the arrays' tasks SLURM still lists;
  None if squeue failed (the controller is busy or down)."""
  try:
    proc = subprocess.run(
        ["squeue", "-h", "-r", "-t", "all", "-j", ",".join(sorted(main_ids)),
         "-o", "%i|%T|%r"], capture_output=True, text=True, timeout=60,
        check=False)
  except (OSError, subprocess.TimeoutExpired) as e:
    logging.warning("squeue failed (%s); trying again", e)
    return None
  if proc.returncode != 0:
    if "Invalid job id" in proc.stderr:
      return {}  # finished long enough ago to be forgotten
    logging.warning("squeue failed (%s); trying again", proc.stderr.strip())
    return None
  out = {}
  for line in proc.stdout.splitlines():
    parts = line.strip().split("|")
    if len(parts) == 3:
      out[parts[0]] = (parts[1].split()[0] if parts[1] else "", parts[2])
  return out


def _slurm(config, fn, items, labels, folder, progress, job_name):
  import submitit  # pylint: disable=import-outside-toplevel
  if shutil.which("sbatch") is None or shutil.which("squeue") is None:
    raise RuntimeError(
        "--executor=slurm needs SLURM's sbatch and squeue on this machine's "
        "PATH (run the sweep from a cluster's login node; for a one-node "
        "cluster here: sudo scripts/slurm_local.sh start)")
  executor = submitit.SlurmExecutor(folder=os.path.join(folder, "%j"),
                                    python=shlex.quote(sys.executable))
  params = dict(job_name=job_name, time=parse_slurm_time(config.slurm_time),
                cpus_per_task=config.slurm_cpus_per_task,
                array_parallelism=config.slurm_array_parallelism)
  if config.slurm_partition:
    params["partition"] = config.slurm_partition
  if config.slurm_mem:
    params["mem"] = config.slurm_mem
  if config.slurm_extra:
    params["additional_parameters"] = dict(config.slurm_extra)
  executor.update_parameters(**params)
  with executor.batch():
    jobs = [executor.submit(fn, item) for item in items]
  main_ids = {job.job_id.split("_")[0] for job in jobs}
  logging.info("submitted %d run(s) as SLURM job %s; logs under %s",
               len(jobs), ", ".join(sorted(main_ids)), folder)
  pending = dict(enumerate(jobs))
  gone: dict[int, float] = {}
  warned: set[str] = set()
  bar = tqdm(total=len(items), desc="runs", unit="run", disable=not progress)
  try:
    while pending:
      states = _squeue(main_ids)
      now = time.monotonic()
      for i, job in list(pending.items()):
        if job.paths.result_pickle.exists():
          del pending[i]
          bar.update(1)
          yield i, _job_outcome(job, labels[i], "")
          continue
        if states is None:
          continue
        state, reason = states.get(job.job_id, (None, ""))
        if state in _LIVE_STATES:
          gone.pop(i, None)
          if (state == "PENDING" and reason not in _WAITING_REASONS
              and reason not in warned):
            warned.add(reason)
            logging.warning(
                "SLURM job %s waits for %r, which may never clear: check "
                "--slurm_partition, --slurm_time, --slurm_mem and "
                "--slurm_extra against the partition's limits (sinfo, "
                "scontrol show partition)", job.job_id, reason)
          continue
        grace = _GRACE_SECONDS.get(state, _GRACE_FAILED)
        if now - gone.setdefault(i, now) < grace:
          continue
        del pending[i]
        bar.update(1)
        ended = (f"its SLURM job {job.job_id} ended as {state}"
                 + (f" ({reason})" if reason and reason != "None" else "")
                 + " without a result" if state else
                 f"its SLURM job {job.job_id} left the queue without a result")
        yield i, _job_outcome(job, labels[i], ended)
      bar.set_postfix_str(f"{len(pending)} queued or running")
      if pending:
        time.sleep(config.poll_seconds)
  except KeyboardInterrupt:
    logging.warning("interrupted: SLURM job(s) %s keep running; rerun the "
                    "same command to collect their results (finished runs "
                    "and checkpoints are kept), or scancel them",
                    ", ".join(sorted(main_ids)))
    raise
  finally:
    bar.close()
