"""Datasets read from prepared tensorflow-datasets ``array_record`` files.

Reading uses ``tfds`` data sources, which need neither TensorFlow nor
network access; preparing the catalog datasets once does need TensorFlow
(`PREPARE_INSTALL`, run in the checkout), see ``gca_jax.data.prepare``.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from typing import NamedTuple

import numpy as np

from gca_jax.data import decode
from gca_jax.data.base import (
  Dataset,
  DatasetError,
  ImageArrays,
  LazyImages,
  as_rgb_uint8,
  check_dataset,
  check_size,
  empty_split,
)
from gca_jax.data.local import IMAGENET_MEAN, IMAGENET_STD

IMAGENET100_IMAGE_SIZE = 256
"""Host-side side length of ImageNet-100 images (resize + centre crop);
the device then takes random resized crops of 224 from it."""


class CatalogEntry(NamedTuple):
  """How to read one tfds catalog dataset."""

  tfds_name: str
  train_split: str | None
  test_split: str
  num_classes: int
  mean: tuple[float, float, float]
  std: tuple[float, float, float]
  coarse_label_feature: str | None = None
  """The tfds feature of a second, coarser label level (None: no such level)."""


CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
CATALOG = {
    "cifar10": CatalogEntry("cifar10", "train", "test", 10, CIFAR10_MEAN,
                            CIFAR10_STD),
    # Also labelled with the 20 superclasses that group its 100 classes.
    "cifar100": CatalogEntry("cifar100", "train", "test", 100,
                             (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762),
                             coarse_label_feature="coarse_label"),
    "svhn_cropped": CatalogEntry("svhn_cropped", "train", "test", 10,
                                 (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)),
    # Evaluation only: models are trained on cifar10 and tested here.
    "cifar10_corrupted": CatalogEntry("cifar10_corrupted", None, "test", 10,
                                      CIFAR10_MEAN, CIFAR10_STD),
}


# What installs TensorFlow for preparing, run in the repository's checkout
# (gca_jax is installed from it, not from a package index).
PREPARE_INSTALL = "pip install -e '.[prepare]'"


def prepare_command(name: str, data_dir: str | os.PathLike | None) -> str:
  """The shell command that prepares ``name`` into ``data_dir`` (run in the
  checkout).

  Examples:
    >>> from gca_jax.data import tfds_sources
    >>> tfds_sources.prepare_command("cifar10", "/data/tfds")
    "pip install -e '.[prepare]' && python -m gca_jax.data.prepare cifar10 --data_dir /data/tfds"
  """
  target = f" --data_dir {data_dir}" if data_dir else ""
  if name == "imagenet100":
    return f"python -m gca_jax.data.prepare imagenet100 --manual_dir <dir>{target}"
  return f"{PREPARE_INSTALL} && python -m gca_jax.data.prepare {name}{target}"


def _not_prepared(name: str, data_dir, detail: str = "") -> DatasetError:
  where = f"in data_dir='{data_dir}'" if data_dir else "in the default tfds data_dir"
  return DatasetError(
      f"Dataset '{name}' is not prepared as array_record {where}{detail}. "
      f"Prepare it once, in the repository's checkout, with:\n"
      f"  {prepare_command(name.split('/')[0], data_dir)}\n"
      "or point data_dir (--config.data_dir=<dir>) to a prepared copy, or train on a "
      "local .npz archive of the images (--config.dataset=npz:<file>.npz; the "
      "arrays x_train, y_train, x_test, y_test).")


def _data_source(builder, split: str, name: str, data_dir):
  """``builder``'s data source for ``split``, with tfds errors made actionable."""
  available = list(builder.info.splits.keys())
  if available and split not in available:
    raise DatasetError(f"Dataset '{name}' has no split '{split}'; available "
                       f"splits: {available}.")
  try:
    return builder.as_data_source(split=split)
  except (KeyError, ValueError, FileNotFoundError, AssertionError) as e:
    raise _not_prepared(name, data_dir) from e


def _record(source, index: int, name: str) -> dict:
  try:
    return source[index]
  except DatasetError:
    raise
  except Exception as e:  # tfds/Pillow raise many types for bad records.
    raise DatasetError(f"Record {index} of '{name}' cannot be decoded ({e!r}); "
                       "the prepared files are corrupt: delete the dataset "
                       "folder and prepare it again.") from e


def read_split(source, name: str, coarse_label_feature: str | None = None
               ) -> ImageArrays:
  """Decodes a whole tfds split of equally sized images into memory.

  With ``coarse_label_feature``, that feature of every record becomes the
  split's ``coarse_labels``.
  """
  count = len(source)
  labels = np.empty((count,), np.int32)
  coarse = None if coarse_label_feature is None else np.empty((count,), np.int32)
  if count == 0:
    return empty_split((0, 0, 3))._replace(coarse_labels=coarse)
  first = np.asarray(_record(source, 0, name)["image"])

  def decode_one(i):
    record = _record(source, i, name)
    labels[i] = record["label"]
    if coarse is not None:
      coarse[i] = record[coarse_label_feature]
    image = np.asarray(record["image"], np.uint8)
    if image.shape != first.shape:
      raise DatasetError(f"Record {i} of '{name}' has shape {image.shape}, "
                         f"expected {first.shape}.")
    return image

  images = decode.decode_all(decode_one, count, first.shape, threads=1)
  return ImageArrays(as_rgb_uint8(images), labels, coarse_labels=coarse)


