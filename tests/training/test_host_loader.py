"""Training from the host loader (grain) for datasets too large for the device.

A tiny PACS-layout folder (2 domains x 2 classes x 10 PNGs of 40x40, crop
32) is loaded with the in-memory limit set to 0 bytes, so its splits are
``LazyImages`` exactly as ImageNet-100 or full-size PACS: training, the kNN
monitor and the linear probe must read them through grain, the batches must
be those of the device-fed path, and a stopped and resumed run must read
exactly the batches of an uninterrupted one (its final parameters are
compared bitwise: same programs, same inputs, on CPU).
"""

import pytest
import json

import numpy as np

from tests.conftest import saved_params
from tests.training.conftest import BATCH, host_config

def test_dataset_is_lazy(pacs_root, lazy_pacs):
  from gca_jax.training import feeds
  dataset = feeds.load_data(host_config(pacs_root))
  assert not dataset.train.in_memory and not dataset.test.in_memory
  assert (len(dataset.train), len(dataset.test)) == (32, 8)
  assert dataset.image_shape == (32, 32, 3)


@pytest.mark.slow
def test_host_fed_run_trains_and_evaluates(pacs_root, lazy_pacs, tmp_path):
  from gca_jax import training
  from gca_jax.training import restore
  config = host_config(pacs_root, eval_every_epochs=1, linear_probe=True,
                       linear_probe_steps=20, probe_random_init=False)
  result = training.train_and_evaluate(config, tmp_path).metrics
  written = json.loads((tmp_path / "metrics.json").read_text())
  assert written == result
  assert result["epochs"] == 2 and result["steps"] == 2 * 32 // BATCH
  assert np.isfinite(result["final_loss"])
  assert 0.0 <= result["knn_acc"] <= 1.0
  assert 0.0 <= result["linear_probe_acc"] <= 1.0

  # The evaluation features from the host loader are those of the decoded split.
  from gca_jax import evaluation
  run, state = restore.load_trained(tmp_path)
  dataset, embed = run.dataset, run.embed_fn
  variables = state.variables
  for split in (dataset.train, dataset.test):
    assert not split.in_memory
    streamed, _ = evaluation.embed_any_split(embed, variables, split, run.mesh)
    in_memory, _ = evaluation.embed_split(embed, variables, np.asarray(split.images),
                                          run.mesh)
    np.testing.assert_allclose(streamed, in_memory, rtol=1e-6, atol=1e-6)


@pytest.mark.slow
def test_stop_and_resume_equals_uninterrupted_run(pacs_root, lazy_pacs, tmp_path):
  from gca_jax import training
  config = host_config(pacs_root)
  straight = training.train_and_evaluate(config, tmp_path / "straight").metrics
  stopped = training.train_and_evaluate(host_config(pacs_root, stop_after_epoch=1),
                                        tmp_path / "resumed").metrics
  assert stopped["epochs"] == 1
  resumed = training.train_and_evaluate(config, tmp_path / "resumed", resume=True).metrics
  assert straight["steps"] == resumed["steps"] == 8
  assert straight["final_loss"] == resumed["final_loss"]  # bitwise on CPU
  params_straight, feed = saved_params(tmp_path / "straight")
  params_resumed, feed_resumed = saved_params(tmp_path / "resumed")
  assert feed == feed_resumed == {"epoch": 2, "step": 0}
  for name, value in params_straight.items():
    np.testing.assert_array_equal(params_resumed[name], value, err_msg=name)


def _loader(config, split, start_step=0):
  """The loader a host-fed run starts at ``start_step`` (as `feeds.HostFeed`)."""
  from gca_jax.data import loader, order
  total = config.epochs * order.steps_per_epoch(len(split), config.batch_size)
  return loader.make_loader(split, global_batch_size=config.batch_size,
                            seed=config.seed, start_step=start_step,
                            num_steps=total - start_step)


