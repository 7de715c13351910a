"""The losses' values and gradients are bitwise those recorded in a fixture.

A grid of cases (every public loss; pairings, self masks, numerical forms,
gradient modes, targets, marginals, relaxations, similarity floors,
diagnostics; float32 and float64) is evaluated with ``jax.jit`` of
``jax.value_and_grad`` wrt both views. ``data/refactor_grid.npz`` holds the
values and gradients the code gave when it was recorded: a change that is
meant to leave the numerics alone (a refactoring) must reproduce them bit for
bit. A deliberate numerical change regenerates the fixture with
``python tests/losses/test_refactor_grid.py`` and says so in its commit.
"""

import pathlib

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


def regenerate(path=FIXTURE):
  """Records the current code's results as the fixture (deliberately)."""
  results = evaluate("float32")
  results.update(_with_x64(lambda: evaluate("float64")))
  path.parent.mkdir(parents=True, exist_ok=True)
  np.savez_compressed(path, **_pack(results))
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
def test_values_and_gradients_are_bitwise_those_of_the_fixture(dtype_name):
  if dtype_name == "float64":
    results = _with_x64(lambda: evaluate(dtype_name))
  else:
    results = evaluate(dtype_name)
  with np.load(FIXTURE) as fixture:
    expected = _unpack(fixture, dtype_name)
  assert sorted(results) == sorted(expected)
  # Raw bytes: also tells -0.0 from 0.0 and one NaN payload from another.
  different = [k for k in results
               if results[k].dtype != expected[k].dtype
               or results[k].shape != expected[k].shape
               or results[k].tobytes() != expected[k].tobytes()]
  assert not different, different[:10]


if __name__ == "__main__":
  regenerate()
  print(f"wrote {FIXTURE}")
