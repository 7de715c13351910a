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
])
def test_bad_input_gives_one_line_and_nonzero_exit(tmp_path, args, message):
  result = _pretrain(f"--workdir={tmp_path}", *args)
  assert result.returncode != 0
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
  assert message in lines[0]


def test_workdir_of_another_run_gives_one_line(tmp_path):
  (tmp_path / "config.json").write_text(json.dumps({"loss": "infonce"}))
  result = _pretrain(f"--workdir={tmp_path}")
  assert result.returncode != 0
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1 and "another run" in lines[0], result.stderr


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
