"""The batch's geometry: normalised embeddings, cosine cost, positives.

Everything a loss needs before any projection runs (``docs/losses.md``):

* embeddings are L2-normalised: a zero row stays a zero row (so the loss is
  finite), a row holding NaN or inf becomes NaN (so the loss is not finite),
  and the result does not depend on the scale of a finite row;
* ``S = Ẑ Ẑᵀ`` is the cosine similarity and ``C = 1 - S`` the cost, so the
  log-kernel is ``M = -C / eps``;
* ``pairing="joint"`` stacks both views (``N = 2B``, positive of row ``i`` is
  ``(i + B) mod N``, self pairs are not candidates); ``pairing="cross"`` pairs
  ``z1`` with ``z2`` (``B x B``, positive of row ``i`` is column ``i``).

With ``axis_name`` (inside :func:`jax.shard_map`) each device holds its own
examples' rows ``z1, z2`` and gathers every device's rows for the columns:
its cost is its rows of the global cost, ``(N/P) x N`` (see
:func:`sharded_layout` for the row order).

The geometry is kept apart from the projections (as ott-jax keeps its
``Geometry`` apart from its solvers): a projection only sees the log-kernel.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from gca_jax.losses import arguments, collectives

PAIRINGS = ("joint", "cross")
SELF_MASKS = ("exclude", "max_cost", "lowered")

# Rows whose largest entry exceeds this are scaled down before normalising.
_HUGE = 2.0 ** 64

#: Largest cost a normalised pair can have (antipodal embeddings).
MAX_COSINE_COST = 2.0


class BatchGeometry(NamedTuple):
  """The cost of a batch and where its positives are.

  Attributes:
    cost: ``(N, M)`` cost ``C = 1 - S`` (with ``self_mask="max_cost"`` the
      diagonal already holds ``max C``).
    positives: ``(N,)`` int32, the column of each row's positive, ``t(i)``.
    excluded: ``(N, M)`` bool mask of pairs that are not candidates (the
      diagonal for ``pairing="joint", self_mask="exclude"``), or ``None``.
    cost_bound: a static upper bound on ``cost`` used to decide whether the
      exp-domain (scaling) form of a projection is safe.
    row_index: ``None`` (the rows are the whole batch, in order), or, with
      rows sharded over a mesh axis, the ``(n,)`` int32 global row of each
      of this device's rows.
  """

  cost: jax.Array
  positives: jax.Array
  excluded: jax.Array | None
  cost_bound: float
  row_index: jax.Array | None = None

  @property
  def shape(self) -> tuple[int, int]:
    """``(n, N)``: this device's rows, all columns."""
    return self.cost.shape

  @property
  def dtype(self):
    return self.cost.dtype

  def log_kernel(self, eps) -> jax.Array:
    """``M = -C / eps``, with ``-inf`` on excluded pairs.

    (:class:`gca_jax.losses.tiled.TiledKernel` is the same kernel, never
    formed.)"""
    log_kernel = -self.cost / eps
    if self.excluded is not None:
      log_kernel = jnp.where(self.excluded, -jnp.inf, log_kernel)
    return log_kernel


def compute_dtype(dtype) -> jnp.dtype:
  """Losses run in at least float32 (bfloat16/float16 inputs are upcast)."""
  return jnp.promote_types(dtype, jnp.float32)


def l2_normalize(z: jax.Array, axis: int = -1) -> jax.Array:
  """``z / |z|_2`` along ``axis``; a zero row maps to zero, NaN/inf to NaN.

  Each row is first divided by its largest absolute entry ``m``, so that the
  squares neither overflow nor underflow: a finite row normalises the same
  whatever its scale (``1e30 z`` or ``1e-30 z`` in float32). ``m`` is held
  constant in the gradient, which is exact because ``z / |z|`` does not
  change when ``z`` is scaled.

  * a zero row (``m = 0``) maps to a zero row with a zero gradient: the
    divisors are replaced by 1 *before* anything is differentiated;
  * a row holding NaN or inf has ``m`` NaN or inf, which is not 0, and maps
    to a NaN row, so a loss of it is not finite;
  * a row whose ``m`` is beyond ``2^64`` (up to the dtype's largest finite
    value) is first scaled by ``2^-64``, exactly: XLA divides by ``m``
    through its reciprocal, which for ``m`` near the largest value is
    subnormal and flushed to zero;
  * a row whose ``m`` is subnormal (below the smallest normal number,
    ``1.2e-38`` in float32) reads as a zero row where the backend flushes
    subnormals to zero (XLA on CPU and GPU).

  Examples:
    >>> import jax.numpy as jnp
    >>> from gca_jax.losses import l2_normalize
    >>> l2_normalize(jnp.array([[3.0, 4.0], [0.0, 0.0], [1.5e38, 2e38]]))
    Array([[0.6, 0.8],
           [0. , 0. ],
           [0.6, 0.8]], dtype=float32)
  """
  if z.shape[axis] == 0:
    raise ValueError(
        f"cannot normalise along an empty axis (shape {z.shape}, axis {axis}).")
  scale = jax.lax.stop_gradient(jnp.max(jnp.abs(z), axis=axis, keepdims=True))
  # A power of two, so exact; a factor 1 elsewhere keeps those rows (and
  # their gradients, signed zeros included) bit for bit.
  prescale = jnp.where(scale > _HUGE, 1.0 / _HUGE, 1.0).astype(z.dtype)
  z, scale = z * prescale, scale * prescale
  nonzero = scale != 0  # True for NaN and inf, which must propagate
  scaled = z / jnp.where(nonzero, scale, 1.0)
  # Between 1 and D for a finite non-zero row, so its square root is safe.
  squared_norm = jnp.sum(scaled * scaled, axis=axis, keepdims=True)
  norm = jnp.sqrt(jnp.where(nonzero, squared_norm, 1.0))
  return jnp.where(nonzero, scaled / norm, 0.0)


