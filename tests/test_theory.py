"""Tests for sampling_mlp.theory (the ALSH-APPROX negative result)."""

import math

import numpy as np
import pytest

from sampling_mlp import theory

# Hand-computed ((6/5)^k - 1) for k = 1..6.
C5_VALUES = (0.2, 0.44, 0.728, 1.0736, 1.48832, 1.985984)
CS = pytest.mark.parametrize("c", [1.0, 2.0, 5.0, 10.0], ids=lambda c: f"c={c:g}")


def test_error_ratio_matches_hand_values_for_c5():
  for k, want in enumerate(C5_VALUES, start=1):
    assert abs(theory.error_ratio(5, k) - want) < 1e-12
  got = theory.error_ratio(5.0, np.arange(1, 7))
  assert isinstance(got, np.ndarray) and got.shape == (6,)
  np.testing.assert_allclose(got, C5_VALUES, rtol=0, atol=1e-12)
  assert theory.error_ratio(5, 0) == 0.0
  assert isinstance(theory.error_ratio(5, 3), float)


def test_error_ratio_limits():
  assert theory.error_ratio(math.inf, 7) == 0.0
  # Large c: expm1/log1p keep the ratio close to k/c, not swamped by rounding.
  np.testing.assert_allclose(theory.error_ratio(1e12, 3), 3e-12, rtol=1e-9)


@pytest.mark.parametrize("c", [0.0, -1.0, math.nan], ids=["zero", "negative", "nan"])
def test_error_ratio_rejects_bad_c(c):
  with pytest.raises(ValueError, match="c must be"):
    theory.error_ratio(c, 1)


@pytest.mark.parametrize("k", [-1, 1.5, [1, -2], math.inf], ids=["negative", "fractional", "array_negative", "inf"])
def test_error_ratio_rejects_bad_k(k):
  with pytest.raises(ValueError, match="k must be"):
    theory.error_ratio(5.0, k)


def test_depth_exceeding():
  assert theory.depth_exceeding(5, 1.0) == 4
  # Exact tie: error_ratio(1, 1) == 1 is not > 1, so the answer is 2.
  assert theory.depth_exceeding(1, 1.0) == 2
  assert theory.depth_exceeding(5, -0.5) == 0
  assert theory.depth_exceeding(5, 0.0) == 1
  for c in (0.3, 1.0, 2.0, 5.0, 10.0, 100.0):
    for t in (0.01, 0.1, 0.5, 1.0, 3.0):
      k = theory.depth_exceeding(c, t)
      assert theory.error_ratio(c, k) > t
      assert k == 0 or theory.error_ratio(c, k - 1) <= t
  with pytest.raises(ValueError):
    theory.depth_exceeding(0.0, 1.0)
  with pytest.raises(ValueError):
    theory.depth_exceeding(math.inf, 1.0)
  with pytest.raises(ValueError):
    theory.depth_exceeding(5.0, math.nan)


@CS
def test_construction_meets_assumption_exactly(c):
  x, weights, active_sets = theory.construct_network(c=c, depth=7, width=32, active=5, seed=1)
  assert x.shape == (32,) and len(weights) == len(active_sets) == 7
  for w, act in zip(weights, active_sets):
    assert w.shape == (32, 32) and w.dtype == np.float64
    assert act.shape == (32, 5)
    assert all(len(set(row)) == 5 for row in act.tolist())
  for reading in ("approximate", "exact"):
    ratios = theory.assumption_ratios(x, weights, active_sets, reading=reading)
    assert len(ratios) == 7
    for r in ratios:
      np.testing.assert_allclose(r, c, rtol=1e-10, atol=0)


@CS
def test_measured_error_ratio_reproduces_closed_form(c):
  x, weights, active_sets = theory.construct_network(c=c, depth=7, width=32, active=5, seed=2)
  measured = theory.measured_error_ratio(x, weights, active_sets)
  assert measured.shape == (7, 32)
  want = theory.error_ratio(c, np.arange(1, 8))[:, None]
  np.testing.assert_allclose(measured, np.broadcast_to(want, measured.shape), rtol=1e-9, atol=0)


@CS
def test_without_propagation_error_does_not_compound(c):
  # Approximating each layer from exact inputs loses only 1/c per layer: the
  # theorem's compounding comes from abar^k being built on abar^{k-1}.
  x, weights, active_sets = theory.construct_network(c=c, depth=5, width=16, active=3, seed=3)
  measured = theory.measured_error_ratio(x, weights, active_sets, propagate=False)
  np.testing.assert_allclose(measured, 1.0 / c, rtol=1e-9, atol=0)


def test_unconstrained_network_does_not_follow_closed_form():
  # Sanity check that the measurement can disagree: random weights with no
  # rescaling give node-dependent ratios.
  rng = np.random.default_rng(0)
  x = rng.uniform(0.5, 1.5, 16)
  weights = [rng.uniform(0.1, 1.0, (16, 16)) for _ in range(3)]
  active_sets = [np.sort(rng.permutation(16)[:4]) * np.ones((16, 1), dtype=int) for _ in range(3)]
  measured = theory.measured_error_ratio(x, weights, active_sets)
  assert np.ptp(measured[-1]) > 1e-3


