"""Tests for sampling_mlp.error_analysis and experiments.error_propagation."""

import json
import math
import os

from absl import flags
from absl.testing import flagsaver
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sampling_mlp import dropout, error_analysis as ea, layers, registry, theory
from sampling_mlp.optim import OptimConfig

# Hand-computed 1 - (5/6)^k for k = 1..3: 1/6, 11/36, 91/216.
C5_REL = (1 / 6, 11 / 36, 91 / 216)


def _network(depth, *, width=40, dim=20, classes=4, seed=0, activation="relu"):
  sizes = layers.layer_sizes(input_dim=dim, hidden=width, depth=depth,
                             num_classes=classes)
  return layers.init_mlp(jax.random.key(seed), sizes)


def _inputs(n=32, dim=20, seed=1):
  rng = np.random.default_rng(seed)
  return rng.normal(size=(n, dim)).astype(np.float32), rng.integers(0, 4, n)


def _model(params, activation):
  return registry.ModelConfig(
      input_dim=params[0].w.shape[0], num_classes=params[-1].w.shape[1],
      hidden=params[0].w.shape[1], depth=len(params) - 1, activation=activation)


def _measure(params, variants, *, activation="relu", num_keys=2, mc_batch=32):
  x, y = _inputs()
  return ea.measure_network(params, x, y, activation=activation,
                            variants=variants, key=jax.random.key(7),
                            num_keys=num_keys, mc_batch=mc_batch)


# -- theory glue ---------------------------------------------------------------


def test_theorem_relative_error_hand_values():
  for k, want in enumerate(C5_REL, start=1):
    assert ea.theorem_relative_error(5.0, k) == pytest.approx(want, abs=1e-15)
  np.testing.assert_allclose(ea.theorem_relative_error(5.0, np.arange(1, 4)),
                             C5_REL, rtol=0, atol=1e-15)
  assert ea.theorem_relative_error(math.inf, 4) == 0.0
  with pytest.raises(ValueError, match="c must be"):
    ea.theorem_relative_error(0.0, 1)


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
    np.testing.assert_allclose((a - abar) / a, ea.theorem_relative_error(c, k),
                               rtol=1e-10, atol=0)
    assert ea.relative_error(abar, a) == pytest.approx(
        ea.theorem_relative_error(c, k), rel=1e-10)
    assert ea.relative_error(abar, a, against="approx") == pytest.approx(
        theory.error_ratio(c, k), rel=1e-10)


def test_layerwise_theorem_ratio():
  np.testing.assert_allclose(ea.layerwise_theorem_ratio([5.0] * 4),
                             theory.error_ratio(5.0, np.arange(1, 5)), rtol=1e-12)
  # An exact step (c = inf) adds nothing; 1 and 2 give 2 * 1.5 - 1.
  np.testing.assert_allclose(ea.layerwise_theorem_ratio([1.0, math.inf, 2.0]),
                             [1.0, 1.0, 2.0], rtol=1e-12)
  with pytest.raises(ValueError, match="> 0"):
    ea.layerwise_theorem_ratio([1.0, -2.0])


def test_theorem_markdown_matches_closed_form():
  md, table = ea.theorem_markdown(5.0, range(1, 8))
  assert [r["k"] for r in table] == list(range(1, 8))
  for r in table:
    assert r["closed_form"] == theory.error_ratio(5.0, r["k"])
    assert r["measured_mean"] == pytest.approx(r["closed_form"], rel=1e-12)
    assert r["measured_max_abs_dev"] <= 1e-12 * max(1.0, r["closed_form"])
  assert "0.7280000000" in md and "1.9859840000" in md


# -- metrics -------------------------------------------------------------------


def test_relative_error():
  exact = np.array([[3.0, 4.0], [0.0, 0.0]])
  approx = np.array([[3.0, 0.0], [0.0, 0.0]])
  assert ea.relative_error(approx, exact) == pytest.approx(4.0 / 5.0)
  assert ea.relative_error(approx, exact, against="approx") == pytest.approx(4.0 / 3.0)
  mask = np.array([[True, False], [False, False]])
  assert ea.relative_error(approx, exact, mask) == 0.0
  assert math.isnan(ea.relative_error(exact[1:], exact[1:]))
  with pytest.raises(ValueError):
    ea.relative_error(approx, exact[:1])
  assert ea.top1_agreement([[0, 1], [2, 1]], [[0, 1], [0, 1]]) == 0.5


