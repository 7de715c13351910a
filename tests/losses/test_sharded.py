"""The sharded losses equal the single-device losses on the global batch.

Two kinds of checks:

* in this process, ``jax.vmap(..., axis_name="data")`` stands in for the
  mesh axis: it binds the same collectives (``psum``, ``pmax``,
  ``all_gather``, ``axis_index``) with the same transposes, so every loss,
  pairing, option, target and diagnostic is compared cheaply on ``P``
  simulated devices, and a one-device ``shard_map`` runs the real thing;
* the contract of the training step on 8 host CPU devices: inside
  ``jax.shard_map(..., check_vma=False)``, ``z = x @ W`` per device, the
  sharded loss of the local rows, ``jax.grad`` per device, ``lax.pmean``;
  the loss (on every device) and the averaged gradient must equal
  ``jax.value_and_grad`` of the single-device loss on the full batch, and
  the per-device compiled peak memory at ``N = 8k`` must be at most a
  quarter of the global scope's. XLA_FLAGS must be set before JAX
  initialises, so these run in one subprocess per test session (shared by
  the pytest-xdist workers); this file doubles as that subprocess
  (``python tests/losses/test_sharded.py devices``).

Relative errors: ``|a - b| / |b|`` for a loss, ``max |a - b| / max |b|`` for
a gradient.
"""

import functools
import inspect
import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax
from jax.sharding import PartitionSpec as P

from gca_jax import losses, sharding
from gca_jax.losses import sharded

AXIS = sharding.DATA_AXIS
TOLERANCE = {"float64": 1e-10, "float32": 1e-5}
GCA_LOSSES = ["gca_ince", "gca_rince", "gca_uot", "iot", "iot_uni"]


def _relative(value, reference) -> float:
  value, reference = np.asarray(value), np.asarray(reference)
  return float(np.max(np.abs(value - reference)) / np.max(np.abs(reference)))


def _data(batch, seed=0, dtype=jnp.float64, features=6, dim=5):
  """Inputs ``x1, x2 (batch, features)``, a weight ``W`` and domain ids."""
  keys = jax.random.split(jax.random.PRNGKey(seed), 3)
  x1, x2 = jax.random.normal(keys[0], (2, batch, features))
  w = jax.random.normal(keys[1], (features, dim)) / np.sqrt(features)
  domains = jax.random.randint(keys[2], (batch,), 0, 3)
  return x1.astype(dtype), x2.astype(dtype), w.astype(dtype), domains


def _target(kind, ids, pairing, dtype, axis_name=None, as_labels=False):
  """The ``target=`` keyword of a loss: none, or a domain/class plan (its
  labels, for the tiled kernel: the device's own with ``axis_name``)."""
  if kind is None:
    return {}
  if as_labels:
    build = {"domain": functools.partial(losses.domain_target, alpha=0.5,
                                         beta=0.1),
             "class": losses.class_target}[kind]
    return {"target": build(ids, as_labels=True)}
  if axis_name is None:
    build = {"domain": functools.partial(losses.domain_target, alpha=0.5,
                                         beta=0.1),
             "class": losses.class_target}[kind]
    return {"target": build(ids, pairing=pairing, dtype=dtype)}
  build = {"domain": functools.partial(sharded.domain_target, alpha=0.5,
                                       beta=0.1),
           "class": sharded.class_target}[kind]
  return {"target": build(ids, axis_name=axis_name, pairing=pairing,
                          dtype=dtype)}


def _split(devices, *arrays):
  return [a.reshape(devices, -1, *a.shape[1:]) for a in arrays]


def simulated(name, devices, x1, x2, w, ids, *, target=None, **params):
  """Sharded loss, aux and averaged ``dloss/dW`` on ``devices`` simulated
  devices (a named vmap), as the training step computes them."""
  pairing = params.get("pairing", "joint")

  def device(x1, x2, ids):
    def loss(w):
      return sharded.get(name)(
          x1 @ w, x2 @ w, axis_name=AXIS, return_aux=True,
          **_target(target, ids, pairing, w.dtype, AXIS), **params)
    (value, aux), grads = jax.value_and_grad(loss, has_aux=True)(w)
    return value, aux, grads

  values, aux, grads = jax.vmap(device, axis_name=AXIS)(
      *_split(devices, x1, x2, ids))
  return values, aux, jnp.mean(grads, axis=0)