def check_real(name: str, z) -> None:
  """``z`` must be an array of a real (floating, integer or bool) dtype."""
  dtype = getattr(z, "dtype", None)
  if dtype is None or not hasattr(z, "shape"):
    raise TypeError(
        f"{name} must be a jax or numpy array, got {type(z).__name__}.")
  if not (jnp.issubdtype(dtype, jnp.floating)
          or jnp.issubdtype(dtype, jnp.integer) or dtype == jnp.bool_):
    raise TypeError(
        f"{name} must have a real (floating-point or integer) dtype, got {dtype}"
        + ("; complex embeddings are not supported (split them into real "
           "features)." if jnp.issubdtype(dtype, jnp.complexfloating)
           else "."))


def check_pair(z1, z2, names: tuple[str, str] = ("z1", "z2"),
               min_rows: int = 2) -> None:
  """Trace-time checks on the two views' embeddings (shapes and dtypes);
  ``min_rows``: the fewest rows allowed (1 for one device's share)."""
  first, second = names
  both = f"{first} and {second}"
  check_real(first, z1)
  check_real(second, z2)
  if z1.ndim != 2 or z2.ndim != 2:
    raise ValueError(
        f"{both} must be (B, D) matrices, got shapes {z1.shape} and "
        f"{z2.shape}; use jax.vmap for a leading batch of problems.")
  if z1.shape != z2.shape:
    raise ValueError(
        f"{both} must have the same shape, got {z1.shape} and {z2.shape}.")
  if z1.shape[0] < min_rows:
    raise ValueError(
        f"{both} need at least {min_rows} rows (B >= {min_rows}), got B = "
        f"{z1.shape[0]}.")
  if z1.shape[1] < 1:
    raise ValueError(
        f"{both} need at least 1 feature (D >= 1), got D = {z1.shape[1]}.")


class ShardedLayout(NamedTuple):
  """Where this device's rows sit in the global plan (rows sharded).

  Attributes:
    row_index: ``(n,)`` int32 global row of each local row.
    positives: ``(n,)`` int32 global column of each local row's positive.
    num_columns: ``N``, the global number of columns (and of rows).
  """

  row_index: jax.Array
  positives: jax.Array
  num_columns: int


def sharded_layout(batch: int, pairing: str, axis_name) -> ShardedLayout:
  """The global rows of device ``d``'s ``batch`` examples (inside shard_map).

  The global batch is the devices' examples in device order, ``B = P b``.
  ``"joint"``: the global rows are ``[z1_all; z2_all]`` (``N = 2B``) and a
  device's local rows are its ``z1`` rows then its ``z2`` rows, so its row
  ``k < b`` is global row ``d b + k`` and its row ``b + k`` is global row
  ``B + d b + k``; the positive of global row ``i`` is ``(i + B) mod N`` and
  its self pair is column ``i``. ``"cross"``: local row ``k`` is global row
  ``d b + k`` of ``z1_all``, its positive column ``d b + k`` of ``z2_all``.
  """
  devices = collectives.axis_size(axis_name)
  first = jax.lax.axis_index(axis_name) * batch
  local = (first + jnp.arange(batch)).astype(jnp.int32)
  total = devices * batch
  if pairing == "joint":
    row_index = jnp.concatenate([local, local + total])
    return ShardedLayout(row_index, (row_index + total) % (2 * total),
                         2 * total)
  return ShardedLayout(local, local, total)


def checked_sharded_layout(batch: int, pairing: str, axis_name) -> ShardedLayout:
  """:func:`sharded_layout` of two views' ``batch`` rows per device, refused in
  one line when all devices together hold fewer than 2 examples."""
  layout = sharded_layout(batch, pairing, axis_name)
  if layout.num_columns < (4 if pairing == "joint" else 2):
    raise ValueError(
        f"z1 and z2 need at least 2 rows over all devices (B >= 2), got "
        f"B = {batch} on the one device of axis {axis_name!r}.")
  return layout


