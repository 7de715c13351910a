"""A run's identity is kept beside each checkpoint: an edited config.json,
an unknown field in it, or (for ``loss_scope='local'``) another device count
is refused in one line naming the field."""

import json
import shutil

import pytest

from tests.conftest import one_line_error, run_module, tiny_config


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
  """A finished one-epoch run (22 steps)."""
  from gca_jax import training
  workdir = tmp_path_factory.mktemp("finished")
  training.train_and_evaluate(tiny_config(epochs=1), workdir)
  return workdir


def _copy_with_config(finished, tmp_path, **changes):
  workdir = tmp_path / "run"
  shutil.copytree(finished, workdir, ignore=shutil.ignore_patterns(".lock"))
  stored = json.loads((workdir / "config.json").read_text())
  stored.update(changes)
  (workdir / "config.json").write_text(json.dumps(stored))
  return workdir


@pytest.mark.slow
def test_an_edited_config_json_cannot_extend_a_finished_run(finished, tmp_path):
  from gca_jax.training import checkpoint, restore
  workdir = _copy_with_config(finished, tmp_path, epochs=2)
  message = (f"workdir {workdir} holds another run: its checkpoint 22 was written with "
             "config.epochs=1, not 2; an edit of config.json cannot change a run: restore "
             "it, or use a new --workdir")
  with pytest.raises(checkpoint.RunMismatchError) as refused:
    restore.load_trained(workdir)  # what linear_eval reads
  assert str(refused.value) == message
  assert one_line_error(run_module("gca_jax.pretrain", f"--workdir={workdir}")) == (
      f"error: {message}")
  assert sorted(p.name for p in (workdir / "checkpoints").iterdir()) == ["22"]


def test_an_unknown_field_in_config_json_is_refused(tmp_path):
  from gca_jax.training import checkpoint, restore
  workdir = tmp_path / "run"
  workdir.mkdir()
  stored = checkpoint.config_to_json(tiny_config(epochs=1))
  (workdir / "config.json").write_text(json.dumps({**stored, "epochz": 2}))
  with pytest.raises(checkpoint.WorkdirError) as refused:
    restore.load_trained(workdir)
  assert str(refused.value) == (f"{workdir}/config.json has an unknown field config.epochz "
                                "(misspelt?); fix or restore the file")


def test_an_unknown_field_of_a_config_is_refused_at_start(tmp_path):
  from gca_jax import training
  config = tiny_config()
  config.loss_parms = {"eps": 0.1}
  with pytest.raises(training.ConfigError, match="^config.loss_parms is not a field"):
    training.train_and_evaluate(config, tmp_path)


@pytest.mark.slow
def test_a_local_scope_run_resumes_only_on_its_device_count(tmp_path):
  from gca_jax import training
  started = run_module("gca_jax.pretrain", f"--workdir={tmp_path}",
                       "--config=gca_jax/training/config.py:small", "--config.epochs=2",
                       "--config.linear_probe=False", "--config.loss_scope=local",
                       "--config.stop_after_epoch=1", num_devices=2)
  assert started.returncode == 0, started.stderr[-3000:]
  with pytest.raises(training.RunMismatchError) as refused:
    training.train_and_evaluate(tiny_config(epochs=2, loss_scope="local"), tmp_path)
  assert str(refused.value) == (
      f"workdir {tmp_path} holds a config.loss_scope='local' run (one plan per device) "
      "whose checkpoint 22 was written on 2 devices; this process has 1: resume it on 2 "
      "devices, or use a new --workdir")


@pytest.mark.slow
def test_a_relative_dataset_path_is_stored_resolved(tmp_path, monkeypatch):
  """Started with a relative .npz path in one folder, the run resumes and is
  evaluated from another, and another spelling of the file is the same run."""
  import numpy as np
  from gca_jax import training
  from gca_jax.data import load_dataset
  from gca_jax.training import restore
  digits = load_dataset("digits", image_size=8)
  start, elsewhere = tmp_path / "start", tmp_path / "elsewhere"
  start.mkdir()
  elsewhere.mkdir()
  np.savez(start / "rel.npz", x_train=digits.train.images[:128],
           y_train=digits.train.labels[:128], x_test=digits.test.images[:64],
           y_test=digits.test.labels[:64])
  workdir = tmp_path / "run"
  monkeypatch.chdir(start)
  training.train_and_evaluate(tiny_config(dataset="npz:rel.npz", epochs=1), workdir)
  stored = json.loads((workdir / "config.json").read_text())
  assert stored["dataset"] == f"npz:{start / 'rel.npz'}"
  monkeypatch.chdir(elsewhere)
  assert int(restore.load_trained(workdir).state.step) == 2
  for spelling in ("npz:../start/./rel.npz", str(start / "rel.npz")):
    again = training.train_and_evaluate(tiny_config(dataset=spelling, epochs=1), workdir)
    assert again.metrics["already_complete"]
