"""Nothing lost, nothing silent: a run's summary, damaged or stray checkpoints,
a full disk, and a workdir shared by a training run and an evaluation."""

import errno
import json
import shutil

import pytest

from tests.conftest import one_line_error, run_module, saved_params, tiny_config

FINAL_KEYS = ("epochs", "steps", "final_loss", "final_alignment", "final_uniformity")
# Recovered as of the final save (the clock stops a moment later otherwise).
TIMING_KEYS = ("images_per_second", "train_seconds")


def _final(metrics):
  assert all(metrics[k] > 0 for k in TIMING_KEYS), metrics
  return {k: metrics[k] for k in FINAL_KEYS}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
  """The summary and params of an uninterrupted 2-epoch run (steps 22 and 44)."""
  from gca_jax import training
  workdir = tmp_path_factory.mktemp("finished")
  metrics = training.train_and_evaluate(tiny_config(epochs=2), workdir).metrics
  return workdir, _final(metrics), saved_params(workdir)[0]


def _copy(workdir, tmp_path):
  target = tmp_path / "run"
  shutil.copytree(workdir, target, ignore=shutil.ignore_patterns(".lock"))
  return target


def _same_params(workdir, expected):
  params, _ = saved_params(workdir)
  assert params.keys() == expected.keys()
  for name, value in expected.items():
    assert (params[name] == value).all(), name


