"""Containers shared by every data source, and the one error they raise."""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np


class DatasetError(RuntimeError):
  """A dataset cannot be read; the message says what to do about it.

  Raised for a wrong path, a missing split, an unprepared or manual-download
  dataset, a damaged file, an undecodable image, unusable arrays or labels
  and loader arguments that select no usable data, so that users see one
  actionable message naming the file or field instead of a traceback from
  deep inside numpy, tensorflow-datasets or Pillow.
  """


class DatasetWarning(UserWarning):
  """A dataset is usable but has a property that changes what its metrics
  mean (e.g. test classes without train examples); the message says which."""


class LazyImages:
  """A read-only uint8 ``(N, H, W, C)`` array whose images decode on access.

  Large-image sources (ImageNet-100, PACS, image folders) cannot be held in
  memory whole; this object behaves like the numpy array they would give
  (``len``, ``shape``, ``dtype``, integer / slice / index-array indexing,
  ``np.asarray``) and runs ``decode(i)`` only for the items asked for. Feed
  it through ``gca_jax.data.loader`` rather than onto the device. Keep
  ``decode`` picklable (a module-level function or ``functools.partial``) so
  grain worker processes can receive it.
  """

  def __init__(self, decode: Callable[[int], np.ndarray], length: int,
               image_shape: tuple[int, int, int]):
    self._decode = decode
    self._length = int(length)
    self.shape = (self._length, *image_shape)
    self.dtype = np.dtype(np.uint8)
    self.ndim = 4

  def __len__(self) -> int:
    return self._length

  def __getitem__(self, index):
    if isinstance(index, (int, np.integer)):
      if not -self._length <= index < self._length:
        raise IndexError(f"index {index} out of range for {self._length} images")
      return self._decode(int(index) % self._length)
    indices = np.arange(self._length)[index]
    out = np.empty((len(indices), *self.shape[1:]), np.uint8)
    for row, i in enumerate(indices):
      out[row] = self._decode(int(i))
    return out

  def __array__(self, dtype=None, copy=None):
    del copy
    images = self[:]
    return images if dtype is None else images.astype(dtype)

  def __repr__(self) -> str:
    return f"LazyImages(shape={self.shape}, dtype=uint8)"


def _index_into(images: LazyImages, indices: np.ndarray, i: int) -> np.ndarray:
  return images[int(indices[i])]


class ImageArrays(NamedTuple):
  """One split: ``images`` uint8 (N,H,W,C), ``labels`` int32 (N,), ``domains``
  and ``coarse_labels``.

  ``images`` is a numpy array for in-memory sources and a ``LazyImages`` for
  large-image ones. ``domains`` is an int32 (N,) array for multi-domain data
  (PACS) and ``None`` otherwise. ``coarse_labels`` is an int32 (N,) array of
  a second, coarser label level for data that has one (CIFAR-100's 20
  superclasses of its 100 classes) and ``None`` otherwise.
  """

  images: np.ndarray | LazyImages
  labels: np.ndarray
  domains: np.ndarray | None = None
  coarse_labels: np.ndarray | None = None

  def __len__(self) -> int:  # pytype: disable=signature-mismatch
    return len(self.labels)

  @property
  def in_memory(self) -> bool:
    """Whether ``images`` is a plain numpy array (device-feedable)."""
    return isinstance(self.images, np.ndarray)

  def take(self, indices) -> ImageArrays:
    """The examples at ``indices`` (kept lazy for lazy images)."""
    indices = np.asarray(indices)
    if self.in_memory:
      images = self.images[indices]
    else:
      images = LazyImages(functools.partial(_index_into, self.images, indices),
                          len(indices), self.images.shape[1:])
    domains = None if self.domains is None else self.domains[indices]
    coarse = None if self.coarse_labels is None else self.coarse_labels[indices]
    return ImageArrays(images, self.labels[indices], domains, coarse)


def _make_image_arrays(cls, iterable) -> ImageArrays:
  result = tuple.__new__(cls, iterable)
  if tuple.__len__(result) != len(cls._fields):
    raise TypeError(f"ImageArrays takes {len(cls._fields)} fields, got "
                    f"{tuple.__len__(result)}.")
  return result


# namedtuple's own _make (behind _replace) checks the field count with len(),
# which for a split counts examples; NamedTuple forbids defining it in the body.
ImageArrays._make = classmethod(_make_image_arrays)


