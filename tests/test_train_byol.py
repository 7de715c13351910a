"""BYOL: the EMA target gets no gradient, and the loss decreases."""

import jax
import numpy as np

from test_train_step import flat, tiny_config


def test_byol_target_is_pure_ema_and_loss_decreases():
  from gca_jax import evaluation, models, train
  from jax.sharding import NamedSharding, PartitionSpec as P
  config = tiny_config(loss="byol", ema_decay=0.9, learning_rate=0.05)
  dataset = train.load_data(config)
  run = train.setup(config, dataset)
  steps = train.make_train_step(
      config, model=run.model, target_model=run.target_model, tx=run.tx,
      schedule=run.schedule, mesh=run.mesh, mean=dataset.mean, std=dataset.std,
      num_train=len(dataset.train), steps_per_epoch=run.steps_per_epoch)
  images = evaluation.global_array(dataset.train.images, NamedSharding(run.mesh, P()))
  state = run.initial_state(config)
  assert set(state.target_params) == {"encoder", "projector"}
  losses = []
  for _ in range(40):
    before = jax.device_get(state)
    state, metrics = steps.on_split(state, images)
    losses.append(float(metrics["loss"]))
  # The target moved by the EMA of the online weights only: no gradient term.
  expected = models.ema_update(before.target_params, jax.device_get(state.params), 0.9)
  got = flat(jax.device_get(state.target_params))
  for name, value in flat(expected).items():
    np.testing.assert_allclose(got[name], value, rtol=1e-6, atol=1e-7, err_msg=name)
  assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 0.05, losses
