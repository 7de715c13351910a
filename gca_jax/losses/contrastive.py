"""Contrastive losses as distribution alignment.

Every loss here is a pure function of the two views' embeddings ``z1, z2``
(``(B, D)``, row ``k`` of each from sample ``k``) returning a scalar, the
mean over anchors. The GCA losses are presets of one function,
:func:`gca_loss`: build the batch geometry, project its kernel
(:mod:`gca_jax.losses.projections`), and compare the plan with a target.
``docs/losses.md`` states the whole contract in one place.

Notation: ``s = S / eps`` (scaled cosine similarity), ``M = -C / eps``
(log-kernel), ``t(i)`` the positive of anchor ``i``, ``P̄`` the plan with each
row divided by its sum, ``u = exp(alpha)``, ``v = exp(beta)`` the scalings.

Terms combined by :func:`gca_loss`:

* alignment cross-entropy (GCA-INCE, Theorem 1): ``-mean_i log P̄_{i,t(i)}``,
  with a matrix target ``-mean_i sum_j T̄_ij log P̄_ij``;
* robust term (GCA-RINCE, eq. (13)): ``mean_i (-(x_i^q) + y_i^q) / q`` with
  ``x_i = P_{i,t(i)} / u_i`` and ``y_i = lam / u_i``; with a matrix target
  ``x_i = sum_j T̄_ij P_ij / u_i`` and ``y_i = lam sum_j T̄_ij / u_j``;
* plan log-likelihood (IOT, Shi et al. 2023): ``-mean_i log P_{i,t(i)}``,
  plus ``lambda_p KL(Q || P)`` (IOT-uni) with ``Q`` the plan whose
  off-diagonal entries are replaced by their mean.

Numerics: the projection runs in the exp-domain ``"scaling"`` form (one
matrix-vector product per half step) when :func:`scaling_form_is_safe` says
``max C / eps`` is small enough for the dtype (``eps >= 2/35 ≈ 0.057`` in
float32 for normalised embeddings), and in the log domain otherwise, so a
finite input never gives NaN or inf. All other quantities are formed from
log-potentials. Two limits of the float range remain:

* the robust term on the similarity kernel grows like ``exp(q / eps)``
  (``rince``, ``gca_rince``, ``hs_rince``): an ``eps`` at which it cannot be
  represented in the dtype (in float32 with ``q = 0.6``, below about
  ``0.008``) is refused with the smallest allowed ``eps``;
* in float32 at ``eps <= 0.02`` a loss whose exact value is below the
  round-off of its terms (e.g. InfoNCE of well-separated positives)
  underflows: it returns 0 or a slightly negative value, down to about
  ``-1e-7``, with finite gradients.

Non-finite embeddings (NaN or inf anywhere) give a non-finite loss, never a
finite one: the normalisation maps such a row to NaN and every term
propagates it.

The same code runs with the plan's rows sharded over a mesh axis
(:mod:`gca_jax.losses.sharded`): every reduction over rows below takes an
``axis_name`` (``None`` here) and adds up the devices' rows.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from gca_jax.losses import collectives, projections
from gca_jax.losses.geometry import BatchGeometry, batch_geometry
from gca_jax.losses.geometry import check_pair, compute_dtype, l2_normalize

Target = Any  # "pairs" or an (N, N) array
MARGINALS = ("uniform", "ones")


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
    log_plan: the ``(N, N)`` log-plan ``log P`` (``-inf`` on excluded pairs).
  """

  marginal_error: jax.Array
  plan_entropy: jax.Array
  positive_mass: jax.Array
  log_plan: jax.Array


# ----------------------------------------------------------------------------
# Argument checks (trace time).


def _concrete(value):
  """``float(value)``, or ``None`` for a traced value (checked by no one)."""
  try:
    return float(value)
  except (TypeError, jax.errors.ConcretizationTypeError):
    return None


def _check_eps(eps) -> None:
  value = _concrete(eps)
  if value is not None and not 0 < value < math.inf:
    raise ValueError(f"eps must be > 0 and finite, got {eps}.")


def check_q(q) -> None:
  value = _concrete(q)
  if value is not None and not 0 < value <= 1:
    raise ValueError(f"q must be in (0, 1], got {q}.")


def _check_nonnegative(name: str, value) -> None:
  concrete = _concrete(value)
  if concrete is not None and not 0 <= concrete < math.inf:
    raise ValueError(f"{name} must be finite and >= 0, got {value}.")


