"""The grain loader of large-image datasets (ImageNet-100, PACS).

Images that do not fit on the device are decoded on the host (the split's
``LazyImages``: decoded, resized and centre-cropped to a square by
`gca_jax.data.decode.resize_center_crop`), batched as uint8 and augmented on
the device by ``augment.two_views``.

`make_loader` builds training batches from exactly the indices of the
device-fed path, `gca_jax.data.order.batch_indices(seed, epoch, step, ...)`:
every epoch is a fresh permutation of the split cut into full global batches
(the remainder is dropped), so a batch never holds an example twice and an
epoch reads each example at most once. A loader is a ``grain.MapDataset``
over global step numbers whose element is this process's rows of that step's
batch, so the data position is just the training step: a resumed run builds
the loader at its restored step and reads the same batches as an
uninterrupted one (no iterator state to checkpoint).

Known difference from SimCLR: the host keeps only the central square of each
image (``resize_center_crop``), so the device's RandomResizedCrop samples its
crops from that square and never sees the sides of, e.g., a 4:3 photo.

`gca_jax.training.feeds` uses `make_loader` for the train split of such
datasets; placing each process's uint8 rows on the devices, as one
batch-sharded global array, is `gca_jax.sharding.process_local_array`.
`gca_jax.evaluation.embed_host_split` uses `process_eval_loader` to embed
whole splits for the kNN monitor and the linear probe.
"""

from __future__ import annotations

import multiprocessing
import os
import threading

import grain
import jax
import numpy as np

from gca_jax.data import order
from gca_jax.data.base import ImageArrays


def _allow_worker_processes(worker_count: int) -> None:
  """grain's worker processes read absl flags; outside an absl app (a script,
  a notebook, a test) mark the flags parsed so their defaults apply."""
  if worker_count:
    from absl import flags  # pylint: disable=g-import-not-at-top
    if not flags.FLAGS.is_parsed():
      flags.FLAGS.mark_as_parsed()


def default_read_options() -> grain.ReadOptions:
  """Reader threads (each decodes whole batches) and a buffer of as many
  batches again: up to ``2 * num_threads`` decoded batches are held."""
  threads = max(1, min(8, os.cpu_count() or 1))
  return grain.ReadOptions(num_threads=threads, prefetch_buffer_size=2 * threads)


class _StepBatch:
  """``step -> this process's rows of global batch `step``` (a grain map).

  Global step ``s`` is step ``s % steps_per_epoch`` of epoch
  ``s // steps_per_epoch``; its examples are `order.batch_indices` of that
  position, of which process ``p`` of ``P`` takes the contiguous rows
  ``[p * B / P, (p + 1) * B / P)``. The epoch permutations are computed once
  (with JAX, as on the device) and cached for the reader threads.
  """

  def __init__(self, split: ImageArrays, *, seed: int, global_batch_size: int,
               process_index: int, process_count: int):
    self._split = split
    self._seed = seed
    self._global_batch_size = global_batch_size
    self._local_batch_size = global_batch_size // process_count
    self._offset = process_index * self._local_batch_size
    self.steps_per_epoch = order.steps_per_epoch(len(split), global_batch_size)
    self._lock = threading.Lock()
    self._orders: dict[int, np.ndarray] = {}

  def __getstate__(self):  # grain worker processes receive a pickled copy
    state = dict(self.__dict__)
    del state["_lock"], state["_orders"]
    return state

  def __setstate__(self, state):
    self.__dict__.update(state, _lock=threading.Lock(), _orders={})

  def _order(self, epoch: int) -> np.ndarray:
    with self._lock:
      permutation = self._orders.get(epoch)
      if permutation is None:
        if multiprocessing.parent_process() is not None:
          # A grain worker process: compute on the CPU, not the accelerator.
          jax.config.update("jax_platforms", "cpu")
        permutation = np.asarray(order.epoch_permutation(self._seed, epoch, len(self._split)))
        for old in sorted(self._orders)[:-2]:  # the stream crosses epochs in order
          del self._orders[old]
        self._orders[epoch] = permutation
      return permutation

  def indices(self, step: int) -> np.ndarray:
    """Example indices of this process's rows of global step ``step``."""
    epoch, step_in_epoch = divmod(int(step), self.steps_per_epoch)
    start = step_in_epoch * self._global_batch_size + self._offset
    return self._order(epoch)[start:start + self._local_batch_size]

  def __call__(self, step: int) -> dict[str, np.ndarray]:
    indices = self.indices(step)
    split = self._split
    batch = {"image": np.stack([np.asarray(split.images[i], np.uint8) for i in indices]),
             "label": np.asarray(split.labels, np.int32)[indices],
             "index": indices.astype(np.int32)}
    if split.domains is not None:
      batch["domain"] = np.asarray(split.domains, np.int32)[indices]
    return batch


