"""Training runs: what determines one (:class:`RunSpec`), training one
with epoch checkpoints (:func:`run_one`, :func:`run_worker`), and running a
list of them resumably into a JSON-lines file (:func:`run_specs`), in this
process or farmed out to workers (:mod:`sampling_mlp.executors`).

Results format: one JSON object per line and per (run, epoch) -- per
(run, point of time) for a budget run (``RunSpec.budget_seconds``; its rows
are :mod:`sampling_mlp.budget`'s, numbered by ``point``) --, with the run's
identity (``run_id``, a hash of its full config), the headline fields
(``method``, ``dataset``, ``depth``, ``hidden``, ``batch_size``, ``seed``,
``epoch``, ``train_loss``, ``dev_accuracy``, ``test_accuracy``,
``epoch_seconds``, ``cumulative_seconds``, ``diverged``), the method's own
metrics and diagnostics, ``worker`` (where the epoch ran: executor, host,
job id, the CPUs it could use and whether it was pinned to them) and
``config`` (everything that produced the row).  A run whose training loss
became NaN or infinite ends at that epoch, whose row says ``diverged: true``
and ``diverged_step``.

Who writes what: the driver (the process calling :func:`run_specs`) alone
writes the results file, appending a run's rows in one write when the run
finishes.  While a run trains, its checkpoint
(``<checkpoint_root>/<run_id>/``, :mod:`sampling_mlp.checkpoint`) holds its
rows so far and the state after its last epoch, saved after every epoch.

Resuming: a run is finished when the file holds a row for every epoch (or
for every epoch up to the one where it diverged).  On start, rows of
unfinished runs and any line cut short by a kill are removed (the file is
rewritten atomically) and finished runs are skipped; a run whose checkpoint
is complete (the driver died before writing its rows) has them copied from
it; the others run, from their checkpoint's epoch if they have one.  A
finished run's checkpoint is deleted once its rows are in the file (unless
``keep_checkpoints``).  So a kill of the driver or of a worker, at any
moment, loses no row, duplicates none, and costs at most the epoch each
killed process was training.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
from typing import Any, Callable, Mapping, Sequence

from absl import logging
from tqdm.auto import tqdm

from sampling_mlp import checkpoint, executors, registry, train
from sampling_mlp.optim import OptimConfig
from sampling_mlp.report import ResultsLog, complete_rows


@dataclasses.dataclass(frozen=True)
class RunSpec:
  """Everything that determines one training run's numbers."""

  method: str
  dataset: str
  depth: int
  hidden: int = 1000
  batch_size: int = 32
  epochs: int = 1
  seed: int = 0
  learning_rate: float = 1e-3
  optimizer: str = "adam"
  activation: str = "leaky_relu"
  max_train: int | None = None
  max_test: int | None = None
  method_config: tuple = ()  # sorted (name, value) pairs of the method's options
  # The model: "mlp", or a CNN of sampling_mlp.cnn (then depth and hidden
  # are its head's) with its width multiplier (0: the CNN's default).
  model: str = "mlp"
  cnn_width: int = 0
  # A budget run (sampling_mlp.budget): train until this many training
  # seconds, evaluating at fixed points of time; ``epochs`` is then unused.
  budget_seconds: float | None = None
  # The layers (registry.ModelConfig): biases, weight normalisation.
  bias: bool = True
  weight_norm: bool = False

  def __post_init__(self):
    if self.model != "mlp" and not (self.bias and not self.weight_norm):
      raise ValueError(
          f"model {self.model!r} supports only the default network (biases, "
          "no weight normalisation); --bias=false, --weight_norm and "
          "--network=authors apply to the MLP (--model=mlp)")

  @classmethod
  def make(cls, *, method: str, method_values: Mapping[str, Any] | None = None,
           **kwargs) -> "RunSpec":
    """Builds a spec; keeps (and validates) only ``method``'s own options."""
    cfg = registry.get(method).make_config(method_values).flags()
    return cls(method=method, method_config=tuple(sorted(cfg.items())),
               **kwargs)

  def config(self) -> dict:
    d = dataclasses.asdict(self)
    d["method_config"] = dict(self.method_config)
    if self.model == "mlp":  # an MLP's config (and run_id) as before CNNs
      del d["model"], d["cnn_width"]
    if self.budget_seconds is None:  # likewise before budget runs
      del d["budget_seconds"]
    else:
      d["budget_seconds"] = float(self.budget_seconds)  # 60 and 60.0 alike
      del d["epochs"]
    for name, default in registry.NETWORKS["default"].items():
      if d[name] == default:  # the default network's run_id as before
        del d[name]
    return d

  @property
  def num_rows(self) -> int:
    """Rows of a finished run: one per epoch, or per point of a budget
    run's :func:`sampling_mlp.budget.eval_schedule`."""
    if self.budget_seconds is None:
      return self.epochs
    from sampling_mlp import budget  # pylint: disable=import-outside-toplevel
    return len(budget.eval_schedule(self.budget_seconds))

  @property
  def row_key(self) -> str:
    """The field numbering its rows 1, 2, ...: ``epoch`` or ``point``."""
    return "epoch" if self.budget_seconds is None else "point"

  def length(self) -> str:
    """How long it trains, in words."""
    if self.budget_seconds is None:
      return f"{self.epochs} epoch(s)"
    return f"{self.budget_seconds:g} training seconds"

  @property
  def run_id(self) -> str:
    blob = json.dumps(self.config(), sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]

  def label(self) -> str:
    model = "" if self.model == "mlp" else f"{self.model} "
    budget = ("" if self.budget_seconds is None
              else f" lr={self.learning_rate:g} budget={self.budget_seconds:g}s")
    network = (("" if self.bias else " no-bias")
               + (" weight-norm" if self.weight_norm else ""))
    return (f"{model}{self.method} {self.dataset} depth={self.depth} "
            f"hidden={self.hidden} B={self.batch_size} seed={self.seed}"
            f"{network}{budget}")


