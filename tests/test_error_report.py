"""Tests for sampling_mlp.error_report: the theorem's closed forms beside the
measurements, summaries over keys, growth rates, tables and figures."""

import math

import numpy as np
import pytest

from sampling_mlp import error_report as er, theory

# Hand-computed 1 - (5/6)^k for k = 1..3: 1/6, 11/36, 91/216.
C5_REL = (1 / 6, 11 / 36, 91 / 216)


def _relative_error(approx, exact, *, against="exact"):
  ref = exact if against == "exact" else approx
  return float(np.linalg.norm(approx - exact) / np.linalg.norm(ref))


def test_theorem_relative_error_hand_values():
  for k, want in enumerate(C5_REL, start=1):
    assert er.theorem_relative_error(5.0, k) == pytest.approx(want, abs=1e-15)
  np.testing.assert_allclose(er.theorem_relative_error(5.0, np.arange(1, 4)),
                             C5_REL, rtol=0, atol=1e-15)
  assert er.theorem_relative_error(math.inf, 4) == 0.0
  with pytest.raises(ValueError, match="c must be"):
    er.theorem_relative_error(0.0, 1)


def test_theorem_relative_error_matches_construction():
  # On a network meeting the assumption exactly, ||a - abar|| / ||a|| per
  # node is 1 - (c/(c+1))^k to float64 precision.
  c = 5.0
  x, weights, active_sets = theory.construct_network(c=c, depth=6, width=24,
                                                     active=4, seed=0)
  a = abar = x
  for k, (w, act) in enumerate(zip(weights, active_sets), start=1):
    mask = np.zeros_like(w, dtype=bool)
    mask[act, np.arange(w.shape[1])[:, None]] = True
    a, abar = a @ w, abar @ np.where(mask, w, 0.0)
    np.testing.assert_allclose((a - abar) / a, er.theorem_relative_error(c, k),
                               rtol=1e-10, atol=0)
    assert _relative_error(abar, a) == pytest.approx(
        er.theorem_relative_error(c, k), rel=1e-10)
    assert _relative_error(abar, a, against="approx") == pytest.approx(
        theory.error_ratio(c, k), rel=1e-10)


def test_layerwise_theorem_ratio():
  np.testing.assert_allclose(er.layerwise_theorem_ratio([5.0] * 4),
                             theory.error_ratio(5.0, np.arange(1, 5)), rtol=1e-12)
  # An exact step (c = inf) adds nothing; 1 and 2 give 2 * 1.5 - 1.
  np.testing.assert_allclose(er.layerwise_theorem_ratio([1.0, math.inf, 2.0]),
                             [1.0, 1.0, 2.0], rtol=1e-12)
  with pytest.raises(ValueError, match="> 0"):
    er.layerwise_theorem_ratio([1.0, -2.0])


def test_theorem_markdown_matches_closed_form():
  md, table = er.theorem_markdown(5.0, range(1, 8))
  assert [r["k"] for r in table] == list(range(1, 8))
  for r in table:
    assert r["closed_form"] == theory.error_ratio(5.0, r["k"])
    assert r["measured_mean"] == pytest.approx(r["closed_form"], rel=1e-12)
    assert r["measured_max_abs_dev"] <= 1e-12 * max(1.0, r["closed_form"])
  assert "0.7280000000" in md and "1.9859840000" in md


def _fake_rows(g=1.5, depths=range(1, 6)):
  rows = []
  for d in depths:
    for k in range(2):
      err = 0.01 * g ** d * (1 + 0.01 * k)
      rows.append(dict(activation="linear", training="init", variant="mc x",
                       method="mc", depth=d, key=k, rel_err=[err] * (d + 1),
                       logits_rel_err=err, top1=1.0, exact_accuracy=0.5,
                       approx_accuracy=0.5))
  return rows


def test_summarize_and_growth_recover_rate():
  summary = er.summarize(_fake_rows(g=1.5))
  assert len(summary) == 5
  s = summary[0]
  assert s["num_keys"] == 2 and s["logits_rel_err_std"] > 0
  (gr,) = er.growth(summary)
  assert gr["g"] == pytest.approx(1.5, rel=1e-6)
  assert gr["depth_first"] == 1 and gr["depth_last"] == 5
  md = er.depth_table(summary, field="logits_rel_err",
                      spread="logits_rel_err_std", activation="linear",
                      training="init")
  assert md.count("\n") == 3 and "d=5" in md




def test_report_and_figures_for_node_subset_and_dense_methods(tmp_path):
  rows = _fake_rows()
  for r in _fake_rows(g=1.2):
    r.update(variant="dropout keep_prob=0.5", method="dropout",
             err_ratio=[0.1] * (r["depth"] + 1), logits_err_ratio=0.1,
             effective_c=[4.0] * r["depth"], c_positive=[1.0] * r["depth"],
             active_fraction=0.5)
    rows.append(r)
  for r in rows:
    r.update(dataset="tiny", hidden=8, eval_examples=32, train_epochs=0)
  md = er.report_markdown(rows)
  assert "Node-subset methods against the theorem" in md
  assert "dropout keep_prob=0.5" in md and "mc x" in md
  paths = er.write_report(rows, str(tmp_path))
  assert sorted(p.rsplit("/", 1)[1] for p in paths) == [
      "error_vs_depth_linear_init.png", "table.md", "theorem_linear_init.png"]
  for p in paths[1:]:
    with open(p, "rb") as f:
      assert f.read(8) == b"\x89PNG\r\n\x1a\n"
