"""The built wheel works alone: from an empty folder, without the checkout.

The wheel is built as a user builds it (``pip wheel . --no-deps``, in a copy
of the files it is built from so that the checkout gets no ``build/``) and
installed twice, each time into a fresh venv that then runs from an empty
folder with no ``PYTHONPATH``:

* The core alone, as ``pip install .`` installs it: plain pip resolves its
  dependencies (jax, numpy, flax and theirs) from the package index. The
  trainer's packages are absent; the README's Python example runs, and the
  trainer, data and command lines refuse in one line naming the extra.
* With the train extra: the README's Python example, ``python -m
  gca_jax.pretrain --help``, a one-epoch default run and a named dataset
  config in its ``small`` variant (``--config=cifar10:small``). Installing
  tensorflow-datasets, grain, ... into a venv takes longer than a test may,
  so here the wheel is installed with ``--no-deps`` and the venv sees this
  environment's site-packages through a ``.pth`` file, after the packages
  there; the test checks that every dependency of the core and of the train
  extra is satisfied there, and that ``gca_jax`` is imported from the venv,
  not from the checkout.

The fast tests here hold the guard itself in this environment: its list of
the extra's packages is ``pyproject.toml``'s, and one missing package gives
the one line.
"""

import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from gca_jax import _train_extra
from tests.conftest import COMPILATION_CACHE, REPO_ROOT, SUBPROCESS_TIMEOUT

TRAIN_EXTRA = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())[
    "project"]["optional-dependencies"]["train"]

# What `pip wheel .` builds from (pyproject.toml: the gca_jax package; the
# README is the long description).
WHEEL_SOURCES = ("pyproject.toml", "README.md", "gca_jax")