def _global_max(values: jax.Array, axis_name) -> jax.Array:
  """The largest entry over all devices, differentiable like ``jnp.max``
  (the gathered local maxima are reduced again, so the gradient reaches the
  global maximiser only)."""
  return jnp.max(jax.lax.all_gather(jnp.max(values), axis_name))


def batch_geometry(
    z1: jax.Array,
    z2: jax.Array,
    *,
    pairing: str = "joint",
    self_mask: str = "exclude",
    similarity_floor: float | None = None,
    axis_name=None,
) -> BatchGeometry:
  """Cosine cost between the two views' embeddings.

  Args:
    z1, z2: ``(B, D)`` embeddings of the two views; row ``k`` of each comes
      from sample ``k``. Any real dtype; computed in at least float32.
    pairing: ``"joint"`` (``N = 2B`` rows, SimCLR's layout) or ``"cross"``
      (``B x B`` between ``z1`` and ``z2``).
    self_mask: for ``"joint"``: ``"exclude"`` removes self pairs from the
      kernel, ``"max_cost"`` sets their cost to ``max C`` (the published
      code), ``"lowered"`` lowers their similarity by ``max S`` (the
      published RINCE: self logit ``s_ii - max s``). Ignored for
      ``"cross"``, which has no self pairs.
    similarity_floor: ``None`` or ``f`` in ``[-1, 1)``: ``S`` is clamped from
      below at ``f``.
    axis_name: ``None`` (the whole batch), or, inside :func:`jax.shard_map`,
      the mesh axis the batch is sharded over: ``z1, z2`` are then this
      device's ``b`` examples, the columns are gathered from every device,
      and the result holds this device's rows of the global geometry (row
      order: :func:`sharded_layout`); ``max C`` and ``max S`` of the self
      masks are global.

  Returns:
    A :class:`BatchGeometry`.

  Examples:
    >>> import jax.numpy as jnp
    >>> from gca_jax.losses import batch_geometry
    >>> z1, z2 = jnp.array([[1.0, 0.0], [0.0, 1.0]]), jnp.array([[2.0, 0.0], [1.0, 1.0]])
    >>> geometry = batch_geometry(z1, z2, pairing="cross")
    >>> geometry.cost.round(4), geometry.positives
    (Array([[0.    , 0.2929],
           [1.    , 0.2929]], dtype=float32), Array([0, 1], dtype=int32))
  """
  check_pair(z1, z2, min_rows=2 if axis_name is None else 1)
  if pairing not in PAIRINGS:
    raise ValueError(f"pairing must be one of {PAIRINGS}, got {pairing!r}.")
  if self_mask not in SELF_MASKS:
    raise ValueError(
        f"self_mask must be one of {SELF_MASKS}, got {self_mask!r}.")
  similarity_floor = arguments.check_similarity_floor(similarity_floor)
  dtype = compute_dtype(jnp.result_type(z1, z2))
  z1 = l2_normalize(z1.astype(dtype))
  z2 = l2_normalize(z2.astype(dtype))
  # Per branch: the rows and columns of S, each row's positive and self-pair
  # column, and the max over the whole (global) matrix for the self masks.
  if axis_name is None:
    batch = z1.shape[0]
    if pairing == "joint":
      rows = cols = jnp.concatenate([z1, z2], axis=0)
      positives = (jnp.arange(2 * batch) + batch) % (2 * batch)
    else:
      rows, cols = z1, z2
      positives = jnp.arange(batch)
    row_index = None
    self_columns = jnp.arange(rows.shape[0])
    matrix_max = jnp.max
  else:
    layout = checked_sharded_layout(z1.shape[0], pairing, axis_name)
    gather = lambda z: collectives.gather(z, axis_name)
    if pairing == "joint":
      rows = jnp.concatenate([z1, z2], axis=0)
      cols = jnp.concatenate([gather(z1), gather(z2)], axis=0)
    else:
      rows, cols = z1, gather(z2)
    positives = layout.positives
    row_index = self_columns = layout.row_index
    matrix_max = lambda values: _global_max(values, axis_name)
  similarity = rows @ cols.T
  cost_bound = MAX_COSINE_COST
  if similarity_floor is not None:
    similarity = jnp.maximum(similarity, similarity_floor)
    floor = arguments.concrete(similarity_floor)
    if floor is not None:  # a traced floor keeps the bound of any cosine
      cost_bound = min(cost_bound, 1.0 - floor)
  cost = 1.0 - similarity
  excluded = None
  if pairing == "joint":
    diagonal = jnp.arange(cols.shape[0])[None, :] == self_columns[:, None]
    if self_mask == "exclude":
      excluded = diagonal
    elif self_mask == "max_cost":
      cost = jnp.where(diagonal, matrix_max(cost), cost)
    else:
      cost = jnp.where(diagonal, cost + matrix_max(similarity), cost)
      cost_bound += 1.0
  return BatchGeometry(cost, positives.astype(jnp.int32), excluded,
                       cost_bound, row_index)
