"""The target builders refuse ids that are not integers in one line (a
fractional or NaN id silently changes the plan: NaN never equals itself)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gca_jax.losses import class_target, domain_target
from gca_jax.losses.targets import hierarchical_target

BUILDERS = {
    "labels": lambda ids: class_target(ids),
    "domains": lambda ids: domain_target(ids, alpha=0.5, beta=0.1),
    "labels_per_level[1]": lambda ids: hierarchical_target(
        [jnp.array([0, 1, 2]), ids], [0.5, 0.25], beta=0.0),
}


@pytest.mark.parametrize("name", BUILDERS)
@pytest.mark.parametrize("ids, shown", [
    (np.array([0.0, 0.5, 1.0]), "float64 (e.g. 0.5)"),
    (jnp.array([0.0, jnp.nan, 1.0]), "float32 (e.g. nan)"),
    (np.array(["a", "b", "c"]), "<U1"),
])
def test_ids_that_are_not_integers_are_one_line(name, ids, shown):
  with pytest.raises(TypeError) as refused:
    BUILDERS[name](ids)
  assert str(refused.value) == (f"{name} must be integer ids, got dtype {shown}; pass them "
                                "as an integer array.")


def test_traced_float_ids_are_refused_and_whole_floats_accepted():
  with pytest.raises(TypeError, match="labels must be integer ids, got dtype float32"):
    jax.jit(class_target)(jnp.array([0.0, 1.0, 1.0]))
  np.testing.assert_array_equal(class_target(np.array([0.0, 1.0, 1.0])),
                                class_target(np.array([0, 1, 1])))
  assert jax.jit(class_target)(jnp.array([0, 1, 1])).shape == (6, 6)
