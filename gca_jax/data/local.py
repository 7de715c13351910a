"""Sources that need no tensorflow-datasets: digits, ``.npz`` files, folders, PACS."""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from gca_jax.data import decode
from gca_jax.data.base import (Dataset, DatasetError, ImageArrays, LazyImages,
                               as_rgb_uint8, channel_stats)

DIGITS_IMAGE_SIZE = 32
"""Default side of the digits images when no size is asked for: the 8x8
scans upscaled to CIFAR's 32x32. `load_dataset` passes a config's
``load_size`` instead when set (the default config uses 16 for speed)."""

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")
PACS_DOMAINS = ("photo", "art_painting", "cartoon", "sketch")
PACS_IMAGE_SIZE = 224  # PACS images are 227x227.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MAX_IN_MEMORY_BYTES = 1 << 30
"""Folder splits smaller than this are decoded once into a numpy array (and
can then be fed from the device); larger ones stay ``LazyImages``."""


def stratified_split(labels: np.ndarray, *, test_fraction: float, seed: int
                     ) -> tuple[np.ndarray, np.ndarray]:
  """Sorted (train, test) index arrays, ``test_fraction`` of every class in test.

  Deterministic in ``seed``; every class with at least two examples appears
  in both splits.
  """
  rng = np.random.default_rng(seed)
  train, test = [], []
  for label in np.unique(labels):
    members = rng.permutation(np.flatnonzero(labels == label))
    num_test = int(round(test_fraction * len(members)))
    if len(members) > 1:
      num_test = min(max(num_test, 1), len(members) - 1)
    test.append(members[:num_test])
    train.append(members[num_test:])
  return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def load_digits(*, split_seed: int = 0, image_size: int = DIGITS_IMAGE_SIZE,
                test_fraction: float = 0.2) -> Dataset:
  """scikit-learn's bundled digits (1797 real 8x8 scans) as a small RGB dataset.

  Ships with scikit-learn, so the default job needs no download. Pixel values
  0..16 are scaled to 0..255, each image is resized bilinearly to
  ``image_size`` (``DIGITS_IMAGE_SIZE`` = 32 by default; training configs
  pass their ``load_size``, 16 in the default config) and replicated to 3
  channels, and a
  stratified ``test_fraction`` split is drawn with ``split_seed`` (1437 train /
  360 test by default). ``mean``/``std`` come from the train split.
  """
  from PIL import Image  # pylint: disable=g-import-not-at-top
  from sklearn.datasets import load_digits as sklearn_digits  # pylint: disable=g-import-not-at-top

  bunch = sklearn_digits()
  small = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)
  images = np.stack([
      np.asarray(Image.fromarray(im).resize((image_size, image_size),
                                            Image.BILINEAR))
      for im in small])
  labels = bunch.target.astype(np.int32)
  train_idx, test_idx = stratified_split(labels, test_fraction=test_fraction,
                                         seed=split_seed)
  images = as_rgb_uint8(images)
  train = ImageArrays(images[train_idx], labels[train_idx])
  test = ImageArrays(images[test_idx], labels[test_idx])
  mean, std = channel_stats(train.images)
  return Dataset(train, test, 10, "digits", mean, std,
                 tuple(str(n) for n in bunch.target_names))


def _check_path(path: Path, what: str) -> Path:
  if not path.exists():
    raise DatasetError(f"{what} not found: '{path}'. Check the path "
                       "(pass an existing .npz file or image folder).")
  return path


def _npz_split(data, split: str, path: Path) -> ImageArrays:
  """Reads one split of either npz layout (see ``load_npz``)."""
  files = set(data.files)
  if f"{split}_jpeg" in files:
    needed = [f"{split}_jpeg", f"{split}_offsets", f"{split}_labels"]
  else:
    needed = [f"x_{split}", f"y_{split}"]
  missing = [k for k in needed if k not in files]
  if missing:
    raise DatasetError(
        f"'{path}' has no '{split}' split: missing keys {missing} (found "
        f"{sorted(files)}). Expected x_train/y_train/x_test/y_test uint8 "
        "arrays, or train_jpeg/train_offsets/train_labels (and test_*) for "
        "concatenated JPEG bytes.")
  if needed[0].endswith("_jpeg"):
    blob, offsets = data[needed[0]], data[needed[1]].astype(np.int64)
    labels = data[needed[2]]
    if len(offsets) != len(labels) + 1 or offsets[-1] > len(blob):
      raise DatasetError(f"'{path}': {split}_offsets must have one entry per "
                         "image plus one and end within the JPEG bytes.")

    def decode_one(i):
      return decode.decode_image(blob[offsets[i]:offsets[i + 1]].tobytes(),
                                 what=f"{split} image {i} of '{path}'")

    first = decode_one(0) if len(labels) else np.zeros((0, 0, 3), np.uint8)
    images = decode.decode_all(decode_one, len(labels), first.shape)
  else:
    images, labels = data[needed[0]], data[needed[1]]
  labels = np.asarray(labels).astype(np.int32).reshape(-1)
  images = as_rgb_uint8(images)
  if len(images) != len(labels):
    raise DatasetError(f"'{path}': {len(images)} {split} images but "
                       f"{len(labels)} labels.")
  return ImageArrays(images, labels)


