"""The embedding families the theorem checks run on (float64, seeded).

Three kinds of batch the paper's claims are probed on: unrelated Gaussian
views, clustered views (positives near a shared centre) and a near-collapse
(every embedding within ~1e-6 cosine of one direction).
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np

FAMILIES = ("gaussian", "clustered", "collapsed")


def embeddings(family: str, batch: int, dim: int, seed: int = 0):
  """Two float64 views ``(z1, z2)``, ``(batch, dim)`` each, of one family.

  * ``"gaussian"``: every row of both views i.i.d. ``N(0, I)`` (the views of a
    sample are unrelated);
  * ``"clustered"``: 4 unit-norm centres; both views of a sample are its
    centre plus independent noise of norm about 0.3;
  * ``"collapsed"``: every row is one common unit direction plus independent
    noise of norm about 1e-3 (cosine similarities all within ~1e-6 of 1).
  """
  if family not in FAMILIES:
    raise ValueError(f"family must be one of {FAMILIES}, got {family!r}.")
  rng = np.random.default_rng([seed, batch, dim, FAMILIES.index(family)])

  def noise(scale):
    return scale * rng.normal(size=(batch, dim)) / math.sqrt(dim)

  if family == "gaussian":
    z1, z2 = rng.normal(size=(batch, dim)), rng.normal(size=(batch, dim))
  elif family == "clustered":
    centres = rng.normal(size=(4, dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    members = centres[rng.integers(0, 4, size=batch)]
    z1, z2 = members + noise(0.3), members + noise(0.3)
  else:
    direction = rng.normal(size=dim)
    direction /= np.linalg.norm(direction)
    z1, z2 = direction + noise(1e-3), direction + noise(1e-3)
  return jnp.asarray(z1, jnp.float64), jnp.asarray(z2, jnp.float64)
