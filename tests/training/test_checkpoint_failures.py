"""Checkpoint failures that orbax reports noisily end in one line: a
half-written checkpoint without a checksum record, a full disk."""

import errno
import logging
import shutil

import pytest

from tests.conftest import run_module, tiny_config


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
  """A finished two-epoch run (checkpoints 22 and 44), as an older version
  wrote it: no checksum records."""
  from gca_jax import training
  workdir = tmp_path_factory.mktemp("finished")
  training.train_and_evaluate(tiny_config(epochs=2), workdir)
  shutil.rmtree(workdir / "checksums")
  return workdir


def _half_written(finished, tmp_path, *, keep_older: bool):
  workdir = tmp_path / "run"
  shutil.copytree(finished, workdir, ignore=shutil.ignore_patterns(".lock"))
  if not keep_older:
    shutil.rmtree(workdir / "checkpoints" / "22")
  for data in (workdir / "checkpoints" / "44" / "state" / "ocdbt.process_0" / "d").iterdir():
    data.write_bytes(data.read_bytes()[:data.stat().st_size // 2])
  return workdir


UNVERIFIED = "warning: checkpoint {step} in {workdir} has no checksum record; using it unverified"
DAMAGED = ("warning: checkpoint 44 in {workdir} is damaged (unverified and unreadable: "
           "Exception); skipped")


@pytest.mark.slow
def test_a_half_written_only_checkpoint_is_one_line(finished, tmp_path):
  workdir = _half_written(finished, tmp_path, keep_older=False)
  result = run_module("gca_jax.linear_eval", f"--workdir={workdir}", "--steps=5")
  assert result.returncode == 2
  assert result.stderr.strip().splitlines() == [
      UNVERIFIED.format(step=44, workdir=workdir), DAMAGED.format(workdir=workdir),
      f"error: no intact checkpoint left in {workdir}/checkpoints (see the warnings); move "
      "the workdir away to start over"]


@pytest.mark.slow
def test_a_half_written_checkpoint_falls_back_with_a_short_warning(finished, tmp_path):
  workdir = _half_written(finished, tmp_path, keep_older=True)
  result = run_module("gca_jax.linear_eval", f"--workdir={workdir}", "--steps=5")
  assert result.returncode == 0, result.stderr[-3000:]
  assert result.stderr.strip().splitlines() == [
      UNVERIFIED.format(step=44, workdir=workdir), DAMAGED.format(workdir=workdir),
      UNVERIFIED.format(step=22, workdir=workdir)]
  assert "step 22: embedding" in result.stdout


@pytest.mark.slow
def test_a_full_disk_reported_by_orbax_writers_is_one_line(tmp_path, monkeypatch, caplog):
  """orbax's writers raise a ValueError (tensorstore's RESOURCE_EXHAUSTED)
  and log it from their threads with a traceback: one line, no log."""
  import orbax.checkpoint as ocp
  from absl import logging as absl_logging
  from gca_jax import training
  from gca_jax.training import checkpoint
  wait = ocp.CheckpointManager.wait_until_finished
  failure = ('RESOURCE_EXHAUSTED: Error writing local file "x/_sharding": Failed to write '
             f"16654 bytes [OS error {errno.ENOSPC}: No space left on device]")

  failed = []

  def disk_full_at_44(self):
    if not failed and 44 in [int(p.name.split(".")[0])
                             for p in (tmp_path / "checkpoints").iterdir()]:
      failed.append(44)
      absl_logging.error("Save Finalize thread failed: %s", failure)
      raise ValueError(failure)
    return wait(self)

  caplog.set_level(logging.INFO)
  with monkeypatch.context() as patch:
    patch.setattr(ocp.CheckpointManager, "wait_until_finished", disk_full_at_44)
    with pytest.raises(checkpoint.WorkdirError) as raised:
      training.train_and_evaluate(tiny_config(epochs=2), tmp_path)
  assert str(raised.value) == (f"no space left on device writing {tmp_path}/checkpoints/44; "
                               "free space and re-run the same command")
  assert not [r for r in caplog.records if "RESOURCE_EXHAUSTED" in r.getMessage()]
