"""Seeds and their spread: runs that differ only in their seed, summarised
by a mean and a standard deviation.

A run's *group* (:func:`group_key`) is its configuration without the seed.
:func:`over_seeds` turns rows (one per run, or one per run and epoch) into
one row per group: every numeric field (and every list of numbers) becomes
its mean over the group's seeds, with the sample standard deviation
(``ddof=1``) in ``<field>_std`` when two or more seeds count; ``seeds``
holds how many seeds the group has, ``seed_list`` which, and ``diverged``
how many of them diverged.  Diverged runs are left out of the means -- the
accuracy of a network whose weights went NaN says nothing -- unless every
seed diverged.  A group of one seed gives back its row, plus ``seeds: 1``,
so a one-seed table reads as it always did.
"""

from __future__ import annotations

import collections
import json
import math
import statistics
from typing import Any, Mapping, Sequence


def group_key(row: Mapping[str, Any]) -> str:
  """The configuration of ``row``'s run without its seed (a string)."""
  cfg = row.get("config")
  if cfg is None:
    cfg = {k: row.get(k) for k in ("method", "dataset", "depth", "hidden",
                                   "batch_size", "epochs")}
  cfg = {k: v for k, v in cfg.items() if k != "seed"}
  return json.dumps(cfg, sort_keys=True, default=str)


def group_runs(runs: Sequence[Sequence[Mapping[str, Any]]]
               ) -> list[list[Sequence[Mapping[str, Any]]]]:
  """Runs (each a list of per-epoch rows) grouped by :func:`group_key`, in
  order of first appearance; empty runs are skipped."""
  groups: dict[str, list] = collections.OrderedDict()
  for rows in runs:
    if rows:
      groups.setdefault(group_key(rows[0]), []).append(rows)
  return list(groups.values())


def _is_number(v) -> bool:
  return isinstance(v, (int, float)) and not isinstance(v, bool)


def _stats(values: Sequence[float]) -> tuple[float, float | None]:
  finite = [float(v) for v in values if math.isfinite(float(v))]
  if not finite:
    return math.nan, None
  mean = math.fsum(finite) / len(finite)
  return mean, statistics.stdev(finite) if len(finite) > 1 else None


def combine(values: Sequence[Any]) -> tuple[Any, Any]:
  """(summary, spread) of one field's values over seeds.

  Equal values stay as they are, without a spread; numbers give (mean,
  std or None); lists of numbers of one length give element-wise means and
  stds; anything else gives (None, None).
  """
  if all(v == values[0] for v in values[1:]):
    return values[0], None
  if all(_is_number(v) for v in values):
    return _stats(values)
  if (all(isinstance(v, (list, tuple)) for v in values)
      and len({len(v) for v in values}) == 1
      and all(_is_number(x) for v in values for x in v)):
    pairs = [_stats(col) for col in zip(*values)]
    stds = [s for _, s in pairs]
    return ([m for m, _ in pairs],
            None if any(s is None for s in stds) else stds)
  return None, None


def over_seeds(rows: Sequence[Mapping[str, Any]],
               by: Sequence[str] = ("group",)) -> list[dict]:
  """One row per group of ``rows`` that agree on the fields ``by``: means
  over seeds, ``<field>_std``, ``seeds``, ``seed_list`` and ``diverged``
  (a count); see the module docstring."""
  groups: dict[tuple, list] = collections.OrderedDict()
  for r in rows:
    key = tuple(json.dumps(r.get(k), sort_keys=True, default=str) for k in by)
    groups.setdefault(key, []).append(r)
  out = []
  for members in groups.values():
    kept = [r for r in members if not r.get("diverged")] or members
    row: dict[str, Any] = {}
    for k in dict.fromkeys(k for r in members for k in r):
      if k in ("seed", "diverged", "config") or k.endswith("_std"):
        continue
      value, std = combine([r.get(k) for r in kept])
      if value is not None or all(r.get(k) is None for r in kept):
        row[k] = value
      if std is not None:
        row[k + "_std"] = std
    seeds = [r.get("seed") for r in members]
    if len(members) == 1:
      row["seed"] = seeds[0]
    if "config" in members[0]:
      row["config"] = dict(members[0]["config"], seed=seeds)
    row["seeds"] = len(members)
    row["seed_list"] = seeds
    row["diverged"] = sum(bool(r.get("diverged")) for r in members)
    out.append(row)
  return out


def epoch_stats(group: Sequence[Sequence[Mapping[str, Any]]], y: str
                ) -> tuple[list[int], list[float], list[float] | None]:
  """Per epoch, the mean and std over a group's runs of the rows' ``y``.

  Returns:
    (epochs, means, stds): stds is None for a group of one run.  A run's
    diverged epoch (and the missing ones after it) count for no mean.
  """
  epochs = sorted({r["epoch"] for rows in group for r in rows})
  means, stds = [], []
  for e in epochs:
    values = [r[y] for rows in group for r in rows
              if r["epoch"] == e and not r.get("diverged")]
    mean, std = _stats(values) if values else (math.nan, None)
    means.append(mean)
    stds.append(math.nan if std is None else std)
  return epochs, means, (stds if len(group) > 1 else None)
