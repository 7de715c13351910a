"""A start that fails before its first checkpoint leaves no workdir debris."""

import pytest

from gca_jax import data, training
from tests.conftest import tiny_config


def _fail_to_start(workdir):
  with pytest.raises(data.DatasetError):
    training.train_and_evaluate(tiny_config(dataset="no_such_dataset"), workdir)


def test_the_folders_a_failed_start_created_are_removed(tmp_path):
  _fail_to_start(tmp_path / "runs" / "first")
  assert list(tmp_path.iterdir()) == []


def test_an_empty_workdir_given_is_emptied_again_and_a_used_one_kept(tmp_path):
  empty = tmp_path / "empty"
  empty.mkdir()
  _fail_to_start(empty)
  assert empty.is_dir() and list(empty.iterdir()) == []
  used = tmp_path / "used"
  used.mkdir()
  (used / "notes.txt").write_text("mine")
  _fail_to_start(used)
  assert (used / "notes.txt").read_text() == "mine"
