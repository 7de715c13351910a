"""Operating long runs: self-resuming workdirs, step checkpoints, signals,
logs, metrics history, subsets, locks, damaged checkpoints, divergence."""

import json
import signal
import struct
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from tests.conftest import (REPO_ROOT, SUBPROCESS_TIMEOUT, one_line_error, pretrain_env,
                            run_module, saved_params, tiny_config)

SMALL = "--config=gca_jax/training/config.py:small"
FINAL_KEYS = ("epochs", "steps", "final_loss", "final_alignment", "final_uniformity")


def _final(metrics):
  return {k: metrics[k] for k in FINAL_KEYS}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
  """Final metrics and params of a 3-epoch small run without interruption."""
  from gca_jax import training
  workdir = tmp_path_factory.mktemp("uninterrupted")
  metrics = training.train_and_evaluate(tiny_config(epochs=3), workdir).metrics
  return _final(metrics), saved_params(workdir)[0]


def _pretrain_args(workdir, *extra):
  return [f"--workdir={workdir}", SMALL, "--config.epochs=3", "--config.linear_probe=False",
          *extra]


@pytest.mark.slow
def test_plain_rerun_continues_a_stopped_run(tmp_path, uninterrupted):
  first = run_module("gca_jax.pretrain", *_pretrain_args(tmp_path, "--config.stop_after_epoch=1"))
  assert first.returncode == 0, first.stderr[-3000:]
  assert json.loads((tmp_path / "metrics.json").read_text())["epochs"] == 1
  again = run_module("gca_jax.pretrain", f"--workdir={tmp_path}")  # no other flag
  assert again.returncode == 0, again.stderr[-3000:]
  assert "resuming from step 22" in again.stdout
  assert f"tensorboard --logdir {tmp_path / 'tensorboard'}" in again.stdout
  metrics = json.loads((tmp_path / "metrics.json").read_text())
  assert _final(metrics) == uninterrupted[0]
  # Changing what the run computes is refused, naming the field.
  refused = run_module("gca_jax.pretrain", f"--workdir={tmp_path}", "--config.seed=3")
  assert "config differs in: seed" in one_line_error(refused)


