"""Containers shared by every data source, and the one error they raise."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np


class DatasetError(RuntimeError):
  """A dataset cannot be read; the message says what to do about it.

  Raised for a wrong path, a missing split, an unprepared or manual-download
  dataset and an undecodable image, so that users see one actionable message
  instead of a traceback from deep inside tensorflow-datasets or Pillow.
  """


class LazyImages:
  """A read-only uint8 ``(N, H, W, C)`` array whose images decode on access.

  Large-image sources (ImageNet-100, PACS, image folders) cannot be held in
  memory whole; this object behaves like the numpy array they would give
  (``len``, ``shape``, ``dtype``, integer / slice / index-array indexing,
  ``np.asarray``) and runs ``decode(i)`` only for the items asked for. Feed
  it through ``gca_jax.data.host_feed`` rather than onto the device. Keep
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
  """One split: ``images`` uint8 (N,H,W,C), ``labels`` int32 (N,), ``domains``.

  ``images`` is a numpy array for in-memory sources and a ``LazyImages`` for
  large-image ones. ``domains`` is an int32 (N,) array for multi-domain data
  (PACS) and ``None`` otherwise.
  """

  images: np.ndarray | LazyImages
  labels: np.ndarray
  domains: np.ndarray | None = None

  def __len__(self) -> int:  # pytype: disable=signature-mismatch
    return len(self.labels)

  @property
  def in_memory(self) -> bool:
    """Whether ``images`` is a plain numpy array (device-feedable)."""
    return isinstance(self.images, np.ndarray)

  def take(self, indices) -> "ImageArrays":
    """The examples at ``indices`` (kept lazy for lazy images)."""
    indices = np.asarray(indices)
    if self.in_memory:
      images = self.images[indices]
    else:
      images = LazyImages(functools.partial(_index_into, self.images, indices),
                          len(indices), self.images.shape[1:])
    domains = None if self.domains is None else self.domains[indices]
    return ImageArrays(images, self.labels[indices], domains)


class Dataset(NamedTuple):
  """A train/test pair with what training and evaluation need to know.

  ``mean``/``std`` are per-channel statistics of images scaled to [0, 1],
  used by ``augment.normalize``. ``class_names`` and ``domain_names`` index
  ``labels`` and ``domains``.
  """

  train: ImageArrays
  test: ImageArrays
  num_classes: int
  name: str
  mean: tuple[float, ...]
  std: tuple[float, ...]
  class_names: tuple[str, ...] = ()
  domain_names: tuple[str, ...] = ()

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


def as_rgb_uint8(images: np.ndarray) -> np.ndarray:
  """``images`` as uint8 (N,H,W,3): grey (N,H,W) or (N,H,W,1) is replicated."""
  images = np.asarray(images)
  if images.dtype != np.uint8:
    raise DatasetError(
        f"Expected uint8 images, got dtype {images.dtype}; convert them to "
        "uint8 in [0, 255] first.")
  if images.ndim == 3:
    images = images[..., None]
  if images.ndim != 4 or images.shape[-1] not in (1, 3):
    raise DatasetError(
        f"Expected images of shape (N, H, W[, 1 or 3]), got {images.shape}.")
  if images.shape[-1] == 1:
    images = np.repeat(images, 3, axis=-1)
  return images
