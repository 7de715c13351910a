"""Target plans in the trainer: ``config.target`` = "pairs" | "domain" | "class".

The step builds the loss's target from the per-example ids (domains or class
labels) of the batch the loss sees; with alpha = beta = 0 the domain target
is the "pairs" target, so the loss must not change. The 8-device equality
with a domain target is in test_step.py (one subprocess for both).
"""

import jax
import numpy as np
import pytest

from tests.conftest import one_step, random_dataset, random_images, tiny_config
from tests.training.conftest import host_config

BATCH = 16


def _config(**overrides):
  return tiny_config(**{"model.dtype": "float32", "batch_size": BATCH, **overrides})


def _loss(config, ids=None):
  images = random_images(BATCH)
  return float(one_step(config, jax.devices()[:1], images, ids)["loss"])


DOMAINS = np.arange(BATCH, dtype=np.int32) % 3


@pytest.mark.slow
def test_domain_target_with_zero_weights_is_the_pairs_target():
  pairs = _loss(_config())
  domain = _loss(_config(target="domain"), DOMAINS)
  assert domain == pairs  # bitwise: the same objective


@pytest.mark.slow
def test_domain_and_class_targets_change_the_loss():
  pairs = _loss(_config())
  domain = _loss(_config(target="domain", target_alpha=0.5, target_beta=0.1), DOMAINS)
  classes = _loss(_config(target="class"), DOMAINS)
  assert abs(domain - pairs) > 1e-3 and abs(classes - pairs) > 1e-3
  assert np.isfinite(domain) and np.isfinite(classes)


def test_step_with_a_target_requires_the_ids():
  from gca_jax import sharding, training
  images = random_images(BATCH)
  run = training.setup(_config(target="domain"), random_dataset(images, DOMAINS),
                       sharding.make_mesh(jax.devices()[:1]))
  batch = {"image": sharding.global_array(images, sharding.replicated(run.mesh))}
  with pytest.raises(KeyError, match="needs 'domain' ids"):
    run.train_step(run.initial_state(), batch)  # no ids


@pytest.mark.parametrize("overrides, message", [
    ({"target": "domains"}, "config.target must be one of pairs, domain, class"),
    ({"target": "domain", "loss": "byol"}, "takes no target plan"),
    ({"target": "class", "loss": "reference/gca_uot"}, "takes no target plan"),
    ({"target": "domain", "target_alpha": -0.5}, "config.target_alpha must be"),
])
def test_bad_targets_are_config_errors(overrides, message):
  from gca_jax import training
  with pytest.raises(training.ConfigError, match=message) as error:
    training.validate(_config(**overrides), 1)
  assert "\n" not in str(error.value)


def test_domain_target_needs_a_dataset_with_domains():
  from gca_jax import training
  from gca_jax.training import feeds
  config = _config(target="domain")
  with pytest.raises(training.ConfigError, match="needs a dataset with domains") as error:
    training.setup(config, feeds.load_data(config))
  assert "\n" not in str(error.value)


@pytest.mark.slow
def test_host_fed_domain_target_equals_device_fed(pacs_root, lazy_pacs, tmp_path,
                                                   monkeypatch):
  """Host-fed batches take their domains by index; the device-fed path
  gathers them with the images: both train the same thing."""
  from gca_jax import training
  from gca_jax.training import feeds
  config = host_config(pacs_root, epochs=1, target="domain", target_alpha=1.0)
  assert not feeds.load_data(config).train.in_memory
  host = training.train_and_evaluate(config, tmp_path / "host").metrics
  monkeypatch.undo()  # the same folder, now decoded into memory
  assert feeds.load_data(config).train.in_memory
  device = training.train_and_evaluate(config, tmp_path / "device").metrics
  np.testing.assert_allclose(host["final_loss"], device["final_loss"], rtol=1e-5)
  pairs = training.train_and_evaluate(host_config(pacs_root, epochs=1),
                                      tmp_path / "pairs").metrics
  assert abs(pairs["final_loss"] - device["final_loss"]) > 1e-3


@pytest.mark.parametrize("target", ["pairs", "domain"])
@pytest.mark.slow
def test_a_tiled_run_takes_one_config_field_and_trains_the_same_objective(target):
  # config.loss_params.tile_size: the same loss, its kernel in tiles (and a
  # block target given as labels); float32 round-off apart.
  overrides = {"target": target, "target_alpha": 0.5, "target_beta": 0.1}
  ids = DOMAINS if target == "domain" else None
  materialised = _loss(_config(**overrides), ids)
  tiled = _loss(_config(**overrides, **{"loss_params.tile_size": 5}), ids)
  assert np.isfinite(tiled)
  assert abs(tiled - materialised) <= 1e-5 * abs(materialised)