def single(name, x1, x2, w, ids, *, target=None, **params):
  """The single-device loss, aux and ``dloss/dW`` on the full batch."""
  pairing = params.get("pairing", "joint")

  def loss(w):
    return losses.get(name)(x1 @ w, x2 @ w, return_aux=True,
                            **_target(target, ids, pairing, w.dtype), **params)
  (value, aux), grads = jax.value_and_grad(loss, has_aux=True)(w)
  return value, aux, grads


def _assert_equal_to_single_device(name, devices=4, batch=12, *, tolerance=1e-10,
                                   target=None, **params):
  x1, x2, w, ids = _data(batch)
  values, aux, grads = simulated(name, devices, x1, x2, w, ids, target=target,
                                 **params)
  value, ref_aux, ref_grads = single(name, x1, x2, w, ids, target=target,
                                     **params)
  assert values.shape == (devices,)
  assert _relative(values, value) <= tolerance  # every device: the global loss
  assert _relative(grads, ref_grads) <= tolerance
  for field in ("marginal_error", "plan_entropy", "positive_mass"):
    ours, ref = getattr(aux, field), getattr(ref_aux, field)
    assert ours.shape == (devices, *jnp.shape(ref)), field
    np.testing.assert_allclose(ours, np.broadcast_to(ref, ours.shape),
                               rtol=tolerance, atol=tolerance, err_msg=field)
  # log_plan: each device holds its rows of the global plan.
  rows = aux.log_plan.shape[1]
  assert aux.log_plan.shape == (devices, rows, ref_aux.log_plan.shape[1])
  assert devices * rows == ref_aux.log_plan.shape[0]


# ----------------------------------------------------------------------------
# In-process: simulated devices.


@pytest.mark.parametrize("pairing", ["joint", "cross"])
@pytest.mark.parametrize("name", sorted(sharded.SHARDED_LOSSES))
@pytest.mark.slow
def test_every_sharded_loss_equals_the_single_device_loss(name, pairing, x64):
  _assert_equal_to_single_device(name, pairing=pairing)


@pytest.mark.parametrize("params", [
    dict(self_mask="max_cost"),
    dict(self_mask="lowered", similarity_floor=1e-7),
    dict(similarity_floor=0.1),
    dict(marginals="ones"),
    dict(form="log"),
    dict(form="scaling"),
    dict(grad_mode="detach"),
    dict(grad_mode="implicit"),
    dict(grad_mode="implicit", pairing="cross"),
    dict(init_log_v=0.3),
    dict(eps=0.05, iters=30),
], ids=str)
@pytest.mark.parametrize("name", ["gca_ince", "gca_uot", "iot_uni"])
@pytest.mark.slow
def test_options_of_the_projection_and_geometry(name, params, x64):
  _assert_equal_to_single_device(name, **params)


@pytest.mark.parametrize("params", [
    dict(tau_a=0.7), dict(grad_mode="detach"), dict(form="log"),
    dict(self_mask="max_cost")], ids=str)
@pytest.mark.slow
def test_robust_term_options(params, x64):
  # A relaxed similarity kernel shifts the marginals; a balanced one shifts u.
  _assert_equal_to_single_device("gca_rince", **params)


@pytest.mark.parametrize("target", ["domain", "class"])
@pytest.mark.parametrize("pairing", ["joint", "cross"])
@pytest.mark.parametrize("name", GCA_LOSSES + ["infonce"])
@pytest.mark.slow
def test_target_plans(name, pairing, target, x64):
  params = dict(w_rince=0.5) if name == "gca_uot" else {}  # y sums T / u_j
  _assert_equal_to_single_device(name, pairing=pairing, target=target,
                                 **params)


@pytest.mark.parametrize("devices,batch", [(2, 4), (3, 6), (6, 6)])
@pytest.mark.slow
def test_any_number_of_devices_and_one_row_each(devices, batch, x64):
  _assert_equal_to_single_device("gca_uot", devices=devices, batch=batch,
                                 target="domain", w_rince=0.3)


@pytest.mark.slow
def test_float32_within_1e_5():
  x1, x2, w, ids = _data(64, dtype=jnp.float32)
  for name in GCA_LOSSES:
    values, _, grads = simulated(name, 8, x1, x2, w, ids)
    value, _, ref_grads = single(name, x1, x2, w, ids)
    assert values.dtype == jnp.float32
    assert _relative(values, value) <= 1e-5, name
    assert _relative(grads, ref_grads) <= 1e-5, name


