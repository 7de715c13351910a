"""The fine-tuning protocol (`gca_jax.finetune`) at tiny size on CPU.

One short run (a 4-channel ResNet on a subset of the 8x8 digits) is shared by
the tests that inspect what it trained; the optimiser and the schedule are
checked against their formulas; bad arguments fail before any compilation.
"""

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from gca_jax import finetune, models
from gca_jax.data import load_dataset
from gca_jax.data.base import ImageArrays

REPO = Path(__file__).resolve().parents[2]
EPOCHS, BATCH, NUM_TRAIN, NUM_TEST = 3, 64, 256, 100


def tiny_model_config():
  return ml_collections.ConfigDict({
      "name": "resnet_small", "stem": "cifar", "width": 4, "dtype": "float32",
      "projector_hidden_dim": 32, "projection_dim": 16, "predictor_hidden_dim": 32})


def tiny_dataset():
  """Digits at 8x8: the first NUM_TRAIN train and NUM_TEST test examples."""
  full = load_dataset("digits", image_size=8)
  return full._replace(train=full.train.take(np.arange(NUM_TRAIN)),
                       test=full.test.take(np.arange(NUM_TEST)))


def pretrained_variables(config, seed=0):
  """Stand-in for a pre-trained model: a fresh `create_model` initialisation."""
  model = models.create_model(config)
  return model.init(jax.random.PRNGKey(seed), jnp.zeros((2, 8, 8, 3)), train=False)


@pytest.fixture(scope="module")
def run():
  config, dataset = tiny_model_config(), tiny_dataset()
  variables = pretrained_variables(config)
  calls = []
  settings = finetune.FinetuneSettings(epochs=EPOCHS, batch_size=BATCH, seed=3)
  result = finetune.finetune(config, variables, dataset, settings,
                             progress=lambda epoch, m: calls.append((epoch, m)))
  return config, dataset, variables, result, calls


def changed(before, after):
  """Per leaf: whether any entry differs."""
  return jax.tree.map(lambda a, b: bool(np.any(np.asarray(a) != np.asarray(b))),
                      before, after)


@pytest.mark.slow
def test_whole_encoder_and_head_are_trained(run):
  config, dataset, variables, result, _ = run
  initial = finetune.initial_variables(config, variables, dataset.num_classes, seed=3)
  moved = changed(initial["params"], result.variables["params"])
  encoder_leaves = jax.tree_util.tree_leaves_with_path(moved["encoder"])
  assert len(encoder_leaves) > 10
  assert all(leaf for _, leaf in encoder_leaves), [
      jax.tree_util.keystr(path) for path, leaf in encoder_leaves if not leaf]
  assert all(jax.tree.leaves(moved["head"]))
  assert set(result.variables["params"]) == {"encoder", "head"}


def test_batch_norm_runs_in_training_mode(run):
  """Running statistics move only when BN normalises with batch statistics."""
  _, _, variables, result, _ = run
  moved = changed(variables["batch_stats"]["encoder"],
                  result.variables["batch_stats"]["encoder"])
  assert jax.tree.leaves(moved) and all(jax.tree.leaves(moved))


def test_best_and_last_accuracies_are_both_recorded(run):
  _, _, _, result, calls = run
  accuracies = result.epoch_accuracies
  assert len(accuracies) == EPOCHS and len(result.train_losses) == EPOCHS
  assert all(0.0 <= a <= 1.0 for a in accuracies)
  assert result.best_accuracy == max(accuracies) >= result.last_accuracy == accuracies[-1]
  assert result.best_epoch == accuracies.index(max(accuracies)) + 1
  assert result.steps_per_epoch == NUM_TRAIN // BATCH
  assert [epoch for epoch, _ in calls] == list(range(1, EPOCHS + 1))
  assert [m["test_accuracy"] for _, m in calls] == list(accuracies)
  assert calls[-1][1]["best_accuracy"] == result.best_accuracy
  assert calls[-1][1]["step"] == EPOCHS * result.steps_per_epoch
  assert all(math.isfinite(m["train_loss"]) for _, m in calls)


def test_test_accuracy_counts_every_test_example(run):
  """The last, partial test batch is evaluated (padded and masked): the
  recorded accuracy is that of the whole test split in one pass."""
  config, dataset, _, result, _ = run
  assert NUM_TEST % BATCH != 0
  model = finetune.make_classifier(config, dataset.num_classes)
  images = (jnp.asarray(dataset.test.images, jnp.float32) / 255.0 - jnp.asarray(dataset.mean)
            ) / jnp.asarray(dataset.std)
  logits = model.apply(result.variables, images, train=False)
  correct = int(np.sum(np.argmax(np.asarray(logits), -1) == dataset.test.labels))
  assert round(result.last_accuracy * NUM_TEST) == correct