class DryRun(Exception):
  """Raised by :func:`run_specs` with ``dry_run=True`` once it has printed
  the runs it would start: nothing ran and nothing was written."""


class SweepRuns(list):
  """For each spec, its rows (``[]`` for a run that failed or did not
  run), plus ``failures``: the :class:`executors.Failure` of each run that
  failed, in the order they failed."""

  def __init__(self, runs=(), failures=()):
    super().__init__(runs)
    self.failures = list(failures)


def describe(spec: RunSpec) -> str:
  """``run <run_id> (<label>)``, as logs name a run."""
  return f"run {spec.run_id} ({spec.label()})"


_label = describe


def complete_run(spec: RunSpec, rows: Sequence[dict]) -> list[dict]:
  """``rows`` if they make ``spec``'s finished run, else []
  (:func:`sampling_mlp.report.complete_rows` with its row count and key)."""
  return complete_rows(rows, spec.num_rows, key=spec.row_key)


def _checkpoint(spec: RunSpec, root: str) -> checkpoint.RunCheckpoint:
  return checkpoint.RunCheckpoint(os.path.join(root, spec.run_id),
                                  run_id=spec.run_id)


def run_specs(specs: Sequence[RunSpec], *, results_path: str,
              data_dir: str | None = None, progress: bool = True,
              dataset_loader: Callable | None = None,
              check_data: Callable[[str], None] | None = None,
              executor: executors.ExecutorConfig | None = None,
              checkpoint_root: str | None = None,
              jobs_dir: str | None = None, keep_checkpoints: bool = False,
              dry_run: bool = False) -> SweepRuns:
  """Runs every spec not already finished in ``results_path``.

  Args:
    specs: the runs, in order.
    results_path: the JSON-lines file (created if absent).
    data_dir: passed to the dataset loader (``--data_dir``).
    progress: show progress bars.
    dataset_loader: ``loader(name, data_dir=, max_train=, max_test=)``;
      defaults to :func:`sampling_mlp.data.load_dataset`.  Local and SLURM
      workers call it themselves (so it must pickle).
    check_data: ``check_data(dataset)`` raises if a dataset is unavailable;
      called in this process before any run starts (default, with the
      default loader: :func:`sampling_mlp.data.locate`).
    executor: where runs execute (default: inline, one after another).
    checkpoint_root: where runs keep their checkpoints (default:
      ``checkpoints/`` beside ``results_path``); it must be reachable from
      every worker.
    jobs_dir: where local and SLURM jobs write their files and logs
      (default: ``jobs/`` beside ``results_path``).
    keep_checkpoints: keep finished runs' checkpoints.
    dry_run: print the runs that would start, and their count, then raise
      :class:`DryRun` (nothing runs, nothing is written).

  Returns:
    A :class:`SweepRuns`: for each spec its rows, and the failures.  A
    failed run is named, with the end of its log, in an error log message;
    the other runs go on, and running the same call again retries only the
    unfinished ones.

  Raises:
    checkpoint.LockHeld: another process is running a sweep into
      ``results_path``.
  """
  executor = executor or executors.ExecutorConfig()
  if dataset_loader is None:
    from sampling_mlp import data as data_lib
    dataset_loader = data_lib.load_dataset
    if check_data is None:
      check_data = functools.partial(data_lib.locate, data_dir=data_dir)
  base = os.path.dirname(os.path.abspath(results_path))
  root = os.path.abspath(checkpoint_root or os.path.join(base, "checkpoints"))
  jobs_dir = os.path.abspath(jobs_dir or os.path.join(base, "jobs"))
  log = ResultsLog(results_path)
  rows = log.read()
  done = {s.run_id: log.finished(s.run_id, s.num_rows, rows, key=s.row_key)
          for s in specs}
  pending = list({s.run_id: s for s in specs if not done[s.run_id]}.values())
  if dry_run:
    _print_plan(specs, pending, root, executor)
    raise DryRun(f"dry run: {len(pending)} run(s) would run")

  holder = dict(executors.worker_info(), role="driver")
  with checkpoint.run_lock(results_path + ".lock", holder=holder,
                           label=f"the sweep writing {results_path}",
                           wait=False):
    # Drop partial rows of the runs we are about to (re)run, and torn lines.
    log.drop_runs({s.run_id for s in pending})

    def record(spec: RunSpec, run_rows: list[dict]) -> None:
      log.append_rows(run_rows)
      done[spec.run_id] = run_rows
      if not keep_checkpoints:
        _checkpoint(spec, root).remove()
        try:
          os.remove(checkpoint.lock_path(_checkpoint(spec, root).directory))
        except OSError:
          pass

    todo = []
    for spec in pending:
      saved = complete_run(spec, _checkpoint(spec, root).rows() or [])
      if saved:
        logging.info("%s finished in its checkpoint; copying its rows",
                     _label(spec))
        record(spec, saved)
      else:
        todo.append(spec)
    if check_data is not None:
      for name in dict.fromkeys(s.dataset for s in todo):
        check_data(name)
    for spec in specs:
      if done[spec.run_id]:
        logging.info("skipping finished run %s (%s)", spec.run_id,
                     spec.label())
    if todo:
      logging.info("%d run(s) to run in %s", len(todo), executor.describe())

    failures = []
    if executor.kind == "inline":
      fn = functools.partial(_run_inline, cache={}, loader=dataset_loader,
                             data_dir=data_dir, checkpoint_root=root,
                             progress=progress)
    else:
      fn = functools.partial(run_worker, loader=dataset_loader,
                             data_dir=data_dir, checkpoint_root=root)
    bar = tqdm(total=len(todo), desc="runs", unit="run",
               disable=not progress or executor.kind != "inline")
    for i, outcome in executors.execute(
        executor, fn, todo, labels=[_label(s) for s in todo],
        folder=jobs_dir, progress=progress):
      spec = todo[i]
      bar.update(1)
      if not isinstance(outcome, executors.Failure):
        got = complete_run(spec, outcome)
        if got:
          record(spec, got)
          continue
        outcome = executors.Failure(
            _label(spec), f"it returned {len(outcome)} row(s) of "
            f"{spec.num_rows} ({spec.row_key}s)", None, "")
      failures.append(outcome)
      logging.error("%s", outcome.message())
    bar.close()
  if failures:
    logging.error(
        "%d of %d run(s) failed: %s.  Rerun the same command to retry them "
        "(finished runs are kept; the failed ones resume from their last "
        "checkpointed epoch, or point of a budget run).", len(failures), len(todo),
        "; ".join(f.label for f in failures))
  return SweepRuns([done[s.run_id] for s in specs], failures)


