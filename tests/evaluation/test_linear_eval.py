"""``python -m gca_jax.linear_eval --protocol=...`` on a small pre-trained run."""

import json

import numpy as np
import pytest

from tests.conftest import run_module, tiny_config


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
  from gca_jax import training
  workdir = tmp_path_factory.mktemp("pretrained")
  training.train_and_evaluate(tiny_config(epochs=1), workdir)
  return workdir


@pytest.mark.slow
def test_finetune_protocol_records_best_and_last_epoch(pretrained):
  result = run_module("gca_jax.linear_eval", f"--workdir={pretrained}",
                      "--protocol=finetune", "--epochs=2", "--batch_size=64")
  assert result.returncode == 0, result.stderr[-3000:]
  assert "finetune epoch 1:" in result.stdout and "finetune epoch 2:" in result.stdout
  assert "finetune protocol: finetune_best_acc" in result.stdout
  metrics = json.loads((pretrained / "metrics.json").read_text())
  record = metrics["evaluations"][-1]
  assert record["protocol"] == "finetune" and record["epochs"] == 2
  assert record["best_accuracy"] == max(record["epoch_accuracies"])
  assert record["last_accuracy"] == record["epoch_accuracies"][-1]
  assert metrics["finetune_best_acc"] == record["best_accuracy"]
  assert metrics["finetune_last_acc"] == record["last_accuracy"]
  assert "test set" in record["selection"] or "paper" in record["selection"]
  assert np.isfinite(metrics["final_loss"])  # the pre-training results are kept


def test_unknown_protocol_is_one_line(pretrained):
  result = run_module("gca_jax.linear_eval", f"--workdir={pretrained}", "--protocol=knn3")
  assert result.returncode != 0 and "protocol" in result.stderr


@pytest.mark.slow
def test_truncated_metrics_json_is_kept_aside_and_the_result_saved(pretrained, capsys):
  from gca_jax import linear_eval
  metrics_path = pretrained / "metrics.json"
  original = metrics_path.read_text()
  metrics_path.write_text(original[: len(original) // 2])
  try:
    result = linear_eval.evaluate(pretrained, "linear", steps=10)
    assert "unreadable" in capsys.readouterr().err
    saved = json.loads(metrics_path.read_text())
    assert saved["linear_probe_acc"] == result["linear_probe_acc"]
    assert (pretrained / "metrics.json.damaged").read_text() == original[: len(original) // 2]
  finally:
    metrics_path.write_text(original)


@pytest.mark.parametrize("args, message", [
    (["--steps=0"], "--steps must be an integer >= 1"),
    (["--learning_rate=nan"], "--learning_rate must be a finite number > 0"),
    (["--protocol=finetune", "--epochs=-2"], "--epochs must be an integer >= 1"),
    (["--protocol=finetune", "--steps=5"], "--steps is not a setting of --protocol=finetune"),
])
@pytest.mark.slow
def test_bad_protocol_settings_are_refused_before_loading(pretrained, args, message):
  from tests.conftest import one_line_error
  result = run_module("gca_jax.linear_eval", f"--workdir={pretrained}", *args)
  assert message in one_line_error(result)
