"""The paper's studies, one module each; every entry point under
``experiments/`` parses its flags and makes one call into one of these.

* :mod:`.depth_sweep`: accuracy and training time against depth;
* :mod:`.time_accuracy`: cumulative time and dev accuracy per epoch;
* :mod:`.mc_batch_size`: MC-APPROX at batch size 1 against mini-batches;
* :mod:`.dataset_table`: 3 hidden layers across datasets.

What they share: a :class:`Grid` (the runs a sweep's flags describe) and a
:class:`Runner` (where results go and how runs are executed: resumably,
one after another, into ``<out_dir>/<study>/runs.jsonl``).
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any, Mapping, Sequence

from sampling_mlp import experiment


@dataclasses.dataclass(frozen=True)
class Grid:
  """Runs of every method x hidden width x batch size x depth, sharing the
  other settings of :class:`sampling_mlp.experiment.RunSpec`.

  Attributes:
    methods, depths, hidden, batch_sizes: the axes of the grid.
    settings: the other RunSpec fields (dataset, epochs, seed,
      learning_rate, optimizer, activation, max_train, max_test).
    method_values: option values of every method, ``{flag: value}``
      (each run keeps its own method's).
  """

  methods: tuple[str, ...]
  depths: tuple[int, ...]
  hidden: tuple[int, ...]
  batch_sizes: tuple[int, ...]
  settings: Mapping[str, Any]
  method_values: Mapping[str, Any] = dataclasses.field(default_factory=dict)

  def spec(self, *, method: str, depth: int, hidden: int, batch_size: int,
           **overrides: Any) -> experiment.RunSpec:
    """One run; ``overrides`` replace settings or method options."""
    settings = dict(self.settings)
    values = dict(self.method_values)
    for k, v in overrides.items():
      (settings if k in settings else values)[k] = v
    return experiment.RunSpec.make(method=method, method_values=values,
                                   depth=depth, hidden=hidden,
                                   batch_size=batch_size, **settings)

  def specs(self, order: Sequence[str] = ("method", "hidden", "batch_size",
                                          "depth"), **overrides: Any
            ) -> list[experiment.RunSpec]:
    """Every run of the grid, the first axis of ``order`` outermost."""
    axes = {"method": self.methods, "depth": self.depths,
            "hidden": self.hidden, "batch_size": self.batch_sizes}
    out = [{}]
    for name in order:
      out = [dict(o, **{name: v}) for o in out for v in axes[name]]
    return [self.spec(**o, **overrides) for o in out]


@dataclasses.dataclass(frozen=True)
class Runner:
  """Where a study's results go and how its runs are executed.

  Attributes:
    out_dir: results root; a study writes under ``<out_dir>/<study>/``.
    data_dir: searched first for dataset files.
    download: fetch missing dataset files.
    progress: show progress bars.
  """

  out_dir: str = "results"
  data_dir: str | None = None
  download: bool = True
  progress: bool = True

  def path(self, study: str, name: str) -> str:
    """``<out_dir>/<study>/<name>``, its folder created."""
    path = os.path.join(self.out_dir, study, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    return path

  def loader(self):
    from sampling_mlp import data  # pylint: disable=import-outside-toplevel
    return functools.partial(data.load_dataset, download=self.download)

  def run(self, specs: Sequence[experiment.RunSpec], study: str
          ) -> list[list[dict]]:
    """Runs (or resumes) ``specs`` into ``<out_dir>/<study>/runs.jsonl``."""
    return experiment.run_specs(
        specs, results_path=self.path(study, "runs.jsonl"),
        data_dir=self.data_dir, progress=self.progress,
        dataset_loader=self.loader())
