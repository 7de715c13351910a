"""The problem a GCA loss solves on its batch: marginals, relaxations, target.

As ott-jax keeps its problems (``a``, ``b``, ``tau_a``, ``tau_b``) apart
from its geometries and solvers, this module turns a loss's arguments into
what the projection needs besides the kernel (the log-marginals, the
relaxations, a starting column potential) and what the terms compare the
plan with (the row-normalised target ``T̄``), checked against the batch
geometry (:mod:`gca_jax.losses.geometry`). :func:`alignment_problem` builds
it; the projection (:func:`gca_jax.losses.sinkhorn`) and the terms
(:mod:`gca_jax.losses.terms`) use it.

A concrete argument out of range fails at once with one line; a traced
marginal or target entry out of range becomes NaN, so the loss is not
finite instead of silently wrong.

Examples:
  >>> import jax.numpy as jnp
  >>> from gca_jax.losses import problem
  >>> problem.log_marginal("uniform", 4, jnp.float32, "a")  # log(1/4)
  Array([-1.3862944, -1.3862944, -1.3862944, -1.3862944], dtype=float32)
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gca_jax.losses import collectives
from gca_jax.losses.arguments import concrete, is_one, nan_unless
from gca_jax.losses.geometry import BatchGeometry
from gca_jax.losses.targets import LabelTarget

MARGINALS = ("uniform", "ones")
Target = Any  # "pairs", an (N, N) array or a LabelTarget


class Problem(NamedTuple):
  """What a GCA loss projects and aligns, besides the kernel.

  Attributes:
    log_a: ``(n,)`` row log-marginal (this device's rows when sharded).
    log_b: ``(M,)`` column log-marginal.
    tau_a, tau_b: the relaxations, in ``(0, 1]`` (1: balanced).
    init_log_v: ``(M,)`` starting column potential, or ``None`` (0).
    target: ``T̄``, the row-normalised target with its excluded pairs at 0,
      or ``None`` for the positives ``t(i)``.
    log_kernel_scale: ``log c`` of the kernel ``c K`` the terms see
      (``1 / eps`` for the similarity kernel ``exp(s)``, else 0).
    shifted_marginals: whether ``log_a, log_b`` are lowered by ``log c``
      (a relaxed projection of ``c K``, see :func:`alignment_problem`).
  """

  log_a: jax.Array
  log_b: jax.Array
  tau_a: Any
  tau_b: Any
  init_log_v: jax.Array | None
  target: jax.Array | None
  log_kernel_scale: Any
  shifted_marginals: bool


def global_rows(geometry: BatchGeometry, axis_name=None) -> int:
  """``N``, the rows of the whole plan (every device's when sharded)."""
  rows = geometry.shape[0]
  return rows if axis_name is None else rows * collectives.axis_size(axis_name)


def alignment_problem(geometry: BatchGeometry, *, eps, iters: int, tau_a, tau_b,
                      marginals, init_log_v, target: Target,
                      similarity_kernel: bool, pairing: str = "joint",
                      axis_name=None) -> Problem:
  """The problem of a GCA loss on ``geometry`` (arguments as the loss's).

  ``similarity_kernel``: the terms use the kernel ``exp(s) = c exp(M)``,
  ``c = exp(1 / eps)``, instead of ``exp(M)``. A balanced projection of
  ``c K`` has the potentials of ``K`` with ``alpha`` lowered by ``log c``,
  so ``K`` is projected and the terms shift ``alpha`` afterwards. A relaxed
  one has no such shortcut, but iterating on ``c K`` with marginals
  ``(a, b)`` is iterating on ``K`` with marginals ``(a / c, b / c)``: the
  same potentials, on the same kernel; those marginals are the problem's
  (``shifted_marginals``).

  ``geometry`` is a :class:`BatchGeometry` or, for the tiled kernel, a
  :class:`~gca_jax.losses.tiled.TiledKernel`, whose target is kept as labels
  (:func:`gca_jax.losses.tiled.tile_target`).
  """
  dtype = geometry.dtype
  rows, cols = geometry.shape  # this device's rows, all columns
  all_rows = global_rows(geometry, axis_name)
  marginal_a, marginal_b = (marginals if isinstance(marginals, (tuple, list))
                            else (marginals, marginals))
  log_a = log_marginal(marginal_a, rows, dtype, "marginals (a)", all_rows)
  log_b = log_marginal(marginal_b, cols, dtype, "marginals (b)")
  if iters > 0:  # with no column step the masses need not match
    log_a, log_b = check_balanced_masses(
        log_a, log_b, (marginal_a, marginal_b), tau_a, tau_b, all_rows,
        axis_name)
  if init_log_v is not None:
    init_log_v = jnp.broadcast_to(jnp.asarray(init_log_v, dtype), (cols,))
  if isinstance(geometry, BatchGeometry):
    target = normalized_target(target, geometry, pairing=pairing, axis_name=axis_name)
  else:
    target = tile_target(target, geometry, axis_name)
  log_kernel_scale = 1.0 / eps if similarity_kernel else 0.0
  shifted_marginals = similarity_kernel and not (is_one(tau_a) and is_one(tau_b))
  if shifted_marginals:
    log_a, log_b = log_a - log_kernel_scale, log_b - log_kernel_scale
  return Problem(log_a, log_b, tau_a, tau_b, init_log_v, target,
                 log_kernel_scale, shifted_marginals)


def log_marginal(marginal, size: int, dtype, name: str,
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


def _static_mass(marginal, size: int):
  """Total mass of a marginal known at trace time, else ``None``."""
  if isinstance(marginal, str):
    return 1.0 if marginal == "uniform" else float(size)
  if isinstance(marginal, jax.core.Tracer):
    return None
  return float(np.sum(np.asarray(marginal, np.float64)))


def check_balanced_masses(log_a, log_b, marginals, tau_a, tau_b, rows: int,
                          axis_name=None):
  """``(log_a, log_b)``, checked against each other for a balanced plan.

  A plan with both marginals hard (``tau_a = tau_b = 1``) exists only if
  ``sum a = sum b``; otherwise each iteration moves the potentials by the
  log of the ratio and they leave the float range after some iterations.
  Concrete marginals of a balanced plan with unequal masses are refused;
  when a marginal or a relaxation is traced, both become NaN instead (at
  once, not after the drift; ``log_b`` too because it reaches the loss
  without passing an ``exp``, which XLA's CPU kernels do not always keep
  NaN through). The masses may differ by the square root
  of the dtype's resolution (sums computed in a different order). ``rows``:
  the global number of rows; ``marginals``: the pair as given.
  """
  if not all(concrete(tau) in (None, 1.0) for tau in (tau_a, tau_b)):
    return log_a, log_b  # a relaxed side absorbs any difference of mass
  rtol = float(np.sqrt(jnp.finfo(log_a.dtype).eps))
  mass_a = _static_mass(marginals[0], rows) if axis_name is None or isinstance(
      marginals[0], str) else None
  mass_b = _static_mass(marginals[1], log_b.shape[0])
  if None not in (mass_a, mass_b, concrete(tau_a), concrete(tau_b)):
    if not math.isclose(mass_a, mass_b, rel_tol=rtol):
      raise ValueError(
          f"marginals of a balanced plan (tau_a = tau_b = 1) must have equal "
          f"total mass, got sum a = {mass_a:.6g} and sum b = {mass_b:.6g}; "
          f"rescale one, or relax a side (tau < 1).")
    return log_a, log_b
  row_mass = (jnp.sum(jnp.exp(log_a)) if axis_name is None
              else collectives.total(jnp.exp(log_a), axis_name))
  column_mass = jnp.sum(jnp.exp(log_b))
  equal = jnp.abs(row_mass - column_mass) <= rtol * jnp.maximum(row_mass,
                                                                column_mass)
  relaxed = (jnp.asarray(tau_a) != 1) | (jnp.asarray(tau_b) != 1)
  valid = equal | relaxed
  return nan_unless(valid, log_a), nan_unless(valid, log_b)


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


def normalized_target(target: Target, geometry: BatchGeometry, *,
                      pairing: str = "joint", axis_name=None):
  """``None`` for ``"pairs"``, else ``T̄``: row-normalised, exclusions at 0.

  A :class:`~gca_jax.losses.targets.LabelTarget` is first built as its
  matrix for ``pairing`` (this device's rows with ``axis_name``).
  """
  if isinstance(target, LabelTarget):
    target = target.matrix(pairing=pairing, dtype=geometry.dtype,
                           axis_name=axis_name)
  if isinstance(target, str):
    if target != "pairs":
      raise ValueError(
          f"target must be 'pairs' or an (N, N) matrix from domain_target / "
          f"class_target, got {target!r}.")
    return None
  if jnp.shape(target) != geometry.shape:
    raise ValueError(
        f"target must have shape {geometry.shape} for this pairing, "
        f"got {jnp.shape(target)}.")
  if not isinstance(target, jax.core.Tracer):
    # Sharded rows: the self pairs sit at traced columns, so an empty row
    # is not checked here (it becomes NaN below, as in a traced target).
    _check_target_values(target, geometry.excluded is not None
                         and geometry.row_index is None)
  target = jnp.asarray(target, geometry.dtype)
  # A traced target is not checked; a negative entry, NaN, inf or an empty
  # row becomes NaN here (fused into the normalisation), and the terms below
  # propagate NaN weights, so a bad target gives a non-finite loss.
  target = jnp.where(target >= 0, target, jnp.nan)
  if geometry.excluded is not None:
    target = jnp.where(geometry.excluded, 0.0, target)
  row_sum = jnp.sum(target, axis=1, keepdims=True)
  return target / jnp.where(row_sum > 0, row_sum, jnp.nan)


class TileTarget(NamedTuple):
  """The labels of a block target laid out on this device's rows and all columns.

  ``T_ij``: 1 at the positive, ``weights[l]`` where ``l`` is the finest
  level whose labels agree, else ``beta``; 0 on self pairs (the loss
  row-normalises it).

  Attributes:
    row_labels: ``(n, L)`` labels of this device's rows, finest first.
    col_labels: ``(N, L)`` labels of the columns.
    weights: ``(L,)`` weight of each level.
    beta: weight of pairs that share no level.
  """

  row_labels: jax.Array
  col_labels: jax.Array
  weights: jax.Array
  beta: jax.Array


def tile_target(target: Target, kernel, axis_name=None):
  """``None`` for ``"pairs"``, else the :class:`TileTarget` of a
  :class:`~gca_jax.losses.targets.LabelTarget`, laid out on the rows and
  columns of ``kernel`` (a :class:`~gca_jax.losses.tiled.TiledKernel`, whose
  self pairs say the pairing: only the joint one has them); a matrix is
  refused (it is the ``N x N`` array that ``tile_size`` avoids)."""
  pairing = "cross" if kernel.self_columns is None else "joint"
  if isinstance(target, str):
    if target != "pairs":
      raise ValueError(
          f"target must be 'pairs' or a LabelTarget (a target builder with "
          f"as_labels=True), got {target!r}.")
    return None
  if not isinstance(target, LabelTarget):
    raise ValueError(
        "a matrix target is not available with tile_size (it is the N x N "
        "array tiles avoid); build it from labels: domain_target(..., "
        "as_labels=True), class_target(..., as_labels=True) or "
        "hierarchical_target(..., as_labels=True).")
  levels = jnp.asarray(target.levels)
  batch = kernel.rows.shape[0] // (2 if pairing == "joint" else 1)
  if levels.ndim != 2 or levels.shape[1] != batch:
    raise ValueError(
        f"target labels must have shape (L, {batch}) for this batch, got "
        f"{levels.shape}.")
  dtype = kernel.rows.dtype
  # A traced negative weight (a checked concrete one never is) makes the
  # loss NaN, as a negative entry of a matrix target does.
  weights, beta = (jnp.asarray(value, dtype) for value in (target.weights,
                                                          target.beta))
  weights = jnp.where(weights >= 0, weights, jnp.nan)
  beta = jnp.where(beta >= 0, beta, jnp.nan)
  columns = levels if axis_name is None else collectives.gather(
      levels.T, axis_name).T
  if pairing == "joint":
    levels = jnp.concatenate([levels, levels], axis=1)
    columns = jnp.concatenate([columns, columns], axis=1)
  return TileTarget(levels.T, columns.T, weights, beta)
