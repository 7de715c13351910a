"""The losses' values and gradients are those recorded in a fixture.

A grid of cases (every public loss; pairings, self masks, numerical forms,
gradient modes, targets, marginals, relaxations, similarity floors,
diagnostics; float32 and float64) is evaluated with ``jax.jit`` of
``jax.value_and_grad`` wrt both views. ``data/refactor_grid.npz`` holds the
values and gradients the code gave when it was recorded, and where: the jax
and jaxlib versions and the platform (backend, architecture, processor).

* Where the fixture was recorded (the same versions and platform), the
  comparison is bitwise: a change that is meant to leave the numerics alone
  (a refactoring) must reproduce them bit for bit.
* Anywhere else it is within :data:`TOLERANCE`: JAX does not promise the same
  bits across releases (a new XLA fuses, reorders and contracts differently),
  and XLA compiles for the host processor, so the same jax on another CPU
  model differs in the last bits too. A real change of the numerics is far
  larger than that tolerance and still fails.

Each run says which comparison it made (a `GridComparison` warning, in the
warnings summary). A deliberate numerical change regenerates the fixture with
``python tests/losses/test_refactor_grid.py`` and says so in its commit.
"""

import importlib.metadata
import pathlib
import platform
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gca_jax
from gca_jax import reference

FIXTURE = pathlib.Path(__file__).parent / "data" / "refactor_grid.npz"
BATCH, DIM = 4, 3


def _domains():
  return jnp.array([0, 1, 0, 1])


def _cases():
  """``(case id, loss, keyword arguments)``; builders of arrays are lazy so
  the arrays take the dtype of the case."""
  f = gca_jax
  joint = 2 * BATCH
  cases = []

  def add(name, fn, **params):
    cases.append((name, fn, params))

  for name in ("infonce", "gca_ince", "rince", "gca_rince", "gca_uot", "hs_ince",
               "hs_rince", "iot", "iot_uni", "gca_loss"):
    fn = getattr(f, name)
    add(f"{name}/default_aux", fn, return_aux=True)
    add(f"{name}/cross_eps0.2", fn, pairing="cross", eps=0.2)
    options = dict(similarity_floor=0.0)
    if name != "rince":  # RINCE's eq. (2) has no matrix target
      options["target"] = lambda dt: f.domain_target(_domains(), 0.5, 0.1, dtype=dt)
    if name not in ("rince", "infonce"):
      options["self_mask"] = "max_cost"
    add(f"{name}/floor_domain_max_cost", fn, **options)
  for name in ("gca_uot", "iot_uni", "gca_loss"):
    fn = getattr(f, name)
    for form in ("log", "scaling"):
      add(f"{name}/form_{form}", fn, form=form)
    for grad_mode in ("implicit", "detach"):
      add(f"{name}/{grad_mode}", fn, grad_mode=grad_mode)
  add("gca_ince/form_log", f.gca_ince, form="log")
  add("gca_ince/implicit_iters3", f.gca_ince, grad_mode="implicit", iters=3)
  add("gca_ince/class", f.gca_ince, target=lambda dt: f.class_target(
      jnp.array([0, 0, 1, 1]), dtype=dt))
  add("infonce/lowered", f.infonce, self_mask="lowered")
  add("gca_ince/ones", f.gca_ince, marginals="ones")
  add("gca_ince/arrays", f.gca_ince, marginals=lambda dt: (
      jnp.linspace(1.0, 2.0, joint, dtype=dt), jnp.full(joint, 1.5, dt)))
  add("gca_ince/eps0.03", f.gca_ince, eps=0.03)
  add("gca_uot/rho", f.gca_uot, rho_a=0.5, rho_b=1.0)
  add("gca_uot/rho_inf", f.gca_uot, rho_a=float("inf"), rho_b=0.3)
  add("gca_uot/implicit_cross", f.gca_uot, grad_mode="implicit", pairing="cross")
  add("gca_rince/tau", f.gca_rince, tau_a=0.7, tau_b=0.9)
  add("gca_rince/detach", f.gca_rince, grad_mode="detach")
  add("gca_loss/tau", f.gca_loss, tau_a=0.8, tau_b=0.6, w_rince=0.3)
  add("gca_loss/tau_implicit", f.gca_loss, tau_a=0.8, tau_b=0.6, w_rince=0.3,
      grad_mode="implicit")
  add("gca_loss/similarity", f.gca_loss, rince_kernel="similarity", w_rince=0.5,
      tau_a=0.9, tau_b=0.9, final_row_step=True)
  add("gca_loss/init_v", f.gca_loss, init_log_v=-1.0, final_row_step=True)
  add("gca_loss/all_terms", f.gca_loss, w_ce=0.5, w_rince=0.2, w_plan=0.3,
      lambda_p=0.1, lam=0.05, q=0.8, tau_a=0.9)
  add("iot_uni/cross_lambda", f.iot_uni, pairing="cross", lambda_p=0.5)
  for name in reference.NAMES:
    add(f"reference/{name}/eps0.3", lambda z1, z2, _n=name, **p: reference.loss(
        _n, z1, z2, **p), eps=0.3, iters=4)
  return cases


