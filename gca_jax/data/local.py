"""Sources that need no tensorflow-datasets: digits, ``.npz`` files, folders, PACS."""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from gca_jax.data import decode
from gca_jax.data.base import (
  Dataset,
  DatasetError,
  ImageArrays,
  LazyImages,
  as_rgb_uint8,
  channel_stats,
  check_dataset,
  check_size,
)

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

  Deterministic in ``seed`` (a non-negative int); ``test_fraction`` is in
  (0, 1). Every class with at least two examples appears in both splits; a
  class with one example goes to train.
  """
  if isinstance(test_fraction, bool) or not isinstance(test_fraction, (int, float)) or (
      not 0 < test_fraction < 1):
    raise DatasetError(f"test_fraction must be in (0, 1), got {test_fraction!r}.")
  if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
    raise DatasetError(f"split_seed must be a non-negative integer, got {seed!r}.")
  rng = np.random.default_rng(seed)
  train, test = [np.zeros((0,), np.int64)], [np.zeros((0,), np.int64)]
  for label in np.unique(labels):
    members = rng.permutation(np.flatnonzero(labels == label))
    num_test = round(test_fraction * len(members))
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

  image_size = check_size(image_size)
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
  return check_dataset(Dataset(train, test, 10, "digits", mean, std,
                               tuple(str(n) for n in bunch.target_names)), "digits")


def _check_path(path: Path, what: str) -> Path:
  if not path.exists():
    raise DatasetError(f"{what} not found: '{path}'. Check the path "
                       "(pass an existing .npz file or image folder).")
  return path


# What reading a damaged zip member can raise: zipfile's own errors (bad
# CRC, bad header; RuntimeError for a flipped "encrypted" flag), zlib's, a
# short read, numpy's header parser, ...
def _image_files(folder: Path) -> list[Path]:
  return sorted(p for p in folder.iterdir()
                if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def _class_folders(root: Path) -> list[Path]:
  return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def _class_images(folder: Path) -> list[Path]:
  """The image files of one class folder; an empty one is refused."""
  found = _image_files(folder)
  if not found:
    raise DatasetError(
        f"Class folder '{folder}' holds no images (extensions {IMAGE_EXTENSIONS}); "
        "add images or remove the folder.")
  return found


def _decode_path(paths: Sequence[Path], image_size: int, i: int) -> np.ndarray:
  return decode.decode_image(paths[i], size=image_size)


def files_split(paths: Sequence[Path], labels, domains=None, *, image_size: int,
                max_in_memory_bytes: int = MAX_IN_MEMORY_BYTES) -> ImageArrays:
  """A split over image files, each resized and centre-cropped to ``image_size``.

  Every image, whatever its size, becomes ``image_size`` square
  (`decode.resize_center_crop`). Decoded into memory when the split fits in
  ``max_in_memory_bytes``; otherwise the images stay ``LazyImages`` (decoded
  when read, e.g. by a grain loader).
  """
  image_size = check_size(image_size)
  paths = list(paths)
  shape = (image_size, image_size, 3)
  decode_one = functools.partial(_decode_path, tuple(paths), image_size)
  if len(paths) * int(np.prod(shape)) <= max_in_memory_bytes:
    images = decode.decode_all(decode_one, len(paths), shape)
  else:
    images = LazyImages(decode_one, len(paths), shape)
  domains = None if domains is None else np.asarray(domains, np.int32)
  return ImageArrays(images, np.asarray(labels, np.int32), domains)


def common_side(paths: Sequence[Path], root: Path) -> int:
  """The side of the images at ``paths`` if all share one size, else an error.

  Reads image headers only. Images of different sizes need an explicit
  ``image_size`` (every image is then resized and centre-cropped to it);
  guessing one from some image would shrink or enlarge all the others.
  """
  first = decode.image_size(paths[0])
  for path in paths[1:]:
    size = decode.image_size(path)
    if size != first:
      raise DatasetError(
          f"Images under '{root}' differ in size: '{path}' is {size[0]}x{size[1]} but "
          f"'{paths[0]}' is {first[0]}x{first[1]}. Pass image_size "
          "(--config.load_size) to resize and centre-crop every image to one "
          "square size.")
  return min(first)


def _folder_split_files(root: Path) -> tuple[list[str], dict]:
  """Class names and {split: (files, labels)} of a train/test folder layout.

  The classes are the union of the class folders of both splits, so a test
  class without train images is kept (and warned about by `check_dataset`).
  """
  class_names = sorted({p.name for split in ("train", "test")
                        for p in _class_folders(root / split)})
  split_files = {}
  for split in ("train", "test"):
    files, labels = [], []
    for label, name in enumerate(class_names):
      folder = root / split / name
      # A class may lack a folder in one split; an empty folder is refused.
      found = _class_images(folder) if folder.is_dir() else []
      files += found
      labels += [label] * len(found)
    split_files[split] = (files, np.asarray(labels, np.int32))
  return class_names, split_files


SPLIT_FOLDERS = ("train", "test")
"""The folders of an image folder's official split, each of class folders."""
OTHER_SPLIT_NAMES = ("val", "valid", "validation")


