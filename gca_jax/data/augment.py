"""On-device image augmentation in JAX: SimCLR views and extreme variants.

Every random op is a pure function of ``(key, image)`` for one float32 image
(H, W, C) in [0, 1], vmapped over a batch with one PRNG key per example and
jit-compiled, so augmentation runs on the accelerator next to the model.
Each op draws all its randomness as one vector of U(0, 1) samples from its
key (``*_NOISE`` sizes), which keeps the compiled graph small: one PRNG call
per op instead of one per random quantity. Parameters follow torchvision's
transforms as used by SimCLR code for CIFAR
and ImageNet (the reference pipeline of the paper); deviations are noted in
each docstring.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

POLICIES = ("simclr", "large_erase", "brightness", "strong_crop")

SIMCLR_CROP_SCALE = (0.08, 1.0)
CROP_RATIO = (3.0 / 4.0, 4.0 / 3.0)
SIMCLR_JITTER = (0.4, 0.4, 0.4, 0.1)  # brightness, contrast, saturation, hue
JITTER_PROB = 0.8
GRAYSCALE_PROB = 0.2
FLIP_PROB = 0.5
BLUR_PROB = 0.5
BLUR_SIGMA = (0.1, 2.0)
BLUR_MIN_SIZE = 96
"""Gaussian blur is applied only to views at least this large: SimCLR blurs
ImageNet-size images and leaves it out for CIFAR (32x32), as does the
paper's code."""

STRONG_CROP_SCALE = (0.02, 0.1)
"""Crop area range of "strong crop" at severity 5. Our choice: the severity-5
end of a scale ladder from SimCLR's (0.08, 1) down to at most a tenth of the
image, so views rarely share content."""
LARGE_ERASE_SCALE = (0.25, 0.5)
"""Erased area range of "large erase". Our choice: torchvision's
RandomErasing (p=1, ratio (0.3, 3.3), value 0 after normalisation, i.e. the
mean colour) with its default (0.02, 0.33) area range moved up so a quarter
to a half of every view is erased."""
BRIGHTNESS_SHIFTS = (0.1, 0.2, 0.3, 0.4, 0.5)
"""ImageNet-C brightness: HSV value += shift[severity - 1], clipped."""

_LUMA = (0.299, 0.587, 0.114)  # ITU-R 601-2, as torchvision's rgb_to_grayscale.


def _check_uint8(images, name: str, ndim: int | None = None) -> None:
  """A TypeError/ValueError unless ``images`` is uint8 (of rank ``ndim``):
  float images in [0, 1] would otherwise be read as near-black."""
  if images.dtype != jnp.uint8:
    raise TypeError(f"{name} must be uint8 in [0, 255], got dtype {images.dtype}.")
  if ndim is not None and images.ndim != ndim:
    raise ValueError(f"{name} must have rank {ndim} (N, H, W, C), got shape "
                     f"{images.shape}.")


def _check_stats(mean, std, channels: int) -> None:
  """``mean``/``std`` of one value per channel, std > 0 (when concrete)."""
  for name, values in (("mean", mean), ("std", std)):
    try:
      values = np.asarray(values, np.float64)
    except (TypeError, jax.errors.TracerArrayConversionError):
      return  # traced statistics are the caller's to check
    if values.shape not in ((), (channels,)) or not np.isfinite(values).all() or (
        name == "std" and (values <= 0).any()):
      raise ValueError(f"{name} must be {channels} finite values (one per channel)"
                       f"{', all > 0' if name == 'std' else ''}; got {values.tolist()}.")


def normalize(images_uint8: jax.Array, mean: Sequence[float],
              std: Sequence[float]) -> jax.Array:
  """float32 ``(x / 255 - mean) / std`` per channel; the eval transform."""
  images_uint8 = jnp.asarray(images_uint8)
  _check_uint8(images_uint8, "images_uint8")
  _check_stats(mean, std, images_uint8.shape[-1])
  images = images_uint8.astype(jnp.float32) / 255.0
  return (images - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)


def grayscale(image: jax.Array) -> jax.Array:
  """Luma of an RGB image in [0, 1], replicated to 3 channels."""
  luma = image @ jnp.asarray(_LUMA, image.dtype)
  return jnp.repeat(luma[..., None], 3, axis=-1)