class Dataset(NamedTuple):
  """A train/test pair with what training and evaluation need to know.

  ``mean``/``std`` are per-channel statistics of images scaled to [0, 1],
  used by ``augment.normalize``. ``class_names`` and ``domain_names`` index
  ``labels`` and ``domains``. ``num_coarse_classes`` (0 for data without
  coarse labels) and ``coarse_class_names`` (possibly empty) describe the
  splits' ``coarse_labels``.
  """

  train: ImageArrays
  test: ImageArrays
  num_classes: int
  name: str
  mean: tuple[float, ...]
  std: tuple[float, ...]
  class_names: tuple[str, ...] = ()
  domain_names: tuple[str, ...] = ()
  num_coarse_classes: int = 0
  coarse_class_names: tuple[str, ...] = ()

  @property
  def image_shape(self) -> tuple[int, int, int]:
    """(H, W, C) of every image in the dataset."""
    split = self.train if len(self.train) else self.test
    return tuple(split.images.shape[1:])


def empty_split(image_shape: Sequence[int]) -> ImageArrays:
  """A split with no examples (e.g. the train split of an eval-only set)."""
  return ImageArrays(np.zeros((0, *image_shape), np.uint8),
                     np.zeros((0,), np.int32))


def channel_stats(images: np.ndarray | LazyImages, *, max_images: int = 2048,
                  seed: int = 0) -> tuple[tuple[float, ...], tuple[float, ...]]:
  """Per-channel mean and std of ``images`` scaled to [0, 1].

  Uses a fixed-seed sample of at most ``max_images`` images, so the result is
  deterministic and cheap for lazy sources.
  """
  n = len(images)
  if n == 0:
    raise DatasetError("Cannot compute channel statistics of an empty split.")
  if n > max_images:
    indices = np.sort(np.random.default_rng(seed).choice(n, max_images,
                                                         replace=False))
    images = images[indices]
  pixels = np.asarray(images, np.float64).reshape(-1, images.shape[-1]) / 255.0
  std = np.maximum(pixels.std(axis=0), 1e-3)
  return tuple(float(m) for m in pixels.mean(axis=0)), tuple(float(s) for s in std)


def check_size(value, name: str = "image_size") -> int:
  """``value`` as a positive int, else a ``DatasetError`` naming ``name``."""
  if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or (
      value < 1):
    raise DatasetError(f"{name} must be a positive integer (pixels), got {value!r}.")
  return int(value)


def as_rgb_uint8(images: np.ndarray, what: str = "images") -> np.ndarray:
  """``images`` as uint8 (N,H,W,3): grey (N,H,W) or (N,H,W,1) is replicated.

  Anything else (another dtype, rank or channel count, or an empty image
  side) raises ``DatasetError`` naming ``what``.
  """
  images = np.asarray(images)
  if images.dtype != np.uint8:
    raise DatasetError(
        f"{what} have dtype {images.dtype}; images must be uint8 in [0, 255] "
        "(e.g. np.round(x * 255).astype(np.uint8) for floats in [0, 1], or "
        "(x >> 8).astype(np.uint8) for uint16).")
  if images.ndim == 3:
    images = images[..., None]
  if images.ndim != 4 or images.shape[-1] not in (1, 3) or 0 in images.shape[1:3]:
    raise DatasetError(
        f"{what} have shape {images.shape}; expected (N, H, W), (N, H, W, 1) or "
        "(N, H, W, 3) with H, W >= 1.")
  if images.shape[-1] == 1:
    images = np.repeat(images, 3, axis=-1)
  return images


def as_labels(values, what: str = "labels") -> np.ndarray:
  """``values`` as int32 (N,) class ids, refusing what would be misread.

  Accepts an integer array of shape (N,) or (N, 1) with ids in
  [0, 2**31 - 1]; a float, bool or other array, another shape, a negative
  id or one beyond int32 raises ``DatasetError`` naming ``what``.
  """
  values = np.asarray(values)
  if values.dtype == np.bool_ or not np.issubdtype(values.dtype, np.integer):
    raise DatasetError(
        f"{what} have dtype {values.dtype}; labels must be integer class ids "
        "(0..K-1), e.g. y.astype(np.int64) after checking they are whole numbers.")
  if values.ndim == 2 and values.shape[1] == 1:
    values = values[:, 0]
  if values.ndim != 1:
    raise DatasetError(f"{what} have shape {values.shape}; labels must have shape "
                       "(N,) or (N, 1), one class id per image.")
  if values.size:
    low, high = int(values.min()), int(values.max())
    if low < 0 or high > np.iinfo(np.int32).max:
      bad = low if low < 0 else high
      raise DatasetError(f"{what} hold the class id {bad}; class ids must be in "
                         "0..K-1 for K classes.")
  return values.astype(np.int32)


