"""Target plans: which pairs a loss should align.

``target="pairs"`` (the default of every loss) is the identity-like plan that
puts all of a row's mass on its positive. The helpers here build ``(N, N)``
matrices for richer targets; a loss row-normalises them (self pairs
excluded) before use, so only ratios within a row matter.

A target's dtype follows its float inputs (``alpha``, ``beta``), else the
enabled precision (float64 with ``jax_enable_x64``, else float32), unless
``dtype`` is given.
"""

from __future__ import annotations

import math

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


def _float_dtype(dtype, *values) -> jnp.dtype:
  """``dtype``, else the float dtype of ``values``, else the default float.

  Python floats are weakly typed, so they give the default float dtype:
  float64 when x64 is enabled, float32 otherwise.
  """
  if dtype is None:
    dtype = jnp.result_type(*values, float)
  dtype = jnp.dtype(dtype)
  if not jnp.issubdtype(dtype, jnp.floating):
    raise TypeError(f"dtype must be a floating-point dtype, got {dtype}.")
  return dtype


def _check_weight(name: str, value) -> None:
  """A concrete weight must be finite and >= 0; a traced one is trusted (a
  negative traced weight makes the loss NaN, see ``gca_loss``)."""
  try:
    concrete = float(value)
  except (TypeError, jax.errors.ConcretizationTypeError):
    return
  if not 0 <= concrete < math.inf:
    raise ValueError(f"{name} must be finite and >= 0, got {value}.")


def domain_target(domains: jax.Array, alpha: float, beta: float, *,
                  pairing: str = "joint", dtype=None) -> jax.Array:
  """Domain-block target plan (paper Sec. 3.4, Fig. 1(A)).

  ``T_ij = 1`` on positive pairs, ``alpha`` for other pairs within the same
  domain and ``beta`` across domains. With ``alpha = beta = 0`` it is the
  ``"pairs"`` target; ``alpha > beta`` pulls same-domain samples together.

  Args:
    domains: ``(B,)`` integer domain of each sample.
    alpha: weight of same-domain, non-positive pairs (finite, >= 0; may be
      traced, e.g. a jitted argument).
    beta: weight of cross-domain pairs (finite, >= 0; may be traced).
    pairing: the loss's pairing (``"joint"`` gives ``(2B, 2B)``).
    dtype: float dtype of the result (default: see the module docstring).

  Returns:
    The ``(N, N)`` target (self pairs of the joint layout are 0).
  """
  _check_weight("alpha", alpha)
  _check_weight("beta", beta)
  dtype = _float_dtype(dtype, alpha, beta)
  rows = _rows_of_plan(domains, pairing)
  same_domain = rows[:, None] == rows[None, :]
  target = jnp.where(same_domain, jnp.asarray(alpha, dtype),
                     jnp.asarray(beta, dtype))
  target = jnp.where(_positives_mask(rows.shape[0], pairing),
                     jnp.ones((), dtype), target)
  if pairing == "joint":
    target = jnp.where(jnp.eye(rows.shape[0], dtype=bool),
                       jnp.zeros((), dtype), target)
  return target


def class_target(labels: jax.Array, *, pairing: str = "joint",
                 dtype=None) -> jax.Array:
  """Supervised target plan: 1 between samples of the same class, else 0.

  Positive pairs always share their class, so they are included; self pairs
  of the joint layout are 0. ``dtype``: float dtype of the result (default:
  the enabled precision, float64 with x64 else float32).
  """
  dtype = _float_dtype(dtype)
  rows = _rows_of_plan(labels, pairing)
  target = (rows[:, None] == rows[None, :]).astype(dtype)
  if pairing == "joint":
    target = jnp.where(jnp.eye(rows.shape[0], dtype=bool),
                       jnp.zeros((), dtype), target)
  return target
