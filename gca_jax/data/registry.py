"""``load_dataset``: one entry point from a dataset name to arrays."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from gca_jax.data import local, npz, styled, tfds_sources
from gca_jax.data.base import Dataset, DatasetError, check_size

DEFAULT_DATASET = "digits"
NAMES = ("digits", *tfds_sources.CATALOG, "pacs", "imagenet100")


def load_dataset(name: str = DEFAULT_DATASET, *, data_dir: str | os.PathLike | None = None,
                 split_seed: int = 0, image_size: int | None = None) -> Dataset:
  """Loads a dataset by name; the result's splits are uint8 NHWC + int32 labels.

  Names:
    "digits"            scikit-learn's bundled digits (8x8 scans) resized to
                        ``image_size`` (default 32x32) RGB, offline.
    "cifar10", "cifar100", "svhn_cropped"
                        tfds catalog, read from prepared array_record files
                        in ``data_dir`` (prepare with gca_jax.data.prepare).
    "cifar10_corrupted/<corruption>_<severity>"   test split only.
    "pacs", "pacs/<test_domain>"   PACS image folders under ``data_dir``.
    "imagenet100"       CMC's ImageNet-100, prepared from a manual download.
    "npz:<path>", "<path>.npz", "<folder>"   local arrays or image folders.
    "styled:<name>"     the in-memory dataset <name> (e.g. "styled:digits",
                        "styled:npz:<path>") with each image rendered in one
                        of four styles, its domain (`gca_jax.data.styled`).

  ``split_seed`` fixes the train/test split of sources without an official
  one (digits, PACS, folders without train/test). ``image_size`` (a
  config's ``load_size``) is the host-side square size of digits, of
  large-image sources (PACS, ImageNet-100, folders) and of ``.npz`` files
  (every image resized and centre-cropped to it); None keeps each source's
  default (digits 32, PACS 224, ImageNet-100 256; a folder's or an
  ``.npz``'s images keep their size, which must then be one for all, see
  `local.load_image_folder`); the tfds catalog sources ignore it and keep
  their native size.

  Every source is checked before it is returned (`base.check_dataset`):
  non-empty train and test splits (the train split of cifar10_corrupted
  excepted), labels in range, one image size, and train images of every
  test class. Failures raise ``DatasetError``, one message naming the file
  or field and what to do.
  """
  if not isinstance(name, str):
    raise DatasetError(f"The dataset name must be a string, got {name!r}; for a "
                       "file or folder pass f'npz:{path}'.")
  if image_size is not None:
    image_size = check_size(image_size, "image_size (config.load_size)")
  if isinstance(split_seed, bool) or not isinstance(split_seed, (int, np.integer)) or (
      split_seed < 0):
    raise DatasetError(f"split_seed must be a non-negative integer, got {split_seed!r}.")
  if name.startswith(styled.PREFIX):
    source = load_dataset(name.removeprefix(styled.PREFIX), data_dir=data_dir,
                          split_seed=split_seed, image_size=image_size)
    return styled.stylise(source, seed=split_seed)
  base = name.partition("/")[0]
  if name == "digits":
    return local.load_digits(split_seed=split_seed,
                             image_size=image_size or local.DIGITS_IMAGE_SIZE)
  if base in tfds_sources.CATALOG:
    return tfds_sources.load_catalog(name, data_dir=data_dir)
  if base == "pacs":
    test_domain = name.partition("/")[2] or None
    return local.load_pacs(data_dir, test_domain=test_domain,
                           image_size=image_size or local.PACS_IMAGE_SIZE,
                           split_seed=split_seed)
  if name == "imagenet100":
    return tfds_sources.load_imagenet100(
        data_dir=data_dir,
        image_size=image_size or tfds_sources.IMAGENET100_IMAGE_SIZE)
  path = _local_path(name)
  if not path.strip():
    # Path("") is the current folder, which would be read as an image folder.
    raise DatasetError(f"The dataset name {name!r} names no file: pass 'npz:<path>' "
                       "with the path of a .npz file or image folder, or one of "
                       f"{NAMES}.")
  if _names_a_path(name):
    if Path(path).is_dir():
      return local.load_image_folder(path, image_size=image_size,
                                     split_seed=split_seed)
    if path.endswith(".npz") or Path(path).is_file():
      return npz.load_npz(path, image_size=image_size)
    raise DatasetError(f"'{path}' does not exist: pass an existing .npz file "
                       "or image folder.")
  raise DatasetError(f"Unknown dataset '{name}'. Choose one of {NAMES}, "
                     "'cifar10_corrupted/<corruption>_<severity>', 'pacs/<domain>', "
                     "'styled:<name>' (any of these rendered in four styles), "
                     "or a path to a .npz file or image folder ('npz:<path>').")


def _local_path(name: str) -> str:
  return name.removeprefix("npz:")


def _names_a_path(name: str) -> bool:
  """Whether ``name`` (not a catalog name) is read as a local file or folder."""
  path = _local_path(name)
  looks_like_path = name.startswith("npz:") or os.sep in name or name.endswith(".npz")
  return looks_like_path or Path(path).exists()


def resolved_name(name):
  """``name`` with a local file or folder named by its absolute, resolved path
  (``npz:<path>``), so that it names the same data from any folder and every
  spelling of one file is one name; other names as they are.

  >>> resolved_name("digits"), resolved_name("npz:/data/./x.npz")
  ('digits', 'npz:/data/x.npz')
  """
  if (not isinstance(name, str) or name in ("digits", "imagenet100")
      or name.partition("/")[0] in (*tfds_sources.CATALOG, "pacs")):
    return name
  path = _local_path(name)
  if not path.strip() or "://" in path or not _names_a_path(name):
    return name
  return f"npz:{Path(path).expanduser().resolve()}"
