"""Checkpoints: exact resumption, workdir identity, SIGKILL recovery."""

import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.conftest import (REPO_ROOT, SUBPROCESS_TIMEOUT, pretrain_env, saved_params,
                            tiny_config)


@pytest.mark.slow
def test_stop_and_resume_equals_uninterrupted_run(tmp_path):
  from gca_jax import training
  straight = training.train_and_evaluate(tiny_config(), tmp_path / "straight").metrics
  training.train_and_evaluate(tiny_config(stop_after_epoch=2), tmp_path / "resumed")
  resumed = training.train_and_evaluate(tiny_config(), tmp_path / "resumed",
                                        resume=True).metrics
  assert straight["epochs"] == resumed["epochs"] == 4
  assert straight["steps"] == resumed["steps"]
  assert straight["final_loss"] == resumed["final_loss"]  # bitwise on CPU
  params_straight, feed = saved_params(tmp_path / "straight")
  params_resumed, _ = saved_params(tmp_path / "resumed")
  assert feed == {"epoch": 4, "step": 0}
  for name, value in params_straight.items():
    np.testing.assert_array_equal(params_resumed[name], value, err_msg=name)

  # The finished workdir is left as it is by a plain re-run, and refuses
  # another config, naming the field.
  again = training.train_and_evaluate(tiny_config(), tmp_path / "straight").metrics
  assert again["already_complete"] and again["final_loss"] == straight["final_loss"]
  with pytest.raises(training.RunMismatchError, match="loss"):
    training.train_and_evaluate(tiny_config(loss="infonce"), tmp_path / "straight",
                                resume=True)


def _strict_json(path):
  def reject(constant):
    raise ValueError(f"{constant} is not JSON")
  return json.loads(path.read_text(), parse_constant=reject)


def test_resuming_a_finished_run_keeps_its_results(tmp_path, capsys):
  from gca_jax import training
  config = tiny_config(epochs=1, eval_every_epochs=1)
  first = training.train_and_evaluate(config, tmp_path).metrics
  metrics_json = (tmp_path / "metrics.json").read_text()
  assert _strict_json(tmp_path / "metrics.json")["knn_acc"] == first["knn_acc"]
  capsys.readouterr()
  again = training.train_and_evaluate(config, tmp_path, resume=True).metrics
  assert capsys.readouterr().out.strip() == (
      f"run already complete: {tmp_path / 'metrics.json'}")
  assert (tmp_path / "metrics.json").read_text() == metrics_json
  assert again["already_complete"] and again["knn_acc"] == first["knn_acc"]


def _pretrain(workdir, *extra):
  return [sys.executable, "-m", "gca_jax.pretrain", f"--workdir={workdir}",
          "--config=gca_jax/training/config.py:small", "--config.epochs=40",
          "--config.linear_probe=False", *extra]


@pytest.mark.slow
def test_sigkilled_run_resumes_from_last_complete_checkpoint(tmp_path):
  checkpoints = tmp_path / "checkpoints"
  process = subprocess.Popen(_pretrain(tmp_path), env=pretrain_env(), cwd=REPO_ROOT,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
  deadline = time.time() + SUBPROCESS_TIMEOUT
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
                           cwd=REPO_ROOT, capture_output=True, text=True,
                           timeout=SUBPROCESS_TIMEOUT)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert "resuming from step" in resumed.stdout
  resumed_step = int(resumed.stdout.split("resuming from step ")[1].split()[0])
  assert 0 < resumed_step < 40 * 22
  metrics = json.loads((tmp_path / "metrics.json").read_text())
  assert metrics["epochs"] == 40 and metrics["steps"] == 40 * 22
  assert np.isfinite(metrics["final_loss"])
