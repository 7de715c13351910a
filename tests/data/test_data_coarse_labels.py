"""A second, coarser label level (CIFAR-100's superclasses) through the sources."""

import io

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from gca_jax.data import DatasetError, load_dataset
from gca_jax.data.base import Dataset, ImageArrays, check_dataset

RNG = np.random.default_rng(0)
IMAGES = RNG.integers(0, 256, (12, 8, 8, 3), dtype=np.uint8)
LABELS = np.arange(12) % 4               # four classes ...
COARSE = LABELS // 2                     # ... in two superclasses


def save_npz(path, **arrays):
  default = {"x_train": IMAGES[:8], "y_train": LABELS[:8], "x_test": IMAGES[8:],
             "y_test": LABELS[8:], "train_coarse_labels": COARSE[:8],
             "test_coarse_labels": COARSE[8:]}
  np.savez(path, **{k: v for k, v in {**default, **arrays}.items() if v is not None})
  return str(path)


def png_bytes(image):
  buffer = io.BytesIO()
  Image.fromarray(image).save(buffer, "PNG")
  return np.frombuffer(buffer.getvalue(), np.uint8)


def test_npz_coarse_labels_are_carried(tmp_path):
  ds = load_dataset(save_npz(tmp_path / "coarse.npz",
                             coarse_class_names=np.array(["animal", "vehicle"])))
  np.testing.assert_array_equal(ds.train.coarse_labels, COARSE[:8])
  np.testing.assert_array_equal(ds.test.coarse_labels, COARSE[8:])
  assert ds.train.coarse_labels.dtype == np.int32
  assert ds.num_coarse_classes == 2 and ds.coarse_class_names == ("animal", "vehicle")
  subset = ds.train.take([1, 6])  # class-balanced subsets keep both levels
  np.testing.assert_array_equal(subset.coarse_labels, COARSE[[1, 6]])
  np.testing.assert_array_equal(subset.labels, LABELS[[1, 6]])


def test_npz_coarse_labels_in_the_jpeg_layout(tmp_path):
  blobs = [png_bytes(im) for im in IMAGES]
  offsets = np.concatenate([[0], np.cumsum([len(b) for b in blobs])])
  path = save_npz(tmp_path / "jpeg.npz", x_train=None, y_train=None, x_test=None,
                  y_test=None, train_jpeg=np.concatenate(blobs[:8]),
                  train_offsets=offsets[:9], train_labels=LABELS[:8],
                  test_jpeg=np.concatenate(blobs[8:]), test_offsets=offsets[8:] - offsets[8],
                  test_labels=LABELS[8:])
  ds = load_dataset(path, image_size=4)
  np.testing.assert_array_equal(ds.test.coarse_labels, COARSE[8:])
  assert ds.num_coarse_classes == 2 and ds.coarse_class_names == ()
  assert ds.image_shape == (4, 4, 3)


def test_sources_without_coarse_labels_have_none(tmp_path):
  ds = load_dataset(save_npz(tmp_path / "fine.npz", train_coarse_labels=None,
                             test_coarse_labels=None))
  assert ds.train.coarse_labels is None and ds.test.coarse_labels is None
  assert ds.num_coarse_classes == 0 and ds.coarse_class_names == ()
  assert load_dataset("digits", image_size=8).test.coarse_labels is None


@pytest.mark.parametrize("arrays,expected", [
    ({"test_coarse_labels": None},
     "has train_coarse_labels but no test_coarse_labels; give the coarse labels of both"),
    ({"train_coarse_labels": None, "test_coarse_labels": None,
      "coarse_class_names": np.array(["a", "b"])}, "has coarse_class_names but no"),
    ({"test_coarse_labels": COARSE[8:11]},
     "4 test images but 3 coarse labels in test_coarse_labels"),
    ({"train_coarse_labels": COARSE[:8].astype(float)},
     "train_coarse_labels have dtype float64"),
    ({"test_coarse_labels": np.array([0, 0, 1, 3])},   # coarse id 2 is unused
     "ids up to 3, .* add coarse_class_names naming all K"),
    ({"coarse_class_names": np.array(["animal"])},
     r"train coarse label 1 is outside 0..0 \(1 coarse classes\)"),
    ({"test_coarse_labels": np.array([0, 0, 1, 0])},   # class 3: coarse 1 in train
     "images of class '3' have the coarse labels 0 and 1; every class must lie in one"),
])
def test_bad_npz_coarse_labels_name_the_file_and_field(tmp_path, arrays, expected):
  path = save_npz(tmp_path / "bad.npz", **arrays)
  with pytest.raises(DatasetError, match=expected) as error:
    load_dataset(path)
  message = str(error.value)
  assert path in message and "\n" not in message


