"""Contrastive losses as distribution alignment.

Every loss here is a pure function of the two views' embeddings ``z1, z2``
(``(B, D)``, row ``k`` of each from sample ``k``; a stacked ``(2B, D)`` array
is ``z1, z2 = jnp.split(z, 2)``) returning a scalar, the mean over anchors.
The GCA losses are presets of one function, :func:`gca_loss`, which reads as
the pipeline it runs: check the arguments, build the batch geometry
(:mod:`gca_jax.losses.geometry`), the problem (marginals, relaxations and
target: :mod:`gca_jax.losses.problem`), project the kernel
(:mod:`gca_jax.losses.projections`), and add up the terms comparing the
plan with the target (:mod:`gca_jax.losses.terms`). ``docs/losses.md``
states the whole contract in one place. Reference: Chen, Lin, Liu, Xiao,
Dyer, "Your contrastive learning problem is secretly a distribution
alignment problem", NeurIPS 2024 (Chen et al. 2024; "the paper").

Notation: ``s = S / eps`` (scaled cosine similarity; ``eps`` is exactly the
temperature), ``M = -C / eps`` (log-kernel), ``t(i)`` the positive of anchor
``i``, ``P̄`` the plan with each row divided by its sum, ``u = exp(alpha)``,
``v = exp(beta)`` the scalings.

Each loss is written as a function with its own signature and docstring;
:func:`~gca_jax.losses.arguments.public_loss` gives it one clear
``TypeError`` for a keyword it does not take (``eps`` suggested for a
temperature under another name) or a traced option that must be static
under :func:`jax.jit`. Each is written with a last keyword ``axis_name``
that its public signature does not show: the row-sharded loss of the same
name in :mod:`gca_jax.losses.sharded` passes it (:func:`gca_loss` shows
it).

Numerics: the projection runs in the exp-domain ``"scaling"`` form (one
matrix-vector product per half step) when
:func:`~gca_jax.losses.arguments.scaling_form_is_safe` says ``max C / eps``
is small enough for the dtype (``eps >= 2/35 ≈ 0.057`` in float32 for
normalised embeddings), and in the log domain otherwise, so a finite input
never gives NaN or inf. All other quantities are formed from log-potentials.
Two limits of the float range remain:

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
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from gca_jax.losses import arguments, problem, projections, terms, tiled
from gca_jax.losses.geometry import batch_geometry, check_pair, compute_dtype, l2_normalize
from gca_jax.losses.problem import Target
from gca_jax.losses.terms import LossAux

__all__ = [
    "CONTRASTIVE_LOSSES", "LossAux", "byol", "gca_ince", "gca_loss", "gca_rince",
    "gca_uot", "get", "hs_ince", "hs_rince", "infonce", "iot", "iot_uni", "rince",
]


@arguments.public_loss(axis_name_public=True)
def gca_loss(z1: jax.Array, z2: jax.Array, *, eps: float = 0.5, iters: int = 10,
             tau_a: float = 1.0, tau_b: float = 1.0, marginals: Any = "uniform",
             init_log_v: jax.Array | float | None = None, final_row_step: bool = False,
             w_ce: float = 1.0, w_rince: float = 0.0, w_plan: float = 0.0, lam: float = 0.01,
             q: float = 0.6, rince_kernel: str = "cost", lambda_p: float = 0.0,
             pairing: str = "joint", self_mask: str = "exclude",
             similarity_floor: float | None = None, target: Target = "pairs",
             grad_mode: str = "unroll", form: str = "auto", tile_size: int | None = None,
             return_aux: bool = False,
             axis_name=None):
  """Generalized Contrastive Alignment: project the kernel, align the plan.

  ``loss = w_ce * CE(T̄, P̄) + w_rince * RINCE(x, y) + w_plan * (-log P at T)
  + lambda_p * KL(Q || P)``, each term as in :mod:`gca_jax.losses.terms`, with
  ``P = u K v`` the plan after ``iters`` projections of a kernel ``K`` onto
  the (relaxed) marginal constraints ``a`` and ``b`` (Chen et al. 2024).

  The kernel is ``exp(M) = exp(-C / eps)`` (``rince_kernel="cost"``) or
  ``exp(s) = exp(1 / eps) exp(M)`` (``"similarity"``, eq. (13)). A balanced
  projection gives the same plan from both (only ``u`` is divided by
  ``exp(1 / eps)``, which the robust term sees); a relaxed one (``tau < 1``)
  gives different plans, and every term then uses the plan of ``exp(s)``.

  Args:
    z1, z2: ``(B, D)`` embeddings of the two views, row ``k`` of each from sample
      ``k`` (a stacked ``(2B, D)`` array is ``z1, z2 = jnp.split(z, 2)``).
    eps: the temperature, exactly: logits are ``s = S / eps`` and the kernel
      ``exp(-C / eps)``; finite and > 0.
    iters: static number of full (row then column) Sinkhorn iterations, an int >= 0
      (under ``jax.jit``: a static argument).
    tau_a: row-marginal relaxation in ``(0, 1]`` (1: balanced; ``rho / (rho + eps)``
      for a KL-relaxed marginal of weight ``rho``).
    tau_b: column-marginal relaxation, as ``tau_a``.
    marginals: ``"uniform"`` (``1/N``), ``"ones"``, or a pair ``(a, b)`` of finite,
      positive ``(N,)`` arrays (a single string applies to both).
    init_log_v: starting column potential ``log v`` (scalar or ``(N,)``; ``None``:
      0).
    final_row_step: one more row projection after the iterations gives the ``u`` of
      the robust term (with ``iters=0``: a half step).
    w_ce: weight of the alignment cross-entropy, finite and >= 0.
    w_rince: weight of the robust (RINCE) term, finite and >= 0.
    w_plan: weight of the plan log-likelihood (IOT), finite and >= 0.
    lam: RINCE's weight of the negatives, finite and >= 0.
    q: RINCE's exponent, in ``(0, 1]``.
    rince_kernel: ``"cost"`` (``P = u exp(M) v``) or ``"similarity"`` (``P = u
      exp(s) v``, eq. (13)).
    lambda_p: weight of IOT-uni's ``KL(Q || P)``, finite and >= 0.
    pairing: ``"joint"`` (both views stacked, ``N = 2B``) or ``"cross"`` (``z1``
      against ``z2``, ``N = B``).
    self_mask: self pairs of the joint pairing: ``"exclude"``, ``"max_cost"`` or
      ``"lowered"`` (see :func:`~gca_jax.losses.batch_geometry`).
    similarity_floor: ``None``, or a floor on the cosine similarity.
    target: ``"pairs"`` (each row's positive) or an ``(N, N)`` target plan
      (:func:`~gca_jax.losses.domain_target`, :func:`~gca_jax.losses.class_target`):
      finite, >= 0, each row with a positive entry off the excluded self pairs.
    grad_mode: ``"unroll"`` (through the iterations), ``"implicit"`` (at the fixed
      point) or ``"detach"`` (potentials held constant).
    form: ``"auto"`` (the scaling form when safe, else log), ``"log"`` or
      ``"scaling"`` (refused where the static bound calls it unsafe).
    tile_size: ``None`` (the ``N x N`` kernel is materialised) or an int >= 1: the
      kernel is recomputed ``tile_size`` rows at a time in the forward and backward
      passes, so memory is linear in ``N`` (:mod:`gca_jax.losses.tiled`; a static
      argument under ``jax.jit``). Targets are then given as labels
      (``as_labels=True``) and ``aux.log_plan`` is ``None``.
    return_aux: also return a :class:`~gca_jax.losses.LossAux` of the plan.
    axis_name: ``None`` (one device), or, inside :func:`jax.shard_map`, the mesh
      axis the batch's rows are sharded over (see :mod:`gca_jax.losses.sharded`).

  Returns:
    The scalar loss, or ``(loss, aux)`` with ``return_aux=True``.

  Raises:
    ValueError: for a concrete parameter outside its range (a traced one makes the
      loss NaN), a concrete marginal with a zero, negative, NaN or inf entry,
      balanced marginals of unequal mass, a concrete target with a negative, NaN or
      inf entry or a row with no positive entry, a forced unsafe ``form="scaling"``,
      ``grad_mode="implicit"`` with a robust term on a balanced plan, or an ``eps``
      at which the similarity-kernel robust term overflows the dtype.
    TypeError: for an unknown keyword (with the accepted ones; ``eps`` for a
      temperature under another name), a traced static option under :func:`jax.jit`,
      or complex or non-array embeddings.

  Examples:
    >>> import jax
    >>> from gca_jax import losses
    >>> z1, z2 = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 16))
    >>> print(f"{float(losses.gca_loss(z1, z2)):.4f}")
    2.7442
  """
  # The arguments: a concrete one out of range fails here, in one line.
  eps = arguments.check_eps(eps)
  iters = arguments.check_iters(iters)
  tau_a = arguments.check_relaxation("tau_a", tau_a)
  tau_b = arguments.check_relaxation("tau_b", tau_b)
  loss_terms = terms.check_terms(w_ce=w_ce, w_rince=w_rince, w_plan=w_plan,
                                 lambda_p=lambda_p, lam=lam, q=q,
                                 rince_kernel=rince_kernel)
  _check_implicit_robust_term(grad_mode, loss_terms, iters, tau_a, tau_b)
  # The batch geometry (materialised, or recomputed tile by tile), and the
  # problem on it.
  if tile_size is None:
    geometry = batch_geometry(z1, z2, pairing=pairing, self_mask=self_mask,
                              similarity_floor=similarity_floor, axis_name=axis_name)
  else:
    tile_size = tiled.check_tile_size(tile_size, form)
    geometry = tiled.tiled_kernel(z1, z2, eps, pairing=pairing, self_mask=self_mask,
                                  similarity_floor=similarity_floor, axis_name=axis_name)
  if loss_terms.has_rince and loss_terms.similarity_kernel:
    arguments.check_robust_range(eps, loss_terms.q, loss_terms.lam,
                                 problem.global_rows(geometry, axis_name), geometry.dtype)
  alignment = problem.alignment_problem(
      geometry, eps=eps, iters=iters, tau_a=tau_a, tau_b=tau_b, marginals=marginals,
      init_log_v=init_log_v, target=target,
      similarity_kernel=loss_terms.similarity_kernel, pairing=pairing,
      axis_name=axis_name)
  if tile_size is not None:
    return tiled.align(loss_terms, geometry, alignment, iters=iters,
                       final_row_step=final_row_step, grad_mode=grad_mode,
                       tile_size=tile_size, return_aux=return_aux, axis_name=axis_name)
  # The projection, in the numerical form the static bound allows (the
  # potentials of shifted marginals reach 1/eps further); then the terms.
  cost_bound = geometry.cost_bound + (1.0 if alignment.shifted_marginals else 0.0)
  form = arguments.select_form(form, cost_bound, eps, geometry.dtype)
  log_kernel = geometry.log_kernel(eps)
  projection = projections.sinkhorn(
      log_kernel, alignment.log_a, alignment.log_b, iters=iters, tau_a=tau_a,
      tau_b=tau_b, init_log_v=alignment.init_log_v, final_row_step=final_row_step,
      form=form, grad_mode=grad_mode, axis_name=axis_name)
  return terms.assemble(loss_terms, log_kernel, form, projection, geometry, alignment,
                        return_aux=return_aux, axis_name=axis_name)


@arguments.public_loss
def infonce(z1: jax.Array, z2: jax.Array, *, eps: float = 0.5, pairing: str = "joint",
            self_mask: str = "exclude", similarity_floor: float | None = None,
            target: Target = "pairs", tile_size: int | None = None,
            return_aux: bool = False, axis_name=None):
  """InfoNCE / NT-Xent (Oord et al. 2018; Chen et al. 2020, SimCLR).

  ``-mean_i log softmax_j(s_ij)[t(i)]`` with ``s = S / eps``: the
  cross-entropy between the target rows and the row-normalised kernel, i.e.
  GCA-INCE with no projection (Theorem 1). Computed directly from the logits
  (no projection code), so ``gca_ince(iters=0) == infonce`` is a real check.

  Args:
    z1, z2: ``(B, D)`` embeddings of the two views, row ``k`` of each from sample
      ``k`` (a stacked ``(2B, D)`` array is ``z1, z2 = jnp.split(z, 2)``).
    eps: the temperature, exactly: logits are ``s = S / eps`` and the kernel
      ``exp(-C / eps)``; finite and > 0.
    pairing: ``"joint"`` (both views stacked, ``N = 2B``) or ``"cross"`` (``z1``
      against ``z2``, ``N = B``).
    self_mask: self pairs of the joint pairing: ``"exclude"``, ``"max_cost"`` or
      ``"lowered"`` (see :func:`~gca_jax.losses.batch_geometry`).
    similarity_floor: ``None``, or a floor on the cosine similarity.
    target: ``"pairs"`` (each row's positive) or an ``(N, N)`` target plan
      (:func:`~gca_jax.losses.domain_target`, :func:`~gca_jax.losses.class_target`):
      finite, >= 0, each row with a positive entry off the excluded self pairs.
    tile_size: ``None`` (the ``N x N`` kernel is materialised) or an int >= 1: the
      kernel is recomputed ``tile_size`` rows at a time in the forward and backward
      passes, so memory is linear in ``N`` (:mod:`gca_jax.losses.tiled`; a static
      argument under ``jax.jit``). Targets are then given as labels
      (``as_labels=True``) and ``aux.log_plan`` is ``None``.
    return_aux: also return a :class:`~gca_jax.losses.LossAux` of the plan.

  Returns:
    The scalar loss, or ``(loss, aux)`` with ``return_aux=True``.

  Raises:
    ValueError: for a concrete parameter outside its range (a traced one makes the
      loss NaN), or a concrete target with a negative, NaN or inf entry or a row
      with no positive entry.
    TypeError: for an unknown keyword (with the accepted ones; ``eps`` for a
      temperature under another name), a traced static option under :func:`jax.jit`,
      or complex or non-array embeddings.

  Examples:
    >>> import jax
    >>> from gca_jax import losses
    >>> z1, z2 = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 16))
    >>> print(f"{float(losses.infonce(z1, z2)):.4f}")
    2.7496
  """
  if axis_name is not None or tile_size is not None:
    # Sharded rows or tiles: a single row projection with marginals 1
    # (hs_ince, equal to InfoNCE by Theorem 1) has the collectives the rows
    # need and the tiled kernel's operators.
    return _with_exact_row_marginals(hs_ince.with_axis_name(
        z1, z2, eps=eps, marginals="ones", pairing=pairing, self_mask=self_mask,
        similarity_floor=similarity_floor, target=target, tile_size=tile_size,
        return_aux=return_aux, axis_name=axis_name), return_aux)
  eps = arguments.check_eps(eps)
  geometry = batch_geometry(z1, z2, pairing=pairing, self_mask=self_mask,
                            similarity_floor=similarity_floor)
  target = problem.normalized_target(target, geometry, pairing=pairing)
  log_softmax = jax.nn.log_softmax(geometry.log_kernel(eps), axis=1)
  if target is None:
    loss = -jnp.mean(terms.at_positives(log_softmax, geometry.positives))
  else:
    loss = -jnp.mean(terms.masked_weighted_sum(target, log_softmax))
  if not return_aux:
    return loss
  return loss, terms.row_normalized_kernel_aux(log_softmax, geometry, target)


@arguments.public_loss
def gca_ince(z1: jax.Array, z2: jax.Array, *, eps: float = 0.5, iters: int = 10,
             tau_a: float = 1.0, tau_b: float = 1.0, marginals: Any = "uniform",
             init_log_v: jax.Array | float | None = None, final_row_step: bool = False,
             w_ce: float = 1.0, w_rince: float = 0.0, w_plan: float = 0.0, lam: float = 0.01,
             q: float = 0.6, rince_kernel: str = "cost", lambda_p: float = 0.0,
             pairing: str = "joint", self_mask: str = "exclude",
             similarity_floor: float | None = None, target: Target = "pairs",
             grad_mode: str = "unroll", form: str = "auto", tile_size: int | None = None,
             return_aux: bool = False,
             axis_name=None):
  """GCA-INCE: InfoNCE on the balanced Sinkhorn plan.

  Chen et al. 2024, Section 3.2: ``-mean_i log P̄_{i,t(i)}`` with ``P`` after
  ``iters`` balanced iterations (uniform marginals by default;
  ``marginals="ones"`` is the published code's choice). ``iters=0`` is exactly
  :func:`infonce` (Theorem 1).

  Args:
    z1, z2: ``(B, D)`` embeddings of the two views, row ``k`` of each from sample
      ``k`` (a stacked ``(2B, D)`` array is ``z1, z2 = jnp.split(z, 2)``).
    eps: the temperature, exactly: logits are ``s = S / eps`` and the kernel
      ``exp(-C / eps)``; finite and > 0.
    iters: static number of full (row then column) Sinkhorn iterations, an int >= 0
      (under ``jax.jit``: a static argument).
    tau_a: row-marginal relaxation in ``(0, 1]`` (1: balanced; ``rho / (rho + eps)``
      for a KL-relaxed marginal of weight ``rho``).
    tau_b: column-marginal relaxation, as ``tau_a``.
    marginals: ``"uniform"`` (``1/N``), ``"ones"``, or a pair ``(a, b)`` of finite,
      positive ``(N,)`` arrays (a single string applies to both).
    init_log_v: starting column potential ``log v`` (scalar or ``(N,)``; ``None``:
      0).
    final_row_step: one more row projection after the iterations gives the ``u`` of
      the robust term (with ``iters=0``: a half step).
    w_ce: weight of the alignment cross-entropy, finite and >= 0.
    w_rince: weight of the robust (RINCE) term, finite and >= 0.
    w_plan: weight of the plan log-likelihood (IOT), finite and >= 0.
    lam: RINCE's weight of the negatives, finite and >= 0.
    q: RINCE's exponent, in ``(0, 1]``.
    rince_kernel: ``"cost"`` (``P = u exp(M) v``) or ``"similarity"`` (``P = u
      exp(s) v``, eq. (13)).
    lambda_p: weight of IOT-uni's ``KL(Q || P)``, finite and >= 0.
    pairing: ``"joint"`` (both views stacked, ``N = 2B``) or ``"cross"`` (``z1``
      against ``z2``, ``N = B``).
    self_mask: self pairs of the joint pairing: ``"exclude"``, ``"max_cost"`` or
      ``"lowered"`` (see :func:`~gca_jax.losses.batch_geometry`).
    similarity_floor: ``None``, or a floor on the cosine similarity.
    target: ``"pairs"`` (each row's positive) or an ``(N, N)`` target plan
      (:func:`~gca_jax.losses.domain_target`, :func:`~gca_jax.losses.class_target`):
      finite, >= 0, each row with a positive entry off the excluded self pairs.
    grad_mode: ``"unroll"`` (through the iterations), ``"implicit"`` (at the fixed
      point) or ``"detach"`` (potentials held constant).
    form: ``"auto"`` (the scaling form when safe, else log), ``"log"`` or
      ``"scaling"`` (refused where the static bound calls it unsafe).
    tile_size: ``None`` (the ``N x N`` kernel is materialised) or an int >= 1: the
      kernel is recomputed ``tile_size`` rows at a time in the forward and backward
      passes, so memory is linear in ``N`` (:mod:`gca_jax.losses.tiled`; a static
      argument under ``jax.jit``). Targets are then given as labels
      (``as_labels=True``) and ``aux.log_plan`` is ``None``.
    return_aux: also return a :class:`~gca_jax.losses.LossAux` of the plan.

  Returns:
    The scalar loss, or ``(loss, aux)`` with ``return_aux=True``.

  Raises:
    ValueError: for a concrete parameter outside its range (a traced one makes the
      loss NaN), a concrete marginal with a zero, negative, NaN or inf entry,
      balanced marginals of unequal mass, a concrete target with a negative, NaN or
      inf entry or a row with no positive entry, a forced unsafe ``form="scaling"``,
      ``grad_mode="implicit"`` with a robust term on a balanced plan, or an ``eps``
      at which the similarity-kernel robust term overflows the dtype.
    TypeError: for an unknown keyword (with the accepted ones; ``eps`` for a
      temperature under another name), a traced static option under :func:`jax.jit`,
      or complex or non-array embeddings.

  Examples:
    >>> import jax
    >>> from gca_jax import losses
    >>> z1, z2 = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 16))
    >>> print(f"{float(losses.gca_ince(z1, z2)):.4f}")
    2.7442
  """
  return gca_loss(
      z1, z2, eps=eps, iters=iters, tau_a=tau_a, tau_b=tau_b, marginals=marginals,
      init_log_v=init_log_v, final_row_step=final_row_step, w_ce=w_ce,
      w_rince=w_rince, w_plan=w_plan, lam=lam, q=q, rince_kernel=rince_kernel,
      lambda_p=lambda_p, pairing=pairing, self_mask=self_mask,
      similarity_floor=similarity_floor, target=target, grad_mode=grad_mode,
      form=form, tile_size=tile_size, return_aux=return_aux, axis_name=axis_name)


@arguments.public_loss
def hs_ince(z1: jax.Array, z2: jax.Array, *, eps: float = 0.5, tau_a: float = 1.0,
            tau_b: float = 1.0, marginals: Any = "uniform",
            init_log_v: jax.Array | float | None = None, w_ce: float = 1.0,
            w_rince: float = 0.0, w_plan: float = 0.0, lam: float = 0.01, q: float = 0.6,
            rince_kernel: str = "cost", lambda_p: float = 0.0, pairing: str = "joint",
            self_mask: str = "exclude", similarity_floor: float | None = None,
            target: Target = "pairs", grad_mode: str = "unroll", form: str = "auto",
            tile_size: int | None = None, return_aux: bool = False, axis_name=None):
  """HS-INCE: GCA-INCE with a single row projection (a half step).

  Row normalisation cancels the row potential, so this equals
  :func:`infonce`; it is the starting point of Theorem 1 (Chen et al. 2024).

  Args:
    z1, z2: ``(B, D)`` embeddings of the two views, row ``k`` of each from sample
      ``k`` (a stacked ``(2B, D)`` array is ``z1, z2 = jnp.split(z, 2)``).
    eps: the temperature, exactly: logits are ``s = S / eps`` and the kernel
      ``exp(-C / eps)``; finite and > 0.
    tau_a: row-marginal relaxation in ``(0, 1]`` (1: balanced; ``rho / (rho + eps)``
      for a KL-relaxed marginal of weight ``rho``).
    tau_b: column-marginal relaxation, as ``tau_a``.
    marginals: ``"uniform"`` (``1/N``), ``"ones"``, or a pair ``(a, b)`` of finite,
      positive ``(N,)`` arrays (a single string applies to both).
    init_log_v: starting column potential ``log v`` (scalar or ``(N,)``; ``None``:
      0).
    w_ce: weight of the alignment cross-entropy, finite and >= 0.
    w_rince: weight of the robust (RINCE) term, finite and >= 0.
    w_plan: weight of the plan log-likelihood (IOT), finite and >= 0.
    lam: RINCE's weight of the negatives, finite and >= 0.
    q: RINCE's exponent, in ``(0, 1]``.
    rince_kernel: ``"cost"`` (``P = u exp(M) v``) or ``"similarity"`` (``P = u
      exp(s) v``, eq. (13)).
    lambda_p: weight of IOT-uni's ``KL(Q || P)``, finite and >= 0.
    pairing: ``"joint"`` (both views stacked, ``N = 2B``) or ``"cross"`` (``z1``
      against ``z2``, ``N = B``).
    self_mask: self pairs of the joint pairing: ``"exclude"``, ``"max_cost"`` or
      ``"lowered"`` (see :func:`~gca_jax.losses.batch_geometry`).
    similarity_floor: ``None``, or a floor on the cosine similarity.
    target: ``"pairs"`` (each row's positive) or an ``(N, N)`` target plan
      (:func:`~gca_jax.losses.domain_target`, :func:`~gca_jax.losses.class_target`):
      finite, >= 0, each row with a positive entry off the excluded self pairs.
    grad_mode: ``"unroll"`` (through the iterations), ``"implicit"`` (at the fixed
      point) or ``"detach"`` (potentials held constant).
    form: ``"auto"`` (the scaling form when safe, else log), ``"log"`` or
      ``"scaling"`` (refused where the static bound calls it unsafe).
    tile_size: ``None`` (the ``N x N`` kernel is materialised) or an int >= 1: the
      kernel is recomputed ``tile_size`` rows at a time in the forward and backward
      passes, so memory is linear in ``N`` (:mod:`gca_jax.losses.tiled`; a static
      argument under ``jax.jit``). Targets are then given as labels
      (``as_labels=True``) and ``aux.log_plan`` is ``None``.
    return_aux: also return a :class:`~gca_jax.losses.LossAux` of the plan.

  Returns:
    The scalar loss, or ``(loss, aux)`` with ``return_aux=True``.

  Raises:
    ValueError: for a concrete parameter outside its range (a traced one makes the
      loss NaN), a concrete marginal with a zero, negative, NaN or inf entry,
      balanced marginals of unequal mass, a concrete target with a negative, NaN or
      inf entry or a row with no positive entry, a forced unsafe ``form="scaling"``,
      ``grad_mode="implicit"`` with a robust term on a balanced plan, or an ``eps``
      at which the similarity-kernel robust term overflows the dtype.
    TypeError: for an unknown keyword (with the accepted ones; ``eps`` for a
      temperature under another name), a traced static option under :func:`jax.jit`,
      or complex or non-array embeddings.

  Examples:
    >>> import jax
    >>> from gca_jax import losses
    >>> z1, z2 = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 16))
    >>> print(f"{float(losses.hs_ince(z1, z2)):.4f}")
    2.7496
  """
  return gca_ince.with_axis_name(
      z1, z2, eps=eps, iters=0, tau_a=tau_a, tau_b=tau_b, marginals=marginals,
      init_log_v=init_log_v, final_row_step=True, w_ce=w_ce, w_rince=w_rince,
      w_plan=w_plan, lam=lam, q=q, rince_kernel=rince_kernel, lambda_p=lambda_p,
      pairing=pairing, self_mask=self_mask, similarity_floor=similarity_floor,
      target=target, grad_mode=grad_mode, form=form, tile_size=tile_size, return_aux=return_aux,
      axis_name=axis_name)


@arguments.public_loss
def rince(z1: jax.Array, z2: jax.Array, *, eps: float = 0.5, lam: float = 0.01, q: float = 0.6,
          pairing: str = "joint", self_mask: str = "exclude",
          similarity_floor: float | None = None, tile_size: int | None = None,
          return_aux: bool = False, axis_name=None):
  """Robust InfoNCE, RINCE (Chuang et al. 2022).

  Chen et al. 2024, eq. (2); per anchor, with ``s = S / eps``: ``-(1/q) exp(q
  s_{i,t(i)}) + (1/q) (lam * sum_{j != i} exp(s_ij))^q``. Computed directly
  from the logits; ``gca_rince(iters=0)`` equals it (Theorem 2). The loss
  grows like ``exp(q / eps)``: an ``eps`` at which it overflows the dtype is
  refused, with the smallest allowed ``eps``.

  Args:
    z1, z2: ``(B, D)`` embeddings of the two views, row ``k`` of each from sample
      ``k`` (a stacked ``(2B, D)`` array is ``z1, z2 = jnp.split(z, 2)``).
    eps: the temperature, exactly: logits are ``s = S / eps`` and the kernel
      ``exp(-C / eps)``; finite and > 0.
    lam: RINCE's weight of the negatives, finite and >= 0.
    q: RINCE's exponent, in ``(0, 1]``.
    pairing: ``"joint"`` (both views stacked, ``N = 2B``) or ``"cross"`` (``z1``
      against ``z2``, ``N = B``).
    self_mask: self pairs of the joint pairing: ``"exclude"``, ``"max_cost"`` or
      ``"lowered"`` (see :func:`~gca_jax.losses.batch_geometry`).
    similarity_floor: ``None``, or a floor on the cosine similarity.
    tile_size: ``None`` (the ``N x N`` kernel is materialised) or an int >= 1: the
      kernel is recomputed ``tile_size`` rows at a time in the forward and backward
      passes, so memory is linear in ``N`` (:mod:`gca_jax.losses.tiled`; a static
      argument under ``jax.jit``). Targets are then given as labels
      (``as_labels=True``) and ``aux.log_plan`` is ``None``.
    return_aux: also return a :class:`~gca_jax.losses.LossAux` of the plan.

  Returns:
    The scalar loss, or ``(loss, aux)`` with ``return_aux=True``.

  Raises:
    ValueError: for a concrete parameter outside its range (a traced one makes the
      loss NaN), or an ``eps`` at which the similarity-kernel robust term overflows
      the dtype.
    TypeError: for an unknown keyword (with the accepted ones; ``eps`` for a
      temperature under another name), a traced static option under :func:`jax.jit`,
      or complex or non-array embeddings.

  Examples:
    >>> import jax
    >>> from gca_jax import losses
    >>> z1, z2 = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 16))
    >>> print(f"{float(losses.rince(z1, z2)):.4f}")
    -1.1908
  """
  if axis_name is not None or tile_size is not None:
    # Sharded rows or tiles: hs_rince, equal to RINCE by Theorem 2.
    return _with_exact_row_marginals(hs_rince.with_axis_name(
        z1, z2, eps=eps, marginals="ones", lam=lam, q=q, pairing=pairing,
        self_mask=self_mask, similarity_floor=similarity_floor,
        tile_size=tile_size, return_aux=return_aux, axis_name=axis_name), return_aux)
  eps = arguments.check_eps(eps)
  q = arguments.check_q(q)
  lam = arguments.check_nonnegative("lam", lam)
  geometry = batch_geometry(z1, z2, pairing=pairing, self_mask=self_mask,
                            similarity_floor=similarity_floor)
  arguments.check_robust_range(eps, q, lam, geometry.cost.shape[0],
                               geometry.cost.dtype)
  logits = geometry.log_kernel(eps) + 1.0 / eps  # s = (1 - C) / eps
  positive = terms.at_positives(logits, geometry.positives)
  log_negatives = jnp.log(lam) + jax.nn.logsumexp(logits, axis=1)
  loss = jnp.mean(-jnp.exp(q * positive) + jnp.exp(q * log_negatives)) / q
  if not return_aux:
    return loss
  log_softmax = jax.nn.log_softmax(logits, axis=1)
  return loss, terms.row_normalized_kernel_aux(log_softmax, geometry, None)


@arguments.public_loss
def gca_rince(z1: jax.Array, z2: jax.Array, *, eps: float = 0.5, iters: int = 10,
              tau_a: float = 1.0, tau_b: float = 1.0, marginals: Any = "ones",
              init_log_v: jax.Array | float | None = None, w_plan: float = 0.0,
              lam: float = 0.01, q: float = 0.6, lambda_p: float = 0.0, pairing: str = "joint",
              self_mask: str = "exclude", similarity_floor: float | None = None,
              target: Target = "pairs", grad_mode: str = "unroll", form: str = "auto",
              tile_size: int | None = None, return_aux: bool = False, axis_name=None):
  """GCA-RINCE: RINCE on the Sinkhorn plan of the kernel ``exp(s)``.

  Chen et al. 2024, eq. (13): ``v`` from ``iters`` balanced iterations on the
  kernel ``exp(s)`` with all marginals 1, then one row projection gives ``u``;
  ``x_i = exp(s_{i,t(i)}) v_{t(i)}``, ``y_i = lam / u_i = lam sum_{j != i}
  exp(s_ij) v_j``, loss ``mean_i (-(x_i^q) + y_i^q) / q``. ``iters=0`` equals
  :func:`rince` (Theorem 2). With ``tau_a``/``tau_b`` < 1 the iterations (and
  the final row step) are the relaxed ones on the same kernel ``exp(s)``, e.g.
  ``u = (1 / (exp(s) v))^tau_a``. ``eps`` must keep ``exp(q / eps)`` inside
  the dtype (refused otherwise, with the smallest allowed ``eps``).

  Args:
    z1, z2: ``(B, D)`` embeddings of the two views, row ``k`` of each from sample
      ``k`` (a stacked ``(2B, D)`` array is ``z1, z2 = jnp.split(z, 2)``).
    eps: the temperature, exactly: logits are ``s = S / eps`` and the kernel
      ``exp(-C / eps)``; finite and > 0.
    iters: static number of full (row then column) Sinkhorn iterations, an int >= 0
      (under ``jax.jit``: a static argument).
    tau_a: row-marginal relaxation in ``(0, 1]`` (1: balanced; ``rho / (rho + eps)``
      for a KL-relaxed marginal of weight ``rho``).
    tau_b: column-marginal relaxation, as ``tau_a``.
    marginals: ``"uniform"`` (``1/N``), ``"ones"``, or a pair ``(a, b)`` of finite,
      positive ``(N,)`` arrays (a single string applies to both).
    init_log_v: starting column potential ``log v`` (scalar or ``(N,)``; ``None``:
      0).
    w_plan: weight of the plan log-likelihood (IOT), finite and >= 0.
    lam: RINCE's weight of the negatives, finite and >= 0.
    q: RINCE's exponent, in ``(0, 1]``.
    lambda_p: weight of IOT-uni's ``KL(Q || P)``, finite and >= 0.
    pairing: ``"joint"`` (both views stacked, ``N = 2B``) or ``"cross"`` (``z1``
      against ``z2``, ``N = B``).
    self_mask: self pairs of the joint pairing: ``"exclude"``, ``"max_cost"`` or
      ``"lowered"`` (see :func:`~gca_jax.losses.batch_geometry`).
    similarity_floor: ``None``, or a floor on the cosine similarity.
    target: ``"pairs"`` (each row's positive) or an ``(N, N)`` target plan
      (:func:`~gca_jax.losses.domain_target`, :func:`~gca_jax.losses.class_target`):
      finite, >= 0, each row with a positive entry off the excluded self pairs.
    grad_mode: ``"unroll"`` (through the iterations), ``"implicit"`` (at the fixed
      point) or ``"detach"`` (potentials held constant).
    form: ``"auto"`` (the scaling form when safe, else log), ``"log"`` or
      ``"scaling"`` (refused where the static bound calls it unsafe).
    tile_size: ``None`` (the ``N x N`` kernel is materialised) or an int >= 1: the
      kernel is recomputed ``tile_size`` rows at a time in the forward and backward
      passes, so memory is linear in ``N`` (:mod:`gca_jax.losses.tiled`; a static
      argument under ``jax.jit``). Targets are then given as labels
      (``as_labels=True``) and ``aux.log_plan`` is ``None``.
    return_aux: also return a :class:`~gca_jax.losses.LossAux` of the plan.

  Returns:
    The scalar loss, or ``(loss, aux)`` with ``return_aux=True``.

  Raises:
    ValueError: for a concrete parameter outside its range (a traced one makes the
      loss NaN), a concrete marginal with a zero, negative, NaN or inf entry,
      balanced marginals of unequal mass, a concrete target with a negative, NaN or
      inf entry or a row with no positive entry, a forced unsafe ``form="scaling"``,
      ``grad_mode="implicit"`` with a robust term on a balanced plan, or an ``eps``
      at which the similarity-kernel robust term overflows the dtype.
    TypeError: for an unknown keyword (with the accepted ones; ``eps`` for a
      temperature under another name), a traced static option under :func:`jax.jit`,
      or complex or non-array embeddings.

  Examples:
    >>> import jax
    >>> from gca_jax import losses
    >>> z1, z2 = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 16))
    >>> print(f"{float(losses.gca_rince(z1, z2)):.4f}")
    -1.1992
  """
  return gca_loss(
      z1, z2, eps=eps, iters=iters, tau_a=tau_a, tau_b=tau_b, marginals=marginals,
      init_log_v=init_log_v, final_row_step=True, w_ce=0.0, w_rince=1.0,
      w_plan=w_plan, lam=lam, q=q, rince_kernel="similarity", lambda_p=lambda_p,
      pairing=pairing, self_mask=self_mask, similarity_floor=similarity_floor,
      target=target, grad_mode=grad_mode, form=form, tile_size=tile_size, return_aux=return_aux,
      axis_name=axis_name)


@arguments.public_loss
def hs_rince(z1: jax.Array, z2: jax.Array, *, eps: float = 0.5, tau_a: float = 1.0,
             tau_b: float = 1.0, marginals: Any = "ones",
             init_log_v: jax.Array | float | None = None, w_plan: float = 0.0,
             lam: float = 0.01, q: float = 0.6, lambda_p: float = 0.0, pairing: str = "joint",
             self_mask: str = "exclude", similarity_floor: float | None = None,
             target: Target = "pairs", grad_mode: str = "unroll", form: str = "auto",
             tile_size: int | None = None, return_aux: bool = False, axis_name=None):
  """HS-RINCE: GCA-RINCE with a single row projection (equals :func:`rince`).

  Args:
    z1, z2: ``(B, D)`` embeddings of the two views, row ``k`` of each from sample
      ``k`` (a stacked ``(2B, D)`` array is ``z1, z2 = jnp.split(z, 2)``).
    eps: the temperature, exactly: logits are ``s = S / eps`` and the kernel
      ``exp(-C / eps)``; finite and > 0.
    tau_a: row-marginal relaxation in ``(0, 1]`` (1: balanced; ``rho / (rho + eps)``
      for a KL-relaxed marginal of weight ``rho``).
    tau_b: column-marginal relaxation, as ``tau_a``.
    marginals: ``"uniform"`` (``1/N``), ``"ones"``, or a pair ``(a, b)`` of finite,
      positive ``(N,)`` arrays (a single string applies to both).
    init_log_v: starting column potential ``log v`` (scalar or ``(N,)``; ``None``:
      0).
    w_plan: weight of the plan log-likelihood (IOT), finite and >= 0.
    lam: RINCE's weight of the negatives, finite and >= 0.
    q: RINCE's exponent, in ``(0, 1]``.
    lambda_p: weight of IOT-uni's ``KL(Q || P)``, finite and >= 0.
    pairing: ``"joint"`` (both views stacked, ``N = 2B``) or ``"cross"`` (``z1``
      against ``z2``, ``N = B``).
    self_mask: self pairs of the joint pairing: ``"exclude"``, ``"max_cost"`` or
      ``"lowered"`` (see :func:`~gca_jax.losses.batch_geometry`).
    similarity_floor: ``None``, or a floor on the cosine similarity.
    target: ``"pairs"`` (each row's positive) or an ``(N, N)`` target plan
      (:func:`~gca_jax.losses.domain_target`, :func:`~gca_jax.losses.class_target`):
      finite, >= 0, each row with a positive entry off the excluded self pairs.
    grad_mode: ``"unroll"`` (through the iterations), ``"implicit"`` (at the fixed
      point) or ``"detach"`` (potentials held constant).
    form: ``"auto"`` (the scaling form when safe, else log), ``"log"`` or
      ``"scaling"`` (refused where the static bound calls it unsafe).
    tile_size: ``None`` (the ``N x N`` kernel is materialised) or an int >= 1: the
      kernel is recomputed ``tile_size`` rows at a time in the forward and backward
      passes, so memory is linear in ``N`` (:mod:`gca_jax.losses.tiled`; a static
      argument under ``jax.jit``). Targets are then given as labels
      (``as_labels=True``) and ``aux.log_plan`` is ``None``.
    return_aux: also return a :class:`~gca_jax.losses.LossAux` of the plan.

  Returns:
    The scalar loss, or ``(loss, aux)`` with ``return_aux=True``.

  Raises:
    ValueError: for a concrete parameter outside its range (a traced one makes the
      loss NaN), a concrete marginal with a zero, negative, NaN or inf entry,
      balanced marginals of unequal mass, a concrete target with a negative, NaN or
      inf entry or a row with no positive entry, a forced unsafe ``form="scaling"``,
      ``grad_mode="implicit"`` with a robust term on a balanced plan, or an ``eps``
      at which the similarity-kernel robust term overflows the dtype.
    TypeError: for an unknown keyword (with the accepted ones; ``eps`` for a
      temperature under another name), a traced static option under :func:`jax.jit`,
      or complex or non-array embeddings.

  Examples:
    >>> import jax
    >>> from gca_jax import losses
    >>> z1, z2 = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 16))
    >>> print(f"{float(losses.hs_rince(z1, z2)):.4f}")
    -1.1908
  """
  return gca_rince.with_axis_name(
      z1, z2, eps=eps, iters=0, tau_a=tau_a, tau_b=tau_b, marginals=marginals,
      init_log_v=init_log_v, w_plan=w_plan, lam=lam, q=q, lambda_p=lambda_p,
      pairing=pairing, self_mask=self_mask, similarity_floor=similarity_floor,
      target=target, grad_mode=grad_mode, form=form, tile_size=tile_size, return_aux=return_aux,
      axis_name=axis_name)


@arguments.public_loss
def gca_uot(z1: jax.Array, z2: jax.Array, *, eps: float = 0.5, iters: int = 10,
            rho_a: float = 0.2, rho_b: float = 0.2, marginals: Any = "uniform",
            init_log_v: jax.Array | float | None = None, final_row_step: bool = False,
            w_ce: float = 1.0, w_rince: float = 0.02, w_plan: float = 0.0, lam: float = 0.01,
            q: float = 0.6, rince_kernel: str = "cost", lambda_p: float = 0.0,
            pairing: str = "joint", self_mask: str = "exclude",
            similarity_floor: float | None = None, target: Target = "pairs",
            grad_mode: str = "unroll", form: str = "auto", tile_size: int | None = None,
             return_aux: bool = False,
            axis_name=None):
  """GCA-UOT: alignment with an unbalanced (KL-relaxed) plan.

  Chen et al. 2024, Section 3.3: ``iters`` unbalanced iterations with ``tau_a
  = rho_a / (rho_a + eps)``, ``tau_b = rho_b / (rho_b + eps)`` on ``K = exp(-C
  / eps)`` with uniform marginals ``1/N`` (the scale of the published code).
  The loss is ``w_ce * (-mean_i log P̄_{i,t(i)}) + w_rince * mean_i (-(x_i^q)
  + y_i^q)/q`` with ``x_i = P_{i,t(i)} / u_i = K_{i,t(i)} v_{t(i)}`` and ``y_i
  = lam / u_i``, ``u, v`` the scalings of the last iteration. Defaults are the
  paper's (Chen et al. 2024): relaxations 0.2, CE weight 1, RINCE weight 0.02.
  ``rho = inf`` is a hard (balanced) marginal, ``tau = 1``.

  Args:
    z1, z2: ``(B, D)`` embeddings of the two views, row ``k`` of each from sample
      ``k`` (a stacked ``(2B, D)`` array is ``z1, z2 = jnp.split(z, 2)``).
    eps: the temperature, exactly: logits are ``s = S / eps`` and the kernel
      ``exp(-C / eps)``; finite and > 0.
    iters: static number of full (row then column) Sinkhorn iterations, an int >= 0
      (under ``jax.jit``: a static argument).
    rho_a: KL weight of the row marginal, > 0 (``tau_a = rho_a / (rho_a + eps)``;
      ``inf``: a balanced marginal).
    rho_b: KL weight of the column marginal, as ``rho_a``.
    marginals: ``"uniform"`` (``1/N``), ``"ones"``, or a pair ``(a, b)`` of finite,
      positive ``(N,)`` arrays (a single string applies to both).
    init_log_v: starting column potential ``log v`` (scalar or ``(N,)``; ``None``:
      0).
    final_row_step: one more row projection after the iterations gives the ``u`` of
      the robust term (with ``iters=0``: a half step).
    w_ce: weight of the alignment cross-entropy, finite and >= 0.
    w_rince: weight of the robust (RINCE) term, finite and >= 0.
    w_plan: weight of the plan log-likelihood (IOT), finite and >= 0.
    lam: RINCE's weight of the negatives, finite and >= 0.
    q: RINCE's exponent, in ``(0, 1]``.
    rince_kernel: ``"cost"`` (``P = u exp(M) v``) or ``"similarity"`` (``P = u
      exp(s) v``, eq. (13)).
    lambda_p: weight of IOT-uni's ``KL(Q || P)``, finite and >= 0.
    pairing: ``"joint"`` (both views stacked, ``N = 2B``) or ``"cross"`` (``z1``
      against ``z2``, ``N = B``).
    self_mask: self pairs of the joint pairing: ``"exclude"``, ``"max_cost"`` or
      ``"lowered"`` (see :func:`~gca_jax.losses.batch_geometry`).
    similarity_floor: ``None``, or a floor on the cosine similarity.
    target: ``"pairs"`` (each row's positive) or an ``(N, N)`` target plan
      (:func:`~gca_jax.losses.domain_target`, :func:`~gca_jax.losses.class_target`):
      finite, >= 0, each row with a positive entry off the excluded self pairs.
    grad_mode: ``"unroll"`` (through the iterations), ``"implicit"`` (at the fixed
      point) or ``"detach"`` (potentials held constant).
    form: ``"auto"`` (the scaling form when safe, else log), ``"log"`` or
      ``"scaling"`` (refused where the static bound calls it unsafe).
    tile_size: ``None`` (the ``N x N`` kernel is materialised) or an int >= 1: the
      kernel is recomputed ``tile_size`` rows at a time in the forward and backward
      passes, so memory is linear in ``N`` (:mod:`gca_jax.losses.tiled`; a static
      argument under ``jax.jit``). Targets are then given as labels
      (``as_labels=True``) and ``aux.log_plan`` is ``None``.
    return_aux: also return a :class:`~gca_jax.losses.LossAux` of the plan.

  Returns:
    The scalar loss, or ``(loss, aux)`` with ``return_aux=True``.

  Raises:
    ValueError: for a concrete parameter outside its range (a traced one makes the
      loss NaN), a concrete ``rho_a`` or ``rho_b`` <= 0, a concrete marginal with a
      zero, negative, NaN or inf entry, balanced marginals of unequal mass, a
      concrete target with a negative, NaN or inf entry or a row with no positive
      entry, a forced unsafe ``form="scaling"``, ``grad_mode="implicit"`` with a
      robust term on a balanced plan, or an ``eps`` at which the similarity-kernel
      robust term overflows the dtype.
    TypeError: for an unknown keyword (with the accepted ones; ``eps`` for a
      temperature under another name), a traced static option under :func:`jax.jit`,
      or complex or non-array embeddings.

  Examples:
    >>> import jax
    >>> from gca_jax import losses
    >>> z1, z2 = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 16))
    >>> print(f"{float(losses.gca_uot(z1, z2)):.4f}")
    2.7437
  """
  eps = arguments.check_eps(eps)
  return gca_loss(
      z1, z2, eps=eps, iters=iters, tau_a=arguments.relaxation(rho_a, eps, "rho_a"),
      tau_b=arguments.relaxation(rho_b, eps, "rho_b"), marginals=marginals,
      init_log_v=init_log_v, final_row_step=final_row_step, w_ce=w_ce,
      w_rince=w_rince, w_plan=w_plan, lam=lam, q=q, rince_kernel=rince_kernel,
      lambda_p=lambda_p, pairing=pairing, self_mask=self_mask,
      similarity_floor=similarity_floor, target=target, grad_mode=grad_mode,
      form=form, tile_size=tile_size, return_aux=return_aux, axis_name=axis_name)


@arguments.public_loss
def iot(z1: jax.Array, z2: jax.Array, *, eps: float = 0.5, iters: int = 10, tau_a: float = 1.0,
        tau_b: float = 1.0, marginals: Any = "ones",
        init_log_v: jax.Array | float | None = None, final_row_step: bool = False,
        w_rince: float = 0.0, lam: float = 0.01, q: float = 0.6, rince_kernel: str = "cost",
        lambda_p: float = 0.0, pairing: str = "joint", self_mask: str = "exclude",
        similarity_floor: float | None = None, target: Target = "pairs",
        grad_mode: str = "unroll", form: str = "auto", tile_size: int | None = None,
             return_aux: bool = False,
        axis_name=None):
  """Inverse optimal transport (Shi et al. 2023).

  ``iters`` rounds of row then column normalisation of ``K`` (balanced
  Sinkhorn with unit marginals) and ``-mean_i log P_{i,t(i)}``: the plan
  itself, not its row-normalisation, is fitted to the positives.

  Args:
    z1, z2: ``(B, D)`` embeddings of the two views, row ``k`` of each from sample
      ``k`` (a stacked ``(2B, D)`` array is ``z1, z2 = jnp.split(z, 2)``).
    eps: the temperature, exactly: logits are ``s = S / eps`` and the kernel
      ``exp(-C / eps)``; finite and > 0.
    iters: static number of full (row then column) Sinkhorn iterations, an int >= 0
      (under ``jax.jit``: a static argument).
    tau_a: row-marginal relaxation in ``(0, 1]`` (1: balanced; ``rho / (rho + eps)``
      for a KL-relaxed marginal of weight ``rho``).
    tau_b: column-marginal relaxation, as ``tau_a``.
    marginals: ``"uniform"`` (``1/N``), ``"ones"``, or a pair ``(a, b)`` of finite,
      positive ``(N,)`` arrays (a single string applies to both).
    init_log_v: starting column potential ``log v`` (scalar or ``(N,)``; ``None``:
      0).
    final_row_step: one more row projection after the iterations gives the ``u`` of
      the robust term (with ``iters=0``: a half step).
    w_rince: weight of the robust (RINCE) term, finite and >= 0.
    lam: RINCE's weight of the negatives, finite and >= 0.
    q: RINCE's exponent, in ``(0, 1]``.
    rince_kernel: ``"cost"`` (``P = u exp(M) v``) or ``"similarity"`` (``P = u
      exp(s) v``, eq. (13)).
    lambda_p: weight of IOT-uni's ``KL(Q || P)``, finite and >= 0.
    pairing: ``"joint"`` (both views stacked, ``N = 2B``) or ``"cross"`` (``z1``
      against ``z2``, ``N = B``).
    self_mask: self pairs of the joint pairing: ``"exclude"``, ``"max_cost"`` or
      ``"lowered"`` (see :func:`~gca_jax.losses.batch_geometry`).
    similarity_floor: ``None``, or a floor on the cosine similarity.
    target: ``"pairs"`` (each row's positive) or an ``(N, N)`` target plan
      (:func:`~gca_jax.losses.domain_target`, :func:`~gca_jax.losses.class_target`):
      finite, >= 0, each row with a positive entry off the excluded self pairs.
    grad_mode: ``"unroll"`` (through the iterations), ``"implicit"`` (at the fixed
      point) or ``"detach"`` (potentials held constant).
    form: ``"auto"`` (the scaling form when safe, else log), ``"log"`` or
      ``"scaling"`` (refused where the static bound calls it unsafe).
    tile_size: ``None`` (the ``N x N`` kernel is materialised) or an int >= 1: the
      kernel is recomputed ``tile_size`` rows at a time in the forward and backward
      passes, so memory is linear in ``N`` (:mod:`gca_jax.losses.tiled`; a static
      argument under ``jax.jit``). Targets are then given as labels
      (``as_labels=True``) and ``aux.log_plan`` is ``None``.
    return_aux: also return a :class:`~gca_jax.losses.LossAux` of the plan.

  Returns:
    The scalar loss, or ``(loss, aux)`` with ``return_aux=True``.

  Raises:
    ValueError: for a concrete parameter outside its range (a traced one makes the
      loss NaN), a concrete marginal with a zero, negative, NaN or inf entry,
      balanced marginals of unequal mass, a concrete target with a negative, NaN or
      inf entry or a row with no positive entry, a forced unsafe ``form="scaling"``,
      ``grad_mode="implicit"`` with a robust term on a balanced plan, or an ``eps``
      at which the similarity-kernel robust term overflows the dtype.
    TypeError: for an unknown keyword (with the accepted ones; ``eps`` for a
      temperature under another name), a traced static option under :func:`jax.jit`,
      or complex or non-array embeddings.

  Examples:
    >>> import jax
    >>> from gca_jax import losses
    >>> z1, z2 = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 16))
    >>> print(f"{float(losses.iot(z1, z2)):.4f}")
    2.7442
  """
  return gca_loss(
      z1, z2, eps=eps, iters=iters, tau_a=tau_a, tau_b=tau_b, marginals=marginals,
      init_log_v=init_log_v, final_row_step=final_row_step, w_ce=0.0,
      w_rince=w_rince, w_plan=1.0, lam=lam, q=q, rince_kernel=rince_kernel,
      lambda_p=lambda_p, pairing=pairing, self_mask=self_mask,
      similarity_floor=similarity_floor, target=target, grad_mode=grad_mode,
      form=form, tile_size=tile_size, return_aux=return_aux, axis_name=axis_name)


@arguments.public_loss
def iot_uni(z1: jax.Array, z2: jax.Array, *, eps: float = 0.5, iters: int = 10,
            tau_a: float = 1.0, tau_b: float = 1.0, marginals: Any = "ones",
            init_log_v: jax.Array | float | None = None, final_row_step: bool = False,
            w_rince: float = 0.0, lam: float = 0.01, q: float = 0.6,
            rince_kernel: str = "cost", lambda_p: float = 0.2, pairing: str = "joint",
            self_mask: str = "exclude", similarity_floor: float | None = None,
            target: Target = "pairs", grad_mode: str = "unroll", form: str = "auto",
            tile_size: int | None = None, return_aux: bool = False, axis_name=None):
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

  Args:
    z1, z2: ``(B, D)`` embeddings of the two views, row ``k`` of each from sample
      ``k`` (a stacked ``(2B, D)`` array is ``z1, z2 = jnp.split(z, 2)``).
    eps: the temperature, exactly: logits are ``s = S / eps`` and the kernel
      ``exp(-C / eps)``; finite and > 0.
    iters: static number of full (row then column) Sinkhorn iterations, an int >= 0
      (under ``jax.jit``: a static argument).
    tau_a: row-marginal relaxation in ``(0, 1]`` (1: balanced; ``rho / (rho + eps)``
      for a KL-relaxed marginal of weight ``rho``).
    tau_b: column-marginal relaxation, as ``tau_a``.
    marginals: ``"uniform"`` (``1/N``), ``"ones"``, or a pair ``(a, b)`` of finite,
      positive ``(N,)`` arrays (a single string applies to both).
    init_log_v: starting column potential ``log v`` (scalar or ``(N,)``; ``None``:
      0).
    final_row_step: one more row projection after the iterations gives the ``u`` of
      the robust term (with ``iters=0``: a half step).
    w_rince: weight of the robust (RINCE) term, finite and >= 0.
    lam: RINCE's weight of the negatives, finite and >= 0.
    q: RINCE's exponent, in ``(0, 1]``.
    rince_kernel: ``"cost"`` (``P = u exp(M) v``) or ``"similarity"`` (``P = u
      exp(s) v``, eq. (13)).
    lambda_p: weight of IOT-uni's ``KL(Q || P)``, finite and >= 0.
    pairing: ``"joint"`` (both views stacked, ``N = 2B``) or ``"cross"`` (``z1``
      against ``z2``, ``N = B``).
    self_mask: self pairs of the joint pairing: ``"exclude"``, ``"max_cost"`` or
      ``"lowered"`` (see :func:`~gca_jax.losses.batch_geometry`).
    similarity_floor: ``None``, or a floor on the cosine similarity.
    target: ``"pairs"`` (each row's positive) or an ``(N, N)`` target plan
      (:func:`~gca_jax.losses.domain_target`, :func:`~gca_jax.losses.class_target`):
      finite, >= 0, each row with a positive entry off the excluded self pairs.
    grad_mode: ``"unroll"`` (through the iterations), ``"implicit"`` (at the fixed
      point) or ``"detach"`` (potentials held constant).
    form: ``"auto"`` (the scaling form when safe, else log), ``"log"`` or
      ``"scaling"`` (refused where the static bound calls it unsafe).
    tile_size: ``None`` (the ``N x N`` kernel is materialised) or an int >= 1: the
      kernel is recomputed ``tile_size`` rows at a time in the forward and backward
      passes, so memory is linear in ``N`` (:mod:`gca_jax.losses.tiled`; a static
      argument under ``jax.jit``). Targets are then given as labels
      (``as_labels=True``) and ``aux.log_plan`` is ``None``.
    return_aux: also return a :class:`~gca_jax.losses.LossAux` of the plan.

  Returns:
    The scalar loss, or ``(loss, aux)`` with ``return_aux=True``.

  Raises:
    ValueError: for a concrete parameter outside its range (a traced one makes the
      loss NaN), a concrete marginal with a zero, negative, NaN or inf entry,
      balanced marginals of unequal mass, a concrete target with a negative, NaN or
      inf entry or a row with no positive entry, a forced unsafe ``form="scaling"``,
      ``grad_mode="implicit"`` with a robust term on a balanced plan, or an ``eps``
      at which the similarity-kernel robust term overflows the dtype.
    TypeError: for an unknown keyword (with the accepted ones; ``eps`` for a
      temperature under another name), a traced static option under :func:`jax.jit`,
      or complex or non-array embeddings.

  Examples:
    >>> import jax
    >>> from gca_jax import losses
    >>> z1, z2 = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 16))
    >>> print(f"{float(losses.iot_uni(z1, z2)):.4f}")
    2.7453
  """
  return iot.with_axis_name(
      z1, z2, eps=eps, iters=iters, tau_a=tau_a, tau_b=tau_b, marginals=marginals,
      init_log_v=init_log_v, final_row_step=final_row_step, w_rince=w_rince,
      lam=lam, q=q, rince_kernel=rince_kernel, lambda_p=lambda_p, pairing=pairing,
      self_mask=self_mask, similarity_floor=similarity_floor, target=target,
      grad_mode=grad_mode, form=form, tile_size=tile_size, return_aux=return_aux,
      axis_name=axis_name)



