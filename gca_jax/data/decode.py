"""Host-side image decoding with Pillow (no TensorFlow)."""

from __future__ import annotations

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


def decode_image(data: bytes | str | os.PathLike, *, size: int | None = None,
                 what: str | None = None) -> np.ndarray:
  """Decodes encoded bytes or an image file to uint8 RGB (H, W, 3).

  With ``size``, the image is also resized and centre-cropped to a square by
  ``resize_center_crop``. An unreadable image raises ``DatasetError`` naming
  ``what`` (the file or record), so one bad file is easy to find and remove.
  """
  source = io.BytesIO(data) if isinstance(data, (bytes, bytearray, memoryview)) else data
  what = what or (str(data) if isinstance(data, (str, os.PathLike)) else "image bytes")
  try:
    with Image.open(source) as image:
      image = image.convert("RGB")
      if size is not None:
        image = resize_center_crop(image, size)
      return np.asarray(image, np.uint8)
  except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
    raise DatasetError(
        f"Cannot decode {what}: {e}. The file is corrupt or not an image; "
        "delete or replace it and try again.") from e


def decode_all(decode_one, count: int, image_shape, *, threads: int | None = None
               ) -> np.ndarray:
  """Stacks ``decode_one(i)`` for ``i < count`` into a uint8 array.

  Pillow releases the GIL while decoding, so a thread pool (``threads``,
  default up to 8) gives a near-linear speed-up; order is preserved.
  """
  from concurrent.futures import ThreadPoolExecutor  # pylint: disable=g-import-not-at-top
  out = np.empty((count, *image_shape), np.uint8)

  def fill(i):
    out[i] = decode_one(i)

  with ThreadPoolExecutor(threads or min(8, os.cpu_count() or 1)) as pool:
    for _ in pool.map(fill, range(count)):
      pass
  return out