def test_learning_rate_schedule_matches_formula():
  base, total, start, end = 0.2, 1000, 0.6, 1e-3
  schedule = finetune.learning_rate_schedule(base, total, start, end)
  np.testing.assert_allclose(float(schedule(0)), base * start, rtol=1e-6)
  np.testing.assert_allclose(float(schedule(total // 2)), base * (end + (start - end) / 2),
                             rtol=1e-6)
  np.testing.assert_allclose(float(schedule(total)), base * end, rtol=1e-5)
  t = 137
  expected = base * (end + (start - end) * 0.5 * (1 + math.cos(math.pi * t / total)))
  np.testing.assert_allclose(float(schedule(t)), expected, rtol=1e-6)


def test_optimizer_is_pytorch_nesterov_sgd_on_the_schedule():
  """Three updates against PyTorch's SGD(nesterov=True, weight_decay=0)."""
  base, total, momentum = 0.2, 3, 0.9
  tx = finetune.make_optimizer(base, total, 0.6, 1e-3, momentum)
  schedule = finetune.learning_rate_schedule(base, total, 0.6, 1e-3)
  grads = [np.array([1.0, -2.0]), np.array([0.5, 0.5]), np.array([-1.0, 3.0])]
  params = np.array([0.3, -0.7])
  state = tx.init(jnp.asarray(params))
  expected, buffer = params.copy(), None
  for t, g in enumerate(grads):
    buffer = g.copy() if buffer is None else momentum * buffer + g
    expected = expected - float(schedule(t)) * (g + momentum * buffer)
    updates, state = tx.update(jnp.asarray(g), state)
    params = params + np.asarray(updates)
  np.testing.assert_allclose(params, expected, rtol=1e-6)


def _with_labels(dataset, labels):
  return dataset._replace(train=ImageArrays(dataset.train.images, labels))


@pytest.mark.parametrize("kwargs, names", [
    ({"epochs": 0}, "epochs"),
    ({"epochs": 1.5}, "epochs"),
    ({"batch_size": 0}, "batch_size"),
    ({"batch_size": NUM_TRAIN + 1}, "batch_size"),
    ({"base_lr": -0.1}, "base_lr"),
    ({"base_lr": float("nan")}, "base_lr"),
    ({"cosine_start": 0.0}, "cosine_start"),
    ({"cosine_end": float("inf")}, "cosine_end"),
    ({"momentum": 1.0}, "momentum"),
    ({"image_size": 0}, "image_size"),
    ({"dataset": "bad_labels"}, "labels"),
    ({"variables": "no_encoder"}, "variables"),
    ({"variables": "nan"}, "non-finite"),
])
def test_bad_arguments_fail_with_one_line(kwargs, names):
  config, dataset = tiny_model_config(), tiny_dataset()
  variables = pretrained_variables(config)
  if kwargs.pop("dataset", None):
    labels = np.array(dataset.train.labels)
    labels[0] = dataset.num_classes
    dataset = _with_labels(dataset, labels)
  bad_variables = kwargs.pop("variables", None)
  if bad_variables == "no_encoder":
    variables = {"params": variables["params"]["encoder"],
                 "batch_stats": variables["batch_stats"]["encoder"]}
  elif bad_variables == "nan":
    variables = jax.tree.map(lambda x: x * np.nan, variables)
  with pytest.raises(ValueError) as error:
    finetune.finetune(config, variables, dataset,
                      finetune.FinetuneSettings(**{"batch_size": BATCH, **kwargs}))
  message = str(error.value)
  assert names in message and "\n" not in message


def test_divergence_raises_instead_of_reporting_an_accuracy():
  """A run whose loss overflows (float32 updates of ~1e38) must not end with
  the accuracy of argmax over NaN logits."""
  config, dataset = tiny_model_config(), tiny_dataset()
  with pytest.raises(FloatingPointError, match="diverged in epoch 1"):
    finetune.finetune(config, pretrained_variables(config), dataset,
                      finetune.FinetuneSettings(epochs=2, batch_size=BATCH, base_lr=1e38))


TWO_DEVICES = textwrap.dedent("""
    import json, sys
    import jax, numpy as np
    sys.path.insert(0, sys.argv[1])
    import test_finetune as t
    from gca_jax import finetune
    assert jax.device_count() == 2, jax.devices()
    config = t.tiny_model_config()
    result = finetune.finetune(config, t.pretrained_variables(config), t.tiny_dataset(),
                               finetune.FinetuneSettings(epochs=t.EPOCHS, batch_size=t.BATCH,
                                                         seed=3))
    print(json.dumps({"losses": result.train_losses, "accuracies": result.epoch_accuracies,
                      "head": np.asarray(result.variables["params"]["head"]["kernel"]).tolist()}))
""")


@pytest.mark.slow
def test_two_device_mesh_matches_one_device(run):
  """The run of the `run` fixture, repeated with the batch sharded over two
  devices, trains the same (batch statistics over the global batch, same
  batches and crops). In a subprocess: the device count is fixed when jax
  starts."""
  _, _, _, one, _ = run
  env = {**os.environ, "JAX_PLATFORMS": "cpu",
         "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
  result = subprocess.run([sys.executable, "-c", TWO_DEVICES, str(Path(__file__).parent)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
                          check=False)
  assert result.returncode == 0, result.stderr[-4000:]
  two = json.loads(result.stdout.strip().splitlines()[-1])
  # Only the order of float32 reductions differs between the two meshes.
  np.testing.assert_allclose(two["losses"], one.train_losses, rtol=1e-4)
  np.testing.assert_allclose(two["head"], one.variables["params"]["head"]["kernel"],
                             rtol=1e-3, atol=1e-5)
  # A test example whose two top logits are within that rounding may flip.
  np.testing.assert_allclose(two["accuracies"], one.epoch_accuracies, atol=2 / NUM_TEST)
