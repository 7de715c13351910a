"""``python -m gca_jax.linear_eval`` stopped by SIGTERM or Ctrl-C: one line,
exit status 130, and for the fine-tuning the same command continues to the
result of an uninterrupted run."""

import json
import shutil
import signal
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT, SUBPROCESS_TIMEOUT, pretrain_env, tiny_config


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
  from gca_jax import training
  workdir = tmp_path_factory.mktemp("pretrained")
  training.train_and_evaluate(tiny_config(epochs=1), workdir)
  return workdir


def _linear_eval(workdir, *args):
  return [sys.executable, "-m", "gca_jax.linear_eval", f"--workdir={workdir}", *args]


def _stopped_when(command, line_start: str, signum):
  """Runs ``command`` and sends ``signum`` once a stdout line starts with
  ``line_start``; (exit status, stdout, stderr)."""
  process = subprocess.Popen(command, env=pretrain_env(), cwd=REPO_ROOT, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
  out = []
  for line in process.stdout:
    out.append(line)
    if line.startswith(line_start):
      process.send_signal(signum)
      break
  rest, err = process.communicate(timeout=SUBPROCESS_TIMEOUT)
  return process.returncode, "".join(out) + rest, err


@pytest.mark.slow
def test_a_stopped_finetune_continues_to_the_uninterrupted_result(pretrained, tmp_path):
  from gca_jax import protocols
  straight = tmp_path / "straight"
  shutil.copytree(pretrained, straight)
  settings = dict(epochs=3, batch_size=64)
  expected = protocols.evaluate(straight, "finetune", **settings)
  expected_record = json.loads((straight / "metrics.json").read_text())["evaluations"][-1]

  workdir = tmp_path / "run with a space"
  shutil.copytree(pretrained, workdir)
  command = _linear_eval(workdir, "--protocol=finetune", "--epochs=3", "--batch_size=64")
  status, out, err = _stopped_when(command, "finetune epoch 1:", signal.SIGTERM)
  assert status == 130, err[-3000:]
  lines = err.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("stopped by SIGTERM at fine-tuning step"), err
  assert lines[0].endswith(
      f"Continue with: python -m gca_jax.linear_eval '--workdir={workdir}' "
      "--protocol=finetune --epochs=3 --batch_size=64")
  progress = json.loads((workdir / "metrics.json").read_text())["finetune_progress"]
  assert progress["epochs_done"] >= 1 and progress["epochs"] == 3
  assert progress["epoch_accuracies"] == expected_record["epoch_accuracies"][
      :progress["epochs_done"]]

  again = subprocess.run(command, env=pretrain_env(), cwd=REPO_ROOT, capture_output=True,
                         text=True, timeout=SUBPROCESS_TIMEOUT)
  assert again.returncode == 0, again.stderr[-3000:]
  assert "finetune epoch 3:" in again.stdout and "finetune epoch 1:" not in again.stdout
  metrics = json.loads((workdir / "metrics.json").read_text())
  assert metrics["finetune_best_acc"] == expected["finetune_best_acc"]
  assert metrics["finetune_last_acc"] == expected["finetune_last_acc"]
  record = metrics["evaluations"][-1]
  assert record["epoch_accuracies"] == expected_record["epoch_accuracies"]
  assert metrics["finetune_progress"]["epochs_done"] == 3
  assert not (workdir / "finetune").exists()  # recorded: the saves are gone


@pytest.mark.slow
def test_ctrl_c_during_the_linear_protocol_is_one_line(pretrained, tmp_path):
  workdir = tmp_path / "run"
  shutil.copytree(pretrained, workdir)
  status, _, err = _stopped_when(_linear_eval(workdir, "--steps=20"), "step ",
                                 signal.SIGINT)
  assert status == 130
  assert err.strip().splitlines() == [
      "stopped by SIGINT before the linear results were recorded; run it again with: "
      f"python -m gca_jax.linear_eval --workdir={workdir} --steps=20"]
  assert not list(workdir.glob(".reading.*"))


def test_sigterm_during_the_restore_leaves_no_private_copy(pretrained, tmp_path,
                                                           monkeypatch):
  import os
  from gca_jax import protocols
  from gca_jax.training import restore
  from gca_jax.training.interrupts import Interrupted
  workdir = tmp_path / "run"
  shutil.copytree(pretrained, workdir)
  # A reader killed by SIGKILL before it could clean up left its copy (its
  # process is gone): the next reader removes it.
  stale = workdir / ".reading.999999999"
  shutil.copytree(workdir / "checkpoints", stale / "checkpoints")
  restore_state = restore.restore_state

  def terminated_while_restoring(*args):
    assert list(workdir.glob(f".reading.{os.getpid()}"))  # the copy is in use
    os.kill(os.getpid(), signal.SIGTERM)
    return restore_state(*args)

  monkeypatch.setattr(restore, "restore_state", terminated_while_restoring)
  with pytest.raises(Interrupted, match="^stopped by SIGTERM before the linear results"):
    protocols.evaluate(workdir, "linear", steps=5)
  assert not list(workdir.glob(".reading.*"))


def test_a_signal_swallowed_in_a_gc_callback_still_stops(monkeypatch, capfd):
  """Python only prints an exception raised inside a garbage-collection
  callback: the evaluation's signal handling notices and still stops, silently."""
  import gc
  import os
  from gca_jax import protocols
  from gca_jax.training.interrupts import Interrupted
  monkeypatch.setattr(protocols, "SWALLOWED_SIGNAL_EXIT_SECONDS", 600.0)
  sent = []

  def signal_during_collection(phase, info):
    del info
    if phase == "start" and not sent:
      sent.append(True)
      os.kill(os.getpid(), signal.SIGTERM)
      sum(range(1000))  # the handler runs here, inside the callback

  with pytest.raises(Interrupted, match="^stopped by SIGTERM after the test$"):
    with protocols._stopped_by_signals("after the test"):  # pylint: disable=protected-access
      gc.callbacks.append(signal_during_collection)
      try:
        gc.collect()
      finally:
        gc.callbacks.remove(signal_during_collection)
      finished = True  # the work went on: the exception was swallowed
  assert sent and finished
  assert capfd.readouterr().err == ""