def test_dropout_activations_follow_dropout_forward():
  params = _network(3)
  x, _ = _inputs()
  key = jax.random.key(3)
  acts, masks = ea.dropout_activations(key, params, jnp.asarray(x),
                                       keep_prob=0.5, activation="relu")
  logits, want_masks = dropout.dropout_forward(key, params, jnp.asarray(x),
                                               keep_prob=0.5, activation="relu")
  assert len(acts) == 4 and acts[0].shape == (32, 40)
  np.testing.assert_allclose(acts[-1], logits, rtol=1e-6, atol=1e-6)
  for m, w, a in zip(masks, want_masks, acts):
    np.testing.assert_array_equal(m, w)
    assert np.all(np.asarray(a)[~np.asarray(m)] == 0)


# -- the layer-by-layer passes reproduce the methods' own passes ----------------


@pytest.mark.parametrize("activation", ["linear", "relu"])
def test_exact_forward_matches_layers(activation):
  params = _network(3)
  x, _ = _inputs()
  got = ea.exact_forward(params, x, activation=activation)
  want = layers.hidden_activations(params, jnp.asarray(x), activation=activation)
  for g, w in zip(got, want, strict=True):
    np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-6)


def test_alsh_layers_match_approx_forward(transform="l2_alsh", hash_="srp",
                                          activation="relu"):
  params = _network(2, activation=activation)
  x, _ = _inputs()
  impl = registry.get("alsh").make(
      _model(params, activation), OptimConfig(),
      {"alsh_transform": transform, "alsh_hash": hash_,
       "alsh_active_fraction": 0.2})
  key = jax.random.key(5)
  got = list(ea.alsh_layers(impl, params, jnp.asarray(x), key))
  k_init, k_fwd = jax.random.split(key)
  state = jax.jit(impl.init)(k_init, params)
  acts, idxs, _ = jax.jit(impl.approx_forward)(state, jnp.asarray(x), k_fwd)
  assert len(got) == len(acts) == 3
  for (a, mask, idx), want, want_idx in zip(got, acts, idxs + [None]):
    np.testing.assert_allclose(a, want, rtol=1e-5, atol=1e-6)
    if want_idx is None:
      assert mask is None and idx is None
    else:
      np.testing.assert_array_equal(idx, want_idx)
      assert np.asarray(mask).sum(1).tolist() == [8] * 32  # 20% of 40
      assert np.all(np.asarray(a)[~np.asarray(mask)] == 0)


@pytest.mark.parametrize("sampler", ["crs", "bernoulli"])
def test_mc_layers_match_approx_forward(sampler):
  params = _network(3)
  x, _ = _inputs()
  impl = registry.get("mc").make(_model(params, "relu"), OptimConfig(),
                                 {"mc_sampler": sampler, "mc_ratio": 0.25})
  key = jax.random.key(6)
  got = [a for a, _, _ in ea.mc_layers(impl, params, jnp.asarray(x), key,
                                       mc_batch=16)]
  batch_keys = jax.random.split(key, 2)
  fwd = jax.jit(impl.approx_forward)
  want = [fwd(params, jnp.asarray(x[i * 16:(i + 1) * 16]), batch_keys[i])[0]
          for i in range(2)]
  for l, g in enumerate(got):
    np.testing.assert_allclose(
        g, np.concatenate([np.asarray(w[l]) for w in want]), rtol=1e-5, atol=1e-5)


def test_effective_c_summary():
  ratios = np.array([[1.0, -3.0, np.inf], [np.nan, 2.0, -0.5]])
  c, pos = ea.effective_c_summary(ratios)
  assert c == theory.summarize_effective_c(ratios) == 1.5
  assert pos == 0.5  # 1 and 2 of the four finite ratios
  c, pos = ea.effective_c_summary(np.array([np.inf, -np.inf]))
  assert c == math.inf and math.isnan(pos)


# -- the approximate passes ----------------------------------------------------


def test_exact_settings_have_zero_error(activation="linear"):
  params = _network(3, activation=activation)
  variants = [ea.alsh_variant("l2_alsh", "srp", alsh_active_fraction=1.0),
              ea.mc_variant("crs", 1.0), ea.dropout_variant(1.0)]
  rows = _measure(params, variants, activation=activation)
  assert len(rows) == 2 * len(variants)
  for r in rows:
    assert len(r["rel_err"]) == 4
    np.testing.assert_allclose(r["rel_err"], 0.0, atol=1e-5, err_msg=r["variant"])
    assert r["top1"] == 1.0, r["variant"]
    assert r["approx_accuracy"] == r["exact_accuracy"]
    if r["method"] == "alsh":
      assert r["active_fraction"] == 1.0
      np.testing.assert_allclose(r["err_ratio"], 0.0, atol=1e-5)
      # Every input active: no inactive part, c = inf, theorem error 0.
      assert r["effective_c"] == [math.inf] * 3


