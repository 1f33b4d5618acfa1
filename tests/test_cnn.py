"""Tests of the CNNs (sampling_mlp/cnn/) and their methods."""

import json
import subprocess
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from sampling_mlp import checkpoint, registry, train
from sampling_mlp.cnn import CNNConfig, method as cnn_method, models
from sampling_mlp.optim import OptimConfig

LENET = CNNConfig(arch="lenet", image_shape=(28, 28, 1), num_classes=10,
                  width=4, hidden=16)
RESNET = CNNConfig(arch="resnet18", image_shape=(8, 8, 3), num_classes=10,
                   width=4, depth=1, hidden=8)


def _batch(cfg, n=16, seed=1):
  x = jax.random.normal(jax.random.key(seed), (n, cfg.input_dim))
  return x, jnp.arange(n) % cfg.num_classes


def _train(cfg, method, values=None, epochs=2, batch_size=8, n=16):
  impl = registry.get(method).make(cfg, OptimConfig(), values or {})
  x, y = _batch(cfg, n)
  eps, states = [], []
  for e in train.epochs(impl, x, y, keys=train.RunKeys(0),
                        batch_size=batch_size, num_epochs=epochs):
    # A yielded state is valid until the next epoch (which donates it).
    states.append(jax.tree.map(np.asarray, nnx.state(e.state.view())))
    eps.append(e)
  return impl, states, eps


def test_shapes_of_the_trunks():
  assert cnn_method.feature_dim(LENET) == 5 * 5 * 11  # 8w/3 = 11 channels
  assert cnn_method.feature_dim(
      CNNConfig(arch="lenet", image_shape=(32, 32, 3), num_classes=10)) == 576
  assert cnn_method.feature_dim(RESNET) == 32  # 8 w
  impl = registry.get("standard").make(RESNET, OptimConfig())
  shapes = impl.conv_shapes(2)
  # The stem, 8 blocks of two, and the shortcuts of stages 2-4.
  assert len(shapes) == 1 + 16 + 3
  assert shapes[0].x == (2, 8, 8, 3) and shapes[-1].out == (2, 1, 1, 32)
  assert impl.head.model.sizes == (32, 8, 10)


def test_defaults_of_the_config():
  cfg = CNNConfig(arch="resnet18", image_shape=(32, 32, 3), num_classes=10)
  assert (cfg.width, cfg.depth, cfg.hidden) == (64, 0, 512)
  with pytest.raises(ValueError, match="unknown CNN 'vgg'"):
    CNNConfig(arch="vgg", image_shape=(32, 32, 3), num_classes=10)
  with pytest.raises(ValueError, match=r"image_shape must be \(H, W, C\)"):
    CNNConfig(arch="lenet", image_shape=(784,), num_classes=10)
  with pytest.raises(ValueError, match="at least 12x12"):
    registry.get("standard").make(
        CNNConfig(arch="lenet", image_shape=(8, 8, 1), num_classes=10),
        OptimConfig())


@pytest.mark.parametrize("method", cnn_method.CNN_METHODS)
def test_every_method_trains_a_lenet(method):
  impl, states, eps = _train(LENET, method, {"mc_ratio": 0.5})
  assert all(np.isfinite(e.metrics["loss"]) for e in eps)
  assert int(eps[-1].state.step) == 4
  x, _ = _batch(LENET, 4)
  assert impl.predict(eps[-1].state, x).shape == (4, 10)
  # The trunk learns (its gradient reaches it through the head).
  w0 = train.init_state(impl, train.RunKeys(0)).view().trunk.conv1.w[...]
  w1 = states[-1]["trunk"]["conv1"]["w"]
  assert np.abs(np.asarray(w1) - np.asarray(w0)).max() > 0


@pytest.mark.parametrize("method, keep_all", [
    ("mc", {"mc_ratio": 1.0}), ("dropout", {"keep_prob": 1.0}),
    ("alsh", {"alsh_active_fraction": 1.0})])
def test_keeping_everything_trains_as_standard(method, keep_all):
  """At the option values under which the method computes every product
  (the registry's keep_all), its CNN trains as STANDARD's: the same
  losses and the same weights."""
  assert registry.get(method).keep_all == keep_all
  _, _, ref = _train(LENET, "standard")
  impl, _, got = _train(LENET, method, keep_all)
  for a, b in zip(ref, got):
    np.testing.assert_allclose(a.metrics["loss"], b.metrics["loss"],
                               rtol=1e-5)
  x, _ = _batch(LENET, 8, seed=3)
  standard = registry.get("standard").make(LENET, OptimConfig())
  chex.assert_trees_all_close(impl.predict(got[-1].state, x),
                              standard.predict(ref[-1].state, x), rtol=1e-4,
                              atol=1e-5)


def test_resnet_batch_norm_state_is_carried_and_used_in_evaluation():
  impl, states, eps = _train(RESNET, "mc", {"mc_ratio": 0.5}, epochs=1)
  before = nnx.state(train.init_state(impl, train.RunKeys(0)).view(),
                     nnx.BatchStat)
  after = nnx.state(eps[-1].state.view(), nnx.BatchStat)
  moved = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()), before,
                       after)
  assert min(jax.tree.leaves(moved)) > 0  # every running statistic moved
  x, _ = _batch(RESNET, 4, seed=5)
  model = eps[-1].state.view()
  # Evaluation normalises by the running statistics, not the batch's.
  ev = model.features(None, x, train=False)
  tr = model.features(jax.random.key(0), x, train=True)
  assert float(jnp.abs(ev - tr).max()) > 1e-3
  del states