def _embeddings(dtype):
  rng = np.random.default_rng(0)  # numpy: the same draws whatever jax's x64
  z1 = rng.standard_normal((BATCH, DIM))
  z2 = z1 + 0.5 * rng.standard_normal((BATCH, DIM))
  return z1.astype(dtype), z2.astype(dtype)


def _jitted(fn, params, dtype):
  """``jit(value_and_grad)`` of a case; arrays built in ``dtype``."""
  params = {k: v(dtype) if callable(v) and not isinstance(v, str) else v
            for k, v in params.items()}
  aux = params.get("return_aux", False)

  def value(z1, z2):
    out = fn(z1, z2, **params)
    if aux:
      loss, diagnostics = out
      return loss, (diagnostics.marginal_error, diagnostics.plan_entropy,
                    diagnostics.positive_mass)
    return out, ()

  return jax.jit(jax.value_and_grad(value, argnums=(0, 1), has_aux=True))


def evaluate(dtype_name):
  """Every case's raw results in ``dtype_name``: ``{key: array}``."""
  dtype = np.dtype(dtype_name)
  z1, z2 = _embeddings(dtype)
  results = {}
  for case, fn, params in _cases():
    (loss, extra), (g1, g2) = _jitted(fn, params, dtype)(z1, z2)
    key = f"{dtype_name}:{case}"
    results[key + ":loss"] = np.asarray(loss)
    results[key + ":grad_z1"] = np.asarray(g1)
    results[key + ":grad_z2"] = np.asarray(g2)
    for i, value in enumerate(extra):
      results[key + f":aux{i}"] = np.asarray(value)
  return results


def lowered_texts(dtype_name):
  """The StableHLO text of each case's jitted program (for a one-off
  before/after comparison of a refactoring; not asserted by the suite)."""
  dtype = np.dtype(dtype_name)
  z1, z2 = _embeddings(dtype)
  return {f"{dtype_name}:{case}": _jitted(fn, params, dtype).lower(z1, z2).as_text()
          for case, fn, params in _cases()}


def _with_x64(run):
  previous = jax.config.jax_enable_x64
  jax.config.update("jax_enable_x64", True)
  try:
    return run()
  finally:
    jax.config.update("jax_enable_x64", previous)


