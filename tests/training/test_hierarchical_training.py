"""``config.target="hierarchical"``: a plan from the batch's labels and coarse labels.

On a synthetic two-level dataset (classes ``k % 4``, coarse classes
``class // 2``): weights that reduce the hierarchy to a known target give
that target's loss, the coarse weight changes it, the feed carries the
coarse labels, and the row-sharded plan on 4 devices gives the global plan's
step on one (in a subprocess: XLA_FLAGS must be set before JAX starts; this
file doubles as it, ``python tests/training/test_hierarchical_training.py devices``).
"""

import json
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import (REPO_ROOT, SUBPROCESS_TIMEOUT, computed_once, pretrain_env,
                            random_images, tiny_config)

BATCH = 16
LABELS = np.arange(BATCH, dtype=np.int32) % 4
COARSE = LABELS // 2


def _config(**overrides):
  return tiny_config(**{"model.dtype": "float32", "batch_size": BATCH, "loss": "gca_ince",
                        **overrides})


def two_level_dataset(images):
  from gca_jax import data
  split = data.ImageArrays(images, LABELS[:len(images)], None, COARSE[:len(images)])
  return data.Dataset(train=split, test=split, num_classes=4, name="two_levels",
                      mean=(0.5,) * 3, std=(0.25,) * 3, num_coarse_classes=2)


def hierarchical_step(config, devices) -> dict:
  """Loss, params and metrics (numpy) of one step on the two-level batch."""
  import jax
  from gca_jax import sharding, training
  images = random_images(BATCH)
  mesh = sharding.make_mesh(devices)
  run = training.setup(config, two_level_dataset(images), mesh)
  replicated = sharding.replicated(mesh)
  batch = {"image": sharding.global_array(images, replicated),
           "label": sharding.global_array(LABELS, replicated),
           "coarse_label": sharding.global_array(COARSE, replicated)}
  state, metrics = run.train_step(run.initial_state(), batch)
  local = lambda tree: jax.tree.map(lambda a: np.asarray(a.addressable_data(0)), tree)
  return {"loss": float(local(metrics["loss"])), "params": local(state.params)}


def _loss(config) -> float:
  import jax
  return hierarchical_step(config, jax.devices()[:1])["loss"]


def test_reduces_to_the_pairs_and_class_targets():
  import jax
  from tests.conftest import one_step
  images = random_images(BATCH)
  pairs = float(one_step(_config(), jax.devices()[:1], images)["loss"])
  klass = float(one_step(_config(target="class"), jax.devices()[:1], images, LABELS)["loss"])
  # Zero weights: only the positives remain (the pairs target).
  assert _loss(_config(target="hierarchical", target_alphas=(0.0, 0.0))) == pytest.approx(
      pairs, rel=1e-6)
  # Weight 1 within a class, 0 elsewhere: the class target.
  assert _loss(_config(target="hierarchical", target_alphas=(1.0, 0.0))) == pytest.approx(
      klass, rel=1e-6)
  # A coarse-class weight changes the plan, hence the loss.
  coarse = _loss(_config(target="hierarchical", target_alphas=(1.0, 0.5)))
  assert abs(coarse - klass) > 1e-4, (coarse, klass)


def test_feed_carries_the_coarse_labels():
  from gca_jax import training
  from gca_jax.training import feeds
  config = _config(target="hierarchical")
  run = training.setup(config, two_level_dataset(random_images(2 * BATCH)))
  assert run.objective.id_key == ("label", "coarse_label")
  batch = feeds.make_feed(run, 0).batch(1)
  labels, coarse = np.asarray(batch["label"]), np.asarray(batch["coarse_label"])
  np.testing.assert_array_equal(coarse, labels // 2)
  _, metrics = run.train_step(run.initial_state(), batch)
  assert np.isfinite(float(metrics["loss"]))


def test_is_refused_without_coarse_labels_or_with_bad_weights():
  from gca_jax import training
  from gca_jax.training import ConfigError
  from tests.conftest import random_dataset
  with pytest.raises(ConfigError, match="needs a dataset with coarse labels"):
    training.setup(_config(target="hierarchical"),
                   random_dataset(random_images(BATCH), LABELS))
  with pytest.raises(ConfigError, match="config.target_alphas must be 2 finite numbers"):
    training.validate(_config(target="hierarchical", target_alphas=(0.5,)), 1)
  with pytest.raises(ConfigError, match="takes no target plan"):
    training.validate(_config(target="hierarchical", loss="byol"), 1)


def _devices_worker() -> None:
  import jax
  devices = jax.devices()
  assert len(devices) == 4, devices
  base = {"target": "hierarchical", "target_alphas": (0.5, 0.25), "target_beta": 0.05}
  one = hierarchical_step(_config(**base), devices[:1])
  four = hierarchical_step(_config(**base, loss_scope="sharded"), devices)
  errors = [float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))
            for a, b in zip(jax.tree.leaves(four["params"]), jax.tree.leaves(one["params"]))]
  print(json.dumps({"loss1": one["loss"], "loss4": four["loss"], "params": max(errors)}))


def _four_device_report() -> dict:
  result = subprocess.run([sys.executable, __file__, "devices"], env=pretrain_env(4),
                          capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT,
                          cwd=REPO_ROOT)
  assert result.returncode == 0, result.stderr[-3000:]
  return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_sharded_scope_on_four_devices_equals_the_global_plan(tmp_path_factory):
  report = computed_once(tmp_path_factory, "hierarchical_four_devices", _four_device_report)
  assert report["loss4"] == pytest.approx(report["loss1"], rel=1e-5), report
  # Same tolerance argument as test_step.py: reductions in another order.
  assert report["params"] < 1e-4, report


if __name__ == "__main__" and sys.argv[1:] == ["devices"]:
  _devices_worker()
