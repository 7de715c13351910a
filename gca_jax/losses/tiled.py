"""The batch kernel applied tile by tile: every loss in memory linear in ``N``.

A GCA loss needs the kernel ``M_ij = (S_ij - 1) / eps`` of the batch
(``S = Ẑ_r Ẑ_cᵀ`` the cosine similarity, self pairs at ``-inf``) only
through a handful of reductions over its rows; each is computed here from
the normalised embeddings, ``tile_size`` rows at a time, so no ``N x N``
array is ever held, in the forward pass or the backward one:

* the half steps of a projection, ``r_i = LSE_j(M_ij + bias_j)``
  (:func:`row_logsumexp`): a :func:`jax.custom_vjp` that keeps only its
  inputs and ``r`` (``O(N D)``) and, in the backward pass, recomputes each
  tile's softmax weights ``exp(M_ij + bias_j - r_i)`` from the stored
  log-sum-exp, as memory-efficient attention does (Rabe and Staats 2021;
  Dao et al. 2022). Autodiff through the :func:`jax.lax.scan` of iterations
  then gives the exact unrolled gradient with ``O(N (D + iters))``
  residuals. In the joint pairing ``M`` is symmetric, so the column half
  step is the same row operator with the roles of the potentials swapped;
  in the cross pairing it is the row operator of ``Mᵀ``.
* the terms and diagnostics (weighted sums and log-sum-exps of ``M``
  against a target given by labels, plan sums): a :func:`jax.lax.scan` over
  row tiles whose body is :func:`jax.checkpoint`-ed, so reverse mode keeps
  one tile's inputs per step and recomputes the tile (exact gradients,
  linear memory).

Compute is that of the materialised kernel plus the recomputation
(``2 N^2 D`` multiply-adds per half step forward, about three times that
backward): on a CPU the tiled path is slower than the materialised one and
buys memory, not speed. Tiles use ``Precision.HIGHEST`` matrix products, so
an accelerator that would otherwise round float32 products (TF32) gives the
forward and backward passes the same kernel.

What this module needs from a batch: :class:`TiledKernel`, built by
:func:`tiled_kernel` from the two views (``pairing``, optionally rows
sharded over a mesh axis).
"""

from __future__ import annotations

import contextlib
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from gca_jax.losses import arguments, collectives, geometry, projections
from gca_jax.losses.terms import LossAux, Terms, marginal_mass, mean_over_rows

_HIGHEST = jax.lax.Precision.HIGHEST


class TiledKernel(NamedTuple):
  """The batch kernel, kept as the embeddings it is recomputed from.

  ``M_ij = (rows_i · cols_j - 1) / eps``, ``-inf`` where ``j`` is the self
  column of row ``i`` (``self_columns``); this device's rows of the
  transposed kernel ``Mᵀ`` are those of ``(t_rows, t_cols)``.

  Attributes:
    rows: ``(n, D)`` normalised embeddings of this device's rows (all ``N``
      rows on one device).
    cols: ``(N, D)`` normalised embeddings of the columns.
    t_rows: ``(n, D)`` this device's rows of ``Mᵀ`` (``rows`` in the joint
      pairing, whose kernel is symmetric).
    t_cols: ``(N, D)`` the columns of ``Mᵀ``.
    eps: the temperature, a scalar array (a traced one is differentiated).
    positives: ``(n,)`` int32 global column of each row's positive.
    self_columns: ``(n,)`` int32 global column of each row's self pair
      (joint pairing), or ``None`` (cross pairing: no self pairs).
    row_index: ``(n,)`` int32 global index of this device's rows, or
      ``None`` when the rows are the whole batch in order.
  """

  rows: jax.Array
  cols: jax.Array
  t_rows: jax.Array
  t_cols: jax.Array
  eps: jax.Array
  positives: jax.Array
  self_columns: jax.Array | None
  row_index: jax.Array | None

  @property
  def shape(self) -> tuple[int, int]:
    """``(n, N)``: this device's rows, all columns (as ``BatchGeometry``)."""
    return self.rows.shape[0], self.cols.shape[0]

  @property
  def dtype(self):
    return self.rows.dtype


# ----------------------------------------------------------------------------
# Tiles.

