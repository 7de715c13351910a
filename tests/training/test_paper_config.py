"""The paper's config (ResNet-18, bfloat16 compute, 2048-128 projector) on CPU."""

import jax
import numpy as np
import pytest


@pytest.mark.slow
def test_paper_config_trains_in_bfloat16_with_a_finite_decreasing_loss():
  from gca_jax import training
  from gca_jax.training import config as config_lib, feeds
  config = config_lib.paper_cifar_config("digits")
  assert (config.model.name, config.model.dtype) == ("resnet18", "bfloat16")
  assert (config.model.projector_hidden_dim, config.model.projection_dim) == (2048, 128)
  # Tiny size only: 8x8 digits, 32 pairs per step, no warm-up.
  config.update_from_flattened_dict({"load_size": 8, "batch_size": 32, "epochs": 1,
                                     "warmup_epochs": 0.0, "learning_rate": 0.05})
  dataset = feeds.load_data(config)
  run = training.setup(config, dataset)
  feed = feeds.make_feed(run, 0)
  state, losses = run.initial_state(), []
  for step in range(24):
    state, metrics = run.train_step(state, feed.batch(step))
    losses.append(float(metrics["loss"]))
  assert np.all(np.isfinite(losses)), losses
  assert np.mean(losses[-6:]) < np.mean(losses[:6]), losses
  out = run.model.apply(state.variables, np.zeros((2, 8, 8, 3), np.float32), train=False)
  assert out.projection.dtype == jax.numpy.float32  # losses run in float32
