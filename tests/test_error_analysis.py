"""Tests for sampling_mlp.error_analysis and experiments.error_propagation."""

import json
import math

from absl import flags
from absl.testing import flagsaver
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import toy_method  # noqa: F401  (registers "top_half")
from sampling_mlp import error_analysis as ea, layers, registry, theory
from sampling_mlp.optim import OptimConfig


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


def _measure(params, variants, *, activation="relu", num_keys=2, eval_batch=32):
  x, y = _inputs()
  return ea.measure_network(params, x, y, activation=activation,
                            variants=variants, key=jax.random.key(7),
                            num_keys=num_keys, eval_batch=eval_batch)


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


# -- the layer-by-layer pass is the method's own pass --------------------------


@pytest.mark.parametrize("activation", ["linear", "relu"])
def test_exact_forward_matches_layers(activation):
  params = _network(3)
  x, _ = _inputs()
  got = ea.exact_forward(params, x, activation=activation)
  want = layers.hidden_activations(params, jnp.asarray(x), activation=activation)
  for g, w in zip(got, want, strict=True):
    np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-6)


_OPTIONS = {"mc": {"mc_ratio": 0.25, "mc_sampler": "crs"},
            "alsh": {"alsh_active_fraction": 0.2}}


@pytest.mark.parametrize("name", registry.names())
def test_approx_layers_match_approx_forward(name):
  """One jitted layer at a time, on batches of 16 with a key each: the
  numbers of the method's approx_forward on those batches."""
  params = _network(2)
  x, _ = _inputs()
  impl = registry.get(name).make(_model(params, "relu"), OptimConfig(),
                                 _OPTIONS.get(name, {}))
  state = jax.jit(impl.init)(jax.random.key(4), params)
  key = jax.random.key(6)
  got = list(ea.approx_layers(impl, state, jnp.asarray(x), key, eval_batch=16))
  fwd = jax.jit(impl.approx_forward)
  want = [fwd(state, jnp.asarray(x[i * 16:(i + 1) * 16]), k)
          for i, k in enumerate(jax.random.split(key, 2))]
  assert len(got) == 3
  for l, g in enumerate(got):
    np.testing.assert_allclose(
        g.a, np.concatenate([np.asarray(w[l].a) for w in want]), rtol=1e-5,
        atol=1e-5)
    if g.computed is None:
      assert want[0][l].computed is None
    else:
      np.testing.assert_array_equal(
          g.computed, np.concatenate([np.asarray(w[l].computed)
                                      for w in want]))
      assert np.all(np.asarray(g.a)[~np.asarray(g.computed)] == 0)


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
  variants = [ea.variant(name, **registry.get(name).keep_all)
              for name in ("alsh", "mc", "dropout", "top_half")]
  rows = _measure(params, variants, activation=activation)
  assert len(rows) == 2 * len(variants)
  for r in rows:
    assert len(r["rel_err"]) == 4
    np.testing.assert_allclose(r["rel_err"], 0.0, atol=1e-5, err_msg=r["variant"])
    assert r["top1"] == 1.0, r["variant"]
    assert r["approx_accuracy"] == r["exact_accuracy"]
    if r["method"] != "mc":  # the node-subset methods
      assert r["active_fraction"] == 1.0
      np.testing.assert_allclose(r["err_ratio"], 0.0, atol=1e-5)
      # Every input active: no inactive part, c = inf, theorem error 0.
      assert r["effective_c"] == [math.inf] * 3
    else:
      assert "err_ratio" not in r


def test_approximations_have_positive_error():
  params = _network(3, activation="linear")
  variants = [ea.variant("alsh"), ea.variant("mc", mc_sampler="crs", mc_ratio=0.1),
              ea.variant("mc", mc_sampler="uniform", mc_ratio=0.1),
              ea.variant("dropout", keep_prob=0.05)]
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
  assert by["mc sampler=crs ratio=0.1"][0] != by["mc sampler=crs ratio=0.1"][1]


