"""``linear_eval`` on workdirs it shares or cannot write: a run still
training beside it (and pruning), a workdir that cannot be written."""

import errno
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO_ROOT, SUBPROCESS_TIMEOUT, pretrain_env, tiny_config


@pytest.mark.slow
def test_linear_eval_beside_a_run_that_prunes_every_step(tmp_path):
  """With ``max_checkpoints=1`` and a save every step, the step the
  evaluation picks is pruned while it reads it: it goes on with the newest."""
  from gca_jax import linear_eval
  workdir = tmp_path / "run"
  process = subprocess.Popen(
      [sys.executable, "-m", "gca_jax.pretrain", f"--workdir={workdir}",
       "--config=gca_jax/training/config.py:small", "--config.epochs=50",
       "--config.linear_probe=False", "--config.max_checkpoints=1",
       "--config.checkpoint_every_steps=1"],
      env=pretrain_env(), cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
      text=True)
  try:
    deadline = time.monotonic() + SUBPROCESS_TIMEOUT
    while not any((workdir / "checksums").glob("*.json")):
      assert process.poll() is None, process.stderr.read()[-3000:]
      assert time.monotonic() < deadline
      time.sleep(0.2)
    result = linear_eval.evaluate(workdir, steps=5)
    assert process.poll() is None, "the run ended before the evaluation: nothing was shared"
  finally:
    process.terminate()
    process.communicate(timeout=SUBPROCESS_TIMEOUT)
  # Every evaluation also records the WDM bound of the evaluated embeddings.
  assert set(result) == {"knn_acc", "linear_probe_acc", "wdm_lower_bound"}
  assert all(0 <= result[k] <= 1 for k in ("knn_acc", "linear_probe_acc"))


def test_an_unwritable_workdir_is_refused_before_anything_is_loaded(tmp_path, monkeypatch):
  """(The probe write is made to fail: as root, a read-only mode is not.)"""
  from gca_jax import linear_eval, training
  from gca_jax.training import checkpoint, restore
  training.train_and_evaluate(tiny_config(epochs=1), tmp_path)

  def read_only(workdir):
    raise OSError(errno.EROFS, "Read-only file system")

  def no_load(*args, **kwargs):
    raise AssertionError("loaded the run before refusing")

  monkeypatch.setattr(checkpoint, "_write_probe", read_only)
  monkeypatch.setattr(restore, "load_trained", no_load)
  before = sorted(p.name for p in tmp_path.iterdir())
  with pytest.raises(checkpoint.WorkdirError) as raised:
    linear_eval.evaluate(tmp_path)
  assert str(raised.value) == (
      f"linear_eval writes its results into --workdir {tmp_path}, which cannot be written "
      "(Read-only file system); copy the workdir somewhere writable and evaluate the copy")
  assert sorted(p.name for p in tmp_path.iterdir()) == before
