"""Contrastive losses as distribution alignment.

Every loss here is a pure function of the two views' embeddings ``z1, z2``
(``(B, D)``, row ``k`` of each from sample ``k``; a stacked ``(2B, D)`` array
is ``z1, z2 = jnp.split(z, 2)``) returning a scalar, the mean over anchors.
The GCA losses are presets of one function, :func:`gca_loss`: build the
batch geometry, project its kernel (:mod:`gca_jax.losses.projections`), and
compare the plan with a target (the terms: :mod:`gca_jax.losses.terms`).
``docs/losses.md`` states the whole contract in one place.

Notation: ``s = S / eps`` (scaled cosine similarity; ``eps`` is exactly the
temperature), ``M = -C / eps`` (log-kernel), ``t(i)`` the positive of anchor
``i``, ``P̄`` the plan with each row divided by its sum, ``u = exp(alpha)``,
``v = exp(beta)`` the scalings.

Each preset is declared as data over :func:`gca_loss` (the values it fixes
and the defaults it changes); every public loss is built with its full
signature (``inspect.signature``, ``help``), one ``Args:`` text per
parameter, and one clear ``TypeError`` for a keyword it does not take.
:mod:`gca_jax.losses.sharded` builds the row-sharded losses from the same
declarations.

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

import functools
import inspect
from typing import Any

import jax
import jax.numpy as jnp

from gca_jax.losses import (
    arguments, collectives, projections, signatures, terms, tiled)
from gca_jax.losses.arguments import Target
from gca_jax.losses.geometry import batch_geometry, check_pair, compute_dtype, l2_normalize
from gca_jax.losses.signatures import LossSpec, build, lookup
from gca_jax.losses.targets import LabelTarget
from gca_jax.losses.terms import LossAux

__all__ = [
    "CONTRASTIVE_LOSSES", "LossAux", "byol", "gca_ince", "gca_loss", "gca_rince",
    "gca_uot", "get", "hs_ince", "hs_rince", "infonce", "iot", "iot_uni", "rince",
]


def _align(
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
    tile_size: int | None = None,
    return_aux: bool = False,
    axis_name=None,
):
  # The body of the public gca_loss (built below with this signature, the
  # one place where the losses' defaults are written).
  # Each check returns its argument: a concrete one unchanged (or refused),
  # a traced one NaN where it is out of range.
  eps = arguments.check_eps(eps)
  iters = arguments.check_iters(iters)
  tau_a = arguments.check_relaxation("tau_a", tau_a)
  tau_b = arguments.check_relaxation("tau_b", tau_b)
  w_ce, w_rince, w_plan, lambda_p = (
      arguments.check_nonnegative(name, weight)
      for name, weight in (("w_ce", w_ce), ("w_rince", w_rince),
                           ("w_plan", w_plan), ("lambda_p", lambda_p)))
  has_ce, has_rince, has_plan, has_uniform = (
      not arguments.is_zero(weight) for weight in (w_ce, w_rince, w_plan, lambda_p))
  if has_rince:
    q = arguments.check_q(q)
    lam = arguments.check_nonnegative("lam", lam)
  arguments.check_choice("rince_kernel", rince_kernel, arguments.RINCE_KERNELS)
  balanced = arguments.is_one(tau_a) and arguments.is_one(tau_b)
  if grad_mode == "implicit" and has_rince and iters > 0 and balanced:
    # Balanced potentials are defined up to (alpha - c, beta + c); the plan
    # is not, but x and y of the robust term are. The fixed point does not
    # pin c down, so its implicit derivative does not exist.
    raise ValueError(
        "grad_mode='implicit' is undefined for a robust (RINCE) term on a "
        "balanced plan: the term depends on the potentials' free additive "
        "constant, which only the unrolled iterations fix. Use "
        "grad_mode='unroll' or 'detach'.")
  if tile_size is not None:
    tile_size = tiled.check_tile_size(tile_size)
    if form == "scaling":
      raise ValueError(
          "form='scaling' holds the N x N kernel, which tile_size avoids; use "
          "form='auto' or 'log' with tile_size, or tile_size=None.")
    arguments.check_choice("form", form, arguments.FORMS)
    kernel = tiled.tiled_kernel(z1, z2, eps, pairing=pairing,
                                self_mask=self_mask,
                                similarity_floor=similarity_floor,
                                axis_name=axis_name)
    geometry = None
    dtype = kernel.rows.dtype
    rows, cols = kernel.rows.shape[0], kernel.cols.shape[0]
  else:
    geometry = batch_geometry(z1, z2, pairing=pairing, self_mask=self_mask,
                              similarity_floor=similarity_floor,
                              axis_name=axis_name)
    dtype = geometry.cost.dtype
    rows, cols = geometry.cost.shape  # this device's rows, all columns
  all_rows = (rows if axis_name is None
              else rows * collectives.axis_size(axis_name))
  similarity_kernel = rince_kernel == "similarity"
  if has_rince and similarity_kernel:
    arguments.check_robust_range(eps, q, lam, all_rows, dtype)
  marginal_a, marginal_b = (marginals if isinstance(marginals, (tuple, list))
                            else (marginals, marginals))
  log_a = arguments.log_marginal(marginal_a, rows, dtype, "marginals (a)", all_rows)
  log_b = arguments.log_marginal(marginal_b, cols, dtype, "marginals (b)")
  if iters > 0:  # with no column step the masses need not match
    log_a, log_b = arguments.check_balanced_masses(
        log_a, log_b, (marginal_a, marginal_b), tau_a, tau_b, all_rows,
        axis_name)
  if init_log_v is not None:
    init_log_v = jnp.broadcast_to(jnp.asarray(init_log_v, dtype), (cols,))
  if geometry is None:
    target = tiled.tile_target(target, kernel, pairing, axis_name)
  else:
    target = arguments.normalized_target(
        _target_matrix(target, pairing, dtype, axis_name), geometry)

  # The kernel exp(s) = c exp(M), c = exp(1/eps). A balanced projection of
  # c K has the potentials of K with alpha lowered by log c, so K is
  # projected and alpha shifted afterwards. A relaxed one has no such
  # shortcut, but iterating on c K with marginals (a, b) is iterating on K
  # with marginals (a / c, b / c): the same potentials, on the same kernel.
  # Those potentials reach 1/eps further, which the form's bound includes.
  log_scale = 1.0 / eps if similarity_kernel else 0.0
  shifted_marginals = similarity_kernel and not balanced
  if shifted_marginals:
    log_a, log_b = log_a - log_scale, log_b - log_scale
  if geometry is None:
    return _tiled_terms(
        kernel, log_a, log_b, target, iters=iters, tau_a=tau_a, tau_b=tau_b,
        init_log_v=init_log_v, final_row_step=final_row_step,
        grad_mode=grad_mode, tile_size=tile_size, axis_name=axis_name,
        weights=(w_ce, w_rince, w_plan, lambda_p), lam=lam, q=q,
        log_scale=log_scale, shifted_marginals=shifted_marginals,
        return_aux=return_aux)
  cost_bound = geometry.cost_bound + (1.0 if shifted_marginals else 0.0)
  form = arguments.select_form(form, cost_bound, eps, dtype)
  log_kernel = geometry.log_kernel(eps)

  projection = projections.sinkhorn(
      log_kernel, log_a, log_b, iters=iters, tau_a=tau_a, tau_b=tau_b,
      init_log_v=init_log_v, final_row_step=final_row_step, form=form,
      grad_mode=grad_mode, axis_name=axis_name)
  log_u, log_v = projection.log_u, projection.log_v
  ops = projections.kernel_ops(log_kernel, form)
  positives = geometry.positives

  loss = jnp.zeros((), dtype)
  if has_ce:
    # Row normalisation removes any constant factor of the kernel.
    row_lse = ops.row_lse(log_v)
    loss += w_ce * terms.alignment_cross_entropy(log_kernel, log_v, row_lse,
                                            positives, target, axis_name)
  if has_rince:
    # Potentials of the kernel c K (see above).
    robust_log_u = log_u if shifted_marginals else log_u - log_scale
    loss += w_rince * terms.robust_term(log_kernel, robust_log_u, log_v, positives,
                                   target, lam=lam, q=q,
                                   log_kernel_scale=log_scale,
                                   axis_name=axis_name,
                                   row_index=geometry.row_index)
  log_plan = None
  if has_plan or has_uniform or return_aux:
    # u (c K) v: with shifted marginals the potentials are those of c K.
    log_plan = projection.log_plan(log_kernel)
    if shifted_marginals:
      log_plan = log_plan + log_scale
  if has_plan:
    loss += w_plan * terms.plan_log_likelihood(log_plan, positives, target,
                                          axis_name)
  if has_uniform:
    loss += lambda_p * terms.uniform_negatives_kl(log_plan, axis_name,
                                             geometry.row_index)
  if not return_aux:
    return loss
  return loss, terms.diagnostics(log_plan, positives, target,
                            projection.marginal_error, axis_name)


def _target_matrix(target, pairing, dtype, axis_name=None):
  """A :class:`~gca_jax.losses.targets.LabelTarget` as the matrix the
  materialised kernel takes (this device's rows with ``axis_name``)."""
  if isinstance(target, LabelTarget):
    return target.matrix(pairing=pairing, dtype=dtype, axis_name=axis_name)
  return target


def _tiled_terms(kernel, log_a, log_b, target, *, iters, tau_a, tau_b,
                 init_log_v, final_row_step, grad_mode, tile_size, axis_name,
                 weights, lam, q, log_scale, shifted_marginals, return_aux):
  """The projection and the terms of :func:`gca_loss` on the tiled kernel
  (the same formulas as the materialised path above, by
  :mod:`gca_jax.losses.tiled`)."""
  w_ce, w_rince, w_plan, lambda_p = weights
  options = dict(tile_size=tile_size, axis_name=axis_name)

  def make_ops(kernel, axis_name):
    return tiled.kernel_ops(kernel, axis_name, tile_size=tile_size)

  projection = projections.project(
      make_ops, kernel, log_a, log_b, iters=iters, tau_a=tau_a, tau_b=tau_b,
      init_log_v=init_log_v, final_row_step=final_row_step,
      grad_mode=grad_mode, axis_name=axis_name)
  log_u, log_v = projection.log_u, projection.log_v
  # u (c K) v: with shifted marginals the potentials are those of c K.
  plan_log_u = log_u + log_scale if shifted_marginals else log_u
  loss = jnp.zeros((), log_u.dtype)
  row_lse = None
  if not arguments.is_zero(w_ce) or not arguments.is_zero(lambda_p):
    row_lse = make_ops(kernel, axis_name).row_lse(log_v)
  if not arguments.is_zero(w_ce):
    loss += w_ce * tiled.alignment_cross_entropy(kernel, log_v, row_lse,
                                                 target, **options)
  if not arguments.is_zero(w_rince):
    # Potentials of the kernel c K (see _align).
    robust_log_u = log_u if shifted_marginals else log_u - log_scale
    loss += w_rince * tiled.robust_term(kernel, robust_log_u, log_v, target,
                                        lam=lam, q=q,
                                        log_kernel_scale=log_scale, **options)
  if not arguments.is_zero(w_plan):
    loss += w_plan * tiled.plan_log_likelihood(kernel, plan_log_u, log_v,
                                               target, **options)
  if not arguments.is_zero(lambda_p):
    loss += lambda_p * tiled.uniform_negatives_kl(
        kernel, plan_log_u, log_v, row_lse, axis_name=axis_name)
  if not return_aux:
    return loss
  return loss, tiled.diagnostics(kernel, plan_log_u, log_v, target,
                                 projection.marginal_error, **options)


def _infonce(z1, z2, *, eps, pairing, self_mask, similarity_floor, target,
             tile_size, return_aux, axis_name=None):
  if axis_name is not None or tile_size is not None:
    # Sharded rows or tiles: a single row projection with marginals 1
    # (hs_ince, equal to InfoNCE by Theorem 1) has the collectives the rows
    # need and the tiled kernel's operators.
    return _with_exact_row_marginals(_align(
        z1, z2, eps=eps, **_HS_INCE, marginals="ones", pairing=pairing,
        self_mask=self_mask, similarity_floor=similarity_floor, target=target,
        tile_size=tile_size, return_aux=return_aux, axis_name=axis_name),
        return_aux)
  eps = arguments.check_eps(eps)
  geometry = batch_geometry(z1, z2, pairing=pairing, self_mask=self_mask,
                            similarity_floor=similarity_floor)
  target = arguments.normalized_target(
      _target_matrix(target, pairing, geometry.cost.dtype), geometry)
  log_softmax = jax.nn.log_softmax(geometry.log_kernel(eps), axis=1)
  if target is None:
    loss = -jnp.mean(terms.at_positives(log_softmax, geometry.positives))
  else:
    loss = -jnp.mean(terms.masked_weighted_sum(target, log_softmax))
  if not return_aux:
    return loss
  return loss, terms.row_normalized_kernel_aux(log_softmax, geometry, target)


def _rince(z1, z2, *, eps, lam, q, pairing, self_mask, similarity_floor,
           tile_size, return_aux, axis_name=None):
  if axis_name is not None or tile_size is not None:
    # Sharded rows or tiles: hs_rince, equal to RINCE by Theorem 2.
    return _with_exact_row_marginals(_align(
        z1, z2, eps=eps, **_HS_RINCE, marginals="ones", lam=lam, q=q,
        pairing=pairing, self_mask=self_mask, similarity_floor=similarity_floor,
        tile_size=tile_size, return_aux=return_aux, axis_name=axis_name),
        return_aux)
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


def _with_exact_row_marginals(result, return_aux: bool):
  """InfoNCE's and RINCE's diagnostics: their plan is the row-normalised
  kernel, whose row marginals are exact."""
  if not return_aux:
    return result
  loss, aux = result
  return loss, aux.replace(marginal_error=jnp.zeros_like(aux.marginal_error))


def _gca_uot(z1, z2, *, eps, rho_a, rho_b, **options):
  eps = arguments.check_eps(eps)
  tau_a = arguments.relaxation(rho_a, eps, "rho_a")
  tau_b = arguments.relaxation(rho_b, eps, "rho_b")
  return _align(z1, z2, eps=eps, tau_a=tau_a, tau_b=tau_b, **options)


# ----------------------------------------------------------------------------
# The public losses: declarations and their builder.

_HS_INCE = dict(iters=0, final_row_step=True)
_GCA_RINCE = dict(final_row_step=True, w_ce=0.0, w_rince=1.0,
                  rince_kernel="similarity")
_HS_RINCE = dict(_GCA_RINCE, iters=0)
_IOT = dict(w_ce=0.0, w_plan=1.0)

_preset = functools.partial(signatures.preset, _align)
_derived = functools.partial(signatures.derive, inspect.signature(_align))


SPECS = (
    LossSpec("gca_loss", """Generalized Contrastive Alignment: project the kernel, align the plan.

``loss = w_ce * CE(T̄, P̄) + w_rince * RINCE(x, y) + w_plan * (-log P at T)
+ lambda_p * KL(Q || P)``, each term as in :mod:`gca_jax.losses.terms`, with
``P = u K v`` the plan after ``iters`` projections of a kernel ``K`` onto
the (relaxed) marginal constraints ``a`` and ``b``.

The kernel is ``exp(M) = exp(-C / eps)`` (``rince_kernel="cost"``) or
``exp(s) = exp(1 / eps) exp(M)`` (``"similarity"``, eq. (13)). A balanced
projection gives the same plan from both (only ``u`` is divided by
``exp(1 / eps)``, which the robust term sees); a relaxed one (``tau < 1``)
gives different plans, and every term then uses the plan of ``exp(s)``.
""", _align, inspect.signature(_align), "2.7442"),
    LossSpec("infonce", """InfoNCE / NT-Xent (Oord et al. 2018; Chen et al. 2020, SimCLR).

``-mean_i log softmax_j(s_ij)[t(i)]`` with ``s = S / eps``: the
cross-entropy between the target rows and the row-normalised kernel, i.e.
GCA-INCE with no projection (Theorem 1). Computed directly from the logits
(no projection code), so ``gca_ince(iters=0) == infonce`` is a real check.
""", _infonce, _derived(("eps", "pairing", "self_mask", "similarity_floor",
                             "target", "tile_size", "return_aux")), "2.7496"),
    _preset("gca_ince", """GCA-INCE: InfoNCE on the balanced Sinkhorn plan (paper Sec. 3.2).

``-mean_i log P̄_{i,t(i)}`` with ``P`` after ``iters`` balanced iterations
(uniform marginals by default; ``marginals="ones"`` is the published
code's choice). ``iters=0`` is exactly :func:`infonce` (Theorem 1).
""", "2.7442"),
    _preset("hs_ince", """HS-INCE: GCA-INCE with a single row projection (a half step).

Row normalisation cancels the row potential, so this equals
:func:`infonce`; it is the starting point of the paper's Theorem 1.
""", "2.7496", fixed=_HS_INCE),
    LossSpec("rince", """Robust InfoNCE, paper eq. (2) (Chuang et al. 2022).

Per anchor, with ``s = S / eps``:
``-(1/q) exp(q s_{i,t(i)}) + (1/q) (lam * sum_{j != i} exp(s_ij))^q``.
Computed directly from the logits; ``gca_rince(iters=0)`` equals it
(Theorem 2). The loss grows like ``exp(q / eps)``: an ``eps`` at which it
overflows the dtype is refused, with the smallest allowed ``eps``.
""", _rince, _derived(("eps", "lam", "q", "pairing", "self_mask",
                           "similarity_floor", "tile_size", "return_aux")), "-1.1908"),
    _preset("gca_rince", """GCA-RINCE, paper eq. (13).

``v`` from ``iters`` balanced iterations on the kernel ``exp(s)`` with all
marginals 1, then one row projection gives ``u``; ``x_i = exp(s_{i,t(i)})
v_{t(i)}``, ``y_i = lam / u_i = lam sum_{j != i} exp(s_ij) v_j``, loss
``mean_i (-(x_i^q) + y_i^q) / q``. ``iters=0`` equals :func:`rince`
(Theorem 2). With ``tau_a``/``tau_b`` < 1 the iterations (and the final
row step) are the relaxed ones on the same kernel ``exp(s)``, e.g.
``u = (1 / (exp(s) v))^tau_a``. ``eps`` must keep ``exp(q / eps)`` inside
the dtype (refused otherwise, with the smallest allowed ``eps``).
""", "-1.1992", fixed=_GCA_RINCE, defaults=dict(marginals="ones")),
    _preset("hs_rince", """HS-RINCE: GCA-RINCE with a single row projection (equals :func:`rince`).
""", "-1.1908", fixed=_HS_RINCE, defaults=dict(marginals="ones")),
    _preset("gca_uot", """GCA-UOT: alignment with an unbalanced (KL-relaxed) plan (paper Sec. 3.3).

``iters`` unbalanced iterations with ``tau_a = rho_a / (rho_a + eps)``,
``tau_b = rho_b / (rho_b + eps)`` on ``K = exp(-C / eps)`` with uniform
marginals ``1/N`` (the scale of the published code). The loss is
``w_ce * (-mean_i log P̄_{i,t(i)}) + w_rince * mean_i (-(x_i^q) + y_i^q)/q``
with ``x_i = P_{i,t(i)} / u_i = K_{i,t(i)} v_{t(i)}`` and
``y_i = lam / u_i``, ``u, v`` the scalings of the last iteration. Defaults
are the paper's: relaxations 0.2, CE weight 1, RINCE weight 0.02.
``rho = inf`` is a hard (balanced) marginal, ``tau = 1``.
""", "2.7437", defaults=dict(w_rince=0.02), call=_gca_uot,
            replace=dict(tau_a=[("rho_a", 0.2)], tau_b=[("rho_b", 0.2)])),
    _preset("iot", """Inverse optimal transport (Shi et al. 2023).

``iters`` rounds of row then column normalisation of ``K`` (balanced
Sinkhorn with unit marginals) and ``-mean_i log P_{i,t(i)}``: the plan
itself, not its row-normalisation, is fitted to the positives.
""", "2.7442", fixed=_IOT, defaults=dict(marginals="ones")),
    _preset("iot_uni", """IOT-uni: :func:`iot` plus ``lambda_p * KL(Q || P)`` (Shi et al. 2023).

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
""", "2.7453", fixed=_IOT, defaults=dict(marginals="ones", lambda_p=0.2)),
)
_BY_NAME = {spec.name: build(spec) for spec in SPECS}
gca_loss = _BY_NAME["gca_loss"]
infonce = _BY_NAME["infonce"]
gca_ince = _BY_NAME["gca_ince"]
hs_ince = _BY_NAME["hs_ince"]
rince = _BY_NAME["rince"]
gca_rince = _BY_NAME["gca_rince"]
hs_rince = _BY_NAME["hs_rince"]
gca_uot = _BY_NAME["gca_uot"]
iot = _BY_NAME["iot"]
iot_uni = _BY_NAME["iot_uni"]

#: Contrastive losses selectable by name, each ``fn(z1, z2, **params)``.
CONTRASTIVE_LOSSES = {name: fn for name, fn in _BY_NAME.items()
                      if name != "gca_loss"}


def get(name: str):
  """The contrastive loss called ``name`` (one of :data:`CONTRASTIVE_LOSSES`).

  Examples:
    >>> from gca_jax import losses
    >>> losses.get("gca_uot") is losses.gca_uot
    True
  """
  return lookup(CONTRASTIVE_LOSSES, name, "loss",
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
