"""Parsers of the datasets' file formats: IDX (MNIST, Fashion-MNIST), small
NORB's ``.mat``, and CIFAR-10's python batches.  Every parser validates what
it reads (header, sizes, dtype) and raises :class:`DatasetError` saying what
is wrong with which file; files may be gzipped.
"""

from __future__ import annotations

import gzip
import math
import os
from pathlib import Path
import pickle
from typing import BinaryIO, Callable
import zlib

import numpy as np

# Refuse headers that declare more than this, rather than allocate it.
_MAX_BYTES = 1 << 34


class DatasetError(ValueError):
  """A dataset file is missing, malformed, or failed verification."""


def _open(path: Path) -> BinaryIO:
  """Opens ``path`` for reading, through gzip if it starts with its magic."""
  f = open(path, "rb")
  if f.read(2) == b"\x1f\x8b":
    f.seek(0)
    return gzip.GzipFile(fileobj=f, mode="rb")  # _close closes f too.
  f.seek(0)
  return f


def _close(stream: BinaryIO) -> None:
  if isinstance(stream, gzip.GzipFile):
    inner = stream.fileobj
    stream.close()
    if inner is not None:
      inner.close()
  else:
    stream.close()


def _read_exact(stream: BinaryIO, n: int, path: Path, what: str) -> np.ndarray:
  """Reads exactly n bytes into a fresh writable uint8 [n] array."""
  buf = np.empty(n, dtype=np.uint8)
  view = memoryview(buf)
  got = 0
  while got < n:
    k = stream.readinto(view[got:])
    if not k:
      break
    got += k
  if got < n:
    raise DatasetError(f"{path}: truncated file: the {what} needs {n} bytes, "
                       f"only {got} are there")
  return buf


def _check_size(path: Path, stream: BinaryIO, expected: int) -> None:
  if expected > _MAX_BYTES:
    raise DatasetError(f"{path}: header declares {expected} bytes of data; "
                       "the header is corrupt or this is not the right file")
  # A plain file's size is known up front: fail before allocating.
  if not isinstance(stream, gzip.GzipFile):
    size = os.fstat(stream.fileno()).st_size
    remaining = size - stream.tell()
    if remaining < expected:
      raise DatasetError(f"{path}: truncated file: the header declares {expected} "
                         f"bytes of data, only {remaining} are there")


def _check_end(stream: BinaryIO, path: Path) -> None:
  if stream.read(1):
    raise DatasetError(f"{path}: unexpected bytes after the data the header "
                       "declares; the file is corrupt or not this format")


def _read_array(stream: BinaryIO, path: Path, dims: tuple[int, ...],
                dtype: np.dtype) -> np.ndarray:
  """The data after a header: exactly ``prod(dims)`` entries of ``dtype``
  and nothing after them, as a writable native-order array."""
  nbytes = math.prod(dims) * dtype.itemsize  # Python ints: no overflow
  _check_size(path, stream, nbytes)
  data = _read_exact(stream, nbytes, path, f"data of shape {list(dims)}")
  _check_end(stream, path)
  data = data.view(dtype).reshape(dims)
  return data if dtype.itemsize == 1 else data.astype(dtype.newbyteorder("="))


def _parse(path: str | os.PathLike, body: Callable[[BinaryIO, Path], np.ndarray]
           ) -> np.ndarray:
  path = Path(path)
  try:
    stream = _open(path)
  except FileNotFoundError:
    raise DatasetError(f"{path}: no such file") from None
  try:
    return body(stream, path)
  except (EOFError, gzip.BadGzipFile, zlib.error) as e:
    raise DatasetError(f"{path}: truncated or corrupt gzip data ({e})") from e
  finally:
    _close(stream)


_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4",
               0x0D: ">f4", 0x0E: ">f8"}


def load_idx(path: str | os.PathLike) -> np.ndarray:
  """Reads an IDX file (LeCun's MNIST format), gzipped or not.

  Format: 2 zero bytes, a type byte (0x08 uint8, 0x09 int8, 0x0B int16,
  0x0C int32, 0x0D float32, 0x0E float64), a byte ndim, ndim big-endian
  uint32 dims, then the data, big-endian, row-major.

  Args:
    path: the file (``*-idx?-ubyte`` or ``*-idx?-ubyte.gz``).

  Returns:
    A writable array with the header's shape, in native byte order.

  Raises:
    DatasetError: wrong magic number, truncated or oversized file, bad gzip.
  """

  def body(stream: BinaryIO, path: Path) -> np.ndarray:
    head = _read_exact(stream, 4, path, "IDX magic number").tobytes()
    if head[:2] != b"\0\0" or head[2] not in _IDX_DTYPES or head[3] == 0:
      raise DatasetError(
          f"{path}: wrong magic number 0x{head.hex().upper()}: an IDX file starts "
          "with 0x0000, a type byte (08 uint8 .. 0E float64) and ndim >= 1")
    ndim = head[3]
    dims = tuple(int(d) for d in np.frombuffer(
        _read_exact(stream, 4 * ndim, path, "IDX dimensions"), dtype=">u4"))
    return _read_array(stream, path, dims, np.dtype(_IDX_DTYPES[head[2]]))

  return _parse(path, body)


_NORB_DTYPES = {0x1E3D4C51: "<f4", 0x1E3D4C53: "<f8", 0x1E3D4C54: "<i4",
                0x1E3D4C55: "<u1", 0x1E3D4C56: "<i2"}


