"""Target plans: dtype, traced weights, bad weights."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gca_jax import losses

DOMAINS = jnp.array([0, 0, 1, 2])


def test_targets_are_float32_by_default():
  assert losses.domain_target(DOMAINS, 0.1, 0.2).dtype == jnp.float32
  assert losses.class_target(DOMAINS).dtype == jnp.float32


def test_targets_keep_float64_when_it_is_enabled(x64):
  target = losses.domain_target(DOMAINS, 0.1, 0.2)
  assert target.dtype == jnp.float64
  assert target[0, 1] == 0.1 and target[0, 2] == 0.2  # not 0.10000000149
  assert losses.class_target(DOMAINS).dtype == jnp.float64
  assert losses.domain_target(DOMAINS, 0, 0).dtype == jnp.float64


def test_target_dtype_follows_a_float_input_or_the_argument(x64):
  assert losses.domain_target(DOMAINS, jnp.float32(0.1), 0.2).dtype == (
      jnp.float32)
  assert losses.domain_target(DOMAINS, 0.1, 0.2,
                              dtype=jnp.float32).dtype == jnp.float32
  assert losses.class_target(DOMAINS, dtype=jnp.bfloat16).dtype == (
      jnp.bfloat16)
  with pytest.raises(TypeError, match="dtype must be a floating-point dtype"):
    losses.class_target(DOMAINS, dtype=jnp.int32)


@pytest.mark.parametrize("pairing", ["joint", "cross"])
def test_traced_weights_give_the_concrete_target(pairing):
  build = jax.jit(lambda alpha, beta: losses.domain_target(
      DOMAINS, alpha, beta, pairing=pairing))
  np.testing.assert_array_equal(
      build(0.5, 0.25), losses.domain_target(DOMAINS, 0.5, 0.25,
                                             pairing=pairing))


def test_traced_negative_weight_makes_the_loss_non_finite():
  z1, z2 = jax.random.normal(jax.random.PRNGKey(0), (2, 4, 6))
  loss = jax.jit(lambda alpha: losses.gca_ince(
      z1, z2, target=losses.domain_target(DOMAINS, alpha, 0.0)))
  assert np.isfinite(loss(0.5))
  assert not np.isfinite(loss(-0.5))


@pytest.mark.parametrize("alpha, beta", [(-0.1, 0.0), (0.0, -1.0),
                                         (float("nan"), 0.0),
                                         (0.0, float("inf"))])
def test_bad_concrete_weights_are_refused(alpha, beta):
  with pytest.raises(ValueError, match=r"(alpha|beta) must be finite and >= 0"):
    losses.domain_target(DOMAINS, alpha, beta)


def test_target_layout():
  """Positives 1, same domain alpha, across domains beta, self pairs 0."""
  target = np.asarray(losses.domain_target(DOMAINS, 0.5, 0.25))
  batch = len(DOMAINS)
  for i in range(2 * batch):
    for j in range(2 * batch):
      if i == j:
        expected = 0.0
      elif j == (i + batch) % (2 * batch):
        expected = 1.0
      elif DOMAINS[i % batch] == DOMAINS[j % batch]:
        expected = 0.5
      else:
        expected = 0.25
      assert target[i, j] == expected, (i, j)
