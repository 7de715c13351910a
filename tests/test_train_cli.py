"""The command line: the embedded default run, and one-line errors."""

import json
import re
import subprocess
import sys

import pytest

from test_train_step import REPO, pretrain_env


def _pretrain(*args, cwd=REPO, timeout=60):
  return subprocess.run([sys.executable, "-m", "gca_jax.pretrain", *args],
                        env=pretrain_env(), cwd=cwd, capture_output=True,
                        text=True, timeout=timeout)


@pytest.mark.parametrize("args,message", [
    (["--no_such_flag"], "no_such_flag"),
    (["--config.no_such_field=1"], "no_such_field"),
    (["--config.epochs=many"], "epochs"),
    (["--config=missing_config.py"], "missing_config.py"),
    (["--config.dataset=cifar10", "--config.data_dir=/nonexistent/tfds"], "cifar10"),
    (["--config.loss=no_such_loss"], "no_such_loss"),
    (["--config.loss_params.eps=-1"], "eps must be > 0"),
    (["--config.loss=reference/nope"], "nope"),
    (["--config.model.name=resnet99"], "resnet99"),
    (["--config.model.stem=foo"], "foo"),
    (["--config=/nonexistent.py", "--config.epochs=1"], "/nonexistent.py"),
    (["--config.checkpoint_every_epochs=0"], "checkpoint_every_epochs"),
    (["--config.log_every_steps=0"], "log_every_steps"),
    (["--config.epochs=0"], "epochs"),
    # A loss hyper-parameter other than eps is settable (then epochs fails).
    (["--config.loss_params.iters=3", "--config.epochs=0"], "config.epochs"),
    (["--config.loss=infonce", "--config.loss_params.iters=3"],
     "loss 'infonce' does not take parameter 'iters'"),
    (["--config.loss=reference/gca_uot", "--config.loss_params.w_ce=2",
      "--config.loss_params.lambda_p=0.1", "--config.epochs=0"], "config.epochs"),
    (["--resume"], "no checkpoint to resume in"),
])
def test_bad_input_gives_one_line_and_nonzero_exit(tmp_path, args, message):
  result = _pretrain(f"--workdir={tmp_path}", *args)
  assert result.returncode != 0
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
  assert message in lines[0]


def test_config_file_with_a_syntax_error_gives_one_line(tmp_path):
  config_file = tmp_path / "broken.py"
  config_file.write_text("def get_config(:\n")
  result = _pretrain(f"--workdir={tmp_path / 'run'}", f"--config={config_file}",
                     "--config.epochs=1")
  assert result.returncode != 0
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
  assert "SyntaxError" in lines[0]


def _save_dummy_checkpoint(workdir):
  import jax.numpy as jnp
  from gca_jax import checkpointing, train
  from gca_jax.data.feed import FeedState
  state = train.TrainState(step=jnp.zeros((), jnp.int32), params={"w": jnp.ones(2)},
                           batch_stats={"m": jnp.zeros(2)}, opt_state={"s": jnp.zeros(2)},
                           target_params={}, target_batch_stats={},
                           rng=jnp.zeros(2, jnp.uint32))
  checkpointer = checkpointing.Checkpointer(workdir)
  checkpointer.save(state, FeedState(0, 0))
  checkpointer.close()


def test_workdir_of_another_run_gives_one_line(tmp_path):
  (tmp_path / "config.json").write_text(json.dumps({"loss": "infonce"}))
  _save_dummy_checkpoint(tmp_path)
  result = _pretrain(f"--workdir={tmp_path}")
  assert result.returncode != 0
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1 and "another run" in lines[0], result.stderr


def test_failed_start_leaves_no_run_identity(tmp_path):
  # config.json alone (no checkpoint) is what a failed start leaves: it must
  # not block the workdir, and a failed start must not write one.
  result = _pretrain(f"--workdir={tmp_path}", "--config.dataset=nope")
  assert result.returncode != 0 and "nope" in result.stderr
  assert not (tmp_path / "config.json").exists()
  # A stray config.json of another run, without a checkpoint: no "another run"
  # (the identity is checked before the data is loaded).
  (tmp_path / "config.json").write_text(json.dumps({"loss": "infonce"}))
  result = _pretrain(f"--workdir={tmp_path}", "--config.dataset=nope")
  assert result.returncode != 0
  assert "another run" not in result.stderr and "nope" in result.stderr, result.stderr


def test_linear_eval_of_a_missing_workdir_creates_nothing(tmp_path):
  workdir = tmp_path / "typo"
  result = subprocess.run([sys.executable, "-m", "gca_jax.linear_eval",
                           f"--workdir={workdir}"], env=pretrain_env(), cwd=REPO,
                          capture_output=True, text=True, timeout=60)
  assert result.returncode != 0
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1 and f"no checkpoint in {workdir}" in lines[0], result.stderr
  assert not workdir.exists()


def test_loss_params_placeholders_reach_the_loss_and_keep_the_identity(tmp_path):
  from gca_jax import checkpointing, configs, train
  config = configs.get_config()
  assert train.loss_params_of(config) == {"eps": 0.5}  # unset ones not passed
  config.loss_params.iters = 3
  config.loss_params.w_ce = 2.0
  assert train.loss_params_of(config) == {"eps": 0.5, "iters": 3, "w_ce": 2.0}
  train.validate_config(config, 1)
  config.loss = "reference/gca_uot"
  assert train.loss_params_of(config) == {"eps": 0.5, "iters": 3, "r1": 2.0}
  train.validate_config(config, 1)
  config.loss_params.rho_a = 0.3
  config.loss = "reference/NT_Xent"
  train.validate_config(config, 1)  # relax1: a reference parameter (unused)
  config.loss = "byol"
  train.validate_config(config, 1)  # BYOL ignores loss_params
  # The run identity survives the JSON round trip of the placeholders, and a
  # config.json written before they existed (no such keys) still matches.
  config = configs.get_config()
  _save_dummy_checkpoint(tmp_path)
  checkpointing.write_config_json(tmp_path, config)
  checkpointing.check_run_identity(tmp_path, config)
  stored = json.loads((tmp_path / "config.json").read_text())
  stored["loss_params"] = {"eps": 0.5}
  (tmp_path / "config.json").write_text(json.dumps(stored))
  checkpointing.check_run_identity(tmp_path, config)
  config.loss_params.iters = 3
  with pytest.raises(checkpointing.RunMismatchError, match="loss_params"):
    checkpointing.check_run_identity(tmp_path, config)


@pytest.mark.slow
def test_default_command_beats_random_init_and_reaches_90_percent(tmp_path):
  result = _pretrain(cwd=tmp_path, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  probe = float(re.search(r"^linear-probe accuracy: ([\d.]+)", result.stdout, re.M)[1])
  random_init = float(re.search(r"randomly initialised encoder: ([\d.]+)",
                                result.stdout)[1])
  assert probe >= 0.90 and probe > random_init + 0.05, result.stdout
  metrics = json.loads(next(tmp_path.glob("runs/*/metrics.json")).read_text())
  for key in ("epochs", "final_loss", "knn_acc", "linear_probe_acc", "images_per_second"):
    assert key in metrics