def test_theorem_table():
  table = theory.theorem_table(5.0, depths=range(1, 8), width=24, active=4, seed=0)
  assert [row["k"] for row in table] == list(range(1, 8))
  for row in table:
    assert set(row) == {"k", "closed_form", "measured_mean", "measured_max_abs_dev"}
    assert row["closed_form"] == pytest.approx(theory.error_ratio(5.0, row["k"]), abs=0)
    assert row["measured_mean"] == pytest.approx(row["closed_form"], rel=1e-9)
    assert row["measured_max_abs_dev"] <= 1e-9 * row["closed_form"]
  assert [row["closed_form"] for row in table[:6]] == pytest.approx(C5_VALUES, abs=1e-12)


@pytest.mark.parametrize(
    "kwargs",
    [dict(c=0.0), dict(depth=0), dict(width=1, active=1), dict(active=0), dict(active=8)],
    ids=["c", "depth", "width", "active_zero", "active_all"])
def test_construct_network_rejects_bad_args(kwargs):
  args = dict(c=5.0, depth=3, width=8, active=2, seed=0) | kwargs
  with pytest.raises(ValueError):
    theory.construct_network(**args)


def test_measured_error_ratio_rejects_mismatched_active_sets():
  x, weights, active_sets = theory.construct_network(c=2.0, depth=2, width=8, active=2, seed=0)
  with pytest.raises(ValueError, match="active set"):
    theory.measured_error_ratio(x, weights, active_sets[:1])
  bad = [active_sets[0], active_sets[1] + 8]
  with pytest.raises(ValueError, match="indices"):
    theory.measured_error_ratio(x, weights, bad)


def test_effective_c_hand_example():
  a_prev = np.array([[1.0, 2.0, 3.0],
                     [1.0, 1.0, 1.0]])
  w = np.array([[1.0, 2.0],
                [1.0, 0.0],
                [2.0, 1.0]])
  prev_active = np.array([[True, True, False],
                          [False, True, True]])
  # Row 0: active = 1*w0 + 2*w1 = [3, 2]; inactive = 3*w2 = [6, 3].
  # Row 1: active = w1 + w2 = [3, 1];     inactive = w0 = [1, 2].
  got = np.asarray(theory.effective_c(a_prev, w, prev_active))
  np.testing.assert_allclose(got, [[0.5, 2.0 / 3.0], [3.0, 0.5]], rtol=1e-6)
  assert theory.summarize_effective_c(got) == pytest.approx(np.median([0.5, 2 / 3, 3.0, 0.5]))


def test_effective_c_all_active_is_inf_and_error_zero():
  a_prev = np.array([[1.0, 2.0], [0.0, 0.0]])
  w = np.array([[1.0, -1.0], [0.5, 0.25]])
  prev_active = np.ones_like(a_prev, dtype=bool)
  got = np.asarray(theory.effective_c(a_prev, w, prev_active))
  assert np.isposinf(got[0, 0]) and np.isneginf(got[0, 1])  # active parts 2 and -0.5
  assert np.all(np.isnan(got[1]))  # 0 / 0
  assert theory.summarize_effective_c(got) == math.inf
  assert theory.error_ratio(theory.summarize_effective_c(got), 5) == 0.0
  # The measured error of an all-active linear network is 0 too.
  rng = np.random.default_rng(0)
  weights = [rng.normal(size=(4, 4)) for _ in range(3)]
  everything = [np.tile(np.arange(4), (4, 1)) for _ in range(3)]
  np.testing.assert_array_equal(
      theory.measured_error_ratio(rng.normal(size=4), weights, everything), 0.0)


def test_summarize_effective_c_ignores_non_finite():
  ratios = np.array([1.0, -3.0, np.inf, np.nan, 2.0])
  assert theory.summarize_effective_c(ratios) == 2.0
  assert math.isnan(theory.summarize_effective_c(np.array([np.nan])))


def test_effective_c_rejects_bad_shapes():
  with pytest.raises(ValueError):
    theory.effective_c(np.ones((2, 3)), np.ones((4, 2)), np.ones((2, 3), bool))
  with pytest.raises(ValueError):
    theory.effective_c(np.ones((2, 3)), np.ones((3, 2)), np.ones((2, 2), bool))


def test_effective_c_matches_construction_exact_reading():
  # The construction enforces (*) on approximate activations; effective_c reads
  # it off exact ones. The two readings agree (module docstring), node by node.
  c = 5.0
  x, weights, active_sets = theory.construct_network(c=c, depth=3, width=12, active=3, seed=4)
  a = x
  for w, act in zip(weights, active_sets):
    for p in range(w.shape[1]):
      mask = np.zeros((1, w.shape[0]), bool)
      mask[0, act[p]] = True
      got = float(np.asarray(theory.effective_c(a[None, :], w[:, p:p + 1], mask))[0, 0])
      assert got == pytest.approx(c, rel=1e-5)  # float32 by default in jnp
    a = a @ w