def _print_plan(specs, pending, root, executor) -> None:
  finished = len({s.run_id for s in specs}) - len(pending)
  print(f"dry run: {len(pending)} run(s) to run ({finished} already "
        f"finished) in {executor.describe()}:")
  for spec in pending:
    epoch = _checkpoint(spec, root).latest_epoch()
    resume = f", resumes after {spec.row_key} {epoch}" if epoch else ""
    print(f"  {spec.run_id}  {spec.label()}, {spec.length()}{resume}")
  print(f"{len(pending)} run(s)")


def _run_inline(spec: RunSpec, *, cache: dict, loader, data_dir,
                checkpoint_root: str, progress: bool) -> list[dict]:
  key = (spec.dataset, spec.max_train, spec.max_test)
  if key not in cache:
    cache.clear()  # one dataset in memory at a time
    cache[key] = loader(spec.dataset, data_dir=data_dir,
                        max_train=spec.max_train, max_test=spec.max_test)
  return train_checkpointed(spec, cache[key], checkpoint_root=checkpoint_root,
                            progress=progress)


def run_worker(spec: RunSpec, *, checkpoint_root: str, loader=None,
               data_dir: str | None = None) -> list[dict]:
  """One run, as a local or SLURM worker executes it: loads the data,
  trains from the run's checkpoint if it has one, returns every row.

  Args:
    spec: the run.
    checkpoint_root: the folder of the sweep's checkpoints.
    loader: the dataset loader (default ``data.load_dataset``).
    data_dir: passed to it.
  """
  logging.set_verbosity(logging.INFO)
  if loader is None:
    from sampling_mlp import data as data_lib
    loader = data_lib.load_dataset
  dataset = loader(spec.dataset, data_dir=data_dir, max_train=spec.max_train,
                   max_test=spec.max_test)
  return train_checkpointed(spec, dataset, checkpoint_root=checkpoint_root,
                            progress=False)


