"""Shared by the data tests: writers of tiny files in the real formats, and
fixtures that keep every test away from the real cache, system folders and
network (``isolated``, autouse where imported)."""

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
from sampling_mlp.data import files as data_files

REAL_SYSTEM_DIRS = dict(data_files.SYSTEM_DIRS)
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
  """No real cache, env var, system folders or network in any test."""
  monkeypatch.setenv("HOME", str(tmp_path / "home"))
  monkeypatch.delenv(data.DATA_ENV_VAR, raising=False)
  monkeypatch.setattr(data_files, "SYSTEM_DIRS", {})

  def offline(url, timeout=None):
    raise urllib.error.URLError("network is unreachable (test)")

  monkeypatch.setattr(data_files, "urlopen", offline)


@pytest.fixture
def small_dev(monkeypatch):
  """Shrinks every dev split to 2 examples so fixtures can stay tiny."""
  monkeypatch.setattr(data, "SPECS", {
      k: v._replace(dev_size=2) for k, v in data.SPECS.items()})


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
          for k, v in data_files.IDX_FILES.items()}


def cifar_batch(n: int, seed: int, labels=None) -> dict:
  rng = np.random.default_rng(seed)
  return {b"batch_label": b"test batch",
          b"data": rng.integers(0, 256, (n, 3072), np.uint8),
          b"labels": rng.integers(0, 10, n).tolist() if labels is None else labels,
          b"filenames": [b"x.png"] * n}


def write_cifar(folder: Path, n: int = 3) -> dict[str, dict]:
  folder.mkdir(parents=True, exist_ok=True)
  batches = {}
  for i, name in enumerate(data_files.CIFAR_BATCHES):
    batches[name] = cifar_batch(n, seed=i)
    # Protocol 2, as the original Python 2 pickles.
    (folder / name).write_bytes(pickle.dumps(batches[name], protocol=2))
  return batches


def mnist_norm(x):
  return (x.reshape(len(x), -1) / 255.0 - 0.1307) / 0.3081



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
    write(folder / data_files.NORB_FILES[key], norb_bytes(arr), gz)
  return arrays


def luma(batch_data: np.ndarray) -> np.ndarray:
  r, g, b = (batch_data[:, i * 1024:(i + 1) * 1024].astype(np.float64) for i in range(3))
  return 0.299 * r + 0.587 * g + 0.114 * b


def check_cifar(ds, batches):
  x_train = np.concatenate([luma(batches[b][b"data"]) for b in data_files.CIFAR_TRAIN_BATCHES])
  y_train = np.concatenate([batches[b][b"labels"] for b in data_files.CIFAR_TRAIN_BATCHES])
  mean, std = x_train[2:].mean(), x_train[2:].std()
  assert (ds.num_classes, ds.input_dim) == (10, 1024)
  assert ds.train.x.shape == (13, 1024) and ds.dev.x.shape == (2, 1024)
  np.testing.assert_allclose(ds.train.x, (x_train[2:] - mean) / std, atol=1e-4)
  np.testing.assert_allclose(ds.dev.x, (x_train[:2] - mean) / std, atol=1e-4)
  np.testing.assert_array_equal(ds.train.y, y_train[2:])
  test = batches["test_batch"]
  np.testing.assert_allclose(ds.test.x, (luma(test[b"data"]) - mean) / std, atol=1e-4)
  np.testing.assert_array_equal(ds.test.y, test[b"labels"])


def cifar_tarball(path: Path, batches_dir: Path) -> bytes:
  buf = io.BytesIO()
  with tarfile.open(fileobj=buf, mode="w:gz") as tar:
    for name in sorted(os.listdir(batches_dir)):
      tar.add(batches_dir / name, arcname=f"cifar-10-batches-py/{name}")
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_bytes(buf.getvalue())
  return buf.getvalue()



def serve(files: dict[str, bytes], calls: list[str], fail_prefix: str | None = None):
  def urlopen(url, timeout=None):
    calls.append(url)
    if fail_prefix is not None and url.startswith(fail_prefix):
      raise urllib.error.URLError("mirror down (test)")
    return io.BytesIO(files[url.rsplit("/", 1)[1]])
  return urlopen


def fake_remotes(name: str, files: dict[str, bytes]) -> tuple[data_files.RemoteFile, ...]:
  """The real table's URLs with digests of the fake files."""
  return tuple(r._replace(size=len(files[r.filename]),
                          sha256=hashlib.sha256(files[r.filename]).hexdigest(),
                          md5=hashlib.md5(files[r.filename]).hexdigest())
               for r in data.REMOTE_FILES[name])


