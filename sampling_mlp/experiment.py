"""Training runs: what determines one (:class:`RunSpec`), and running a list
of them resumably into a JSON-lines file (:func:`run_specs`).

Results format: one JSON object per line and per (run, epoch), with the run's
identity (``run_id``, a hash of its full config), the headline fields
(``method``, ``dataset``, ``depth``, ``hidden``, ``batch_size``, ``seed``,
``epoch``, ``train_loss``, ``dev_accuracy``, ``test_accuracy``,
``epoch_seconds``, ``cumulative_seconds``), the method's own metrics and
diagnostics, and ``config`` (everything that produced the row).

Resuming: a run is finished when its file holds a row for every epoch.  On
start, rows of unfinished runs and any line cut short by a kill are removed
(the file is rewritten atomically), finished runs are skipped, and the rest
run from scratch; rows are appended and flushed one epoch at a time.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any, Mapping, Sequence

from absl import logging
from tqdm.auto import tqdm

from sampling_mlp import registry, train
from sampling_mlp.optim import OptimConfig
from sampling_mlp.report import ResultsLog


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
    return d

  @property
  def run_id(self) -> str:
    blob = json.dumps(self.config(), sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]

  def label(self) -> str:
    return (f"{self.method} {self.dataset} depth={self.depth} "
            f"hidden={self.hidden} B={self.batch_size} seed={self.seed}")


def run_specs(specs: Sequence[RunSpec], *, results_path: str,
              data_dir: str | None = None, progress: bool = True,
              dataset_loader=None) -> list[list[dict]]:
  """Runs every spec not already finished in ``results_path``.

  Args:
    specs: the runs, in order.
    results_path: the JSON-lines file (created if absent).
    data_dir: passed to the dataset loader (``--data_dir``).
    progress: show tqdm bars over runs and epochs.
    dataset_loader: ``loader(name, data_dir=, max_train=, max_test=)``;
      defaults to :func:`sampling_mlp.data.load_dataset`.

  Returns:
    For each spec, its rows (one per epoch).
  """
  if dataset_loader is None:
    from sampling_mlp import data as data_lib
    dataset_loader = data_lib.load_dataset
  log = ResultsLog(results_path)
  rows = log.read()
  done = {s.run_id: log.finished(s.run_id, s.epochs, rows) for s in specs}
  # Drop partial rows of the runs we are about to (re)run, and torn lines.
  pending = {s.run_id for s in specs if not done[s.run_id]}
  log.drop_runs(pending)

  datasets: dict[tuple, Any] = {}
  out = []
  bar = tqdm(specs, desc="runs", disable=not progress, unit="run")
  for spec in bar:
    bar.set_postfix_str(spec.label())
    if done[spec.run_id]:
      logging.info("skipping finished run %s (%s)", spec.run_id, spec.label())
      out.append(done[spec.run_id])
      continue
    key = (spec.dataset, spec.max_train, spec.max_test)
    if key not in datasets:
      datasets[key] = dataset_loader(spec.dataset, data_dir=data_dir,
                                     max_train=spec.max_train,
                                     max_test=spec.max_test)
    out.append(run_one(spec, datasets[key], log, progress=progress))
  return out


def build_impl(spec: RunSpec, dataset) -> registry.MethodImpl:
  model = registry.ModelConfig(input_dim=dataset.input_dim,
                               num_classes=dataset.num_classes,
                               hidden=spec.hidden, depth=spec.depth,
                               activation=spec.activation)
  optim = OptimConfig(name=spec.optimizer, learning_rate=spec.learning_rate)
  return registry.get(spec.method).make(model, optim, dict(spec.method_config))


def run_one(spec: RunSpec, dataset, log: ResultsLog | None = None, *,
            progress: bool = True) -> list[dict]:
  """Trains one spec, appending a row per epoch to ``log``."""
  impl = build_impl(spec, dataset)
  cfg = train.TrainConfig(epochs=spec.epochs, batch_size=spec.batch_size,
                          seed=spec.seed)
  base = {"run_id": spec.run_id, "method": spec.method,
          "dataset": spec.dataset, "depth": spec.depth, "hidden": spec.hidden,
          "batch_size": spec.batch_size, "seed": spec.seed,
          "num_train": int(len(dataset.train.y)), "config": spec.config()}
  rows = []
  bar = tqdm(total=spec.epochs, desc="epochs", leave=False,
             disable=not progress, unit="epoch")
  for metrics in train.train(impl, dataset, cfg):
    row = dict(base, **metrics)
    rows.append(row)
    if log is not None:
      log.append(row)
    logging.info("%s epoch %d: loss %.4f dev %.4f test %.4f (%.2fs)",
                 spec.label(), row["epoch"], row["train_loss"],
                 row["dev_accuracy"], row["test_accuracy"],
                 row["epoch_seconds"])
    bar.update(1)
    bar.set_postfix(test=f"{row['test_accuracy']:.3f}",
                    s=f"{row['epoch_seconds']:.1f}")
  bar.close()
  return rows


