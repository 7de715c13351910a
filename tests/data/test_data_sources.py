"""Data sources, offline: digits, npz, folders, PACS, tfds (mocked and real)."""

import io
from pathlib import Path

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from gca_jax.data import DatasetError, imagenet100, load_dataset, local, prepare, tfds_sources
from tests.conftest import shared_path

CIFAR10_JPEG = shared_path.__wrapped__("data", "cifar10_jpeg.npz")


@pytest.fixture(scope="module")
def digits():
  return load_dataset("digits")


def real_images(count: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """Real uint8 RGB 32x32 images with labels (CIFAR-10 if shared, else digits)."""
  if CIFAR10_JPEG.exists():
    with np.load(CIFAR10_JPEG) as data:
      offsets, blob, labels = data["test_offsets"], data["test_jpeg"], data["test_labels"]
      picks = np.random.default_rng(seed).choice(len(labels), count, replace=False)
      images = np.stack([np.asarray(Image.open(io.BytesIO(
          blob[offsets[i]:offsets[i + 1]].tobytes())).convert("RGB")) for i in picks])
      return images, labels[picks].astype(np.int32)
  train = local.load_digits().train
  return train.images[:count], train.labels[:count]


def save_image(path: Path, image: np.ndarray) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  Image.fromarray(image).save(path)


def test_digits_is_default_and_deterministic(digits):
  assert digits.name == "digits" and digits.num_classes == 10
  assert digits.train.images.shape == (1438, 32, 32, 3)
  assert digits.train.images.dtype == np.uint8 and digits.train.labels.dtype == np.int32
  assert len(digits.train) + len(digits.test) == 1797
  assert digits.train.domains is None and digits.train.in_memory
  assert set(np.unique(digits.test.labels)) == set(range(10))
  again = load_dataset("digits")
  np.testing.assert_array_equal(again.test.labels, digits.test.labels)
  other = load_dataset("digits", split_seed=1)
  assert not np.array_equal(other.test.labels, digits.test.labels)
  assert all(0 < m < 1 for m in digits.mean) and all(s > 0 for s in digits.std)


def test_plain_npz(tmp_path, digits):
  path = tmp_path / "arrays.npz"
  np.savez(path, x_train=digits.train.images[:20, ..., 0],  # grey is replicated
           y_train=digits.train.labels[:20], x_test=digits.test.images[:10],
           y_test=digits.test.labels[:10])
  ds = load_dataset(f"npz:{path}")
  assert ds.train.images.shape == (20, 32, 32, 3) and len(ds.test) == 10
  np.testing.assert_array_equal(ds.test.images, digits.test.images[:10])
  assert load_dataset(str(path)).num_classes == ds.num_classes


def test_jpeg_npz_layout(tmp_path):
  images, labels = real_images(12)
  blobs = []
  for image in images:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "JPEG", quality=95)
    blobs.append(np.frombuffer(buffer.getvalue(), np.uint8))
  offsets = np.concatenate([[0], np.cumsum([len(b) for b in blobs])])
  path = tmp_path / "jpeg.npz"
  np.savez(path, train_jpeg=np.concatenate(blobs[:8]), train_offsets=offsets[:9],
           train_labels=labels[:8], test_jpeg=np.concatenate(blobs[8:]),
           test_offsets=offsets[8:] - offsets[8], test_labels=labels[8:],
           class_names=np.array([f"c{i}" for i in range(10)]))
  ds = load_dataset(str(path))
  assert ds.train.images.shape == (8, 32, 32, 3) and ds.num_classes == 10
  np.testing.assert_array_equal(ds.test.labels, labels[8:])
  # JPEG at quality 95 stays close to the originals.
  assert np.abs(ds.train.images.astype(int) - images[:8]).mean() < 6


@pytest.mark.skipif(not CIFAR10_JPEG.exists(), reason="shared CIFAR-10 JPEG npz absent")
def test_shared_cifar10_jpeg_npz_layout(tmp_path):
  """Evenly spaced images of the shared CIFAR-10 JPEG archive, in its own layout
  (the archive is sorted by class: its first 300 images are all airplanes)."""
  with np.load(CIFAR10_JPEG) as data:
    subset = {"class_names": data["class_names"]}
    for split, count in (("train", 300), ("test", 100)):
      offsets, blob = data[f"{split}_offsets"], data[f"{split}_jpeg"]
      picks = np.linspace(0, len(offsets) - 2, count).astype(int)
      blobs = [blob[offsets[i]:offsets[i + 1]] for i in picks]
      subset[f"{split}_jpeg"] = np.concatenate(blobs)
      subset[f"{split}_offsets"] = np.concatenate([[0], np.cumsum([len(b) for b in blobs])])
      subset[f"{split}_labels"] = data[f"{split}_labels"][picks]
  np.savez(tmp_path / "cifar10_subset.npz", **subset)
  ds = load_dataset(f"npz:{tmp_path / 'cifar10_subset.npz'}")
  assert ds.train.images.shape == (300, 32, 32, 3) and len(ds.test) == 100
  assert ds.class_names[0] == "airplane" and ds.num_classes == 10
  assert 0.3 < ds.mean[0] < 0.7 and ds.train.images.std() > 20


