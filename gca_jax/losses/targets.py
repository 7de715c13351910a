"""Target plans: which pairs a loss should align.

``target="pairs"`` (the default of every loss) is the identity-like plan that
puts all of a row's mass on its positive. The helpers here build ``(N, N)``
matrices for richer targets; a loss row-normalises them (self pairs
excluded) before use, so only ratios within a row matter.

A target's dtype follows its float inputs (``alpha``, ``beta``), else the
enabled precision (float64 with ``jax_enable_x64``, else float32), unless
``dtype`` is given.

The same builders give one device's rows of the target when the batch is
sharded over a mesh axis (:mod:`gca_jax.losses.sharded`).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from gca_jax.losses import collectives
from gca_jax.losses.arguments import concrete
from gca_jax.losses.geometry import PAIRINGS, sharded_layout


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


class _Layout(NamedTuple):
  """Per-sample ids along the rows and columns of (this device's rows of)
  the plan, where the positives are, and the self pairs (``None``: none)."""

  row_ids: jax.Array
  col_ids: jax.Array
  positives: jax.Array
  self_pairs: jax.Array | None


def _layout(per_sample, pairing: str, axis_name) -> _Layout:
  """The whole plan (``axis_name=None``) or this device's rows of it, its
  ids gathered from every device (row order: ``sharded_layout``)."""
  rows = _rows_of_plan(per_sample, pairing)
  if axis_name is None:
    size = rows.shape[0]
    self_pairs = jnp.eye(size, dtype=bool) if pairing == "joint" else None
    return _Layout(rows, rows, _positives_mask(size, pairing), self_pairs)
  batch = rows.shape[0] // 2 if pairing == "joint" else rows.shape[0]
  layout = sharded_layout(batch, pairing, axis_name)
  everyone = collectives.gather(rows[:batch], axis_name)
  cols = (jnp.concatenate([everyone, everyone]) if pairing == "joint"
          else everyone)
  columns = jnp.arange(layout.num_columns)[None, :]
  self_pairs = (columns == layout.row_index[:, None] if pairing == "joint"
                else None)
  return _Layout(rows, cols, columns == layout.positives[:, None], self_pairs)


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
  checked = concrete(value)
  if checked is not None and not 0 <= checked < math.inf:
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
  return _domain_target(domains, alpha, beta, pairing=pairing, dtype=dtype,
                        axis_name=None)


def _domain_target(domains, alpha, beta, *, pairing, dtype, axis_name):
  """:func:`domain_target`; with ``axis_name``, this device's rows of it
  from this device's ``domains`` (the others' are gathered)."""
  _check_weight("alpha", alpha)
  _check_weight("beta", beta)
  dtype = _float_dtype(dtype, alpha, beta)
  layout = _layout(domains, pairing, axis_name)
  same_domain = layout.row_ids[:, None] == layout.col_ids[None, :]
  target = jnp.where(same_domain, jnp.asarray(alpha, dtype),
                     jnp.asarray(beta, dtype))
  target = jnp.where(layout.positives, jnp.ones((), dtype), target)
  if layout.self_pairs is not None:
    target = jnp.where(layout.self_pairs, jnp.zeros((), dtype), target)
  return target


def class_target(labels: jax.Array, *, pairing: str = "joint",
                 dtype=None) -> jax.Array:
  """Supervised target plan: 1 between samples of the same class, else 0.

  Positive pairs always share their class, so they are included; self pairs
  of the joint layout are 0. ``dtype``: float dtype of the result (default:
  the enabled precision, float64 with x64 else float32).
  """
  return _class_target(labels, pairing=pairing, dtype=dtype, axis_name=None)


def _class_target(labels, *, pairing, dtype, axis_name):
  """:func:`class_target`; with ``axis_name``, this device's rows of it
  from this device's ``labels`` (the others' are gathered)."""
  dtype = _float_dtype(dtype)
  layout = _layout(labels, pairing, axis_name)
  target = (layout.row_ids[:, None] == layout.col_ids[None, :]).astype(dtype)
  if layout.self_pairs is not None:
    target = jnp.where(layout.self_pairs, jnp.zeros((), dtype), target)
  return target