# The largest difference accepted where the fixture was recorded elsewhere,
# relative to the largest magnitude in the array (a loss, a gradient, a
# diagnostic; entry by entry, a gradient's near-zero entries drift by far
# more than their own size): 2**7 units of round-off of the dtype, 1.5e-5 in
# float32 and 2.8e-14 in float64. Measured against this fixture (on a 2-core
# x86_64 CPU machine): the same jax 0.10.2 on another processor differs by at
# most 1.0e-7 (float32) and 5.8e-16 (float64) of that scale, jax 0.12.1 by at
# most 6.9e-7 and 1.3e-15; both are about 6 units of round-off, in either
# dtype, so one count of units serves both, and float64's tolerance is 2**29
# times tighter as its round-off is. The margin of about 20 covers other
# compilers' reorderings of the grid's longest chains (ten Sinkhorn
# iterations of 8-term log-sum-exps and their backward pass). A real
# numerical change is beyond it: a temperature changed by one part in 10**4
# moves a float32 loss by 3 and its gradients by 8 times the tolerance
# (float64: 10**9 times; the test below).
TOLERANCE = {name: 2.0 ** 7 * float(np.finfo(name).eps) for name in ("float32", "float64")}
ENVIRONMENT_FIELDS = ("jax", "jaxlib", "platform")


class GridComparison(UserWarning):
  """Which comparison the grid made, and why (shown in the warnings summary,
  which pytest-xdist forwards from its workers, unlike a test's prints)."""


def _processor() -> str:
  """The CPU model XLA compiles for (its vector width, FMA and scheduling
  change the last bits): vendor, family and model from ``/proc/cpuinfo``,
  or what the ``platform`` module knows elsewhere."""
  try:
    lines = pathlib.Path("/proc/cpuinfo").read_text().split("\n\n")[0].splitlines()
  except OSError:
    return platform.processor() or "unknown processor"
  fields = dict(line.split(":", 1) for line in lines if ":" in line)
  fields = {key.strip(): value.strip() for key, value in fields.items()}
  return (f"{fields.get('vendor_id', '?')} family {fields.get('cpu family', '?')} model "
          f"{fields.get('model', '?')} ({fields.get('model name', '?')})")


def environment() -> dict:
  """What the bits depend on: jax, jaxlib and the platform of device 0."""
  device = jax.devices()[0]
  kind = _processor() if device.platform == "cpu" else device.device_kind
  return {"jax": jax.__version__, "jaxlib": importlib.metadata.version("jaxlib"),
          "platform": f"{device.platform} {platform.machine()} {kind}"}


def recorded_environment(fixture) -> dict:
  return {field: str(fixture[f"recorded_{field}"]) for field in ENVIRONMENT_FIELDS}


def comparison(recorded: dict, current: dict) -> str:
  """``"bitwise"`` where the fixture was recorded, else ``"tolerance"``."""
  return "bitwise" if recorded == current else "tolerance"


def _describe(how: str, dtype_name: str, recorded: dict, current: dict) -> str:
  where = ", ".join(f"{field} {recorded[field]}" for field in ENVIRONMENT_FIELDS)
  if how == "bitwise":
    return f"{dtype_name}: bitwise comparison (this is where the fixture was recorded: {where})"
  differs = ", ".join(f"{field} {current[field]}" for field in ENVIRONMENT_FIELDS
                      if current[field] != recorded[field])
  return (f"{dtype_name}: compared within {TOLERANCE[dtype_name]:.3g} of each array's largest "
          f"magnitude, not bitwise (the fixture was recorded with {where}; this is {differs})")


def _within(actual, expected, tolerance) -> bool:
  """NaNs and infinities where the fixture has them, and every finite value
  within ``tolerance`` of the largest finite magnitude (an array that is
  exactly zero, such as InfoNCE's marginal error, is held to ``tolerance``
  in absolute terms: every quantity of the grid is of order one)."""
  if not np.array_equal(np.isnan(actual), np.isnan(expected)):
    return False
  finite = np.isfinite(expected)
  if not np.array_equal(actual[~finite & ~np.isnan(expected)],
                        expected[~finite & ~np.isnan(expected)]):
    return False  # infinities, with their signs
  scale = float(np.max(np.abs(expected[finite]), initial=0.0)) or 1.0
  difference = np.abs(actual[finite].astype(np.float64) - expected[finite])
  return bool(np.all(difference <= tolerance * scale))


