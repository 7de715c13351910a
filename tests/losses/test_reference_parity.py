"""``gca_jax.reference`` against the published code's own float64 outputs."""

import collections
import json

import jax
import numpy as np
import pytest

from gca_jax import reference
from tests.conftest import shared_path

RTOL = 1e-6  # the parity contract of gca_jax.reference; we see about 1e-13


def _load():
  data = np.load(shared_path("fixtures", "reference_parity.npz"))
  return data, json.loads(str(data["meta"]))


def _groups():
  """Case indices grouped by name, iters and params (each compiles once)."""
  path = shared_path.__wrapped__("fixtures", "reference_parity.npz")
  if not path.exists():
    return {"(no fixtures)": []}
  meta = json.loads(str(np.load(path)["meta"]))
  groups = collections.defaultdict(list)
  for k, case in enumerate(meta):
    groups[f"{case['name']}-iters{case['iters']}-"
           f"{json.dumps(case['params'], sort_keys=True)}"].append(k)
  return groups


_GROUPS = _groups()


@pytest.mark.parametrize("group", sorted(_GROUPS))
@pytest.mark.slow
def test_fixture_cases_match_loss_and_gradients(group, x64):
  data, meta = _load()
  indices = _GROUPS[group]
  name, iters = meta[indices[0]]["name"], meta[indices[0]]["iters"]
  # The fixtures keep the published code's names; reference.loss takes the clean ones.
  params = {reference.PUBLISHED_NAMES.get(k, k): v
            for k, v in meta[indices[0]]["params"].items()}

  # eps is traced, so one compilation serves every case of a shape (the
  # presets then run their log-domain form; the scaling form is checked
  # against it in test_projections).
  @jax.jit
  def value_and_grads(z1, z2, eps):
    return jax.value_and_grad(
        lambda a, b: reference.loss(name, a, b, eps=eps, iters=iters,
                                    **params), argnums=(0, 1))(z1, z2)

  for k in indices:
    case = meta[k]
    value, (dz1, dz2) = value_and_grads(data[f"{k}_z1"], data[f"{k}_z2"],
                                        case["eps"])
    label = f"case {k}: {name} eps={case['eps']} B={case['B']} {group}"
    np.testing.assert_allclose(value, case["loss"], rtol=RTOL, err_msg=label)
    for ours, theirs in ((dz1, data[f"{k}_dz1"]), (dz2, data[f"{k}_dz2"])):
      assert np.abs(ours - theirs).max() <= RTOL * np.abs(theirs).max(), label


def test_fixtures_cover_every_reference_name():
  _, meta = _load()
  assert {case["name"] for case in meta} == set(reference.NAMES)


def test_unknown_name_and_parameter_are_rejected():
  z = np.ones((4, 3), np.float32)
  with pytest.raises(ValueError, match="unknown reference loss 'simclr'"):
    reference.loss("simclr", z, z)
  with pytest.raises(ValueError, match="temperature"):
    reference.loss("gca_uot", z, z, temperature=0.5)


def test_reference_gca_rince_is_finite_where_published_code_is_nan():
  # The published CE**q/q is NaN once CE rounds to <= 0 in float32 (identical
  # views, small eps); the preset keeps the loss and gradient finite.
  z = jax.random.normal(jax.random.PRNGKey(0), (8, 16))
  value, grad = jax.value_and_grad(
      lambda a: reference.loss("gca_rince", a, z, eps=0.01))(z)
  assert np.isfinite(value) and np.all(np.isfinite(grad))
