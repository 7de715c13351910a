"""The data-parallel train step: 8 host devices give the 1-device step.

The 8-device part runs in a subprocess because XLA_FLAGS must be set before
JAX initialises. This file doubles as that subprocess (``python
test_train_step.py devices``) and holds the tiny-config helpers the other
training tests import.

Tolerance: the 8-device step reduces in a different order (batch-norm
moments and gradients are partial sums per device, then ``pmean``), so
float32 results agree to rounding, not bitwise: we require
``|a - b| <= 1e-5 + 1e-4 |b|`` elementwise (float32 eps is 1.2e-7; the
deepest tiny network accumulates a few hundred roundings).
"""

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import jax
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
RTOL, ATOL = 1e-4, 1e-5
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


def tiny_config(**overrides):
  """A config whose steps take milliseconds on CPU (digits at 8x8, width 4)."""
  from gca_jax import configs
  config = configs.get_config()
  config.load_size = 8
  config.model.width = 4
  config.model.projector_hidden_dim = 32
  config.model.projection_dim = 16
  config.model.predictor_hidden_dim = 32
  config.batch_size = 64
  config.epochs = 4
  config.warmup_epochs = 0.0
  config.learning_rate = 0.1
  config.eval_every_epochs = 0
  config.linear_probe = False
  config.progress_bar = False
  config.checkpoint_every_epochs = 1
  for key, value in overrides.items():
    node = config
    *parents, leaf = key.split(".")
    for parent in parents:
      node = node[parent]
    node[leaf] = value
  return config


def pretrain_env(num_devices: int | None = None) -> dict:
  """Environment for a subprocess running gca_jax (optionally N CPU devices)."""
  env = dict(os.environ, JAX_PLATFORMS="cpu", **COMPILATION_CACHE)
  env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
  if num_devices:
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={num_devices}"
  return env


def random_images(batch_size: int, size: int = 8, seed: int = 0) -> np.ndarray:
  return np.random.default_rng(seed).integers(0, 256, (batch_size, size, size, 3),
                                              dtype=np.uint8)


def one_step(config, devices, images, ids=None):
  """Loss, gradients and new params of one step on ``images`` over ``devices``
  (``ids``: the examples' domains or classes, for a config with a target)."""
  import jax
  from jax.sharding import NamedSharding, PartitionSpec as P
  from gca_jax import evaluation, optimizers, train
  mesh = train.make_mesh(devices)
  model, target = train.create_models(config)
  schedule = optimizers.make_schedule(config, steps_per_epoch=10)
  tx = optimizers.make_optimizer(config, steps_per_epoch=10)
  state = train.create_train_state(config, model, tx, images.shape[1:], mesh)
  steps = train.make_train_step(config, model=model, target_model=target, tx=tx,
                                schedule=schedule, mesh=mesh, mean=(0.5,) * 3,
                                std=(0.25,) * 3, num_train=len(images),
                                steps_per_epoch=10)
  replicated = NamedSharding(mesh, P())
  extra = () if ids is None else (evaluation.global_array(ids, replicated),)
  state, metrics = steps.on_images(state, evaluation.global_array(images, replicated),
                                   *extra)
  local = lambda tree: jax.tree.map(lambda a: np.asarray(a.addressable_data(0)), tree)
  # First SGD step: the momentum trace is the gradient (+ weight decay term).
  return {"loss": local(metrics["loss"]), "metrics": local(metrics),
          "params": local(state.params), "batch_stats": local(state.batch_stats),
          "grads": local(state.opt_state[1][0].trace)}


def flat(tree) -> dict:
  import jax
  return {jax.tree_util.keystr(path): np.asarray(leaf)
          for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def saved_params(workdir, config):
  """(flat params, feed position) of the latest checkpoint in ``workdir``."""
  from gca_jax import checkpointing, train
  dataset = train.load_data(config)
  checkpointer = checkpointing.Checkpointer(workdir)
  state, feed = checkpointer.restore(train.setup(config, dataset).initial_state(config))
  checkpointer.close()
  return flat(jax.device_get(state.params)), feed


def max_violation(a, b) -> float:
  """max over leaves of |a-b| - (ATOL + RTOL |b|) (<= 0 means within tolerance)."""
  fa, fb = flat(a), flat(b)
  assert fa.keys() == fb.keys()
  return max(float(np.max(np.abs(fa[k] - fb[k]) - (ATOL + RTOL * np.abs(fb[k]))))
             for k in fa)


def _devices_worker() -> None:
  import jax
  config = tiny_config(**{"model.dtype": "float32"})
  images = random_images(config.batch_size)
  devices = jax.devices()
  assert len(devices) == 8, devices
  one = one_step(config, devices[:1], images)  # on one device local == global
  eight = one_step(config, devices, images)
  report = {"loss1": float(one["loss"]), "loss8": float(eight["loss"]),
            **{f"violation_{k}": max_violation(eight[k], one[k])
               for k in ("params", "grads", "batch_stats", "metrics")}}
  config.loss_scope = "local"
  report["loss8_local"] = float(one_step(config, devices, images)["loss"])
  # A domain-block target plan built from the all-gathered domains.
  config = tiny_config(**{"model.dtype": "float32", "target": "domain",
                          "target_alpha": 0.5, "target_beta": 0.1})
  domains = np.arange(config.batch_size, dtype=np.int32) % 3
  one = one_step(config, devices[:1], images, domains)
  eight = one_step(config, devices, images, domains)
  report.update({"domain_loss1": float(one["loss"]), "domain_loss8": float(eight["loss"]),
                 **{f"domain_violation_{k}": max_violation(eight[k], one[k])
                    for k in ("params", "grads", "batch_stats", "metrics")}})
  print(json.dumps(report))


@pytest.fixture(scope="module")
def eight_device_report():
  result = subprocess.run([sys.executable, __file__, "devices"], env=pretrain_env(8),
                          capture_output=True, text=True, timeout=300, cwd=REPO)
  assert result.returncode == 0, result.stderr[-3000:]
  return json.loads(result.stdout.strip().splitlines()[-1])


def test_eight_devices_global_plan_equals_one_device(eight_device_report):
  report = eight_device_report
  np.testing.assert_allclose(report["loss8"], report["loss1"], rtol=RTOL)
  for key in ("params", "grads", "batch_stats", "metrics"):
    assert report[f"violation_{key}"] <= 0, (key, report)


def test_eight_devices_domain_target_equals_one_device(eight_device_report):
  report = eight_device_report
  np.testing.assert_allclose(report["domain_loss8"], report["domain_loss1"], rtol=RTOL)
  assert abs(report["domain_loss1"] - report["loss1"]) > 1e-3, report
  for key in ("params", "grads", "batch_stats", "metrics"):
    assert report[f"domain_violation_{key}"] <= 0, (key, report)


def test_local_scope_is_a_different_objective(eight_device_report):
  # Eight per-device plans on 8 rows each differ from one plan on 64 rows.
  report = eight_device_report
  assert abs(report["loss8_local"] - report["loss1"]) > 1e-3, report


if __name__ == "__main__" and sys.argv[1:] == ["devices"]:
  _devices_worker()