def test_npz_missing_split_and_bad_paths(tmp_path, digits):
  path = tmp_path / "train_only.npz"
  np.savez(path, x_train=digits.train.images[:4], y_train=digits.train.labels[:4])
  with pytest.raises(DatasetError, match="no 'test' split"):
    load_dataset(str(path))
  with pytest.raises(DatasetError, match="not found"):
    load_dataset(f"npz:{tmp_path / 'absent.npz'}")
  (tmp_path / "garbage.npz").write_bytes(b"not a zip")
  with pytest.raises(DatasetError, match="Cannot read"):
    load_dataset(str(tmp_path / "garbage.npz"))
  with pytest.raises(DatasetError, match="Unknown dataset"):
    load_dataset("imagenet1000")


def test_image_folder_split_and_train_test(tmp_path, digits):
  for i in range(12):
    save_image(tmp_path / "flat" / f"class{i % 3}" / f"{i}.png", digits.train.images[i])
    split = "train" if i < 9 else "test"
    save_image(tmp_path / "tt" / split / f"class{i % 2}" / f"{i}.png",
               digits.train.images[i])
  flat = load_dataset(str(tmp_path / "flat"))
  assert flat.num_classes == 3 and len(flat.train) + len(flat.test) == 12
  assert flat.train.images.shape[1:] == (32, 32, 3) and flat.train.in_memory
  assert flat.class_names == ("class0", "class1", "class2")
  tt = load_dataset(str(tmp_path / "tt"), image_size=16)
  assert (len(tt.train), len(tt.test)) == (9, 3)
  assert tt.test.images.shape[1:] == (16, 16, 3)