def preview(items, limit: int = 8) -> str:
  """``items`` as a short list for an error message (the first ``limit``)."""
  items = [i.item() if isinstance(i, np.generic) else i for i in items]
  return str(items) if len(items) <= limit else (
      f"{items[:limit]} (and {len(items) - limit} more)")


def _check_split(split: ImageArrays, which: str, source: str, dataset: Dataset) -> None:
  images = split.images
  n = len(split.labels)
  if (images.dtype != np.uint8 or len(images.shape) != 4 or images.shape[-1] != 3
      or images.shape[0] != n):
    raise DatasetError(f"{source}: the {which} split has images of shape "
                       f"{tuple(images.shape)} ({images.dtype}) for {n} labels; "
                       "expected uint8 (N, H, W, 3) with one label per image.")
  labels = np.asarray(split.labels)
  if labels.dtype != np.int32 or labels.ndim != 1:
    raise DatasetError(f"{source}: {which} labels must be int32 (N,), got "
                       f"{labels.dtype} {labels.shape}.")
  if n and (labels.min() < 0 or labels.max() >= dataset.num_classes):
    bad = labels.min() if labels.min() < 0 else labels.max()
    raise DatasetError(f"{source}: {which} label {int(bad)} is outside 0.."
                       f"{dataset.num_classes - 1} ({dataset.num_classes} classes).")
  if split.domains is not None:
    domains = np.asarray(split.domains)
    if domains.shape != (n,) or (n and (domains.min() < 0 or (
        dataset.domain_names and domains.max() >= len(dataset.domain_names)))):
      raise DatasetError(f"{source}: {which} domains must be one id per image in "
                         f"0..{max(len(dataset.domain_names), 1) - 1}.")
  if split.coarse_labels is not None:
    coarse, count = np.asarray(split.coarse_labels), dataset.num_coarse_classes
    if coarse.dtype != np.int32 or coarse.shape != (n,):
      raise DatasetError(f"{source}: {which} coarse labels must be int32 (N,), one "
                         f"per image, got {coarse.dtype} {coarse.shape}.")
    if n and (coarse.min() < 0 or coarse.max() >= count):
      bad = coarse.min() if coarse.min() < 0 else coarse.max()
      raise DatasetError(f"{source}: {which} coarse label {int(bad)} is outside "
                         f"0..{count - 1} ({count} coarse classes).")


def _check_coarse_classes(dataset: Dataset, source: str) -> None:
  """Coarse labels come with their count, and for every non-empty split."""
  splits = [s for s in (dataset.train, dataset.test) if len(s)]
  given = [s.coarse_labels is not None for s in splits]
  if any(given) and not all(given):
    raise DatasetError(f"{source}: only some splits have coarse labels; give them "
                       "for every split, or for none.")
  if any(given) and dataset.num_coarse_classes < 1:
    raise DatasetError(f"{source}: the splits have coarse labels but "
                       f"num_coarse_classes is {dataset.num_coarse_classes}.")
  if not any(given) and (dataset.num_coarse_classes or dataset.coarse_class_names):
    raise DatasetError(f"{source}: {dataset.num_coarse_classes} coarse classes but "
                       "no split has coarse labels.")
  if dataset.coarse_class_names and (
      len(dataset.coarse_class_names) != dataset.num_coarse_classes):
    raise DatasetError(f"{source}: {dataset.num_coarse_classes} coarse classes but "
                       f"{len(dataset.coarse_class_names)} coarse class names.")


