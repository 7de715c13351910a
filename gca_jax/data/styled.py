r"""Styled multi-domain datasets: every image rendered once in one of four styles.

A multi-domain benchmark such as PACS (photo, art painting, cartoon, sketch)
shows the same classes in visibly different renderings. ``styled:<name>``
builds one from any in-memory dataset (``styled:digits``, or CIFAR-10 from
its JPEG archive as ``styled:npz:<path>``): when the dataset is built, each
image is assigned one of four styles (a balanced, seeded assignment per
split) and rendered in it once, so the style is a property of the image (its
*domain*, carried in ``ImageArrays.domains`` and named by
``Dataset.domain_names``), not an augmentation. The styles change
appearance, not content, and act per image on uint8 (N, H, W, 3):

* ``photo``: the image itself.
* ``sketch``: a grey-scale edge drawing: the Sobel gradient magnitude of the
  luminance ``Y = 0.299 R + 0.587 G + 0.114 B``, normalised by its per-image
  maximum ``m``, drawn dark on white: ``255 (1 - min(|grad Y| / (SKETCH_GAIN m), 1))``.
* ``cartoon``: flat colours with outlines: a 3x3 box blur, saturation
  scaled by ``CARTOON_SATURATION`` about the luminance, each channel
  posterised to ``CARTOON_LEVELS`` levels, and black outlines where the
  blurred image's edge magnitude exceeds ``CARTOON_OUTLINE`` of its maximum.
* ``painting``: a strong colour shift: the channels rotated (R, G, B) ->
  (G, B, R), blended with a warm ochre ``PAINTING_TINT`` at weight
  ``PAINTING_TINT_WEIGHT``, over a 3x3 box blur (the brush).

The styles are deterministic functions of the pixels (no randomness); only
the assignment of styles to images depends on the seed.

Example:
  >>> import numpy as np
  >>> from gca_jax.data import styled
  >>> images = np.random.default_rng(0).integers(0, 256, (4, 8, 8, 3), dtype=np.uint8)
  >>> sketch = styled.render(images, "sketch")
  >>> sketch.shape, sketch.dtype, bool((sketch[..., 0] == sketch[..., 2]).all())
  ((4, 8, 8, 3), dtype('uint8'), True)
  >>> styled.assign_domains(8, seed=0).tolist()  # two images per style
  [2, 0, 3, 2, 1, 0, 1, 3]
"""

from __future__ import annotations

import numpy as np

from gca_jax.data.base import Dataset, DatasetError, ImageArrays, channel_stats, check_dataset

PREFIX = "styled:"
STYLES = ("photo", "sketch", "cartoon", "painting")
SKETCH_GAIN = 0.5
CARTOON_SATURATION = 1.8
CARTOON_LEVELS = 4
CARTOON_OUTLINE = 0.6
PAINTING_TINT = (225.0, 150.0, 60.0)
PAINTING_TINT_WEIGHT = 0.45
LUMA = np.array([0.299, 0.587, 0.114], np.float32)
# Images rendered per numpy pass: bounds the float32 temporaries' memory.
CHUNK = 4096


def _box_blur(x: np.ndarray) -> np.ndarray:
  """3x3 mean over each pixel's neighbourhood (edges replicated); x: (N, H, W, C)."""
  p = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
  h, w = x.shape[1:3]
  return sum(p[:, i:i + h, j:j + w] for i in range(3) for j in range(3)) / 9.0


def _edge_magnitude(grey: np.ndarray) -> np.ndarray:
  """Sobel gradient magnitude of (N, H, W) images (edges replicated)."""
  p = np.pad(grey, ((0, 0), (1, 1), (1, 1)), mode="edge")
  h, w = grey.shape[1:3]

  def at(i, j):
    return p[:, i:i + h, j:j + w]
  gx = (at(0, 2) + 2 * at(1, 2) + at(2, 2)) - (at(0, 0) + 2 * at(1, 0) + at(2, 0))
  gy = (at(2, 0) + 2 * at(2, 1) + at(2, 2)) - (at(0, 0) + 2 * at(0, 1) + at(0, 2))
  return np.hypot(gx, gy)


def _per_image_max(x: np.ndarray) -> np.ndarray:
  return np.maximum(x.reshape(len(x), -1).max(axis=1), 1e-6)[:, None, None]


