"""The device mesh: one constructor, with the axis types the code relies on."""

import re

import jax
import numpy as np

from gca_jax import sharding
from tests.conftest import REPO_ROOT


def test_the_mesh_axis_is_auto_and_shards_a_batch():
  mesh = sharding.make_mesh()
  assert mesh.axis_names == (sharding.DATA_AXIS,)
  assert mesh.axis_types == (jax.sharding.AxisType.Auto,)
  rows = np.arange(2 * len(jax.devices()) * 3, dtype=np.float32).reshape(-1, 3)
  placed = sharding.global_array(rows, sharding.batch_sharded(mesh))
  total = jax.jit(lambda x: (2 * x).sum(axis=0))(placed)
  np.testing.assert_array_equal(total, 2 * rows.sum(axis=0))


def test_every_mesh_is_built_by_make_mesh():
  """``Mesh(...)`` or ``jax.make_mesh(...)`` elsewhere would take jax's
  default axis types (``jax.make_mesh`` already defaults to Explicit)."""
  pattern = re.compile(r"\bMesh\(|\bjax\.make_mesh\(")
  found = [str(path.relative_to(REPO_ROOT))
           for folder in ("gca_jax", "experiments", "tests", "docs")
           for path in sorted((REPO_ROOT / folder).rglob("*.py"))
           if path.name != "test_sharding.py"
           for line in path.read_text().splitlines()
           if pattern.search(line)]
  assert found == ["gca_jax/sharding.py"], found