def _check_coarse_hierarchy(dataset: Dataset, source: str) -> None:
  """Refuses a class whose images have different coarse labels.

  Coarse classes group whole classes (a CIFAR-100 superclass holds five
  classes); a class split across two of them means the coarse labels are
  not in the order of the images, or are not a coarser level at all.
  """
  splits = [s for s in (dataset.train, dataset.test) if len(s)]
  if not splits or splits[0].coarse_labels is None:
    return
  pairs = np.unique(np.stack([np.concatenate([s.labels for s in splits]),
                              np.concatenate([s.coarse_labels for s in splits])], 1),
                    axis=0)
  fine = pairs[:, 0]
  if len(np.unique(fine)) < len(fine):
    label = int(fine[np.flatnonzero(fine[1:] == fine[:-1])[0]])
    coarse = pairs[fine == label, 1][:2].tolist()
    names = dataset.class_names
    name = names[label] if label < len(names) else str(label)
    raise DatasetError(
        f"{source}: images of class {name!r} have the coarse labels {coarse[0]} and "
        f"{coarse[1]}; every class must lie in one coarse class. Check that the "
        "coarse labels follow the order of the images.")


def _check_two_classes(dataset: Dataset, source: str) -> None:
  """Refuses labels of fewer than two classes over both splits.

  With one class, kNN and linear-probe accuracy are 1.0 whatever the
  encoder learnt, so they would report a perfect result that means nothing.
  """
  used = np.union1d(dataset.train.labels, dataset.test.labels)
  if len(used) < 2:
    names = dataset.class_names
    name = names[used[0]] if len(names) > used[0] else str(used[0])
    raise DatasetError(
        f"{source}: every image is labelled with the one class {name!r}; kNN and "
        "linear-probe accuracy need at least 2 classes (with one, every "
        "prediction is right and both report 1.0). Add images of other classes, "
        "or check the labels.")


def warn_unseen_test_classes(train_labels, test_labels, class_names: Sequence[str],
                             source: str) -> np.ndarray:
  """Warns (``DatasetWarning``) if test classes have no train examples.

  Such classes stay in the test split and in ``num_classes``: evaluation
  is then honest but no classifier fitted on the train split (kNN, linear
  probe) can predict them, so their test images count as errors. Returns
  the ids of those classes.
  """
  unseen = np.setdiff1d(np.asarray(test_labels), np.asarray(train_labels))
  if unseen.size:
    names = [class_names[i] if i < len(class_names) else str(i) for i in unseen]
    count = int(np.isin(test_labels, unseen).sum())
    warnings.warn(
        f"{source}: test classes {preview(names)} ({count} test image{'s' * (count != 1)}) have no "
        "train images; they are kept, but no classifier fitted on train can "
        "predict them, so those test images count as errors.", DatasetWarning,
        stacklevel=3)
  return unseen


def check_dataset(dataset: Dataset, source: str, *,
                  allow_empty_train: bool = False) -> Dataset:
  """Returns ``dataset`` if training and evaluation can use it as it is.

  Holds when: the test split is not empty, nor is the train split unless
  ``allow_empty_train`` (an evaluation-only set); both splits are uint8
  (N, H, W, 3) with int32 labels in [0, num_classes) (domain ids, if any,
  index ``domain_names``; coarse labels, if any, are given for every
  non-empty split, lie in [0, num_coarse_classes) and put each class in one
  coarse class), the labels use at least two classes, and the splits share
  one image shape. Raises ``DatasetError`` naming ``source`` otherwise.
  Test classes without train examples are kept, with a ``DatasetWarning``
  (`warn_unseen_test_classes`).
  """
  if not len(dataset.test):
    raise DatasetError(f"{source}: the test split is empty; evaluation (kNN "
                       "accuracy, linear probe) needs at least one test image.")
  if not len(dataset.train) and not allow_empty_train:
    raise DatasetError(f"{source}: the train split is empty; training needs at "
                       "least one train image.")
  if dataset.num_classes < 1 or (dataset.class_names and
                                 len(dataset.class_names) != dataset.num_classes):
    raise DatasetError(f"{source}: {dataset.num_classes} classes but "
                       f"{len(dataset.class_names)} class names.")
  _check_coarse_classes(dataset, source)
  for which, split in (("train", dataset.train), ("test", dataset.test)):
    _check_split(split, which, source, dataset)
  _check_two_classes(dataset, source)
  _check_coarse_hierarchy(dataset, source)
  if not len(dataset.train):
    return dataset
  if dataset.train.images.shape[1:] != dataset.test.images.shape[1:]:
    raise DatasetError(f"{source}: train images are {dataset.train.images.shape[1:]} "
                       f"but test images are {dataset.test.images.shape[1:]}; both "
                       "splits need one image size.")
  warn_unseen_test_classes(dataset.train.labels, dataset.test.labels,
                           dataset.class_names, source)
  return dataset