def test_check_dataset_refuses_inconsistent_coarse_fields():
  split = ImageArrays(IMAGES[:4], LABELS[:4].astype(np.int32),
                      coarse_labels=COARSE[:4].astype(np.int32))
  ds = Dataset(split, split, 4, "toy", (), (), num_coarse_classes=2)
  assert check_dataset(ds, "toy") is ds
  with pytest.raises(DatasetError, match="toy: only some splits have coarse labels"):
    check_dataset(ds._replace(test=split._replace(coarse_labels=None)), "toy")
  with pytest.raises(DatasetError, match="coarse labels but num_coarse_classes is 0"):
    check_dataset(ds._replace(num_coarse_classes=0), "toy")
  with pytest.raises(DatasetError, match="2 coarse classes but no split has"):
    check_dataset(ds._replace(train=split._replace(coarse_labels=None),
                              test=split._replace(coarse_labels=None)), "toy")
  with pytest.raises(DatasetError, match="2 coarse classes but 3 coarse class names"):
    check_dataset(ds._replace(coarse_class_names=("a", "b", "c")), "toy")
  with pytest.raises(DatasetError, match=r"toy: test coarse labels must be int32 \(N,\), "
                                         r"one per image, got int32 \(3,\)"):
    check_dataset(ds._replace(test=split._replace(coarse_labels=np.zeros(3, np.int32))),
                  "toy")


def test_tfds_cifar100_carries_its_superclasses_with_mock(tmp_path):
  with tfds.testing.mock_data(num_examples=6):
    ds = load_dataset("cifar100", data_dir=tmp_path)
    cifar10 = load_dataset("cifar10", data_dir=tmp_path)
  assert ds.num_coarse_classes == 20 and len(ds.coarse_class_names) == 20
  for split in (ds.train, ds.test):
    assert split.coarse_labels.shape == (6,) and split.coarse_labels.dtype == np.int32
    assert 0 <= split.coarse_labels.min() and split.coarse_labels.max() < 20
  assert cifar10.train.coarse_labels is None and cifar10.num_coarse_classes == 0


class FakeCifar100(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Writes images in the tfds cifar100 layout (array_record, no TF)."""

  name = "cifar100"
  VERSION = tfds.core.Version("3.0.2")

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
        "id": tfds.features.Text(),
        "image": tfds.features.Image(shape=(8, 8, 3), encoding_format="png"),
        "label": tfds.features.ClassLabel(num_classes=100),
        "coarse_label": tfds.features.ClassLabel(
            names=[f"super{i}" for i in range(20)])}))

  def _split_generators(self, dl_manager):
    del dl_manager
    return {"train": self._generate_examples(range(8)),
            "test": self._generate_examples(range(8, 12))}

  def _generate_examples(self, rows):
    for i in rows:
      yield i, {"id": f"{i}", "image": png_bytes(IMAGES[i]).tobytes(),
                "label": int(LABELS[i]) * 5, "coarse_label": int(COARSE[i])}


def test_tfds_cifar100_coarse_labels_read_from_array_record(tmp_path):
  FakeCifar100(data_dir=tmp_path, file_format="array_record").download_and_prepare()
  ds = load_dataset("cifar100", data_dir=str(tmp_path))
  assert ds.coarse_class_names == tuple(f"super{i}" for i in range(20))
  # tfds shuffles records when writing; each image keeps its two labels.
  def triples(split):
    return sorted((im.tobytes(), int(y), int(c))
                  for im, y, c in zip(split.images, split.labels, split.coarse_labels))
  assert triples(ds.train) == sorted((IMAGES[i].tobytes(), int(LABELS[i]) * 5,
                                      int(COARSE[i])) for i in range(8))
  assert triples(ds.test) == sorted((IMAGES[i].tobytes(), int(LABELS[i]) * 5,
                                     int(COARSE[i])) for i in range(8, 12))


def test_load_npz_example_runs():
  import doctest

  from gca_jax.data import npz
  result = doctest.testmod(npz, optionflags=doctest.NORMALIZE_WHITESPACE)
  assert result.attempted >= 5 and result.failed == 0
