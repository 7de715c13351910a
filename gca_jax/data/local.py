"""Sources that need no tensorflow-datasets: digits, ``.npz`` files, folders, PACS."""

from __future__ import annotations

import functools
import os
import zipfile
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Self

import numpy as np

from gca_jax.data import decode
from gca_jax.data.base import (
  Dataset,
  DatasetError,
  ImageArrays,
  LazyImages,
  as_labels,
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
_ARCHIVE_ERRORS = (OSError, EOFError, ValueError, KeyError, IndexError, TypeError,
                   OverflowError, MemoryError, NotImplementedError, RuntimeError,
                   zipfile.BadZipFile, zlib.error)


class NpzArchive:
  """The arrays of an ``.npz`` file, read one at a time and verified.

  Unlike ``np.load``, an array's data must fill its zip member exactly and
  is read to the member's end, so the member's CRC-32 is always checked (a
  flipped bit in an array's header could otherwise give a smaller, wrong
  array); arrays of Python objects are refused, never unpickled; and every
  failure is a ``DatasetError`` naming the file and the array.
  """

  def __init__(self, path: Path):
    self.path = path
    cannot = f"Cannot read '{path}' as an .npz archive"
    try:
      with open(path, "rb") as f:
        magic = f.read(6)
    except OSError as e:
      raise DatasetError(f"{cannot}: {e.strerror or e}.") from e
    if not magic:
      raise DatasetError(f"{cannot}: the file is empty (0 bytes); re-create it.")
    if magic == b"\x93NUMPY":
      raise DatasetError(
          f"{cannot}: it holds a single .npy array; save the splits with "
          "np.savez(path, x_train=..., y_train=..., x_test=..., y_test=...).")
    if not magic.startswith(b"PK"):
      raise DatasetError(
          f"{cannot}: it is not a zip of .npy arrays (as np.savez writes); check "
          "the path, or re-create the file with np.savez.")
    try:
      self._zip = zipfile.ZipFile(path)
      self._members = {info.filename[:-len(".npy")]: info.filename
                       for info in self._zip.infolist()
                       if info.filename.endswith(".npy")}
    except _ARCHIVE_ERRORS as e:
      raise DatasetError(f"{cannot}: it is damaged (truncated or altered: {e}); "
                         "re-create it.") from e
    self.files = sorted(self._members)

  def __enter__(self) -> Self:
    return self

  def __exit__(self, *exc) -> None:
    self._zip.close()

  def __contains__(self, key: str) -> bool:
    return key in self._members

  def __getitem__(self, key: str) -> np.ndarray:
    cannot = f"Cannot read array '{key}' of '{self.path}'"
    try:
      with self._zip.open(self._members[key]) as member:
        array = _read_npy(member, self._zip.getinfo(self._members[key]).file_size,
                          cannot)
    except DatasetError:
      raise
    except _ARCHIVE_ERRORS as e:
      raise DatasetError(f"{cannot}: {e}. The file is damaged (truncated or "
                         "altered); re-create it.") from e
    return array


def _read_npy(member, member_size: int, cannot: str) -> np.ndarray:
  """The array in an open ``.npy`` zip member, which it must fill exactly."""
  version = np.lib.format.read_magic(member)
  if version == (1, 0):
    shape, fortran, dtype = np.lib.format.read_array_header_1_0(member)
  elif version in ((2, 0), (3, 0)):
    shape, fortran, dtype = np.lib.format.read_array_header_2_0(member)
  else:
    raise DatasetError(f"{cannot}: unknown .npy format version {version}.")
  if dtype.hasobject:
    raise DatasetError(f"{cannot}: it holds Python objects (dtype {dtype}), which are "
                       "not loaded (unpickling is unsafe); save numeric arrays "
                       "(uint8 images, integer labels, string class names).")
  count = int(np.prod(shape, dtype=np.int64))
  nbytes = count * dtype.itemsize
  if nbytes > member_size:
    raise ValueError(f"its header declares {shape} {dtype} ({nbytes} bytes), more "
                     f"than the {member_size} bytes stored")
  flat = np.empty(count, dtype)
  view, filled = memoryview(flat.view(np.uint8)), 0
  while filled < nbytes:
    got = member.readinto(view[filled:])
    if not got:
      raise ValueError(f"the data ends after {filled} of {nbytes} bytes")
    filled += got
  if member.read(1):  # also reads to the member's end, which checks its CRC-32
    raise ValueError(f"the data is longer than its header's {shape} {dtype}")
  return flat.reshape(shape[::-1]).T if fortran else flat.reshape(shape)


def _decode_jpeg_split(data: NpzArchive, split: str, path: Path
                       ) -> tuple[np.ndarray, np.ndarray]:
  """(images, raw labels) of the concatenated-JPEG layout of ``split``."""
  blob, offsets = data[f"{split}_jpeg"], data[f"{split}_offsets"]
  labels = data[f"{split}_labels"]
  if blob.dtype != np.uint8 or blob.ndim != 1:
    raise DatasetError(f"'{path}': {split}_jpeg must be a 1-D uint8 array of "
                       f"encoded bytes, got {blob.dtype} {blob.shape}.")
  if (not np.issubdtype(offsets.dtype, np.integer) or offsets.ndim != 1
      or len(offsets) != len(labels) + 1 or (len(offsets) and (
          offsets[0] != 0 or offsets[-1] > len(blob) or np.any(np.diff(offsets) <= 0)))):
    raise DatasetError(f"'{path}': {split}_offsets must be increasing integers "
                       "from 0, one entry per image plus one, ending within "
                       f"{split}_jpeg.")
  offsets = offsets.astype(np.int64)
  shape = None

  def decode_one(i):
    what = f"{split} image {i} of '{path}'"
    image = decode.decode_image(blob[offsets[i]:offsets[i + 1]].tobytes(), what=what)
    if image.shape != shape:
      raise DatasetError(f"{what} is {image.shape[1]}x{image.shape[0]} but "
                         f"{split} image 0 is {shape[1]}x{shape[0]}; the images "
                         "of an .npz must share one size.")
    return image

  if not len(labels):
    return np.zeros((0, 1, 1, 3), np.uint8), labels
  shape = decode.decode_image(blob[offsets[0]:offsets[1]].tobytes(),
                              what=f"{split} image 0 of '{path}'").shape
  return decode.decode_all(decode_one, len(labels), shape), labels


def _npz_split(data: NpzArchive, split: str, path: Path) -> ImageArrays:
  """Reads one split of either npz layout (see ``load_npz``)."""
  if f"{split}_jpeg" in data:
    needed = [f"{split}_jpeg", f"{split}_offsets", f"{split}_labels"]
  else:
    needed = [f"x_{split}", f"y_{split}"]
  missing = [k for k in needed if k not in data]
  if missing:
    raise DatasetError(
        f"'{path}' has no '{split}' split: missing keys {missing} (found "
        f"{data.files}). Expected x_train/y_train/x_test/y_test uint8 "
        "arrays, or train_jpeg/train_offsets/train_labels (and test_*) for "
        "concatenated JPEG bytes.")
  labels_key = needed[-1]
  if needed[0].endswith("_jpeg"):
    images, labels = _decode_jpeg_split(data, split, path)
  else:
    images = as_rgb_uint8(data[needed[0]], f"'{path}': {needed[0]}")
    labels = data[labels_key]
  labels = as_labels(labels, f"'{path}': {labels_key}")
  if len(images) != len(labels):
    raise DatasetError(f"'{path}': {len(images)} {split} images but "
                       f"{len(labels)} labels in {labels_key}; they must match.")
  return ImageArrays(images, labels)


def _npz_class_names(data: NpzArchive, path: Path) -> tuple[str, ...]:
  if "class_names" not in data:
    return ()
  names = data["class_names"]
  if names.ndim != 1 or not len(names):
    raise DatasetError(f"'{path}': class_names must be a non-empty 1-D array "
                       f"(one name per class), got shape {names.shape}.")
  return tuple(str(n) for n in names)


def _dense_num_classes(train: ImageArrays, test: ImageArrays, path: Path) -> int:
  """K for labels named by no ``class_names``: the ids in use must be 0..K-1.

  A gap (an id with no image in either split) is refused rather than taken
  as a class: it is usually a mislabelled or huge id, and K = max id + 1
  would size every classifier by it.
  """
  used = np.union1d(train.labels, test.labels)
  num_classes = int(used[-1]) + 1
  if len(used) < num_classes:
    # Bounded: a huge id must not make a huge range.
    absent = np.setdiff1d(np.arange(min(num_classes, len(used) + 8)), used)
    raise DatasetError(
        f"'{path}': the labels use class ids up to {num_classes - 1}, but "
        f"{num_classes - len(used)} of the ids 0..{num_classes - 1} label no image "
        f"(e.g. {absent[:5].tolist()}). Without a class_names array the classes "
        "are the ids 0..K-1, each labelling some image: renumber the labels, or "
        "add class_names naming all K classes.")
  return num_classes


def load_npz(path: str | os.PathLike) -> Dataset:
  """A dataset from a local ``.npz`` file, whole in memory.

  Two layouts are read: ``x_train, y_train, x_test, y_test`` (uint8 images
  (N,H,W[,C]) with C 1 or 3, and integer labels (N,) or (N, 1)), or
  ``train_jpeg, train_offsets, train_labels`` (and ``test_*``), where image
  ``i`` is the encoded bytes ``jpeg[offsets[i]:offsets[i+1]]`` (all images
  of one size). An optional ``class_names`` array names the classes, whose
  ids are then ``0..len(class_names)-1``; without it, the ids must be
  ``0..K-1``, each labelling some image. Both splits must be non-empty and
  of one image size; test classes without train images are kept, with a
  ``DatasetWarning``.
  ``mean``/``std`` are computed from the train split. Anything else raises
  ``DatasetError`` naming the file and the array.
  """
  path = _check_path(Path(path), "npz file")
  with NpzArchive(path) as data:
    train, test = _npz_split(data, "train", path), _npz_split(data, "test", path)
    class_names = _npz_class_names(data, path)
  dataset = Dataset(train, test, len(class_names), f"npz:{path.name}", (), (),
                    class_names)
  if not class_names and len(train) and len(test):
    dataset = dataset._replace(num_classes=_dense_num_classes(train, test, path))
  dataset = check_dataset(dataset, f"'{path}'")
  mean, std = channel_stats(train.images)
  return dataset._replace(mean=mean, std=std)


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


def load_image_folder(root: str | os.PathLike, *, image_size: int | None = None,
                      split_seed: int = 0, test_fraction: float = 0.2,
                      max_in_memory_bytes: int = MAX_IN_MEMORY_BYTES) -> Dataset:
  """A dataset from a folder of class sub-folders of images.

  Layout ``root/{train,test}/{class}/*.jpg|png|...``, or ``root/{class}/*``
  from which a stratified ``test_fraction`` split is drawn with
  ``split_seed``. Class ids follow sorted class-folder names (of both
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
  if (root / "train").is_dir() and (root / "test").is_dir():
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
