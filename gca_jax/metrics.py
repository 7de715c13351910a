"""Representation metrics of the paper: alignment and uniformity.

Wang and Isola, "Understanding Contrastive Representation Learning through
Alignment and Uniformity on the Hypersphere", ICML 2020. Both are computed on
L2-normalised embeddings (as the losses normalise them: scale-invariant, a
zero row stays zero, a NaN or inf row gives NaN); lower is better for both.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from gca_jax.losses.geometry import check_real, compute_dtype, l2_normalize


def _normalized(z: jax.Array, name: str = "z") -> jax.Array:
  check_real(name, z)
  return l2_normalize(z.astype(compute_dtype(z.dtype)))


def alignment(z1: jax.Array, z2: jax.Array, alpha: float = 2.0) -> jax.Array:
  """``E ||f(x) - f(y)||_2^alpha`` over positive pairs ``(z1_k, z2_k)``."""
  if z1.shape != z2.shape:
    raise ValueError(
        f"z1 and z2 must have the same shape, got {z1.shape} and {z2.shape}.")
  distance = jnp.linalg.norm(_normalized(z1, "z1") - _normalized(z2, "z2"),
                             axis=-1)
  return jnp.mean(distance ** alpha)


def uniformity(z: jax.Array, t: float = 2.0) -> jax.Array:
  """``log E_{i != j} exp(-t ||z_i - z_j||^2)`` over distinct pairs of ``z``.

  Uses ``||a - b||^2 = 2 - 2 a·b`` for unit vectors and a log-sum-exp, so it
  is finite however spread the embeddings are.
  """
  if z.ndim != 2 or z.shape[0] < 2:
    raise ValueError(f"z must be (N, D) with N >= 2, got shape {z.shape}.")
  z = _normalized(z)
  squared_distance = jnp.maximum(2.0 - 2.0 * z @ z.T, 0.0)
  n = z.shape[0]
  off_diagonal = ~jnp.eye(n, dtype=bool)
  logits = jnp.where(off_diagonal, -t * squared_distance, -jnp.inf)
  return jax.nn.logsumexp(logits) - jnp.log(n * (n - 1.0))
