"""Checkpoints: exact resumption, workdir identity, SIGKILL recovery."""

import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from test_train_step import REPO, pretrain_env, saved_params, tiny_config


def test_stop_and_resume_equals_uninterrupted_run(tmp_path):
  from gca_jax import train
  straight = train.train_and_evaluate(tiny_config(), tmp_path / "straight")
  train.train_and_evaluate(tiny_config(stop_after_epoch=2), tmp_path / "resumed")
  resumed = train.train_and_evaluate(tiny_config(), tmp_path / "resumed", resume=True)
  assert straight["epochs"] == resumed["epochs"] == 4
  assert straight["steps"] == resumed["steps"]
  assert straight["final_loss"] == resumed["final_loss"]  # bitwise on CPU
  params_straight, feed = saved_params(tmp_path / "straight", tiny_config())
  params_resumed, _ = saved_params(tmp_path / "resumed", tiny_config())
  assert feed == {"epoch": 4, "step": 0}
  for name, value in params_straight.items():
    np.testing.assert_array_equal(params_resumed[name], value, err_msg=name)

  # The finished workdir refuses a restart without --resume, and another config.
  from gca_jax import checkpointing
  with pytest.raises(checkpointing.RunMismatchError, match="--resume"):
    train.train_and_evaluate(tiny_config(), tmp_path / "straight")
  with pytest.raises(checkpointing.RunMismatchError, match="loss"):
    train.train_and_evaluate(tiny_config(loss="infonce"), tmp_path / "straight",
                             resume=True)


def _strict_json(path):
  def reject(constant):
    raise ValueError(f"{constant} is not JSON")
  return json.loads(path.read_text(), parse_constant=reject)


def test_resuming_a_finished_run_keeps_its_results(tmp_path, capsys):
  from gca_jax import train
  config = tiny_config(epochs=1, eval_every_epochs=1)
  first = train.train_and_evaluate(config, tmp_path)
  metrics_json = (tmp_path / "metrics.json").read_text()
  assert _strict_json(tmp_path / "metrics.json")["knn_acc"] == first["knn_acc"]
  capsys.readouterr()
  again = train.train_and_evaluate(config, tmp_path, resume=True)
  assert capsys.readouterr().out.strip() == (
      f"run already complete: {tmp_path / 'metrics.json'}")
  assert (tmp_path / "metrics.json").read_text() == metrics_json
  assert again["already_complete"] and again["knn_acc"] == first["knn_acc"]


def _pretrain(workdir, *extra):
  return [sys.executable, "-m", "gca_jax.pretrain", f"--workdir={workdir}",
          "--config.load_size=8", "--config.model.width=4",
          "--config.model.projector_hidden_dim=32", "--config.batch_size=64",
          "--config.epochs=40", "--config.eval_every_epochs=0",
          "--config.linear_probe=False", "--config.progress_bar=False",
          "--config.checkpoint_every_epochs=1", *extra]


def test_sigkilled_run_resumes_from_last_complete_checkpoint(tmp_path):
  checkpoints = tmp_path / "checkpoints"
  process = subprocess.Popen(_pretrain(tmp_path), env=pretrain_env(), cwd=REPO,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
  deadline = time.time() + 180
  while time.time() < deadline and process.poll() is None:
    if checkpoints.exists() and len([p for p in checkpoints.iterdir()
                                     if p.name.isdigit()]) >= 2:
      break
    time.sleep(0.05)
  assert process.poll() is None, "run ended before it could be killed"
  process.send_signal(signal.SIGKILL)
  process.wait()
  # A save interrupted mid-way leaves an uncommitted temporary directory; it
  # must be ignored.
  partial = checkpoints / "999999.orbax-checkpoint-tmp-0"
  (partial / "state").mkdir(parents=True)
  (partial / "state" / "garbage").write_bytes(b"\0" * 100)

  resumed = subprocess.run(_pretrain(tmp_path, "--resume"), env=pretrain_env(),
                           cwd=REPO, capture_output=True, text=True, timeout=300)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert "resuming from step" in resumed.stdout
  resumed_step = int(resumed.stdout.split("resuming from step ")[1].split()[0])
  assert 0 < resumed_step < 40 * 22
  metrics = json.loads((tmp_path / "metrics.json").read_text())
  assert metrics["epochs"] == 40 and metrics["steps"] == 40 * 22
  assert np.isfinite(metrics["final_loss"])