def _check_iters(iters) -> None:
  if isinstance(iters, bool) or not isinstance(iters, int) or iters < 0:
    raise ValueError(f"iters must be an int >= 0, got {iters!r}.")


def _is_one(tau) -> bool:
  """Whether ``tau`` is statically 1 (a balanced side); traced: unknown."""
  return _concrete(tau) == 1.0


def relaxation(rho, eps):
  """``tau = rho / (rho + eps)`` of a KL-relaxed marginal of weight ``rho``.

  ``rho = inf`` is the hard constraint (``tau = 1``, balanced); ``rho`` must
  be > 0 (a concrete value is checked, a traced one is trusted).
  """
  value = _concrete(rho)
  if value is not None:
    if not value > 0:
      raise ValueError(
          f"rho must be > 0 (inf: a balanced marginal), got {rho}.")
    if value == math.inf:
      return 1.0
  return rho / (rho + eps)


def _robust_log_magnitude(eps: float, q: float, lam: float, rows: int):
  """Static log-bound on the similarity-kernel robust term and its gradient.

  Per anchor ``x^q <= exp(q / eps)`` and ``y^q <= (lam N exp(1 / eps))^q``;
  the sum over ``N`` anchors adds ``log N`` and the gradient a factor
  ``1 / eps``.
  """
  return (q * (1.0 / eps + max(0.0, math.log(lam * rows) if lam else 0.0))
          + math.log(rows) + max(0.0, math.log(1.0 / eps)))


def _check_robust_range(eps, q, lam, rows: int, dtype) -> None:
  """Refuses an ``eps`` at which the robust term overflows ``dtype``."""
  eps, q, lam = _concrete(eps), _concrete(q), _concrete(lam)
  if eps is None or q is None or lam is None:
    return  # traced: cannot be checked at trace time
  limit = math.log(float(jnp.finfo(dtype).max))
  if _robust_log_magnitude(eps, q, lam, rows) <= limit:
    return
  low, high = eps, 1.0  # smallest representable eps, by bisection
  while _robust_log_magnitude(high, q, lam, rows) > limit:
    high *= 2.0
  for _ in range(60):
    middle = 0.5 * (low + high)
    if _robust_log_magnitude(middle, q, lam, rows) > limit:
      low = middle
    else:
      high = middle
  step = 10.0 ** (math.floor(math.log10(high)) - 2)  # 3 significant digits,
  smallest = math.ceil(high / step) * step  # rounded up: itself allowed
  raise ValueError(
      f"eps={eps} is too small for the robust (RINCE) term in "
      f"{jnp.dtype(dtype).name}: it grows like exp(q / eps) = exp({q / eps:.4g})"
      f", beyond the dtype's range. Use eps >= {smallest:.3g} (for q={q}, "
      f"lam={lam}, N={rows}), or enable float64 (jax_enable_x64).")


def _log_marginal(marginal, size: int, dtype, name: str,
                  total: int | None = None) -> jax.Array:
  """``"uniform"`` (``1/N``), ``"ones"`` or a positive ``(size,)`` array.

  ``total``: the global ``N`` of a uniform marginal when these are one
  device's ``size`` entries of it (default ``size``). A concrete array must
  be finite and > 0; a traced one is not checked, but an entry that is not
  (negative, zero, NaN or inf) becomes NaN, so the loss is not finite
  instead of silently wrong.
  """
  if isinstance(marginal, str):
    if marginal == "uniform":
      return jnp.full(size, -math.log(total or size), dtype)
    if marginal == "ones":
      return jnp.zeros(size, dtype)
    raise ValueError(
        f"{name} must be one of {MARGINALS} or a ({size},) array, got "
        f"{marginal!r}.")
  if not isinstance(marginal, jax.core.Tracer):
    values = np.asarray(marginal)
    if values.dtype.kind not in "biuf":
      raise TypeError(f"{name} must be a real array, got dtype {values.dtype}.")
    if values.shape == (size,) and not np.all(
        (values > 0) & np.isfinite(values)):
      raise ValueError(f"{name} must be finite and > 0 everywhere.")
  marginal = jnp.asarray(marginal, dtype)
  if marginal.shape != (size,):
    raise ValueError(
        f"{name} must have shape ({size},), got {marginal.shape}.")
  valid = (marginal > 0) & (marginal < jnp.inf)
  return jnp.where(valid, jnp.log(jnp.where(valid, marginal, 1.0)), jnp.nan)


