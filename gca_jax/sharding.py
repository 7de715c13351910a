"""The device mesh and placing host arrays on it.

Training and evaluation run data parallel over a one-axis mesh (``"data"``)
spanning every device of every process. Host arrays become global
`jax.Array`s in one of two ways, both here:

* `global_array`: every process holds the whole array (a replicated train
  split, a batch every host computed the same way);
* `process_local_array`: each process holds only its own contiguous rows of
  the global batch (what a host loader decodes), concatenated along axis 0.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"


def make_mesh(devices=None) -> Mesh:
  """A 1-D data-parallel mesh over ``devices`` (default: all, all hosts).

  Its axis is of type ``Auto`` (the compiler propagates shardings; the
  code's ``shard_map``, ``NamedSharding`` and ``jax.jit`` uses rely on it),
  named explicitly rather than left to the default: ``jax.make_mesh``
  already defaults to ``Explicit`` axes, and ``Mesh``'s default may follow.
  ``axis_types`` is a parameter of ``Mesh`` from jax 0.10.2 (the oldest jax
  this package supports) on.

  Examples:
    >>> import jax
    >>> from gca_jax import sharding
    >>> mesh = sharding.make_mesh(jax.devices()[:1])
    >>> mesh.axis_names, mesh.axis_types == (jax.sharding.AxisType.Auto,)
    (('data',), True)
  """
  devices = jax.devices() if devices is None else devices
  return Mesh(np.asarray(devices), (DATA_AXIS,), axis_types=(AxisType.Auto,))


def replicated(mesh: Mesh) -> NamedSharding:
  """Every device holds the whole array."""
  return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh) -> NamedSharding:
  """Axis 0 split over the mesh's data axis."""
  return NamedSharding(mesh, P(DATA_AXIS))


def global_array(host_array, sharding: NamedSharding) -> jax.Array:
  """A global array from a host array that every process holds in full.

  Each process places only the slices its own devices hold, so this works on
  one host or several.
  """
  host_array = np.asarray(host_array)
  return jax.make_array_from_callback(host_array.shape, sharding,
                                      lambda index: host_array[index])


def process_local_array(local_rows, sharding: NamedSharding) -> jax.Array:
  """A global array from every process's contiguous rows along axis 0.

  ``local_rows`` is this process's block of the global batch; on one process
  this is ``jax.device_put(local_rows, sharding)``.
  """
  local_rows = np.asarray(local_rows)
  global_shape = (local_rows.shape[0] * jax.process_count(), *local_rows.shape[1:])
  return jax.make_array_from_process_local_data(sharding, local_rows, global_shape)