def _check_implicit_robust_term(grad_mode: str, loss_terms: terms.Terms, iters: int,
                                tau_a, tau_b) -> None:
  """Refuses the implicit gradient of a robust term on a balanced plan."""
  balanced = arguments.is_one(tau_a) and arguments.is_one(tau_b)
  if grad_mode == "implicit" and loss_terms.has_rince and iters > 0 and balanced:
    # Balanced potentials are defined up to (alpha - c, beta + c); the plan
    # is not, but x and y of the robust term are. The fixed point does not
    # pin c down, so its implicit derivative does not exist.
    raise ValueError(
        "grad_mode='implicit' is undefined for a robust (RINCE) term on a "
        "balanced plan: the term depends on the potentials' free additive "
        "constant, which only the unrolled iterations fix. Use "
        "grad_mode='unroll' or 'detach'.")


def _with_exact_row_marginals(result, return_aux: bool):
  """InfoNCE's and RINCE's diagnostics: their plan is the row-normalised
  kernel, whose row marginals are exact."""
  if not return_aux:
    return result
  loss, aux = result
  return loss, aux.replace(marginal_error=jnp.zeros_like(aux.marginal_error))


#: Contrastive losses selectable by name, each ``fn(z1, z2, **params)``.
CONTRASTIVE_LOSSES = {loss.__name__: loss for loss in (
    infonce, gca_ince, hs_ince, rince, gca_rince, hs_rince, gca_uot, iot, iot_uni)}