def train_checkpointed(spec: RunSpec, dataset, *, checkpoint_root: str,
                       progress: bool = True) -> list[dict]:
  """:func:`run_one` with its checkpoint under ``checkpoint_root``, holding
  the run's lock (one process trains a run at a time)."""
  info = executors.worker_info()
  ckpt = _checkpoint(spec, checkpoint_root)
  with checkpoint.run_lock(checkpoint.lock_path(ckpt.directory),
                           holder=info, label=_label(spec)):
    return run_one(spec, dataset, checkpoint_dir=ckpt.directory, worker=info,
                   progress=progress)


def build_impl(spec: RunSpec, dataset) -> registry.MethodImpl:
  if spec.model != "mlp":
    from sampling_mlp import cnn  # pylint: disable=import-outside-toplevel
    model = cnn.CNNConfig(arch=spec.model,
                          image_shape=cnn.image_shape_of(dataset),
                          num_classes=dataset.num_classes,
                          width=spec.cnn_width, depth=spec.depth,
                          hidden=spec.hidden, activation=spec.activation)
    optim = OptimConfig(name=spec.optimizer, learning_rate=spec.learning_rate)
    return registry.get(spec.method).make(model, optim,
                                          dict(spec.method_config))
  model = registry.ModelConfig(input_dim=dataset.input_dim,
                               num_classes=dataset.num_classes,
                               hidden=spec.hidden, depth=spec.depth,
                               activation=spec.activation, bias=spec.bias,
                               weight_norm=spec.weight_norm)
  optim = OptimConfig(name=spec.optimizer, learning_rate=spec.learning_rate)
  return registry.get(spec.method).make(model, optim, dict(spec.method_config))


