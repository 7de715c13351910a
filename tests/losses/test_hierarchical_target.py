"""Hierarchical target plans: one level is domain_target/class_target,
nested levels, row sums, refused inputs, and the sharded rows.

The sharded rows are checked twice: against a named ``jax.vmap`` standing in
for the mesh axis, and inside ``jax.shard_map`` over 8 host CPU devices in a
subprocess (XLA_FLAGS must be set before JAX starts; this file doubles as
that subprocess: ``python tests/losses/test_hierarchical_target.py devices``).
"""

import doctest
import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from gca_jax import losses, sharding
from gca_jax.losses import targets

AXIS = sharding.DATA_AXIS
DEVICES = 8
CLASSES = jnp.array([0, 0, 1, 2, 3, 3, 4, 5])
SUPERCLASSES = CLASSES // 2  # nested: [0, 0, 0, 1, 1, 1, 2, 2]
DOMAINS = jnp.array([0, 1, 0, 1, 0, 1, 0, 1])


def _expected(levels, weights, beta, pairing):
  """The plan entry by entry, from its definition."""
  levels = [np.asarray(level) for level in levels]
  batch = len(levels[0])
  size = 2 * batch if pairing == "joint" else batch
  target = np.zeros((size, size))
  for i in range(size):
    for j in range(size):
      if pairing == "joint" and i == j:
        continue
      positive = j == ((i + batch) % size if pairing == "joint" else i)
      shared = [level[i % batch] == level[j % batch] for level in levels]
      target[i, j] = (1.0 if positive else
                      weights[shared.index(True)] if any(shared) else beta)
  return target


@pytest.mark.parametrize("pairing", ["joint", "cross"])
@pytest.mark.parametrize("enable_x64, dtype", [
    (False, None), (False, jnp.float32), (False, jnp.bfloat16),
    (True, None), (True, jnp.float32), (True, jnp.bfloat16), (True, jnp.float64)])
def test_one_level_is_the_domain_and_class_target(pairing, dtype, enable_x64):
  previous = jax.config.jax_enable_x64
  jax.config.update("jax_enable_x64", enable_x64)
  try:
    for alpha, beta in [(0.5, 0.1), (0.0, 0.0), (2.0, 0.7)]:
      ours = losses.domain_target(DOMAINS, alpha, beta, pairing=pairing, dtype=dtype)
      theirs = targets.hierarchical_target([DOMAINS], [alpha], beta=beta,
                                           pairing=pairing, dtype=dtype)
      assert theirs.dtype == ours.dtype
      np.testing.assert_array_equal(theirs, ours)
    ours = losses.class_target(CLASSES, pairing=pairing, dtype=dtype)
    theirs = targets.hierarchical_target([CLASSES], [1.0], beta=0.0,
                                         pairing=pairing, dtype=dtype)
    assert theirs.dtype == ours.dtype
    np.testing.assert_array_equal(theirs, ours)
  finally:
    jax.config.update("jax_enable_x64", previous)


@pytest.mark.parametrize("pairing", ["joint", "cross"])
def test_two_levels_give_nested_blocks(pairing, x64):
  levels, weights, beta = [CLASSES, SUPERCLASSES], [0.5, 0.25], 0.125
  target = targets.hierarchical_target(levels, weights, beta=beta, pairing=pairing)
  np.testing.assert_array_equal(target, _expected(levels, weights, beta, pairing))
  assert set(np.unique(target)) == {0.0, 0.125, 0.25, 0.5, 1.0} - (
      {0.0} if pairing == "cross" else set())


def test_the_finest_shared_level_wins_for_levels_that_are_not_nested(x64):
  levels, weights = [CLASSES, DOMAINS, SUPERCLASSES], [0.75, 0.5, 0.25]
  target = targets.hierarchical_target(levels, weights, beta=0.0)
  np.testing.assert_array_equal(target, _expected(levels, weights, 0.0, "joint"))
  # Samples 0 and 2: classes differ, domains agree, super-classes agree.
  assert target[0, 2] == 0.5


