"""Tests of the sampled convolution (sampling_mlp/methods/mc/conv.py)."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sampling_mlp.methods.mc import conv as mconv
from sampling_mlp.methods.mc import kernels


def _operands(seed=0, b=2, h=6, n=8, m=3, k=3):
  kx, kw = jax.random.split(jax.random.key(seed))
  # Channels of very different sizes, so that the samplers differ.
  x = jax.random.normal(kx, (b, h, h, n)) * jnp.linspace(0.2, 3.0, n)
  w = jax.random.normal(kw, (k, k, n, m))
  return x, w


def _lax(x, w, stride=(1, 1), padding="SAME", dilation=(1, 1)):
  return jax.lax.conv_general_dilated(
      x, w, stride, padding, rhs_dilation=dilation,
      dimension_numbers=("NHWC", "HWIO", "NHWC"))


@pytest.mark.parametrize("mode", kernels.MODES)
@pytest.mark.parametrize("settings", [
    dict(), dict(stride=2, padding="VALID"),
    dict(stride=(1, 2), padding=((1, 0), (2, 1)), dilation=2)])
def test_ratio_one_is_the_exact_convolution_and_gradient(mode, settings):
  x, w = _operands()
  lax_kw = dict(stride=mconv._pair("stride", settings.get("stride", 1)),
                padding=settings.get("padding", "SAME"),
                dilation=mconv._pair("dilation", settings.get("dilation", 1)))

  def loss(fn):
    return lambda x, w: jnp.sum(jnp.sin(fn(x, w)))

  exact = loss(lambda x, w: _lax(x, w, **lax_kw))
  approx = loss(lambda x, w: mconv.mc_conv(
      jax.random.key(1), x, w, num_samples=8, sampler="bernoulli",
      mode=mode, **settings))
  chex.assert_trees_all_close(approx(x, w), exact(x, w), rtol=1e-5)
  chex.assert_trees_all_close(jax.grad(approx, (0, 1))(x, w),
                              jax.grad(exact, (0, 1))(x, w), rtol=1e-5,
                              atol=1e-5)


@pytest.mark.parametrize("shape,kernel,settings", [
    ((9, 9), (3, 3), dict()),
    ((9, 8), (3, 3), dict(stride=2)),
    ((10, 7), (3, 3), dict(stride=2, padding="VALID")),
    ((8, 8), (1, 1), dict(stride=2, padding="VALID")),
    ((12, 12), (5, 5), dict(padding="VALID")),
    ((11, 11), (3, 2), dict(stride=(2, 3), padding=((1, 2), (0, 1)))),
    ((13, 13), (3, 3), dict(dilation=2)),
    ((13, 12), (3, 3), dict(stride=2, padding=((2, 0), (1, 1)),
                            dilation=(2, 1))),
    ((7, 7), (3, 3), dict(stride=3)),
])
def test_exact_convolution_gradients_equal_autodiff_of_lax(shape, kernel,
                                                           settings):
  # mconv.conv's custom VJP (conv_input_grad, conv_weight_grad) against
  # autodiff of lax.conv_general_dilated, the definition: strides that do
  # not divide the padded size, uneven and explicit padding, dilation.
  kx, kw, kd = jax.random.split(jax.random.key(3), 3)
  x = jax.random.normal(kx, (2,) + shape + (3,))
  w = jax.random.normal(kw, kernel + (3, 4))
  lax_kw = dict(stride=mconv._pair("stride", settings.get("stride", 1)),
                padding=settings.get("padding", "SAME"),
                dilation=mconv._pair("dilation", settings.get("dilation", 1)))
  y, vjp_ref = jax.vjp(lambda x, w: _lax(x, w, **lax_kw), x, w)
  y2, vjp = jax.vjp(lambda x, w: mconv.conv(x, w, **settings), x, w)
  np.testing.assert_array_equal(y2, y)
  dy = jax.random.normal(kd, y.shape)
  chex.assert_trees_all_close(vjp(dy), vjp_ref(dy), rtol=1e-5, atol=1e-4)
  assert vjp(dy)[0].shape == x.shape and vjp(dy)[1].shape == w.shape


def test_forward_mode_runs_a_smaller_convolution():
  """The work saved is real: the jitted forward pass convolves only the s
  sampled channels (no convolution over all n)."""
  x, w = _operands(n=64, m=4)
  fn = jax.jit(lambda k, x, w: mconv.mc_conv(k, x, w, num_samples=8,
                                             sampler="crs"))
  jaxpr = jax.make_jaxpr(fn)(jax.random.key(0), x, w)
  text = str(jaxpr)
  assert "conv_general_dilated" in text
  assert [c.invars[1].aval.shape for c in _convs(jaxpr.jaxpr)] == [
      (3, 3, 8, 4)]


def _convs(jaxpr):
  """Every conv_general_dilated in ``jaxpr`` and the jaxprs inside it."""
  found = []
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == "conv_general_dilated":
      found.append(eqn)
    for value in eqn.params.values():
      inner = getattr(value, "jaxpr", value)
      if hasattr(inner, "eqns"):
        found += _convs(inner)
  return found


def test_forward_mode_equals_the_gathered_channels():
  x, w = _operands()
  key = jax.random.key(3)
  idx, scale = mconv.sample_channels(key, x, w, num_samples=3, sampler="crs")
  manual = _lax(x[..., idx] * scale, w[:, :, idx, :])
  got = mconv.mc_conv(key, x, w, num_samples=3, sampler="crs")
  chex.assert_trees_all_close(got, manual, rtol=1e-6)
  # Its gradient reaches only the sampled channels.
  gx, gw = jax.grad(lambda x, w: jnp.sum(mconv.mc_conv(
      key, x, w, num_samples=3, sampler="crs") ** 2), (0, 1))(x, w)
  untouched = np.setdiff1d(np.arange(8), np.asarray(idx))
  assert untouched.size > 0
  np.testing.assert_array_equal(np.asarray(gx)[..., untouched], 0.0)
  np.testing.assert_array_equal(np.asarray(gw)[:, :, untouched], 0.0)


@pytest.mark.parametrize("sampler", ["crs", "bernoulli", "uniform"])
def test_unbiased_with_the_closed_form_variance(sampler):
  """Over N = 4000 draws: the empirical mean square error is the closed form
  within 10% (its relative standard error is about sqrt(2/N) times the
  error's kurtosis factor, a few percent here), and the squared error of the
  mean is at most 2x its expectation mse / N (a sum over 216 outputs, which
  concentrates near 1x)."""
  x, w = _operands(seed=1)
  exact = _lax(x, w)
  num = 4000
  keys = jax.random.split(jax.random.key(7), num)
  est = jax.jit(jax.vmap(lambda k: mconv.mc_conv(
      k, x, w, num_samples=3, sampler=sampler)))(keys)
  mse = float(mconv.exact_mse(x, w, num_samples=3, sampler=sampler))
  emp = float(jnp.mean(jnp.sum((est - exact) ** 2, axis=(1, 2, 3, 4))))
  assert mse > 0
  assert abs(emp - mse) / mse < 0.1, (emp, mse)
  bias = float(jnp.sum((est.mean(0) - exact) ** 2))
  assert bias < 2.0 * mse / num, (bias, mse / num)


def test_channel_outputs_sum_to_the_convolution():
  x, w = _operands()
  chex.assert_trees_all_close(mconv.channel_outputs(x, w).sum(0), _lax(x, w),
                              rtol=1e-5, atol=1e-5)


def test_topk_error_is_its_closed_form():
  x, w = _operands()
  est = mconv.mc_conv(jax.random.key(0), x, w, num_samples=4, sampler="topk")
  err = float(jnp.sum((est - _lax(x, w)) ** 2))
  np.testing.assert_allclose(
      err, float(mconv.exact_mse(x, w, num_samples=4, sampler="topk")),
      rtol=1e-4)


def test_probabilities_favour_the_large_channels():
  x, w = _operands(n=8)
  weights = mconv.channel_weights(x, w)
  # Channel t of x is scaled by linspace(0.2, 3, 8): its norm grows with t.
  xn = np.linalg.norm(np.asarray(x).reshape(-1, 8), axis=0)
  wn = np.linalg.norm(np.moveaxis(np.asarray(w), 2, 0).reshape(8, -1), axis=1)
  np.testing.assert_allclose(weights, xn * wn, rtol=1e-5)


def test_blackbox_gradient_is_exact():
  x, w = _operands()
  key = jax.random.key(2)
  g = jax.grad(lambda x, w: jnp.sum(mconv.mc_conv(
      key, x, w, num_samples=2, sampler="crs", mode="blackbox") * 0.5),
               (0, 1))(x, w)
  ge = jax.grad(lambda x, w: jnp.sum(_lax(x, w) * 0.5), (0, 1))(x, w)
  chex.assert_trees_all_close(g, ge, rtol=1e-5, atol=1e-5)


def test_backward_mode_forward_exact_gradients_unbiased():
  """Backward mode: exact value; over 2000 keys the mean of the sampled
  gradients is within 5% (relative Frobenius error) of the exact ones."""
  x, w = _operands(b=6)
  dy = jax.random.normal(jax.random.key(5), _lax(x, w).shape)

  def grads(key):
    f = lambda x, w: jnp.sum(mconv.mc_conv(
        key, x, w, num_samples=4, sampler="crs", mode="backward") * dy)
    return jax.grad(f, (0, 1))(x, w)

  chex.assert_trees_all_close(
      mconv.mc_conv(jax.random.key(0), x, w, num_samples=4, sampler="crs",
                    mode="backward"), _lax(x, w), rtol=1e-5)
  gx, gw = jax.jit(jax.vmap(grads))(jax.random.split(jax.random.key(9), 2000))
  ex, ew = jax.grad(lambda x, w: jnp.sum(_lax(x, w) * dy), (0, 1))(x, w)
  for g, e in ((gx, ex), (gw, ew)):
    assert float(jnp.linalg.norm(g[0] - e) / jnp.linalg.norm(e)) > 0.05
    rel = float(jnp.linalg.norm(g.mean(0) - e) / jnp.linalg.norm(e))
    assert rel < 0.05, rel


@pytest.mark.parametrize("kwargs, message", [
    (dict(sampler="nope"), "Unknown sampler"),
    (dict(mode="nope"), "Unknown mode"),
    (dict(num_samples=0), "num_samples must be >= 1"),
    (dict(num_samples=2.5), "Python int"),
    (dict(num_samples_backward=(1, 1)), "only used in mode 'backward'"),
    (dict(stride=0), "stride must be"),
])
def test_bad_arguments_are_clear_errors(kwargs, message):
  x, w = _operands()
  args = dict(num_samples=2, sampler="crs")
  args.update(kwargs)
  with pytest.raises(ValueError, match=message):
    mconv.mc_conv(jax.random.key(0), x, w, **args)


def test_mismatched_channels_are_a_clear_error():
  x, w = _operands()
  with pytest.raises(ValueError, match="NHWC"):
    mconv.mc_conv(jax.random.key(0), x[..., :5], w, num_samples=2,
                  sampler="crs")


def test_bernoulli_is_convolved_in_the_smallest_bucket_that_holds_it():
  """The bucketed convolution is the whole buffer's estimate (the kept
  channels come first, zero-scale slots after them), and the forward pass
  holds one convolution per bucket size under a switch."""
  x, w = _operands(n=64, m=4)
  c = 6
  buckets = mconv.bernoulli_buckets(64, c)
  assert buckets == (9, 11, 14, 29)  # c + ceil(j sqrt(6)); the buffer 29
  for seed in range(5):
    key = jax.random.key(seed)
    idx, scale, count = mconv.sample_channels(key, x, w, num_samples=c,
                                              sampler="bernoulli",
                                              with_count=True)
    assert idx.shape == (29,)
    np.testing.assert_array_equal(np.asarray(scale)[int(count):], 0.0)
    full = mconv.gathered_conv(x, w, idx, scale)
    got = mconv.mc_conv(key, x, w, num_samples=c, sampler="bernoulli")
    chex.assert_trees_all_close(got, full, rtol=1e-5, atol=1e-3)
  jaxpr = jax.make_jaxpr(lambda k: mconv.mc_conv(
      k, x, w, num_samples=c, sampler="bernoulli"))(jax.random.key(0))
  (switch,) = [e for e in jaxpr.jaxpr.eqns if e.primitive.name == "cond"]
  sizes = []
  for branch in switch.params["branches"]:
    sizes += [e.invars[1].aval.shape[2] for e in _convs(branch.jaxpr)]
  assert sorted(sizes) == list(buckets)
