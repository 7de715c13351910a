"""A fine-tuning with saves: stopped by a signal mid-epoch, it is continued
by the same call and ends as an uninterrupted one, bitwise on CPU (as the
pre-training's resume tests require)."""

import os
import signal

import numpy as np
import pytest

from gca_jax import finetune
from gca_jax.training import checkpoint, feeds
from gca_jax.training.interrupts import Interrupted
from tests.evaluation.test_finetune import pretrained_variables, tiny_dataset, tiny_model_config

EPOCHS, BATCH = 3, 64   # 4 steps per epoch on the 256 examples of tiny_dataset
STOP_AT_STEP = 6        # mid-epoch 2


def _settings(**overrides):
  return finetune.FinetuneSettings(**{"epochs": EPOCHS, "batch_size": BATCH, "seed": 3,
                                      **overrides})


@pytest.fixture(scope="module")
def inputs():
  config = tiny_model_config()
  return config, pretrained_variables(config), tiny_dataset()


@pytest.fixture(scope="module")
def uninterrupted(inputs):
  config, variables, dataset = inputs
  return finetune.finetune(config, variables, dataset, _settings())


def _signal_at_step(monkeypatch, step_to_stop, signum=signal.SIGTERM):
  """Sends ``signum`` to this process as the batch of ``step_to_stop`` is read."""
  batch = feeds.DeviceFeed.batch

  def batch_and_signal(self, step):
    if step == step_to_stop:
      os.kill(os.getpid(), signum)
    return batch(self, step)

  monkeypatch.setattr(feeds.DeviceFeed, "batch", batch_and_signal)


def _flat(variables):
  from tests.conftest import flat
  return flat(variables)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_stopped_finetuning_continues_to_the_uninterrupted_result(
    tmp_path, inputs, uninterrupted, monkeypatch, signum):
  config, variables, dataset = inputs
  saves = tmp_path / "finetune"
  with monkeypatch.context() as patch:
    _signal_at_step(patch, STOP_AT_STEP, signum)
    with pytest.raises(Interrupted) as stopped:
      finetune.finetune(config, variables, dataset, _settings(), checkpoint_dir=saves)
  name = signal.Signals(signum).name
  assert str(stopped.value) == (f"stopped by {name} at fine-tuning step {STOP_AT_STEP + 1} "
                                f"(epoch 1.75 of {EPOCHS}); saved in {saves}")
  checkpointer = checkpoint.Checkpointer(saves)
  assert checkpointer.all_steps() == [4, STOP_AT_STEP + 1]
  position = checkpointer.read_position(STOP_AT_STEP + 1)
  checkpointer.close()
  assert position["epoch_accuracies"] == list(uninterrupted.epoch_accuracies[:1])
  assert len(position["epoch_step_metrics"]) == 3  # the steps of epoch 2 so far

  calls = []
  resumed = finetune.finetune(config, variables, dataset, _settings(), checkpoint_dir=saves,
                              progress=lambda epoch, m: calls.append(epoch))
  assert calls == [2, 3]
  assert resumed.epoch_accuracies == uninterrupted.epoch_accuracies
  assert resumed.train_losses == uninterrupted.train_losses
  assert resumed.best_accuracy == uninterrupted.best_accuracy
  expected = _flat(uninterrupted.variables)
  for name, value in _flat(resumed.variables).items():
    np.testing.assert_array_equal(value, expected[name], err_msg=name)


def test_a_save_of_other_settings_is_refused_naming_them(tmp_path, inputs, monkeypatch):
  config, variables, dataset = inputs
  saves = tmp_path / "finetune"
  with monkeypatch.context() as patch:
    _signal_at_step(patch, 1)
    with pytest.raises(Interrupted):
      finetune.finetune(config, variables, dataset, _settings(), checkpoint_dir=saves,
                        identity={"pretrained_step": 22})
  with pytest.raises(checkpoint.WorkdirError) as refused:
    finetune.finetune(config, variables, dataset, _settings(epochs=5), checkpoint_dir=saves,
                      identity={"pretrained_step": 22})
  assert str(refused.value) == (
      f"{saves} holds an unfinished fine-tuning with other settings (epochs=3, now 5); "
      f"continue it with its settings, or delete {saves} to start over")
  with pytest.raises(checkpoint.WorkdirError, match="pretrained_step=22, now 44"):
    finetune.finetune(config, variables, dataset, _settings(), checkpoint_dir=saves,
                      identity={"pretrained_step": 44})
