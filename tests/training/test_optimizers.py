"""Optimisers and schedules: warm-up + cosine, linear scaling, decay masks."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from tests.conftest import tiny_config


def _config(**overrides):
  return tiny_config(**{"epochs": 10, "warmup_epochs": 2.0, "learning_rate": 0.4,
                        **overrides})


def test_schedule_warms_up_linearly_then_decays_to_zero_by_cosine():
  from gca_jax.training import optimizers
  schedule = optimizers.make_schedule(_config(), steps_per_epoch=10)
  assert float(schedule(0)) == 0.0
  np.testing.assert_allclose(float(schedule(10)), 0.2, rtol=1e-6)   # half-way up
  np.testing.assert_allclose(float(schedule(20)), 0.4, rtol=1e-6)   # the peak
  middle = 20 + 40  # half-way through the decay
  np.testing.assert_allclose(float(schedule(middle)), 0.2, rtol=1e-5)
  np.testing.assert_allclose(float(schedule(100)), 0.0, atol=1e-7)


def test_linear_scaling_multiplies_by_batch_over_256():
  from gca_jax.training import optimizers
  assert optimizers.learning_rate(_config(lr_scaling="linear", batch_size=512), 512) == 0.8
  assert optimizers.learning_rate(_config(), 512) == 0.4


@pytest.mark.parametrize("name", ["sgd", "adam", "lars"])
def test_weight_decay_applies_to_kernels_only(name):
  from gca_jax.training import optimizers
  config = _config(optimizer=name, weight_decay=0.1, warmup_epochs=0.0)
  tx = optimizers.make_optimizer(config, steps_per_epoch=10)
  params = {"kernel": jnp.ones((3, 3)), "bias": jnp.ones(3), "scale": jnp.ones(3)}
  zero = jax.tree.map(jnp.zeros_like, params)
  updates, _ = tx.update(zero, tx.init(params), params)
  # With a zero gradient, only weight decay moves a parameter.
  assert float(jnp.abs(updates["kernel"]).max()) > 0
  assert float(jnp.abs(updates["bias"]).max()) == 0.0
  assert float(jnp.abs(updates["scale"]).max()) == 0.0


def test_sgd_is_nesterov_momentum_on_the_decayed_gradient():
  from gca_jax.training import optimizers
  config = _config(weight_decay=0.0, warmup_epochs=0.0, momentum=0.9)
  tx = optimizers.make_optimizer(config, steps_per_epoch=10)
  reference = optax.sgd(optimizers.make_schedule(config, 10), momentum=0.9, nesterov=True)
  params, grads = {"kernel": jnp.ones((2, 2))}, {"kernel": jnp.full((2, 2), 0.5)}
  ours, want = tx.init(params), reference.init(params)
  for _ in range(3):
    update, ours = tx.update(grads, ours, params)
    expected, want = reference.update(grads, want, params)
    np.testing.assert_allclose(update["kernel"], expected["kernel"], rtol=1e-6)


def test_sgd_without_nesterov_is_plain_momentum():
  from gca_jax.training import optimizers
  config = _config(weight_decay=0.0, warmup_epochs=0.0, momentum=0.9, nesterov=False)
  tx = optimizers.make_optimizer(config, steps_per_epoch=10)
  reference = optax.sgd(optimizers.make_schedule(config, 10), momentum=0.9, nesterov=False)
  nesterov = optimizers.make_optimizer(_config(weight_decay=0.0, warmup_epochs=0.0), 10)
  params, grads = {"kernel": jnp.ones((2, 2))}, {"kernel": jnp.full((2, 2), 0.5)}
  ours, want, other = tx.init(params), reference.init(params), nesterov.init(params)
  for _ in range(3):
    update, ours = tx.update(grads, ours, params)
    expected, want = reference.update(grads, want, params)
    nesterov_update, other = nesterov.update(grads, other, params)
    np.testing.assert_allclose(update["kernel"], expected["kernel"], rtol=1e-6)
  assert not np.allclose(update["kernel"], nesterov_update["kernel"])


@pytest.mark.parametrize("name", ["sgd", "adam", "lars"])
def test_fixed_predictor_lr_keeps_the_peak_rate_for_the_predictor_only(name):
  from gca_jax.training import optimizers
  config = _config(optimizer=name, weight_decay=0.0, warmup_epochs=0.0, momentum=0.0,
                   predictor_fixed_lr=True)
  steps_per_epoch = 10
  tx = optimizers.make_optimizer(config, steps_per_epoch)
  params = {"encoder": {"kernel": jnp.ones((2, 2))}, "predictor": {"kernel": jnp.ones((2, 2))}}
  grads = jax.tree.map(lambda p: jnp.full_like(p, 0.5), params)
  state = tx.init(params)
  sizes = []
  for _ in range(80):  # 80 of 100 steps: the schedule is well below its peak
    update, state = tx.update(grads, state, params)
    sizes.append({k: float(jnp.abs(v["kernel"]).max()) for k, v in update.items()})
  schedule = optimizers.make_schedule(config, steps_per_epoch)
  assert float(schedule(79)) < 0.25 * float(schedule(0))
  # The predictor's step stays the first one's; the encoder's follows the schedule.
  np.testing.assert_allclose(sizes[-1]["predictor"], sizes[0]["predictor"], rtol=1e-5)
  assert sizes[-1]["encoder"] < 0.25 * sizes[0]["encoder"]
  np.testing.assert_allclose(sizes[0]["encoder"], sizes[0]["predictor"], rtol=1e-6)


def test_fixed_predictor_lr_needs_a_predictor_loss():
  from gca_jax.training import objectives
  from gca_jax.training.config import ConfigError
  with pytest.raises(ConfigError, match="predictor_fixed_lr"):
    objectives.make_objective(_config(loss="gca_uot", predictor_fixed_lr=True))
  assert objectives.make_objective(_config(loss="simsiam", predictor_fixed_lr=True))


def test_a_run_stored_before_the_momentum_fields_reads_as_nesterov_and_scheduled():
  """Runs written before ``nesterov`` and ``predictor_fixed_lr`` existed used
  Nesterov's momentum and a scheduled predictor: they continue as that."""
  from gca_jax.training import checkpoint
  from gca_jax.training import config as config_lib
  stored = checkpoint.config_to_json(config_lib.get_config())
  del stored["nesterov"], stored["predictor_fixed_lr"]
  filled, names = config_lib.fill_later_fields(stored)
  assert sorted(names) == ["nesterov", "predictor_fixed_lr"]
  assert (filled["nesterov"], filled["predictor_fixed_lr"]) == (True, False)
  assert not checkpoint.differing_fields(filled, checkpoint.config_to_json(
      config_lib.get_config()))
