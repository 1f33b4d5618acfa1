"""Kill tests: a sweep whose driver, local worker or SLURM job is killed in
the middle of an epoch, then rerun, ends with exactly the rows an
uninterrupted inline run of the same sweep writes, and the killed run
trains again only the epoch it was in.

The sweep: ``depth_sweep`` on ``mnist_small`` (200 training examples, 6
steps an epoch, 3 epochs), methods ``standard`` and ``gated`` (STANDARD
that waits at the end of every epoch after the first while a gate file
exists; ``tests/gated_method.py``), seeds 0 and 1.  A test creates the gate
file, starts the sweep, waits until a ``gated`` run has checkpointed epoch
1 (it is then held in epoch 2), kills the process that trains it (the
driver, its local worker with SIGKILL, or its SLURM job with ``scancel``),
removes the gate and reruns the command.

The SLURM test (marked ``slurm``) needs a running cluster: on a machine
with Debian's ``slurm-wlm`` and ``munge``, ``sudo scripts/slurm_local.sh
start`` brings one up (``.ci/run`` does); otherwise it skips, saying why.
"""

import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from sampling_mlp import checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS = os.path.dirname(os.path.abspath(__file__))
# Timing, and where and by which process each epoch ran.
VARYING = ("epoch_seconds", "cumulative_seconds", "compile_seconds", "worker")
STEPS_PER_EPOCH = 200 // 32


def _slurm_unavailable() -> str | None:
  """Why SLURM tests cannot run here, or None."""
  if shutil.which("sbatch") is None or shutil.which("sinfo") is None:
    return ("SLURM is not installed; install Debian's slurm-wlm and munge, "
            "then start a one-node cluster: sudo scripts/slurm_local.sh "
            "start")
  try:
    proc = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True,
                          text=True, timeout=20, check=False)
  except subprocess.TimeoutExpired:
    return "sinfo did not answer in 20 s: is slurmctld running?"
  states = proc.stdout.split()
  if proc.returncode != 0 or not any(
      s.rstrip("*~#") in ("idle", "mixed", "allocated") for s in states):
    return (f"no SLURM cluster is up (sinfo: {proc.stderr.strip() or states})"
            "; start one with sudo scripts/slurm_local.sh start")
  return None


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
  """The sweep's command line, and the rows of an uninterrupted inline run."""
  base = tmp_path_factory.mktemp("killed")
  home = base / "home"
  home.mkdir()
  gate = base / "gate"
  env = dict(os.environ, HOME=str(home), JAX_PLATFORMS="cpu",
             SAMPLING_MLP_METHODS="gated_method",
             PYTHONPATH=os.pathsep.join([ROOT, TESTS,
                                         os.environ.get("PYTHONPATH", "")]))
  env.pop("SAMPLING_MLP_DATA", None)
  args = [sys.executable, "-m", "experiments.depth_sweep",
          "--method=standard,gated", "--depths=1", "--dataset=mnist_small",
          "--max_train=200", "--max_test=100", "--hidden=16", "--epochs=3",
          "--batch_size=32", "--seeds=0,1", "--noprogress", "--nodownload",
          f"--gate_file={gate}", f"--gate_after_steps={STEPS_PER_EPOCH}"]

  def start(out, *extra):
    return subprocess.Popen(args + [f"--out_dir={out}", *extra], cwd=ROOT,
                            env=env, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)

  ref = base / "inline"
  proc = start(ref)
  out, err = proc.communicate(timeout=600)
  assert proc.returncode == 0, err[-3000:]
  return dict(base=base, gate=gate, start=start, reference=_rows(ref),
              reference_table=out)


def _rows(out):
  """{(run_id, epoch): row}, every line of the results file parsed."""
  with open(out / "depth_sweep" / "runs.jsonl") as f:
    rows = [json.loads(line) for line in f]
  keyed = {(r["run_id"], r["epoch"]): r for r in rows}
  assert len(keyed) == len(rows), "a row was written twice"
  return keyed


def _numbers(rows):
  return {k: {f: v for f, v in r.items() if f not in VARYING}
          for k, r in rows.items()}


def _alive(pid) -> bool:
  try:
    os.kill(pid, 0)
  except OSError:
    return False
  return True


