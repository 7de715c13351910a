"""On-device augmentation: shapes, ranges, exactness of simple cases, statistics."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gca_jax.data import augment

MEAN, STD = (0.5, 0.4, 0.3), (0.25, 0.2, 0.3)


def colourful_image(size: int = 16, seed: int = 0) -> jax.Array:
  """A float image in [0, 1] with distinct channels (so grayscale is visible)."""
  rng = np.random.default_rng(seed)
  return jnp.asarray(rng.uniform(0.05, 0.95, (size, size, 3)), jnp.float32)


def uint8_batch(n: int = 4, size: int = 16, seed: int = 0) -> np.ndarray:
  return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), np.uint8)


def keys(n: int, seed: int = 0) -> jax.Array:
  return jax.random.split(jax.random.key(seed), n)


RANDOM_OPS = {
    "flip": augment.random_flip,
    "crop": lambda k, x: augment.random_resized_crop(k, x, x.shape[0]),
    "jitter": lambda k, x: augment.color_jitter(k, x, *augment.SIMCLR_JITTER),
    "gray": lambda k, x: augment.random_grayscale(k, x, p=0.5),
    "blur": lambda k, x: augment.random_gaussian_blur(
        k, jnp.tile(x, (2, 2, 1)), p=1.0),  # 32x32: a 3x3 kernel
    "erase": augment.random_erase,
    "view": lambda k, x: augment.simclr_view(k, x, 16, blur=True),
}


class OpsTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_flip_is_a_flip(self):
    image = colourful_image()
    flipped = self.variant(lambda k, x: augment.random_flip(k, x, p=1.0))(
        jax.random.key(0), image)
    np.testing.assert_array_equal(flipped, image[:, ::-1])
    kept = self.variant(lambda k, x: augment.random_flip(k, x, p=0.0))(
        jax.random.key(0), image)
    np.testing.assert_array_equal(kept, image)

  @chex.variants(with_jit=True)
  def test_full_crop_is_identity(self):
    image = colourful_image()
    crop = self.variant(lambda k, x: augment.random_resized_crop(
        k, x, 16, scale=(1.0, 1.0), ratio=(1.0, 1.0)))
    np.testing.assert_allclose(crop(jax.random.key(3), image), image, atol=1e-6)

  @chex.variants(with_jit=True, without_jit=True)
  def test_crop_box_fits_and_respects_ranges(self):
    boxes = self.variant(jax.vmap(lambda k: augment.sample_crop_box(
        k, 20, 30, scale=augment.SIMCLR_CROP_SCALE)))(keys(200))
    top, left, h, w = np.asarray(boxes).T
    assert (top >= 0).all() and (left >= 0).all()
    assert (top + h <= 20).all() and (left + w <= 30).all() and (h > 0).all()
    area = h * w / 600
    assert area.min() >= 0.05 and area.max() <= 1.0 and np.median(area) > 0.3

  def test_hsv_round_trip_and_zero_jitter(self):
    image = colourful_image()
    np.testing.assert_allclose(augment.hsv_to_rgb(augment.rgb_to_hsv(image)), image,
                               atol=1e-5)
    same = jax.jit(augment.color_jitter, static_argnums=(2, 3, 4, 5))(
        jax.random.key(0), image, 0.0, 0.0, 0.0, 0.0)
    np.testing.assert_allclose(same, image, atol=1e-5)

  def test_grayscale_weights(self):
    gray = augment.grayscale(colourful_image())
    np.testing.assert_allclose(gray[..., 0], gray[..., 2])
    white = augment.grayscale(jnp.ones((2, 2, 3)))
    np.testing.assert_allclose(white, 1.0, atol=1e-6)

  def test_blur_preserves_constant_images_and_smooths(self):
    flat = jnp.full((16, 16, 3), 0.3)
    np.testing.assert_allclose(augment.gaussian_blur(flat, 1.5, 5), flat, atol=1e-6)
    image = colourful_image()
    assert augment.gaussian_blur(image, 2.0, 5).std() < image.std()
    assert augment.blur_kernel_size(224) == 23 and augment.blur_kernel_size(32) == 3

  def test_brightness_corruption_raises_value(self):
    image = colourful_image() * 0.4
    brighter = jax.jit(augment.brightness_corruption, static_argnums=1)(image, 5)
    hsv_before, hsv_after = augment.rgb_to_hsv(image), augment.rgb_to_hsv(brighter)
    np.testing.assert_allclose(hsv_after[..., 2], hsv_before[..., 2] + 0.5, atol=1e-5)

  def test_random_erase_fills_a_large_box(self):
    image = colourful_image(32) + 1.0  # no pixel is 0 before erasing
    erased = jax.jit(jax.vmap(augment.random_erase, in_axes=(0, None)))(keys(50), image)
    fractions = np.asarray((erased == 0.0).all(-1).mean((1, 2)))
    assert fractions.max() <= 0.5 + 0.05
    assert np.mean(fractions >= 0.2) > 0.8


@pytest.mark.parametrize("name", sorted(RANDOM_OPS))
def test_random_ops_depend_on_key_only(name):
  op = jax.jit(RANDOM_OPS[name])
  image = colourful_image()
  outputs = [np.asarray(op(k, image)) for k in keys(12)]
  np.testing.assert_array_equal(op(keys(12)[0], image), outputs[0])
  distinct = {o.tobytes() for o in outputs}
  binary = name in ("flip", "gray")  # two outcomes only
  assert len(distinct) == 2 if binary else len(distinct) >= 6, name


def test_jitter_and_grayscale_probabilities():
  image = colourful_image(8)
  n = 2000
  jittered = jax.jit(jax.vmap(augment.random_color_jitter, in_axes=(0, None)))(
      keys(n, 1), image)
  changed = np.asarray(jnp.abs(jittered - image).max((1, 2, 3)) > 1e-4)
  assert abs(changed.mean() - augment.JITTER_PROB) < 4 * np.sqrt(0.16 / n)
  grays = jax.jit(jax.vmap(augment.random_grayscale, in_axes=(0, None)))(
      keys(n, 2), image)
  is_gray = np.asarray(jnp.abs(grays[..., 0] - grays[..., 2]).max((1, 2)) < 1e-6)
  assert abs(is_gray.mean() - augment.GRAYSCALE_PROB) < 4 * np.sqrt(0.16 / n)
  flips = jax.jit(jax.vmap(augment.random_flip, in_axes=(0, None)))(keys(n, 3), image)
  flipped = np.asarray((flips == image[:, ::-1]).all((1, 2, 3)))
  assert abs(flipped.mean() - augment.FLIP_PROB) < 4 * np.sqrt(0.25 / n)


def test_jitter_factor_ranges():
  image = jnp.full((4, 4, 3), 0.5)
  bright = jax.jit(jax.vmap(
      lambda k: augment.color_jitter(k, image, 0.4, 0.0, 0.0, 0.0)))(keys(500))
  values = np.asarray(bright[:, 0, 0, 0])
  assert values.min() >= 0.5 * 0.6 - 1e-5 and values.max() <= 0.5 * 1.4 + 1e-5
  assert values.max() - values.min() > 0.3


@pytest.mark.parametrize("policy", augment.POLICIES)
def test_two_views_shapes_ranges_and_determinism(policy):
  images = uint8_batch()
  view1, view2 = augment.two_views(jax.random.key(0), images, policy=policy,
                                   mean=MEAN, std=STD)
  chex.assert_shape([view1, view2], (4, 16, 16, 3))
  chex.assert_type([view1, view2], jnp.float32)
  low = (0.0 - np.asarray(MEAN)) / np.asarray(STD)
  high = (1.0 - np.asarray(MEAN)) / np.asarray(STD)
  assert (np.asarray(view1) >= np.minimum(low, 0) - 1e-4).all()
  assert (np.asarray(view1) <= high + 1e-4).all()
  assert not np.allclose(view1, view2)
  again, _ = augment.two_views(jax.random.key(0), images, policy=policy,
                               mean=MEAN, std=STD)
  np.testing.assert_array_equal(view1, again)


def test_two_views_out_size_blur_and_jit():
  images = uint8_batch(2, 24)
  fn = jax.jit(lambda k, x: augment.two_views(k, x, mean=MEAN, std=STD, out_size=12,
                                              blur=True))
  view1, view2 = fn(jax.random.key(1), images)
  chex.assert_shape([view1, view2], (2, 12, 12, 3))
  chex.assert_tree_all_finite((view1, view2))


def test_unknown_policy_names_the_argument():
  with pytest.raises(ValueError, match="policy.*simclr"):
    augment.two_views(jax.random.key(0), uint8_batch(), policy="autoaugment",
                      mean=MEAN, std=STD)


def test_normalize():
  images = np.array([[[[0, 255, 51]]]], np.uint8)
  out = augment.normalize(images, MEAN, STD)
  assert out.dtype == jnp.float32
  np.testing.assert_allclose(out[0, 0, 0], [(0 - .5) / .25, (1 - .4) / .2, (.2 - .3) / .3],
                             rtol=1e-5)


@pytest.mark.parametrize("images,kwargs,error,match", [
    (uint8_batch().astype(np.float32) / 255, {}, TypeError, "images_uint8 must be uint8"),
    (uint8_batch()[0], {}, ValueError, "rank 4"),
    (uint8_batch(), {"std": (0.2, 0.0, 0.3)}, ValueError, "std must be 3 finite"),
    (uint8_batch(), {"mean": (0.5, 0.5)}, ValueError, "mean must be 3 finite"),
    (uint8_batch(), {"mean": (0.5, float("nan"), 0.5)}, ValueError, "mean must be"),
    (uint8_batch(), {"out_size": 0}, ValueError, "out_size must be a positive"),
])
def test_two_views_refuses_what_it_would_misread(images, kwargs, error, match):
  kwargs = {"mean": MEAN, "std": STD, **kwargs}
  with pytest.raises(error, match=match):
    augment.two_views(jax.random.key(0), images, **kwargs)


def test_normalize_refuses_float_images_and_zero_std():
  with pytest.raises(TypeError, match="uint8"):
    augment.normalize(np.zeros((1, 2, 2, 3), np.float32), MEAN, STD)
  with pytest.raises(ValueError, match="std"):
    augment.normalize(np.zeros((1, 2, 2, 3), np.uint8), MEAN, (0.0, 1.0, 1.0))
