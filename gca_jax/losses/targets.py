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
import numpy as np

from gca_jax.losses import collectives
from gca_jax.losses.arguments import concrete
from gca_jax.losses.geometry import PAIRINGS, sharded_layout


class LabelTarget(NamedTuple):
  """A block target plan kept as the labels it is built from.

  The plan of :func:`hierarchical_target` (``domain_target`` and
  ``class_target`` are its one-level cases), never materialised: a loss
  rebuilds its entries from the labels where it needs them, tile by tile
  with ``tile_size``, so the target costs ``O(B)`` memory. Built by the
  builders with ``as_labels=True``; every loss takes it as ``target=``.
  With rows sharded over a mesh axis, ``levels`` holds this device's
  samples (the loss gathers the others').

  Attributes:
    levels: ``(L, B)`` integer labels of each sample, finest level first.
    weights: ``(L,)`` weight ``alpha_l`` of pairs whose finest shared level
      is ``l``.
    beta: weight of pairs that share no level.
  """

  levels: jax.Array
  weights: jax.Array
  beta: jax.Array

  def matrix(self, *, pairing: str, dtype=None, axis_name=None) -> jax.Array:
    """The ``(N, N)`` plan (this device's rows with ``axis_name``)."""
    return _hierarchical_target(list(self.levels), list(self.weights),
                                beta=self.beta, pairing=pairing, dtype=dtype,
                                axis_name=axis_name)


def label_target(labels_per_level, weights, *, beta) -> LabelTarget:
  """:class:`LabelTarget` of :func:`hierarchical_target`'s arguments, checked."""
  levels, weights = _levels_and_weights(labels_per_level, weights)
  _check_weight("beta", beta)
  for level in levels:
    if not jnp.issubdtype(level.dtype, jnp.integer):
      raise TypeError(
          f"labels must be integer arrays, got dtype {level.dtype}.")
  dtype = _float_dtype(None, *weights, beta)
  return LabelTarget(jnp.stack(levels), jnp.asarray(weights, dtype),
                     jnp.asarray(beta, dtype))


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


def _check_ids(ids, name: str) -> None:
  """Raises a one-line TypeError unless ``ids`` are integer ids: the plan
  compares them for equality, so a fractional or NaN id (never equal to
  itself) silently changes it. Float arrays of whole numbers are accepted
  where they are concrete; a traced float array cannot be checked."""
  dtype = getattr(ids, "dtype", None)
  values = None
  if dtype is None or not isinstance(ids, jax.core.Tracer):
    try:
      values = np.asarray(ids)
    except (TypeError, ValueError) as e:
      raise TypeError(f"{name} must be a (B,) array of integer ids, got {ids!r:.60} "
                      f"({e}).") from None
    dtype = values.dtype
  if np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.bool_):
    return
  example = ""
  if values is not None and np.issubdtype(dtype, np.floating):
    fractional = values[~(np.isfinite(values) & (values == np.round(values)))]
    if not fractional.size:
      return
    example = f" (e.g. {fractional.ravel()[0]})"
  raise TypeError(f"{name} must be integer ids, got dtype {dtype}{example}; pass them as an "
                  "integer array.")


def _check_weight(name: str, value) -> None:
  """A concrete weight must be finite and >= 0; a traced one is trusted (a
  negative traced weight makes the loss NaN, see ``gca_loss``)."""
  checked = concrete(value)
  if checked is not None and not 0 <= checked < math.inf:
    raise ValueError(f"{name} must be finite and >= 0, got {value}.")


