"""The command line: the embedded default run, and one-line errors."""

import json
import re
import pytest

from tests.conftest import REPO_ROOT, one_line_error, run_module


def _pretrain(*args, cwd=REPO_ROOT):
  return run_module("gca_jax.pretrain", *args, cwd=cwd)


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
    # A typo names the field and the likely one, without an escaped repr.
    (["--config.epoch=3"], '''flag: 'epoch' Did you mean "epochs" instead of "epoch"?'''),
])
@pytest.mark.slow
def test_bad_input_gives_one_line_and_nonzero_exit(tmp_path, args, message):
  assert message in one_line_error(_pretrain(f"--workdir={tmp_path}", *args))


@pytest.mark.parametrize("args,message", [
    # The field rule, before the data, the model or config.json.
    (["--config=gca_jax/training/config.py:small", "--config.batch_size=1"],
     "error: config.batch_size must be an integer >= 2, got 1"),
    # A config file's own error, not the traceback ml_collections flattens.
    (["--config=experiments/configs/cifar10.py:tiny"],
     "error: flag --config=experiments/configs/cifar10.py:tiny: unknown config variant "
     "'tiny'; the allowed one is 'small' (e.g. --config=<file>.py:small)"),
    # A group given a value: the field to set instead.
    (["--config.model=resnet18"],
     "error: --config.model=resnet18: config.model is a group of fields (its fields: dtype, "
     "name, predictor_hidden_dim, projection_dim, projector_hidden_dim, stem, width), not a "
     "value; set one, e.g. --config.model.name=resnet18"),
])
def test_unusable_config_is_one_exact_line_before_anything_is_written(tmp_path, args,
                                                                      message):
  workdir = tmp_path / "run"
  assert one_line_error(_pretrain(f"--workdir={workdir}", *args)) == message
  assert not workdir.exists()


def test_config_file_with_a_syntax_error_gives_one_line(tmp_path):
  config_file = tmp_path / "broken.py"
  config_file.write_text("def get_config(:\n")
  result = _pretrain(f"--workdir={tmp_path / 'run'}", f"--config={config_file}",
                     "--config.epochs=1")
  assert "SyntaxError" in one_line_error(result)


def _save_dummy_checkpoint(workdir):
  import jax.numpy as jnp
  from gca_jax import training
  from gca_jax.training import checkpoint
  state = training.TrainState(step=jnp.zeros((), jnp.int32), params={"w": jnp.ones(2)},
                              batch_stats={"m": jnp.zeros(2)},
                              opt_state={"s": jnp.zeros(2)}, rng=jnp.zeros(2, jnp.uint32))
  checkpointer = checkpoint.Checkpointer(workdir)
  checkpointer.save(state, {"epoch": 0, "step": 0})
  checkpointer.close()


@pytest.mark.slow
def test_workdir_of_another_run_gives_one_line(tmp_path):
  (tmp_path / "config.json").write_text(json.dumps({"loss": "infonce"}))
  _save_dummy_checkpoint(tmp_path)
  result = _pretrain(f"--workdir={tmp_path}", "--config=gca_jax/training/config.py")
  assert "another run" in one_line_error(result)


@pytest.mark.slow
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


@pytest.mark.slow
def test_linear_eval_of_a_missing_workdir_creates_nothing(tmp_path):
  workdir = tmp_path / "typo"
  result = run_module("gca_jax.linear_eval", f"--workdir={workdir}")
  assert f"no run in {workdir}" in one_line_error(result)
  assert not workdir.exists()


def test_loss_params_placeholders_reach_the_loss_and_keep_the_identity(tmp_path):
  from gca_jax import training
  from gca_jax.training import checkpoint, objectives
  config = training.get_config()
  assert objectives.loss_params_of(config) == {"eps": 0.5}  # unset ones not passed
  config.loss_params.iters = 3
  config.loss_params.w_ce = 2.0
  assert objectives.loss_params_of(config) == {"eps": 0.5, "iters": 3, "w_ce": 2.0}
  training.validate(config, 1)
  config.loss = "reference/gca_uot"
  # The presets take the same names as the losses (no renaming on the way).
  assert objectives.loss_params_of(config) == {"eps": 0.5, "iters": 3, "w_ce": 2.0}
  training.validate(config, 1)
  config.loss_params.rho_a = 0.3
  config.loss = "reference/NT_Xent"
  training.validate(config, 1)  # rho_a: a reference parameter (unused)
  config.loss = "byol"
  training.validate(config, 1)  # BYOL ignores loss_params
  # The run identity survives the JSON round trip of the placeholders, and a
  # config.json written before they existed (no such keys) still matches.
  config = training.get_config()
  _save_dummy_checkpoint(tmp_path)
  checkpoint.write_config_json(tmp_path, config)
  checkpoint.check_run_identity(tmp_path, config)
  stored = json.loads((tmp_path / "config.json").read_text())
  stored["loss_params"] = {"eps": 0.5}
  (tmp_path / "config.json").write_text(json.dumps(stored))
  checkpoint.check_run_identity(tmp_path, config)
  config.loss_params.iters = 3
  with pytest.raises(training.RunMismatchError, match="loss_params"):
    checkpoint.check_run_identity(tmp_path, config)


@pytest.mark.slow
def test_default_command_beats_random_init_and_reaches_90_percent(tmp_path):
  result = _pretrain(cwd=tmp_path)
  assert result.returncode == 0, result.stderr[-3000:]
  probe = float(re.search(r"^linear-probe accuracy: ([\d.]+)", result.stdout, re.M)[1])
  random_init = float(re.search(r"randomly initialised encoder: ([\d.]+)",
                                result.stdout)[1])
  assert probe >= 0.90 and probe > random_init + 0.05, result.stdout
  metrics = json.loads(next(tmp_path.glob("runs/*/metrics.json")).read_text())
  for key in ("epochs", "final_loss", "knn_acc", "linear_probe_acc", "images_per_second"):
    assert key in metrics