def rgb_to_hsv(image: jax.Array) -> jax.Array:
  """RGB in [0, 1] to HSV in [0, 1] (hue as a fraction of a turn)."""
  r, g, b = image[..., 0], image[..., 1], image[..., 2]
  maxc, minc = jnp.max(image, axis=-1), jnp.min(image, axis=-1)
  flat = maxc == minc
  chroma = maxc - minc
  s = chroma / jnp.where(flat, 1.0, maxc)
  divisor = jnp.where(flat, 1.0, chroma)
  rc, gc, bc = (maxc - r) / divisor, (maxc - g) / divisor, (maxc - b) / divisor
  h = jnp.where(maxc == r, bc - gc,
                jnp.where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc))
  h = jnp.where(flat, 0.0, (h / 6.0) % 1.0)
  return jnp.stack([h, s, maxc], axis=-1)


def hsv_to_rgb(image: jax.Array) -> jax.Array:
  """Inverse of ``rgb_to_hsv``, in closed form (no table lookup)."""
  h, s, v = image[..., 0:1], image[..., 1:2], image[..., 2:3]
  k = (jnp.asarray([5.0, 3.0, 1.0]) + 6.0 * h) % 6.0  # R, G, B
  return v - v * s * jnp.clip(jnp.minimum(k, 4.0 - k), 0.0, 1.0)


def adjust_brightness(image: jax.Array, factor) -> jax.Array:
  """Scales intensities by ``factor`` (torchvision ``adjust_brightness``)."""
  return jnp.clip(image * factor, 0.0, 1.0)


def adjust_contrast(image: jax.Array, factor) -> jax.Array:
  """Blends with the mean grey level (torchvision ``adjust_contrast``)."""
  mean = jnp.mean(grayscale(image)[..., 0])
  return jnp.clip(factor * image + (1.0 - factor) * mean, 0.0, 1.0)


def adjust_saturation(image: jax.Array, factor) -> jax.Array:
  """Blends with the grayscale image (torchvision ``adjust_saturation``)."""
  return jnp.clip(factor * image + (1.0 - factor) * grayscale(image), 0.0, 1.0)


def adjust_hue(image: jax.Array, shift) -> jax.Array:
  """Rotates hue by ``shift`` turns, ``shift`` in [-0.5, 0.5]."""
  hsv = rgb_to_hsv(image)
  hsv = hsv.at[..., 0].set((hsv[..., 0] + shift) % 1.0)
  return hsv_to_rgb(hsv)


def _noise(key: jax.Array, size: int) -> jax.Array:
  # float32 whatever jax_enable_x64 says: the views keep the images' dtype.
  return jax.random.uniform(key, (size,), jnp.float32)


def _randint(u: jax.Array, low, high) -> jax.Array:
  """Integer uniform on [low, high) from a U(0, 1) sample."""
  return jnp.minimum(low + jnp.floor(u * (high - low)).astype(jnp.int32), high - 1)


def _uniform(u: jax.Array, low: float, high: float) -> jax.Array:
  return low + (high - low) * u


# Number of U(0, 1) draws each op consumes.
FLIP_NOISE = 1
CROP_ATTEMPTS = 10
CROP_NOISE = 2 * CROP_ATTEMPTS + 2
JITTER_NOISE = 9  # apply, 4 factors, 4 for the order
GRAYSCALE_NOISE = 1
BLUR_NOISE = 2
ERASE_NOISE = CROP_NOISE
VIEW_NOISE = CROP_NOISE + FLIP_NOISE + JITTER_NOISE + GRAYSCALE_NOISE + BLUR_NOISE


def _flip(u, image, p):
  return jnp.where(u[0] < p, image[:, ::-1], image)


def random_flip(key: jax.Array, image: jax.Array, p: float = FLIP_PROB) -> jax.Array:
  """Mirrors the image left-right with probability ``p``."""
  return _flip(_noise(key, FLIP_NOISE), image, p)


def _boxes(u, height: int, width: int, scale, ratio):
  """CROP_ATTEMPTS candidate (h, w) from U(scale) areas and log-uniform ratios."""
  n = CROP_ATTEMPTS
  area = height * width * _uniform(u[:n], *scale)
  aspect = jnp.exp(_uniform(u[n:2 * n], math.log(ratio[0]), math.log(ratio[1])))
  return (jnp.round(jnp.sqrt(area / aspect)).astype(jnp.int32),
          jnp.round(jnp.sqrt(area * aspect)).astype(jnp.int32))


