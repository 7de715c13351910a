"""The data-parallel train step: 8 host devices give the 1-device step.

The 8-device part runs in a subprocess because XLA_FLAGS must be set before
JAX initialises; this file doubles as that subprocess (``python
tests/training/test_step.py devices``), run once per test session (shared by
the pytest-xdist workers). Tolerance: see ``RTOL``/``ATOL`` in conftest.
"""

import json
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import (ATOL, REPO_ROOT, RTOL, SUBPROCESS_TIMEOUT, computed_once, flat,
                            max_violation, one_step, pretrain_env, random_images,
                            tiny_config)

assert ATOL and RTOL  # the tolerance is defined (and explained) in conftest


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
  # The row-sharded plan on 8 devices against the global plan on one, for
  # the pairs target (gca_uot, gca_rince) and the domain target (gca_ince).
  for name, overrides, ids in (
      ("gca_uot", {}, None), ("gca_rince", {"loss": "gca_rince"}, None),
      ("domain", {"loss": "gca_ince", "target": "domain", "target_alpha": 0.5,
                  "target_beta": 0.1}, domains)):
    base = {"model.dtype": "float32", **overrides}
    one = one_step(tiny_config(**base), devices[:1], images, ids)
    eight = one_step(tiny_config(**base, loss_scope="sharded"), devices, images, ids)
    report[f"sharded_{name}"] = {"loss1": float(one["loss"]),
                                 "loss8": float(eight["loss"]),
                                 **{k: leaf_relative_error(eight[k], one[k])
                                    for k in ("params", "grads", "batch_stats")}}
  print(json.dumps(report))


def leaf_relative_error(a, b) -> float:
  """max over leaves of max|a - b| / max|b|."""
  fa, fb = flat(a), flat(b)
  return max(float(np.max(np.abs(fa[k] - fb[k])) / max(np.max(np.abs(fb[k])), 1e-30))
             for k in fa)


def _eight_device_report() -> dict:
  result = subprocess.run([sys.executable, __file__, "devices"], env=pretrain_env(8),
                          capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT,
                          cwd=REPO_ROOT)
  assert result.returncode == 0, result.stderr[-3000:]
  return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def eight_device_report(tmp_path_factory):
  return computed_once(tmp_path_factory, "eight_device_report", _eight_device_report)


@pytest.mark.slow
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


@pytest.mark.parametrize("name", ["gca_uot", "gca_rince", "domain"])
def test_eight_devices_sharded_plan_equals_one_device_global_plan(eight_device_report,
                                                                  name):
  # float32: the parameters after one step agree to 1e-5 relative to each
  # leaf's scale (observed: about 1e-6, the summation order of the psums).
  report = eight_device_report[f"sharded_{name}"]
  np.testing.assert_allclose(report["loss8"], report["loss1"], rtol=1e-5)
  for key in ("params", "grads", "batch_stats"):
    assert report[key] <= 1e-5, (key, report)


def test_local_scope_is_a_different_objective(eight_device_report):
  # Eight per-device plans on 8 rows each differ from one plan on 64 rows.
  report = eight_device_report
  assert abs(report["loss8_local"] - report["loss1"]) > 1e-3, report


if __name__ == "__main__" and sys.argv[1:] == ["devices"]:
  _devices_worker()
