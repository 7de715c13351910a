"""The README's code runs as written."""

import pytest
import re

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