def mismatches(results: dict, expected: dict, how: str, dtype_name: str) -> list:
  """The keys of ``results`` that do not match ``expected`` under ``how``."""
  if sorted(results) != sorted(expected):
    return sorted(set(results) ^ set(expected))
  different = []
  for key, actual in results.items():
    want = expected[key]
    if actual.dtype != want.dtype or actual.shape != want.shape:
      different.append(key)
    elif how == "bitwise":
      # Raw bytes: also tells -0.0 from 0.0 and one NaN payload from another.
      if actual.tobytes() != want.tobytes():
        different.append(key)
    elif not _within(actual, want, TOLERANCE[dtype_name]):
      different.append(key)
  return different


def regenerate(path=FIXTURE):
  """Records the current code's results, and where, as the fixture (deliberately)."""
  results = evaluate("float32")
  results.update(_with_x64(lambda: evaluate("float64")))
  path.parent.mkdir(parents=True, exist_ok=True)
  recorded = {f"recorded_{field}": np.array(value) for field, value in environment().items()}
  np.savez_compressed(path, **_pack(results), **recorded)
  return results


def _pack(results):
  """One flat array per dtype (and the keys, shapes): a small file."""
  packed = {}
  for dtype_name in ("float32", "float64"):
    keys = sorted(k for k in results if k.startswith(dtype_name + ":"))
    packed[f"{dtype_name}_keys"] = np.array(keys)
    packed[f"{dtype_name}_shapes"] = np.array(
        [results[k].shape + (-1,) * (2 - results[k].ndim) for k in keys])
    packed[f"{dtype_name}_values"] = np.concatenate(
        [results[k].ravel() for k in keys])
  return packed


def _unpack(fixture, dtype_name):
  keys = fixture[f"{dtype_name}_keys"]
  shapes = fixture[f"{dtype_name}_shapes"]
  values = fixture[f"{dtype_name}_values"]
  expected, offset = {}, 0
  for key, shape in zip(keys, shapes):
    shape = tuple(int(n) for n in shape if n >= 0)
    size = int(np.prod(shape))
    expected[str(key)] = values[offset:offset + size].reshape(shape)
    offset += size
  return expected


def test_the_grid_has_enough_cases():
  assert 2 * len(_cases()) >= 100


@pytest.mark.parametrize("dtype_name", ["float32", "float64"])
@pytest.mark.slow
def test_values_and_gradients_match_the_fixture(dtype_name):
  if dtype_name == "float64":
    results = _with_x64(lambda: evaluate(dtype_name))
  else:
    results = evaluate(dtype_name)
  with np.load(FIXTURE) as fixture:
    expected = _unpack(fixture, dtype_name)
    recorded = recorded_environment(fixture)
  current = environment()
  how = comparison(recorded, current)
  description = _describe(how, dtype_name, recorded, current)
  warnings.warn(description, GridComparison, stacklevel=1)
  different = mismatches(results, expected, how, dtype_name)
  assert not different, f"{description}; differing: {different[:10]}"


def _nudged(expected: dict, key: str, relative: float) -> dict:
  """``expected`` with the largest entry of ``key`` moved by ``relative`` of it
  (at least one unit of round-off)."""
  nudged = dict(expected)
  array = expected[key].copy()
  index = np.unravel_index(np.argmax(np.abs(array)), array.shape)
  moved = array[index] * (1 + relative)
  array[index] = moved if moved != array[index] else np.nextafter(array[index], np.inf)
  nudged[key] = array
  return nudged