@pytest.mark.parametrize("pairing", ["joint", "cross"])
@pytest.mark.parametrize("kind", ["domain", "class"])
def test_sharded_targets_are_the_rows_of_the_global_target(kind, pairing, x64):
  devices, batch = 4, 12
  ids = jnp.arange(batch) % 5
  full = _target(kind, ids, pairing, jnp.float64)["target"]

  def rows(ids):
    return (_target(kind, ids, pairing, jnp.float64, AXIS)["target"],
            losses.batch_geometry(jnp.ones((ids.shape[0], 2)),
                                  jnp.ones((ids.shape[0], 2)), pairing=pairing,
                                  axis_name=AXIS).row_index)

  local, row_index = jax.vmap(rows, axis_name=AXIS)(*_split(devices, ids))
  assert local.dtype == full.dtype
  stacked = local.reshape(-1, full.shape[1])
  np.testing.assert_array_equal(stacked, full[row_index.reshape(-1)])
  assert sorted(row_index.reshape(-1).tolist()) == list(range(full.shape[0]))


def test_joint_row_order():
  # Device d's rows: its z1 rows (global d b + k), then its z2 rows
  # (global B + d b + k); the positive of global row i is (i + B) mod 2B.
  def layout(z):
    geometry = losses.batch_geometry(z, z, axis_name=AXIS)
    return geometry.row_index, geometry.positives

  row_index, positives = jax.vmap(layout, axis_name=AXIS)(jnp.ones((3, 2, 4)))
  np.testing.assert_array_equal(row_index, [[0, 1, 6, 7], [2, 3, 8, 9],
                                            [4, 5, 10, 11]])
  np.testing.assert_array_equal(positives, (row_index + 6) % 12)


@pytest.mark.slow
def test_one_device_shard_map_equals_the_single_device_loss(x64):
  mesh = sharding.make_mesh(jax.devices()[:1])
  x1, x2, w, ids = _data(8)

  def device(w, x1, x2, ids):
    def loss(w):
      return sharded.gca_uot(x1 @ w, x2 @ w, axis_name=AXIS, w_rince=0.5,
                             **_target("domain", ids, "joint", w.dtype, AXIS))
    value, grads = jax.value_and_grad(loss)(w)
    return value, lax.pmean(grads, AXIS)

  run = jax.jit(jax.shard_map(device, mesh=mesh,
                              in_specs=(P(), P(AXIS), P(AXIS), P(AXIS)),
                              out_specs=(P(), P()), check_vma=False))
  value, grads = run(w, x1, x2, ids)
  ref_value, _, ref_grads = single("gca_uot", x1, x2, w, ids, target="domain",
                                   w_rince=0.5)
  assert _relative(value, ref_value) <= 1e-12
  assert _relative(grads, ref_grads) <= 1e-12


@pytest.mark.slow
def test_a_non_finite_row_on_one_device_makes_every_loss_nan():
  x1, x2, w, ids = _data(8, dtype=jnp.float32)
  x1 = x1.at[5, 0].set(jnp.nan)  # a row of the last of 4 devices
  for name in sorted(sharded.SHARDED_LOSSES):
    values, _, _ = simulated(name, 4, x1, x2, w, ids)
    assert np.all(np.isnan(values)), name


# ----------------------------------------------------------------------------
# API and refused inputs.


def test_sharded_losses_take_the_keywords_of_the_single_device_losses():
  def keywords(fn):
    names = {n for n, p in inspect.signature(fn).parameters.items()
             if p.kind is p.KEYWORD_ONLY}
    if any(p.kind is p.VAR_KEYWORD
           for p in inspect.signature(fn).parameters.values()):
      names |= set(inspect.signature(losses.gca_loss).parameters) - {"z1", "z2"}
    return names

  assert sorted(sharded.SHARDED_LOSSES) == sorted(losses.CONTRASTIVE_LOSSES)
  for name, fn in sharded.SHARDED_LOSSES.items():
    assert keywords(fn) == keywords(losses.get(name)) | {"axis_name"}, name
    defaults = {n: p.default for n, p in
                inspect.signature(losses.get(name)).parameters.items()}
    for n, p in inspect.signature(fn).parameters.items():
      if n in defaults and p.kind is p.KEYWORD_ONLY:
        assert p.default == defaults[n], (name, n)
  assert sharded.get("gca_uot") is sharded.gca_uot


def test_gca_loss_and_its_sharded_variant_share_one_signature():
  # gca_loss is one function (axis_name=None documented); the sharded one
  # takes the same parameters with axis_name required.
  public = dict(inspect.signature(sharded.gca_loss).parameters)
  implementation = dict(inspect.signature(losses.gca_loss).parameters)
  assert implementation.pop("axis_name").default is None
  assert public.pop("axis_name").default is inspect.Parameter.empty
  assert list(public.items()) == list(implementation.items())


