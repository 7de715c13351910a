"""The public losses' API: full signatures, documented arguments, clear
errors for a wrong keyword or a traced static option, jit as users write it."""

import inspect

import jax
import numpy as np
import pytest

import gca_jax
from gca_jax import losses, reference

PUBLIC = ["infonce", "gca_ince", "rince", "gca_rince", "gca_uot", "hs_ince",
          "hs_rince", "iot", "iot_uni", "gca_loss"]
DOCUMENTED_OPTIONS = ("grad_mode", "form", "target", "pairing", "self_mask",
                      "return_aux")


def _views():
  return jax.random.normal(jax.random.PRNGKey(0), (2, 4, 3))


@pytest.mark.parametrize("name", PUBLIC)
def test_every_public_loss_shows_and_documents_its_full_signature(name):
  fn = getattr(gca_jax, name)
  parameters = inspect.signature(fn).parameters
  assert not any(p.kind is p.VAR_KEYWORD for p in parameters.values())
  assert not hasattr(fn, "__wrapped__")
  if name not in ("infonce", "rince"):
    assert set(DOCUMENTED_OPTIONS) <= set(parameters)
  args = fn.__doc__.split("Args:")[1].split("Returns:")[0]
  for parameter in list(parameters)[2:]:
    assert f"\n  {parameter}: " in args, (name, parameter)
  assert "the temperature, exactly" in args
  assert "jnp.split(z, 2)" in args
  assert "Examples:" in fn.__doc__


def test_presets_take_their_own_defaults():
  assert inspect.signature(losses.gca_uot).parameters["w_rince"].default == 0.02
  assert inspect.signature(losses.iot_uni).parameters["lambda_p"].default == 0.2
  assert inspect.signature(losses.iot).parameters["marginals"].default == "ones"
  assert "iters" not in inspect.signature(losses.hs_ince).parameters


@pytest.mark.parametrize("alias", ["temperature", "tau", "t"])
def test_a_wrong_keyword_is_one_line_naming_the_loss_and_suggesting_eps(alias):
  z1, z2 = _views()
  with pytest.raises(TypeError) as error:
    gca_jax.gca_uot(z1, z2, **{alias: 0.1})
  message = str(error.value)
  assert "\n" not in message
  assert message.startswith("gca_uot()")
  assert "use eps for " + alias in message
  assert "rho_a" in message and "grad_mode" in message


def test_jit_as_users_write_it():
  z1, z2 = _views()
  np.testing.assert_array_equal(jax.jit(gca_jax.gca_uot)(z1, z2),
                                jax.jit(lambda a, b: gca_jax.gca_uot(a, b))(z1, z2))
  with pytest.raises(TypeError, match=r"static_argnames=\('iters'") as error:
    jax.jit(gca_jax.gca_uot)(z1, z2, iters=10)
  assert "\n" not in str(error.value)
  with pytest.raises(TypeError, match="return_aux is traced"):
    jax.jit(gca_jax.gca_ince)(z1, z2, return_aux=True)
  static = jax.jit(gca_jax.gca_uot, static_argnames=("iters",))
  np.testing.assert_array_equal(static(z1, z2, iters=4), gca_jax.gca_uot(z1, z2, iters=4))


def test_a_numpy_integer_iters_is_an_int():
  z1, z2 = _views()
  np.testing.assert_array_equal(gca_jax.gca_ince(z1, z2, iters=np.int64(5)),
                                gca_jax.gca_ince(z1, z2, iters=5))


def test_reference_takes_the_clean_names_and_the_presets_defaults():
  z1, z2 = _views()
  assert reference.PARAMS == ("eps", "iters", "lam", "q", "rho_a", "rho_b", "w_ce",
                              "w_rince", "lambda_p")
  with pytest.raises(ValueError, match="unknown parameter"):
    reference.loss("gca_uot", z1, z2, relax1=0.2)
  np.testing.assert_array_equal(
      reference.loss("gca_uot", z1, z2),
      reference.loss("gca_uot", z1, z2, rho_a=0.2, rho_b=0.2, w_ce=1.0,
                     w_rince=0.02))
  np.testing.assert_array_equal(
      reference.loss("iot_uni", z1, z2), reference.loss("iot_uni", z1, z2, lambda_p=0.2))


def test_one_lookup_and_derived_sharded_registry():
  assert losses.get("gca_uot") is losses.gca_uot
  assert losses.sharded.get("iot") is losses.sharded.iot
  assert losses.sharded.TARGETS == ("domain_target", "class_target",
                                    "hierarchical_target")
  assert "axis_name" in inspect.signature(losses.sharded.class_target).parameters
