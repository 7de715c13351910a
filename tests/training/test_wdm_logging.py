"""The WDM lower bound reaches the train logs, metrics.json and every evaluation record."""

import pytest
import json
import struct

import jax
import jax.numpy as jnp
import numpy as np

from tests.conftest import tiny_config


@pytest.mark.slow
def test_train_and_evaluation_logs_carry_the_wdm_bound(tmp_path, capsys):
  from gca_jax import training
  config = tiny_config(epochs=2, log_every_steps=5, eval_every_epochs=1, linear_probe=True,
                       probe_random_init=True, progress_bar=False)
  training.train_and_evaluate(config, tmp_path)
  metrics = json.loads((tmp_path / "metrics.json").read_text())
  # Train means of the last epoch, as every step metric.
  assert -1.0 <= metrics["final_wdm_lower_bound"] <= 1.0, metrics
  evaluations = metrics["evaluations"]
  assert {r["protocol"] for r in evaluations} == {"knn", "linear"}
  for record in evaluations:  # each record: the bound of its encoder's views
    assert np.isfinite(record["wdm_lower_bound"]), record
  trained = [r for r in evaluations if r["encoder"] == "trained" and r["epoch"] == 2]
  random_init = [r for r in evaluations if r["encoder"] == "random_init"]
  assert trained and random_init
  assert metrics["wdm_lower_bound"] == trained[-1]["wdm_lower_bound"]
  assert metrics["random_init_wdm_lower_bound"] == random_init[-1]["wdm_lower_bound"]
  tags = _tags(tmp_path)
  assert {"train/wdm_lower_bound", "epoch/wdm_lower_bound", "eval/wdm_lower_bound",
          "eval/random_init_wdm_lower_bound"} <= tags, tags
  assert "wdm_lower_bound" in capsys.readouterr().out


def _tags(workdir) -> set[str]:
  """The scalar tags in the workdir's TensorBoard events."""
  from tensorboardX.proto import event_pb2
  tags = set()
  for path in sorted((workdir / "tensorboard").glob("events.*")):
    data, offset = path.read_bytes(), 0
    while offset < len(data):
      (length,) = struct.unpack("<Q", data[offset:offset + 8])
      event = event_pb2.Event.FromString(data[offset + 12:offset + 12 + length])
      offset += 12 + length + 4
      tags |= {v.tag for v in event.summary.value}
  return tags


def test_view_wdm_is_the_bound_of_the_features_of_fixed_views():
  from gca_jax import evaluation, metrics, training
  from gca_jax.data import augment
  from gca_jax.training import feeds
  config = tiny_config()
  dataset = feeds.load_data(config)
  run = training.setup(config, dataset)
  variables = run.initial_state().variables
  kwargs = dict(mean=run.mean, std=run.std)
  got = evaluation.view_wdm(config, run.embed_fn, variables, dataset.test, run.mesh, **kwargs)
  # The same views every time: evaluations compare over epochs.
  assert got == evaluation.view_wdm(config, run.embed_fn, variables, dataset.test, run.mesh,
                                    **kwargs)
  images = jnp.asarray(dataset.test.images[:evaluation.WDM_EXAMPLES])
  views = augment.two_views(jax.random.key(evaluation.WDM_VIEWS_SEED), images,
                            policy=config.augmentation, **kwargs)
  h1, h2 = (run.model.apply(variables, v, train=False).features for v in views)
  # Views round-trip through uint8 pixels for the embedding: half a level of error.
  np.testing.assert_allclose(got, float(metrics.wdm_lower_bound(h1, h2)), atol=2e-3)
