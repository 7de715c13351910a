"""Host feeding with grain for large-image datasets (ImageNet-100, PACS).

Images that do not fit on the device are decoded and resized on the host
(the split's ``LazyImages``), batched as uint8 by a ``grain.DataLoader`` and
augmented on the device by ``augment.two_views``. The loader shuffles per
epoch with a seed, gives each JAX process its shard, and its iterator state
(``get_state``/``set_state``) can be saved in a checkpoint.
"""

from __future__ import annotations

import jax
import numpy as np
import grain

from gca_jax.data.base import ImageArrays


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
                shard_options: grain.sharding.ShardOptions | None = None
                ) -> grain.DataLoader:
  """A grain loader of this process's uint8 batches of ``split``.

  Each process gets ``global_batch_size / process_count`` examples per batch
  from its shard (``ShardByJaxProcess`` unless ``shard_options`` is given);
  the remainder of an epoch is dropped. ``worker_count=0`` decodes in the
  calling thread (safe default; multi-process workers need a ``__main__``
  guard and should be drained before exit).
  """
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
                          operations=[batch], worker_count=worker_count)


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


def to_device(batch: dict[str, np.ndarray], device_or_sharding=None) -> dict:
  """Moves a host batch to the device, ready for ``augment.two_views``."""
  return jax.device_put(batch, device_or_sharding)