def _check_target_values(target, has_excluded_self_pairs: bool) -> None:
  """A concrete target: real, finite, >= 0, every row naming some pair."""
  values = np.asarray(target)
  if values.dtype.kind not in "biuf":
    raise TypeError(f"target must be a real matrix, got dtype {values.dtype}.")
  if not np.all(np.isfinite(values)):
    raise ValueError("target must be finite (it holds NaN or inf).")
  if np.any(values < 0):
    raise ValueError(
        f"target must be >= 0 everywhere (min {values.min()}).")
  if has_excluded_self_pairs:  # the only exclusions a geometry makes
    values = np.where(np.eye(*values.shape, dtype=bool), 0, values)
  empty = np.flatnonzero(values.sum(axis=1) <= 0)
  if empty.size:
    raise ValueError(
        f"every row of target needs a positive entry off the excluded self "
        f"pairs; rows {empty[:5].tolist()}{' ...' if empty.size > 5 else ''} "
        f"({empty.size} of {values.shape[0]}) have none.")


def _normalized_target(target: Target, geometry: BatchGeometry):
  """``None`` for ``"pairs"``, else ``T̄``: row-normalised, exclusions at 0."""
  if isinstance(target, str):
    if target != "pairs":
      raise ValueError(
          f"target must be 'pairs' or an (N, N) matrix from domain_target / "
          f"class_target, got {target!r}.")
    return None
  if jnp.shape(target) != geometry.cost.shape:
    raise ValueError(
        f"target must have shape {geometry.cost.shape} for this pairing, "
        f"got {jnp.shape(target)}.")
  if not isinstance(target, jax.core.Tracer):
    # Sharded rows: the self pairs sit at traced columns, so an empty row
    # is not checked here (it becomes NaN below, as in a traced target).
    _check_target_values(target, geometry.excluded is not None
                         and geometry.row_index is None)
  target = jnp.asarray(target, geometry.cost.dtype)
  # A traced target is not checked; a negative entry, NaN, inf or an empty
  # row becomes NaN here (fused into the normalisation), and the terms below
  # propagate NaN weights, so a bad target gives a non-finite loss.
  target = jnp.where(target >= 0, target, jnp.nan)
  if geometry.excluded is not None:
    target = jnp.where(geometry.excluded, 0.0, target)
  row_sum = jnp.sum(target, axis=1, keepdims=True)
  return target / jnp.where(row_sum > 0, row_sum, jnp.nan)


def _select_form(form: str, cost_bound: float, eps, dtype) -> str:
  """The numerical form: ``"auto"`` resolved, a forced unsafe one refused.

  ``cost_bound`` is the static bound on ``max C`` (plus the range the
  potentials gain from a shifted kernel). A traced ``eps`` cannot be judged:
  ``"auto"`` then takes the log form and a forced ``"scaling"`` is trusted.
  """
  if form not in projections.FORMS:
    raise ValueError(
        f"form must be one of {projections.FORMS}, got {form!r}.")
  if form == "log":
    return form
  safe = projections.scaling_form_is_safe(cost_bound, eps, dtype)
  if form == "auto":
    return "scaling" if safe else "log"
  if not safe and _concrete(eps) is not None:
    raise ValueError(
        f"form='scaling' is unsafe at eps={eps} in {jnp.dtype(dtype).name}: "
        f"exp(-C / eps) and its scalings leave the float range (static bound "
        f"max C / eps = {cost_bound / float(eps):.4g}). Use form='auto' (which "
        f"picks the log form here) or form='log'.")
  return form


# ----------------------------------------------------------------------------
# The loss terms, on log-potentials.


def _mean_over_rows(values: jax.Array, axis_name) -> jax.Array:
  """The mean of per-row ``values`` over the rows of every device."""
  if axis_name is None:
    return jnp.mean(values)
  count = values.shape[0] * collectives.axis_size(axis_name)
  return collectives.total(values, axis_name) / count


def _at_positives(matrix: jax.Array, positives: jax.Array) -> jax.Array:
  return jnp.take_along_axis(matrix, positives[:, None], axis=1)[:, 0]


def _masked_weighted_sum(weights, log_values):
  """``sum_j w_ij log_values_ij`` with ``0 * -inf`` read as 0 (NaN kept)."""
  return jnp.sum(jnp.where(weights != 0, weights * log_values, 0.0), axis=1)