def _crop_box(u, height: int, width: int, scale, ratio):
  h, w = _boxes(u, height, width, scale, ratio)
  fits = (w > 0) & (h > 0) & (w <= width) & (h <= height)
  first = jnp.argmax(fits)
  # Static fallback: the whole image, trimmed to the allowed aspect range.
  in_ratio = width / height
  if in_ratio < ratio[0]:
    fallback_w, fallback_h = width, round(width / ratio[0])
  elif in_ratio > ratio[1]:
    fallback_w, fallback_h = round(height * ratio[1]), height
  else:
    fallback_w, fallback_h = width, height
  any_fits = jnp.any(fits)
  h = jnp.where(any_fits, h[first], fallback_h)
  w = jnp.where(any_fits, w[first], fallback_w)
  top = jnp.where(any_fits, _randint(u[-2], 0, height - h + 1), (height - h) // 2)
  left = jnp.where(any_fits, _randint(u[-1], 0, width - w + 1), (width - w) // 2)
  return jnp.stack([top, left, h, w])


def sample_crop_box(key: jax.Array, height: int, width: int, *,
                    scale: Sequence[float], ratio: Sequence[float] = CROP_RATIO
                    ) -> jax.Array:
  """An integer crop box ``[top, left, h, w]`` as torchvision's RandomResizedCrop.

  Draws 10 (area fraction ~ U(scale), log aspect ~ U(log ratio)) candidates
  and keeps the first that fits; if none does, falls back to the largest
  centred box whose aspect ratio lies within ``ratio``.
  """
  return _crop_box(_noise(key, CROP_NOISE), height, width, scale, ratio)


def crop_and_resize(image: jax.Array, box: jax.Array, out_size: int) -> jax.Array:
  """Resamples the pixel box ``[top, left, h, w]`` to ``out_size`` square.

  Bilinear with antialiasing when shrinking (like torchvision's resize), via
  ``jax.image.scale_and_translate`` so box size can be traced.
  """
  box = box.astype(jnp.float32)
  scale = out_size / box[2:]
  return jax.image.scale_and_translate(
      image, (out_size, out_size, image.shape[-1]), (0, 1), scale,
      -box[:2] * scale, method="linear", antialias=True)


def _resized_crop(u, image, out_size, scale, ratio):
  box = _crop_box(u, image.shape[0], image.shape[1], scale, ratio)
  return crop_and_resize(image, box, out_size)


def random_resized_crop(key: jax.Array, image: jax.Array, out_size: int, *,
                        scale: Sequence[float] = SIMCLR_CROP_SCALE,
                        ratio: Sequence[float] = CROP_RATIO) -> jax.Array:
  """torchvision's RandomResizedCrop(out_size, scale, ratio), bilinear."""
  return _resized_crop(_noise(key, CROP_NOISE), image, out_size, scale, ratio)


def _jitter(u, image, brightness, contrast, saturation, hue):
  def factor(v, x):
    return _uniform(v, max(0.0, 1.0 - x), 1.0 + x)

  b, c, s = factor(u[0], brightness), factor(u[1], contrast), factor(u[2], saturation)
  h = _uniform(u[3], -hue, hue)
  ops = (lambda x: adjust_brightness(x, b), lambda x: adjust_contrast(x, c),
         lambda x: adjust_saturation(x, s), lambda x: adjust_hue(x, h))
  order = jnp.argsort(u[4:8])  # a uniformly random permutation
  # Each op keeps the image's dtype (with jax_enable_x64 a Python float
  # constant would otherwise promote some of them to float64).
  ops = tuple(lambda x, op=op: op(x).astype(x.dtype) for op in ops)
  return jax.lax.fori_loop(
      0, len(ops), lambda i, x: jax.lax.switch(order[i], ops, x), image)


def color_jitter(key: jax.Array, image: jax.Array, brightness: float,
                 contrast: float, saturation: float, hue: float) -> jax.Array:
  """torchvision's ColorJitter: the four adjustments in a random order.

  Factors are drawn from U[max(0, 1 - x), 1 + x] (hue shift from U[-hue,
  hue]) and the order from a random permutation, as torchvision does per call.
  """
  u = _noise(key, JITTER_NOISE)
  return _jitter(u[1:], image, brightness, contrast, saturation, hue)


def _random_jitter(u, image, p, strength):
  return jnp.where(u[0] < p, _jitter(u[1:], image, *strength), image)


def random_color_jitter(key: jax.Array, image: jax.Array, p: float = JITTER_PROB,
                        strength: Sequence[float] = SIMCLR_JITTER) -> jax.Array:
  """``color_jitter`` with probability ``p`` (SimCLR: RandomApply, p=0.8)."""
  return _random_jitter(_noise(key, JITTER_NOISE), image, p, strength)


def _grayscale(u, image, p):
  return jnp.where(u[0] < p, grayscale(image), image)


def random_grayscale(key: jax.Array, image: jax.Array,
                     p: float = GRAYSCALE_PROB) -> jax.Array:
  """``grayscale`` with probability ``p`` (SimCLR: RandomGrayscale, p=0.2)."""
  return _grayscale(_noise(key, GRAYSCALE_NOISE), image, p)


def blur_kernel_size(image_size: int) -> int:
  """SimCLR's blur kernel: 10% of the image side, made odd (23 for 224)."""
  size = int(0.1 * image_size)
  return size + 1 - size % 2


def gaussian_blur(image: jax.Array, sigma, kernel_size: int) -> jax.Array:
  """Separable Gaussian blur with reflect padding (torchvision GaussianBlur)."""
  radius = kernel_size // 2
  offsets = jnp.arange(-radius, radius + 1, dtype=jnp.float32)
  weights = jnp.exp(-0.5 * (offsets / sigma) ** 2)
  weights = weights / jnp.sum(weights)
  height, width = image.shape[:2]
  padded = jnp.pad(image, ((radius, radius), (radius, radius), (0, 0)),
                   mode="reflect")
  rows = sum(weights[i] * padded[i:i + height] for i in range(kernel_size))
  return sum(weights[i] * rows[:, i:i + width] for i in range(kernel_size))


def _blur(u, image, p, sigma_range):
  sigma = _uniform(u[1], *sigma_range)
  blurred = gaussian_blur(image, sigma, blur_kernel_size(image.shape[0]))
  return jnp.where(u[0] < p, blurred, image)


def random_gaussian_blur(key: jax.Array, image: jax.Array, p: float = BLUR_PROB,
                         sigma_range: Sequence[float] = BLUR_SIGMA) -> jax.Array:
  """SimCLR's blur: with probability ``p``, sigma ~ U(0.1, 2), kernel 10% of side."""
  return _blur(_noise(key, BLUR_NOISE), image, p, sigma_range)


def brightness_corruption(image: jax.Array, severity: int = 5) -> jax.Array:
  """ImageNet-C "brightness": adds ``BRIGHTNESS_SHIFTS[severity-1]`` to HSV value."""
  hsv = rgb_to_hsv(image)
  shift = BRIGHTNESS_SHIFTS[severity - 1]
  hsv = hsv.at[..., 2].set(jnp.clip(hsv[..., 2] + shift, 0.0, 1.0))
  return hsv_to_rgb(hsv)


def _erase(u, image, scale, ratio, value):
  height, width = image.shape[:2]
  h, w = _boxes(u, height, width, scale, ratio)
  fits = (h < height) & (w < width) & (h > 0) & (w > 0)
  first = jnp.argmax(fits)
  h, w = jnp.where(fits[first], h[first], 0), jnp.where(fits[first], w[first], 0)
  top = _randint(u[-2], 0, height - h + 1)
  left = _randint(u[-1], 0, width - w + 1)
  rows, cols = jnp.arange(height)[:, None], jnp.arange(width)[None, :]
  inside = (rows >= top) & (rows < top + h) & (cols >= left) & (cols < left + w)
  return jnp.where(inside[..., None], value, image)


def random_erase(key: jax.Array, image: jax.Array, *,
                 scale: Sequence[float] = LARGE_ERASE_SCALE,
                 ratio: Sequence[float] = (0.3, 3.3), value: float = 0.0
                 ) -> jax.Array:
  """torchvision's RandomErasing with p=1: fills one random box with ``value``.

  Up to 10 (area ~ U(scale), log aspect ~ U(log ratio)) boxes are drawn and
  the first that fits strictly inside is erased; if none fits the image is
  returned unchanged, as in torchvision.
  """
  return _erase(_noise(key, ERASE_NOISE), image, scale, ratio, value)


def _view(u, image, out_size, crop_scale, blur):
  """``simclr_view`` from VIEW_NOISE uniform draws."""
  splits = np.cumsum([CROP_NOISE, FLIP_NOISE, JITTER_NOISE, GRAYSCALE_NOISE])
  u_crop, u_flip, u_jitter, u_gray, u_blur = jnp.split(u, splits)
  view = _resized_crop(u_crop, image, out_size, crop_scale, CROP_RATIO)
  view = _flip(u_flip, view, FLIP_PROB)
  view = _random_jitter(u_jitter, view, JITTER_PROB, SIMCLR_JITTER)
  view = _grayscale(u_gray, view, GRAYSCALE_PROB)
  if blur:
    view = _blur(u_blur, view, BLUR_PROB, BLUR_SIGMA)
  return view


def simclr_view(key: jax.Array, image: jax.Array, out_size: int, *,
                crop_scale: Sequence[float] = SIMCLR_CROP_SCALE,
                blur: bool = False) -> jax.Array:
  """One SimCLR view of a float image in [0, 1], before normalisation.

  RandomResizedCrop(out_size, crop_scale, ratio (3/4, 4/3)) -> horizontal
  flip (p=0.5) -> ColorJitter(0.4, 0.4, 0.4, 0.1) with p=0.8 -> grayscale
  (p=0.2) -> optional Gaussian blur (p=0.5), in the order of SimCLR's code.
  """
  return _view(_noise(key, VIEW_NOISE), image, out_size, crop_scale, blur)


def _check_policy(policy: str) -> None:
  if policy not in POLICIES:
    raise ValueError(f"Unknown augmentation policy={policy!r}; allowed values "
                     f"of `policy` are {POLICIES}.")


def augment_view(key: jax.Array, image_uint8: jax.Array, *, policy: str,
                 mean, std, out_size: int, blur: bool) -> jax.Array:
  """One normalised float32 view of one uint8 image under ``policy``.

  "simclr": ``simclr_view``. "strong_crop": the same with crop area in
  ``STRONG_CROP_SCALE``. "brightness": a SimCLR view then ImageNet-C
  brightness at severity 5. "large_erase": a SimCLR view, normalised, then
  ``random_erase`` over ``LARGE_ERASE_SCALE`` filled with 0 (the mean colour).
  """
  _check_policy(policy)
  u = _noise(key, VIEW_NOISE + ERASE_NOISE)  # one PRNG call per view
  image = image_uint8.astype(jnp.float32) / 255.0
  crop_scale = STRONG_CROP_SCALE if policy == "strong_crop" else SIMCLR_CROP_SCALE
  view = _view(u[:VIEW_NOISE], image, out_size, crop_scale, blur)
  if policy == "brightness":
    view = brightness_corruption(view, severity=5)
  view = (view - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)
  if policy == "large_erase":
    view = _erase(u[VIEW_NOISE:], view, LARGE_ERASE_SCALE, (0.3, 3.3), 0.0)
  return view.astype(jnp.float32)  # float32 with jax_enable_x64 too


@functools.partial(jax.jit, static_argnames=("policy", "out_size", "blur"))
def augment_batch(key: jax.Array, images_uint8: jax.Array, *,
                  policy: str = "simclr", mean, std, out_size: int | None = None,
                  blur: bool | None = None) -> jax.Array:
  """One view of every image of a uint8 (N, H, W, C) batch; float32 normalised.

  Each image gets its own key from ``jax.random.split(key, N)``. ``out_size``
  defaults to the input height; ``blur`` defaults to ``out_size >=
  BLUR_MIN_SIZE`` (ImageNet-size views only, as in SimCLR).
  """
  _check_policy(policy)
  _check_uint8(images_uint8, "images_uint8", ndim=4)
  _check_stats(mean, std, images_uint8.shape[-1])
  if out_size is not None and (isinstance(out_size, bool) or not isinstance(
      out_size, (int, np.integer)) or out_size < 1):
    raise ValueError(f"out_size must be a positive integer or None, got {out_size!r}.")
  out_size = out_size or images_uint8.shape[1]
  blur = out_size >= BLUR_MIN_SIZE if blur is None else blur
  keys = jax.random.split(key, images_uint8.shape[0])
  view = functools.partial(augment_view, policy=policy, mean=mean, std=std,
                           out_size=out_size, blur=blur)
  return jax.vmap(view)(keys, images_uint8)


def two_views(key: jax.Array, images_uint8: jax.Array, *, policy: str = "simclr",
              mean, std, out_size: int | None = None, blur: bool | None = None
              ) -> tuple[jax.Array, jax.Array]:
  """Two independent augmented views of a uint8 (N, H, W, C) batch.

  Returns float32 (N, out_size, out_size, C) arrays normalised with
  ``mean``/``std``; the positive pair of example i is (view1[i], view2[i]).
  ``policy`` is one of ``POLICIES`` (see ``augment_view``). Jit-compatible.
  """
  _check_policy(policy)
  _check_uint8(images_uint8, "images_uint8", ndim=4)
  _check_stats(mean, std, images_uint8.shape[-1])  # concrete here, traced in augment_batch
  key1, key2 = jax.random.split(key)
  kwargs = {"policy": policy, "mean": tuple(mean), "std": tuple(std),
            "out_size": out_size, "blur": blur}
  return augment_batch(key1, images_uint8, **kwargs), augment_batch(
      key2, images_uint8, **kwargs)