def test_rows_sum_to_one_plus_the_weights_of_their_pairs(x64):
  levels, weights, beta = [CLASSES, SUPERCLASSES], [0.5, 0.25], 0.125
  target = np.asarray(targets.hierarchical_target(levels, weights, beta=beta))
  batch, size = len(CLASSES), 2 * len(CLASSES)
  classes = np.tile(np.asarray(CLASSES), 2)
  superclasses = np.tile(np.asarray(SUPERCLASSES), 2)
  for i in range(size):
    others = np.arange(size) != i
    others[(i + batch) % size] = False  # the positive
    same_class = others & (classes == classes[i])
    same_super = others & ~same_class & (superclasses == superclasses[i])
    rest = others & ~same_class & ~same_super
    expected = 1.0 + 0.5 * same_class.sum() + 0.25 * same_super.sum() + beta * rest.sum()
    np.testing.assert_allclose(target[i].sum(), expected, rtol=1e-15)
  np.testing.assert_array_equal(np.diag(target), 0.0)
  np.testing.assert_array_equal(target[np.arange(size), (np.arange(size) + batch) % size], 1.0)


def test_an_l_by_b_array_and_traced_weights_give_the_same_plan():
  levels = jnp.stack([CLASSES, SUPERCLASSES])
  concrete = targets.hierarchical_target([CLASSES, SUPERCLASSES], [0.5, 0.25], beta=0.1)
  np.testing.assert_array_equal(
      targets.hierarchical_target(levels, (0.5, 0.25), beta=0.1), concrete)
  traced = jax.jit(lambda weights, beta: targets.hierarchical_target(
      levels, weights, beta=beta))(jnp.array([0.5, 0.25]), 0.1)
  np.testing.assert_array_equal(traced, concrete)


@pytest.mark.parametrize("call, message", [
    (lambda: targets.hierarchical_target([], [], beta=0.0),
     r"labels_per_level must be a non-empty sequence of \(B,\) label arrays"),
    (lambda: targets.hierarchical_target(CLASSES, [0.5], beta=0.0),
     r"wrap a single level in a list: \[labels\]"),
    (lambda: targets.hierarchical_target([CLASSES, CLASSES[:4]], [0.5, 0.2], beta=0.0),
     r"labels_per_level must hold \(B,\) label arrays of one shape, got shapes "
     r"\[\(8,\), \(4,\)\]"),
    (lambda: targets.hierarchical_target([CLASSES, SUPERCLASSES], [0.5], beta=0.0),
     r"weights must hold one weight per level \(2 levels\), got \[0.5\]"),
    (lambda: targets.hierarchical_target([CLASSES, SUPERCLASSES], [0.5, -0.1], beta=0.0),
     r"weights\[1\] must be finite and >= 0, got -0.1"),
    (lambda: targets.hierarchical_target([CLASSES], [0.5], beta=float("nan")),
     r"beta must be finite and >= 0"),
    (lambda: targets.hierarchical_target([CLASSES], [0.5], beta=0.0, pairing="rows"),
     r"pairing must be one of \('joint', 'cross'\), got 'rows'"),
], ids=["empty", "one array", "shapes", "count", "weight", "beta", "pairing"])
def test_bad_inputs_are_refused_in_one_line(call, message):
  with pytest.raises(ValueError, match=message) as error:
    call()
  assert "\n" not in str(error.value)


def test_a_non_float_dtype_is_refused():
  with pytest.raises(TypeError, match="dtype must be a floating-point dtype"):
    targets.hierarchical_target([CLASSES], [0.5], beta=0.0, dtype=jnp.int32)


def test_docstring_example_runs():
  runner = doctest.DocTestRunner()
  for test in doctest.DocTestFinder().find(targets.hierarchical_target):
    runner.run(test)
  assert runner.summarize(verbose=False).failed == 0


# ----------------------------------------------------------------------------
# Sharded rows: each device's rows of the global plan.


def _row_index(batch, pairing):
  """Global row of each local row (one device's), in the losses' order."""
  return losses.batch_geometry(jnp.ones((batch, 2)), jnp.ones((batch, 2)),
                               pairing=pairing, axis_name=AXIS).row_index