def test_host_loader_reads_the_device_fed_batches(pacs_root, lazy_pacs):
  """Epochs of the trainer = passes of the loader: every step's batch is
  order.batch_indices of (seed, epoch, step), without duplicates, and a loader
  started at a step (a resumed run) continues the same sequence."""
  from gca_jax.training import feeds
  from gca_jax.data import loader, order
  config = host_config(pacs_root, epochs=3)
  split = feeds.load_data(config).train
  per_epoch = order.steps_per_epoch(len(split), BATCH)
  iterator = iter(_loader(config, split))
  batches = [b["index"] for b in iterator]  # ends after config.epochs epochs
  assert len(batches) == 3 * per_epoch
  for step, indices in enumerate(batches):
    np.testing.assert_array_equal(indices, order.batch_indices(
        config.seed, step // per_epoch, step % per_epoch, BATCH, len(split)))
    assert len(set(indices.tolist())) == BATCH
  for epoch in range(3):
    seen = np.concatenate(batches[epoch * per_epoch:(epoch + 1) * per_epoch])
    assert len(set(seen.tolist())) == len(seen)
  resumed = iter(_loader(config, split, 5))
  for want in batches[5:]:
    got = next(resumed)
    np.testing.assert_array_equal(got["index"], want)
    np.testing.assert_array_equal(got["image"], np.stack([split.images[i] for i in want]))
  loader.close_iterator(resumed)


@pytest.mark.slow
def test_host_fed_training_equals_device_fed_training(pacs_root, lazy_pacs, tmp_path,
                                                      monkeypatch):
  from gca_jax import training
  from gca_jax.training import feeds
  config = host_config(pacs_root, epochs=1)
  host = training.train_and_evaluate(config, tmp_path / "host").metrics
  monkeypatch.undo()  # the same folder, now decoded into memory
  assert feeds.load_data(config).train.in_memory
  device = training.train_and_evaluate(config, tmp_path / "device").metrics
  np.testing.assert_allclose(host["final_loss"], device["final_loss"], rtol=1e-5)
  params_host, _ = saved_params(tmp_path / "host")
  params_device, _ = saved_params(tmp_path / "device")
  for name, value in params_device.items():
    np.testing.assert_allclose(params_host[name], value, rtol=1e-4, atol=1e-6,
                               err_msg=name)


def test_process_eval_loader_splits_padded_global_batches():
  from gca_jax.data import loader
  from gca_jax.data.base import ImageArrays, LazyImages
  images = np.arange(10, dtype=np.uint8)[:, None, None, None] * np.ones((1, 2, 2, 3),
                                                                      np.uint8)
  split = ImageArrays(LazyImages(lambda i: images[i], 10, (2, 2, 3)),
                      np.arange(10, dtype=np.int32))
  per_process = [[b["image"][:, 0, 0, 0] for b in loader.process_eval_loader(
      split, global_batch_size=4, process_index=p, process_count=2)] for p in range(2)]
  assert [len(batches) for batches in per_process] == [3, 3]
  global_batches = [np.concatenate(rows) for rows in zip(*per_process)]
  np.testing.assert_array_equal(np.concatenate(global_batches),
                                [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9])
  assert [loader.num_valid_in_batch(b, 10, 4) for b in range(3)] == [4, 4, 2]


def test_evaluation_centre_crops_large_images():
  """Resize 256 (host) + centre-crop 224: the border never reaches the model."""
  from gca_jax import evaluation
  images = np.zeros((2, 8, 8, 3), np.uint8)
  images[:, 2:6, 2:6] = np.arange(16, dtype=np.uint8).reshape(1, 4, 4, 1) * 10
  x = evaluation.preprocess_for_eval(images, mean=(0.0,) * 3, std=(1.0,) * 3,
                                     image_size=4)
  np.testing.assert_allclose(np.asarray(x), images[:, 2:6, 2:6] / 255.0, rtol=1e-6)
  up = evaluation.preprocess_for_eval(images[:, :2, :2], mean=(0.0,) * 3,
                                      std=(1.0,) * 3, image_size=4)
  assert up.shape == (2, 4, 4, 3)  # smaller images are resized up
  assert evaluation.eval_batch_size(512, 3) == 510
  assert evaluation.eval_batch_size(2, 4) == 4
