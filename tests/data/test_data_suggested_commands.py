"""The missing-dataset error of the command line: every way out it suggests
works as written from the checkout, and the failed start leaves no workdir."""

import re
import shlex
import tomllib

import numpy as np
import pytest

from gca_jax.data import prepare
from tests.conftest import REPO_ROOT, one_line_error, run_module

# The failing command of a new user without the prepared data (the seconds-long
# variant, so that the working alternatives below run in seconds too).
FAILING = ["--config=cifar10:small", "--config.dataset=cifar10"]


@pytest.fixture(scope="module")
def failure(tmp_path_factory):
  """(the error line, the workdir the command named) of the failing command,
  with an empty tfds data_dir so that no prepared copy is found."""
  root = tmp_path_factory.mktemp("missing")
  (root / "tfds").mkdir()
  workdir = root / "runs" / "cifar10"
  result = run_module("gca_jax.pretrain", *FAILING, f"--config.data_dir={root / 'tfds'}",
                      f"--workdir={workdir}")
  return one_line_error(result), workdir


def test_a_failed_start_leaves_no_workdir(failure):
  line, workdir = failure
  assert "is not prepared" in line
  assert not workdir.exists() and not workdir.parent.exists()


def _suggested_prepare(line: str) -> list[list[str]]:
  """The shell commands the error suggests for preparing, split."""
  text = line.split("with: ", 1)[1].split(" or point data_dir", 1)[0]
  return [shlex.split(part) for part in text.split("&&")]


def test_the_install_it_suggests_names_an_extra_of_the_checkout(failure):
  install, _ = _suggested_prepare(failure[0])
  assert install[:3] == ["pip", "install", "-e"], install
  path, extra = re.fullmatch(r"(.*)\[(\w+)\]", install[3]).groups()
  assert path == "."  # run in the checkout: its pyproject.toml
  extras = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"][
      "optional-dependencies"]
  assert "tensorflow-cpu" in " ".join(extras[extra])


def test_the_prepare_command_it_suggests_parses_as_written(failure, monkeypatch):
  _, command = _suggested_prepare(failure[0])
  assert command[:3] == ["python", "-m", "gca_jax.data.prepare"], command
  called = {}
  monkeypatch.setattr(prepare, "prepare", lambda name, **kwargs: called.update(
      name=name, **kwargs))
  prepare.main(command[3:])  # argparse exits (status 2) on an argument it cannot parse
  assert called["name"] == "cifar10" and called["data_dir"] is not None


def test_the_data_dir_flag_it_suggests_reaches_the_loader(failure, tmp_path):
  flag = re.search(r"\((--config\.data_dir=)<dir>\)", failure[0])[1]
  result = run_module("gca_jax.pretrain", *FAILING, f"{flag}{tmp_path}",
                      f"--workdir={tmp_path / 'run'}")
  assert f"in data_dir='{tmp_path}'" in one_line_error(result)


@pytest.mark.slow
def test_the_npz_route_it_suggests_trains(failure, tmp_path):
  flag = re.search(r"\((--config\.dataset=npz:)<file>\.npz;", failure[0])[1]
  names = re.search(r"the arrays ([\w, ]+)\)", failure[0])[1].split(", ")
  rng = np.random.default_rng(0)
  arrays = {"x_train": rng.integers(0, 256, (128, 8, 8, 3), np.uint8),
            "y_train": np.arange(128) % 2, "x_test": rng.integers(0, 256, (16, 8, 8, 3),
                                                                    np.uint8),
            "y_test": np.arange(16) % 2}
  assert sorted(names) == sorted(arrays)
  np.savez(tmp_path / "mine.npz", **arrays)
  workdir = tmp_path / "run"
  result = run_module("gca_jax.pretrain", *FAILING, f"{flag}{tmp_path / 'mine.npz'}",
                      f"--workdir={workdir}", "--config.linear_probe_steps=5")
  assert result.returncode == 0, result.stderr[-3000:]
  assert f"dataset: npz:{tmp_path / 'mine.npz'}, train 128 / test 16" in result.stdout
