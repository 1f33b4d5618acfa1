"""Tests for sampling_mlp.data.formats: the IDX, small NORB and CIFAR-10
parsers and their errors."""

from __future__ import annotations

import gzip
import os
import pickle

import numpy as np
import pytest

from data_writers import *  # noqa: F401,F403  (writers and fixtures)
from data_writers import isolated  # noqa: F401  (autouse)
from sampling_mlp import data


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


