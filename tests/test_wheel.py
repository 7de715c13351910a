"""The built wheel works alone: from an empty folder, without the checkout.

The wheel is built as a user builds it (``pip wheel . --no-deps``, in a copy
of the files it is built from so that the checkout gets no ``build/``) and
installed into a fresh venv, which then runs, from an empty folder and with
no ``PYTHONPATH``: the README's Python example, ``python -m gca_jax.pretrain
--help``, a one-epoch default run and a named dataset config in its ``small``
variant (``--config=cifar10:small``).

The dependencies are not downloaded: installing jax, tensorflow-datasets,
... into a fresh venv takes far longer than a test may (minutes of downloads,
and this machine reaches only PyPI). The wheel is installed with
``--no-deps`` and the venv sees this environment's site-packages through a
``.pth`` file, after the packages there; the test checks that every
dependency the wheel's metadata declares is satisfied there, and that
``gca_jax`` is imported from the venv, not from the checkout.
"""

import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from tests.conftest import COMPILATION_CACHE, REPO_ROOT, SUBPROCESS_TIMEOUT

pytestmark = pytest.mark.slow

# What `pip wheel .` builds from (pyproject.toml: the gca_jax package; the
# README is the long description).
WHEEL_SOURCES = ("pyproject.toml", "README.md", "gca_jax")

# Run in the venv: every requirement of gca_jax's metadata without an extra
# marker is installed at a version its specifier allows.
CHECK_REQUIREMENTS = """
import importlib.metadata as metadata
from packaging.requirements import Requirement
missing = []
for line in metadata.requires("gca_jax"):
  requirement = Requirement(line)
  if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
    continue  # an extra's requirement
  try:
    version = metadata.version(requirement.name)
  except metadata.PackageNotFoundError:
    version = None
  if version is None or not requirement.specifier.contains(version, prereleases=True):
    missing.append(f"{requirement} (found {version})")
assert not missing, missing
print(len(metadata.requires("gca_jax")))
"""


def _run(command, cwd, statuses=(0,), timeout=SUBPROCESS_TIMEOUT):
  """``command`` with no PYTHONPATH (the checkout is not importable) on the CPU;
  its exit status must be one of ``statuses``."""
  env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
  env.update(JAX_PLATFORMS="cpu", **COMPILATION_CACHE)
  result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
  assert result.returncode in statuses, (
      f"{command}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
  return result


@pytest.fixture(scope="module")
def venv_python(tmp_path_factory) -> Path:
  """The python of a fresh venv with the built wheel installed."""
  root = tmp_path_factory.mktemp("wheel")
  source = root / "source"
  source.mkdir()
  for name in WHEEL_SOURCES:
    if (REPO_ROOT / name).is_dir():
      shutil.copytree(REPO_ROOT / name, source / name,
                      ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    else:
      shutil.copy(REPO_ROOT / name, source / name)
  # Build isolation fetches the build backend (setuptools, wheel) as a user's
  # pip does (PyPI or pip's cache).
  _run([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "-q",
        "-w", str(root / "dist")], cwd=root)
  (wheel,) = (root / "dist").glob("gca_jax-*.whl")
  venv = root / "venv"
  _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=root)
  python = venv / "bin" / "python"
  # Installed while the venv still sees only itself: pip then never looks at
  # (or uninstalls) the gca_jax of this environment.
  _run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
        "--no-index", "-q", str(wheel)], cwd=root)
  venv_site = Path(_run([str(python), "-c", "import sysconfig; print("
                         "sysconfig.get_path('purelib'))"], cwd=root).stdout.strip())
  # A path line only appends the directory to sys.path (its own .pth files,
  # e.g. an editable install of the checkout, are not processed).
  (venv_site / "project_dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
  return python


@pytest.fixture()
def empty_folder(tmp_path) -> Path:
  folder = tmp_path / "empty"
  folder.mkdir()
  return folder


def test_the_package_and_its_configs_come_from_the_wheel(venv_python, empty_folder):
  result = _run([str(venv_python), "-c", "import gca_jax, gca_jax.configs, gca_jax.theorems; "
                 "print(gca_jax.__file__); print(*gca_jax.configs.NAMES)"], cwd=empty_folder)
  location, names = result.stdout.strip().splitlines()
  assert Path(location).is_relative_to(venv_python.parents[1]), location
  assert {"cifar10", "cifar100", "svhn", "pacs", "imagenet100", "digits"} <= set(names.split())


def test_the_wheels_dependencies_are_satisfied(venv_python, empty_folder):
  result = _run([str(venv_python), "-c", CHECK_REQUIREMENTS], cwd=empty_folder)
  assert int(result.stdout) > 0


def test_readme_python_example_runs(venv_python, empty_folder):
  blocks = re.findall(r"```python\n(.*?)```", (REPO_ROOT / "README.md").read_text(), re.S)
  assert blocks
  for block in blocks:
    _run([str(venv_python), "-c", block], cwd=empty_folder)


def test_pretrain_help(venv_python, empty_folder):
  result = _run([str(venv_python), "-m", "gca_jax.pretrain", "--help"], cwd=empty_folder,
                statuses=(0,))
  assert "Contrastive pre-training from the command line" in result.stdout
  assert re.search(r"--config: A packaged dataset config \(cifar10, ", result.stdout)
  assert not result.stderr.strip(), result.stderr[-3000:]


@pytest.mark.parametrize("args", [
    ["--config.epochs=1"],                  # the default (digits) config, one epoch
    ["--config=cifar10:small"],             # a packaged dataset config by name
], ids=["default", "cifar10_small"])
def test_pretrain_runs(venv_python, empty_folder, args):
  result = _run([str(venv_python), "-m", "gca_jax.pretrain", *args, "--workdir=run"],
                cwd=empty_folder)
  assert "linear-probe accuracy:" in result.stdout
  assert (empty_folder / "run" / "metrics.json").exists()
