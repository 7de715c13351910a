"""Bad inputs to the loaders: each works correctly or fails at once with one
``DatasetError`` naming the file or field and what is allowed."""

import io
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gca_jax.data import DatasetError, load_dataset, local, npz, prepare, tfds_sources
from gca_jax.data.base import (Dataset, DatasetWarning, ImageArrays, check_dataset,
                               empty_split)

RNG = np.random.default_rng(0)
IMAGES = RNG.integers(0, 256, (12, 8, 8, 3), dtype=np.uint8)
LABELS = np.arange(12) % 3


def save_npz(path: Path, compressed: bool = False, **arrays) -> Path:
  default = {"x_train": IMAGES[:9], "y_train": LABELS[:9], "x_test": IMAGES[9:],
             "y_test": LABELS[9:]}
  (np.savez_compressed if compressed else np.savez)(path, **{**default, **arrays})
  return path


def save_image(path: Path, image: np.ndarray) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  Image.fromarray(image).save(path)


def one_line(error: pytest.ExceptionInfo) -> str:
  message = str(error.value)
  assert "\n" not in message and "Traceback" not in message
  return message


# ---------------------------------------------------------------------------
# Damaged or foreign .npz files.


def _truncated(path):
  data = save_npz(path, compressed=True).read_bytes()
  path.write_bytes(data[:len(data) // 2])


def _truncated_to_a_member(path):  # keeps the first members' bytes, drops the index
  data = save_npz(path).read_bytes()
  path.write_bytes(data[:data.index(b"PK\x01\x02")])


def _zero_bytes(path):
  path.write_bytes(b"")


def _flipped_data_byte(path):
  data = bytearray(save_npz(path).read_bytes())
  data[200] ^= 0x10  # inside x_train's pixels
  path.write_bytes(bytes(data))


def _flipped_npy_header(path):
  """A one-bit flip that turns x_train's shape (9, 8, 8, 3) into (9, 8, 8, 1):
  np.load would read a third of the pixels as a wrong grey array."""
  data = bytearray(save_npz(path).read_bytes())
  at = data.index(b"(9, 8, 8, 3)") + len(b"(9, 8, 8, ")
  data[at] ^= 0x02  # '3' -> '1'
  path.write_bytes(bytes(data))


def _object_dtype(path):
  save_npz(path, y_train=np.array([1, "two", None] * 3, dtype=object))


def _not_a_zip(path):
  path.write_text("x_train,y_train\n1,2\n")


def _a_single_npy(path):
  with open(path, "wb") as f:
    np.save(f, IMAGES)


@pytest.mark.parametrize("damage,expected", [
    (_truncated, "damaged"), (_truncated_to_a_member, "damaged"),
    (_zero_bytes, "empty"), (_flipped_data_byte, "CRC"),
    (_flipped_npy_header, "damaged"), (_object_dtype, "Python objects"),
    (_not_a_zip, "not a zip"), (_a_single_npy, "single .npy")])
def test_damaged_or_foreign_npz_names_the_file(tmp_path, damage, expected):
  path = tmp_path / "data.npz"
  damage(path)
  with pytest.raises(DatasetError, match=expected) as error:
    load_dataset(str(path))
  message = one_line(error)
  assert str(path) in message and "pickled" not in message


def test_npz_that_is_a_folder_path_or_unreadable(tmp_path):
  (tmp_path / "dir.npz").mkdir()
  with pytest.raises(DatasetError, match="dir.npz"):
    npz.load_npz(tmp_path / "dir.npz")


@pytest.mark.parametrize("compressed", [False, True])
def test_any_flipped_bit_is_refused_or_harmless(tmp_path, compressed):
  """Flips one bit at many positions (all zip and .npy headers included):
  every load either fails naming the file or gives exactly the original."""
  path = save_npz(tmp_path / "clean.npz", compressed=compressed)
  clean = load_dataset(str(path))
  data = path.read_bytes()
  central = data.index(b"PK\x01\x02")
  # Every byte of the index and of the first member's headers, a sample of
  # the rest (each load is quick, but thousands add up on a loaded machine).
  positions = sorted(set(range(central, len(data))) | set(range(0, 160))
                     | set(range(160, central, 7)))
  flipped = tmp_path / "flipped.npz"
  outcomes = {"refused": 0, "same": 0}
  for position in positions:
    damaged = bytearray(data)
    damaged[position] ^= 1 << (position % 8)
    flipped.write_bytes(bytes(damaged))
    try:
      with warnings.catch_warnings():
        warnings.simplefilter("ignore", DatasetWarning)
        ds = load_dataset(str(flipped))
    except DatasetError as e:
      assert str(flipped) in str(e), (position, str(e))
      outcomes["refused"] += 1
      continue
    for got, want in ((ds.train.images, clean.train.images),
                      (ds.test.images, clean.test.images),
                      (ds.train.labels, clean.train.labels),
                      (ds.test.labels, clean.test.labels)):
      np.testing.assert_array_equal(got, want, err_msg=f"bit flip at byte {position}")
    outcomes["same"] += 1
  assert outcomes["refused"] > len(positions) // 2  # the check did real work


# ---------------------------------------------------------------------------
# .npz contents.


@pytest.mark.parametrize("field,value,expected", [
    ("y_train", LABELS[:9].astype(np.float32), "dtype float32"),
    ("y_train", LABELS[:9] > 0, "dtype bool"),
    ("y_test", np.array([0, -1, 2]), "class id -1"),
    ("y_train", np.r_[LABELS[:8], 2**40], f"class id {2**40}"),
    ("y_train", np.r_[LABELS[:8], 1000], "ids up to 1000"),   # gap: ids 3..999 unused
    ("y_train", np.stack([LABELS[:9]] * 2, 1), r"shape \(9, 2\)"),
    ("y_test", LABELS[9:11], "3 test images but 2 labels"),
])
def test_bad_labels_name_the_file_and_field(tmp_path, field, value, expected):
  path = save_npz(tmp_path / "labels.npz", **{field: value})
  with pytest.raises(DatasetError, match=expected) as error:
    load_dataset(str(path))
  message = one_line(error)
  assert str(path) in message
  if "ids up to" not in expected:
    assert field in message


def test_labels_beyond_class_names_are_refused(tmp_path):
  path = save_npz(tmp_path / "named.npz", class_names=np.array(["a", "b"]))
  with pytest.raises(DatasetError, match=r"label 2 is outside 0..1 \(2 classes\)") as e:
    load_dataset(str(path))
  assert str(path) in one_line(e)


def test_column_labels_and_named_unused_classes_are_read(tmp_path):
  path = save_npz(tmp_path / "ok.npz", y_train=LABELS[:9, None].astype(np.uint8),
                  class_names=np.array(["a", "b", "c", "unused"]))
  ds = load_dataset(str(path))
  assert ds.train.labels.dtype == np.int32 and ds.train.labels.shape == (9,)
  np.testing.assert_array_equal(ds.train.labels, LABELS[:9])
  assert ds.num_classes == 4 and ds.class_names[-1] == "unused"


@pytest.mark.parametrize("field,value,expected", [
    ("x_train", IMAGES[:9].astype(np.float32) / 255, "dtype float32"),
    ("x_train", IMAGES[:9].astype(np.uint16) * 257, "dtype uint16"),
    ("x_test", IMAGES[9:, :, :, 0].reshape(3, 64), r"shape \(3, 64\)"),
    ("x_test", IMAGES[9:, None], r"shape \(3, 1, 8, 8, 3\)"),
    ("x_train", np.concatenate([IMAGES[:9], IMAGES[:9, ..., :1]], -1), r"8, 8, 4\)"),
    ("x_train", IMAGES[:9, :, :0], r"shape \(9, 8, 0, 3\)"),
    ("x_test", IMAGES[9:, :4], "train images are .* but test images are"),
    ("class_names", np.array([["a", "b"]]), "class_names must be a non-empty 1-D"),
    ("class_names", np.array([], str), "class_names must be a non-empty 1-D"),
])
def test_bad_images_and_names_name_the_file_and_field(tmp_path, field, value, expected):
  path = save_npz(tmp_path / "images.npz", **{field: value})
  with pytest.raises(DatasetError, match=expected) as error:
    load_dataset(str(path))
  message = one_line(error)
  assert str(path) in message
  if "train images are" not in expected:
    assert field in message


@pytest.mark.parametrize("split", ["train", "test"])
def test_empty_split_is_refused_at_load(tmp_path, split):
  path = save_npz(tmp_path / "empty.npz", **{f"x_{split}": IMAGES[:0],
                                             f"y_{split}": LABELS[:0]})
  with pytest.raises(DatasetError, match=f"the {split} split is empty") as error:
    load_dataset(str(path))
  assert str(path) in one_line(error)


def test_test_class_without_train_images_is_kept_and_warned_about(tmp_path):
  path = save_npz(tmp_path / "unseen.npz", y_test=np.array([0, 3, 3]))
  with pytest.warns(DatasetWarning, match=r"test classes \['3'\] \(2 test images\)"):
    ds = load_dataset(str(path))
  assert ds.num_classes == 4
  np.testing.assert_array_equal(ds.test.labels, [0, 3, 3])


def jpeg_bytes(image: np.ndarray) -> np.ndarray:
  buffer = io.BytesIO()
  Image.fromarray(image).save(buffer, "PNG")
  return np.frombuffer(buffer.getvalue(), np.uint8)


def save_jpeg_npz(path: Path, train_images, **overrides) -> Path:
  blobs = [jpeg_bytes(im) for im in train_images]
  offsets = np.concatenate([[0], np.cumsum([len(b) for b in blobs])])
  test = [jpeg_bytes(IMAGES[9])]
  arrays = {"train_jpeg": np.concatenate(blobs), "train_offsets": offsets,
            # Two classes: a dataset of one class is refused.
            "train_labels": np.arange(len(blobs)) % 2, "test_jpeg": test[0],
            "test_offsets": np.array([0, len(test[0])]), "test_labels": np.array([0])}
  np.savez(path, **{**arrays, **overrides})
  return path


def test_encoded_npz_with_images_of_different_sizes(tmp_path):
  path = save_jpeg_npz(tmp_path / "sizes.npz", [IMAGES[0], IMAGES[1], IMAGES[2, :5, :7]])
  with pytest.raises(DatasetError, match="train image 2 .* is 7x5 but train image 0 is "
                                         "8x8") as error:
    load_dataset(str(path))
  assert str(path) in one_line(error)


@pytest.mark.parametrize("offsets", [[0, 10, 5, 20], [3, 10, 20, 30], [0, 10, 20],
                                     [0.0, 10.0, 20.0, 30.0], [0, 10, 20, 10**9]])
def test_encoded_npz_with_bad_offsets(tmp_path, offsets):
  path = save_jpeg_npz(tmp_path / "offsets.npz", IMAGES[:3],
                       train_offsets=np.array(offsets))
  with pytest.raises(DatasetError, match="train_offsets must be increasing") as error:
    load_dataset(str(path))
  assert str(path) in one_line(error)


def test_encoded_npz_reads_good_images(tmp_path):
  ds = load_dataset(str(save_jpeg_npz(tmp_path / "good.npz", IMAGES[:3])))
  np.testing.assert_array_equal(ds.train.images, IMAGES[:3])  # PNG is lossless
  np.testing.assert_array_equal(ds.test.images, IMAGES[9:10])


# ---------------------------------------------------------------------------
# Image folders.


def test_different_sizes_without_image_size_are_refused(tmp_path):
  """A 2x2 first image used to make every image 2x2."""
  save_image(tmp_path / "a" / "0.png", np.full((2, 2, 3), 10, np.uint8))
  for i in range(1, 3):
    save_image(tmp_path / "a" / f"{i}.png", np.full((32, 32, 3), 50 * i, np.uint8))
    save_image(tmp_path / "b" / f"{i}.png", np.full((32, 32, 3), 40 * i, np.uint8))
  with pytest.raises(DatasetError, match="differ in size: .*1.png' is 32x32 but .*0.png' "
                                         "is 2x2. Pass image_size") as error:
    load_dataset(str(tmp_path))
  one_line(error)


def test_different_sizes_with_image_size_are_each_resized(tmp_path):
  colours = {"a/0.png": ((2, 2), 10), "a/1.png": ((32, 32), 50), "a/2.png": ((40, 24), 90),
             "b/0.png": ((32, 32), 130), "b/1.png": ((7, 13), 170)}
  for name, (shape, colour) in colours.items():
    save_image(tmp_path / name, np.full((*shape, 3), colour, np.uint8))
  ds = load_dataset(str(tmp_path), image_size=16)
  images = np.concatenate([ds.train.images, ds.test.images])
  assert images.shape == (5, 16, 16, 3)
  # Each image keeps its own (uniform) colour at the one documented size.
  assert sorted(images[:, 8, 8, 0].tolist()) == sorted(c for _, c in colours.values())
  assert all(len(np.unique(im)) == 1 for im in images)


def test_one_size_folder_keeps_its_size(tmp_path):
  for i in range(4):
    save_image(tmp_path / f"c{i % 2}" / f"{i}.png", IMAGES[i, :6])  # 6x8, not square
  ds = load_dataset(str(tmp_path))
  assert ds.image_shape == (6, 6, 3)
  got = {im.tobytes() for im in np.concatenate([ds.train.images, ds.test.images])}
  assert got == {IMAGES[i, :6, 1:7].tobytes() for i in range(4)}  # centre crops, exact


@pytest.mark.parametrize("layout", [[], ["a/"], ["train/", "test/"],
                                    ["train/a/", "test/a/"]])
def test_empty_image_folder(tmp_path, layout):
  for folder in layout:
    (tmp_path / folder).mkdir(parents=True)
  with pytest.raises(DatasetError) as error:
    load_dataset(str(tmp_path))
  message = one_line(error)
  assert str(tmp_path) in message and "concatenate" not in message
  assert "No images found" in message or "holds no images" in message


def test_empty_class_folder_is_named(tmp_path):
  for i in range(4):
    save_image(tmp_path / "full" / f"{i}.png", IMAGES[i])
  (tmp_path / "empty").mkdir()
  (tmp_path / "empty" / "notes.txt").write_text("tif files are not read")
  with pytest.raises(DatasetError, match="Class folder .*empty' holds no images"):
    load_dataset(str(tmp_path))


def test_single_image_classes_give_no_test_split(tmp_path):
  for c in range(3):
    save_image(tmp_path / f"c{c}" / "0.png", IMAGES[c])
  with pytest.raises(DatasetError, match="empty test split: every class folder holds "
                                         "one image"):
    load_dataset(str(tmp_path))


def test_empty_test_folder_of_train_test_layout(tmp_path):
  for i in range(3):
    save_image(tmp_path / "train" / "a" / f"{i}.png", IMAGES[i])
  (tmp_path / "test").mkdir()
  with pytest.raises(DatasetError, match="test' holds no class folders"):
    load_dataset(str(tmp_path))


def test_test_class_missing_from_train_is_kept_and_warned_about(tmp_path):
  for i in range(6):
    save_image(tmp_path / "train" / ("cat", "dog")[i % 2] / f"{i}.png", IMAGES[i])
  for i, name in enumerate(("cat", "zebra", "zebra")):
    save_image(tmp_path / "test" / name / f"{i}.png", IMAGES[6 + i])
  with pytest.warns(DatasetWarning, match=r"test classes \['zebra'\] \(2 test images\)"):
    ds = load_dataset(str(tmp_path))
  assert ds.class_names == ("cat", "dog", "zebra") and ds.num_classes == 3
  np.testing.assert_array_equal(ds.test.labels, [0, 2, 2])
  assert len(ds.test) == 3  # nothing dropped


def test_pacs_test_domain_without_images_is_refused(tmp_path):
  for d, domain in enumerate(local.PACS_DOMAINS[:3]):
    for c, name in enumerate(("dog", "house")):
      save_image(tmp_path / domain / name / "0.png", IMAGES[2 * d + c])
  (tmp_path / "sketch").mkdir()
  ds = load_dataset("pacs/photo", data_dir=tmp_path, image_size=8)
  assert set(ds.test.domains) == {0} and 3 not in set(ds.train.domains)
  with pytest.raises(DatasetError, match="test split is empty"):
    load_dataset("pacs/sketch", data_dir=tmp_path, image_size=8)


# ---------------------------------------------------------------------------
# Loader arguments and the final check.


@pytest.mark.parametrize("kwargs,expected", [
    ({"image_size": 0}, "image_size"), ({"image_size": -4}, "image_size"),
    ({"image_size": 2.5}, "image_size"), ({"image_size": True}, "image_size"),
    ({"split_seed": -1}, "split_seed"), ({"split_seed": 0.5}, "split_seed")])
def test_bad_loader_arguments(kwargs, expected):
  with pytest.raises(DatasetError, match=expected):
    load_dataset("digits", **kwargs)


@pytest.mark.parametrize("fraction", [0, 1, -0.2, 1.5, float("nan")])
def test_bad_test_fraction(fraction):
  with pytest.raises(DatasetError, match="test_fraction must be in"):
    local.stratified_split(LABELS, test_fraction=fraction, seed=0)


def test_check_dataset_refuses_what_training_cannot_use():
  good = ImageArrays(IMAGES[:4], np.array([0, 1, 0, 1], np.int32))
  ds = Dataset(good, good, 2, "toy", (0.5,) * 3, (0.2,) * 3)
  assert check_dataset(ds, "toy") is ds
  bad_label = good._replace(labels=np.array([0, 1, 2, 1], np.int32))
  with pytest.raises(DatasetError, match="toy: test label 2 is outside 0..1"):
    check_dataset(ds._replace(test=bad_label), "toy")
  with pytest.raises(DatasetError, match="toy: the train split is empty"):
    check_dataset(ds._replace(train=empty_split((8, 8, 3))), "toy")
  # An evaluation-only set (cifar10_corrupted) may have no train split.
  check_dataset(ds._replace(train=empty_split((8, 8, 3))), "toy", allow_empty_train=True)
  with pytest.raises(DatasetError, match="domains must be one id per image"):
    check_dataset(ds._replace(train=good._replace(domains=np.array([0, 1], np.int32)),
                              domain_names=("a", "b")), "toy")


def test_tfds_records_with_out_of_range_labels(tmp_path):
  records = [{"image": np.full((4, 4, 3), i, np.uint8), "label": 10 + i} for i in range(2)]
  split = tfds_sources.read_split(records, "mock")
  with pytest.raises(DatasetError, match="'mock': train label 11 is outside 0..9"):
    check_dataset(Dataset(split, split, 10, "mock", (), ()), "'mock'")


# ---------------------------------------------------------------------------
# The prepare command.


@pytest.mark.skipif(tfds_sources.tensorflow_available(),
                    reason="TensorFlow installed: catalog preparation would download")
def test_prepare_command_without_tensorflow_prints_one_line(tmp_path):
  result = subprocess.run(
      [sys.executable, "-m", "gca_jax.data.prepare", "cifar10", "--data_dir", str(tmp_path)],
      capture_output=True, text=True, timeout=600, check=False)
  assert result.returncode == prepare.EXIT_FAILURE != 0
  lines = result.stderr.strip().splitlines()
  assert "Traceback" not in result.stderr and result.stdout == ""
  assert lines[-1].startswith("error: Preparing 'cifar10'")
  assert tfds_sources.PREPARE_INSTALL in lines[-1]  # the install from the checkout
  assert not any(line.startswith("error:") for line in lines[:-1])


def test_prepare_main_errors_are_one_line(tmp_path, capsys):
  for argv in (["imagenet100", "--data_dir", str(tmp_path)], ["mnist"]):
    with pytest.raises(SystemExit) as exit_info:
      prepare.main(argv)
    assert exit_info.value.code == prepare.EXIT_FAILURE
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1


# ---------------------------------------------------------------------------
# What used to pass silently.


def pillow_resized(image: np.ndarray, size: int) -> np.ndarray:
  """A square ``image`` resized by Pillow alone (bicubic), for exact comparisons."""
  return np.asarray(Image.fromarray(image).resize((size, size), Image.BICUBIC))


def test_npz_arrays_are_resized_to_the_load_size(tmp_path):
  path = save_npz(tmp_path / "arrays.npz")
  ds = load_dataset(str(path), image_size=4)
  assert ds.image_shape == (4, 4, 3)
  np.testing.assert_array_equal(ds.train.images[2], pillow_resized(IMAGES[2], 4))
  np.testing.assert_array_equal(ds.test.images[0], pillow_resized(IMAGES[9], 4))
  assert ds.mean != load_dataset(str(path)).mean  # statistics of the resized images
  # Upscaled as well; non-square arrays are centre-cropped like folder images.
  assert load_dataset(str(path), image_size=32).image_shape == (32, 32, 3)
  wide = save_npz(tmp_path / "wide.npz", x_train=IMAGES[:9, :6], x_test=IMAGES[9:, :6])
  np.testing.assert_array_equal(load_dataset(str(wide), image_size=6).train.images,
                                IMAGES[:9, :6, 1:7])


def test_encoded_npz_is_resized_to_the_load_size(tmp_path):
  path = save_jpeg_npz(tmp_path / "sizes.npz", [IMAGES[0], IMAGES[1], IMAGES[2, :5, :7]])
  ds = load_dataset(str(path), image_size=8)  # one size for all: no size error
  assert ds.image_shape == (8, 8, 3)
  np.testing.assert_array_equal(ds.train.images[:2], IMAGES[:2])
  good = load_dataset(str(save_jpeg_npz(tmp_path / "good.npz", IMAGES[:3])), image_size=4)
  np.testing.assert_array_equal(good.train.images[1], pillow_resized(IMAGES[1], 4))


def test_npz_trains_at_the_load_size_of_the_config(tmp_path):
  from gca_jax.training import config as configs
  from gca_jax.training import feeds
  config = configs.get_config()
  config.dataset = f"npz:{save_npz(tmp_path / 'arrays.npz')}"
  config.load_size = 4
  assert feeds.load_data(config).image_shape == (4, 4, 3)
  config.load_size = None  # the source's own size
  assert feeds.load_data(config).image_shape == (8, 8, 3)


def test_one_class_dataset_is_refused(tmp_path):
  path = save_npz(tmp_path / "one.npz", y_train=np.zeros(9, int), y_test=np.zeros(3, int),
                  class_names=np.array(["cat", "dog"]))
  with pytest.raises(DatasetError, match="one class 'cat'; kNN and linear-probe "
                                         "accuracy need at least 2 classes") as error:
    load_dataset(str(path))
  assert str(path) in one_line(error)
  for i in range(4):
    save_image(tmp_path / "folder" / "cat" / f"{i}.png", IMAGES[i])
  with pytest.raises(DatasetError, match="one class 'cat'"):
    load_dataset(str(tmp_path / "folder"))
  one = ImageArrays(IMAGES[:4], np.zeros(4, np.int32))
  with pytest.raises(DatasetError, match="toy: every image is labelled with the one "
                                         "class '0'"):
    check_dataset(Dataset(one, one, 1, "toy", (), ()), "toy")
  # Two classes over the splits are enough (the missing one is warned about).
  with pytest.warns(DatasetWarning, match="have no train images"):
    load_dataset(str(save_npz(tmp_path / "two.npz", y_train=np.zeros(9, int),
                              y_test=np.array([0, 1, 1]))))


@pytest.fixture(scope="module")
def bomb_png(tmp_path_factory) -> bytes:
  """A 22 kB PNG of 13400x13400 pixels, beyond Pillow's decompression-bomb limit."""
  path = tmp_path_factory.mktemp("bomb") / "bomb.png"
  Image.new("1", (13400, 13400)).save(path)
  assert 13400 ** 2 > 2 * Image.MAX_IMAGE_PIXELS
  return path.read_bytes()


@pytest.mark.parametrize("image_size", [None, 8])  # header read / full decode
def test_decompression_bomb_in_a_folder_names_the_file(tmp_path, bomb_png, image_size):
  for i in range(4):
    save_image(tmp_path / f"c{i % 2}" / f"{i}.png", IMAGES[i])
  (tmp_path / "c1" / "huge.png").write_bytes(bomb_png)
  with pytest.raises(DatasetError, match="Cannot decode .*huge.png: Image size "
                                         r"\(179560000 pixels\) exceeds limit") as error:
    load_dataset(str(tmp_path), image_size=image_size)
  assert "shrink it or delete it" in one_line(error)


def test_decompression_bomb_in_an_npz_names_the_image(tmp_path, bomb_png):
  path = save_jpeg_npz(tmp_path / "bomb.npz", IMAGES[:2])
  with np.load(path) as data:
    arrays = dict(data)
  blob = np.frombuffer(bomb_png, np.uint8)
  arrays.update(test_jpeg=blob, test_offsets=np.array([0, len(blob)]))
  np.savez(path, **arrays)
  with pytest.raises(DatasetError, match="Cannot decode test image 0 of .*bomb.npz'"
                                         ": Image size") as error:
    load_dataset(str(path), image_size=8)
  one_line(error)


@pytest.mark.parametrize("name", ["npz:", "npz: ", ""])
def test_dataset_name_without_a_path_is_refused(tmp_path, monkeypatch, name):
  for i in range(4):  # the current folder is a valid image folder
    save_image(tmp_path / f"c{i % 2}" / f"{i}.png", IMAGES[i])
  monkeypatch.chdir(tmp_path)
  with pytest.raises(DatasetError, match=f"The dataset name {name!r} names no file: "
                                         "pass 'npz:<path>'") as error:
    load_dataset(name)
  one_line(error)


def test_dataset_name_that_is_not_a_string_is_refused(tmp_path):
  with pytest.raises(DatasetError, match="The dataset name must be a string, got PosixPath"):
    load_dataset(tmp_path)


@pytest.mark.parametrize("folders,expected", [
    (["train"], "has a train/ folder but no test/ folder. An image folder is either"),
    (["test"], "has a test/ folder but no train/ folder. An image folder is either"),
    (["train", "val"], r"no test/ folder \(rename '.*val' to '.*test'\)"),
])
def test_half_of_a_train_test_layout_is_refused(tmp_path, folders, expected):
  for split in folders:
    for i in range(4):
      save_image(tmp_path / split / f"c{i % 2}" / f"{i}.png", IMAGES[i])
  with pytest.raises(DatasetError, match=expected) as error:
    load_dataset(str(tmp_path))
  assert str(tmp_path) in one_line(error)