def _held_gated_run(out, proc, timeout=300):
  """(run_id, lock holder) of a gated run that checkpointed epoch 1 and is
  being trained (held by the gate in epoch 2)."""
  deadline = time.monotonic() + timeout
  while time.monotonic() < deadline:
    for d in sorted(glob.glob(str(out / "checkpoints" / "*" / ""))):
      run_id = os.path.basename(d.rstrip("/"))
      try:
        rows = checkpoint.RunCheckpoint(d, run_id=run_id).rows()
      except Exception:  # pylint: disable=broad-except
        continue  # being written
      holder = checkpoint.lock_holder(checkpoint.lock_path(d))
      if (rows and len(rows) == 1 and rows[0]["method"] == "gated"
          and holder and _alive(holder["pid"])):
        return run_id, holder
    if proc.poll() is not None:
      pytest.fail(f"the sweep ended first:\n{proc.stderr.read()[-3000:]}")
    time.sleep(0.2)
  proc.kill()
  pytest.fail("no gated run reached epoch 2 in time")


def _kill_rerun_and_compare(sweep, name, executor, kill, *, driver_dies):
  out = sweep["base"] / name
  sweep["gate"].write_text("hold")
  try:
    proc = sweep["start"](out, f"--executor={executor}", *(
        ["--max_parallel=2"] if executor == "local" else []))
    run_id, holder = _held_gated_run(out, proc)
    kill(proc, holder)
  finally:
    sweep["gate"].unlink()  # the other gated run goes on
  _, err = proc.communicate(timeout=600)
  if driver_dies:
    assert proc.returncode == -signal.SIGKILL
  else:
    # The other runs finished; the killed one is named, with its log.
    assert proc.returncode == 1, err[-3000:]
    assert f"run {run_id} (gated mnist_small" in err
    assert "1 run(s) failed" in err and "Rerun the same command" in err
    assert len({k[0] for k in _rows(out)}) == 3

  again = sweep["start"](out, f"--executor={executor}")
  out2, err2 = again.communicate(timeout=600)
  assert again.returncode == 0, err2[-3000:]
  logs = err2 + "".join(open(f).read() for f in glob.glob(
      str(out / "jobs" / "depth_sweep" / "*" / "*_log.err")))
  assert f"run {run_id} (gated mnist_small" in logs
  assert "resuming after epoch 1 of 3" in logs
  rows = _rows(out)
  assert _numbers(rows) == _numbers(sweep["reference"])
  # Epoch 1 of the killed run is the one trained before the kill; only the
  # epoch it was in (2) and the rest ran again.
  assert rows[(run_id, 1)]["worker"]["pid"] == holder["pid"]
  assert rows[(run_id, 2)]["worker"]["pid"] != holder["pid"]
  assert not glob.glob(str(out / "checkpoints" / "*" / ""))
  return rows, out2


def test_inline_driver_killed_mid_epoch(sweep):
  def kill(proc, holder):
    assert holder["pid"] == proc.pid and holder["executor"] == "inline"
    proc.kill()

  _kill_rerun_and_compare(sweep, "inline_killed", "inline", kill,
                          driver_dies=True)


def test_local_worker_killed_mid_epoch(sweep):
  cores = len(os.sched_getaffinity(0))

  def kill(proc, holder):
    assert holder["executor"] == "local" and holder["pid"] != proc.pid
    assert holder["pinned"] == (cores > 1)
    os.kill(holder["pid"], signal.SIGKILL)

  rows, _ = _kill_rerun_and_compare(sweep, "local_killed", "local", kill,
                                    driver_dies=False)
  workers = {r["worker"]["job_id"] for r in rows.values()}
  assert len(workers) >= 4  # a worker per run, and one for the resumed run
  assert all(r["worker"]["executor"] == "local" for r in rows.values())
  if cores > 1:
    assert all(r["worker"]["num_cpus"] == cores // 2 for r in rows.values())


@pytest.mark.slurm
def test_slurm_job_cancelled_mid_epoch(sweep):
  reason = _slurm_unavailable()
  if reason:
    pytest.skip(reason)

  def kill(proc, holder):
    assert holder["executor"] == "slurm" and holder["job_id"]
    subprocess.run(["scancel", holder["job_id"]], check=True, timeout=60)
    # SLURM sends SIGTERM, then SIGKILL after KillWait: keep the gate shut
    # until the job is gone, or it would finish its run in the meantime.
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and subprocess.run(
        ["squeue", "-h", "-j", holder["job_id"]], capture_output=True,
        text=True, timeout=60, check=False).stdout.strip():
      time.sleep(0.5)
    assert not _alive(holder["pid"])

  rows, table = _kill_rerun_and_compare(sweep, "slurm_cancelled", "slurm",
                                        kill, driver_dies=False)
  assert all(r["worker"]["executor"] == "slurm" for r in rows.values())
  jobs = sweep["base"] / "slurm_cancelled" / "jobs" / "depth_sweep"
  assert glob.glob(str(jobs / "*" / "*_log.err"))
  # The rerun's table is the inline run's (training times aside).
  strip = lambda t: [line.split()[:10] for line in t.splitlines()]
  assert strip(table) == strip(sweep["reference_table"])