def _tfds():
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  return tfds


def catalog_builder(name: str, data_dir):
  """The tfds builder of catalog ``name`` (``tfds_name[/config]``), array_record."""
  try:
    return _tfds().builder(name, data_dir=data_dir, file_format="array_record")
  except Exception as e:  # DatasetNotFoundError, config errors, ...
    raise DatasetError(f"tensorflow-datasets has no dataset '{name}': {e}") from e


def load_catalog(name: str, *, data_dir=None) -> Dataset:
  """A tfds catalog dataset (see ``CATALOG``), decoded into memory.

  ``name`` is a ``CATALOG`` key, optionally with a tfds config:
  ``"cifar10_corrupted/gaussian_noise_5"`` (corruption and severity 1-5).
  cifar10_corrupted has a test split only; its ``train`` split is empty.
  CIFAR-100's splits also carry ``coarse_labels``, its 20 superclasses
  (named by ``coarse_class_names``); the other sources' are None.
  """
  base, _, config = name.partition("/")
  entry = CATALOG[base]
  if base == "cifar10_corrupted" and not config:
    raise DatasetError(
        "Name the corruption and severity, e.g. 'cifar10_corrupted/"
        "gaussian_noise_5' (tfds configs of cifar10_corrupted: "
        "<corruption>_<1..5>).")
  builder = catalog_builder(name, data_dir)
  coarse = entry.coarse_label_feature
  test = read_split(_data_source(builder, entry.test_split, name, data_dir), name, coarse)
  if entry.train_split is None:
    train = empty_split(test.images.shape[1:])
  else:
    train = read_split(_data_source(builder, entry.train_split, name, data_dir),
                       name, coarse)
  num_coarse = 0 if coarse is None else builder.info.features[coarse].num_classes
  coarse_names = () if coarse is None else _class_names(builder, coarse)
  return check_dataset(
      Dataset(train, test, entry.num_classes, name, entry.mean, entry.std,
              _class_names(builder, "label"), num_coarse_classes=num_coarse,
              coarse_class_names=coarse_names),
      f"Dataset '{name}'", allow_empty_train=entry.train_split is None)


def _class_names(builder, feature: str) -> tuple[str, ...]:
  """The names of ``builder``'s ClassLabel ``feature`` (() if it has none)."""
  return tuple(getattr(builder.info.features[feature], "names", ()) or ())


def imagenet100_builder(data_dir):
  """The ImageNet-100 tfds builder writing/reading ``data_dir`` as array_record."""
  from gca_jax.data import imagenet100  # pylint: disable=g-import-not-at-top
  return imagenet100.ImageNet100(data_dir=data_dir, file_format="array_record")


def _decode_record(source, name: str, image_size: int, i: int) -> np.ndarray:
  return decode.decode_image(_record(source, i, name)["image"], size=image_size,
                             what=f"record {i} of '{name}'")


def _lazy_tfds_images(source, name: str, image_size: int) -> ImageArrays:
  """Labels read eagerly, images decoded (and resized) only when indexed."""
  count = len(source)
  labels = np.empty((count,), np.int32)
  for i in range(count):
    labels[i] = _record(source, i, name)["label"]

  decode_one = functools.partial(_decode_record, source, name, image_size)
  return ImageArrays(LazyImages(decode_one, count, (image_size, image_size, 3)),
                     labels)


def load_imagenet100(*, data_dir=None,
                     image_size: int = IMAGENET100_IMAGE_SIZE) -> Dataset:
  """ImageNet-100 (CMC class list) from ``data_dir``, images decoded lazily.

  Prepared once from a manual ImageNet download by
  ``gca_jax.data.prepare`` (no TensorFlow). Test is ImageNet's validation
  set of the 100 classes. Images are resized/centre-cropped on the host to
  ``image_size``; labels are read eagerly (one pass over the records).
  """
  image_size = check_size(image_size)
  tfds = _tfds()
  from gca_jax.data import imagenet100  # pylint: disable=g-import-not-at-top
  builder = imagenet100_builder(data_dir)
  if not builder.is_prepared():
    raise DatasetError(
        "ImageNet-100 needs a manual download and is not prepared"
        f"{f' in {data_dir}' if data_dir else ''}.\n"
        f"{imagenet100.MANUAL_DOWNLOAD_INSTRUCTIONS}")
  decoders = {"image": tfds.decode.SkipDecoding()}
  splits = {}
  for split in ("train", "validation"):
    source = builder.as_data_source(split=split, decoders=decoders)
    splits[split] = _lazy_tfds_images(source, "imagenet100", image_size)
  return check_dataset(
      Dataset(splits["train"], splits["validation"], len(imagenet100.CLASSES),
              "imagenet100", IMAGENET_MEAN, IMAGENET_STD, imagenet100.CLASSES),
      f"ImageNet-100{f' in {data_dir}' if data_dir else ''}")


def tensorflow_available() -> bool:
  """Whether TensorFlow is importable (needed only to prepare catalog sets)."""
  return importlib.util.find_spec("tensorflow") is not None