def base_row(spec: RunSpec, dataset,
             worker: Mapping[str, Any] | None = None) -> dict:
  """The fields every result row of ``spec`` starts with."""
  base = {"run_id": spec.run_id, "method": spec.method,
          "dataset": spec.dataset, "depth": spec.depth, "hidden": spec.hidden,
          **({} if spec.model == "mlp" else {"model": spec.model}),
          "batch_size": spec.batch_size, "seed": spec.seed,
          "num_train": int(len(dataset.train.y)), "config": spec.config()}
  if worker is not None:
    base["worker"] = dict(worker)
  return base


def run_one(spec: RunSpec, dataset, log: ResultsLog | None = None, *,
            checkpoint_dir: str | None = None,
            worker: Mapping[str, Any] | None = None,
            progress: bool = True) -> list[dict]:
  """Trains one spec and returns its rows, one per epoch.

  Args:
    spec: the run.
    dataset: its data.
    log: a results file to append each row to as its epoch ends (for
      library use; a sweep's driver writes whole runs itself).
    checkpoint_dir: where to checkpoint after every epoch and resume from
      (None: no checkpoints).
    worker: where it runs (``executors.worker_info()``), for every row.
    progress: a progress bar over epochs.

  A run whose loss becomes NaN or infinite stops after that epoch, with a
  warning naming the run, the epoch and the step.  A budget run
  (``spec.budget_seconds``) is trained by
  :func:`sampling_mlp.budget.run_budget` (rows per point of time).
  """
  if spec.budget_seconds is not None:
    if log is not None:
      raise ValueError("a budget run's rows are returned, not logged as "
                       "they come; pass log=None")
    from sampling_mlp import budget  # pylint: disable=import-outside-toplevel
    return budget.run_budget(spec, dataset, checkpoint_dir=checkpoint_dir,
                             worker=worker, progress=progress)
  impl = build_impl(spec, dataset)
  cfg = train.TrainConfig(epochs=spec.epochs, batch_size=spec.batch_size,
                          seed=spec.seed)
  base = base_row(spec, dataset, worker)
  rows: list[dict] = []
  state = None
  ckpt = (checkpoint.RunCheckpoint(checkpoint_dir, run_id=spec.run_id)
          if checkpoint_dir else None)
  if ckpt is not None and ckpt.latest_epoch() is not None:
    state, rows = ckpt.restore(train.init_state(impl,
                                                train.RunKeys(spec.seed)))
    if complete_rows(rows, spec.epochs):
      return rows
    logging.info("%s: resuming after epoch %d of %d from %s", _label(spec),
                 len(rows), spec.epochs, ckpt.directory)

  def on_epoch(state, metrics):
    rows.append(dict(base, **metrics))
    if ckpt is not None:
      ckpt.save(state, rows)
    if log is not None:
      log.append(rows[-1])

  bar = tqdm(total=spec.epochs, initial=len(rows), desc="epochs",
             leave=False, disable=not progress, unit="epoch")
  for _ in train.train(impl, dataset, cfg, state=state,
                       start_epoch=len(rows),
                       prior_seconds=(rows[-1]["cumulative_seconds"] if rows
                                      else 0.0), on_epoch=on_epoch):
    row = rows[-1]
    logging.info("%s epoch %d: loss %.4f dev %.4f test %.4f (%.2fs)",
                 spec.label(), row["epoch"], row["train_loss"],
                 row["dev_accuracy"], row["test_accuracy"],
                 row["epoch_seconds"])
    if row["diverged"]:
      logging.warning(
          "%s diverged: the training loss became %s at step %d, in epoch %d "
          "of %d; training stops here and the run is recorded with "
          "diverged: true", _label(spec), row["train_loss"],
          row["diverged_step"], row["epoch"], spec.epochs)
    bar.update(1)
    bar.set_postfix(test=f"{row['test_accuracy']:.3f}",
                    s=f"{row['epoch_seconds']:.1f}")
  bar.close()
  return rows