def test_refused_axis_names_and_names():
  z = jnp.ones((4, 3))
  with pytest.raises(ValueError, match="axis_name must name the mesh axis"):
    sharded.gca_ince(z, z, axis_name=None)
  with pytest.raises(ValueError, match="'data' is not a mesh axis bound here"):
    sharded.gca_uot(z, z, axis_name="data")
  with pytest.raises(ValueError, match="is not a mesh axis bound here"):
    sharded.domain_target(jnp.arange(4), 0.5, 0.1, axis_name="data")
  with pytest.raises(ValueError, match="unknown sharded loss name 'byol'"):
    sharded.get("byol")


def test_refused_inputs_inside_the_mesh():
  def run(fn, *arrays, devices=2):
    return jax.vmap(fn, axis_name=AXIS)(*_split(devices, *arrays))

  z = jnp.ones((4, 3))
  with pytest.raises(ValueError, match=r"at least 2 rows over all devices"):
    run(lambda z: sharded.infonce(z, z, axis_name=AXIS), z[:1], devices=1)
  with pytest.raises(ValueError, match="eps must be > 0"):
    run(lambda z: sharded.gca_ince(z, z, axis_name=AXIS, eps=-1.0), z)
  with pytest.raises(ValueError, match=r"target must have shape \(4, 8\)"):
    run(lambda z: sharded.gca_ince(z, z, axis_name=AXIS,
                                   target=jnp.ones((8, 8))), z)
  with pytest.raises(ValueError, match=r"marginals \(a\) must have shape \(4,\)"):
    run(lambda z: sharded.gca_ince(
        z, z, axis_name=AXIS, marginals=(jnp.ones(8), jnp.ones(8))), z)


def test_marginal_arrays_are_local_rows_and_global_columns(x64):
  x1, x2, w, _ = _data(8)
  a = jnp.linspace(1.0, 2.0, 16)
  b = jnp.linspace(2.0, 1.0, 16)

  def device(z1, z2, a_rows):
    return sharded.gca_ince(z1, z2, axis_name=AXIS, marginals=(a_rows, b))

  z1, z2 = x1 @ w, x2 @ w
  # Device d's rows are global rows [d b .. d b + b) and [B + d b ..).
  a_rows = jnp.concatenate([a[:8].reshape(4, 2), a[8:].reshape(4, 2)], axis=1)
  values = jax.vmap(device, axis_name=AXIS)(*_split(4, z1, z2), a_rows)
  expected = losses.gca_ince(z1, z2, marginals=(a, b))
  assert _relative(values, expected) <= 1e-10
  assert abs(float(expected) - float(losses.gca_ince(z1, z2))) > 1e-6


# ----------------------------------------------------------------------------
# The training step's contract on 8 host CPU devices (one subprocess).

DEVICES = 8
CONTRACT_LOSSES = ["gca_ince", "gca_rince", "gca_uot", "iot"]
# (loss, target, grad_mode, form); each runs in float64 and float32.
CONTRACT_CASES = [
    (name, target, mode, form)
    for name, target in [(n, None) for n in CONTRACT_LOSSES]
    + [("gca_ince", "domain"), ("gca_uot", "domain")]
    for mode in ("unroll", "detach") for form in ("log", "scaling")
] + [("gca_uot", None, "implicit", "scaling"), ("iot", None, "implicit", "log"),
     ("iot_uni", None, "unroll", "scaling"), ("gca_ince", "class", "unroll", "log"),
     # The tiled kernel (3 rows per tile; block targets as labels).
     ("gca_uot", None, "unroll", "tiled"), ("gca_uot", "domain", "implicit", "tiled"),
     ("gca_ince", "class", "unroll", "tiled")]
MEMORY_N = 8192


def _case_id(case, dtype) -> str:
  name, target, mode, form = case
  return f"{name}-{target or 'pairs'}-{mode}-{form}-{dtype}"