def _local_rows(levels, pairing):
  local = targets._hierarchical_target(  # pylint: disable=protected-access
      list(levels), [0.5, 0.25], beta=0.125, pairing=pairing, dtype=None,
      axis_name=AXIS)
  return local, _row_index(levels.shape[1], pairing)


@pytest.mark.parametrize("pairing", ["joint", "cross"])
def test_simulated_devices_hold_the_rows_of_the_global_plan(pairing, x64):
  devices = 4
  levels = jnp.stack([CLASSES, SUPERCLASSES])
  full = targets.hierarchical_target(list(levels), [0.5, 0.25], beta=0.125, pairing=pairing)
  split = levels.reshape(2, devices, -1).transpose(1, 0, 2)
  local, row_index = jax.vmap(lambda ids: _local_rows(ids, pairing), axis_name=AXIS)(split)
  assert local.dtype == full.dtype
  np.testing.assert_array_equal(local.reshape(-1, full.shape[1]), full[row_index.reshape(-1)])


def test_public_sharded_builder_holds_the_rows_of_the_global_plan(x64):
  from gca_jax.losses import sharded
  levels = jnp.stack([CLASSES, SUPERCLASSES])
  full = targets.hierarchical_target(list(levels), [0.5, 0.25], beta=0.125)
  split = levels.reshape(2, 4, -1).transpose(1, 0, 2)

  def device(ids):
    rows = sharded.hierarchical_target(list(ids), [0.5, 0.25], beta=0.125, axis_name=AXIS)
    return rows, _row_index(ids.shape[1], "joint")

  local, row_index = jax.vmap(device, axis_name=AXIS)(split)
  np.testing.assert_array_equal(local.reshape(-1, full.shape[1]), full[row_index.reshape(-1)])


def _eight_device_report() -> dict:
  """Runs inside the 8-device subprocess: the sharded rows under shard_map."""
  jax.config.update("jax_enable_x64", True)
  mesh = sharding.make_mesh()
  assert len(jax.devices()) == DEVICES
  batch = 2 * DEVICES
  ids = jnp.arange(batch)
  levels = jnp.stack([ids % 5, ids % 5 // 2, ids % 2])
  report = {}
  for pairing in ("joint", "cross"):
    full = targets.hierarchical_target(list(levels), [0.5, 0.25, 0.1], beta=0.05,
                                       pairing=pairing)

    def device(levels, pairing=pairing):
      local = targets._hierarchical_target(  # pylint: disable=protected-access
          list(levels), [0.5, 0.25, 0.1], beta=0.05, pairing=pairing, dtype=None,
          axis_name=AXIS)
      return local, _row_index(levels.shape[1], pairing)

    local, row_index = jax.jit(jax.shard_map(
        device, mesh=mesh, in_specs=P(None, AXIS), out_specs=(P(AXIS), P(AXIS)),
        check_vma=False))(levels)
    report[pairing] = {
        "devices": len(local.sharding.device_set), "dtype": str(local.dtype),
        "shape": list(local.shape), "rows": sorted(np.asarray(row_index).tolist()),
        "max_difference": float(np.max(np.abs(np.asarray(local)
                                              - np.asarray(full)[np.asarray(row_index)])))}
  return report


@pytest.fixture(scope="module")
def eight_device_report():
  from tests.conftest import REPO_ROOT, SUBPROCESS_TIMEOUT, pretrain_env
  result = subprocess.run([sys.executable, __file__, "devices"], env=pretrain_env(DEVICES),
                          capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT,
                          cwd=REPO_ROOT)
  assert result.returncode == 0, result.stderr[-3000:]
  return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("pairing", ["joint", "cross"])
@pytest.mark.slow
def test_eight_devices_hold_the_rows_of_the_global_plan(eight_device_report, pairing):
  report = eight_device_report[pairing]
  size = 4 * DEVICES if pairing == "joint" else 2 * DEVICES
  assert report["devices"] == DEVICES and report["dtype"] == "float64"
  assert report["shape"] == [size, size]
  assert report["rows"] == list(range(size))  # every global row exactly once
  assert report["max_difference"] == 0.0


if __name__ == "__main__" and sys.argv[1:] == ["devices"]:
  print(json.dumps(_eight_device_report()))