@pytest.mark.parametrize("dtype_name", ["float32", "float64"])
def test_the_comparison_is_bitwise_where_recorded_and_a_tolerance_elsewhere(dtype_name):
  """The comparison itself, on the fixture's own numbers: one unit of
  round-off fails where the fixture was recorded and passes elsewhere; a
  difference beyond the tolerance fails everywhere."""
  with np.load(FIXTURE) as fixture:
    expected = _unpack(fixture, dtype_name)
    recorded = recorded_environment(fixture)
  assert set(recorded) == set(ENVIRONMENT_FIELDS) and all(recorded.values()), recorded
  elsewhere = dict(recorded, jax=recorded["jax"] + ".post1")  # a faked other jax
  assert comparison(recorded, dict(recorded)) == "bitwise"
  assert comparison(recorded, elsewhere) == "tolerance"
  assert comparison(recorded, dict(recorded, platform="gpu x86_64 NVIDIA H100")) == "tolerance"

  key = f"{dtype_name}:gca_uot/default_aux:grad_z1"
  assert not mismatches(expected, expected, "bitwise", dtype_name)
  one_ulp = _nudged(expected, key, 0.0)
  assert mismatches(one_ulp, expected, "bitwise", dtype_name) == [key]
  assert not mismatches(one_ulp, expected, "tolerance", dtype_name)
  assert not mismatches(_nudged(expected, key, 0.9 * TOLERANCE[dtype_name]), expected,
                        "tolerance", dtype_name)
  beyond = _nudged(expected, key, 2 * TOLERANCE[dtype_name])
  assert mismatches(beyond, expected, "tolerance", dtype_name) == [key]
  zero = f"{dtype_name}:infonce/default_aux:aux0"  # exactly zero, held absolutely
  assert not np.any(expected[zero])
  assert mismatches(dict(expected, **{zero: expected[zero] + 2 * TOLERANCE[dtype_name]}),
                    expected, "tolerance", dtype_name) == [zero]
  nan = dict(expected, **{key: np.where(expected[key] == expected[key].max(), np.nan,
                                        expected[key])})
  assert mismatches(nan, expected, "tolerance", dtype_name) == [key]


def _one_case(dtype_name, name, **params):
  """``{key: array}`` of one case of the grid, its parameters overridden."""
  dtype = np.dtype(dtype_name)
  case, fn, grid_params = next(c for c in _cases() if c[0] == name)
  (loss, _), (g1, g2) = _jitted(fn, dict(grid_params, **params), dtype)(*_embeddings(dtype))
  return {f"{dtype_name}:{case}:{part}": np.asarray(value)
          for part, value in (("loss", loss), ("grad_z1", g1), ("grad_z2", g2))}


@pytest.mark.parametrize("dtype_name", ["float32", "float64"])
def test_a_temperature_off_by_one_part_in_ten_thousand_is_beyond_the_tolerance(dtype_name):
  """The tolerance tells a real change from round-off: the grid's case at
  its own temperature matches the fixture within it here, and at a
  temperature changed by 1e-4 of itself does not."""
  with np.load(FIXTURE) as fixture:
    expected = _unpack(fixture, dtype_name)
  case = "gca_uot/cross_eps0.2"
  run = (lambda f: _with_x64(f)) if dtype_name == "float64" else (lambda f: f())
  same = run(lambda: _one_case(dtype_name, case))
  changed = run(lambda: _one_case(dtype_name, case, eps=0.2 * (1 + 1e-4)))
  subset = {key: expected[key] for key in same}
  assert not mismatches(same, subset, "tolerance", dtype_name)
  assert sorted(mismatches(changed, subset, "tolerance", dtype_name)) == sorted(subset)


def test_the_fixture_says_where_it_was_recorded():
  with np.load(FIXTURE) as fixture:
    recorded = recorded_environment(fixture)
  assert recorded["jax"].count(".") >= 2 and recorded["jaxlib"].count(".") >= 2, recorded
  assert recorded["platform"].split()[0] in ("cpu", "gpu", "tpu"), recorded


if __name__ == "__main__":
  regenerate()
  print(f"wrote {FIXTURE}")
