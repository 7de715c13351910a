"""Input pipelines: dataset sources, on-device augmentation and feeding.

``load_dataset(name)`` gives uint8 NHWC arrays (default: the embedded digits,
no download); ``augment.two_views`` makes SimCLR-style views on the device;
``order`` gives the shuffled batch indices of each step (gathered from
device-resident splits by `gca_jax.training.feeds`), and
``loader`` streams large-image datasets with grain. An unusable file,
field or argument raises ``DatasetError`` (one line naming it); a usable
dataset whose metrics need a caveat gives a ``DatasetWarning``.
"""

import gca_jax._train_extra  # noqa: F401  (without the train extra: one line naming it)
from gca_jax.data import augment, order
from gca_jax.data.base import (Dataset, DatasetError, DatasetWarning, ImageArrays,
                               LazyImages)
from gca_jax.data.registry import DEFAULT_DATASET, NAMES, load_dataset

__all__ = [
    "DEFAULT_DATASET", "NAMES", "Dataset", "DatasetError", "DatasetWarning", "ImageArrays",
    "LazyImages", "augment", "load_dataset", "order",
]
