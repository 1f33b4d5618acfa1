"""The paper's studies, one module each; every entry point under
``experiments/`` parses its flags and makes one call into one of these.

* :mod:`.depth_sweep`: accuracy and training time against depth;
* :mod:`.time_accuracy`: cumulative time and dev accuracy per epoch;
* :mod:`.mc_batch_size`: MC-APPROX at batch size 1 against mini-batches;
* :mod:`.dataset_table`: 3 hidden layers across datasets.

What they share: a :class:`Grid` (the runs a sweep's flags describe, seeds
included) and a :class:`Runner` (where results go and how runs are
executed: resumably, into ``<out_dir>/<study>/runs.jsonl``, in this process,
on local workers or on a SLURM cluster; see
:mod:`sampling_mlp.executors`).  Tables and plots average the seeds of a
configuration and show their spread (:mod:`sampling_mlp.spread`).
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any, Mapping, Sequence

from sampling_mlp import executors, experiment


@dataclasses.dataclass(frozen=True)
class Grid:
  """Runs of every method x hidden width x batch size x depth x seed,
  sharing the other settings of :class:`sampling_mlp.experiment.RunSpec`.

  Attributes:
    methods, depths, hidden, batch_sizes: the axes of the grid.
    settings: the other RunSpec fields (dataset, epochs, seed,
      learning_rate, optimizer, activation, max_train, max_test).
    method_values: option values of every method, ``{flag: value}``
      (each run keeps its own method's).
    seeds: the seed axis (``--seeds``); None: the one seed of
      ``settings`` (``--seed``, default 0).
    method_batch_sizes: per method, batch sizes that replace
      ``batch_sizes`` for its runs (``--scale=paper``'s
      ``MethodSpec.paper_batch_size``).
  """

  methods: tuple[str, ...]
  depths: tuple[int, ...]
  hidden: tuple[int, ...]
  batch_sizes: tuple[int, ...]
  settings: Mapping[str, Any]
  method_values: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  seeds: tuple[int, ...] | None = None
  method_batch_sizes: Mapping[str, tuple[int, ...]] = dataclasses.field(
      default_factory=dict)

  @property
  def seed_values(self) -> tuple[int, ...]:
    return (tuple(self.seeds) if self.seeds
            else (self.settings.get("seed", 0),))

  def spec(self, *, method: str, depth: int, hidden: int, batch_size: int,
           **overrides: Any) -> experiment.RunSpec:
    """One run; ``overrides`` replace settings or method options."""
    settings = dict(self.settings)
    values = dict(self.method_values)
    for k, v in overrides.items():
      (settings if k in settings or k == "seed" else values)[k] = v
    return experiment.RunSpec.make(method=method, method_values=values,
                                   depth=depth, hidden=hidden,
                                   batch_size=batch_size, **settings)

  def specs(self, order: Sequence[str] = ("method", "hidden", "batch_size",
                                          "depth"), **overrides: Any
            ) -> list[experiment.RunSpec]:
    """Every run of the grid, the first axis of ``order`` outermost (the
    seeds innermost unless ``order`` places ``"seed"``)."""
    axes = {"method": self.methods, "depth": self.depths,
            "hidden": self.hidden, "batch_size": self.batch_sizes,
            "seed": self.seed_values}
    if "seed" not in order and "seed" not in overrides:
      order = tuple(order) + ("seed",)
    def values(name, o):
      if name == "batch_size" and "method" in o:
        return self.method_batch_sizes.get(o["method"], axes[name])
      return axes[name]

    out = [{}]
    for name in order:
      out = [dict(o, **{name: v}) for o in out for v in values(name, o)]
    return [self.spec(**dict(o, **overrides)) for o in out]


@dataclasses.dataclass(frozen=True)
class Runner:
  """Where a study's results go and how its runs are executed.

  Attributes:
    out_dir: results root; a study writes under ``<out_dir>/<study>/``,
      runs checkpoint under ``<out_dir>/checkpoints/<run_id>/`` and jobs
      log under ``<out_dir>/jobs/<study>/``.
    data_dir: searched first for dataset files.
    download: fetch missing dataset files.
    progress: show progress bars.
    executor: where runs execute (inline, local workers, SLURM).
    keep_checkpoints: keep finished runs' checkpoints.
    dry_run: print the runs a study would start, and their count, and stop
      (:class:`sampling_mlp.experiment.DryRun`).
    failures: every failed run of this runner's studies so far (appended
      to by :meth:`run`).
  """

  out_dir: str = "results"
  data_dir: str | None = None
  download: bool = True
  progress: bool = True
  executor: executors.ExecutorConfig = dataclasses.field(
      default_factory=executors.ExecutorConfig)
  keep_checkpoints: bool = False
  dry_run: bool = False
  failures: list = dataclasses.field(default_factory=list, compare=False)

  def path(self, study: str, name: str) -> str:
    """``<out_dir>/<study>/<name>``, its folder created."""
    path = os.path.join(self.out_dir, study, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    return path

  def loader(self):
    from sampling_mlp import data  # pylint: disable=import-outside-toplevel
    return functools.partial(data.load_dataset, download=self.download)

  def check_data(self, dataset: str) -> None:
    """Raises ``data.DatasetError`` if ``dataset``'s files cannot be found
    (or downloaded)."""
    from sampling_mlp import data  # pylint: disable=import-outside-toplevel
    data.locate(dataset, data_dir=self.data_dir, download=self.download)

  def run(self, specs: Sequence[experiment.RunSpec], study: str
          ) -> list[list[dict]]:
    """Runs (or resumes) ``specs`` into ``<out_dir>/<study>/runs.jsonl``;
    returns each spec's rows (``[]`` for a failed run, also added to
    :attr:`failures`)."""
    out = os.path.abspath(self.out_dir)
    data_dir = os.path.abspath(self.data_dir) if self.data_dir else None
    runs = experiment.run_specs(
        specs, results_path=self.path(study, "runs.jsonl"),
        data_dir=data_dir, progress=self.progress,
        dataset_loader=self.loader(), check_data=self.check_data,
        executor=self.executor,
        checkpoint_root=os.path.join(out, "checkpoints"),
        jobs_dir=os.path.join(out, "jobs", study),
        keep_checkpoints=self.keep_checkpoints, dry_run=self.dry_run)
    self.failures.extend(runs.failures)
    return runs
