"""The documented convergence diagnostic of a projection (``LossAux``).

``relative_marginal_error`` is the row-marginal error per unit of the
marginal's mass; ``converged(tol)`` says whether the last iteration moved it
by at most ``tol``: true once enough iterations have run, for a balanced plan
(error to 0) and a relaxed one (error to a non-zero fixed value) alike, and
false after too few.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gca_jax


def _views(batch=16, seed=0):
  z1, noise = jax.random.normal(jax.random.PRNGKey(seed), (2, batch, 8))
  return z1, z1 + 0.5 * noise


@pytest.mark.parametrize("marginals,mass", [("uniform", 1.0), ("ones", 32.0)])
def test_the_mass_is_that_of_the_row_marginal(marginals, mass):
  _, aux = gca_jax.gca_ince(*_views(), marginals=marginals, return_aux=True)
  assert float(aux.marginal_mass) == pytest.approx(mass)
  np.testing.assert_allclose(aux.relative_marginal_error,
                             aux.marginal_error / mass, rtol=1e-6)


@pytest.mark.parametrize("name", ["gca_ince", "gca_uot"])
def test_enough_iterations_converge_and_too_few_do_not(name):
  loss = getattr(gca_jax, name)
  _, few = loss(*_views(), eps=0.1, iters=1, return_aux=True)
  _, many = loss(*_views(), eps=0.1, iters=200, return_aux=True)
  assert not bool(few.converged()) and bool(many.converged())
  final = float(many.relative_marginal_error[-1])
  if name == "gca_ince":  # balanced: the row marginals are met
    assert final < 1e-4
  else:  # relaxed: the plan keeps a fixed share of mass off its marginals
    assert final > 1e-2


def test_the_tiled_loss_reports_the_same_diagnostic():
  _, aux = gca_jax.gca_uot(*_views(), return_aux=True)
  _, tiled = gca_jax.gca_uot(*_views(), tile_size=7, return_aux=True)
  np.testing.assert_allclose(tiled.relative_marginal_error,
                             aux.relative_marginal_error, rtol=1e-5)
  assert bool(tiled.converged()) == bool(aux.converged())


def test_under_vmap_one_flag_per_problem():
  z1, z2 = jax.random.normal(jax.random.PRNGKey(1), (2, 3, 16, 8))
  _, aux = jax.vmap(lambda a, b: gca_jax.gca_ince(a, b, iters=100,
                                                  return_aux=True))(z1, z2)
  assert aux.converged().shape == (3,) and bool(jnp.all(aux.converged()))


def test_infonce_has_exact_row_marginals():
  _, aux = gca_jax.infonce(*_views(), return_aux=True)
  assert float(aux.relative_marginal_error[-1]) == 0.0 and bool(aux.converged())
