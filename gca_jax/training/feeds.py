"""The batches a run trains on: ``feed.batch(step) -> {"image", ...}``.

Both feeds give, for global step ``step``, the examples
``gca_jax.data.order.batch_indices(seed, epoch, step_in_epoch)`` (one
permutation per epoch, the remainder dropped), as a dict of global arrays
sharded over the mesh's data axis: ``"image"`` (uint8) and, when the
objective builds a target plan, its int32 ids (``"domain"``, ``"label"``
and, for the hierarchical target, ``"coarse_label"``).
The step is therefore the data position: a resumed run reads exactly the
batches the interrupted one would have read.

* `DeviceFeed`: the whole uint8 split lives on the devices (CIFAR-10's train
  split is 150 MB) and a batch is a jitted gather, no host work per image.
* `HostFeed`: datasets too large for device memory (``LazyImages``:
  ImageNet-100, PACS at full size, large image folders) are decoded by a
  grain loader (`gca_jax.data.loader`), each process its own rows.

`load_data` loads a config's dataset and applies ``config.train_examples``
(`class_balanced_subset`).
"""

from __future__ import annotations

import functools

import jax
import numpy as np

from gca_jax import sharding
from gca_jax.data import loader, order
from gca_jax.data.base import ImageArrays
from gca_jax.training.config import ConfigError


def class_balanced_subset(split: ImageArrays, num_examples: int, seed: int) -> ImageArrays:
  """``num_examples`` examples of ``split``, as equal per class as possible.

  Deterministic in ``seed``: each class's examples are shuffled by one
  generator and the first ones kept (fewer examples than classes is a
  ConfigError: no class is dropped); classes too small to give their share
  give all they have and the others make up the rest. Keeps the split's
  order.
  """
  if num_examples > len(split):
    raise ConfigError(f"config.train_examples={num_examples} exceeds the "
                      f"{len(split)} examples of the train split")
  labels = np.asarray(split.labels)
  classes = len(np.unique(labels))
  if num_examples < classes:  # classes would be dropped: tested, never trained on
    raise ConfigError(f"config.train_examples={num_examples} is below the {classes} classes "
                      "of the train split, so the subset would drop classes; use at least "
                      f"{classes} (or 0: the whole split)")
  rng = np.random.default_rng(seed)
  by_class = [rng.permutation(np.flatnonzero(labels == c)) for c in np.unique(labels)]
  taken = [0] * len(by_class)
  remaining = num_examples
  while remaining:  # round-robin over the classes that have examples left
    open_classes = [i for i, members in enumerate(by_class) if taken[i] < len(members)]
    share = max(remaining // len(open_classes), 1)
    for i in open_classes:
      extra = min(share, len(by_class[i]) - taken[i], remaining)
      taken[i] += extra
      remaining -= extra
      if not remaining:
        break
  indices = np.sort(np.concatenate([m[:n] for m, n in zip(by_class, taken)]))
  return split.take(indices)


def load_data(config):
  """The dataset of ``config`` (its train split subsampled if
  ``config.train_examples`` > 0); raises gca_jax.data.DatasetError."""
  from gca_jax import data  # pylint: disable=g-import-not-at-top
  dataset = data.load_dataset(config.dataset, data_dir=config.data_dir,
                              split_seed=config.split_seed, image_size=config.load_size)
  if config.train_examples:
    dataset = dataset._replace(train=class_balanced_subset(
        dataset.train, config.train_examples, config.seed))
  return dataset


# Batch field -> the ImageArrays field that holds its per-example ids.
_ID_FIELDS = {"domain": "domains", "label": "labels", "coarse_label": "coarse_labels"}


def _id_keys(id_key) -> tuple[str, ...]:
  return () if id_key is None else (id_key,) if isinstance(id_key, str) else tuple(id_key)


def split_ids(split: ImageArrays, id_key: str | None) -> np.ndarray | None:
  """The int32 ids of ``split`` a target plan is built from (None: no target):
  ``id_key`` is ``"domain"``, ``"label"`` or ``"coarse_label"``."""
  if id_key is None:
    return None
  ids = getattr(split, _ID_FIELDS[id_key])
  if ids is None:
    raise ConfigError(f"the train split has no {_ID_FIELDS[id_key]} (batch field "
                      f"{id_key!r}) for the target plan")
  return np.asarray(ids, np.int32)


class DeviceFeed:
  """Batches gathered from a device-resident split (see module doc)."""

  def __init__(self, split: ImageArrays, *, mesh, seed: int, batch_size: int,
               steps_per_epoch: int, id_key: str | None = None):
    replicated = sharding.replicated(mesh)
    self._arrays = {"image": sharding.global_array(split.images, replicated)}
    for key in _id_keys(id_key):
      self._arrays[key] = sharding.global_array(split_ids(split, key), replicated)

    @functools.partial(jax.jit, out_shardings=sharding.batch_sharded(mesh))
    def gather(arrays, step):
      epoch, step_in_epoch = jax.numpy.divmod(step, steps_per_epoch)
      indices = order.batch_indices(seed, epoch, step_in_epoch, batch_size, len(split))
      return {name: array[indices] for name, array in arrays.items()}

    self._gather = gather

  def batch(self, step: int) -> dict:
    return self._gather(self._arrays, np.int32(step))

  def close(self) -> None:
    pass


class HostFeed:
  """Batches decoded on the host by a grain loader (see module doc)."""

  def __init__(self, split: ImageArrays, *, mesh, seed: int, batch_size: int,
               total_steps: int, start_step: int, worker_count: int = 0,
               id_key: str | None = None):
    try:
      batches = loader.make_loader(split, global_batch_size=batch_size, seed=seed,
                                     start_step=start_step,
                                     num_steps=total_steps - start_step,
                                     worker_count=worker_count)
    except ValueError as e:
      raise ConfigError(str(e)) from None
    self._iterator = iter(batches)
    self._keys = ("image", *_id_keys(id_key))
    # The loader's batches carry labels and domains; coarse labels are looked
    # up by the batch's example indices.
    self._coarse = (split_ids(split, "coarse_label") if "coarse_label" in self._keys
                    else None)
    self._sharding = sharding.batch_sharded(mesh)

  def batch(self, step: int) -> dict:
    del step  # the loader started at the run's step and follows it
    batch = next(self._iterator)  # decoded while the device steps
    if self._coarse is not None:
      batch["coarse_label"] = self._coarse[np.asarray(batch["index"])]
    return {k: sharding.process_local_array(batch[k], self._sharding)
            for k in self._keys}

  def close(self) -> None:
    loader.close_iterator(self._iterator)


def make_feed(run, start_step: int):
  """The feed of ``run``'s train split from global step ``start_step``: on
  the devices if the split is in memory, else a host loader."""
  config, split = run.config, run.dataset.train
  kwargs = dict(mesh=run.mesh, seed=config.seed, batch_size=config.batch_size,
                id_key=run.objective.id_key)
  if split.in_memory:
    return DeviceFeed(split, steps_per_epoch=run.steps_per_epoch, **kwargs)
  return HostFeed(split, total_steps=config.epochs * run.steps_per_epoch,
                  start_step=start_step, worker_count=config.data_workers, **kwargs)
