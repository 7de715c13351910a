"""Device-resident feeding: shuffle and batch inside jit.

For small-image datasets (CIFAR, digits) the whole uint8 split lives on the
device (CIFAR-10 train is 150 MB) and a batch is a gather by indices computed
from ``(seed, epoch, step)`` (`batch_indices`): no host work per image, and
exact resumption from the step. `gca_jax.training.feeds` gathers the global batch of
``state.step`` from the replicated split inside its jitted step, identically
on every process, and the step shards the work over the devices; the host
feed (`gca_jax.data.host_feed`) reads the same indices for large images.

`to_device`/`device_batch` (with `process_slice` for one process's rows) are
the standalone form of the gather, used by the input-pipeline benchmark.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gca_jax.data.base import ImageArrays


class FeedState(NamedTuple):
  """Position in the stream: the next batch is ``step`` of ``epoch``.

  Two ints that a checkpoint saves alongside the train state (whose global
  step ``epoch * steps_per_epoch + step`` alone fixes the batch sequence).
  """

  epoch: int = 0
  step: int = 0


def steps_per_epoch(num_examples: int, global_batch_size: int) -> int:
  """Full batches per epoch; the remainder is dropped (reshuffled next epoch)."""
  if global_batch_size <= 0:
    raise ValueError(f"global_batch_size must be positive, got {global_batch_size}.")
  steps = num_examples // global_batch_size
  if steps == 0:
    raise ValueError(f"global_batch_size={global_batch_size} exceeds the "
                     f"{num_examples} examples of the split; lower it.")
  return steps


def epoch_permutation(seed, epoch, num_examples: int) -> jax.Array:
  """The order of examples in ``epoch``: a permutation keyed by fold_in(seed, epoch)."""
  key = jax.random.fold_in(jax.random.key(seed), epoch)
  return jax.random.permutation(key, num_examples).astype(jnp.int32)


@functools.partial(jax.jit, static_argnames=("global_batch_size", "num_examples"))
def batch_indices(seed, epoch, step, global_batch_size: int,
                  num_examples: int) -> jax.Array:
  """int32 indices of the global batch ``step`` of ``epoch``.

  Deterministic in ``(seed, epoch, step)``; within an epoch, batches are
  disjoint. ``seed``, ``epoch`` and ``step`` may be traced.
  """
  perm = epoch_permutation(seed, epoch, num_examples)
  return jax.lax.dynamic_slice(perm, (step * global_batch_size,),
                               (global_batch_size,))


def process_slice(global_batch, process_index: int | None = None,
                  process_count: int | None = None):
  """This process's contiguous rows of a global batch (array or pytree).

  Defaults to ``jax.process_index()`` of ``jax.process_count()``; the global
  batch size must divide evenly.
  """
  index = jax.process_index() if process_index is None else process_index
  count = jax.process_count() if process_count is None else process_count

  def take(x):
    if x.shape[0] % count:
      raise ValueError(f"Global batch of {x.shape[0]} does not split evenly "
                       f"over {count} processes.")
    size = x.shape[0] // count
    return x[index * size:(index + 1) * size]

  return jax.tree.map(take, global_batch)


class DeviceSplit(NamedTuple):
  """A split held on the device: uint8 images, int32 labels (and domains)."""

  images: jax.Array
  labels: jax.Array
  domains: jax.Array | None = None


def to_device(split: ImageArrays, device_or_sharding=None) -> DeviceSplit:
  """Copies an in-memory split to the device (replicated by default)."""
  if not split.in_memory:
    raise ValueError("This split decodes images lazily (large images); feed it "
                     "with gca_jax.data.host_feed instead of keeping it on device.")
  put = functools.partial(jax.device_put, device=device_or_sharding)
  domains = None if split.domains is None else put(np.asarray(split.domains, np.int32))
  return DeviceSplit(put(np.asarray(split.images, np.uint8)),
                     put(np.asarray(split.labels, np.int32)), domains)


@functools.partial(jax.jit, static_argnames=("global_batch_size", "process_index",
                                             "process_count"))
def device_batch(split: DeviceSplit, seed, epoch, step, *, global_batch_size: int,
                 process_index: int = 0, process_count: int = 1) -> DeviceSplit:
  """This process's rows of global batch ``(epoch, step)``, gathered on device.

  Jittable end to end; pass ``process_index=jax.process_index()`` and
  ``process_count=jax.process_count()`` when running on several hosts.
  """
  indices = batch_indices(seed, epoch, step, global_batch_size,
                          split.labels.shape[0])
  indices = process_slice(indices, process_index, process_count)
  return jax.tree.map(lambda x: None if x is None else x[indices], split)

