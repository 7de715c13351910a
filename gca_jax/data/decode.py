"""Host-side image decoding with Pillow (no TensorFlow)."""

from __future__ import annotations

import contextlib
import io
import os

import numpy as np
from PIL import Image, UnidentifiedImageError

from gca_jax.data.base import DatasetError


def resize_center_crop(image: Image.Image, size: int) -> Image.Image:
  """Resizes the shorter side to ``size`` (bicubic) and crops the centre square.

  This is the host stage for large images: it gives every image one fixed
  shape so batches can be stacked, and leaves random cropping to the device
  (for evaluation, `gca_jax.evaluation.preprocess_for_eval` then centre-crops
  ``image_size``, e.g. 224 of 256: the standard evaluation transform).

  Known difference from SimCLR: only the central square is kept, also for
  training, so the device's RandomResizedCrop draws its crops from that
  square and never sees the sides of a non-square image (a quarter of a 4:3
  photo). SimCLR crops from the whole image.
  """
  width, height = image.size
  scale = size / min(width, height)
  new_w, new_h = max(size, round(width * scale)), max(size, round(height * scale))
  if (new_w, new_h) != (width, height):
    image = image.resize((new_w, new_h), Image.BICUBIC)
  left, top = (new_w - size) // 2, (new_h - size) // 2
  return image.crop((left, top, left + size, top + size))


SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")
"""Pillow modes of 16-bit single-channel images (e.g. 16-bit grey PNGs)."""


def to_8bit(image: Image.Image, what: str) -> Image.Image:
  """``image`` with 8-bit samples: 16-bit grey is scaled, never clipped.

  A 16-bit sample ``v`` in [0, 65535] becomes its high byte ``v >> 8``
  (0 -> 0, 32768 -> 128, 65535 -> 255): the reduction Pillow applies to
  16-bit colour PNGs (libpng's ``strip_16``), so a 16-bit grey image and its
  16-bit RGB copy give the same 8-bit image, each within one level of the
  exact ``v * 255 / 65535``. (Pillow's own ``convert`` would clip 16-bit grey
  at 255, turning mid-grey white.) Pillow opens 16-bit grey PNGs as
  ``I;16`` (mode ``I`` before Pillow 11). 32-bit integer or float images
  (mode ``I`` from other formats, ``F``) have no fixed range and raise
  ``DatasetError`` naming ``what``. 8-bit and lower-depth modes pass
  through.
  """
  sixteen_bit = image.mode in SIXTEEN_BIT_MODES or (
      image.mode == "I" and image.format == "PNG")
  if sixteen_bit:
    values = np.asarray(image).astype(np.int64)
    if values.size and (values.min() < 0 or values.max() > 65535):
      raise DatasetError(f"{what} has 16-bit samples outside [0, 65535]; the "
                         "file is corrupt: delete or replace it.")
    return Image.fromarray((values >> 8).astype(np.uint8))
  if image.mode in ("I", "F") or image.mode.startswith(("I;", "F;")):
    raise DatasetError(
        f"{what} has {'float' if image.mode.startswith('F') else '32-bit integer'} "
        f"samples (Pillow mode {image.mode}), which have no fixed range; save it "
        "as an 8- or 16-bit image.")
  return image


@contextlib.contextmanager
def _named_errors(what: str):
  """Turns Pillow's errors while reading ``what`` into one-line ``DatasetError``s.

  Pillow refuses an image of more than ``2 * Image.MAX_IMAGE_PIXELS`` pixels
  (``DecompressionBombError``, a guard against small files that decode to
  gigabytes); it is not an ``OSError`` and its message names no file.
  """
  try:
    yield
  except Image.DecompressionBombError as e:
    raise DatasetError(
        f"Cannot decode {what}: {e} Pillow refuses to decode an image this "
        "large; shrink it or delete it and try again.") from e
  except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
    raise DatasetError(
        f"Cannot decode {what}: {e}. The file is corrupt or not an image; "
        "delete or replace it and try again.") from e


def decode_image(data: bytes | str | os.PathLike, *, size: int | None = None,
                 what: str | None = None) -> np.ndarray:
  """Decodes encoded bytes or an image file to uint8 RGB (H, W, 3).

  16-bit images are reduced to 8 bits by scaling (``to_8bit``); grey is
  replicated to RGB and an alpha channel is dropped. With ``size``, the
  image is also resized and centre-cropped to a square by
  ``resize_center_crop``. An unreadable image raises ``DatasetError``
  naming ``what`` (the file or record), so one bad file is easy to find and
  remove.
  """
  source = io.BytesIO(data) if isinstance(data, (bytes, bytearray, memoryview)) else data
  what = what or (str(data) if isinstance(data, (str, os.PathLike)) else "image bytes")
  with _named_errors(what), Image.open(source) as image:
    image = to_8bit(image, what).convert("RGB")
    if size is not None:
      image = resize_center_crop(image, size)
    return np.asarray(image, np.uint8)


def resize_images(images: np.ndarray, size: int) -> np.ndarray:
  """uint8 (N, H, W, 3) ``images`` resized and centre-cropped to ``size`` square.

  Each image goes through ``resize_center_crop``, as files of image folders
  do, so an array source and a folder of the same images give the same
  pixels; images already ``size`` square are returned as they are.
  """
  if images.shape[1:3] == (size, size):
    return images

  def resize_one(i):
    return np.asarray(resize_center_crop(Image.fromarray(images[i]), size), np.uint8)

  return decode_all(resize_one, len(images), (size, size, 3))


def image_size(path: str | os.PathLike) -> tuple[int, int]:
  """(width, height) of the image file at ``path``, read from its header only."""
  with _named_errors(str(path)), Image.open(path) as image:
    return image.size


def decode_all(decode_one, count: int, image_shape, *, threads: int | None = None
               ) -> np.ndarray:
  """Stacks ``decode_one(i)`` for ``i < count`` into a uint8 array.

  Pillow releases the GIL while decoding, so a thread pool (``threads``,
  default up to 8) gives a near-linear speed-up; order is preserved.
  """
  from concurrent.futures import ThreadPoolExecutor  # pylint: disable=g-import-not-at-top
  out = np.empty((count, *image_shape), np.uint8)

  def fill(i):
    image = decode_one(i)
    if image.shape != out.shape[1:]:  # callers name the file; this is a backstop
      raise DatasetError(f"Image {i} has shape {image.shape}, expected "
                         f"{out.shape[1:]}; all images must share one size.")
    out[i] = image

  with ThreadPoolExecutor(threads or min(8, os.cpu_count() or 1)) as pool:
    for _ in pool.map(fill, range(count)):
      pass
  return out