def test_corrupt_image_names_the_file(tmp_path, digits):
  for i in range(4):
    save_image(tmp_path / "cls" / f"{i}.png", digits.train.images[i])
  (tmp_path / "cls" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
  with pytest.raises(DatasetError, match="broken.jpg"):
    load_dataset(str(tmp_path))


def make_pacs(root: Path, digits, per_class: int = 3) -> None:
  for d, domain in enumerate(local.PACS_DOMAINS):
    for c, name in enumerate(("dog", "house")):
      for k in range(per_class):
        image = digits.train.images[d * 10 + c * per_class + k]
        save_image(root / domain / name / f"{k}.{'jpg' if d % 2 else 'png'}", image)


def test_pacs_domains_and_leave_one_out(tmp_path, digits):
  make_pacs(tmp_path / "PACS" / "kfold", digits)
  ds = load_dataset("pacs", data_dir=tmp_path, image_size=24)
  assert ds.num_classes == 2 and ds.domain_names == local.PACS_DOMAINS
  assert ds.train.images.shape[1:] == (24, 24, 3)
  assert len(ds.train) + len(ds.test) == 24
  assert set(ds.train.domains) == {0, 1, 2, 3}
  held_out = load_dataset("pacs/sketch", data_dir=tmp_path, image_size=24)
  assert set(held_out.test.domains) == {3} and 3 not in set(held_out.train.domains)
  lazy = local.load_pacs(tmp_path, image_size=24, max_in_memory_bytes=0)
  assert not lazy.train.in_memory
  np.testing.assert_array_equal(np.asarray(lazy.train.images), ds.train.images)
  with pytest.raises(DatasetError, match="PACS not found"):
    load_dataset("pacs", data_dir=tmp_path / "nowhere")
  with pytest.raises(DatasetError, match="Unknown PACS domain"):
    load_dataset("pacs/photos", data_dir=tmp_path)


@pytest.mark.parametrize("name,shape,classes", [
    ("cifar10", (32, 32, 3), 10), ("cifar100", (32, 32, 3), 100),
    ("svhn_cropped", (32, 32, 3), 10)])
def test_tfds_catalog_wiring_with_mock(tmp_path, name, shape, classes):
  with tfds.testing.mock_data(num_examples=6):
    ds = load_dataset(name, data_dir=tmp_path)
  assert ds.train.images.shape == (6, *shape) and ds.train.images.dtype == np.uint8
  assert ds.num_classes == classes and ds.test.labels.dtype == np.int32
  assert ds.test.labels.max() < classes


def test_cifar10_corrupted_is_test_only(tmp_path):
  with tfds.testing.mock_data(num_examples=5):
    ds = load_dataset("cifar10_corrupted/gaussian_noise_5", data_dir=tmp_path)
  assert len(ds.train) == 0 and ds.test.images.shape == (5, 32, 32, 3)
  assert ds.mean == tfds_sources.CIFAR10_MEAN
  with pytest.raises(DatasetError, match="gaussian_noise_5"):
    load_dataset("cifar10_corrupted", data_dir=tmp_path)


def test_unprepared_tfds_dataset_says_how_to_prepare(tmp_path):
  with pytest.raises(DatasetError, match="gca_jax.data.prepare cifar10"):
    load_dataset("cifar10", data_dir=tmp_path)


class FakeCifar10(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Writes real images in the tfds cifar10 layout (array_record, no TF)."""

  name = "cifar10"
  VERSION = tfds.core.Version("3.0.2")
  images: np.ndarray = np.zeros((0, 32, 32, 3), np.uint8)
  labels: np.ndarray = np.zeros((0,), np.int32)

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
        "id": tfds.features.Text(),
        "image": tfds.features.Image(shape=(32, 32, 3), encoding_format="png"),
        "label": tfds.features.ClassLabel(num_classes=10)}))

  def _split_generators(self, dl_manager):
    del dl_manager
    return {"train": self._generate_examples(slice(0, 12)),
            "test": self._generate_examples(slice(12, None))}

  def _generate_examples(self, rows):
    for i in range(len(self.images))[rows]:
      buffer = io.BytesIO()
      Image.fromarray(self.images[i]).save(buffer, "PNG")
      yield i, {"id": f"{i}", "image": buffer.getvalue(), "label": int(self.labels[i])}


def test_real_array_record_read_without_tensorflow(tmp_path):
  images, labels = real_images(16, seed=1)
  FakeCifar10.images, FakeCifar10.labels = images, labels
  FakeCifar10(data_dir=tmp_path, file_format="array_record").download_and_prepare()
  ds = load_dataset("cifar10", data_dir=str(tmp_path))
  # tfds shuffles records when writing; PNG is lossless, so match exactly.
  def as_set(images, labels):
    return sorted((im.tobytes(), int(y)) for im, y in zip(images, labels))
  assert as_set(ds.train.images, ds.train.labels) == as_set(images[:12], labels[:12])
  assert as_set(ds.test.images, ds.test.labels) == as_set(images[12:], labels[12:])
  with pytest.raises(DatasetError, match="no split 'validation'"):
    tfds_sources._data_source(tfds_sources.catalog_builder("cifar10", str(tmp_path)),
                              "validation", "cifar10", tmp_path)


def test_imagenet100_prepare_and_read_without_tensorflow(tmp_path, digits):
  manual = tmp_path / "manual"
  wnids = imagenet100.CLASSES[:2] + ("n99999999",)  # the last is not in the 100
  for k, wnid in enumerate(wnids):
    for split, count in (("train", 3), ("val", 1)):
      for i in range(count):
        save_image(manual / split / wnid / f"{i}.JPEG", digits.train.images[k * 4 + i])
  with pytest.raises(DatasetError, match="manual download"):
    load_dataset("imagenet100", data_dir=tmp_path / "data")
  prepare.prepare("imagenet100", data_dir=tmp_path / "data", manual_dir=manual)
  ds = load_dataset("imagenet100", data_dir=tmp_path / "data", image_size=48)
  assert ds.num_classes == 100 and len(ds.train) == 6 and len(ds.test) == 2
  assert sorted(set(ds.train.labels)) == [0, 1]
  assert not ds.train.in_memory and ds.train.images.shape == (6, 48, 48, 3)
  assert ds.train.images[0].dtype == np.uint8 and ds.train.images[0].shape == (48, 48, 3)


def test_imagenet100_class_list():
  assert len(set(imagenet100.CLASSES)) == 100
  assert imagenet100.CLASSES[0] == "n02869837" and imagenet100.CLASSES[-1] == "n02090622"


def test_prepare_errors(tmp_path):
  with pytest.raises(DatasetError, match="manual_dir"):
    prepare.prepare("imagenet100", data_dir=tmp_path)
  with pytest.raises(DatasetError, match="Cannot prepare"):
    prepare.prepare("mnist", data_dir=tmp_path)


@pytest.mark.skipif(tfds_sources.tensorflow_available(),
                    reason="TensorFlow installed: catalog preparation would download")
def test_catalog_prepare_without_tensorflow_explains(tmp_path):
  # The install command a user can run from the checkout (the package is not
  # on a package index): the extra of this repository, not of "gca_jax".
  with pytest.raises(DatasetError, match=r"pip install -e '\.\[prepare\]'"):
    prepare.prepare("cifar10", data_dir=tmp_path)


def test_digits_size_is_the_load_size_of_the_config(digits):
  from gca_jax.training import config as configs
  config = configs.get_config()
  small = load_dataset("digits", image_size=config.load_size)
  assert small.image_shape == (config.load_size, config.load_size, 3)
  assert digits.image_shape == (local.DIGITS_IMAGE_SIZE,) * 2 + (3,)


def test_read_split_makes_grey_records_rgb():
  records = [{"image": np.full((4, 4, 1), i, np.uint8), "label": i} for i in range(3)]
  split = tfds_sources.read_split(records, "grey")
  assert split.images.shape == (3, 4, 4, 3) and split.images.dtype == np.uint8
  np.testing.assert_array_equal(split.images[:, 0, 0], np.repeat(np.arange(3), 3).reshape(3, 3))
  np.testing.assert_array_equal(split.labels, [0, 1, 2])
