"""Alignment and uniformity (Wang and Isola 2020)."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gca_jax import metrics


class MetricsTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_alignment_matches_definition(self):
    z1, z2 = jax.random.normal(jax.random.PRNGKey(0), (2, 32, 8))
    u1 = z1 / np.linalg.norm(z1, axis=1, keepdims=True)
    u2 = z2 / np.linalg.norm(z2, axis=1, keepdims=True)
    expected = np.mean(np.sum((u1 - u2) ** 2, axis=1))
    np.testing.assert_allclose(self.variant(metrics.alignment)(z1, z2),
                               expected, rtol=1e-5)
    np.testing.assert_allclose(self.variant(metrics.alignment)(z1, 3 * z1),
                               0.0, atol=1e-6)

  @chex.variants(with_jit=True, without_jit=True)
  def test_uniformity_matches_definition(self):
    z = jax.random.normal(jax.random.PRNGKey(1), (16, 4))
    u = np.asarray(z / np.linalg.norm(z, axis=1, keepdims=True), np.float64)
    squared = np.sum((u[:, None] - u[None]) ** 2, axis=-1)
    off = ~np.eye(16, dtype=bool)
    expected = np.log(np.mean(np.exp(-2.0 * squared[off])))
    np.testing.assert_allclose(self.variant(metrics.uniformity)(z), expected,
                               rtol=1e-5)

  def test_collapsed_embeddings_are_least_uniform(self):
    collapsed = jnp.ones((8, 4))
    spread = jax.random.normal(jax.random.PRNGKey(2), (8, 4))
    np.testing.assert_allclose(metrics.uniformity(collapsed), 0.0, atol=1e-6)
    self.assertLess(metrics.uniformity(spread), -0.5)


def test_bad_shapes_are_rejected():
  with pytest.raises(ValueError, match="same shape"):
    metrics.alignment(jnp.ones((4, 3)), jnp.ones((4, 2)))
  with pytest.raises(ValueError, match="N >= 2"):
    metrics.uniformity(jnp.ones((1, 3)))
