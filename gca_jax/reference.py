"""Presets that reproduce the paper's published PyTorch losses.

``loss(name, z1, z2, **params)`` evaluates what the published code computes,
as a preset of :func:`gca_jax.losses.gca_loss` and the other primitives of
:mod:`gca_jax.losses` (no second implementation). Differences from the clean
losses, all faithful to the published code:

* the similarity is floored at ``1e-7`` (every negative cosine maps to 0)
  and self pairs get the largest cost (``self_mask="max_cost"``) instead of
  being excluded;
* ``gca_ince`` projects with marginals all ones; ``gca_rince`` always runs
  10 balanced iterations (whatever ``iters`` says), then applies
  ``CE^q / q`` to the cross-entropy;
* ``rince`` is ``CE^q / q`` of InfoNCE with the self logit lowered by
  ``max(S / eps)``, not eq. (2);
* ``gca_uot`` starts from ``v = 1/N``;
* ``iot``'s ``iters`` rounds of (row, column, transpose) normalisations are
  ``iters + 1`` alternating normalisations, rows first.

Parameters take the clean losses' names and defaults (those of
:func:`gca_jax.losses.gca_uot`, and ``lambda_p`` of
:func:`gca_jax.losses.iot_uni`): ``eps, iters, lam, q, rho_a, rho_b, w_ce,
w_rince, lambda_p``. The published code calls ``rho_a, rho_b, w_ce,
w_rince`` by the names ``relax1, relax2, r1, r2``. They are checked as the
clean losses check them (one clear error for a value out of range);
``docs/losses.md`` lists each preset's formula.

Examples:
  >>> import jax
  >>> from gca_jax import reference
  >>> z1, z2 = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 16))
  >>> print(f"{float(reference.loss('gca_uot', z1, z2, eps=0.5)):.4f}")
  2.7380
"""

from __future__ import annotations

import inspect

import jax
import jax.numpy as jnp

from gca_jax.losses import arguments, contrastive

NAMES = ("NT_Xent", "hs_ince", "gca_ince", "rince", "hs_rince", "gca_rince",
         "gca_uot", "iot", "iot_uni")
PARAMS = ("eps", "iters", "lam", "q", "rho_a", "rho_b", "w_ce", "w_rince",
          "lambda_p")
#: The published code's names of four of :data:`PARAMS`.
PUBLISHED_NAMES = dict(relax1="rho_a", relax2="rho_b", r1="w_ce", r2="w_rince")
# The single-device presets' defaults, not written again.
_DEFAULTS = {
    name: inspect.signature(
        contrastive.iot_uni if name == "lambda_p" else contrastive.gca_uot
    ).parameters[name].default
    for name in PARAMS}
# The published code's geometry: floored similarity, max-cost self pairs.
_PUBLISHED = dict(similarity_floor=1e-7, self_mask="max_cost")
# GCA-RINCE in the published code ignores its ``iters`` argument.
_GCA_RINCE_ITERS = 10


def _cross_entropy_power(cross_entropy, q):
  """The published ``CE**q / q``, read as 0 where ``CE`` rounds to <= 0.

  The cross-entropy is >= 0 in exact arithmetic; a round-off value <= 0
  gives NaN in the published code (``0**q`` has an infinite derivative). A
  NaN cross-entropy (from non-finite embeddings) stays NaN.
  """
  rounded_off = cross_entropy <= 0  # False for NaN, which must propagate
  safe = jnp.where(rounded_off, 1.0, cross_entropy)  # no inf * 0 in the grad
  return jnp.where(rounded_off, 0.0, safe ** q / q)


def loss(name: str, z1: jax.Array, z2: jax.Array, **params) -> jax.Array:
  """The published code's loss ``name`` on the two views ``z1, z2``.

  Args:
    name: one of :data:`NAMES`.
    z1, z2: ``(B, D)`` embeddings; row ``k`` of each from sample ``k``.
    **params: among :data:`PARAMS` (unknown names raise; the published
      names ``relax1, relax2, r1, r2`` are ``rho_a, rho_b, w_ce, w_rince``).

  Returns:
    The scalar loss.
  """
  if name not in NAMES:
    raise ValueError(f"unknown reference loss {name!r}; choose one of {NAMES}.")
  unknown = set(params) - set(PARAMS)
  if unknown:
    raise ValueError(
        f"unknown parameter(s) {sorted(unknown)} for reference.loss; allowed: "
        f"{PARAMS}.")
  p = {**_DEFAULTS, **params}
  eps, iters = p["eps"], p["iters"]
  if name in ("rince", "gca_rince"):
    arguments.check_q(p["q"])  # the other presets check their own

  if name == "NT_Xent":
    # Self logits lowered by 1e5 are excluded pairs in float64 and float32.
    return contrastive.infonce(z1, z2, eps=eps, similarity_floor=1e-7)
  if name == "hs_ince":
    return contrastive.hs_ince(z1, z2, eps=eps, marginals="ones",
                               **_PUBLISHED)
  if name == "gca_ince":
    return contrastive.gca_ince(z1, z2, eps=eps, iters=iters,
                                marginals="ones", **_PUBLISHED)
  if name == "rince":
    cross_entropy = contrastive.infonce(z1, z2, eps=eps, similarity_floor=1e-7,
                                        self_mask="lowered")
    return _cross_entropy_power(cross_entropy, p["q"])
  if name == "hs_rince":
    return contrastive.gca_loss(
        z1, z2, eps=eps, iters=0, final_row_step=True,
        init_log_v=-jnp.log(2 * z1.shape[0]), w_ce=0.0, w_rince=1.0,
        lam=p["lam"], q=p["q"], **_PUBLISHED)
  if name == "gca_rince":
    cross_entropy = contrastive.gca_ince(z1, z2, eps=eps,
                                         iters=_GCA_RINCE_ITERS, **_PUBLISHED)
    return _cross_entropy_power(cross_entropy, p["q"])
  if name == "gca_uot":
    size = 2 * z1.shape[0]
    return contrastive.gca_uot(
        z1, z2, eps=eps, iters=iters, rho_a=p["rho_a"], rho_b=p["rho_b"],
        lam=p["lam"], q=p["q"], w_ce=p["w_ce"], w_rince=p["w_rince"],
        init_log_v=-jnp.log(size), **_PUBLISHED)
  # iot, iot_uni: ``iters + 1`` alternating normalisations, rows first.
  half_steps = iters + 1
  return contrastive.gca_loss(
      z1, z2, eps=eps, iters=half_steps // 2, final_row_step=half_steps % 2,
      marginals="ones", w_ce=0.0, w_plan=1.0,
      lambda_p=p["lambda_p"] if name == "iot_uni" else 0.0,
      self_mask="max_cost")
