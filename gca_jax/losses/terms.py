"""The loss terms, and the diagnostics of a plan, on log-potentials.

Notation (``docs/losses.md``): ``M = -C / eps`` the log-kernel, ``t(i)`` the
positive of anchor ``i``, ``P = u K v`` the plan with ``u = exp(alpha)``,
``v = exp(beta)``, ``P̄`` the plan with each row divided by its sum and
``T̄`` a row-normalised target plan (``None``: the positives ``t(i)``).

* alignment cross-entropy (GCA-INCE, Theorem 1): ``-mean_i log P̄_{i,t(i)}``,
  with a matrix target ``-mean_i sum_j T̄_ij log P̄_ij``;
* robust term (GCA-RINCE, eq. (13)): ``mean_i (-(x_i^q) + y_i^q) / q`` with
  ``x_i = P_{i,t(i)} / u_i`` and ``y_i = lam / u_i``; with a matrix target
  ``x_i = sum_j T̄_ij P_ij / u_i`` and ``y_i = lam sum_j T̄_ij / u_j``;
* plan log-likelihood (IOT, Shi et al. 2023): ``-mean_i log P_{i,t(i)}``,
  plus ``lambda_p KL(Q || P)`` (IOT-uni) with ``Q`` the plan whose
  off-diagonal entries are replaced by their mean.

Every reduction over rows takes an ``axis_name`` (``None``: the rows are the
whole batch) and adds up the rows of every device when they are sharded.
:func:`assemble` adds up a loss's weighted terms from its projection and
returns the diagnostics of its plan (:class:`LossAux`).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import struct

from gca_jax.losses import arguments, collectives, projections
from gca_jax.losses.geometry import BatchGeometry
from gca_jax.losses.problem import Problem


@struct.dataclass
class LossAux:
  """Diagnostics of the plan a loss aligned.

  Attributes:
    marginal_error: ``(iters + 1,)`` L1 row-marginal error ``|P 1 - a|_1``
      of the plan before the projection and after each iteration. It
      vanishes for a balanced plan; a relaxed (unbalanced) plan settles at
      a non-zero error that reflects the mass the relaxation lets it keep.
    plan_entropy: entropy of the plan normalised to total mass 1.
    positive_mass: fraction of the plan's mass on the target's positives.
    log_plan: the ``(N, N)`` log-plan ``log P`` (``-inf`` on excluded pairs),
      or ``None`` from the tiled losses (``tile_size``), which never form it.
    marginal_mass: ``sum a``, the mass of the row marginal the error is
      measured against (1 for ``"uniform"``, ``N`` for ``"ones"``).

  Convergence: :attr:`relative_marginal_error` is the error per unit of
  mass, and :meth:`converged` says whether the last iteration moved it by
  at most a tolerance. A balanced plan converges to error 0; a relaxed
  (unbalanced) plan to a fixed, non-zero error, so the change, not the
  error, is what tells a fixed point in both cases. Both can be logged
  inside a jitted step (they are arrays)::

    loss, aux = gca_jax.gca_uot(z1, z2, return_aux=True)
    aux.relative_marginal_error[-1], aux.converged()   # e.g. to TensorBoard
  """

  marginal_error: jax.Array
  plan_entropy: jax.Array
  positive_mass: jax.Array
  log_plan: jax.Array | None
  marginal_mass: jax.Array | None = None

  @property
  def relative_marginal_error(self) -> jax.Array:
    """``|P 1 - a|_1 / sum a`` before the projection and after each iteration."""
    return self.marginal_error / self.marginal_mass[..., None]

  def converged(self, tol: float = 1e-3) -> jax.Array:
    """Whether the last iteration changed :attr:`relative_marginal_error` by at
    most ``tol`` (with no iteration: whether the error itself is at most
    ``tol``); a boolean array (one per problem under :func:`jax.vmap`).

    ``1e-3`` is a change of 0.1% of the marginal's mass: the plan's rows then
    move by less than that per further iteration (Sinkhorn's iterations
    contract linearly, so the remaining distance to the fixed point is of
    the order of the last step's).
    """
    relative = self.relative_marginal_error
    if relative.shape[-1] == 1:
      return relative[..., -1] <= tol
    return jnp.abs(relative[..., -1] - relative[..., -2]) <= tol


def marginal_mass(log_a: jax.Array, axis_name=None) -> jax.Array:
  """``sum a`` over the rows of every device."""
  if axis_name is None:
    return jnp.sum(jnp.exp(log_a))
  return collectives.total(jnp.exp(log_a), axis_name)


def mean_over_rows(values: jax.Array, axis_name) -> jax.Array:
  """The mean of per-row ``values`` over the rows of every device."""
  if axis_name is None:
    return jnp.mean(values)
  count = values.shape[0] * collectives.axis_size(axis_name)
  return collectives.total(values, axis_name) / count


def at_positives(matrix: jax.Array, positives: jax.Array) -> jax.Array:
  return jnp.take_along_axis(matrix, positives[:, None], axis=1)[:, 0]


def masked_weighted_sum(weights, log_values):
  """``sum_j w_ij log_values_ij`` with ``0 * -inf`` read as 0 (NaN kept)."""
  return jnp.sum(jnp.where(weights != 0, weights * log_values, 0.0), axis=1)


def alignment_cross_entropy(log_kernel, log_v, row_lse, positives, target,
                             axis_name=None):
  """``-mean_i sum_j T̄_ij log P̄_ij``; ``log P̄ = M + beta - LSE_j(M + beta)``.

  Row normalisation cancels the row potential, so only ``beta`` enters.
  """
  if target is None:
    log_positive = (at_positives(log_kernel, positives)
                    + log_v[positives] - row_lse)
    return -mean_over_rows(log_positive, axis_name)
  log_rows = log_kernel + log_v[None, :] - row_lse[:, None]
  return -mean_over_rows(masked_weighted_sum(target, log_rows), axis_name)


def robust_term(log_kernel, log_u, log_v, positives, target, *, lam, q,
                 log_kernel_scale, axis_name=None, row_index=None):
  """``mean_i (-(x_i^q) + y_i^q) / q`` from log-potentials (see module doc).

  The plan is ``P = u (c exp(M)) v`` with ``log c = log_kernel_scale``:
  ``x_i = P_{i,t(i)} / u_i = c exp(M_{i,t(i)}) v_{t(i)}`` and
  ``y_i = lam / u_i``, with ``log_u, log_v`` the potentials of that kernel.
  GCA-RINCE's kernel is ``exp(s) = exp(1/eps) exp(M)``. With a matrix
  target ``y_i`` sums ``T̄_ij / u_j`` over columns: sharded rows gather the
  whole ``u`` (``row_index``: the global rows of this device's rows).
  """
  if target is None:
    log_x = at_positives(log_kernel, positives) + log_v[positives]
    log_y = jnp.log(lam) - log_u
  else:
    # Zero weights are -inf (absent pairs); NaN weights stay NaN.
    nonzero = target != 0
    log_target = jnp.where(nonzero, jnp.log(jnp.where(nonzero, target, 1.0)),
                           -jnp.inf)
    column_log_u = (log_u if axis_name is None
                    else collectives.gather_rows(log_u, row_index, axis_name))
    log_x = jax.nn.logsumexp(log_target + log_kernel + log_v[None, :], axis=1)
    log_y = jnp.log(lam) + jax.nn.logsumexp(
        log_target - column_log_u[None, :], axis=1)
  log_x = log_x + log_kernel_scale
  return mean_over_rows(-jnp.exp(q * log_x) + jnp.exp(q * log_y),
                         axis_name) / q


def plan_log_likelihood(log_plan, positives, target, axis_name=None):
  """``-mean_i sum_j T̄_ij log P_ij`` (IOT's loss)."""
  if target is None:
    return -mean_over_rows(at_positives(log_plan, positives), axis_name)
  return -mean_over_rows(masked_weighted_sum(target, log_plan), axis_name)


def uniform_negatives_kl(log_plan, axis_name=None, row_index=None):
  """``mean_ij Q (log Q - log P)`` with ``Q`` = ``P``, off-diagonal averaged.

  IOT-uni's regulariser: ``Q`` keeps the diagonal of ``P`` and replaces every
  off-diagonal entry by their mean (a uniform spread of the negatives). With
  sharded rows (``row_index``: their global rows) the diagonal is the
  global one and the sums add up every device's rows.
  """
  size = log_plan.shape[1]
  if axis_name is None:
    diagonal = jnp.eye(size, dtype=bool)
    total = jnp.sum
  else:
    diagonal = jnp.arange(size)[None, :] == row_index[:, None]
    total = lambda values: collectives.total(values, axis_name)
  plan = jnp.exp(log_plan)
  off_diagonal_mean = total(jnp.where(diagonal, 0.0, plan)) / (
      size * (size - 1))
  uniform = jnp.where(diagonal, plan, off_diagonal_mean)
  # Excluded self pairs have P = Q = 0: substitute before the log so that
  # neither the value nor the gradient sees 0 * inf.
  support = uniform != 0  # NaN stays in the support: it must propagate
  log_uniform = jnp.log(jnp.where(support, uniform, 1.0))
  log_plan = jnp.where(support, log_plan, 0.0)
  divergence = jnp.where(support, uniform * (log_uniform - log_plan), 0.0)
  if axis_name is None:
    return jnp.mean(divergence)
  return total(divergence) / (size * size)


def diagnostics(log_plan, positives, target, marginal_error, mass,
                 axis_name=None) -> LossAux:
  """Plan diagnostics; with sharded rows the sums and the plan's mass add up
  every device's rows (``log_plan`` stays this device's rows)."""
  if axis_name is None:
    log_mass = jax.nn.logsumexp(log_plan)
    total = jnp.sum
  else:
    log_mass = collectives.logsumexp(log_plan, axis_name)
    total = lambda values: collectives.total(values, axis_name)
  plan = jnp.exp(log_plan - log_mass)
  entropy = -total(jnp.where(plan > 0, plan * (log_plan - log_mass), 0.0))
  if target is None:
    on_positives = total(at_positives(plan, positives))
  else:
    on_positives = total(jnp.where(target > 0, plan, 0.0))
  return LossAux(marginal_error, entropy, on_positives, log_plan, mass)


def row_normalized_kernel_aux(log_softmax, geometry, target) -> LossAux:
  """Diagnostics of the un-projected losses: their plan is the kernel with
  rows normalised (one row projection), whose row marginals are exact."""
  exact = jnp.zeros((1,), log_softmax.dtype)
  ones = jnp.asarray(log_softmax.shape[0], log_softmax.dtype)  # marginals 1
  return diagnostics(log_softmax, geometry.positives, target, exact, ones)


class Terms(NamedTuple):
  """The terms of a GCA loss: their weights (a zero weight drops its term)
  and the robust term's options, as :func:`check_terms` returns them."""

  w_ce: Any
  w_rince: Any
  w_plan: Any
  lambda_p: Any
  lam: Any
  q: Any
  rince_kernel: str

  @property
  def has_ce(self) -> bool:
    return not arguments.is_zero(self.w_ce)

  @property
  def has_rince(self) -> bool:
    return not arguments.is_zero(self.w_rince)

  @property
  def has_plan(self) -> bool:
    return not arguments.is_zero(self.w_plan)

  @property
  def has_uniform(self) -> bool:
    return not arguments.is_zero(self.lambda_p)

  @property
  def similarity_kernel(self) -> bool:
    """Whether the robust term uses the kernel ``exp(s)`` (eq. (13))."""
    return self.rince_kernel == "similarity"


def check_terms(*, w_ce, w_rince, w_plan, lambda_p, lam, q, rince_kernel) -> Terms:
  """The terms' arguments, checked (a traced one out of range becomes NaN).

  ``q`` and ``lam`` are checked only when the robust term is on.
  """
  w_ce, w_rince, w_plan, lambda_p = (
      arguments.check_nonnegative(name, weight)
      for name, weight in (("w_ce", w_ce), ("w_rince", w_rince),
                           ("w_plan", w_plan), ("lambda_p", lambda_p)))
  if not arguments.is_zero(w_rince):
    q = arguments.check_q(q)
    lam = arguments.check_nonnegative("lam", lam)
  arguments.check_choice("rince_kernel", rince_kernel, arguments.RINCE_KERNELS)
  return Terms(w_ce, w_rince, w_plan, lambda_p, lam, q, rince_kernel)


def assemble(terms: Terms, log_kernel, form: str, projection, geometry: BatchGeometry,
             problem: Problem, *, return_aux: bool = False, axis_name=None):
  """``w_ce CE + w_rince RINCE + w_plan (-log P) + lambda_p KL(Q || P)``.

  Each term with a non-zero weight, from the potentials of ``projection``
  (:func:`gca_jax.losses.sinkhorn` on ``log_kernel`` in ``form``) and the
  ``problem``'s target; with ``return_aux``, also the plan's
  :class:`LossAux`.
  """
  log_u, log_v = projection.log_u, projection.log_v
  ops = projections.kernel_ops(log_kernel, form)
  positives, target = geometry.positives, problem.target
  log_scale = problem.log_kernel_scale

  loss = jnp.zeros((), geometry.cost.dtype)
  if terms.has_ce:
    # Row normalisation removes any constant factor of the kernel.
    row_lse = ops.row_lse(log_v)
    loss += terms.w_ce * alignment_cross_entropy(log_kernel, log_v, row_lse,
                                                 positives, target, axis_name)
  if terms.has_rince:
    # Potentials of the kernel c K (see problem.alignment_problem).
    robust_log_u = log_u if problem.shifted_marginals else log_u - log_scale
    loss += terms.w_rince * robust_term(log_kernel, robust_log_u, log_v, positives,
                                        target, lam=terms.lam, q=terms.q,
                                        log_kernel_scale=log_scale,
                                        axis_name=axis_name,
                                        row_index=geometry.row_index)
  log_plan = None
  if terms.has_plan or terms.has_uniform or return_aux:
    # u (c K) v: with shifted marginals the potentials are those of c K.
    log_plan = projection.log_plan(log_kernel)
    if problem.shifted_marginals:
      log_plan = log_plan + log_scale
  if terms.has_plan:
    loss += terms.w_plan * plan_log_likelihood(log_plan, positives, target, axis_name)
  if terms.has_uniform:
    loss += terms.lambda_p * uniform_negatives_kl(log_plan, axis_name,
                                                  geometry.row_index)
  if not return_aux:
    return loss
  return loss, diagnostics(log_plan, positives, target, projection.marginal_error,
                           marginal_mass(problem.log_a, axis_name), axis_name)