def load_npz(path: str | os.PathLike) -> Dataset:
  """A dataset from a local ``.npz`` file, whole in memory.

  Two layouts are read: ``x_train, y_train, x_test, y_test`` (uint8 images
  (N,H,W[,C]) and integer labels), or ``train_jpeg, train_offsets,
  train_labels`` (and ``test_*``), where image ``i`` is the JPEG bytes
  ``jpeg[offsets[i]:offsets[i+1]]``. An optional ``class_names`` array names
  the labels. ``mean``/``std`` are computed from the train split.
  """
  path = _check_path(Path(path), "npz file")
  try:
    data = np.load(path, allow_pickle=False)
  except (OSError, ValueError) as e:
    raise DatasetError(f"Cannot read '{path}' as an .npz archive: {e}.") from e
  with data:
    train, test = _npz_split(data, "train", path), _npz_split(data, "test", path)
    class_names = tuple(str(n) for n in data["class_names"]) if (
        "class_names" in data.files) else ()
  num_classes = len(class_names) or int(max(train.labels.max(initial=-1),
                                            test.labels.max(initial=-1)) + 1)
  mean, std = channel_stats(train.images)
  return Dataset(train, test, num_classes, f"npz:{path.name}", mean, std,
                 class_names)


def _image_files(folder: Path) -> list[Path]:
  return sorted(p for p in folder.iterdir()
                if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def _class_folders(root: Path) -> list[Path]:
  return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def _decode_path(paths: Sequence[Path], image_size: int, i: int) -> np.ndarray:
  return decode.decode_image(paths[i], size=image_size)


def files_split(paths: Sequence[Path], labels, domains=None, *, image_size: int,
                max_in_memory_bytes: int = MAX_IN_MEMORY_BYTES) -> ImageArrays:
  """A split over image files, each decoded to ``image_size`` square.

  Decoded into memory when it fits in ``max_in_memory_bytes``; otherwise the
  images stay ``LazyImages`` (decoded when read, e.g. by a grain loader).
  """
  paths = list(paths)
  shape = (image_size, image_size, 3)
  decode_one = functools.partial(_decode_path, tuple(paths), image_size)
  if len(paths) * int(np.prod(shape)) <= max_in_memory_bytes:
    images = decode.decode_all(decode_one, len(paths), shape)
  else:
    images = LazyImages(decode_one, len(paths), shape)
  domains = None if domains is None else np.asarray(domains, np.int32)
  return ImageArrays(images, np.asarray(labels, np.int32), domains)


def _first_image_side(paths: Sequence[Path]) -> int:
  return int(min(decode.decode_image(paths[0]).shape[:2]))


def load_image_folder(root: str | os.PathLike, *, image_size: int | None = None,
                      split_seed: int = 0, test_fraction: float = 0.2,
                      max_in_memory_bytes: int = MAX_IN_MEMORY_BYTES) -> Dataset:
  """A dataset from a folder of class sub-folders of images.

  Layout ``root/{train,test}/{class}/*.jpg|png|...``, or ``root/{class}/*``
  from which a stratified ``test_fraction`` split is drawn with
  ``split_seed``. Images are resized and centre-cropped to ``image_size``
  (default: the shorter side of the first image). Class ids follow sorted
  class-folder names.
  """
  root = _check_path(Path(root), "Image folder")
  if (root / "train").is_dir() and (root / "test").is_dir():
    class_names = [p.name for p in _class_folders(root / "train")]
    split_files = {}
    for split in ("train", "test"):
      files, labels = [], []
      for label, name in enumerate(class_names):
        folder = root / split / name
        found = _image_files(folder) if folder.is_dir() else []
        files += found
        labels += [label] * len(found)
      split_files[split] = (files, np.asarray(labels, np.int32))
  else:
    class_names = [p.name for p in _class_folders(root)]
    files, labels = [], []
    for label, name in enumerate(class_names):
      found = _image_files(root / name)
      files += found
      labels += [label] * len(found)
    labels = np.asarray(labels, np.int32)
    train_idx, test_idx = stratified_split(labels, test_fraction=test_fraction,
                                           seed=split_seed)
    split_files = {"train": ([files[i] for i in train_idx], labels[train_idx]),
                   "test": ([files[i] for i in test_idx], labels[test_idx])}
  if not class_names or not split_files["train"][0]:
    raise DatasetError(
        f"No images found under '{root}'. Expected root/<class>/*.jpg (or "
        f"root/train/<class>/* and root/test/<class>/*) with extensions "
        f"{IMAGE_EXTENSIONS}.")
  image_size = image_size or _first_image_side(split_files["train"][0])
  train, test = (files_split(*split_files[s], image_size=image_size,
                             max_in_memory_bytes=max_in_memory_bytes)
                 for s in ("train", "test"))
  mean, std = channel_stats(train.images)
  return Dataset(train, test, len(class_names), f"folder:{root.name}", mean,
                 std, tuple(class_names))


def find_pacs_root(data_dir: str | os.PathLike | None) -> Path:
  """The folder holding PACS's four domain folders, searched under ``data_dir``."""
  if data_dir is None:
    raise DatasetError(
        "PACS is not in tensorflow-datasets and is not bundled: download it "
        "(e.g. the 'kfold' image folders of PACS), unpack it so that "
        "<root>/photo/dog/*.jpg exists, and pass data_dir=<root>.")
  base = Path(data_dir)
  for candidate in (base, base / "pacs", base / "PACS", base / "kfold",
                    base / "pacs" / "kfold", base / "PACS" / "kfold"):
    if all((candidate / d).is_dir() for d in PACS_DOMAINS):
      return candidate
  raise DatasetError(
      f"PACS not found under '{base}': expected the folders {PACS_DOMAINS} "
      "(each holding one folder per class of .jpg/.png images) in data_dir, "
      "data_dir/pacs or data_dir/PACS/kfold. Download and unpack PACS there.")


def load_pacs(data_dir: str | os.PathLike | None, *, test_domain: str | None = None,
              image_size: int = PACS_IMAGE_SIZE, split_seed: int = 0,
              test_fraction: float = 0.2,
              max_in_memory_bytes: int = MAX_IN_MEMORY_BYTES) -> Dataset:
  """PACS (photo, art painting, cartoon, sketch; 7 classes) with domain labels.

  Reads ``root/{photo,art_painting,cartoon,sketch}/{class}/*.jpg|png``;
  ``domains`` indexes ``PACS_DOMAINS``. With ``test_domain`` the split is
  leave-one-domain-out (domain generalisation); otherwise a stratified
  ``test_fraction`` split over (domain, class) drawn with ``split_seed``.
  Images are resized to ``image_size`` and normalised with ImageNet
  statistics, as for ImageNet-pretrained backbones.
  """
  root = find_pacs_root(data_dir)
  if test_domain is not None and test_domain not in PACS_DOMAINS:
    raise DatasetError(f"Unknown PACS domain '{test_domain}'; choose one of "
                       f"{PACS_DOMAINS}.")
  class_names = sorted({p.name for d in PACS_DOMAINS
                        for p in _class_folders(root / d)})
  files, labels, domains = [], [], []
  for domain_id, domain in enumerate(PACS_DOMAINS):
    for label, name in enumerate(class_names):
      folder = root / domain / name
      found = _image_files(folder) if folder.is_dir() else []
      files += found
      labels += [label] * len(found)
      domains += [domain_id] * len(found)
  if not files:
    raise DatasetError(f"No images found in the PACS domain folders under '{root}'.")
  labels, domains = np.asarray(labels, np.int32), np.asarray(domains, np.int32)
  if test_domain is None:
    strata = domains * len(class_names) + labels
    train_idx, test_idx = stratified_split(strata, test_fraction=test_fraction,
                                           seed=split_seed)
  else:
    is_test = domains == PACS_DOMAINS.index(test_domain)
    train_idx, test_idx = np.flatnonzero(~is_test), np.flatnonzero(is_test)

  def split(indices):
    return files_split([files[i] for i in indices], labels[indices],
                       domains[indices], image_size=image_size,
                       max_in_memory_bytes=max_in_memory_bytes)

  name = "pacs" if test_domain is None else f"pacs/{test_domain}"
  return Dataset(split(train_idx), split(test_idx), len(class_names), name,
                 IMAGENET_MEAN, IMAGENET_STD, tuple(class_names), PACS_DOMAINS)