def _has_official_split(root: Path) -> bool:
  """Whether ``root`` is laid out as ``root/{train,test}/<class>``.

  A ``train`` (or ``test``) folder without the other is refused rather
  than read as a class: a class named "train" is almost always a split
  whose partner is missing or named differently (e.g. ``val``).
  """
  present = [name for name in SPLIT_FOLDERS if (root / name).is_dir()]
  if len(present) != 1:
    return bool(present)
  absent = SPLIT_FOLDERS[1 - SPLIT_FOLDERS.index(present[0])]
  others = [name for name in OTHER_SPLIT_NAMES if (root / name).is_dir()]
  hint = f" (rename '{root / others[0]}' to '{root / absent}')" if others else ""
  raise DatasetError(
      f"'{root}' has a {present[0]}/ folder but no {absent}/ folder{hint}. An image "
      "folder is either root/train/<class>/* and root/test/<class>/* (the official "
      "split) or root/<class>/* with no train/ or test/ folder (a split is drawn).")


def load_image_folder(root: str | os.PathLike, *, image_size: int | None = None,
                      split_seed: int = 0, test_fraction: float = 0.2,
                      max_in_memory_bytes: int = MAX_IN_MEMORY_BYTES) -> Dataset:
  """A dataset from a folder of class sub-folders of images.

  Layout ``root/{train,test}/{class}/*.jpg|png|...``, or ``root/{class}/*``
  from which a stratified ``test_fraction`` split is drawn with
  ``split_seed``; a ``train`` or ``test`` folder without the other is
  refused. Class ids follow sorted class-folder names (of both
  splits); an empty class folder is refused, and test classes without train
  images are kept with a ``DatasetWarning``.

  Sizes: with ``image_size``, every image is resized (shorter side, bicubic)
  and centre-cropped to ``image_size`` square. Without it, all images must
  have one size, and they are centre-cropped to its shorter side (kept as
  they are if square); images of different sizes then raise ``DatasetError``
  naming two of them. 16-bit images are scaled to 8 bits
  (`decode.to_8bit`). Both splits must be non-empty.
  """
  root = _check_path(Path(root), "Image folder")
  if not root.is_dir():
    raise DatasetError(f"'{root}' is not a folder of class folders of images.")
  if image_size is not None:
    image_size = check_size(image_size)
  if _has_official_split(root):
    class_names, split_files = _folder_split_files(root)
  else:
    class_names = [p.name for p in _class_folders(root)]
    files, labels = [], []
    for label, name in enumerate(class_names):
      found = _class_images(root / name)
      files += found
      labels += [label] * len(found)
    labels = np.asarray(labels, np.int32)
    split_files = {"train": (files, labels), "test": ([], labels[:0])}
    if files:
      train_idx, test_idx = stratified_split(labels, test_fraction=test_fraction,
                                             seed=split_seed)
      split_files = {"train": ([files[i] for i in train_idx], labels[train_idx]),
                     "test": ([files[i] for i in test_idx], labels[test_idx])}
      if not test_idx.size:
        raise DatasetError(
            f"'{root}' gives an empty test split: every class folder holds one "
            "image. Add images (a class needs two to appear in both splits) or use "
            "root/train/<class> and root/test/<class> folders.")
  if not class_names or not split_files["train"][0]:
    raise DatasetError(
        f"No images found under '{root}'. Expected root/<class>/*.jpg (or "
        f"root/train/<class>/* and root/test/<class>/*) with extensions "
        f"{IMAGE_EXTENSIONS}.")
  if not split_files["test"][0]:
    raise DatasetError(f"'{root / 'test'}' holds no class folders of images; the "
                       "test split would be empty.")
  if image_size is None:
    image_size = common_side(split_files["train"][0] + split_files["test"][0], root)
  train, test = (files_split(*split_files[s], image_size=image_size,
                             max_in_memory_bytes=max_in_memory_bytes)
                 for s in ("train", "test"))
  dataset = check_dataset(Dataset(train, test, len(class_names), f"folder:{root.name}",
                                  (), (), tuple(class_names)), f"'{root}'")
  mean, std = channel_stats(train.images)
  return dataset._replace(mean=mean, std=std)


def find_pacs_root(data_dir: str | os.PathLike | None) -> Path:
  """The folder holding PACS's four domain folders, searched under ``data_dir``."""
  if data_dir is None:
    raise DatasetError(
        "PACS is not in tensorflow-datasets and is not bundled: download it "
        "(e.g. the 'kfold' image folders of PACS), unpack it so that "
        "<root>/photo/dog/*.jpg exists, and pass data_dir=<root> "
        "(--config.data_dir=<root>).")
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
  image_size = check_size(image_size)
  class_names = sorted({p.name for d in PACS_DOMAINS
                        for p in _class_folders(root / d)})
  files, labels, domains = [], [], []
  for domain_id, domain in enumerate(PACS_DOMAINS):
    for label, name in enumerate(class_names):
      folder = root / domain / name
      # A domain may lack a class; an empty class folder is refused.
      found = _class_images(folder) if folder.is_dir() else []
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
  return check_dataset(
      Dataset(split(train_idx), split(test_idx), len(class_names), name,
              IMAGENET_MEAN, IMAGENET_STD, tuple(class_names), PACS_DOMAINS),
      f"PACS under '{root}'")
