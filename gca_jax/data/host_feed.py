"""Host feeding with grain for large-image datasets (ImageNet-100, PACS).

Images that do not fit on the device are decoded and resized on the host
(the split's ``LazyImages``), batched as uint8 by a ``grain.DataLoader`` and
augmented on the device by ``augment.two_views``. The loader shuffles per
epoch with a seed, gives each JAX process its shard, and its iterator state
(``get_state``/``set_state``) can be saved in a checkpoint.

`gca_jax.train` uses `make_loader` for the train split of such datasets
(each process's uint8 rows become one batch-sharded global array with
`to_global_array`) and `process_eval_loader` to embed whole splits for the
kNN monitor and the linear probe.
"""

from __future__ import annotations

import jax
import numpy as np
import grain

from gca_jax.data.base import ImageArrays


def _allow_worker_processes(worker_count: int) -> None:
  """grain's worker processes read absl flags; outside an absl app (a script,
  a notebook, a test) mark the flags parsed so their defaults apply."""
  if worker_count:
    from absl import flags  # pylint: disable=g-import-not-at-top
    if not flags.FLAGS.is_parsed():
      flags.FLAGS.mark_as_parsed()


class SplitSource:
  """A grain random-access source over an ``ImageArrays`` split.

  Record ``i`` is ``{"image": uint8 (H, W, C), "label": int32}`` plus
  ``"domain"`` when the split has domains; reading a lazy split decodes the
  image here, i.e. in grain's worker (or the main process when
  ``worker_count=0``).
  """

  def __init__(self, split: ImageArrays):
    self._split = split

  def __len__(self) -> int:
    return len(self._split)

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    index = int(index)
    record = {"image": np.asarray(self._split.images[index], np.uint8),
              "label": np.int32(self._split.labels[index])}
    if self._split.domains is not None:
      record["domain"] = np.int32(self._split.domains[index])
    return record

  def __repr__(self) -> str:
    return f"SplitSource(num_records={len(self)})"


def make_loader(split: ImageArrays, *, global_batch_size: int, seed: int,
                num_epochs: int | None = None, shuffle: bool = True,
                worker_count: int = 0,
                shard_options: grain.sharding.ShardOptions | None = None,
                read_options: grain.ReadOptions | None = None
                ) -> grain.DataLoader:
  """A grain loader of this process's uint8 batches of ``split``.

  Each process gets ``global_batch_size / process_count`` examples per batch
  from its shard (``ShardByJaxProcess`` unless ``shard_options`` is given);
  the remainder of an epoch is dropped. ``worker_count=0`` decodes in the
  calling thread (safe default; multi-process workers need a ``__main__``
  guard and should be drained before exit). ``read_options`` sets grain's
  reading threads and prefetch buffer (default: 16 threads, 500 records).
  """
  _allow_worker_processes(worker_count)
  shard_options = shard_options or grain.sharding.ShardByJaxProcess(
      drop_remainder=True)
  if global_batch_size % shard_options.shard_count:
    raise ValueError(f"global_batch_size={global_batch_size} does not split "
                     f"over {shard_options.shard_count} processes.")
  sampler = grain.samplers.IndexSampler(
      num_records=len(split), shard_options=shard_options, shuffle=shuffle,
      num_epochs=num_epochs, seed=seed)
  batch = grain.transforms.Batch(
      batch_size=global_batch_size // shard_options.shard_count,
      drop_remainder=True)
  return grain.DataLoader(data_source=SplitSource(split), sampler=sampler,
                          operations=[batch], worker_count=worker_count,
                          read_options=read_options)


def eval_loader(split: ImageArrays, *, batch_size: int) -> grain.DataLoader:
  """One ordered pass over ``split`` in this process (no shuffling, no sharding).

  The last batch may be smaller.
  """
  sampler = grain.samplers.IndexSampler(
      num_records=len(split), shard_options=grain.sharding.NoSharding(),
      shuffle=False, num_epochs=1)
  return grain.DataLoader(
      data_source=SplitSource(split), sampler=sampler,
      operations=[grain.transforms.Batch(batch_size=batch_size)], worker_count=0)


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


def to_global_array(local_batch: np.ndarray, sharding) -> jax.Array:
  """One global array from every process's rows, split along axis 0.

  ``local_batch`` is this process's contiguous block of the global batch (a
  `make_loader` / `process_eval_loader` batch); ``sharding`` shards axis 0
  over the devices of all processes, e.g. ``NamedSharding(mesh, P("data"))``.
  On one process this is ``jax.device_put(local_batch, sharding)``.
  """
  local_batch = np.asarray(local_batch)
  global_shape = (local_batch.shape[0] * jax.process_count(), *local_batch.shape[1:])
  return jax.make_array_from_process_local_data(sharding, local_batch, global_shape)


def close_iterator(iterator) -> None:
  """Stops a loader iterator's reader threads / worker processes (idempotent).

  Prefetching runs ahead of the consumer; close an endless training stream
  once it is no longer read.
  """
  pipeline = getattr(iterator, "_iterator", iterator)
  close = getattr(pipeline, "close", None)
  if close is not None:
    close()


def to_device(batch: dict[str, np.ndarray], device_or_sharding=None) -> dict:
  """Moves a host batch to the device, ready for ``augment.two_views``."""
  return jax.device_put(batch, device_or_sharding)
