"""``.npz`` archives: arrays (``x_{train,test}``, ``y_{train,test}``) or the CIFAR
JPEG layout (``{train,test}_jpeg``, ``_offsets``, ``_labels``), with optional
coarse labels (``{train,test}_coarse_labels``), read without pickle and
verified member by member (CRC and size), so a damaged file fails at once
naming itself. See `load_npz` for the layout."""

from __future__ import annotations

import os
import zipfile
import zlib
from pathlib import Path
from typing import Self

import numpy as np

from gca_jax.data import decode
from gca_jax.data.base import (
  Dataset,
  DatasetError,
  ImageArrays,
  as_labels,
  as_rgb_uint8,
  channel_stats,
  check_dataset,
  check_size,
)
from gca_jax.data.local import _check_path

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


def _decode_jpeg_split(data: NpzArchive, split: str, path: Path, image_size: int | None
                       ) -> tuple[np.ndarray, np.ndarray]:
  """(images, raw labels) of the concatenated-JPEG layout of ``split``, each
  image resized and centre-cropped to ``image_size`` if given."""
  blob, offsets = data[f"{split}_jpeg"], data[f"{split}_offsets"]
  labels = data[f"{split}_labels"]
  if blob.dtype != np.uint8 or blob.ndim != 1:
    raise DatasetError(f"'{path}': {split}_jpeg must be a 1-D uint8 array of "
                       f"encoded bytes, got {blob.dtype} {blob.shape}.")
  if (np.issubdtype(offsets.dtype, np.integer) and offsets.ndim == 1 and len(offsets) > 1
      and np.any(np.diff(offsets) == 0)):
    empty = int(np.flatnonzero(np.diff(offsets) == 0)[0])
    raise DatasetError(f"'{path}': {split} image {empty} is an empty record "
                       f"({split}_offsets[{empty}] = {split}_offsets[{empty + 1}] = "
                       f"{offsets[empty]}); re-create the file with its bytes.")
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
    image = decode.decode_image(blob[offsets[i]:offsets[i + 1]].tobytes(),
                                size=image_size, what=what)
    if image.shape != shape:
      raise DatasetError(f"{what} is {image.shape[1]}x{image.shape[0]} but "
                         f"{split} image 0 is {shape[1]}x{shape[0]}; the images "
                         "of an .npz must share one size, or pass image_size "
                         "(--config.load_size) to resize every image to it.")
    return image

  if not len(labels):
    return np.zeros((0, image_size or 1, image_size or 1, 3), np.uint8), labels
  if image_size is None:
    shape = decode.decode_image(blob[offsets[0]:offsets[1]].tobytes(),
                                what=f"{split} image 0 of '{path}'").shape
  else:
    shape = (image_size, image_size, 3)
  return decode.decode_all(decode_one, len(labels), shape), labels


COARSE_LABELS_KEY = "{split}_coarse_labels"
"""The optional coarse labels of a split (e.g. CIFAR-100's 20 superclasses),
in both layouts; named by an optional ``coarse_class_names`` array."""


def _npz_split(data: NpzArchive, split: str, path: Path,
               image_size: int | None) -> ImageArrays:
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
    images, labels = _decode_jpeg_split(data, split, path, image_size)
  else:
    images = as_rgb_uint8(data[needed[0]], f"'{path}': {needed[0]}")
    labels = data[labels_key]
  labels = as_labels(labels, f"'{path}': {labels_key}")
  if len(images) != len(labels):
    raise DatasetError(f"'{path}': {len(images)} {split} images but "
                       f"{len(labels)} labels in {labels_key}; they must match.")
  coarse_key = COARSE_LABELS_KEY.format(split=split)
  coarse = None
  if coarse_key in data:
    coarse = as_labels(data[coarse_key], f"'{path}': {coarse_key}")
    if len(coarse) != len(labels):
      raise DatasetError(f"'{path}': {len(labels)} {split} images but "
                         f"{len(coarse)} coarse labels in {coarse_key}; they must match.")
  if image_size is not None:  # the JPEG layout is resized as it is decoded
    images = decode.resize_images(images, image_size)
  return ImageArrays(images, labels, coarse_labels=coarse)


def _npz_names(data: NpzArchive, key: str, path: Path) -> tuple[str, ...]:
  """The optional 1-D array of names ``key`` (``class_names``, ...), or ()."""
  if key not in data:
    return ()
  names = data[key]
  if names.ndim != 1 or not len(names):
    raise DatasetError(f"'{path}': {key} must be a non-empty 1-D array "
                       f"(one name per class), got shape {names.shape}.")
  return tuple(str(n) for n in names)