def test_ragged_batches_are_rejected():
  params = _network(2)
  x, y = _inputs(48)
  with pytest.raises(ValueError, match="multiple"):
    ea.measure_network(params, x, y, activation="relu",
                       variants=[ea.variant("mc", mc_ratio=0.5)],
                       key=jax.random.key(0), num_keys=1, eval_batch=32)


def test_variants_come_from_the_registry():
  with pytest.raises(ValueError, match="mc_ratio"):
    ea.variant("mc", mc_ratio=0.0)
  with pytest.raises(ValueError, match="alsh_hash"):
    ea.variant("alsh", alsh_hash="nope")
  with pytest.raises(ValueError, match="has no option.*keep_prob"):
    ea.variant("mc", keep_prob=0.5)
  labels = [v.label for v in ea.default_variants()]
  assert len(labels) == 6 + 8 + 2 and len(set(labels)) == len(labels)
  assert "alsh transform=l2_alsh hash=srp" in labels
  assert "mc sampler=bernoulli ratio=0.5" in labels
  # A grid entry replaces that option's values; base values apply to all.
  vs = ea.default_variants(("mc", "dropout"), {"mc_ratio": (0.3,)},
                           {"mc_min_k": 2, "keep_prob": 0.1})
  assert [v.label for v in vs] == [
      "mc sampler=crs ratio=0.3", "mc sampler=bernoulli ratio=0.3",
      "mc sampler=topk ratio=0.3", "mc sampler=uniform ratio=0.3",
      "dropout keep_prob=0.05", "dropout keep_prob=0.5"]
  assert vs[0].config["mc_min_k"] == 2
  with pytest.raises(ValueError, match="none of alsh has"):
    ea.default_variants(("alsh",), {"mc_ratio": (0.3,)})
  # A method without options or grid is one variant.
  (v,) = ea.method_variants("adaptive_dropout", {})
  assert v.label == "adaptive_dropout" and v.config == {}


def test_parse_grid():
  grid = ea.parse_grid(["mc_ratio=0.1, 0.5", "alsh_K=4,6",
                        "mc_sample_input=true,false"])
  assert grid == {"mc_ratio": (0.1, 0.5), "alsh_K": (4, 6),
                  "mc_sample_input": (True, False)}
  for bad, match in (("mc_ratio", "OPTION=V1,V2"), ("nope=1", "no method has"),
                     ("alsh_K=x", "must be ints"), ("mc_ratio=2", "mc_ratio")):
    with pytest.raises(ValueError, match=match):
      ea.parse_grid([bad])


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


# -- the whole experiment --------------------------------------------------------


def test_entry_point_end_to_end(tmp_path):
  from experiments import error_propagation  # defines the flags
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()
  with flagsaver.as_parsed(
      out_dir=str(tmp_path), part="all", depths="1,2", hidden="16",
      max_train="64", max_test="64", eval_examples="32", eval_batch="32",
      num_keys="1", activations="relu", method="alsh,mc,dropout",
      grid=["alsh_transform=l2_alsh", "alsh_hash=srp", "mc_sampler=crs",
            "mc_ratio=0.5", "keep_prob=0.5"],
      progress="false", train_epochs="0", zero_bias="true"):
    error_propagation.main([])
  out = tmp_path / "error_propagation"
  for name in ("theorem.md", "rows.jsonl", "table.md",
               "error_vs_depth_relu_init.png", "theorem_relu_init.png"):
    assert (out / name).stat().st_size > 0, name
  rows = [json.loads(l) for l in (out / "rows.jsonl").read_text().splitlines()]
  # 2 depths x 3 variants x 1 key, freshly initialised networks only.
  assert len(rows) == 6
  assert {r["training"] for r in rows} == {"init"}
  assert {r["depth"] for r in rows} == {1, 2}
  assert all(r["zero_bias"] for r in rows)
  table = (out / "table.md").read_text()
  assert "alsh transform=l2_alsh hash=srp" in table and "Growth" in table
  assert "biases set to 0" in table and "theorem 1 + 1/c" in table
  assert "2.5831808000" in (out / "theorem.md").read_text()