def domain_target(domains: jax.Array, alpha: float, beta: float, *,
                  pairing: str = "joint", dtype=None,
                  as_labels: bool = False) -> jax.Array | LabelTarget:
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
    as_labels: return the target as its labels (a :class:`LabelTarget`,
      ``O(B)`` memory: what the losses' ``tile_size`` path takes) instead
      of the ``(N, N)`` matrix.

  Returns:
    The ``(N, N)`` target (self pairs of the joint layout are 0), or with
    ``as_labels=True`` its :class:`LabelTarget`.

  Examples:
    >>> import jax.numpy as jnp
    >>> from gca_jax.losses import domain_target
    >>> domain_target(jnp.array([0, 0, 1]), alpha=0.5, beta=0.1,
    ...               pairing="cross")
    Array([[1. , 0.5, 0.1],
           [0.5, 1. , 0.1],
           [0.1, 0.1, 1. ]], dtype=float32)
  """
  if as_labels:
    return label_target([domains], [alpha], beta=beta)
  return _domain_target(domains, alpha, beta, pairing=pairing, dtype=dtype,
                        axis_name=None)


def _domain_target(domains, alpha, beta, *, pairing, dtype, axis_name):
  """:func:`domain_target`; with ``axis_name``, this device's rows of it
  from this device's ``domains`` (the others' are gathered)."""
  _check_ids(domains, "domains")
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
                 dtype=None, as_labels: bool = False) -> jax.Array | LabelTarget:
  """Supervised target plan: 1 between samples of the same class, else 0.

  Positive pairs always share their class, so they are included; self pairs
  of the joint layout are 0. It is :func:`hierarchical_target` with one level
  and no weight below the class.

  Args:
    labels: ``(B,)`` integer class of each sample.
    pairing: ``"joint"`` (``(2B, 2B)``, rows ``[z1; z2]``) or ``"cross"``
      (``(B, B)``, rows of ``z1`` against columns of ``z2``), as the loss.
    dtype: float dtype of the result (default: the enabled precision,
      float64 with x64 else float32).
    as_labels: return the target as its labels (a :class:`LabelTarget`,
      what the losses' ``tile_size`` path takes) instead of the matrix.

  Returns:
    The ``(N, N)`` target plan, or with ``as_labels=True`` its
    :class:`LabelTarget`.

  Examples:
    >>> import jax.numpy as jnp
    >>> from gca_jax.losses import class_target
    >>> class_target(jnp.array([0, 1]))  # joint: rows z1_0, z1_1, z2_0, z2_1
    Array([[0., 0., 1., 0.],
           [0., 0., 0., 1.],
           [1., 0., 0., 0.],
           [0., 1., 0., 0.]], dtype=float32)
  """
  if as_labels:
    return label_target([labels], [1.0], beta=0.0)
  return _class_target(labels, pairing=pairing, dtype=dtype, axis_name=None)


def _class_target(labels, *, pairing, dtype, axis_name):
  """:func:`class_target`; with ``axis_name``, this device's rows of it
  from this device's ``labels`` (the others' are gathered)."""
  _check_ids(labels, "labels")
  dtype = _float_dtype(dtype)
  layout = _layout(labels, pairing, axis_name)
  target = (layout.row_ids[:, None] == layout.col_ids[None, :]).astype(dtype)
  if layout.self_pairs is not None:
    target = jnp.where(layout.self_pairs, jnp.zeros((), dtype), target)
  return target


def hierarchical_target(labels_per_level, weights, *, beta: float,
                        pairing: str = "joint", dtype=None,
                        as_labels: bool = False) -> jax.Array | LabelTarget:
  r"""Target plan of a label hierarchy: nested blocks of decreasing weight.

  The library's extension of the paper's one-level target (its Sec. 3.4,
  :func:`domain_target`) to several levels of labels; the multi-level rule
  below is this library's, not the paper's. With ``L`` levels of labels,
  finest first (e.g. class, then super-class, then domain), and weights
  ``alpha_1, ..., alpha_L``:

  .. math::

    T_{ij} = \begin{cases}
      1 & j = t(i) \text{ (the positive)}, \\
      \alpha_l & l = \min\{k : y^{(k)}_i = y^{(k)}_j\} \text{ (the finest
        shared level)}, \\
      \beta & \text{no level shared}, \\
      0 & j = i \text{ (a self pair of the joint layout)}.
    \end{cases}

  The levels need not be nested: a pair gets the weight of the finest level
  at which its labels agree. With ``alpha_1 > alpha_2 > ... > beta`` the loss
  pulls together samples the more the finer the label they share. The
  one-level case is :func:`domain_target` (``[domains], [alpha]``) and, with
  ``[labels], [1.0], beta=0``, :func:`class_target`; a loss row-normalises
  the plan, so only ratios within a row matter.

  Args:
    labels_per_level: a non-empty sequence of ``(B,)`` integer label arrays,
      finest level first (or an ``(L, B)`` array).
    weights: ``L`` weights ``alpha_l`` of pairs whose finest shared level is
      ``l`` (each finite and >= 0; may be traced).
    beta: weight of pairs that share no level (finite, >= 0; may be traced).
    pairing: the loss's pairing (``"joint"`` gives ``(2B, 2B)``).
    dtype: float dtype of the result (default: see the module docstring).
    as_labels: return the target as its labels (a :class:`LabelTarget`,
      what the losses' ``tile_size`` path takes) instead of the matrix.

  Returns:
    The ``(N, N)`` target (self pairs of the joint layout are 0), or with
    ``as_labels=True`` its :class:`LabelTarget`.

  Examples:
    >>> import jax.numpy as jnp
    >>> from gca_jax.losses.targets import hierarchical_target
    >>> classes, superclasses = jnp.array([0, 1, 2]), jnp.array([0, 0, 1])
    >>> hierarchical_target([classes, superclasses], [0.5, 0.25], beta=0.0,
    ...                     pairing="cross")
    Array([[1.  , 0.25, 0.  ],
           [0.25, 1.  , 0.  ],
           [0.  , 0.  , 1.  ]], dtype=float32)
  """
  if as_labels:
    return label_target(labels_per_level, weights, beta=beta)
  return _hierarchical_target(labels_per_level, weights, beta=beta,
                              pairing=pairing, dtype=dtype, axis_name=None)


def _levels_and_weights(labels_per_level, weights):
  """The levels as ``(B,)`` arrays and one weight per level, checked."""
  if isinstance(labels_per_level, (str, bytes)) or not hasattr(
      labels_per_level, "__len__") or len(labels_per_level) == 0:
    raise ValueError(
        "labels_per_level must be a non-empty sequence of (B,) label arrays, "
        f"finest level first, got {labels_per_level!r}.")
  for level, labels in enumerate(labels_per_level):
    _check_ids(labels, f"labels_per_level[{level}]")
  levels = [jnp.asarray(level) for level in labels_per_level]
  if levels[0].ndim == 0:
    raise ValueError(
        "labels_per_level must be a sequence of (B,) label arrays, one per "
        "level (wrap a single level in a list: [labels]), got scalars.")
  shapes = {level.shape for level in levels}
  if len(shapes) != 1 or levels[0].ndim != 1:
    raise ValueError(
        "labels_per_level must hold (B,) label arrays of one shape, got shapes "
        f"{[level.shape for level in levels]}.")
  if not hasattr(weights, "__len__") or len(weights) != len(levels):
    raise ValueError(
        f"weights must hold one weight per level ({len(levels)} levels), got "
        f"{weights!r}.")
  weights = list(weights)
  for level, weight in enumerate(weights):
    _check_weight(f"weights[{level}]", weight)
  return levels, weights


def _hierarchical_target(labels_per_level, weights, *, beta, pairing, dtype,
                         axis_name):
  """:func:`hierarchical_target`; with ``axis_name``, this device's rows of
  it from this device's labels of every level (the others' are gathered)."""
  levels, weights = _levels_and_weights(labels_per_level, weights)
  _check_weight("beta", beta)
  dtype = _float_dtype(dtype, *weights, beta)
  target = jnp.asarray(beta, dtype)
  layout = None
  # Coarsest first, so that a finer shared level overwrites a coarser one.
  for level, weight in reversed(list(zip(levels, weights))):
    layout = _layout(level, pairing, axis_name)
    shared = layout.row_ids[:, None] == layout.col_ids[None, :]
    target = jnp.where(shared, jnp.asarray(weight, dtype), target)
  target = jnp.where(layout.positives, jnp.ones((), dtype), target)
  if layout.self_pairs is not None:
    target = jnp.where(layout.self_pairs, jnp.zeros((), dtype), target)
  return target
