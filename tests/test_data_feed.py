"""Feeding: device-side shuffling/batching, resumable state, host grain loader."""

import chex
import grain
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gca_jax.data import FeedState, feed, host_feed, load_dataset
from gca_jax.data.base import ImageArrays, LazyImages

N, BATCH = 103, 16


def test_steps_per_epoch_drops_remainder():
  assert feed.steps_per_epoch(N, BATCH) == 6
  with pytest.raises(ValueError, match="exceeds"):
    feed.steps_per_epoch(10, 16)


class BatchIndicesTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_epoch_batches_are_disjoint_and_deterministic(self):
    indices = self.variant(feed.batch_indices, static_argnums=(3, 4))
    epoch = np.stack([indices(7, 2, step, BATCH, N) for step in range(6)])
    assert epoch.dtype == np.int32 and len(np.unique(epoch)) == 6 * BATCH
    assert epoch.min() >= 0 and epoch.max() < N
    np.testing.assert_array_equal(indices(7, 2, 3, BATCH, N), epoch[3])
    assert not np.array_equal(indices(7, 3, 0, BATCH, N), epoch[0])
    assert not np.array_equal(indices(8, 2, 0, BATCH, N), epoch[0])


def test_batch_indices_with_traced_position():
  @jax.jit
  def at(seed, epoch, step):
    return feed.batch_indices(seed, epoch, step, BATCH, N)
  np.testing.assert_array_equal(at(1, 0, 2), feed.batch_indices(1, 0, 2, BATCH, N))


def test_epoch_is_a_permutation():
  perm = np.asarray(feed.epoch_permutation(0, 5, N))
  np.testing.assert_array_equal(np.sort(perm), np.arange(N))


def test_process_slices_partition_the_global_batch():
  batch = {"x": jnp.arange(BATCH), "y": jnp.arange(BATCH) * 2}
  parts = [feed.process_slice(batch, i, 4) for i in range(4)]
  np.testing.assert_array_equal(np.concatenate([p["x"] for p in parts]), batch["x"])
  assert parts[1]["y"].shape == (4,)
  with pytest.raises(ValueError, match="evenly"):
    feed.process_slice(jnp.arange(10), 0, 4)
  np.testing.assert_array_equal(feed.process_slice(batch["x"]), batch["x"])


def test_feed_state_resumes_the_same_stream():
  steps = feed.steps_per_epoch(N, BATCH)
  state, stream = FeedState(), []
  for _ in range(9):
    stream.append(np.asarray(feed.batch_indices(3, state.epoch, state.step, BATCH, N)))
    state = feed.next_state(state, steps)
  assert state == FeedState(1, 3)
  saved = FeedState(*[int(v) for v in FeedState(1, 1)])  # as a checkpoint would
  np.testing.assert_array_equal(feed.batch_indices(3, *saved, BATCH, N), stream[7])
  assert feed.step_key(0, FeedState(0, 1)) != feed.step_key(0, FeedState(1, 0))


def test_device_batch_gathers_this_process_rows():
  ds = load_dataset("digits")
  split = feed.to_device(ds.train)
  batch = feed.device_batch(split, 0, 1, 2, global_batch_size=32, process_index=1,
                            process_count=2)
  chex.assert_shape(batch.images, (16, 32, 32, 3))
  assert batch.images.dtype == jnp.uint8 and batch.domains is None
  rows = feed.process_slice(feed.batch_indices(0, 1, 2, 32, len(ds.train)), 1, 2)
  np.testing.assert_array_equal(batch.labels, ds.train.labels[np.asarray(rows)])
  lazy = ImageArrays(LazyImages(lambda i: ds.train.images[i], 4, (32, 32, 3)),
                     ds.train.labels[:4])
  with pytest.raises(ValueError, match="host_feed"):
    feed.to_device(lazy)


def test_eval_batches_cover_once():
  indices, mask = feed.eval_batches(10, 4)
  assert indices.shape == (3, 4)
  np.testing.assert_array_equal(indices[mask], np.arange(10))


def lazy_split(n: int = 40) -> ImageArrays:
  images = np.arange(n, dtype=np.uint8)[:, None, None, None] * np.ones((1, 4, 4, 3),
                                                                      np.uint8)
  return ImageArrays(LazyImages(lambda i: images[i], n, (4, 4, 3)),
                     np.arange(n, dtype=np.int32), np.arange(n, dtype=np.int32) % 4)


def test_host_loader_batches_shuffles_and_restores_state():
  loader = host_feed.make_loader(lazy_split(), global_batch_size=8, seed=5)
  iterator = iter(loader)
  first = next(iterator)
  assert first["image"].shape == (8, 4, 4, 3) and first["image"].dtype == np.uint8
  np.testing.assert_array_equal(first["image"][:, 0, 0, 0], first["label"])
  np.testing.assert_array_equal(first["domain"], first["label"] % 4)
  state = iterator.get_state()
  expected = [next(iterator)["label"] for _ in range(6)]  # crosses an epoch
  resumed = iter(loader)
  resumed.set_state(state)
  np.testing.assert_array_equal([next(resumed)["label"] for _ in range(6)], expected)
  assert not np.array_equal(first["label"], np.arange(8))


def test_host_loader_shards_across_processes():
  seen = []
  for index in range(2):
    shard = grain.sharding.ShardOptions(shard_index=index, shard_count=2,
                                        drop_remainder=True)
    loader = host_feed.make_loader(lazy_split(), global_batch_size=8, seed=0,
                                   num_epochs=1, shard_options=shard)
    batches = list(loader)
    assert all(b["label"].shape == (4,) for b in batches)
    seen.append(np.concatenate([b["label"] for b in batches]))
  assert not set(seen[0]) & set(seen[1])
  assert len(set(seen[0]) | set(seen[1])) == 40


def test_eval_loader_is_ordered_and_complete():
  labels = np.concatenate([b["label"] for b in host_feed.eval_loader(lazy_split(10),
                                                                     batch_size=4)])
  np.testing.assert_array_equal(labels, np.arange(10))