@pytest.mark.parametrize("loss", ["deleted", "truncated"])
@pytest.mark.slow
def test_a_finished_run_whose_metrics_are_lost_gets_its_summary_back(tmp_path, finished,
                                                                       capsys, loss):
  from gca_jax import training
  workdir = _copy(finished[0], tmp_path)
  if loss == "deleted":
    (workdir / "metrics.json").unlink()
  else:
    text = (workdir / "metrics.json").read_text()
    (workdir / "metrics.json").write_text(text[: len(text) // 2])
  result = training.train_and_evaluate(tiny_config(epochs=2), workdir)
  assert result.metrics["already_complete"]
  assert "recovered it from that checkpoint" in capsys.readouterr().out
  stored = json.loads((workdir / "metrics.json").read_text())
  assert _final(stored) == finished[1]
  assert stored["invocations"][-1]["recovered_from_checkpoint"] == 44
  assert stored["invocations"][-1]["start_step"] == 0


@pytest.mark.slow
def test_a_stop_between_the_final_save_and_the_metrics_loses_nothing(tmp_path, finished,
                                                                      monkeypatch):
  """SIGTERM or kill -9 after the final checkpoint, before metrics.json: the
  re-run evaluates, writes the summary back, and the next one says complete."""
  from gca_jax import training
  from gca_jax.training import reporting
  from gca_jax.training.interrupts import Interrupted
  update = reporting.MetricsFile.update

  def stop_before_the_summary(self, results, *, invocation=None, **kwargs):
    if invocation is not None:
      raise Interrupted("stopped by SIGTERM after the last step")
    return update(self, results, invocation=invocation, **kwargs)

  config = tiny_config(epochs=2, linear_probe=True)
  with monkeypatch.context() as patch:
    patch.setattr(reporting.MetricsFile, "update", stop_before_the_summary)
    with pytest.raises(Interrupted):
      training.train_and_evaluate(config, tmp_path)
  assert "epochs" not in reporting.MetricsFile(tmp_path).read()
  again = run_module("gca_jax.pretrain", f"--workdir={tmp_path}")
  assert again.returncode == 0, again.stderr[-3000:]
  assert "linear-probe accuracy" in again.stdout
  stored = json.loads((tmp_path / "metrics.json").read_text())
  assert _final(stored) == finished[1]
  assert "linear_probe_acc" in stored
  third = run_module("gca_jax.pretrain", f"--workdir={tmp_path}")
  assert third.returncode == 0, third.stderr[-3000:]
  assert "run already complete" in third.stdout
  assert json.loads((tmp_path / "metrics.json").read_text()) == stored


@pytest.mark.slow
def test_an_unverified_damaged_latest_checkpoint_falls_back_to_the_previous(
    tmp_path, finished, capsys):
  from gca_jax import training
  from gca_jax.training import restore
  workdir = _copy(finished[0], tmp_path)
  shutil.rmtree(workdir / "checksums")  # as an older version wrote them
  (workdir / "checkpoints" / "44" / "state" / "_METADATA").write_text("{garbled")
  assert int(restore.load_trained(workdir).state.step) == 22
  assert "checkpoint 44" in capsys.readouterr().err
  # The final probe it lacks needs the state: it resumes from 22 and trains 44 again.
  training.train_and_evaluate(tiny_config(epochs=2, linear_probe=True), workdir)
  assert "resuming from step 22" in capsys.readouterr().out
  assert (workdir / "damaged" / "44").is_dir()
  _same_params(workdir, finished[2])


@pytest.mark.slow
def test_a_stray_empty_step_folder_is_set_aside(tmp_path, finished, capsys):
  from gca_jax import training
  from gca_jax.training import restore
  workdir = _copy(finished[0], tmp_path)
  (workdir / "checkpoints" / "999").mkdir()
  assert int(restore.load_trained(workdir).state.step) == 44
  assert ("checkpoint 999 in" in capsys.readouterr().err)
  result = training.train_and_evaluate(tiny_config(epochs=2), workdir)
  assert result.metrics["already_complete"]
  assert "checkpoint 999 in" in capsys.readouterr().err
  assert (workdir / "damaged" / "999").is_dir()


@pytest.mark.slow
def test_a_full_disk_is_one_line_and_the_same_command_resumes(tmp_path, finished,
                                                              monkeypatch):
  import orbax.checkpoint as ocp
  from gca_jax import training
  from gca_jax.training import checkpoint
  save = ocp.CheckpointManager.save

  def disk_full_at_44(self, step, *args, **kwargs):
    if step == 44:
      raise OSError(errno.ENOSPC, "No space left on device")
    return save(self, step, *args, **kwargs)

  with monkeypatch.context() as patch:
    patch.setattr(ocp.CheckpointManager, "save", disk_full_at_44)
    with pytest.raises(checkpoint.WorkdirError) as raised:
      training.train_and_evaluate(tiny_config(epochs=2), tmp_path)
  assert str(raised.value) == (f"no space left on device writing {tmp_path}/checkpoints/44; "
                               "free space and re-run the same command")
  training.train_and_evaluate(tiny_config(epochs=2), tmp_path)
  assert _final(json.loads((tmp_path / "metrics.json").read_text()))["final_loss"] == (
      finished[1]["final_loss"])
  _same_params(tmp_path, finished[2])


def test_a_checkpoints_path_that_is_a_file_is_one_line(tmp_path):
  (tmp_path / "checkpoints").write_text("")
  result = run_module("gca_jax.pretrain", f"--workdir={tmp_path}",
                      "--config=gca_jax/training/config.py:small")
  assert one_line_error(result) == (
      f"error: {tmp_path}/checkpoints is a file, not a directory of checkpoints; move it "
      "away and re-run the same command")


def _drop_from_config_json(workdir, *fields):
  stored = json.loads((workdir / "config.json").read_text())
  for field in fields:
    del stored[field]
  (workdir / "config.json").write_text(json.dumps(stored))


@pytest.mark.slow
def test_a_config_json_predating_a_field_takes_its_default_with_a_note(tmp_path, finished):
  workdir = _copy(finished[0], tmp_path)
  _drop_from_config_json(workdir, "data_workers", "target")
  result = run_module("gca_jax.pretrain", f"--workdir={workdir}")
  assert result.returncode == 0, result.stderr[-3000:]
  assert "run already complete" in result.stdout
  assert result.stderr.strip().splitlines() == [
      f"note: {workdir}/config.json predates config.data_workers, config.target; they take "
      "the default, which is what the run did"]
  # A field whose default may not be what the run did stays an error.
  (workdir / "config.json").write_text((finished[0] / "config.json").read_text())
  _drop_from_config_json(workdir, "optimizer")
  assert one_line_error(run_module("gca_jax.pretrain", f"--workdir={workdir}")) == (
      "error: config.optimizer is missing; start from gca_jax.training.get_config()")
