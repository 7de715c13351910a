"""The robust (RINCE) term on a relaxed plan, against a direct implementation.

The direct implementation below is written from the formulas of
``gca_loss``'s docstring in plain numpy float64, with scalings ``u, v``
(no potentials, no log domain): iterate ``u = (a / K v)^tau_a``,
``v = (b / Kᵀ u)^tau_b`` on the kernel ``K`` itself (``exp(-C / eps)`` or
``exp(S / eps)``), then ``P = u K v``.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gca_jax import losses


def _views(batch=7, dim=5, seed=0):
  z1, z2 = jax.random.normal(jax.random.PRNGKey(seed), (2, batch, dim),
                             jnp.float64)
  return np.asarray(z1), np.asarray(z2)


def _direct(z1, z2, *, eps, iters, tau_a, tau_b, kernel, pairing="joint",
            marginals="ones", final_row_step=True, init_v=None, lam=0.01,
            q=0.6, w_ce=0.0, w_rince=1.0, w_plan=0.0, target=None,
            balanced_shortcut=False):
  """The loss as ``gca_loss`` documents it, one obvious step at a time.

  ``balanced_shortcut``: iterate on ``exp(-C / eps)`` and then rescale to
  ``exp(s)`` (``u / c``, ``c K``), which is exact only for a balanced plan.
  """
  z1 = z1 / np.linalg.norm(z1, axis=1, keepdims=True)
  z2 = z2 / np.linalg.norm(z2, axis=1, keepdims=True)
  batch = len(z1)
  if pairing == "joint":
    rows = cols = np.concatenate([z1, z2])
    positives = (np.arange(2 * batch) + batch) % (2 * batch)
  else:
    rows, cols = z1, z2
    positives = np.arange(batch)
  similarity = rows @ cols.T
  k = (np.exp(similarity / eps)
       if kernel == "similarity" and not balanced_shortcut
       else np.exp(-(1.0 - similarity) / eps))
  if pairing == "joint":
    np.fill_diagonal(k, 0.0)  # self pairs excluded
  n = len(k)
  a = b = np.ones(n) if marginals == "ones" else np.full(n, 1.0 / n)
  v = np.ones(n) if init_v is None else init_v
  u = np.ones(n)
  for _ in range(iters):
    u = (a / (k @ v)) ** tau_a
    v = (b / (k.T @ u)) ** tau_b
  if final_row_step:
    u = (a / (k @ v)) ** tau_a
  if balanced_shortcut:
    u, k = u * np.exp(-1.0 / eps), k * np.exp(1.0 / eps)
  plan = u[:, None] * k * v[None, :]
  anchors = np.arange(n)
  if target is None:
    target = np.zeros((n, n))
    target[anchors, positives] = 1.0
  target = target / target.sum(axis=1, keepdims=True)
  x = (target * plan).sum(axis=1) / u
  y = lam * (target / u[None, :]).sum(axis=1)
  robust = np.mean(-(x ** q) + y ** q) / q
  row_normalized = plan / plan.sum(axis=1, keepdims=True)
  with np.errstate(divide="ignore"):
    log_plan, log_rows = np.log(plan), np.log(row_normalized)
  weighted = lambda logs: (target * np.where(target > 0, logs, 0.0)).sum(axis=1)
  cross_entropy = -np.mean(weighted(log_rows))
  plan_likelihood = -np.mean(weighted(log_plan))
  return w_ce * cross_entropy + w_rince * robust + w_plan * plan_likelihood


@pytest.mark.parametrize("kernel", ["similarity", "cost"])
@pytest.mark.parametrize("tau_a, tau_b", [(0.5, 0.5), (0.3, 1.0), (1.0, 0.7),
                                          (1.0, 1.0)])
@pytest.mark.parametrize("eps", [0.2, 0.5])
@pytest.mark.slow
def test_robust_term_matches_direct_implementation(kernel, tau_a, tau_b, eps,
                                                   x64):
  z1, z2 = _views()
  ours = losses.gca_loss(z1, z2, eps=eps, iters=5, tau_a=tau_a, tau_b=tau_b,
                         marginals="ones", final_row_step=True, w_ce=0.0,
                         w_rince=1.0, rince_kernel=kernel)
  direct = _direct(z1, z2, eps=eps, iters=5, tau_a=tau_a, tau_b=tau_b,
                   kernel=kernel)
  np.testing.assert_allclose(ours, direct, rtol=1e-10)


@pytest.mark.parametrize("tau", [0.5, 0.8])
def test_relaxed_gca_rince_is_iterated_on_the_similarity_kernel(tau, x64):
  """``gca_rince`` with forwarded relaxations: every step on ``exp(s)``."""
  z1, z2 = _views(batch=17, dim=8, seed=1)
  for eps in (0.2, 0.5):
    ours = losses.gca_rince(z1, z2, eps=eps, iters=5, tau_a=tau, tau_b=tau)
    direct = _direct(z1, z2, eps=eps, iters=5, tau_a=tau, tau_b=tau,
                     kernel="similarity")
    np.testing.assert_allclose(ours, direct, rtol=1e-10)
    # The balanced shortcut (project exp(-C/eps), shift u by 1/eps) gives
    # another value: the relaxed case is not a shifted balanced one.
    shortcut = _direct(z1, z2, eps=eps, iters=5, tau_a=tau, tau_b=tau,
                       kernel="similarity", balanced_shortcut=True)
    assert abs(direct - shortcut) > 1e-2 * abs(direct)
    np.testing.assert_allclose(  # while it is exact for a balanced one
        _direct(z1, z2, eps=eps, iters=5, tau_a=1.0, tau_b=1.0,
                kernel="similarity", balanced_shortcut=True),
        _direct(z1, z2, eps=eps, iters=5, tau_a=1.0, tau_b=1.0,
                kernel="similarity"), rtol=1e-10)


@pytest.mark.parametrize("kernel", ["similarity", "cost"])
@pytest.mark.parametrize("pairing", ["joint", "cross"])
@pytest.mark.slow
def test_every_term_uses_the_plan_of_the_chosen_kernel(kernel, pairing, x64):
  """CE, robust and plan terms, uniform marginals, a start ``v``, no final
  row step (the GCA-UOT layout), a matrix target: all on one plan."""
  z1, z2 = _views(batch=6, seed=2)
  n = 12 if pairing == "joint" else 6
  domains = np.array([0, 0, 1, 1, 2, 2])
  target = np.asarray(losses.domain_target(domains, 0.5, 0.1, pairing=pairing))
  init_v = np.linspace(0.5, 1.5, n)
  kw = dict(eps=0.3, iters=4, tau_a=0.6, tau_b=0.4, pairing=pairing,
            marginals="uniform", final_row_step=False, w_ce=1.0, w_rince=0.5,
            w_plan=0.25)
  direct = _direct(z1, z2, kernel=kernel, init_v=init_v, target=target, **kw)
  for form in ("log", "scaling"):
    ours = losses.gca_loss(z1, z2, rince_kernel=kernel, init_log_v=np.log(init_v),
                           target=target, form=form, **kw)
    np.testing.assert_allclose(ours, direct, rtol=1e-10, err_msg=form)


def test_relaxed_similarity_plan_in_the_diagnostics(x64):
  z1, z2 = _views(seed=3)
  _, aux = losses.gca_rince(z1, z2, eps=0.4, iters=3, tau_a=0.5, tau_b=0.5,
                            return_aux=True)
  # w_plan = 1 alone is -mean_i log P_{i,t(i)} of the same plan.
  plan_term = _direct(z1, z2, eps=0.4, iters=3, tau_a=0.5, tau_b=0.5,
                      kernel="similarity", w_rince=0.0, w_plan=1.0)
  positives = (np.arange(14) + 7) % 14
  np.testing.assert_allclose(-np.mean(aux.log_plan[np.arange(14), positives]),
                             plan_term, rtol=1e-10)


@pytest.mark.parametrize("grad_mode", ["implicit", "detach"])
def test_relaxed_similarity_grad_modes_give_the_same_value(grad_mode, x64):
  z1, z2 = _views(seed=4)
  loss = functools.partial(losses.gca_rince, eps=0.3, iters=6, tau_a=0.5,
                           tau_b=0.5)
  np.testing.assert_allclose(loss(z1, z2, grad_mode=grad_mode),
                             loss(z1, z2, grad_mode="unroll"), rtol=1e-13)


def test_relaxed_similarity_gradient_matches_finite_differences(x64):
  from jax.test_util import check_grads
  z1, z2 = _views(batch=4, dim=3, seed=5)
  loss = jax.jit(functools.partial(losses.gca_rince, eps=0.4, iters=3,
                                   tau_a=0.5, tau_b=0.7))
  check_grads(loss, (z1, z2), order=1, modes=["rev"], atol=1e-6, rtol=1e-6)