def test_approximations_have_positive_error():
  params = _network(3, activation="linear")
  variants = [ea.alsh_variant("l2_alsh", "srp"), ea.mc_variant("crs", 0.1),
              ea.mc_variant("uniform", 0.1), ea.dropout_variant(0.05)]
  rows = _measure(params, variants, activation="linear")
  for r in rows:
    assert r["logits_rel_err"] > 1e-2, r["variant"]
    # MC's first product (the input layer) is exact by default; ALSH's first
    # hidden layer reads the whole input, so its active nodes are exact.
    assert r["rel_err"][1] > 1e-2, r["variant"]
    if r["method"] == "alsh":
      assert r["active_fraction"] == pytest.approx(0.05)
      assert r["err_ratio"][0] < 1e-5
      assert r["err_ratio"][1] > 1e-2
      assert len(r["effective_c"]) == 3
      assert all(0 < c < math.inf for c in r["effective_c"])
      assert all(0 <= p <= 1 for p in r["c_positive"])
  # Different keys give different draws.
  by = {}
  for r in rows:
    by.setdefault(r["variant"], []).append(r["logits_rel_err"])
  assert by["mc crs r=0.1"][0] != by["mc crs r=0.1"][1]


def test_mc_pass_rejects_ragged_batches():
  params = _network(2)
  x, y = _inputs(48)
  with pytest.raises(ValueError, match="multiple"):
    ea.measure_network(params, x, y, activation="relu",
                       variants=[ea.mc_variant("crs", 0.5)],
                       key=jax.random.key(0), num_keys=1, mc_batch=32)


def test_variant_validation():
  with pytest.raises(ValueError):
    ea.mc_variant("crs", 0.0)
  with pytest.raises(ValueError):
    ea.alsh_variant("l2_alsh", "nope")
  with pytest.raises(ValueError):
    ea.dropout_variant(1.5)
  labels = [v.label for v in ea.default_variants()]
  assert len(labels) == 6 + 8 + 2 and len(set(labels)) == len(labels)


def test_train_params(tiny):
  fresh = ea.train_params(tiny, depth=1, hidden=16, activation="relu",
                          epochs=0, seed=3)
  trained = ea.train_params(tiny, depth=1, hidden=16, activation="relu",
                            epochs=1, seed=3, batch_size=64)
  assert [p.w.shape for p in fresh] == [(20, 16), (16, 4)]
  assert not np.allclose(fresh[0].w, trained[0].w)
  x, y = jnp.asarray(tiny.test.x), tiny.test.y
  acc = lambda p: ea.accuracy(layers.mlp_apply(p, x, activation="relu"), y)
  assert acc(trained) > acc(fresh)
  with pytest.raises(ValueError, match="epochs"):
    ea.train_params(tiny, depth=1, hidden=8, activation="relu", epochs=-1, seed=0)


# -- summaries -----------------------------------------------------------------


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
  summary = ea.summarize(_fake_rows(g=1.5))
  assert len(summary) == 5
  s = summary[0]
  assert s["num_keys"] == 2 and s["logits_rel_err_std"] > 0
  (gr,) = ea.growth(summary)
  assert gr["g"] == pytest.approx(1.5, rel=1e-6)
  assert gr["depth_first"] == 1 and gr["depth_last"] == 5
  md = ea.depth_table(summary, field="logits_rel_err",
                      spread="logits_rel_err_std", activation="linear",
                      training="init")
  assert md.count("\n") == 3 and "d=5" in md


# -- the whole experiment --------------------------------------------------------


def test_entry_point_end_to_end(tmp_path):
  from experiments import error_propagation  # defines the flags
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()
  with flagsaver.as_parsed(
      out_dir=str(tmp_path), part="all", depths="1,2", hidden="16",
      max_train="64", max_test="64", eval_examples="32", mc_batch="32",
      num_keys="1", activations="relu", alsh_pairs="l2_alsh+srp",
      mc_samplers="crs", mc_ratios="0.5", keep_probs="0.5", progress="false",
      train_epochs="0", zero_bias="true"):
    error_propagation.main([])
  out = tmp_path / "error_propagation"
  for name in ("theorem.md", "rows.jsonl", "table.md",
               "error_vs_depth_relu_init.png", "alsh_theorem_relu_init.png"):
    assert (out / name).stat().st_size > 0, name
  rows = [json.loads(l) for l in (out / "rows.jsonl").read_text().splitlines()]
  # 2 depths x 3 variants x 1 key, freshly initialised networks only.
  assert len(rows) == 6
  assert {r["training"] for r in rows} == {"init"}
  assert {r["depth"] for r in rows} == {1, 2}
  assert all(r["zero_bias"] for r in rows)
  table = (out / "table.md").read_text()
  assert "alsh l2_alsh+srp" in table and "Growth" in table
  assert "biases set to 0" in table and "theorem 1 + 1/c" in table
  assert "2.5831808000" in (out / "theorem.md").read_text()