def _photo(x: np.ndarray) -> np.ndarray:
  return x


def _sketch(x: np.ndarray) -> np.ndarray:
  edges = _edge_magnitude(x @ LUMA)
  lines = np.minimum(edges / (SKETCH_GAIN * _per_image_max(edges)), 1.0)
  return np.repeat((255.0 * (1.0 - lines))[..., None], 3, axis=-1)


def _cartoon(x: np.ndarray) -> np.ndarray:
  smooth = _box_blur(x)
  grey = (smooth @ LUMA)[..., None]
  vivid = np.clip(grey + CARTOON_SATURATION * (smooth - grey), 0.0, 255.0)
  step = 255.0 / (CARTOON_LEVELS - 1)
  flat = np.round(vivid / step) * step
  edges = _edge_magnitude(grey[..., 0])
  outline = edges > CARTOON_OUTLINE * _per_image_max(edges)
  return np.where(outline[..., None], 0.0, flat)


def _painting(x: np.ndarray) -> np.ndarray:
  rotated = _box_blur(x)[..., [1, 2, 0]]
  tint = np.asarray(PAINTING_TINT, np.float32)
  return (1.0 - PAINTING_TINT_WEIGHT) * rotated + PAINTING_TINT_WEIGHT * tint


_RENDERERS = {"photo": _photo, "sketch": _sketch, "cartoon": _cartoon,
              "painting": _painting}


def render(images: np.ndarray, style: str) -> np.ndarray:
  """``images`` (uint8 (N, H, W, 3)) rendered in ``style`` (one of `STYLES`),
  uint8 of the same shape."""
  if style not in _RENDERERS:
    raise DatasetError(f"Unknown style {style!r}; choose one of {STYLES}.")
  images = np.asarray(images)
  if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
    raise DatasetError(f"styles render uint8 (N, H, W, 3) images, got {images.dtype} "
                       f"{images.shape}.")
  out = np.empty_like(images)
  for start in range(0, len(images), CHUNK):
    chunk = images[start:start + CHUNK].astype(np.float32)
    out[start:start + CHUNK] = np.clip(np.round(_RENDERERS[style](chunk)), 0, 255)
  return out


def assign_domains(count: int, *, seed: int) -> np.ndarray:
  """A balanced, seeded style id (index of `STYLES`) for each of ``count``
  images: a permutation of ``0, 1, 2, 3, 0, 1, ...``."""
  ids = np.arange(count, dtype=np.int32) % len(STYLES)
  return np.random.default_rng(seed).permutation(ids).astype(np.int32)


def stylise_split(split: ImageArrays, *, seed: int) -> ImageArrays:
  """``split`` with each image rendered in its assigned style, and the style
  ids as its ``domains``."""
  if not split.in_memory:
    raise DatasetError("styled datasets are built in memory; the source's images are "
                       "decoded lazily (a large-image source): use an in-memory one "
                       "(digits, a .npz archive, the tfds catalog).")
  domains = assign_domains(len(split), seed=seed)
  images = np.array(split.images, copy=True)
  for style_id, style in enumerate(STYLES):
    chosen = np.flatnonzero(domains == style_id)
    if len(chosen):
      images[chosen] = render(images[chosen], style)
  return split._replace(images=images, domains=domains)


def stylise(dataset: Dataset, *, seed: int = 0) -> Dataset:
  """``dataset`` as a four-domain dataset (see the module doc): train and test
  images styled (assignments seeded by ``seed`` and ``seed + 1``), their
  style ids as ``domains``, ``STYLES`` as ``domain_names`` and the channel
  statistics recomputed on the styled train split."""
  if dataset.domain_names or dataset.train.domains is not None:
    raise DatasetError(f"{dataset.name} already has domains {dataset.domain_names}; "
                       "styled datasets are built from single-domain data.")
  train = stylise_split(dataset.train, seed=seed)
  test = stylise_split(dataset.test, seed=seed + 1)
  mean, std = channel_stats(train.images)
  name = PREFIX + dataset.name
  return check_dataset(dataset._replace(train=train, test=test, mean=mean, std=std,
                                        name=name, domain_names=STYLES), name)
