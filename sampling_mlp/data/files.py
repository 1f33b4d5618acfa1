"""Finding dataset files on disk, and downloading them where allowed.

Where files are looked for, in order (the first folder holding all of a
dataset's files wins): ``data_dir`` (and ``data_dir/<name>/``),
``$SAMPLING_MLP_DATA`` (and ``$SAMPLING_MLP_DATA/<name>/``), the cache
``~/.cache/sampling_mlp/<name>/``, and Debian's folders
(:data:`SYSTEM_DIRS`).  A download goes to a temporary file, is checked
against the size and digests of :data:`REMOTE_FILES`, and is moved into the
cache only once verified.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import json
import os
from pathlib import Path
import shutil
import tarfile
import tempfile
from typing import BinaryIO, Callable, NamedTuple, Sequence
import urllib.request
import zlib

from tqdm.auto import tqdm

from sampling_mlp.data.formats import DatasetError

DATA_ENV_VAR = "SAMPLING_MLP_DATA"

# Tests replace this to run offline; called as urlopen(url, timeout=...).
urlopen: Callable = urllib.request.urlopen

_DOWNLOAD_TIMEOUT_S = 60
_CHUNK = 1 << 20

SYSTEM_DIRS: dict[str, tuple[str, ...]] = {
    "mnist": ("/usr/share/datasets/mnist",),
    "fashion_mnist": ("/usr/share/datasets/fashion-mnist",),
}


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
# Checksum table (remote_files.json).
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

def _load_remote_files() -> dict[str, tuple[RemoteFile, ...]]:
  path = Path(__file__).with_name("remote_files.json")
  with open(path, encoding="utf-8") as f:
    table = json.load(f)
  return {name: tuple(RemoteFile(r["filename"], tuple(r["urls"]), r["size"],
                                 r["sha256"], r["md5"], r["digest_source"])
                      for r in rows)
          for name, rows in table.items()}


# Every file a dataset downloads: mirrors, size and digests.
REMOTE_FILES: dict[str, tuple[RemoteFile, ...]] = _load_remote_files()


# Logical file -> base name on disk (each also accepted with ".gz").
IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
NORB_FILES = {
    "train_dat": "smallnorb-5x46789x9x18x6x2x96x96-training-dat.mat",
    "train_cat": "smallnorb-5x46789x9x18x6x2x96x96-training-cat.mat",
    "test_dat": "smallnorb-5x01235x9x18x6x2x96x96-testing-dat.mat",
    "test_cat": "smallnorb-5x01235x9x18x6x2x96x96-testing-cat.mat",
}
_CIFAR_DIR = "cifar-10-batches-py"
_CIFAR_TARBALL = "cifar-10-python.tar.gz"
CIFAR_TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR_BATCHES = CIFAR_TRAIN_BATCHES + ("test_batch",)


def cache_dir(name: str) -> Path:
  return Path.home() / ".cache" / "sampling_mlp" / name


def _search_dirs(name: str, data_dir: str | os.PathLike | None) -> list[Path]:
  dirs = []
  for root in (data_dir, os.environ.get(DATA_ENV_VAR) or None):
    if root is not None:
      root = Path(root).expanduser()
      dirs += [root / name, root]
  dirs.append(cache_dir(name))
  dirs += [Path(d) for d in SYSTEM_DIRS.get(name, ())]
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
  with urlopen(url, timeout=_DOWNLOAD_TIMEOUT_S) as response:
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
      f"to a folder holding {name}/), or into the cache {cache_dir(name)}.",
  ]
  if urls:
    lines.append("Download them from: " + ", ".join(urls))
  return DatasetError("\n".join(lines))


def locate_files(name: str, base_names: dict[str, str],
                  data_dir: str | os.PathLike | None, download: bool
                  ) -> dict[str, Path]:
  """Finds a folder holding all of base_names, downloading if allowed."""
  dirs = _search_dirs(name, data_dir)
  for d in dirs:
    found = _find_in(d, base_names)
    if len(found) == len(base_names):
      return found
  cache = cache_dir(name)
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
      for batch in CIFAR_BATCHES:
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


def locate_cifar(data_dir: str | os.PathLike | None, download: bool) -> Path:
  """Returns a folder holding the six CIFAR-10 python batches."""
  name = "cifar10_gray"
  dirs = _search_dirs(name, data_dir)
  cache = cache_dir(name)
  for d in dirs:
    for folder in (d / _CIFAR_DIR, d):
      if all((folder / b).is_file() for b in CIFAR_BATCHES):
        return folder
    if (d / _CIFAR_TARBALL).is_file():
      return _extract_cifar(d / _CIFAR_TARBALL, cache)
  needed = (f"{_CIFAR_TARBALL}, or its {_CIFAR_DIR}/ folder with "
            + ", ".join(CIFAR_BATCHES))
  if not download:
    raise _missing_error(name, needed, dirs, "files not found and download=False")
  failure = _download(REMOTE_FILES[name][0], cache)
  if failure is not None:
    raise _missing_error(name, needed, dirs,
                         f"no local copy and downloading {_CIFAR_TARBALL} failed: "
                         f"{failure}")
  return _extract_cifar(cache / _CIFAR_TARBALL, cache)