def make_loader(split: ImageArrays, *, global_batch_size: int, seed: int,
                start_step: int = 0, num_steps: int | None = None,
                process_index: int | None = None, process_count: int | None = None,
                worker_count: int = 0,
                read_options: grain.ReadOptions | None = None) -> grain.IterDataset:
  """This process's uint8 training batches of ``split`` from global step
  ``start_step`` on (``num_steps`` of them; None: endless).

  Batch ``s`` is ``{"image": uint8 (B / P, H, W, C), "label", "index"
  (int32 example indices), "domain" (if the split has domains)}``, the rows
  of process ``p`` of ``P`` (default ``jax.process_index()`` of
  ``jax.process_count()``) of the global batch
  ``order.batch_indices(seed, s // S, s % S, B, len(split))``, ``S`` the full
  batches per epoch (the remainder of every epoch is dropped; the next epoch
  is another permutation) -- the batches of the device-fed path.

  Decoding runs in grain's reader threads (``read_options``, default
  `default_read_options`), a whole batch per thread, ahead of the consumer;
  ``worker_count > 0`` moves the pipeline into that many worker processes
  (they need a ``__main__`` guard). Close an iterator that is no longer read
  with `close_iterator`.
  """
  index = jax.process_index() if process_index is None else process_index
  count = jax.process_count() if process_count is None else process_count
  if global_batch_size % count:
    raise ValueError(f"global_batch_size={global_batch_size} does not split "
                     f"over {count} processes.")
  batches = _StepBatch(split, seed=seed, global_batch_size=global_batch_size,
                       process_index=index, process_count=count)
  stop = (np.iinfo(np.int64).max if num_steps is None
          else start_step + max(0, num_steps))
  dataset = grain.MapDataset.range(start_step, stop).map(batches)
  dataset = dataset.to_iter_dataset(read_options or default_read_options())
  if worker_count:
    _allow_worker_processes(worker_count)
    dataset = dataset.mp_prefetch(grain.MultiprocessingOptions(num_workers=worker_count))
  return dataset


class _ProcessEvalSource:
  """This process's rows of fixed-size global evaluation batches of a split.

  Global batch ``b`` covers examples ``[b * B, (b + 1) * B)``; process ``p``
  of ``P`` reads rows ``[p * B / P, (p + 1) * B / P)`` of it. Rows past the
  end of the split repeat its last example (padding; drop them after).
  """

  def __init__(self, split: ImageArrays, global_batch_size: int,
               process_index: int, process_count: int):
    self._images = split.images
    self._num_examples = len(split)
    self._global_batch_size = global_batch_size
    self._local_batch_size = global_batch_size // process_count
    self._offset = process_index * self._local_batch_size
    self._num_batches = -(-self._num_examples // global_batch_size)

  def __len__(self) -> int:
    return self._num_batches * self._local_batch_size

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    batch, row = divmod(int(index), self._local_batch_size)
    example = min(batch * self._global_batch_size + self._offset + row,
                  self._num_examples - 1)
    return {"image": np.asarray(self._images[example], np.uint8)}

  def __repr__(self) -> str:
    return (f"_ProcessEvalSource(num_records={len(self)}, "
            f"global_batch_size={self._global_batch_size})")


def process_eval_loader(split: ImageArrays, *, global_batch_size: int,
                        process_index: int | None = None,
                        process_count: int | None = None, worker_count: int = 0,
                        read_options: grain.ReadOptions | None = None
                        ) -> grain.DataLoader:
  """One ordered pass over ``split`` in fixed-size global batches, this
  process's rows only (multi-host evaluation without decoding twice).

  Yields ``{"image": uint8 (global_batch_size / process_count, H, W, C)}``;
  together the processes' batches ``b`` form global batch ``b`` = examples
  ``[b * global_batch_size, (b + 1) * global_batch_size)``, the last one
  padded by repeating the split's last example (``num_valid_in_batch`` says
  how many rows are real). Defaults to ``jax.process_index()`` of
  ``jax.process_count()``.
  """
  index = jax.process_index() if process_index is None else process_index
  count = jax.process_count() if process_count is None else process_count
  if global_batch_size % count:
    raise ValueError(f"global_batch_size={global_batch_size} does not split "
                     f"over {count} processes.")
  if not len(split):
    raise ValueError("Cannot build an evaluation loader over an empty split.")
  _allow_worker_processes(worker_count)
  source = _ProcessEvalSource(split, global_batch_size, index, count)
  sampler = grain.samplers.IndexSampler(
      num_records=len(source), shard_options=grain.sharding.NoSharding(),
      shuffle=False, num_epochs=1)
  return grain.DataLoader(
      data_source=source, sampler=sampler,
      operations=[grain.transforms.Batch(batch_size=global_batch_size // count)],
      worker_count=worker_count, read_options=read_options)


def num_valid_in_batch(batch_index: int, num_examples: int,
                       global_batch_size: int) -> int:
  """Real (unpadded) rows of global batch ``batch_index`` of `process_eval_loader`."""
  return max(0, min(global_batch_size, num_examples - batch_index * global_batch_size))


def close_iterator(iterator) -> None:
  """Stops a loader iterator's reader threads / worker processes (idempotent).

  Prefetching runs ahead of the consumer; close an endless training stream
  once it is no longer read.
  """
  pipeline = getattr(iterator, "_iterator", iterator)
  close = getattr(pipeline, "close", None)
  if close is not None:
    close()

