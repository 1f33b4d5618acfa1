"""Shared fixtures: a tiny synthetic dataset, a real ``data.Dataset``."""

import numpy as np
import pytest

from sampling_mlp.data import Dataset, Split


def make_tiny(n_train=512, n_eval=128, dim=20, classes=4, seed=0):
  """Linearly separable-ish Gaussian blobs, so training can be checked."""
  rng = np.random.default_rng(seed)
  centers = rng.normal(size=(classes, dim)).astype(np.float32) * 2.0

  def split(n):
    y = rng.integers(0, classes, n).astype(np.int32)
    x = centers[y] + rng.normal(size=(n, dim)).astype(np.float32)
    return Split(x.astype(np.float32), y)

  return Dataset("tiny", split(n_train), split(n_eval), split(n_eval),
                     classes, dim)


@pytest.fixture
def tiny():
  return make_tiny()
