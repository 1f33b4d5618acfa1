"""Tests for sampling_mlp.data.files: where files are looked for, and
downloads (mocked; nothing here touches the network)."""

from __future__ import annotations

import hashlib
import io
import os

import numpy as np
import pytest

from data_writers import *  # noqa: F401,F403  (writers and fixtures)
from data_writers import isolated  # noqa: F401  (autouse)
from sampling_mlp import data
from sampling_mlp.data import files as data_files


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
  monkeypatch.setattr(data_files, "SYSTEM_DIRS", {"mnist": (str(locations["system"]),)})
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


def test_download_moves_verified_files_into_cache(tmp_path, monkeypatch, small_dev):
  files = mnist_files(6, 3, seed=5)
  calls = []
  monkeypatch.setitem(data.REMOTE_FILES, "mnist", fake_remotes("mnist", files))
  # The first mirror is down: each file comes from the second.
  first_mirror = data.REMOTE_FILES["mnist"][0].urls[0].rsplit("/", 1)[0]
  monkeypatch.setattr(data_files, "urlopen",
                      serve(files, calls, fail_prefix=first_mirror))
  ds = data.load_dataset("mnist", data_dir=str(tmp_path / "empty"))
  cache = cache_dir(tmp_path, "mnist")
  assert sorted(os.listdir(cache)) == sorted(files)  # nothing else (no .part)
  for name, payload in files.items():
    assert (cache / name).read_bytes() == payload
  assert len(calls) == 8 and all(u.endswith(tuple(files)) for u in calls)
  labels = data.load_idx(cache / "t10k-labels-idx1-ubyte.gz")
  np.testing.assert_array_equal(ds.test.y, labels)
  # Second load: served from the cache, no network.
  monkeypatch.setattr(data_files, "urlopen", serve({}, calls2 := []))
  data.load_dataset("mnist")
  assert calls2 == []


def test_download_only_fetches_missing_files(tmp_path, monkeypatch, small_dev):
  files = mnist_files(6, 3, seed=5)
  cache = cache_dir(tmp_path, "mnist")
  cache.mkdir(parents=True)
  (cache / "train-images-idx3-ubyte.gz").write_bytes(files["train-images-idx3-ubyte.gz"])
  calls = []
  monkeypatch.setitem(data.REMOTE_FILES, "mnist", fake_remotes("mnist", files))
  monkeypatch.setattr(data_files, "urlopen", serve(files, calls))
  data.load_dataset("mnist")
  assert sorted(u.rsplit("/", 1)[1] for u in calls) == sorted(
      set(files) - {"train-images-idx3-ubyte.gz"})


def test_checksum_mismatch_leaves_no_file(tmp_path, monkeypatch):
  files = {r.filename: b"not the real file" for r in data.REMOTE_FILES["fashion_mnist"]}
  calls = []
  monkeypatch.setattr(data_files, "urlopen", serve(files, calls))
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
  monkeypatch.setattr(data_files, "urlopen", serve(files, []))
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

  monkeypatch.setattr(data_files, "urlopen", lambda url, timeout=None: Broken(b"x" * 100))
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
  monkeypatch.setattr(data_files, "urlopen", serve(files, calls))
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
  for name, bases in (("mnist", data_files.IDX_FILES), ("fashion_mnist", data_files.IDX_FILES),
                      ("norb", data_files.NORB_FILES)):
    assert {b + ".gz" for b in bases.values()} == {
        r.filename for r in data.REMOTE_FILES[name]}


