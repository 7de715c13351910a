"""With float64 enabled (``JAX_ENABLE_X64=1``) every augmentation policy still
compiles and gives float32 views (the colour-jitter loop once mixed dtypes)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gca_jax.data import augment


@pytest.mark.parametrize("policy", [
    policy if policy == "simclr" else pytest.param(policy, marks=pytest.mark.slow)
    for policy in augment.POLICIES])
def test_views_compile_and_stay_float32_with_x64(x64, policy):
  images = jnp.asarray(np.random.default_rng(0).integers(0, 256, (4, 8, 8, 3), np.uint8))
  views = jax.jit(lambda key, x: augment.two_views(
      key, x, policy=policy, mean=(0.5,) * 3, std=(0.25,) * 3))(jax.random.key(0), images)
  assert all(v.dtype == jnp.float32 and v.shape == (4, 8, 8, 3) for v in views)
  assert all(bool(jnp.all(jnp.isfinite(v))) for v in views)
