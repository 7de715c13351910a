"""Reductions over a plan's rows when the rows are sharded over a mesh axis.

Inside :func:`jax.shard_map`, a device holding ``n`` of the ``N`` rows of a
plan reduces across the mesh axis ``axis_name``: a sum is a local sum then a
``psum``; a log-sum-exp is shifted by the global maximum (a ``pmax`` of the
local maxima, held constant: the shift cancels in the value and its
gradient), then the exponentials are ``psum``-ed. Every device gets the
same result.

Differentiation follows the shard_map's ``check_vma=False`` (pmap)
semantics: ``psum`` transposes to ``psum`` and ``all_gather`` to
``psum_scatter``, so a device's gradient of a replicated result is the
gradient of the sum over devices of their copies of it through this
device's inputs: ``P`` times this device's share of the gradient. A
``pmean`` of the devices' gradients adds up the shares (the ``1/P`` removes
the factor), giving the gradient of the result.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax


def axis_size(axis_name) -> int:
  """The number of devices along ``axis_name``; one line if it is unbound."""
  try:
    return lax.axis_size(axis_name)
  except NameError:
    raise ValueError(
        f"axis_name={axis_name!r} is not a mesh axis bound here: the sharded "
        f"losses run inside jax.shard_map over that axis (each device holding "
        f"its own rows of the batch).") from None


def total(values: jax.Array, axis_name) -> jax.Array:
  """The sum of every entry of ``values`` on every device of the axis."""
  return lax.psum(jnp.sum(values), axis_name)


def logsumexp(values: jax.Array, axis_name, axis: int | None = None):
  """``log sum exp`` over ``axis`` of ``values`` (``None``: all entries) and
  over the devices of ``axis_name``, shifted by the global maximum.

  As :func:`jax.nn.logsumexp`, a non-finite maximum (all entries ``-inf``)
  shifts by 0; a NaN entry makes the result NaN.
  """
  local_max = jnp.max(lax.stop_gradient(values), axis=axis)
  shift = lax.pmax(local_max, axis_name)
  shift = jnp.where(jnp.isfinite(shift), shift, 0.0)
  expanded = shift if axis is None else jnp.expand_dims(shift, axis)
  sums = lax.psum(jnp.sum(jnp.exp(values - expanded), axis=axis), axis_name)
  return jnp.log(sums) + shift


def gather(values: jax.Array, axis_name) -> jax.Array:
  """Every device's ``values`` stacked along axis 0, in device order."""
  return lax.all_gather(values, axis_name, tiled=True)


def gather_rows(values: jax.Array, row_index: jax.Array, axis_name):
  """A per-row vector of this device's rows -> the global ``(N,)`` vector.

  ``row_index`` is the global index of each of this device's rows (a
  permutation once gathered over the devices), so the gathered entries are
  placed at their global rows.
  """
  everyone = gather(values, axis_name)
  return jnp.zeros_like(everyone).at[gather(row_index, axis_name)].set(
      everyone, unique_indices=True, indices_are_sorted=False)
