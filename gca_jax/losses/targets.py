"""Target plans: which pairs a loss should align (SPEC section 3).

``target="pairs"`` (the default of every loss) is the identity-like plan that
puts all of a row's mass on its positive. The helpers here build ``(N, N)``
matrices for richer targets; a loss row-normalises them (self pairs
excluded) before use, so only ratios within a row matter.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from gca_jax.losses.geometry import PAIRINGS


def _rows_of_plan(per_sample: jax.Array, pairing: str) -> jax.Array:
  """Per-sample values laid out along the rows of the plan."""
  if pairing not in PAIRINGS:
    raise ValueError(f"pairing must be one of {PAIRINGS}, got {pairing!r}.")
  per_sample = jnp.asarray(per_sample)
  if per_sample.ndim != 1:
    raise ValueError(
        f"expected a (B,) vector of per-sample ids, got shape "
        f"{per_sample.shape}.")
  if pairing == "joint":
    return jnp.concatenate([per_sample, per_sample])
  return per_sample


def _positives_mask(size: int, pairing: str) -> jax.Array:
  if pairing == "joint":
    batch = size // 2
    return jnp.roll(jnp.eye(size, dtype=bool), batch, axis=1)
  return jnp.eye(size, dtype=bool)


def domain_target(domains: jax.Array, alpha: float, beta: float, *,
                  pairing: str = "joint") -> jax.Array:
  """Domain-block target plan (paper Sec. 3.4, Fig. 1(B)).

  ``T_ij = 1`` on positive pairs, ``alpha`` for other pairs within the same
  domain and ``beta`` across domains. With ``alpha = beta = 0`` it is the
  ``"pairs"`` target; ``alpha > beta`` pulls same-domain samples together.

  Args:
    domains: ``(B,)`` integer domain of each sample.
    alpha: weight of same-domain, non-positive pairs (>= 0).
    beta: weight of cross-domain pairs (>= 0).
    pairing: the loss's pairing (``"joint"`` gives ``(2B, 2B)``).

  Returns:
    The ``(N, N)`` target (self pairs of the joint layout are 0).
  """
  if alpha < 0 or beta < 0:
    raise ValueError(
        f"alpha and beta must be >= 0, got alpha={alpha}, beta={beta}.")
  rows = _rows_of_plan(domains, pairing)
  same_domain = rows[:, None] == rows[None, :]
  target = jnp.where(same_domain, alpha, beta).astype(jnp.float32)
  target = jnp.where(_positives_mask(rows.shape[0], pairing), 1.0, target)
  if pairing == "joint":
    target = jnp.where(jnp.eye(rows.shape[0], dtype=bool), 0.0, target)
  return target


def class_target(labels: jax.Array, *, pairing: str = "joint") -> jax.Array:
  """Supervised target plan: 1 between samples of the same class, else 0.

  Positive pairs always share their class, so they are included; self pairs
  of the joint layout are 0.
  """
  rows = _rows_of_plan(labels, pairing)
  target = (rows[:, None] == rows[None, :]).astype(jnp.float32)
  if pairing == "joint":
    target = jnp.where(jnp.eye(rows.shape[0], dtype=bool), 0.0, target)
  return target