# Run in the venv: every requirement of gca_jax's metadata, the core's and the
# train extra's, is installed at a version its specifier allows.
CHECK_REQUIREMENTS = """
import importlib.metadata as metadata
from packaging.requirements import Requirement
missing = []
for line in metadata.requires("gca_jax"):
  requirement = Requirement(line)
  if requirement.marker is not None and not any(
      requirement.marker.evaluate({"extra": extra}) for extra in ("", "train")):
    continue  # another extra's requirement
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
def wheel(tmp_path_factory) -> Path:
  """The wheel, built as a user builds it."""
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
  # pip does (the package index or pip's cache).
  _run([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "-q",
        "-w", str(root / "dist")], cwd=root)
  (built,) = (root / "dist").glob("gca_jax-*.whl")
  return built


@pytest.fixture(scope="module")
def venv_python(wheel, tmp_path_factory) -> Path:
  """The python of a fresh venv with the built wheel and the train extra's
  packages (this environment's) installed."""
  root = tmp_path_factory.mktemp("train_venv")
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


@pytest.mark.slow
def test_the_package_and_its_configs_come_from_the_wheel(venv_python, empty_folder):
  result = _run([str(venv_python), "-c", "import gca_jax, gca_jax.configs, gca_jax.theorems; "
                 "print(gca_jax.__file__); print(*gca_jax.configs.NAMES)"], cwd=empty_folder)
  location, names = result.stdout.strip().splitlines()
  assert Path(location).is_relative_to(venv_python.parents[1]), location
  assert {"cifar10", "cifar100", "svhn", "pacs", "imagenet100", "digits"} <= set(names.split())


@pytest.mark.slow
def test_the_wheels_dependencies_are_satisfied(venv_python, empty_folder):
  result = _run([str(venv_python), "-c", CHECK_REQUIREMENTS], cwd=empty_folder)
  assert int(result.stdout) > 0


@pytest.mark.slow
def test_readme_python_example_runs(venv_python, empty_folder):
  for block in _readme_python_blocks():
    _run([str(venv_python), "-c", block], cwd=empty_folder)


@pytest.mark.slow
def test_pretrain_help(venv_python, empty_folder):
  result = _run([str(venv_python), "-m", "gca_jax.pretrain", "--help"], cwd=empty_folder,
                statuses=(0,))
  assert "Contrastive pre-training from the command line" in result.stdout
  assert re.search(r"--config: A packaged dataset config \(cifar10, ", result.stdout)
  assert not result.stderr.strip(), result.stderr[-3000:]


@pytest.mark.slow
@pytest.mark.parametrize("args", [
    ["--config.epochs=1"],                  # the default (digits) config, one epoch
    ["--config=cifar10:small"],             # a packaged dataset config by name
], ids=["default", "cifar10_small"])
def test_pretrain_runs(venv_python, empty_folder, args):
  result = _run([str(venv_python), "-m", "gca_jax.pretrain", *args, "--workdir=run"],
                cwd=empty_folder)
  assert "linear-probe accuracy:" in result.stdout
  assert (empty_folder / "run" / "metrics.json").exists()


# ---------------------------------------------------------------------------
# The core alone, and the train extra's guard.

def _installed(python: Path, cwd: Path) -> dict:
  """``{distribution: [its requirements]}`` of what is installed for ``python``
  (``pip inspect``: the venv needs nothing but pip to answer)."""
  report = json.loads(_run([str(python), "-m", "pip", "inspect"], cwd=cwd).stdout)
  return {canonicalize_name(entry["metadata"]["name"]): entry["metadata"].get("requires_dist", [])
          for entry in report["installed"]}


def _requirements(lines, extra="") -> list[Requirement]:
  requirements = [Requirement(line) for line in lines]
  return [r for r in requirements if r.marker is None or r.marker.evaluate({"extra": extra})]


def _readme_python_blocks() -> list[str]:
  blocks = re.findall(r"```python\n(.*?)```", (REPO_ROOT / "README.md").read_text(), re.S)
  assert blocks
  return blocks


@pytest.fixture(scope="module")
def core_python(wheel, tmp_path_factory) -> Path:
  """The python of a fresh venv where plain pip installed the wheel with its
  dependencies from the package index, as ``pip install .`` does."""
  root = tmp_path_factory.mktemp("core_venv")
  _run([sys.executable, "-m", "venv", str(root / "venv")], cwd=root)
  python = root / "venv" / "bin" / "python"
  _run([str(python), "-m", "pip", "install", "-q", str(wheel)], cwd=root)
  return python


@pytest.mark.slow
def test_the_core_runs_the_readme_example_without_the_trainers_packages(
    core_python, empty_folder):
  installed = _installed(core_python, empty_folder)
  # What the core's own requirements bring, directly or not (flax brings
  # optax and orbax-checkpoint, which the train extra names too).
  closure, queue = set(), [r.name for r in _requirements(installed["gca-jax"])]
  while queue:
    name = canonicalize_name(queue.pop())
    if name in installed and name not in closure:
      closure.add(name)
      queue.extend(r.name for r in _requirements(installed[name]))
  train = {canonicalize_name(r.name) for r in _requirements(installed["gca-jax"], "train")}
  train -= {"gca-jax"} | closure
  assert train and not train & set(installed), sorted(train & set(installed))
  assert {"tensorflow-datasets", "grain", "ml-collections", "scikit-learn",
          "tensorboardx"} <= train, train
  for block in _readme_python_blocks():
    _run([str(core_python), "-c", block], cwd=empty_folder)
  result = _run([str(core_python), "-c", "import gca_jax, gca_jax.metrics, gca_jax.theorems, "
                 "gca_jax.sharding; print(gca_jax.__file__)"], cwd=empty_folder)
  assert Path(result.stdout.strip()).is_relative_to(core_python.parents[1])


def _one_line(text: str) -> str:
  lines = text.strip().splitlines()
  assert len(lines) == 1, text[-3000:]
  return lines[0]


def _assert_names_the_extra(line: str):
  assert "train extra" in line and _train_extra.INSTALL in line, line


@pytest.mark.slow
def test_the_core_refuses_the_trainer_in_one_line_naming_the_extra(core_python, empty_folder):
  for module in ("gca_jax.training", "gca_jax.data", "gca_jax.configs"):
    result = _run([str(core_python), "-c", f"import {module}"], cwd=empty_folder,
                  statuses=(1,))
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("ModuleNotFoundError: gca_jax's trainer"), result.stderr[-3000:]
    _assert_names_the_extra(last)
  for command in ("gca_jax.pretrain", "gca_jax.linear_eval"):
    result = _run([str(core_python), "-m", command, "--workdir=run"], cwd=empty_folder,
                  statuses=(2,))
    _assert_names_the_extra(_one_line(result.stderr))
    assert not (empty_folder / "run").exists()


def test_the_guard_lists_the_train_extras_packages():
  """`_train_extra.MODULES` are the import names of pyproject.toml's train extra."""
  distributions = importlib.metadata.packages_distributions()
  from_modules = {canonicalize_name(dist) for module in _train_extra.MODULES
                  for dist in distributions[module]}
  declared = {canonicalize_name(Requirement(line).name) for line in TRAIN_EXTRA}
  # A namespace package (orbax) may be shared by several distributions.
  assert declared <= from_modules, declared - from_modules
  assert all(any(canonicalize_name(d) in declared for d in distributions[module])
             for module in _train_extra.MODULES)


# Runs `code` with `package` unimportable (a None entry in sys.modules is
# Python's way to block an import; find_spec then finds nothing either).
WITHOUT = "import sys; sys.modules[{package!r}] = None\n{code}"


@pytest.mark.parametrize("package", ["grain", "ml_collections"])
def test_a_missing_train_package_fails_in_one_line_naming_the_extra(package, tmp_path):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  imported = subprocess.run(
      [sys.executable, "-c", WITHOUT.format(package=package, code="import gca_jax.training")],
      cwd=tmp_path, env=env, capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT)
  assert imported.returncode == 1
  last = imported.stderr.strip().splitlines()[-1]
  assert last.startswith("ModuleNotFoundError: ") and f"missing: {package})" in last, last
  _assert_names_the_extra(last)
  command = WITHOUT.format(package=package, code=(
      "import runpy; runpy.run_module('gca_jax.pretrain', run_name='__main__', alter_sys=True)"))
  run = subprocess.run([sys.executable, "-c", command, "--workdir=run"], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT)
  assert run.returncode == 2, run.stderr[-3000:]
  line = _one_line(run.stderr)
  assert line.startswith("error: ") and f"missing: {package})" in line, line
  _assert_names_the_extra(line)
  assert not (tmp_path / "run").exists()
