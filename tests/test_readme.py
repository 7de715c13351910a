"""The README's code runs as written."""

import re
import tomllib

import pytest

from tests.conftest import REPO_ROOT


@pytest.mark.slow
def test_readme_python_example_runs():
  readme = (REPO_ROOT / "README.md").read_text()
  blocks = re.findall(r"```python\n(.*?)```", readme, re.S)
  assert blocks
  for block in blocks:
    exec(compile(block, "README.md", "exec"), {})  # pylint: disable=exec-used


def test_ci_runs_the_readme_test_command():
  readme = (REPO_ROOT / "README.md").read_text()
  commands = re.findall(r"```bash\n(.*?)```", readme, re.S)
  test_command = commands[1].strip()
  assert "pytest" in test_command
  assert test_command in (REPO_ROOT / ".ci" / "run").read_text()


def test_the_readme_commands_install_the_trainer():
  """``pip install .`` is the core alone; both commands run the trainer, so
  each installs an extra that is, or includes, the train extra."""
  commands = re.findall(r"```bash\n(.*?)```", (REPO_ROOT / "README.md").read_text(), re.S)
  extras = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())[
      "project"]["optional-dependencies"]
  for command in commands[:2]:
    (extra,) = re.findall(r"pip install -e '\.\[(\w+)\]'", command)
    assert extra == "train" or "gca_jax[train]" in extras[extra], (command, extra)