def _contract_report() -> dict:
  """Runs inside the 8-device subprocess."""
  jax.config.update("jax_enable_x64", True)
  from experiments.benchmarks import sharded_memory

  devices = jax.devices()
  assert len(devices) == DEVICES, devices
  mesh = sharding.make_mesh(devices)
  report = {}
  for dtype in ("float64", "float32"):
    x1, x2, w, ids = _data(4 * DEVICES, seed=1, dtype=jnp.dtype(dtype),
                           features=8, dim=16)
    for case in CONTRACT_CASES:
      name, target, mode, form = case
      tiles = form == "tiled"
      params = dict(grad_mode=mode, form="auto" if tiles else form)
      if name == "gca_uot" and target:
        params["w_rince"] = 0.5  # the robust term's y sums over columns
      tile = dict(tile_size=3) if tiles else {}

      def device_step(w, x1, x2, ids, name=name, target=target, params=params,
                      tile=tile):
        def loss(w):
          return sharded.get(name)(x1 @ w, x2 @ w, axis_name=AXIS, **tile,
                                   **_target(target, ids, "joint", w.dtype,
                                             AXIS, as_labels=bool(tile)),
                                   **params)
        value, grads = jax.value_and_grad(loss)(w)
        return value[None], lax.pmean(grads, AXIS)

      step = jax.jit(jax.shard_map(
          device_step, mesh=mesh, in_specs=(P(), P(AXIS), P(AXIS), P(AXIS)),
          out_specs=(P(AXIS), P()), check_vma=False))
      values, grads = step(w, x1, x2, ids)
      value, _, ref_grads = single(name, x1, x2, w, ids, target=target,
                                   **params)
      report[_case_id(case, dtype)] = {
          "devices": int(values.shape[0]), "dtype": str(values.dtype),
          "value": _relative(values, value), "grad": _relative(grads, ref_grads)}
  # Diagnostics: every device reports the global ones.
  x1, x2, w, ids = _data(4 * DEVICES, seed=2, features=8, dim=16)

  def diagnostics(w, x1, x2, ids):
    _, aux = sharded.gca_uot(x1 @ w, x2 @ w, axis_name=AXIS, return_aux=True,
                             w_rince=0.5,
                             **_target("domain", ids, "joint", w.dtype, AXIS))
    return aux.marginal_error[None], aux.plan_entropy[None], aux.positive_mass[None]

  ours = jax.jit(jax.shard_map(
      diagnostics, mesh=mesh, in_specs=(P(), P(AXIS), P(AXIS), P(AXIS)),
      out_specs=P(AXIS), check_vma=False))(w, x1, x2, ids)
  _, ref_aux, _ = single("gca_uot", x1, x2, w, ids, target="domain", w_rince=0.5)
  report["diagnostics"] = {
      field: _relative(value, np.broadcast_to(getattr(ref_aux, field), value.shape))
      for field, value in zip(("marginal_error", "plan_entropy", "positive_mass"), ours)}
  params = dict(loss="gca_uot", eps=0.5, iters=10)
  for scope in sharded_memory.SCOPES:
    _, memory = sharded_memory.compiled_memory(scope, mesh, MEMORY_N, 128,
                                               **params)
    report[f"memory_{scope}"] = memory
  return report


def _eight_device_report() -> dict:
  from tests.conftest import REPO_ROOT, SUBPROCESS_TIMEOUT, pretrain_env
  result = subprocess.run([sys.executable, __file__, "devices"],
                          env=pretrain_env(DEVICES), capture_output=True,
                          text=True, timeout=SUBPROCESS_TIMEOUT, cwd=REPO_ROOT)
  assert result.returncode == 0, result.stderr[-3000:]
  return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def eight_device_report(tmp_path_factory):
  from tests.conftest import computed_once
  return computed_once(tmp_path_factory, "sharded_loss_report",
                       _eight_device_report)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", CONTRACT_CASES,
                         ids=lambda case: _case_id(case, "")[:-1])
@pytest.mark.slow
def test_eight_devices_value_and_gradient_equal_one_device(
    eight_device_report, case, dtype):
  result = eight_device_report[_case_id(case, dtype)]
  assert result["devices"] == DEVICES and result["dtype"] == dtype
  assert result["value"] <= TOLERANCE[dtype], result
  assert result["grad"] <= TOLERANCE[dtype], result


def test_eight_devices_diagnostics_equal_one_device(eight_device_report):
  errors = eight_device_report["diagnostics"]
  assert sorted(errors) == ["marginal_error", "plan_entropy", "positive_mass"]
  assert max(errors.values()) <= TOLERANCE["float64"], errors


def test_eight_devices_sharded_peak_memory_is_at_most_a_quarter(
    eight_device_report):
  global_scope = eight_device_report["memory_global"]
  sharded_scope = eight_device_report["memory_sharded"]
  # The global scope holds N x N float32 matrices (256 MiB each at 8k).
  assert global_scope["peak_bytes"] > MEMORY_N ** 2 * 4
  assert sharded_scope["peak_bytes"] <= global_scope["peak_bytes"] / 4, (
      eight_device_report)


if __name__ == "__main__" and sys.argv[1:] == ["devices"]:
  print(json.dumps(_contract_report()))
