"""Fixtures of the training tests: a tiny PACS-layout folder fed from the host."""

import functools

import numpy as np
import pytest

from tests.conftest import tiny_config

DOMAINS = ("photo", "sketch")       # the other two PACS domains stay empty
CLASSES = ("dog", "horse")
PER_FOLDER = 10                     # 40 images: 32 train, 8 test
BATCH = 8                           # 4 steps per epoch


@pytest.fixture(scope="module")
def pacs_root(tmp_path_factory):
  from PIL import Image
  from gca_jax.data.local import PACS_DOMAINS
  root = tmp_path_factory.mktemp("pacs")
  rng = np.random.default_rng(0)
  for domain in PACS_DOMAINS:
    (root / domain).mkdir()
  for d, domain in enumerate(DOMAINS):
    for c, name in enumerate(CLASSES):
      folder = root / domain / name
      folder.mkdir()
      for i in range(PER_FOLDER):
        image = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
        image[..., c] //= 4               # a class signal the probe can find
        image[::4 + d] = 255 * d          # and a domain style
        Image.fromarray(image).save(folder / f"{i}.png")
  return root


@pytest.fixture
def lazy_pacs(monkeypatch):
  """Large-image behaviour: PACS splits stay LazyImages, whatever their size."""
  from gca_jax.data import local
  monkeypatch.setattr(local, "load_pacs",
                      functools.partial(local.load_pacs, max_in_memory_bytes=0))


def host_config(root, **overrides):
  overrides = {"epochs": 2, **overrides}
  config = tiny_config(dataset="pacs", data_dir=str(root), load_size=32,
                       batch_size=BATCH, **overrides)
  return config