def _alignment_cross_entropy(log_kernel, log_v, row_lse, positives, target,
                             axis_name=None):
  """``-mean_i sum_j T̄_ij log P̄_ij``; ``log P̄ = M + beta - LSE_j(M + beta)``.

  Row normalisation cancels the row potential, so only ``beta`` enters.
  """
  if target is None:
    log_positive = (_at_positives(log_kernel, positives)
                    + log_v[positives] - row_lse)
    return -_mean_over_rows(log_positive, axis_name)
  log_rows = log_kernel + log_v[None, :] - row_lse[:, None]
  return -_mean_over_rows(_masked_weighted_sum(target, log_rows), axis_name)


def _robust_term(log_kernel, log_u, log_v, positives, target, *, lam, q,
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
    log_x = _at_positives(log_kernel, positives) + log_v[positives]
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
  return _mean_over_rows(-jnp.exp(q * log_x) + jnp.exp(q * log_y),
                         axis_name) / q


def _plan_log_likelihood(log_plan, positives, target, axis_name=None):
  """``-mean_i sum_j T̄_ij log P_ij`` (IOT's loss)."""
  if target is None:
    return -_mean_over_rows(_at_positives(log_plan, positives), axis_name)
  return -_mean_over_rows(_masked_weighted_sum(target, log_plan), axis_name)


def _uniform_negatives_kl(log_plan, axis_name=None, row_index=None):
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


def _diagnostics(log_plan, positives, target, marginal_error,
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
    on_positives = total(_at_positives(plan, positives))
  else:
    on_positives = total(jnp.where(target > 0, plan, 0.0))
  return LossAux(marginal_error, entropy, on_positives, log_plan)


# ----------------------------------------------------------------------------
# The general GCA loss and its presets.


def gca_loss(
    z1: jax.Array,
    z2: jax.Array,
    *,
    eps: float = 0.5,
    iters: int = 10,
    tau_a: float = 1.0,
    tau_b: float = 1.0,
    marginals: Any = "uniform",
    init_log_v: jax.Array | float | None = None,
    final_row_step: bool = False,
    w_ce: float = 1.0,
    w_rince: float = 0.0,
    w_plan: float = 0.0,
    lam: float = 0.01,
    q: float = 0.6,
    rince_kernel: str = "cost",
    lambda_p: float = 0.0,
    pairing: str = "joint",
    self_mask: str = "exclude",
    similarity_floor: float | None = None,
    target: Target = "pairs",
    grad_mode: str = "unroll",
    form: str = "auto",
    return_aux: bool = False,
):
  """Generalized Contrastive Alignment: project the kernel, align the plan.

  ``loss = w_ce * CE(T̄, P̄) + w_rince * RINCE(x, y) + w_plan * (-log P at T)
  + lambda_p * KL(Q || P)``, each term as in the module docstring, with
  ``P = u K v`` the plan after ``iters`` projections of a kernel ``K`` onto
  the (relaxed) marginal constraints ``a`` and ``b``.

  The kernel is ``exp(M) = exp(-C / eps)`` (``rince_kernel="cost"``) or
  ``exp(s) = exp(1 / eps) exp(M)`` (``"similarity"``, eq. (13)). A balanced
  projection gives the same plan from both (only ``u`` is divided by
  ``exp(1 / eps)``, which the robust term sees); a relaxed one (``tau < 1``)
  gives different plans, and every term then uses the plan of ``exp(s)``.

  Args:
    z1, z2: ``(B, D)`` embeddings of the two views.
    eps: entropic regularisation (the temperature), finite and > 0.
    iters: static number of full Sinkhorn iterations, >= 0.
    tau_a, tau_b: marginal relaxations ``rho / (rho + eps)`` in ``(0, 1]``;
      1 is balanced.
    marginals: ``"uniform"`` (``1/N``), ``"ones"``, or a pair ``(a, b)`` of
      finite, positive ``(N,)`` arrays (a single string applies to both).
    init_log_v: starting column potential ``log v`` (scalar or ``(N,)``).
    final_row_step: one more row projection after the iterations gives the
      ``u`` of the robust term (GCA-RINCE; with ``iters=0``: a half step).
    w_ce, w_rince, w_plan, lambda_p: weights of the terms, finite, >= 0.
    lam, q: RINCE's negative weight (>= 0) and exponent ``q in (0, 1]``.
    rince_kernel: ``"cost"`` (``P = u exp(M) v``) or ``"similarity"``
      (``P = u exp(s) v``, eq. (13)); see above.
    pairing, self_mask, similarity_floor: see
      :func:`gca_jax.losses.geometry.batch_geometry`.
    target: ``"pairs"`` or an ``(N, N)`` target plan: finite, >= 0, each
      row with a positive entry off the excluded self pairs.
    grad_mode: ``"unroll"``, ``"implicit"`` or ``"detach"``.
    form: ``"auto"`` (scaling form when safe, else log), ``"log"``,
      ``"scaling"`` (refused where the static bound calls it unsafe).
    return_aux: also return a :class:`LossAux`.

  Returns:
    The scalar loss, or ``(loss, aux)`` with ``return_aux=True``.

  Raises:
    ValueError: for a parameter outside its range (checked at trace time
      when it is concrete; a traced one is trusted), a target or marginal
      with a negative, zero-row, NaN or inf entry, a forced unsafe
      ``form="scaling"``, or an ``eps`` at which the similarity-kernel
      robust term overflows the dtype.
    TypeError: for complex or non-array embeddings.
  """
  return _gca_loss(
      z1, z2, eps=eps, iters=iters, tau_a=tau_a, tau_b=tau_b,
      marginals=marginals, init_log_v=init_log_v,
      final_row_step=final_row_step, w_ce=w_ce, w_rince=w_rince, w_plan=w_plan,
      lam=lam, q=q, rince_kernel=rince_kernel, lambda_p=lambda_p,
      pairing=pairing, self_mask=self_mask, similarity_floor=similarity_floor,
      target=target, grad_mode=grad_mode, form=form, return_aux=return_aux)


def _gca_loss(
    z1: jax.Array,
    z2: jax.Array,
    *,
    eps: float = 0.5,
    iters: int = 10,
    tau_a: float = 1.0,
    tau_b: float = 1.0,
    marginals: Any = "uniform",
    init_log_v: jax.Array | float | None = None,
    final_row_step: bool = False,
    w_ce: float = 1.0,
    w_rince: float = 0.0,
    w_plan: float = 0.0,
    lam: float = 0.01,
    q: float = 0.6,
    rince_kernel: str = "cost",
    lambda_p: float = 0.0,
    pairing: str = "joint",
    self_mask: str = "exclude",
    similarity_floor: float | None = None,
    target: Target = "pairs",
    grad_mode: str = "unroll",
    form: str = "auto",
    return_aux: bool = False,
    axis_name=None,
):
  """:func:`gca_loss` on a batch whose rows are sharded over ``axis_name``
  (``None``: not sharded; see :mod:`gca_jax.losses.sharded`)."""
  _check_eps(eps)
  _check_iters(iters)
  projections.check_relaxation("tau_a", tau_a)
  projections.check_relaxation("tau_b", tau_b)
  for name, weight in (("w_ce", w_ce), ("w_rince", w_rince),
                       ("w_plan", w_plan), ("lambda_p", lambda_p)):
    _check_nonnegative(name, weight)
  if w_rince:
    check_q(q)
    _check_nonnegative("lam", lam)
  if rince_kernel not in ("cost", "similarity"):
    raise ValueError(
        f"rince_kernel must be 'cost' or 'similarity', got {rince_kernel!r}.")
  balanced = _is_one(tau_a) and _is_one(tau_b)
  if grad_mode == "implicit" and w_rince and iters > 0 and balanced:
    # Balanced potentials are defined up to (alpha - c, beta + c); the plan
    # is not, but x and y of the robust term are. The fixed point does not
    # pin c down, so its implicit derivative does not exist.
    raise ValueError(
        "grad_mode='implicit' is undefined for a robust (RINCE) term on a "
        "balanced plan: the term depends on the potentials' free additive "
        "constant, which only the unrolled iterations fix. Use "
        "grad_mode='unroll' or 'detach'.")
  geometry = batch_geometry(z1, z2, pairing=pairing, self_mask=self_mask,
                            similarity_floor=similarity_floor,
                            axis_name=axis_name)
  dtype = geometry.cost.dtype
  rows, cols = geometry.cost.shape  # this device's rows, all columns
  all_rows = (rows if axis_name is None
              else rows * collectives.axis_size(axis_name))
  similarity_kernel = rince_kernel == "similarity"
  if w_rince and similarity_kernel:
    _check_robust_range(eps, q, lam, all_rows, dtype)
  marginal_a, marginal_b = (marginals if isinstance(marginals, (tuple, list))
                            else (marginals, marginals))
  log_a = _log_marginal(marginal_a, rows, dtype, "marginals (a)", all_rows)
  log_b = _log_marginal(marginal_b, cols, dtype, "marginals (b)")
  if init_log_v is not None:
    init_log_v = jnp.broadcast_to(jnp.asarray(init_log_v, dtype), (cols,))
  target = _normalized_target(target, geometry)

  # The kernel exp(s) = c exp(M), c = exp(1/eps). A balanced projection of
  # c K has the potentials of K with alpha lowered by log c, so K is
  # projected and alpha shifted afterwards. A relaxed one has no such
  # shortcut, but iterating on c K with marginals (a, b) is iterating on K
  # with marginals (a / c, b / c): the same potentials, on the same kernel.
  # Those potentials reach 1/eps further, which the form's bound includes.
  log_scale = 1.0 / eps if similarity_kernel else 0.0
  shifted_marginals = similarity_kernel and not balanced
  cost_bound = geometry.cost_bound + (1.0 if shifted_marginals else 0.0)
  form = _select_form(form, cost_bound, eps, dtype)
  log_kernel = geometry.log_kernel(eps)
  if shifted_marginals:
    log_a, log_b = log_a - log_scale, log_b - log_scale

  projection = projections.sinkhorn(
      log_kernel, log_a, log_b, iters=iters, tau_a=tau_a, tau_b=tau_b,
      init_log_v=init_log_v, final_row_step=final_row_step, form=form,
      grad_mode=grad_mode, axis_name=axis_name)
  log_u, log_v = projection.log_u, projection.log_v
  ops = projections.kernel_ops(log_kernel, form)
  positives = geometry.positives

  loss = jnp.zeros((), dtype)
  if w_ce:
    # Row normalisation removes any constant factor of the kernel.
    row_lse = ops.row_lse(log_v)
    loss += w_ce * _alignment_cross_entropy(log_kernel, log_v, row_lse,
                                            positives, target, axis_name)
  if w_rince:
    # Potentials of the kernel c K (see above).
    robust_log_u = log_u if shifted_marginals else log_u - log_scale
    loss += w_rince * _robust_term(log_kernel, robust_log_u, log_v, positives,
                                   target, lam=lam, q=q,
                                   log_kernel_scale=log_scale,
                                   axis_name=axis_name,
                                   row_index=geometry.row_index)
  log_plan = None
  if w_plan or lambda_p or return_aux:
    # u (c K) v: with shifted marginals the potentials are those of c K.
    log_plan = projection.log_plan(log_kernel)
    if shifted_marginals:
      log_plan = log_plan + log_scale
  if w_plan:
    loss += w_plan * _plan_log_likelihood(log_plan, positives, target,
                                          axis_name)
  if lambda_p:
    loss += lambda_p * _uniform_negatives_kl(log_plan, axis_name,
                                             geometry.row_index)
  if not return_aux:
    return loss
  return loss, _diagnostics(log_plan, positives, target,
                            projection.marginal_error, axis_name)


def infonce(z1, z2, *, eps: float = 0.5, pairing: str = "joint",
            self_mask: str = "exclude", similarity_floor=None,
            target: Target = "pairs", return_aux: bool = False):
  """InfoNCE / NT-Xent (Oord et al. 2018; Chen et al. 2020, SimCLR).

  ``-mean_i log softmax_j(s_ij)[t(i)]`` with ``s = S / eps``: the
  cross-entropy between the target rows and the row-normalised kernel, i.e.
  GCA-INCE with no projection (Theorem 1). Computed directly from the logits
  (no projection code), so ``gca_ince(iters=0) == infonce`` is a real check.
  """
  _check_eps(eps)
  geometry = batch_geometry(z1, z2, pairing=pairing, self_mask=self_mask,
                            similarity_floor=similarity_floor)
  target = _normalized_target(target, geometry)
  log_softmax = jax.nn.log_softmax(geometry.log_kernel(eps), axis=1)
  if target is None:
    loss = -jnp.mean(_at_positives(log_softmax, geometry.positives))
  else:
    loss = -jnp.mean(_masked_weighted_sum(target, log_softmax))
  if not return_aux:
    return loss
  return loss, _row_normalized_kernel_aux(log_softmax, geometry, target)


def _row_normalized_kernel_aux(log_softmax, geometry, target) -> LossAux:
  """Diagnostics of the un-projected losses: their plan is the kernel with
  rows normalised (one row projection), whose row marginals are exact."""
  exact = jnp.zeros((1,), log_softmax.dtype)
  return _diagnostics(log_softmax, geometry.positives, target, exact)


def gca_ince(z1, z2, *, eps: float = 0.5, iters: int = 10, **kwargs):
  """GCA-INCE: InfoNCE on the balanced Sinkhorn plan (paper Sec. 3.2).

  ``-mean_i log P̄_{i,t(i)}`` with ``P`` after ``iters`` balanced iterations
  (uniform marginals by default; ``marginals="ones"`` is the published
  code's choice). ``iters=0`` is exactly :func:`infonce` (Theorem 1).
  Other keyword arguments as :func:`gca_loss`.
  """
  return _gca_loss(z1, z2, eps=eps, iters=iters, **kwargs)


def hs_ince(z1, z2, *, eps: float = 0.5, **kwargs):
  """HS-INCE: GCA-INCE with a single row projection (a half step).

  Row normalisation cancels the row potential, so this equals
  :func:`infonce`; it is the starting point of the paper's Theorem 1.
  """
  return _gca_loss(z1, z2, eps=eps, iters=0, final_row_step=True, **kwargs)


def rince(z1, z2, *, eps: float = 0.5, lam: float = 0.01, q: float = 0.6,
          pairing: str = "joint", self_mask: str = "exclude",
          similarity_floor=None, return_aux: bool = False):
  """Robust InfoNCE, paper eq. (2) (Chuang et al. 2022).

  Per anchor, with ``s = S / eps``:
  ``-(1/q) exp(q s_{i,t(i)}) + (1/q) (lam * sum_{j != i} exp(s_ij))^q``.
  Computed directly from the logits; ``gca_rince(iters=0)`` equals it
  (Theorem 2). The loss grows like ``exp(q / eps)``: an ``eps`` at which it
  overflows the dtype is refused, with the smallest allowed ``eps``.
  """
  _check_eps(eps)
  check_q(q)
  _check_nonnegative("lam", lam)
  geometry = batch_geometry(z1, z2, pairing=pairing, self_mask=self_mask,
                            similarity_floor=similarity_floor)
  _check_robust_range(eps, q, lam, geometry.cost.shape[0], geometry.cost.dtype)
  logits = geometry.log_kernel(eps) + 1.0 / eps  # s = (1 - C) / eps
  positive = _at_positives(logits, geometry.positives)
  log_negatives = jnp.log(lam) + jax.nn.logsumexp(logits, axis=1)
  loss = jnp.mean(-jnp.exp(q * positive) + jnp.exp(q * log_negatives)) / q
  if not return_aux:
    return loss
  log_softmax = jax.nn.log_softmax(logits, axis=1)
  return loss, _row_normalized_kernel_aux(log_softmax, geometry, None)


def gca_rince(z1, z2, *, eps: float = 0.5, iters: int = 10,
              lam: float = 0.01, q: float = 0.6, **kwargs):
  """GCA-RINCE, paper eq. (13).

  ``v`` from ``iters`` balanced iterations on the kernel ``exp(s)`` with all
  marginals 1, then one row projection gives ``u``; ``x_i = exp(s_{i,t(i)})
  v_{t(i)}``, ``y_i = lam / u_i = lam sum_{j != i} exp(s_ij) v_j``, loss
  ``mean_i (-(x_i^q) + y_i^q) / q``. ``iters=0`` equals :func:`rince`
  (Theorem 2). With ``tau_a``/``tau_b`` < 1 the iterations (and the final
  row step) are the relaxed ones on the same kernel ``exp(s)``, e.g.
  ``u = (1 / (exp(s) v))^tau_a``. Other keyword arguments as
  :func:`gca_loss`; ``eps`` must keep ``exp(q / eps)`` inside the dtype
  (refused otherwise, with the smallest allowed ``eps``).
  """
  kwargs.setdefault("marginals", "ones")
  return _gca_loss(z1, z2, eps=eps, iters=iters, final_row_step=True,
                   w_ce=0.0, w_rince=1.0, lam=lam, q=q,
                   rince_kernel="similarity", **kwargs)


def hs_rince(z1, z2, *, eps: float = 0.5, lam: float = 0.01, q: float = 0.6,
             **kwargs):
  """HS-RINCE: GCA-RINCE with a single row projection (equals :func:`rince`)."""
  return gca_rince(z1, z2, eps=eps, iters=0, lam=lam, q=q, **kwargs)


def gca_uot(z1, z2, *, eps: float = 0.5, iters: int = 10,
            rho_a: float = 0.2, rho_b: float = 0.2, lam: float = 0.01,
            q: float = 0.6, w_ce: float = 1.0, w_rince: float = 0.02,
            **kwargs):
  """GCA-UOT: alignment with an unbalanced (KL-relaxed) plan (paper Sec. 3.3).

  ``iters`` unbalanced iterations with ``tau_a = rho_a / (rho_a + eps)``,
  ``tau_b = rho_b / (rho_b + eps)`` on ``K = exp(-C / eps)`` with uniform
  marginals ``1/N`` (the scale of the published code). The loss is
  ``w_ce * (-mean_i log P̄_{i,t(i)}) + w_rince * mean_i (-(x_i^q) + y_i^q)/q``
  with ``x_i = P_{i,t(i)} / u_i = K_{i,t(i)} v_{t(i)}`` and
  ``y_i = lam / u_i``, ``u, v`` the scalings of the last iteration. Defaults
  are the paper's: relaxations 0.2, CE weight 1, RINCE weight 0.02.
  ``rho = inf`` is a hard (balanced) marginal, ``tau = 1``.
  """
  _check_eps(eps)
  taus = []
  for name, rho in (("rho_a", rho_a), ("rho_b", rho_b)):
    try:
      taus.append(relaxation(rho, eps))
    except ValueError:
      raise ValueError(
          f"{name} must be > 0 (inf: a balanced marginal), got {rho}."
      ) from None
  return _gca_loss(z1, z2, eps=eps, iters=iters, tau_a=taus[0], tau_b=taus[1],
                   lam=lam, q=q, w_ce=w_ce, w_rince=w_rince, **kwargs)


def iot(z1, z2, *, eps: float = 0.5, iters: int = 10, **kwargs):
  """Inverse optimal transport (Shi et al. 2023).

  ``iters`` rounds of row then column normalisation of ``K`` (balanced
  Sinkhorn with unit marginals) and ``-mean_i log P_{i,t(i)}``: the plan
  itself, not its row-normalisation, is fitted to the positives.
  """
  kwargs.setdefault("marginals", "ones")
  return _gca_loss(z1, z2, eps=eps, iters=iters, w_ce=0.0, w_plan=1.0,
                   **kwargs)


def iot_uni(z1, z2, *, eps: float = 0.5, iters: int = 10,
            lambda_p: float = 0.2, **kwargs):
  """IOT-uni: :func:`iot` plus ``lambda_p * KL(Q || P)`` (Shi et al. 2023).

  ``KL(Q || P) = mean_ij Q_ij (log Q_ij - log P_ij)`` over all ``N^2``
  entries, where ``Q`` keeps the plan's diagonal ``P_ii`` and replaces every
  off-diagonal entry by their mean. What the diagonal is depends on the
  pairing:

  * ``pairing="cross"``: the diagonal holds the positives, so ``Q`` keeps
    them and spreads only the negatives; the term rewards uniform negatives.
  * ``pairing="joint"`` (the default, and the published code): the
    diagonal holds the self pairs (0 when excluded; ``Q = P`` there with
    ``self_mask="max_cost"``), and the positives ``(i, t(i))`` are
    off-diagonal, so ``Q`` spreads them with the negatives: the term pulls
    the plan towards uniform over all non-self pairs, positives included,
    and the ``-log P`` term alone pulls mass onto the positives.
  """
  kwargs.setdefault("marginals", "ones")
  return _gca_loss(z1, z2, eps=eps, iters=iters, w_ce=0.0, w_plan=1.0,
                   lambda_p=lambda_p, **kwargs)


def byol(p1: jax.Array, p2: jax.Array, t1: jax.Array, t2: jax.Array):
  """BYOL's loss (Grill et al. 2020), symmetrised over the two views.

  ``mean_k [2 - 2 cos(p1_k, sg(t2_k))] + [2 - 2 cos(p2_k, sg(t1_k))]``: the
  online prediction of each view regresses the target projection of the
  other; the target receives no gradient.
  """
  check_pair(p1, p2, names=("p1", "p2"))
  check_pair(t1, t2, names=("t1", "t2"))
  if p1.shape != t1.shape:
    raise ValueError(
        f"predictions and targets must have the same shape, got {p1.shape} "
        f"and {t1.shape}.")
  dtype = compute_dtype(jnp.result_type(p1, t1))

  def regression(p, t):
    p = l2_normalize(p.astype(dtype))
    t = l2_normalize(jax.lax.stop_gradient(t).astype(dtype))
    return jnp.mean(2.0 - 2.0 * jnp.sum(p * t, axis=-1))

  return regression(p1, t2) + regression(p2, t1)
