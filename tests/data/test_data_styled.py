"""Styled multi-domain datasets (`gca_jax.data.styled`, ``styled:<name>``)."""

import numpy as np
import pytest
from PIL import Image

from gca_jax import evaluation
from gca_jax.data import DatasetError, load_dataset, styled
from gca_jax.data.base import ImageArrays, LazyImages
from tests.conftest import shared_path

CIFAR10_JPEG = shared_path.__wrapped__("data", "cifar10_jpeg.npz")
RESTYLED = [s for s in styled.STYLES if s != "photo"]


@pytest.fixture(scope="module")
def digits():
  return load_dataset("digits", image_size=16)


@pytest.fixture(scope="module")
def styled_digits():
  return load_dataset("styled:digits", image_size=16)


def colour_images(count=6, size=12, seed=0):
  """Random smooth colour images (not grey, so every style has colour to change)."""
  rng = np.random.default_rng(seed)
  coarse = rng.integers(0, 256, (count, size // 4, size // 4, 3), dtype=np.uint8)
  return np.stack([np.asarray(Image.fromarray(c).resize((size, size), Image.BILINEAR))
                   for c in coarse])


@pytest.mark.parametrize("style", styled.STYLES)
def test_each_style_is_deterministic_and_keeps_shape_and_dtype(style):
  images = colour_images()
  first = styled.render(images, style)
  assert first.shape == images.shape and first.dtype == np.uint8
  np.testing.assert_array_equal(first, styled.render(images.copy(), style))
  # Rendering does not depend on the other images of the batch.
  np.testing.assert_array_equal(first[2:3], styled.render(images[2:3], style))


@pytest.mark.parametrize("style", RESTYLED)
def test_each_style_other_than_photo_changes_pixels(style):
  images = colour_images()
  changed = np.abs(styled.render(images, style).astype(int) - images).mean(axis=(1, 2, 3))
  assert (changed > 10).all(), changed  # every image, by over 10 grey levels on average


def test_photo_is_the_image_itself_and_the_styles_differ_from_each_other():
  images = colour_images()
  np.testing.assert_array_equal(styled.render(images, "photo"), images)
  renders = {s: styled.render(images, s).astype(int) for s in styled.STYLES}
  for i, a in enumerate(styled.STYLES):
    for b in styled.STYLES[i + 1:]:
      assert np.abs(renders[a] - renders[b]).mean() > 10, (a, b)


def test_sketch_is_grey_and_painting_is_warm():
  sketch = styled.render(colour_images(), "sketch")
  assert (sketch[..., 0] == sketch[..., 1]).all() and (sketch[..., 1] == sketch[..., 2]).all()
  painting = styled.render(colour_images(), "painting").reshape(-1, 3).mean(axis=0)
  assert painting[0] > painting[1] > painting[2]   # the ochre tint: red > green > blue


def test_domains_are_balanced_and_seeded():
  ids = styled.assign_domains(103, seed=3)
  counts = np.bincount(ids, minlength=4)
  assert ids.dtype == np.int32 and counts.max() - counts.min() <= 1
  np.testing.assert_array_equal(ids, styled.assign_domains(103, seed=3))
  assert not np.array_equal(ids, styled.assign_domains(103, seed=4))


def test_styled_digits_domain_labels_match_the_styles(digits, styled_digits):
  assert styled_digits.name == "styled:digits"
  assert styled_digits.domain_names == styled.STYLES
  for source, split in ((digits.train, styled_digits.train), (digits.test, styled_digits.test)):
    assert split.images.shape == source.images.shape and split.images.dtype == np.uint8
    np.testing.assert_array_equal(split.labels, source.labels)  # classes untouched
    assert split.domains.dtype == np.int32 and set(np.unique(split.domains)) == {0, 1, 2, 3}
    for style_id, style in enumerate(styled.STYLES):
      chosen = split.domains == style_id
      np.testing.assert_array_equal(split.images[chosen], styled.render(source.images[chosen],
                                                                        style))
  # Train and test draw their assignments from different seeds; the split seed moves both.
  assert not np.array_equal(styled_digits.train.domains[:300], styled_digits.test.domains[:300])
  again = load_dataset("styled:digits", image_size=16)
  np.testing.assert_array_equal(again.train.images, styled_digits.train.images)
  other = load_dataset("styled:digits", image_size=16, split_seed=1)
  assert not np.array_equal(other.test.domains, styled_digits.test.domains)
  # Channel statistics are those of the styled images.
  assert styled_digits.mean != digits.mean


def test_a_raw_pixel_probe_separates_the_domains_well_above_chance(styled_digits):
  """The sanity baseline of the domain probes: the styles are visible in the
  pixels (chance is 1/4), so a low domain accuracy after training would mean
  the encoder discarded them."""
  def pixels(split):
    return split.images.reshape(len(split), -1).astype(np.float32) / 255.0
  accuracy = evaluation.linear_probe(
      pixels(styled_digits.train), styled_digits.train.domains, pixels(styled_digits.test),
      styled_digits.test.domains, len(styled.STYLES), steps=300)
  assert accuracy > 0.9, accuracy


def test_styled_npz_archive(tmp_path):
  """``styled:npz:<path>`` (the form a CIFAR-10 JPEG archive is passed in)."""
  images = colour_images(40, size=16, seed=1)
  labels = np.arange(40, dtype=np.int64) % 4
  path = tmp_path / "arrays.npz"
  np.savez(path, x_train=images[:32], y_train=labels[:32], x_test=images[32:],
           y_test=labels[32:])
  data = load_dataset(f"styled:npz:{path}")
  assert data.name.startswith("styled:npz:") and data.domain_names == styled.STYLES
  assert np.bincount(data.train.domains).tolist() == [8, 8, 8, 8]
  photo = data.train.domains == 0
  np.testing.assert_array_equal(data.train.images[photo], images[:32][photo])
  assert not np.array_equal(data.train.images[~photo], images[:32][~photo])


@pytest.mark.skipif(not CIFAR10_JPEG.exists(), reason="shared CIFAR-10 JPEG npz absent")
def test_styled_cifar10_jpeg_archive_subset(tmp_path):
  """Real CIFAR-10 images from the JPEG archive (a small evenly spaced subset
  in the archive's own layout): the raw-pixel probe tells the styles apart."""
  with np.load(CIFAR10_JPEG) as data:
    subset = {"class_names": data["class_names"]}
    for split, count in (("train", 600), ("test", 200)):
      offsets, blob = data[f"{split}_offsets"], data[f"{split}_jpeg"]
      picks = np.linspace(0, len(offsets) - 2, count).astype(int)
      blobs = [blob[offsets[i]:offsets[i + 1]] for i in picks]
      subset[f"{split}_jpeg"] = np.concatenate(blobs)
      subset[f"{split}_offsets"] = np.concatenate([[0], np.cumsum([len(b) for b in blobs])])
      subset[f"{split}_labels"] = data[f"{split}_labels"][picks]
  path = tmp_path / "cifar10_subset.npz"
  np.savez(path, **subset)
  cifar = load_dataset(f"styled:npz:{path}", image_size=16)
  assert cifar.train.images.shape == (600, 16, 16, 3) and cifar.num_classes == 10

  def pixels(split):
    return split.images.reshape(len(split), -1).astype(np.float32) / 255.0
  accuracy = evaluation.linear_probe(pixels(cifar.train), cifar.train.domains,
                                     pixels(cifar.test), cifar.test.domains, 4, steps=300)
  assert accuracy > 0.5, accuracy   # chance: 0.25


def test_unusable_inputs_fail_in_one_line(digits):
  with pytest.raises(DatasetError, match="Unknown style 'oil'"):
    styled.render(colour_images(), "oil")
  with pytest.raises(DatasetError, match="uint8"):
    styled.render(colour_images().astype(np.float32), "sketch")
  with pytest.raises(DatasetError, match="already has domains"):
    styled.stylise(load_dataset("styled:digits", image_size=8))
  lazy = ImageArrays(LazyImages(lambda i: digits.train.images[i], 4, (16, 16, 3)),
                     digits.train.labels[:4])
  with pytest.raises(DatasetError, match="built in memory"):
    styled.stylise_split(lazy, seed=0)
  with pytest.raises(DatasetError, match="Unknown dataset"):
    load_dataset("styled:imagenet1000")