def get(name: str):
  """The contrastive loss called ``name`` (one of :data:`CONTRASTIVE_LOSSES`).

  Examples:
    >>> from gca_jax import losses
    >>> losses.get("gca_uot") is losses.gca_uot
    True
  """
  return arguments.lookup(CONTRASTIVE_LOSSES, name, "loss",
                          " (or 'byol' with its own signature)")


def byol(p1: jax.Array, p2: jax.Array, t1: jax.Array, t2: jax.Array):
  """BYOL's loss (Grill et al. 2020), symmetrised over the two views.

  ``mean_k [2 - 2 cos(p1_k, sg(t2_k))] + [2 - 2 cos(p2_k, sg(t1_k))]``: the
  online prediction of each view regresses the target projection of the
  other; the target receives no gradient.

  Args:
    p1, p2: ``(B, D)`` online predictions of the two views.
    t1, t2: ``(B, D)`` target projections of the two views.

  Returns:
    The scalar loss, in ``[0, 8]``.

  Examples:
    >>> import jax.numpy as jnp
    >>> from gca_jax import losses
    >>> p = jnp.array([[1.0, 0.0], [0.0, 1.0]])
    >>> print(f"{float(losses.byol(p, p, p, p)):.4f}")  # aligned: 0
    0.0000
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
