"""BYOL: the EMA target gets no gradient, and the loss decreases."""

import pytest
import jax
import numpy as np

from tests.conftest import flat, tiny_config


@pytest.mark.slow
def test_byol_target_is_pure_ema_and_loss_decreases():
  from gca_jax import models, training
  from gca_jax.training import feeds
  config = tiny_config(loss="byol", ema_decay=0.9, learning_rate=0.05)
  dataset = feeds.load_data(config)
  run = training.setup(config, dataset)
  feed = feeds.make_feed(run, 0)
  state = run.initial_state()
  assert isinstance(state, training.ByolTrainState)
  assert set(state.target_params) == {"encoder", "projector"}
  losses = []
  for step in range(40):
    before = jax.device_get(state)
    state, metrics = run.train_step(state, feed.batch(step))
    losses.append(float(metrics["loss"]))
  # The target moved by the EMA of the online weights only: no gradient term.
  expected = models.ema_update(before.target_params, jax.device_get(state.params), 0.9)
  got = flat(jax.device_get(state.target_params))
  for name, value in flat(expected).items():
    np.testing.assert_allclose(got[name], value, rtol=1e-6, atol=1e-7, err_msg=name)
  assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 0.05, losses