@pytest.mark.slow
def test_sigterm_mid_epoch_saves_the_step_and_the_rerun_matches(tmp_path, uninterrupted):
  args = [sys.executable, "-m", "gca_jax.pretrain",
          *_pretrain_args(tmp_path, "--config.log_every_steps=3")]
  process = subprocess.Popen(args, env=pretrain_env(), cwd=REPO_ROOT, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
  for line in process.stdout:  # the first log line: compiled and stepping
    if line.startswith("step 3/"):
      break
  process.send_signal(signal.SIGTERM)
  signalled = time.monotonic()
  _, stderr = process.communicate(timeout=SUBPROCESS_TIMEOUT)
  assert time.monotonic() - signalled < 30, "did not stop within 30 s of SIGTERM"
  assert process.returncode == 130, stderr[-3000:]
  assert "stopped by SIGTERM at step" in stderr and "Continue with" in stderr, stderr
  stopped_at = int(stderr.split("stopped by SIGTERM at step ")[1].split()[0])
  assert 3 <= stopped_at < 66
  _, position = saved_params(tmp_path)
  assert position["epoch"] * 22 + position["step"] == stopped_at
  again = run_module("gca_jax.pretrain", f"--workdir={tmp_path}")
  assert again.returncode == 0, again.stderr[-3000:]
  metrics = json.loads((tmp_path / "metrics.json").read_text())
  assert _final(metrics) == uninterrupted[0]
  params, _ = saved_params(tmp_path)
  for name, value in uninterrupted[1].items():
    np.testing.assert_array_equal(params[name], value, err_msg=name)


def _scalars(workdir, tag):
  """(step, value) of every ``tag`` scalar in the workdir's TensorBoard events."""
  from tensorboardX.proto import event_pb2
  points = []
  for path in sorted((workdir / "tensorboard").glob("events.*")):
    data = path.read_bytes()
    offset = 0
    while offset < len(data):
      (length,) = struct.unpack("<Q", data[offset:offset + 8])
      event = event_pb2.Event.FromString(data[offset + 12:offset + 12 + length])
      offset += 12 + length + 4
      points += [(event.step, v.simple_value) for v in event.summary.value if v.tag == tag]
  return points


@pytest.mark.slow
def test_logs_checkpoints_and_history_survive_resume_and_linear_eval(tmp_path, capsys):
  from gca_jax import linear_eval, training
  config = tiny_config(epochs=2, log_every_steps=5, checkpoint_every_steps=7,
                       eval_every_epochs=1, progress_bar=False)
  config.stop_after_epoch = 1
  training.train_and_evaluate(config, tmp_path)
  config.stop_after_epoch = 0
  training.train_and_evaluate(config, tmp_path)
  # Text lines for a run without a terminal: step, epoch, loss, images/s, ETA.
  out = capsys.readouterr().out
  assert "step 5/44  epoch 0.23  loss " in out and "images/s" in out and "eta" in out
  steps = [step for step, _ in _scalars(tmp_path, "train/loss")]
  assert steps == list(range(5, 45, 5))
  assert all(np.isfinite(v) for _, v in _scalars(tmp_path, "train/loss"))
  # Step checkpoints beside the epoch ones (the newest two are kept).
  from gca_jax.training import checkpoint
  checkpointer = checkpoint.Checkpointer(tmp_path)
  assert checkpointer.all_steps() == [42, 44]
  checkpointer.close()
  linear_eval.evaluate(tmp_path, "linear", steps=20)
  metrics = json.loads((tmp_path / "metrics.json").read_text())
  assert [i["end_step"] for i in metrics["invocations"]] == [22, 44]
  protocols = [(e["protocol"], e["epoch"]) for e in metrics["evaluations"]]
  assert protocols == [("knn", 1), ("knn", 2), ("knn", 2), ("linear", 2)]
  assert metrics["linear_probe_acc"] == metrics["evaluations"][-1]["accuracy"]
  assert _scalars(tmp_path, "eval/linear_probe_acc")


@pytest.mark.slow
def test_final_checkpoint_is_written_before_the_final_evaluation(tmp_path, monkeypatch):
  from gca_jax import evaluation, training

  def failing_evaluation(*args, **kwargs):
    raise RuntimeError("evaluation failed")

  config = tiny_config(epochs=1, linear_probe=True)
  monkeypatch.setattr(evaluation, "evaluate_encoder", failing_evaluation)
  with pytest.raises(RuntimeError, match="evaluation failed"):
    training.train_and_evaluate(config, tmp_path)
  _, position = saved_params(tmp_path)
  assert position == {"epoch": 1, "step": 0}
  trained = json.loads((tmp_path / "metrics.json").read_text())
  assert trained["steps"] == 22 and "linear_probe_acc" not in trained
  # The plain re-run trains nothing and runs the missing evaluation.
  monkeypatch.undo()
  metrics = training.train_and_evaluate(config, tmp_path).metrics
  assert 0 <= metrics["linear_probe_acc"] <= 1
  assert metrics["final_loss"] == trained["final_loss"]
  assert len(metrics["invocations"]) == 1
  again = training.train_and_evaluate(config, tmp_path).metrics
  assert again["already_complete"]


def test_train_examples_is_a_class_balanced_deterministic_subset():
  from gca_jax.training import feeds
  dataset = feeds.load_data(tiny_config(train_examples=105))
  counts = np.bincount(dataset.train.labels, minlength=10)
  assert counts.sum() == 105 and counts.max() - counts.min() <= 1
  again = feeds.load_data(tiny_config(train_examples=105))
  np.testing.assert_array_equal(again.train.images, dataset.train.images)
  other = feeds.load_data(tiny_config(train_examples=105, seed=1))
  assert not np.array_equal(other.train.images, dataset.train.images)
  with pytest.raises(Exception, match="train_examples"):
    feeds.load_data(tiny_config(train_examples=10 ** 6))


def test_a_second_run_on_a_workdir_is_refused(tmp_path):
  from gca_jax import training
  from gca_jax.training import checkpoint
  lock = checkpoint.WorkdirLock(tmp_path)
  try:
    with pytest.raises(checkpoint.WorkdirError, match="in use by another run"):
      training.train_and_evaluate(tiny_config(), tmp_path)
  finally:
    lock.release()


def _flip_bytes(path):
  data = bytearray(path.read_bytes())
  for i in range(0, len(data), max(len(data) // 8, 1)):
    data[i] ^= 0xFF
  path.write_bytes(bytes(data))


def _largest_file(directory):
  return max((p for p in directory.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete"])
@pytest.mark.slow
def test_damaged_latest_checkpoint_falls_back_to_the_previous(tmp_path, capsys, damage):
  from gca_jax import training
  from gca_jax.training import checkpoint, restore
  training.train_and_evaluate(tiny_config(epochs=2), tmp_path)
  target = _largest_file(tmp_path / "checkpoints" / "44")
  if damage == "flip":
    _flip_bytes(target)
  elif damage == "truncate":
    target.write_bytes(target.read_bytes()[: target.stat().st_size // 2])
  else:
    target.unlink()
  capsys.readouterr()
  _, state = restore.load_trained(tmp_path)
  assert int(state.step) == 22
  assert "checkpoint 44" in capsys.readouterr().err
  assert not (tmp_path / "damaged").exists()  # reading holds no lock: nothing moved
  # The run continues from the intact checkpoint, setting the damaged one aside.
  result = training.train_and_evaluate(tiny_config(epochs=2), tmp_path)
  assert (tmp_path / "damaged" / "44").is_dir()
  assert result.metrics["steps"] == 44
  checkpointer = checkpoint.Checkpointer(tmp_path)
  assert checkpointer.latest_step() == 44 and checkpointer.damage(44) is None
  checkpointer.close()


def test_a_checkpoint_without_checksum_record_is_used_unverified(tmp_path, capsys):
  # What a kill between orbax's commit and the checksum record leaves (or an
  # older version's checkpoint): complete, but unverifiable. It is kept.
  from gca_jax import training
  from gca_jax.training import checkpoint, restore
  training.train_and_evaluate(tiny_config(epochs=2, max_checkpoints=1), tmp_path)
  assert checkpoint.Checkpointer(tmp_path).all_steps() == [44]
  (tmp_path / "checksums" / "44.json").unlink()
  capsys.readouterr()
  _, state = restore.load_trained(tmp_path)
  assert int(state.step) == 44
  assert "no checksum record; using it unverified" in capsys.readouterr().err


def test_missing_config_json_refuses_to_resume(tmp_path):
  from gca_jax import training
  training.train_and_evaluate(tiny_config(epochs=1), tmp_path)
  (tmp_path / "config.json").unlink()
  with pytest.raises(training.RunMismatchError, match="no config.json"):
    training.train_and_evaluate(tiny_config(epochs=1, loss="infonce"), tmp_path)


@pytest.mark.slow
def test_a_diverging_run_stops_and_keeps_the_last_finite_checkpoint(tmp_path):
  from gca_jax import training
  from gca_jax.training import loop
  config = tiny_config(learning_rate=1e20, checkpoint_every_steps=1, log_every_steps=1)
  with pytest.raises(loop.TrainingDiverged, match="training diverged") as error:
    training.train_and_evaluate(config, tmp_path)
  assert "\n" not in str(error.value)
  params, _ = saved_params(tmp_path)
  assert all(np.all(np.isfinite(v)) for v in params.values())
  result = run_module("gca_jax.pretrain", f"--workdir={tmp_path / 'cli'}", SMALL,
                      "--config.learning_rate=1e20", "--config.log_every_steps=1")
  assert result.returncode == 1 and "training diverged" in result.stderr


@pytest.mark.parametrize("field, value", [
    ("knn_temperature", 0.0), ("knn_k", 0), ("knn_k", -5), ("stop_after_epoch", -1),
    ("learning_rate", -0.1), ("learning_rate", float("nan")), ("learning_rate", float("inf")),
    ("lr_scaling", "bogus"), ("linear_probe_steps", -5), ("max_checkpoints", 0),
    ("checkpoint_every_steps", -1), ("train_examples", -1), ("momentum", 1.5),
    ("weight_decay", -1.0), ("batch_size", 0), ("ema_decay", 2.0), ("model.dtype", "fp8"),
    ("optimizer", "rmsprop"), ("loss_scope", "everywhere"),
])
def test_bad_config_values_are_refused_naming_the_field(field, value):
  from gca_jax import training
  config = tiny_config()
  config.update_from_flattened_dict({field: value})
  with pytest.raises(training.ConfigError, match=f"config.{field} must be") as error:
    training.validate(config, jax.device_count())
  assert "\n" not in str(error.value)


def _truncated_config_json(workdir):
  from gca_jax import training
  training.train_and_evaluate(tiny_config(epochs=1), workdir)
  (workdir / "config.json").write_text('{"loss": ')


@pytest.mark.parametrize("setup_workdir, args, message", [
    (lambda p: p.write_text("a file"), [SMALL], "is a file"),
    (lambda p: p.write_text("a file"), [SMALL, "--workdir=/dev/null/run"], "cannot write"),
    (_truncated_config_json, [], "config.json is unreadable"),
])
@pytest.mark.slow
def test_unusable_workdirs_give_one_line(tmp_path, setup_workdir, args, message):
  workdir = tmp_path / "workdir"
  setup_workdir(workdir)
  result = run_module("gca_jax.pretrain", f"--workdir={workdir}", *args)
  assert message in one_line_error(result)


def test_inconsistent_checkpoint_position_is_a_clear_error(tmp_path):
  from gca_jax import training
  from gca_jax.training import checkpoint, restore
  training.train_and_evaluate(tiny_config(epochs=1), tmp_path)
  run, state = restore.load_trained(tmp_path)
  checkpointer = checkpoint.Checkpointer(tmp_path)
  checkpointer.save(state.replace(step=state.step + 1), {"epoch": 0, "step": 5})
  checkpointer.close()
  with pytest.raises(checkpoint.WorkdirError, match="disagrees with its state's step"):
    restore.load_trained(tmp_path)


@pytest.mark.parametrize("overrides, message", [
    ({"loss": "byol"}, "'byol' has no sharded form"),
    ({"loss": "reference/gca_uot"}, "has no form for loss 'reference/gca_uot'"),
])
def test_sharded_scope_needs_a_loss_with_a_sharded_form(overrides, message):
  from gca_jax import training
  config = tiny_config(loss_scope="sharded", **overrides)
  with pytest.raises(training.ConfigError, match=message):
    training.validate(config, 1)
  training.validate(tiny_config(loss_scope="sharded", loss="gca_rince"), 1)
