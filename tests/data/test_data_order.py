"""The batch order (`gca_jax.data.order`), the device gather, the host grain loader."""

import chex
import grain
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gca_jax import sharding
from gca_jax.data import loader, order
from gca_jax.data.base import ImageArrays, LazyImages
from gca_jax.training import feeds

N, BATCH = 103, 16


def test_steps_per_epoch_drops_remainder():
  assert order.steps_per_epoch(N, BATCH) == 6
  with pytest.raises(ValueError, match="exceeds"):
    order.steps_per_epoch(10, 16)


class BatchIndicesTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_epoch_batches_are_disjoint_and_deterministic(self):
    indices = self.variant(order.batch_indices, static_argnums=(3, 4))
    epoch = np.stack([indices(7, 2, step, BATCH, N) for step in range(6)])
    assert epoch.dtype == np.int32 and len(np.unique(epoch)) == 6 * BATCH
    assert epoch.min() >= 0 and epoch.max() < N
    np.testing.assert_array_equal(indices(7, 2, 3, BATCH, N), epoch[3])
    assert not np.array_equal(indices(7, 3, 0, BATCH, N), epoch[0])
    assert not np.array_equal(indices(8, 2, 0, BATCH, N), epoch[0])


def test_batch_indices_with_traced_position():
  @jax.jit
  def at(seed, epoch, step):
    return order.batch_indices(seed, epoch, step, BATCH, N)
  np.testing.assert_array_equal(at(1, 0, 2), order.batch_indices(1, 0, 2, BATCH, N))


def test_epoch_is_a_permutation():
  perm = np.asarray(order.epoch_permutation(0, 5, N))
  np.testing.assert_array_equal(np.sort(perm), np.arange(N))


def test_device_feed_batches_are_the_indexed_rows_of_the_split():
  # The training path's gather (DeviceFeed): batch `step` holds exactly the rows
  # batch_indices(seed, step // S, step % S) of the split, uint8, sharded over
  # the mesh's data axis, and a new feed (a resumed run) reads the same batches.
  mesh = sharding.make_mesh()
  batch_size = 2 * jax.device_count()
  n = 5 * batch_size + 3  # 5 full batches per epoch, 3 examples dropped
  images = np.arange(n, dtype=np.uint8)[:, None, None, None] * np.ones((1, 4, 4, 3),
                                                                      np.uint8)
  split = ImageArrays(images, (np.arange(n, dtype=np.int32) * 7) % 10)
  s = order.steps_per_epoch(n, batch_size)
  kwargs = dict(mesh=mesh, seed=11, batch_size=batch_size, steps_per_epoch=s)
  device_feed = feeds.DeviceFeed(split, id_key="label", **kwargs)
  batches = [device_feed.batch(step) for step in range(2 * s + 1)]
  for step, batch in enumerate(batches):
    want = np.asarray(order.batch_indices(11, step // s, step % s, batch_size, n))
    assert batch["image"].dtype == jnp.uint8 and batch["label"].dtype == jnp.int32
    chex.assert_shape(batch["image"], (batch_size, 4, 4, 3))
    np.testing.assert_array_equal(batch["image"], images[want])
    np.testing.assert_array_equal(batch["label"], split.labels[want])
    assert batch["image"].sharding.is_equivalent_to(sharding.batch_sharded(mesh), 4)
  for epoch in range(2):  # an epoch reads each example at most once
    seen = np.concatenate([np.asarray(b["image"])[:, 0, 0, 0]
                           for b in batches[epoch * s:(epoch + 1) * s]])
    assert len(set(seen.tolist())) == s * batch_size
  resumed = feeds.DeviceFeed(split, **kwargs)
  assert set(resumed.batch(s + 2)) == {"image"}
  np.testing.assert_array_equal(resumed.batch(s + 2)["image"], batches[s + 2]["image"])


def lazy_split(n: int = 40) -> ImageArrays:
  images = np.arange(n, dtype=np.uint8)[:, None, None, None] * np.ones((1, 4, 4, 3),
                                                                      np.uint8)
  return ImageArrays(LazyImages(lambda i: images[i], n, (4, 4, 3)),
                     np.arange(n, dtype=np.int32), np.arange(n, dtype=np.int32) % 4)


def loader_batches(split, num_steps, **kwargs):
  iterator = iter(loader.make_loader(split, num_steps=num_steps, **kwargs))
  batches = list(iterator)
  loader.close_iterator(iterator)
  return batches


def test_host_batches_are_the_device_fed_batches_without_duplicates():
  # The reviewer's case: 10 records, batch 4 -> 2 steps per epoch, 2 dropped.
  split = lazy_split(10)
  batches = loader_batches(split, 6, global_batch_size=4, seed=3)
  assert len(batches) == 6
  for step, batch in enumerate(batches):
    want = np.asarray(order.batch_indices(3, step // 2, step % 2, 4, 10))
    np.testing.assert_array_equal(batch["index"], want)
    assert len(set(batch["index"].tolist())) == 4     # no example twice
    assert batch["image"].shape == (4, 4, 4, 3) and batch["image"].dtype == np.uint8
    np.testing.assert_array_equal(batch["image"][:, 0, 0, 0], batch["index"])
    np.testing.assert_array_equal(batch["label"], batch["index"])
    np.testing.assert_array_equal(batch["domain"], batch["index"] % 4)
  for epoch in range(3):  # each epoch reads every example at most once
    seen = np.concatenate([b["index"] for b in batches[2 * epoch:2 * epoch + 2]])
    assert len(set(seen.tolist())) == 8
  assert not np.array_equal(batches[0]["index"], batches[2]["index"])


def test_host_loader_resumes_at_a_step():
  split = lazy_split()
  straight = loader_batches(split, 12, global_batch_size=8, seed=5)
  resumed = loader_batches(split, 5, global_batch_size=8, seed=5, start_step=7)
  for want, got in zip(straight[7:], resumed, strict=True):
    np.testing.assert_array_equal(got["index"], want["index"])
    np.testing.assert_array_equal(got["image"], want["image"])
  endless = iter(loader.make_loader(split, global_batch_size=8, seed=5))
  for want in straight:  # the default stream has no end
    np.testing.assert_array_equal(next(endless)["index"], want["index"])
  loader.close_iterator(endless)


def test_host_loader_splits_global_batches_over_processes():
  split = lazy_split()
  parts = [loader_batches(split, 7, global_batch_size=8, seed=0, process_index=p,
                          process_count=2) for p in range(2)]
  for step, (first, second) in enumerate(zip(*parts, strict=True)):
    assert first["index"].shape == (4,)
    np.testing.assert_array_equal(
        np.concatenate([first["index"], second["index"]]),
        order.batch_indices(0, step // 5, step % 5, 8, 40))
  with pytest.raises(ValueError, match="split"):
    loader.make_loader(split, global_batch_size=9, seed=0, process_count=2)


def test_host_loader_read_threads_keep_the_order():
  split = lazy_split(16)
  want = loader_batches(split, 4, global_batch_size=4, seed=1,
                        read_options=grain.ReadOptions(num_threads=0))
  got = loader_batches(split, 4, global_batch_size=4, seed=1,
                       read_options=grain.ReadOptions(num_threads=4,
                                                      prefetch_buffer_size=2))
  for a, b in zip(want, got, strict=True):
    np.testing.assert_array_equal(a["image"], b["image"])
