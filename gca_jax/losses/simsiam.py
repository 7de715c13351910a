"""SimSiam's loss (Chen & He 2021): siamese regression without a target network."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from gca_jax.losses.geometry import check_pair, compute_dtype, l2_normalize


def simsiam(p1: jax.Array, p2: jax.Array, z1: jax.Array, z2: jax.Array) -> jax.Array:
  r"""SimSiam's symmetric negative cosine, with a stop-gradient on the projections.

  With ``p_v = h(f(x_v))`` the predictor's output and ``z_v = f(x_v)`` the
  projection of view ``v``:

  .. math::

    \mathcal{L} = \tfrac12 D(p_1, \mathrm{sg}(z_2)) + \tfrac12 D(p_2, \mathrm{sg}(z_1)),
    \qquad D(p, z) = -\frac1N \sum_k \frac{p_k \cdot z_k}{\|p_k\| \|z_k\|}.

  The projections receive no gradient through this loss (``sg``): only the
  predictions carry it, which is what keeps SimSiam from collapsing without
  negatives or a momentum encoder. The value lies in ``[-1, 1]`` (``-1``: each
  prediction points at the other view's projection).

  Relation to BYOL (`gca_jax.losses.byol`): BYOL's per-term regression is
  ``2 - 2 cos(p, sg(t))`` with ``t`` the projection of an EMA target network;
  SimSiam is BYOL with the target network equal to the online one (EMA decay
  0) and the per-term loss ``-cos(p, sg(z)) / 2``, i.e. BYOL's loss divided by
  4 minus the constant 1 (the same gradient directions, a quarter of the
  scale).

  Args:
    p1, p2: ``(N, D)`` predictions of the two views (row ``k``: sample ``k``).
    z1, z2: ``(N, D)`` projections of the same views (stop-gradient applied here).

  Returns:
    The scalar loss, in the dtype the losses compute in (at least float32).

  Examples:
    >>> import jax.numpy as jnp
    >>> from gca_jax.losses.simsiam import simsiam
    >>> z = jnp.eye(3)
    >>> print(f"{simsiam(z, z, 2.0 * z, z):.4f}")   # aligned: the minimum
    -1.0000
    >>> print(f"{simsiam(z, z, jnp.roll(z, 1, axis=0), z):.4f}")
    -0.5000

  References:
    Chen, He, "Exploring simple siamese representation learning", CVPR 2021.
  """
  check_pair(p1, p2, names=("p1", "p2"))
  check_pair(z1, z2, names=("z1", "z2"))
  if p1.shape != z1.shape:
    raise ValueError(f"predictions and projections must have the same shape, got "
                     f"{p1.shape} and {z1.shape}.")
  dtype = compute_dtype(jnp.result_type(p1, z1))

  def negative_cosine(p, z):
    p = l2_normalize(p.astype(dtype))
    z = l2_normalize(jax.lax.stop_gradient(z).astype(dtype))
    return -jnp.mean(jnp.sum(p * z, axis=-1))

  return 0.5 * negative_cosine(p1, z2) + 0.5 * negative_cosine(p2, z1)