def _num_tiles(rows: int, tile_size: int) -> int:
  return -(-rows // tile_size)


def _pad_rows(values, tile_size: int, fill=0):
  """``values`` padded along axis 0 to whole tiles, reshaped to
  ``(tiles, tile_size, ...)``."""
  rows = values.shape[0]
  padded = _num_tiles(rows, tile_size) * tile_size
  widths = [(0, padded - rows)] + [(0, 0)] * (values.ndim - 1)
  values = jnp.pad(values, widths, constant_values=fill)
  return values.reshape((-1, tile_size) + values.shape[1:])


def _unpad_rows(tiles, rows: int):
  return tiles.reshape((-1,) + tiles.shape[2:])[:rows]


def _tile_kernel(rows_tile, cols, eps, self_tile):
  """``M`` for one tile of rows, ``(b, N)``; ``-inf`` on self pairs."""
  similarity = jnp.matmul(rows_tile, cols.T, precision=_HIGHEST)
  log_kernel = (similarity - 1.0) / eps
  if self_tile is not None:
    columns = jnp.arange(cols.shape[0])[None, :]
    log_kernel = jnp.where(columns == self_tile[:, None], -jnp.inf, log_kernel)
  return log_kernel


def _self_tiles(self_columns, tile_size):
  # Padding rows get the self column -1, which matches no column.
  return (None if self_columns is None
          else _pad_rows(self_columns, tile_size, fill=-1))


# ----------------------------------------------------------------------------
# The row log-sum-exp and its backward pass.

def row_logsumexp(rows, cols, bias, eps, self_columns=None, *,
                  tile_size: int):
  r"""``r_i = LSE_j(M_ij + bias_j)`` of the kernel of ``rows`` and ``cols``.

  .. math::

    r_i = \log \sum_j \exp\Big(\frac{\hat z_i \cdot \hat c_j - 1}{\varepsilon}
          + b_j\Big), \qquad j \ne \mathrm{self}(i),

  computed ``tile_size`` rows at a time. Its vector-Jacobian product, with
  ``G_ij = r̄_i exp(M_ij + b_j - r_i)`` recomputed per tile, is
  ``b̄ = Σ_i G_i·``, ``ẑ̄ = G ĉ / eps``, ``ĉ̄ = Gᵀ ẑ / eps`` and
  ``eps̄ = -Σ G ⊙ M / eps``: memory ``O((n + N) D)``, never ``n x N``.

  Args:
    rows: ``(n, D)`` normalised row embeddings.
    cols: ``(N, D)`` normalised column embeddings.
    bias: ``(N,)`` potential added to each column.
    eps: the temperature (scalar, may be traced).
    self_columns: ``None``, or ``(n,)`` int32: the column excluded from
      each row (its self pair).
    tile_size: rows per tile (static); need not divide ``n``.

  Returns:
    ``(n,)`` log-sum-exps.

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> from gca_jax.losses import tiled
    >>> z = jax.random.normal(jax.random.PRNGKey(0), (5, 3))
    >>> z = z / jnp.linalg.norm(z, axis=1, keepdims=True)
    >>> beta = jnp.zeros(5)
    >>> r = tiled.row_logsumexp(z, z, beta, 0.5, jnp.arange(5), tile_size=2)
    >>> dense = jnp.where(jnp.eye(5, dtype=bool), -jnp.inf, (z @ z.T - 1) / 0.5)
    >>> bool(jnp.allclose(r, jax.nn.logsumexp(dense, axis=1), atol=1e-6))
    True
  """
  eps = jnp.asarray(eps, rows.dtype)
  with _reverse_mode_only():
    return _row_logsumexp(tile_size, rows, cols, bias, eps, self_columns)


@contextlib.contextmanager
def _reverse_mode_only():
  """Turns JAX's error for forward-mode autodiff of a custom_vjp (the tiles'
  backward pass is a reverse-mode rule) into one line naming the way out."""
  try:
    yield
  except TypeError as error:
    if "forward-mode" not in str(error):
      raise
    raise TypeError(
        "tile_size supports reverse-mode differentiation only (jax.grad, "
        "jax.vjp, jax.jacrev); for jax.jvp, jax.jacfwd or jax.hessian use "
        "tile_size=None.") from None


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _row_logsumexp(tile_size, rows, cols, bias, eps, self_columns):
  def one_tile(tile):
    rows_tile, self_tile = tile
    log_kernel = _tile_kernel(rows_tile, cols, eps, self_tile)
    return jax.nn.logsumexp(log_kernel + bias[None, :], axis=1)

  tiles = (_pad_rows(rows, tile_size), _self_tiles(self_columns, tile_size))
  return _unpad_rows(jax.lax.map(one_tile, tiles), rows.shape[0])


def _row_logsumexp_fwd(tile_size, rows, cols, bias, eps, self_columns):
  lse = _row_logsumexp(tile_size, rows, cols, bias, eps, self_columns)
  return lse, (rows, cols, bias, eps, self_columns, lse)


def _row_logsumexp_bwd(tile_size, residuals, lse_bar):
  rows, cols, bias, eps, self_columns, lse = residuals
  # Padding rows: log-sum-exp +inf (weights exp(-inf) = 0), cotangent 0.
  tiles = (_pad_rows(rows, tile_size), _self_tiles(self_columns, tile_size),
           _pad_rows(lse, tile_size, fill=jnp.inf),
           _pad_rows(lse_bar, tile_size))

  def one_tile(carry, tile):
    bias_bar, cols_bar, eps_bar = carry
    rows_tile, self_tile, lse_tile, lse_bar_tile = tile
    log_kernel = _tile_kernel(rows_tile, cols, eps, self_tile)
    weights = jnp.exp(log_kernel + bias[None, :] - lse_tile[:, None])
    weighted = lse_bar_tile[:, None] * weights  # G, 0 on self pairs
    bias_bar = bias_bar + jnp.sum(weighted, axis=0)
    cols_bar = cols_bar + jnp.matmul(weighted.T, rows_tile,
                                     precision=_HIGHEST) / eps
    # dM/deps = -M/eps; M is -inf where G is 0 (self pairs): skip those.
    eps_bar = eps_bar - jnp.sum(
        jnp.where(weighted != 0, weighted * log_kernel, 0.0)) / eps
    rows_bar_tile = jnp.matmul(weighted, cols, precision=_HIGHEST) / eps
    return (bias_bar, cols_bar, eps_bar), rows_bar_tile

  init = (jnp.zeros_like(bias), jnp.zeros_like(cols), jnp.zeros_like(eps))
  (bias_bar, cols_bar, eps_bar), rows_bar = jax.lax.scan(one_tile, init, tiles)
  self_bar = (None if self_columns is None
              else jnp.zeros(self_columns.shape, jax.dtypes.float0))
  return (_unpad_rows(rows_bar, rows.shape[0]), cols_bar, bias_bar, eps_bar,
          self_bar)


_row_logsumexp.defvjp(_row_logsumexp_fwd, _row_logsumexp_bwd)


# ----------------------------------------------------------------------------
# The kernel of a batch, and its projection operators.

def check_tile_size(tile_size, form: str = "auto") -> int:
  """``tile_size`` as a Python int >= 1 (static under :func:`jax.jit`), with
  a ``form`` that does not hold the kernel (``"auto"`` or ``"log"``)."""
  if isinstance(tile_size, jax.core.Tracer):
    raise TypeError(
        "tile_size is traced, but it shapes the program; under jax.jit pass "
        "it as static: static_argnames=('tile_size', ...).")
  if (isinstance(tile_size, bool) or not isinstance(tile_size, int)
      or tile_size < 1):
    raise ValueError(
        f"tile_size must be None (the materialised kernel) or an int >= 1 "
        f"(rows per tile), got {tile_size!r}.")
  if form == "scaling":
    raise ValueError(
        "form='scaling' holds the N x N kernel, which tile_size avoids; use "
        "form='auto' or 'log' with tile_size, or tile_size=None.")
  arguments.check_choice("form", form, arguments.FORMS)
  return tile_size


def tiled_kernel(z1, z2, eps, *, pairing: str = "joint",
                 self_mask: str = "exclude", similarity_floor=None,
                 axis_name=None) -> TiledKernel:
  """The :class:`TiledKernel` of two views (what ``batch_geometry`` is to
  the materialised forms): normalised embeddings, positives, self pairs.

  Only what can be recomputed tile by tile exactly is accepted: the joint
  pairing's self pairs excluded (``self_mask="exclude"``) and no
  ``similarity_floor``; anything else is refused with one line.
  """
  geometry.check_pair(z1, z2, min_rows=2 if axis_name is None else 1)
  if pairing not in geometry.PAIRINGS:
    raise ValueError(
        f"pairing must be one of {geometry.PAIRINGS}, got {pairing!r}.")
  if pairing == "joint" and self_mask != "exclude":
    raise ValueError(
        f"self_mask={self_mask!r} is not available with tile_size (its "
        f"global max C or max S would need the whole kernel); use "
        f"self_mask='exclude' or tile_size=None.")
  if similarity_floor is not None:
    raise ValueError(
        "similarity_floor is not available with tile_size; use "
        "similarity_floor=None or tile_size=None.")
  dtype = geometry.compute_dtype(jnp.result_type(z1, z2))
  z1 = geometry.l2_normalize(z1.astype(dtype))
  z2 = geometry.l2_normalize(z2.astype(dtype))
  eps = jnp.asarray(eps, dtype)
  batch = z1.shape[0]
  if axis_name is None:
    if pairing == "joint":
      rows = jnp.concatenate([z1, z2], axis=0)
      positives = (jnp.arange(2 * batch) + batch) % (2 * batch)
      return TiledKernel(rows, rows, rows, rows, eps,
                         positives.astype(jnp.int32),
                         jnp.arange(2 * batch, dtype=jnp.int32), None)
    return TiledKernel(z1, z2, z2, z1, eps, jnp.arange(batch, dtype=jnp.int32),
                       None, None)
  layout = geometry.checked_sharded_layout(batch, pairing, axis_name)
  gather = lambda z: collectives.gather(z, axis_name)
  if pairing == "joint":
    rows = jnp.concatenate([z1, z2], axis=0)
    cols = jnp.concatenate([gather(z1), gather(z2)], axis=0)
    return TiledKernel(rows, cols, rows, cols, eps, layout.positives,
                       layout.row_index, layout.row_index)
  return TiledKernel(z1, gather(z2), z2, gather(z1), eps, layout.positives,
                     None, layout.row_index)


def _to_global(values, kernel: TiledKernel, axis_name):
  """A vector over this device's rows -> over all ``N`` (identity on one
  device)."""
  if axis_name is None:
    return values
  return collectives.gather_rows(values, kernel.row_index, axis_name)


def kernel_ops(kernel: TiledKernel, axis_name=None, *, tile_size: int):
  """The projection's operators on the tiled kernel.

  ``row_lse(beta)_i = LSE_j(M_ij + beta_j)`` for this device's rows;
  ``col_lse(alpha)_j = LSE_i(M_ij + alpha_i)`` is the row operator of
  ``Mᵀ`` (``M`` itself in the joint pairing), evaluated for this device's
  rows of ``Mᵀ`` against the gathered ``alpha`` and gathered in turn, so
  only ``N``-vectors cross devices.
  """
  def row_lse(beta):
    return row_logsumexp(kernel.rows, kernel.cols, beta, kernel.eps,
                         kernel.self_columns, tile_size=tile_size)

  def col_lse(alpha):
    alpha = _to_global(alpha, kernel, axis_name)
    lse = row_logsumexp(kernel.t_rows, kernel.t_cols, alpha, kernel.eps,
                        kernel.self_columns, tile_size=tile_size)
    return _to_global(lse, kernel, axis_name)

  return projections.KernelOps(row_lse, col_lse)


def positive_log_kernel(kernel: TiledKernel) -> jax.Array:
  """``M_{i,t(i)}`` of this device's rows: ``O(N D)``."""
  similarity = jnp.sum(kernel.rows * kernel.cols[kernel.positives], axis=1)
  return (similarity - 1.0) / kernel.eps


# ----------------------------------------------------------------------------
# Block targets given by labels, rebuilt inside each tile.

def _tile_target(target, row_labels, positives, self_tile,
                 num_cols: int):
  """``T`` on one tile of rows, ``(b, N)``."""
  weights = jnp.broadcast_to(target.beta, (row_labels.shape[0], num_cols))
  # Coarsest first, so that a finer shared level overwrites a coarser one.
  for level in reversed(range(row_labels.shape[1])):
    shared = row_labels[:, level, None] == target.col_labels[None, :, level]
    weights = jnp.where(shared, target.weights[level], weights)
  columns = jnp.arange(num_cols)[None, :]
  weights = jnp.where(columns == positives[:, None], 1.0, weights)
  if self_tile is not None:
    weights = jnp.where(columns == self_tile[:, None], 0.0, weights)
  return weights


def _map_tiles(one_tile, per_row, tile_size: int, fills=None):
  """``one_tile`` over tiles of the per-row arrays ``per_row`` (a tuple),
  its body rematerialised in the backward pass: only each tile's inputs
  are kept, so memory stays ``O(tile_size N)`` per step."""
  fills = fills or (0,) * len(per_row)
  tiles = tuple(None if values is None else _pad_rows(values, tile_size, fill)
                for values, fill in zip(per_row, fills))
  body = jax.checkpoint(lambda carry, tile: (carry, one_tile(*tile)))
  _, out = jax.lax.scan(body, None, tiles)
  rows = per_row[0].shape[0]
  return jax.tree.map(lambda tiles_out: _unpad_rows(tiles_out, rows), out)


def _target_tiles(kernel: TiledKernel, target):
  # Padding rows: positive column 0 (weight 1, a finite row sum) and no
  # self pair; their results are dropped.
  return ((kernel.rows, target.row_labels, kernel.positives,
           kernel.self_columns), (0, 0, 0, -1))


def target_weighted_kernel(kernel: TiledKernel, target, beta,
                           *, tile_size: int):
  """``sum_j T̄_ij (M_ij + beta_j)`` with ``T̄`` the row-normalised target
  (the linear part of the alignment cross-entropy and of IOT's loss)."""
  num_cols = kernel.cols.shape[0]

  def one_tile(rows_tile, labels, positives, self_tile):
    weights = _tile_target(target, labels, positives, self_tile, num_cols)
    log_kernel = _tile_kernel(rows_tile, kernel.cols, kernel.eps, self_tile)
    values = log_kernel + beta[None, :]
    total = jnp.sum(jnp.where(weights != 0, weights * values, 0.0), axis=1)
    return total / jnp.sum(weights, axis=1)

  per_row, fills = _target_tiles(kernel, target)
  return _map_tiles(one_tile, per_row, tile_size, fills)


def target_logsumexp(kernel: TiledKernel, target, beta, column_bias,
                     *, tile_size: int):
  """``(LSE_j(log T̄_ij + M_ij + beta_j), LSE_j(log T̄_ij + column_bias_j))``
  (the robust term's ``x`` and ``y`` against a target)."""
  num_cols = kernel.cols.shape[0]

  def one_tile(rows_tile, labels, positives, self_tile):
    weights = _tile_target(target, labels, positives, self_tile, num_cols)
    nonzero = weights != 0
    log_target = jnp.where(nonzero, jnp.log(jnp.where(nonzero, weights, 1.0)),
                           -jnp.inf)
    log_target = log_target - jnp.log(jnp.sum(weights, axis=1))[:, None]
    log_kernel = _tile_kernel(rows_tile, kernel.cols, kernel.eps, self_tile)
    log_x = jax.nn.logsumexp(log_target + log_kernel + beta[None, :], axis=1)
    log_y = jax.nn.logsumexp(log_target + column_bias[None, :], axis=1)
    return log_x, log_y

  per_row, fills = _target_tiles(kernel, target)
  return _map_tiles(one_tile, per_row, tile_size, fills)


# ----------------------------------------------------------------------------
# The loss terms and the plan's diagnostics, tile by tile.
#
# Each mirrors the materialised term of the same name in
# :mod:`gca_jax.losses.terms` (the formulas are stated there) with the plan
# ``log P_ij = alpha_i + beta_j + M_ij`` never formed.

def _total(values, axis_name):
  return jnp.sum(values) if axis_name is None else collectives.total(
      values, axis_name)


def alignment_cross_entropy(kernel: TiledKernel, log_v, row_lse, target, *,
                            tile_size: int, axis_name=None):
  """``-mean_i sum_j T̄_ij log P̄_ij`` with ``log P̄ = M + beta - row_lse``."""
  if target is None:
    linear = positive_log_kernel(kernel) + log_v[kernel.positives]
  else:
    linear = target_weighted_kernel(kernel, target, log_v, tile_size=tile_size)
  return -mean_over_rows(linear - row_lse, axis_name)


def robust_term(kernel: TiledKernel, log_u, log_v, target, *, lam, q,
                log_kernel_scale, tile_size: int, axis_name=None):
  """``mean_i (-(x_i^q) + y_i^q) / q`` (GCA-RINCE), ``x, y`` as in
  :func:`gca_jax.losses.terms.robust_term`."""
  if target is None:
    log_x = positive_log_kernel(kernel) + log_v[kernel.positives]
    log_y = jnp.log(lam) - log_u
  else:
    column_log_u = _to_global(log_u, kernel, axis_name)
    log_x, log_y = target_logsumexp(kernel, target, log_v, -column_log_u,
                                    tile_size=tile_size)
    log_y = jnp.log(lam) + log_y
  log_x = log_x + log_kernel_scale
  return mean_over_rows(-jnp.exp(q * log_x) + jnp.exp(q * log_y),
                        axis_name) / q


def plan_log_likelihood(kernel: TiledKernel, log_u, log_v, target, *,
                        tile_size: int, axis_name=None):
  """``-mean_i sum_j T̄_ij log P_ij`` (IOT's loss), ``log_u`` the plan's row
  potential (any constant scale of the kernel included)."""
  if target is None:
    linear = positive_log_kernel(kernel) + log_v[kernel.positives]
  else:
    linear = target_weighted_kernel(kernel, target, log_v, tile_size=tile_size)
  return -mean_over_rows(log_u + linear, axis_name)


def _diagonal(kernel: TiledKernel):
  """The column of each row's diagonal entry ``(i, i)`` of the plan: the self
  pair (joint) or the positive (cross)."""
  return kernel.positives if kernel.self_columns is None else kernel.self_columns


def uniform_negatives_kl(kernel: TiledKernel, log_u, log_v, row_lse, *,
                         axis_name=None):
  """``mean_ij Q (log Q - log P)``, ``Q`` = ``P`` with its off-diagonal
  entries replaced by their mean ``m`` (IOT-uni), in closed form.

  The diagonal adds nothing (``Q_ii = P_ii``, or both 0 for excluded self
  pairs), so the divergence is ``(K m log m - m sum_{i != j} log P_ij) / N^2``
  over the ``K = N (N - 1)`` off-diagonal pairs, where
  ``sum_{i != j} log P_ij`` is linear in ``M`` and needs only ``sum_j ĉ_j``:
  ``O(N D)``, no tile pass. ``row_lse``: ``LSE_j(M_ij + beta_j)``.
  """
  size = kernel.cols.shape[0]
  pairs = size * (size - 1)
  diagonal = _diagonal(kernel)
  diagonal_similarity = jnp.sum(kernel.rows * kernel.cols[diagonal], axis=1)
  if kernel.self_columns is None:
    diagonal_mass = jnp.exp(log_u + log_v[diagonal]
                            + (diagonal_similarity - 1.0) / kernel.eps)
  else:
    diagonal_mass = jnp.zeros_like(log_u)  # excluded self pairs: P_ii = 0
  off_mass = _total(jnp.exp(log_u + row_lse) - diagonal_mass, axis_name)
  mean = off_mass / pairs
  column_sum = jnp.sum(kernel.cols, axis=0)
  off_log_kernel = (kernel.rows @ column_sum - diagonal_similarity
                    - (size - 1)) / kernel.eps
  off_log_plan = ((size - 1) * log_u + jnp.sum(log_v) - log_v[diagonal]
                  + off_log_kernel)
  total_log_plan = _total(off_log_plan, axis_name)
  return (pairs * mean * jnp.log(mean) - mean * total_log_plan) / size**2


def diagnostics(kernel: TiledKernel, log_u, log_v, target, marginal_error, mass,
                *, tile_size: int, axis_name=None):
  """:class:`~gca_jax.losses.LossAux` of the plan ``exp(log_u + log_v + M)``
  without its ``(N, N)`` log-plan (``log_plan=None``)."""
  row_lse = row_logsumexp(kernel.rows, kernel.cols, log_v, kernel.eps,
                          kernel.self_columns, tile_size=tile_size)
  row_log_mass = log_u + row_lse
  log_mass = (jax.nn.logsumexp(row_log_mass) if axis_name is None
              else collectives.logsumexp(row_log_mass, axis_name))
  num_cols = kernel.cols.shape[0]

  def one_tile(rows_tile, log_u_tile, labels, positives, self_tile):
    log_kernel = _tile_kernel(rows_tile, kernel.cols, kernel.eps, self_tile)
    log_plan = log_u_tile[:, None] + log_v[None, :] + log_kernel - log_mass
    plan = jnp.exp(log_plan)
    entropy = -jnp.sum(jnp.where(plan > 0, plan * log_plan, 0.0), axis=1)
    if target is None:
      return entropy
    weights = _tile_target(target, labels, positives, self_tile, num_cols)
    return entropy, jnp.sum(jnp.where(weights > 0, plan, 0.0), axis=1)

  labels = None if target is None else target.row_labels
  per_row = (kernel.rows, log_u, labels, kernel.positives, kernel.self_columns)
  out = _map_tiles(one_tile, per_row, tile_size, (0, 0, 0, 0, -1))
  if target is None:
    entropy = out
    on_positives = jnp.exp(log_u + log_v[kernel.positives]
                           + positive_log_kernel(kernel) - log_mass)
  else:
    entropy, on_positives = out
  return LossAux(marginal_error, _total(entropy, axis_name),
                 _total(on_positives, axis_name), None, mass)



def align(loss_terms: Terms, kernel: TiledKernel, problem, *, iters: int,
          final_row_step: bool, grad_mode: str, tile_size: int,
          return_aux: bool = False, axis_name=None):
  """The projection and the terms of :func:`gca_jax.losses.gca_loss` on the
  tiled kernel: what :func:`gca_jax.losses.terms.assemble` computes on the
  materialised one, term by term, never forming an ``N x N`` array.

  ``problem``: the loss's :class:`~gca_jax.losses.problem.Problem` (its
  target a :class:`~gca_jax.losses.problem.TileTarget` or ``None``).
  """
  options = dict(tile_size=tile_size, axis_name=axis_name)

  def make_ops(kernel, axis_name):
    return kernel_ops(kernel, axis_name, tile_size=tile_size)

  with _reverse_mode_only():  # the error surfaces from the scan's JVP rule
    projection = projections.project(
        make_ops, kernel, problem.log_a, problem.log_b, iters=iters,
        tau_a=problem.tau_a, tau_b=problem.tau_b, init_log_v=problem.init_log_v,
        final_row_step=final_row_step, grad_mode=grad_mode, axis_name=axis_name)
  log_u, log_v = projection.log_u, projection.log_v
  log_scale, target = problem.log_kernel_scale, problem.target
  # u (c K) v: with shifted marginals the potentials are those of c K.
  plan_log_u = log_u + log_scale if problem.shifted_marginals else log_u
  loss = jnp.zeros((), kernel.dtype)
  row_lse = None
  if loss_terms.has_ce or loss_terms.has_uniform:
    row_lse = make_ops(kernel, axis_name).row_lse(log_v)
  if loss_terms.has_ce:
    loss += loss_terms.w_ce * alignment_cross_entropy(kernel, log_v, row_lse, target,
                                                      **options)
  if loss_terms.has_rince:
    # Potentials of the kernel c K (see problem.alignment_problem).
    robust_log_u = log_u if problem.shifted_marginals else log_u - log_scale
    loss += loss_terms.w_rince * robust_term(
        kernel, robust_log_u, log_v, target, lam=loss_terms.lam, q=loss_terms.q,
        log_kernel_scale=log_scale, **options)
  if loss_terms.has_plan:
    loss += loss_terms.w_plan * plan_log_likelihood(kernel, plan_log_u, log_v, target,
                                                    **options)
  if loss_terms.has_uniform:
    loss += loss_terms.lambda_p * uniform_negatives_kl(kernel, plan_log_u, log_v,
                                                       row_lse, axis_name=axis_name)
  if not return_aux:
    return loss
  return loss, diagnostics(kernel, plan_log_u, log_v, target, projection.marginal_error,
                           marginal_mass(problem.log_a, axis_name), **options)
