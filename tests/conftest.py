"""Shared test helpers."""

import contextlib
import pathlib
from pathlib import Path

import jax
import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
# The shared data folder sits beside a checkout; a plain clone has none.
SHARED_DIR = REPO_ROOT.parent / "shared"


@contextlib.contextmanager
def _x64():
  previous = jax.config.jax_enable_x64
  jax.config.update("jax_enable_x64", True)
  try:
    yield
  finally:
    jax.config.update("jax_enable_x64", previous)


@pytest.fixture
def x64():
  """Runs a test with float64 enabled, restoring the setting afterwards."""
  with _x64():
    yield


def _shared(*parts) -> pathlib.Path:
  return SHARED_DIR.joinpath(*parts)


def shared_path(*parts) -> pathlib.Path:
  """A path under the shared folder, or a clean skip when it is absent."""
  path = _shared(*parts)
  if not path.exists():
    pytest.skip(f"{path.name} is not available beside this checkout")
  return path


shared_path.__wrapped__ = _shared  # the path without the skip, for collection


# ---------------------------------------------------------------------------
# Training helpers.

import json  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402

import numpy as np  # noqa: E402

# The training tests compile the same tiny programs in many processes; a
# persistent compilation cache shared by them (and by their subprocesses,
# through the environment) turns most compiles into cache hits.
COMPILATION_CACHE = {
    "JAX_COMPILATION_CACHE_DIR": str(Path(tempfile.gettempdir()) / "gca_jax_test_jit_cache"),
    "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
    "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
}
jax.config.update("jax_compilation_cache_dir", COMPILATION_CACHE["JAX_COMPILATION_CACHE_DIR"])
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
# Subprocesses of the tests may take long on a loaded machine: a generous
# limit that only catches hangs.
SUBPROCESS_TIMEOUT = 1800


def tiny_config(**overrides):
  """The "small" config (digits at 8x8, width 4) for 4 epochs, no probe;
  ``overrides`` are dotted field names (``model.dtype=...``)."""
  from gca_jax import training
  config = training.get_config("small")
  config.update_from_flattened_dict({"epochs": 4, "linear_probe": False, **overrides})
  return config


def pretrain_env(num_devices: int | None = None) -> dict:
  """Environment for a subprocess running gca_jax (optionally N CPU devices)."""
  env = dict(os.environ, JAX_PLATFORMS="cpu", **COMPILATION_CACHE)
  env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
  if num_devices:
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={num_devices}"
  return env


def run_module(module: str, *args, cwd=REPO_ROOT, num_devices=None):
  """``python -m module args`` in a subprocess; the CompletedProcess."""
  return subprocess.run([sys.executable, "-m", module, *args], env=pretrain_env(num_devices),
                        cwd=cwd, capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT)


def one_line_error(result) -> str:
  """The single ``error:`` line of a failed command (asserts there is one)."""
  assert result.returncode != 0, result.stdout[-2000:]
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr[-3000:]
  return lines[0]


def random_images(batch_size: int, size: int = 8, seed: int = 0) -> np.ndarray:
  return np.random.default_rng(seed).integers(0, 256, (batch_size, size, size, 3),
                                              dtype=np.uint8)


def flat(tree) -> dict:
  return {jax.tree_util.keystr(path): np.asarray(leaf)
          for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def saved_params(workdir):
  """(flat params, data position) of the newest checkpoint in ``workdir``."""
  from gca_jax.training import checkpoint, restore
  _, state = restore.load_trained(workdir)
  checkpointer = checkpoint.Checkpointer(workdir)
  position = checkpointer.read_position(checkpointer.latest_step())
  checkpointer.close()
  return flat(jax.device_get(state.params)), {k: position[k] for k in ("epoch", "step")}


def computed_once(tmp_path_factory, name: str, compute) -> dict:
  """``compute()`` (a JSON-able dict) once per test session, shared by all
  pytest-xdist workers through a file under their common base temp dir."""
  from filelock import FileLock
  root = tmp_path_factory.getbasetemp()
  if os.environ.get("PYTEST_XDIST_WORKER"):
    root = root.parent
  path = root / f"{name}.json"
  with FileLock(str(path) + ".lock"):
    if not path.exists():
      path.write_text(json.dumps(compute()))
    return json.loads(path.read_text())


# The 8-device step reduces in a different order (batch-norm moments and
# gradients are partial sums per device, then ``pmean``), so float32 results
# agree to rounding, not bitwise: we require ``|a - b| <= 1e-5 + 1e-4 |b|``
# elementwise (float32 eps is 1.2e-7; the deepest tiny network accumulates a
# few hundred roundings).
RTOL, ATOL = 1e-4, 1e-5


def max_violation(a, b) -> float:
  """max over leaves of |a-b| - (ATOL + RTOL |b|) (<= 0 means within tolerance)."""
  fa, fb = flat(a), flat(b)
  assert fa.keys() == fb.keys()
  return max(float(np.max(np.abs(fa[k] - fb[k]) - (ATOL + RTOL * np.abs(fb[k]))))
             for k in fa)


def random_dataset(images, ids=None):
  """A Dataset of ``images`` (labels 0, or ``ids`` as labels and domains)."""
  from gca_jax import data
  labels = np.zeros(len(images), np.int32) if ids is None else np.asarray(ids, np.int32)
  split = data.ImageArrays(images, labels, None if ids is None else labels)
  return data.Dataset(train=split, test=split, num_classes=int(labels.max()) + 1,
                      name="random", mean=(0.5,) * 3, std=(0.25,) * 3)


def one_step(config, devices, images, ids=None, *, after_compile=None):
  """Loss, gradients and new params of one step on ``images`` over ``devices``
  (``ids``: the examples' domains or classes, for a config with a target).

  ``after_compile``: called once the step is compiled, before it runs (the
  multi-process tests meet at a barrier there; see test_multiprocess.py)."""
  from gca_jax import sharding, training
  mesh = sharding.make_mesh(devices)
  run = training.setup(config, random_dataset(images, ids), mesh)
  replicated = sharding.replicated(mesh)
  batch = {"image": sharding.global_array(images, replicated)}
  if ids is not None:
    batch[run.objective.id_key] = sharding.global_array(np.asarray(ids, np.int32),
                                                        replicated)
  state = run.initial_state()
  if after_compile is None:
    state, metrics = run.train_step(state, batch)
  else:
    compiled = run.train_step.lower(state, batch).compile()
    after_compile()
    state, metrics = compiled(state, batch)
  local = lambda tree: jax.tree.map(lambda a: np.asarray(a.addressable_data(0)), tree)
  # First SGD step: the momentum trace is the gradient (+ weight decay term).
  return {"loss": local(metrics["loss"]), "metrics": local(metrics),
          "params": local(state.params), "batch_stats": local(state.batch_stats),
          "grads": local(state.opt_state[1][0].trace)}