def _dense_num_classes(train_ids: np.ndarray, test_ids: np.ndarray, path: Path,
                       names_key: str = "class_names") -> int:
  """K for ids named by no ``names_key`` array: the ids in use must be 0..K-1.

  A gap (an id with no image in either split) is refused rather than taken
  as a class: it is usually a mislabelled or huge id, and K = max id + 1
  would size every classifier by it.
  """
  used = np.union1d(train_ids, test_ids)
  num_classes = int(used[-1]) + 1
  if len(used) < num_classes:
    # Bounded: a huge id must not make a huge range.
    absent = np.setdiff1d(np.arange(min(num_classes, len(used) + 8)), used)
    raise DatasetError(
        f"'{path}': the labels use class ids up to {num_classes - 1}, but "
        f"{num_classes - len(used)} of the ids 0..{num_classes - 1} label no image "
        f"(e.g. {absent[:5].tolist()}). Without a {names_key} array the classes "
        "are the ids 0..K-1, each labelling some image: renumber the labels, or "
        f"add {names_key} naming all K classes.")
  return num_classes


def _coarse_classes(data: NpzArchive, train: ImageArrays, test: ImageArrays,
                    path: Path) -> tuple[int, tuple[str, ...]]:
  """(number, names) of the coarse classes: (0, ()) for a file without any.

  Coarse labels are given for both splits or for neither, so that no
  split's second label level is silently missing.
  """
  names = _npz_names(data, "coarse_class_names", path)
  keys = [COARSE_LABELS_KEY.format(split=s) for s in ("train", "test")]
  given = [split.coarse_labels is not None for split in (train, test)]
  if given[0] != given[1]:
    present, absent = (keys[0], keys[1]) if given[0] else (keys[1], keys[0])
    raise DatasetError(f"'{path}' has {present} but no {absent}; give the coarse "
                       "labels of both splits, or of neither.")
  if not given[0]:
    if names:
      raise DatasetError(f"'{path}' has coarse_class_names but no {keys[0]} / "
                         f"{keys[1]}; add the coarse labels or remove the names.")
    return 0, ()
  if names:
    return len(names), names
  if not len(train) or not len(test):  # the empty split is refused later, by name
    return 0, ()
  return _dense_num_classes(train.coarse_labels, test.coarse_labels, path,
                            "coarse_class_names"), ()


def load_npz(path: str | os.PathLike, *, image_size: int | None = None) -> Dataset:
  """A dataset from a local ``.npz`` file, whole in memory.

  Two layouts are read: ``x_train, y_train, x_test, y_test`` (uint8 images
  (N,H,W[,C]) with C 1 or 3, and integer labels (N,) or (N, 1)), or
  ``train_jpeg, train_offsets, train_labels`` (and ``test_*``), where image
  ``i`` is the encoded bytes ``jpeg[offsets[i]:offsets[i+1]]``. An optional
  ``class_names`` array names the classes, whose ids are then
  ``0..len(class_names)-1``; without it, the ids must be ``0..K-1``, each
  labelling some image. Both layouts may add a second, coarser label level
  (CIFAR-100's 20 superclasses): integer ``train_coarse_labels`` and
  ``test_coarse_labels`` (one per image, both splits or neither), named by
  an optional ``coarse_class_names`` under the same rules; they become the
  splits' ``coarse_labels`` (None without them).

  Sizes: with ``image_size`` (a config's ``load_size``), every image is
  resized (shorter side, bicubic) and centre-cropped to ``image_size``
  square, as for image folders. Without it, images keep their size, which
  must be one for all images.

  Both splits must be non-empty; test classes without train images are
  kept, with a ``DatasetWarning``. ``mean``/``std`` are computed from the
  train split. Anything else raises ``DatasetError`` naming the file and
  the array.

  Examples:
    >>> import tempfile, numpy as np
    >>> path = tempfile.mkdtemp() + "/tiny.npz"
    >>> images = np.zeros((4, 32, 32, 3), np.uint8)
    >>> np.savez(path, x_train=images, y_train=[0, 1, 2, 3], x_test=images[:2],
    ...          y_test=[0, 3], train_coarse_labels=[0, 0, 1, 1],
    ...          test_coarse_labels=[0, 1])
    >>> ds = load_npz(path, image_size=8)
    >>> ds.image_shape, ds.num_classes, ds.num_coarse_classes
    ((8, 8, 3), 4, 2)
    >>> ds.test.coarse_labels.tolist()
    [0, 1]
  """
  path = _check_path(Path(path), "npz file")
  if image_size is not None:
    image_size = check_size(image_size)
  with NpzArchive(path) as data:
    train = _npz_split(data, "train", path, image_size)
    test = _npz_split(data, "test", path, image_size)
    class_names = _npz_names(data, "class_names", path)
    num_coarse, coarse_names = _coarse_classes(data, train, test, path)
  dataset = Dataset(train, test, len(class_names), f"npz:{path.name}", (), (),
                    class_names, num_coarse_classes=num_coarse,
                    coarse_class_names=coarse_names)
  if not class_names and len(train) and len(test):
    dataset = dataset._replace(num_classes=_dense_num_classes(train.labels, test.labels,
                                                              path))
  dataset = check_dataset(dataset, f"'{path}'")
  mean, std = channel_stats(train.images)
  return dataset._replace(mean=mean, std=std)
