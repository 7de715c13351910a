"""The Sinkhorn projections: ott-jax parity, convergence, forms, gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ott.geometry import geometry as ott_geometry
from ott.problems.linear import linear_problem
from ott.solvers.linear import sinkhorn as ott_sinkhorn

from gca_jax import losses
from gca_jax.losses import projections


def _problem(n, seed=0):
  keys = jax.random.split(jax.random.PRNGKey(seed), 3)
  cost = 2.0 * jax.random.uniform(keys[0], (n, n))
  a = jax.random.uniform(keys[1], (n,)) + 0.5
  init_log_v = 0.1 * jax.random.normal(keys[2], (n,))
  return cost, a / a.sum(), jnp.full(n, 1.0 / n), init_log_v


@pytest.mark.parametrize("n", [8, 64, 512])
@pytest.mark.parametrize("eps", [0.05, 0.1, 0.5])
@pytest.mark.parametrize("balanced", [True, False])
@pytest.mark.slow
def test_plan_matches_ott_sinkhorn(n, eps, balanced, x64):
  """Same iterations from the same start give ott-jax's plan to round-off.

  Conventions aligned: ott updates the column potential first and the
  projections here rows first, so ott solves the transposed problem (cost ``C.T``,
  marginals swapped, ``tau_a``/``tau_b`` swapped), starts from our column
  potential as its row potential (in cost units, ``eps * beta``), and its
  plan is transposed back. ``epsilon`` is always passed as a float (ott's
  ``None`` means ``0.05 * std(C)``).
  """
  cost, a, b, init_log_v = _problem(n)
  tau_a, tau_b = (1.0, 1.0) if balanced else (0.2 / (0.2 + eps),
                                             0.5 / (0.5 + eps))
  iters = 7
  ours = projections.sinkhorn(-cost / eps, jnp.log(a), jnp.log(b),
                              iters=iters, tau_a=tau_a, tau_b=tau_b,
                              init_log_v=init_log_v)
  plan = jnp.exp(ours.log_plan(-cost / eps))

  problem = linear_problem.LinearProblem(
      ott_geometry.Geometry(cost_matrix=cost.T, epsilon=eps), a=b, b=a,
      tau_a=tau_b, tau_b=tau_a)
  solver = ott_sinkhorn.Sinkhorn(min_iterations=iters, max_iterations=iters,
                                 inner_iterations=1, threshold=-1.0)
  theirs = solver(problem, init=(eps * init_log_v, jnp.zeros(n))).matrix.T
  assert float(jnp.max(jnp.abs(plan - theirs))) <= 1e-10


def test_marginal_error_decreases_with_iterations(x64):
  cost, a, b, _ = _problem(64, seed=1)
  out = projections.sinkhorn(-cost / 0.1, jnp.log(a), jnp.log(b), iters=30)
  errors = np.asarray(out.marginal_error)
  assert errors.shape == (31,)
  assert np.all(np.diff(errors) <= 1e-15)
  assert errors[-1] < 1e-6 * errors[0]


def test_unbalanced_marginal_error_settles(x64):
  # A relaxed plan does not meet its marginals: the error settles at the
  # fixed point's value instead of vanishing.
  cost, a, b, _ = _problem(64, seed=1)
  out = projections.sinkhorn(-cost / 0.1, jnp.log(a), jnp.log(b), iters=60,
                             tau_a=0.5, tau_b=0.5)
  errors = np.asarray(out.marginal_error)
  assert errors[-1] > 1e-3
  assert abs(errors[-1] - errors[-2]) < 1e-10 * errors[-1]


@pytest.mark.parametrize("name", ["gca_ince", "gca_rince", "gca_uot", "iot"])
@pytest.mark.slow
def test_scaling_and_log_forms_agree(name, x64):
  z1, z2 = jax.random.normal(jax.random.PRNGKey(2), (2, 32, 16))
  loss = losses.get(name)

  def value_and_grad(form):
    return jax.value_and_grad(
        lambda a: loss(a, z2, eps=0.2, iters=5, form=form))(z1)

  (log_value, log_grad), (fast_value, fast_grad) = map(
      value_and_grad, ("log", "scaling"))
  np.testing.assert_allclose(fast_value, log_value, rtol=1e-12)
  np.testing.assert_allclose(fast_grad, log_grad, rtol=1e-9, atol=1e-13)


def test_auto_form_switches_at_the_documented_limit():
  f32 = jnp.float32
  assert projections.scaling_form_is_safe(2.0, 0.5, f32)
  assert projections.scaling_form_is_safe(2.0, 2.0 / 35.0, f32)
  assert not projections.scaling_form_is_safe(2.0, 0.05, f32)
  assert not projections.scaling_form_is_safe(2.0, 0.01, f32)
  assert projections.scaling_form_is_safe(2.0, 0.01, jnp.float64)
  traced = jax.jit(lambda e: jnp.asarray(
      projections.scaling_form_is_safe(2.0, e, f32)))(0.5)
  assert not bool(traced)  # a traced eps cannot be checked: log form


@pytest.mark.parametrize("name", ["gca_ince", "gca_uot", "iot_uni"])
@pytest.mark.slow
def test_implicit_gradient_matches_unrolled_at_convergence(name, x64):
  z1, z2 = jax.random.normal(jax.random.PRNGKey(3), (2, 16, 8))
  loss = losses.get(name)

  def grad(mode):
    return jax.grad(lambda a: loss(a, z2, eps=0.3, iters=300,
                                   grad_mode=mode))(z1)

  np.testing.assert_allclose(grad("implicit"), grad("unroll"), rtol=1e-8,
                             atol=1e-12)


@pytest.mark.parametrize("name", ["gca_ince", "gca_uot", "gca_rince", "iot"])
@pytest.mark.slow
def test_all_grad_modes_give_the_same_value(name, x64):
  z1, z2 = jax.random.normal(jax.random.PRNGKey(4), (2, 16, 8))
  modes = ["unroll", "detach"] + (["implicit"] if name != "gca_rince" else [])
  values = [losses.get(name)(z1, z2, eps=0.3, iters=4, grad_mode=mode)
            for mode in modes]
  np.testing.assert_allclose(values, values[0], rtol=1e-13)


def test_implicit_robust_term_on_balanced_plan_is_refused():
  z = jnp.ones((4, 3))
  with pytest.raises(ValueError, match="grad_mode='implicit' is undefined"):
    losses.gca_rince(z, z, iters=3, grad_mode="implicit")


def test_detach_drops_the_potentials_from_the_gradient(x64):
  z1, z2 = jax.random.normal(jax.random.PRNGKey(5), (2, 16, 8))

  def grad(mode):
    return jax.grad(lambda a: losses.gca_ince(a, z2, eps=0.3, iters=4,
                                              grad_mode=mode))(z1)

  detached = grad("detach")
  assert np.all(np.isfinite(detached))
  assert not np.allclose(detached, grad("unroll"))


@pytest.mark.slow
def test_implicit_memory_does_not_grow_with_iterations():
  """The implicit backward stores no per-iteration residuals."""
  z1, z2 = jax.random.normal(jax.random.PRNGKey(6), (2, 256, 16))

  def temp_bytes(iters, mode):
    fn = jax.jit(jax.grad(lambda a: losses.gca_ince(
        a, z2, eps=0.01, iters=iters, grad_mode=mode)))
    return fn.lower(z1).compile().memory_analysis().temp_size_in_bytes

  assert temp_bytes(200, "implicit") <= 1.1 * temp_bytes(5, "implicit")
  assert temp_bytes(200, "unroll") <= 1.1 * temp_bytes(5, "unroll")


@pytest.mark.parametrize("balanced", [True, False])
@pytest.mark.slow
def test_unrolled_gradient_matches_ott(balanced, x64):
  """d<W, P>/dC through 6 unrolled iterations, ours against ott-jax.

  ott runs ``inner_iterations=iters`` with ``min_iterations=0`` and
  ``threshold=-1``: with ``min_iterations == max_iterations`` its unrolled
  gradients are wrong when there is more than one block of iterations.
  """
  cost, a, b, _ = _problem(16, seed=7)
  weights = jax.random.normal(jax.random.PRNGKey(8), cost.shape)
  eps, iters = 0.2, 6
  tau = 1.0 if balanced else 0.6

  def ours(cost):
    out = projections.sinkhorn(-cost / eps, jnp.log(a), jnp.log(b),
                               iters=iters, tau_a=tau, tau_b=tau)
    return jnp.sum(weights * jnp.exp(out.log_plan(-cost / eps)))

  def theirs(cost):
    problem = linear_problem.LinearProblem(
        ott_geometry.Geometry(cost_matrix=cost.T, epsilon=eps), a=b, b=a,
        tau_a=tau, tau_b=tau)
    solver = ott_sinkhorn.Sinkhorn(min_iterations=0, max_iterations=iters,
                                   inner_iterations=iters, threshold=-1.0,
                                   implicit_diff=None)
    return jnp.sum(weights * solver(problem).matrix.T)

  (ours_value, ours_grad), (their_value, their_grad) = (
      jax.jit(jax.value_and_grad(f))(cost) for f in (ours, theirs))
  np.testing.assert_allclose(ours_value, their_value, rtol=1e-12)
  np.testing.assert_allclose(ours_grad, their_grad, rtol=1e-9, atol=1e-12)


def test_implicit_gradient_jits_and_vmaps_over_eps_and_rho(x64):
  # eps and rho traced: the relaxations tau enter the custom_vjp as primal
  # inputs. At convergence (300 iterations) the implicit gradient equals the
  # unrolled one, in the embeddings and in eps and rho themselves.
  z1, z2 = jax.random.normal(jax.random.PRNGKey(3), (2, 4, 5))

  def loss(z, eps, rho, grad_mode):
    return losses.gca_uot(z, z2, eps=eps, rho_a=rho, rho_b=rho, iters=300,
                          grad_mode=grad_mode)

  grad = jax.jit(jax.grad(loss, argnums=(0, 1, 2)), static_argnums=3)
  batched = jax.vmap(grad, in_axes=(None, 0, 0, None))
  eps, rho = jnp.array([0.5, 0.3]), jnp.array([0.2, 1.0])
  for implicit, unrolled in zip(batched(z1, eps, rho, "implicit"),
                                batched(z1, eps, rho, "unroll")):
    np.testing.assert_allclose(implicit, unrolled, rtol=1e-8, atol=1e-12)
  for implicit, unrolled in zip(grad(z1, 0.5, 0.2, "implicit"),
                                grad(z1, 0.5, 0.2, "unroll")):
    np.testing.assert_allclose(implicit, unrolled, rtol=1e-8, atol=1e-12)