def load_norb_mat(path: str | os.PathLike) -> np.ndarray:
  """Reads a NORB binary matrix file (``*.mat`` or ``*.mat.gz``).

  Format (LeCun et al. 2004, small NORB page): little-endian int32 magic
  (0x1E3D4C55 uint8, 0x1E3D4C54 int32, 0x1E3D4C51 float32, 0x1E3D4C53
  float64, 0x1E3D4C56 int16), int32 ndim, max(ndim, 3) int32 dims (only the
  first ndim count), then the data, little-endian, row-major.  Small NORB's
  ``-dat`` files are uint8 [24300, 2, 96, 96], its ``-cat`` files int32
  [24300].

  Args:
    path: the file.

  Returns:
    A writable array with the header's shape, in native byte order.

  Raises:
    DatasetError: wrong magic number, bad header, truncated file, bad gzip.
  """

  def body(stream: BinaryIO, path: Path) -> np.ndarray:
    magic, ndim = (int(v) for v in np.frombuffer(
        _read_exact(stream, 8, path, "NORB header"), dtype="<i4"))
    if magic not in _NORB_DTYPES:
      known = ", ".join(f"0x{m:08X}" for m in _NORB_DTYPES)
      raise DatasetError(f"{path}: wrong magic number 0x{magic & 0xFFFFFFFF:08X} "
                         f"for a NORB matrix file (expected one of {known})")
    if not 1 <= ndim <= 32:
      raise DatasetError(f"{path}: bad NORB header: ndim = {ndim}")
    dims = tuple(int(d) for d in np.frombuffer(
        _read_exact(stream, 4 * max(ndim, 3), path, "NORB dimensions"),
        dtype="<i4"))[:ndim]
    if min(dims) < 0:
      raise DatasetError(f"{path}: bad NORB header: negative dimension in {dims}")
    return _read_array(stream, path, dims, np.dtype(_NORB_DTYPES[magic]))

  return _parse(path, body)


class _BatchUnpickler(pickle.Unpickler):
  """Unpickles only what a CIFAR batch holds: a dict, lists, numpy arrays.

  A pickle can run any code on load; refusing every other global keeps a
  corrupt or hostile file from doing so.
  """

  _ALLOWED = {
      ("numpy.core.multiarray", "_reconstruct"),
      ("numpy._core.multiarray", "_reconstruct"),
      ("numpy.core.multiarray", "scalar"),
      ("numpy._core.multiarray", "scalar"),
      ("numpy.core.numeric", "_frombuffer"),
      ("numpy._core.numeric", "_frombuffer"),
      ("numpy", "ndarray"),
      ("numpy", "dtype"),
      ("_codecs", "encode"),
  }

  def find_class(self, module, name):
    if (module, name) in self._ALLOWED:
      return super().find_class(module, name)
    raise pickle.UnpicklingError(f"global {module}.{name} is not allowed")


def load_cifar_batch(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
  """Reads one CIFAR-10 python batch (``data_batch_<i>`` or ``test_batch``).

  Format: a (Python 2) pickle of a dict with ``b'data'``, uint8 [N, 3072]
  (1024 red, then 1024 green, then 1024 blue values of a 32x32 image, row
  major), and ``b'labels'``, N ints in [0, 10).  Only numpy arrays and plain
  containers are unpickled.

  Args:
    path: the batch file.

  Returns:
    data: uint8 [N, 3072].
    labels: int32 [N].

  Raises:
    DatasetError: not a CIFAR-10 batch, truncated, inconsistent counts,
      label out of range.
  """
  path = Path(path)
  try:
    with open(path, "rb") as f:
      obj = _BatchUnpickler(f, encoding="bytes").load()
  except FileNotFoundError:
    raise DatasetError(f"{path}: no such file") from None
  except EOFError as e:
    raise DatasetError(f"{path}: truncated CIFAR-10 batch (pickle ends early)") from e
  except (pickle.UnpicklingError, ValueError, TypeError, AttributeError,
          IndexError, KeyError) as e:
    raise DatasetError(f"{path}: not a CIFAR-10 python batch ({e})") from e
  if not isinstance(obj, dict):
    raise DatasetError(f"{path}: not a CIFAR-10 python batch (holds a "
                       f"{type(obj).__name__}, not a dict)")
  obj = {k.decode() if isinstance(k, bytes) else k: v for k, v in obj.items()}
  if "data" not in obj or "labels" not in obj:
    raise DatasetError(f"{path}: not a CIFAR-10 python batch (keys "
                       f"{sorted(map(str, obj))}; need 'data' and 'labels')")
  data = obj["data"]
  if (not isinstance(data, np.ndarray) or data.dtype != np.uint8
      or data.ndim != 2 or data.shape[1] != 3072):
    desc = (f"{data.dtype} {list(data.shape)}" if isinstance(data, np.ndarray)
            else type(data).__name__)
    raise DatasetError(f"{path}: 'data' must be uint8 [N, 3072], got {desc}")
  try:
    labels = np.asarray(obj["labels"], dtype=np.int64)
  except (TypeError, ValueError) as e:
    raise DatasetError(f"{path}: 'labels' are not integers ({e})") from e
  if labels.shape != (len(data),):
    raise DatasetError(f"{path}: inconsistent counts: {len(data)} images but "
                       f"labels of shape {list(labels.shape)}")
  check_labels(labels, 10, path)
  return data, labels.astype(np.int32)


def check_labels(labels: np.ndarray, num_classes: int, path) -> None:
  if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
    bad = labels[(labels < 0) | (labels >= num_classes)]
    raise DatasetError(f"{path}: label out of range: {int(bad[0])} (and "
                       f"{bad.size - 1} more); labels must be in [0, {num_classes})")
