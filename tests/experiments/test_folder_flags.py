"""A folder flag (``--root``, ``--out``) given a file, or a path under one,
ends in one line before anything runs."""

import importlib

import pytest


@pytest.mark.parametrize("name, flag", [("small_scale", "root"), ("table2", "root"),
                                        ("pacs_domains", "root"), ("claims", "out"),
                                        ("small_scale", "out")])
@pytest.mark.parametrize("under", [False, True])
def test_a_folder_flag_naming_a_file_is_one_line(tmp_path, capsys, name, flag, under):
  blocking = tmp_path / "a_file"
  blocking.write_text("")
  path = blocking / "sub" if under else blocking
  module = importlib.import_module(f"experiments.{name}")
  with pytest.raises(SystemExit) as exited:
    module.main(["--smoke", f"--{flag}={path}"] if name != "claims" else [f"--out={path}"])
  assert exited.value.code == 2
  where = f"is under the file {blocking}" if under else "is a file"
  assert capsys.readouterr().err == (f"error: --{flag}={path} {where}, not a folder; pass a "
                                     "folder (created if missing)\n")
  assert blocking.read_text() == ""


def test_a_repeated_root_naming_a_file_is_one_line(tmp_path, capsys):
  from experiments import report
  blocking = tmp_path / "a_file"
  blocking.write_text("")
  with pytest.raises(SystemExit) as exited:
    report.main([f"--root={tmp_path}", f"--root={blocking}"])
  assert exited.value.code == 2
  assert capsys.readouterr().err == (f"error: --root={blocking} is a file, not a folder; pass "
                                     "a folder (created if missing)\n")