def test_mc_samples_every_convolution_but_the_stem():
  impl = registry.get("mc").make(RESNET, OptimConfig(), {"mc_ratio": 0.5})
  shapes = impl.conv_shapes(2)
  assert shapes[0].num_samples is None
  assert all(s.num_samples == s.x[3] // 2 for s in shapes[1:])


def test_counted_multiply_adds():
  """LeNet's exact step by hand: per convolution B H' W' m kh kw n forward
  and weight gradient, and the input gradient but for the stem's; then the
  head's exact MLP count."""
  impl = registry.get("standard").make(LENET, OptimConfig())
  b = 3
  conv1 = 28 * 28 * 4 * 25 * 1
  conv2 = 10 * 10 * 11 * 25 * 4
  head = registry.exact_step_flops((275, 16, 16, 10), b)
  assert impl.exact_flops(b) == b * (2 * conv1 + 3 * conv2) + head
  assert impl.step_flops(b) == impl.exact_flops(b)
  cfg = CNNConfig(arch="resnet18", image_shape=(16, 16, 3), num_classes=10,
                  width=16)
  mc = registry.get("mc").make(cfg, OptimConfig(),
                               {"mc_ratio": 0.1, "mc_sampler": "crs"})
  frac = mc.step_flops(8) / mc.exact_flops(8)
  assert 0.1 < frac < 0.25, frac


def test_methods_without_a_cnn_variant_are_clear_errors():
  with pytest.raises(ValueError, match="'adaptive_dropout' has no CNN "
                     "variant; methods that train CNNs: standard, dropout, "
                     "mc, alsh"):
    registry.get("adaptive_dropout").make(LENET, OptimConfig())


def test_checkpoint_resume_continues_exactly(tmp_path):
  """Training after a restored epoch (batch-norm statistics, ALSH tables
  and Adam moments included) repeats the uninterrupted run."""
  cfg, method, values = RESNET, "alsh", {}
  impl = registry.get(method).make(cfg, OptimConfig(), values)
  x, y = _batch(cfg)
  keys = train.RunKeys(0)
  straight = [jax.tree.map(np.asarray, nnx.state(e.state.view()))
              for e in train.epochs(impl, x, y, keys=keys, batch_size=8,
                                    num_epochs=2)]  # copied as yielded
  ckpt = checkpoint.RunCheckpoint(str(tmp_path / "c"), run_id="r")
  for e in train.epochs(impl, x, y, keys=keys, batch_size=8, num_epochs=1):
    ckpt.save(e.state, [{"epoch": 1}])
  state, rows = ckpt.restore(train.init_state(impl, keys))
  assert rows == [{"epoch": 1}]
  (last,) = list(train.epochs(impl, x, y, keys=keys, batch_size=8,
                              num_epochs=2, state=state, first_epoch=1))
  chex.assert_trees_all_close(
      jax.tree.map(np.asarray, nnx.state(last.state.view())), straight[-1])


def test_cnn_entry_point_writes_and_resumes(tmp_path):
  cmd = [sys.executable, "-m", "experiments.cnn", "--model=lenet",
         "--method=standard,mc", "--dataset=mnist_small", "--epochs=1",
         "--max_train=64", "--max_test=32", "--batch_size=32",
         "--cnn_width=2", "--head_hidden=8", "--noprogress",
         f"--out_dir={tmp_path}"]
  out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-2000:]
  rows = [json.loads(l) for l in
          (tmp_path / "cnn" / "runs.jsonl").read_text().splitlines()]
  assert [(r["method"], r["model"], r["depth"], r["hidden"]) for r in rows] \
      == [("standard", "lenet", 2, 8), ("mc", "lenet", 2, 8)]
  assert rows[0]["config"]["cnn_width"] == 2
  assert (tmp_path / "cnn" / "mnist_small_lenet_standard-mc.md").exists()
  again = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
  assert again.returncode == 0
  assert "skipping finished run" in again.stderr
  assert len((tmp_path / "cnn" / "runs.jsonl").read_text().splitlines()) == 2


def test_cnn_entry_point_rejects_the_mlp(tmp_path):
  out = subprocess.run([sys.executable, "-m", "experiments.cnn",
                        "--model=mlp", f"--out_dir={tmp_path}"],
                       capture_output=True, text=True, timeout=120)
  assert out.returncode != 0
  assert "experiments.cnn trains CNNs" in out.stderr


def test_benchmark_of_a_cnn(tmp_path):
  out = subprocess.run(
      [sys.executable, "-m", "experiments.benchmark", "--model=lenet",
       "--cnn_width=2", "--head_hidden=8", "--methods=standard,mc",
       "--mc_ratio=0.5", "--mc_sampler=crs", "--batch_size=4", "--repeats=2",
       "--steps_per_call=2", f"--out_dir={tmp_path}"],
      capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-2000:]
  rows = [json.loads(l) for l in out.stdout.splitlines() if l.startswith("{")]
  assert [(r["method"], r["model"], r["image_shape"]) for r in rows] == [
      ("standard", "lenet", [28, 28, 1]), ("mc", "lenet", [28, 28, 1])]
  assert rows[0]["flops_fraction"] == 1.0
  assert 0.3 < rows[1]["flops_fraction"] < 0.9
  for r in rows:
    assert r["speedup_vs_standard"] > 0 and "traffic_fraction" not in r
    assert "vs_best_standard" not in r
