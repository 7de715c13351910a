"""Representation metrics of the paper: alignment, uniformity and WDM.

* :func:`alignment` and :func:`uniformity` (Wang and Isola, "Understanding
  Contrastive Representation Learning through Alignment and Uniformity on the
  Hypersphere", ICML 2020): lower is better for both;
* the Wasserstein dependency measure of the two views (the paper's
  Definition 2), ``W1`` between their joint law and the product of its
  marginals: :func:`wdm_lower_bound` (a 1-Lipschitz critic, ``O(N D)``) and
  :func:`wdm_sinkhorn` (a null-corrected Sinkhorn divergence, for analysis
  at one batch size: biased low under dependence at the sizes one logs).

Everything is computed on L2-normalised embeddings (as the losses normalise
them: scale-invariant, a zero row stays zero, a NaN or inf row gives NaN).
The settings ``alpha``, ``t`` and ``eps`` are real numbers > 0: a bad
concrete one is refused in one line, a traced one out of range gives NaN.
``docs/metrics.md`` collects the math and the measurements.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp

from gca_jax.losses import l2_normalize, sinkhorn
from gca_jax.losses.arguments import check_iters, nan_unless
from gca_jax.losses.geometry import check_pair, check_real, compute_dtype


def _normalized(z: jax.Array, name: str = "z") -> jax.Array:
  check_real(name, z)
  return l2_normalize(z.astype(compute_dtype(z.dtype)))


def _positive_scalar(name: str, value):
  """``value``, a real scalar that must be finite and > 0.

  A concrete one out of range, or anything but a real number (a string, a
  complex, an array of several values), is refused in one line; a traced one
  cannot be read at trace time and becomes NaN when out of range, so the
  metric is NaN, never a finite wrong number (`arguments.nan_unless`).
  """
  dtype = getattr(value, "dtype", None)
  if dtype is not None:
    real = (jnp.issubdtype(dtype, jnp.floating) or jnp.issubdtype(dtype, jnp.integer))
    if not real or jnp.shape(value) != ():
      raise TypeError(f"{name} must be a real number, got an array of shape "
                      f"{jnp.shape(value)} and dtype {dtype}.")
  elif isinstance(value, bool) or not isinstance(value, (int, float)):
    raise TypeError(f"{name} must be a real number, got {value!r}.")
  if isinstance(value, jax.core.Tracer):
    return nan_unless((value > 0) & (value < jnp.inf), value)
  if not 0.0 < float(value) < math.inf:
    raise ValueError(f"{name} must be finite and > 0, got {value}.")
  return value


def alignment(z1: jax.Array, z2: jax.Array, alpha: float = 2.0) -> jax.Array:
  r"""Alignment (Wang and Isola 2020): mean distance of the positive pairs.

  .. math::

    \mathcal{L}_\text{align} = \frac{1}{B} \sum_k \|\hat z_{1,k} - \hat z_{2,k}\|_2^\alpha

  with ``ẑ`` the rows normalised to unit length. Lower is better aligned.

  Args:
    z1: ``(B, D)`` embeddings of the first view.
    z2: ``(B, D)`` embeddings of the second view (row ``k`` from sample ``k``).
    alpha: the power of the distance, finite and > 0 (the reference uses 2).

  Returns:
    The scalar alignment, in ``[0, 2^alpha]``.

  Examples:
    >>> import jax.numpy as jnp
    >>> from gca_jax import metrics
    >>> z = jnp.array([[1.0, 0.0], [0.0, 1.0]])
    >>> float(metrics.alignment(z, z))
    0.0
    >>> float(metrics.alignment(z, -z))
    4.0
  """
  check_pair(z1, z2, min_rows=1)
  alpha = _positive_scalar("alpha", alpha)
  distance = jnp.linalg.norm(_normalized(z1, "z1") - _normalized(z2, "z2"),
                             axis=-1)
  return jnp.mean(distance ** alpha)


def uniformity(z: jax.Array, t: float = 2.0) -> jax.Array:
  r"""Uniformity (Wang and Isola 2020): log of the mean Gaussian potential.

  .. math::

    \mathcal{L}_\text{uniform} = \log \frac{1}{N(N-1)} \sum_{i \ne j}
      e^{-t \|\hat z_i - \hat z_j\|_2^2}

  over distinct pairs of the unit-normalised rows ``ẑ``; lower is more
  uniform on the sphere. Uses ``||a - b||^2 = 2 - 2 a·b`` for unit vectors and
  a log-sum-exp, so it is finite however spread the embeddings are.

  Args:
    z: ``(N, D)`` embeddings, ``N >= 2``.
    t: the potential's scale, finite and > 0 (the reference uses 2).

  Returns:
    The scalar uniformity, in ``[-4 t, 0]``.

  Examples:
    >>> import jax.numpy as jnp
    >>> from gca_jax import metrics
    >>> float(metrics.uniformity(jnp.array([[1.0, 0.0], [1.0, 0.0]])))  # collapsed
    0.0
    >>> round(float(metrics.uniformity(jnp.array([[1.0, 0.0], [-1.0, 0.0]]))), 4)
    -8.0
  """
  check_real("z", z)
  if z.ndim != 2 or z.shape[0] < 2 or z.shape[1] < 1:
    raise ValueError(f"z must be (N, D) with N >= 2 and D >= 1, got shape {z.shape}.")
  t = _positive_scalar("t", t)
  z = _normalized(z)
  squared_distance = jnp.maximum(2.0 - 2.0 * z @ z.T, 0.0)
  n = z.shape[0]
  off_diagonal = ~jnp.eye(n, dtype=bool)
  logits = jnp.where(off_diagonal, -t * squared_distance, -jnp.inf)
  return jax.nn.logsumexp(logits) - jnp.log(n * (n - 1.0))


# ----------------------------------------------------------------------------
# Wasserstein dependency measure (the paper's Definition 2).

_SQRT2 = math.sqrt(2.0)


def wdm_lower_bound(z1: jax.Array, z2: jax.Array) -> jax.Array:
  r"""A lower bound of the Wasserstein dependency measure, in ``O(N D)``.

  The Wasserstein dependency measure of two views (the paper's Definition 2;
  Ozair et al. 2019) is the 1-Wasserstein distance between their joint law and
  the product of its marginals, for the Euclidean metric on the pair
  ``[x, y]``:

  .. math::

    \mathrm{WDM}(z_1; z_2) = W_1(P_{z_1 z_2}, P_{z_1} \otimes P_{z_2})
      = \sup_{\|f\|_L \le 1} \mathbb{E}_{P_{z_1 z_2}} f - \mathbb{E}_{P_{z_1}
        \otimes P_{z_2}} f

  (Kantorovich-Rubinstein). On the unit ball the critic
  ``f(x, y) = x·y / sqrt(2)`` is 1-Lipschitz: its gradient ``(y, x) / sqrt(2)``
  has norm ``sqrt(|x|^2 + |y|^2) / sqrt(2) <= 1`` on the (convex) product of
  balls. Rows are L2-normalised (as the losses do: scale-safe, a zero row
  stays zero), so every pair lies there, and

  .. math::

    \mathrm{WDM} \ge \frac{1}{\sqrt 2}\Big(\frac1N \sum_i z_{1i} \cdot z_{2i}
      - \frac{1}{N(N-1)} \sum_{i \ne j} z_{1i} \cdot z_{2j}\Big),

  the mean cosine of the positive pairs minus that of the other pairs, over
  ``sqrt(2)``. The mean over ``i != j`` is an unbiased estimate of the
  product's expectation (``z1_i`` and ``z2_j`` are independent for ``i != j``),
  so the value estimates the bound on the population without bias; on the
  sample it bounds ``W1`` between the empirical joint measure and the
  ``N(N-1)`` off-diagonal pairs, which is ``N / (N - 1)`` times ``W1`` between
  the empirical joint and the full ``N^2``-atom empirical product. It is
  computed from sums, ``sum_{i != j} z1_i·z2_j = (sum_i z1_i)·(sum_j z2_j) -
  sum_i z1_i·z2_i``, without the ``N x N`` matrix.

  What it measures is the alignment of the paired features under a cosine
  critic, which is one witness of the dependence among many, not the
  dependence itself:

  * it can be negative (positives less similar than the rest); a negative
    value bounds nothing, ``WDM >= 0`` always;
  * the WDM is invariant under a rotation ``Q`` of one view (``(x, y) ->
    (x, Q y)`` is an isometry of the pair space that carries the joint law
    and the product of ``(z1, z2)`` to those of ``(z1, z2 Q)``); the bound is
    not: ``z2 = -z1`` (a rotation in even ``D``) turns the value of
    ``z2 = z1`` into its negative (tested);
  * for strongly dependent views it is about half the WDM: exactly half, in
    the population, on the channel law of ``docs/metrics.md``, and 0.45 to
    0.6 of the exact ``W1`` for identical Gaussian views (``N = 8``,
    ``D = 4``, tested against linear programming).

  Args:
    z1, z2: ``(N, D)`` embeddings of the two views, ``N >= 2``; row ``i`` of
      each from sample ``i``.

  Returns:
    The scalar bound, in the dtype the losses compute in (at least float32).

  Examples:
    >>> import jax.numpy as jnp
    >>> from gca_jax import metrics
    >>> z = jnp.eye(4)                      # four orthogonal samples
    >>> print(f"{metrics.wdm_lower_bound(z, 3.0 * z):.4f}")  # 1 / sqrt(2)
    0.7071
    >>> print(f"{metrics.wdm_lower_bound(z, jnp.roll(z, 1, axis=0)):.4f}")
    -0.2357

  References:
    Ozair, Lynch, Bengio, van den Oord, Levine, Sermanet, "Wasserstein
    dependency measure for representation learning", NeurIPS 2019.
  """
  check_pair(z1, z2)
  z1, z2 = _normalized(z1, "z1"), _normalized(z2, "z2")
  n = z1.shape[0]
  positives = jnp.sum(z1 * z2)
  off_diagonal = jnp.sum(z1, axis=0) @ jnp.sum(z2, axis=0) - positives
  return (positives / n - off_diagonal / (n * (n - 1))) / _SQRT2


def _squared_distances(z: jax.Array) -> jax.Array:
  """``|z_i - z_k|^2`` between the rows of ``z``, exactly 0 for ``i = k``."""
  squared_norms = jnp.sum(z * z, axis=1)
  squared = squared_norms[:, None] + squared_norms[None, :] - 2.0 * z @ z.T
  # The Gram form rounds a zero distance to about 1e-16 (float64), whose
  # square root, 1e-8, would be a visible error; a row's own distance is 0.
  return jnp.where(jnp.eye(z.shape[0], dtype=bool), 0.0,
                   jnp.maximum(squared, 0.0))


def _pair_cost(d1, d2, x, y) -> jax.Array:
  """Euclidean distances between the pair clouds ``x`` and ``y``.

  A cloud is a pair of index vectors ``(i, j)``: its point ``k`` is
  ``[z1_{i_k}, z2_{j_k}]``, so its squared distance to ``[z1_{i'}, z2_{j'}]``
  is ``d1[i, i'] + d2[j, j']``, exactly 0 for the same point.
  """
  squared = d1[x[0]][:, y[0]] + d2[x[1]][:, y[1]]
  positive = squared > 0
  # sqrt has an infinite derivative at 0; a coincident pair gets a zero one.
  return jnp.where(positive, jnp.sqrt(jnp.where(positive, squared, 1.0)), 0.0)


def _entropic_cost(cost: jax.Array, eps, iters: int) -> jax.Array:
  """``OT_eps`` of the uniform measures on the rows and columns of ``cost``.

  ``min_P <P, C> + eps KL(P || a bᵀ)`` over plans with marginals ``a, b``,
  evaluated as its dual at the potentials after ``iters`` Sinkhorn
  iterations: ``eps (<a, alpha - log a> + <b, beta - log b> + 1 - sum P)``,
  with ``P = exp(alpha_i + beta_j - C_ij / eps)``.
  """
  n, m = cost.shape
  log_a = jnp.full((n,), -math.log(n), cost.dtype)
  log_b = jnp.full((m,), -math.log(m), cost.dtype)
  log_kernel = -cost / eps
  out = sinkhorn(log_kernel, log_a, log_b, iters=iters)
  mass = jnp.sum(jnp.exp(out.log_plan(log_kernel)))
  return eps * (jnp.mean(out.log_u - log_a) + jnp.mean(out.log_v - log_b)
                + 1.0 - mass)


def _sinkhorn_divergence(d1, d2, x, y, eps, iters: int) -> jax.Array:
  """``S_eps(x, y) = OT_eps(x, y) - (OT_eps(x, x) + OT_eps(y, y)) / 2``."""
  def ot(p, q):
    return _entropic_cost(_pair_cost(d1, d2, p, q), eps, iters)

  return ot(x, y) - 0.5 * (ot(x, x) + ot(y, y))


def _check_key(key) -> None:
  """``key`` must be one ``jax.random`` key (raw ``uint32`` or typed)."""
  dtype = getattr(key, "dtype", None)
  typed = dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key)
  raw = dtype == jnp.uint32 and jnp.ndim(key) == 1
  if not ((typed and jnp.ndim(key) == 0) or raw):
    shown = (f"an array of shape {jnp.shape(key)} and dtype {dtype}"
             if dtype is not None else repr(key))
    raise TypeError("key must be one jax.random key, e.g. jax.random.PRNGKey(0) "
                    f"or jax.random.key(0), got {shown}.")


def _check_sinkhorn_iters(iters) -> int:
  """``iters`` as a Python int >= 1 (a traced one is refused as non-static)."""
  try:
    checked = check_iters(iters)
  except ValueError:  # not an int: refused below, with this function's range
    checked = 0
  if checked < 1:
    raise ValueError(f"iters must be an int >= 1, got {iters!r}.")
  return checked


#: The fewest pairs :func:`wdm_sinkhorn` estimates from. Below it the
#: estimate of identical views is <= 0 for a large share of the keys and
#: hardly larger than that of independent views (Gaussian views in D = 4, 64
#: keys: 70% of them at N = 2, 38% at N = 8, 14% at N = 16, none at N = 32;
#: experiments/RESULTS.md); :func:`wdm_lower_bound` takes any N >= 2.
WDM_SINKHORN_MIN_ROWS = 32


def wdm_sinkhorn(z1: jax.Array, z2: jax.Array, *, key: jax.Array,
                 eps: float = 0.1, iters: int = 100) -> jax.Array:
  r"""Entropic estimate of the Wasserstein dependency measure, for analysis.

  ``WDM = W1(P_{z1 z2}, P_{z1} ⊗ P_{z2})`` (see :func:`wdm_lower_bound`) is
  estimated from the ``N`` pairs with two Sinkhorn divergences on the pair
  space, Euclidean cost ``C = |[x, y] - [x', y']|_2`` (the cost of ``W1``):

  .. math::

    \widehat{\mathrm{WDM}} = S_\varepsilon(\hat J, \hat\Pi_p)
      - S_\varepsilon(\hat\Pi_q, \hat\Pi_r), \qquad
    S_\varepsilon(\alpha, \beta) = \mathrm{OT}_\varepsilon(\alpha, \beta)
      - \tfrac12 \mathrm{OT}_\varepsilon(\alpha, \alpha)
      - \tfrac12 \mathrm{OT}_\varepsilon(\beta, \beta),

  where ``Ĵ`` is the joint cloud ``{[z1_i, z2_i]}``, ``Π̂_p`` the shuffled
  cloud ``{[z1_i, z2_{p(i)}]}`` (a sample of the product of the marginals) for
  a random permutation ``p``, ``p, q, r`` independent permutations drawn from
  ``key``, and ``OT_eps(α, β) = min_P <P, C> + eps KL(P || α ⊗ β)`` over the
  couplings of the two uniform clouds, computed by ``iters`` balanced
  Sinkhorn iterations of :func:`gca_jax.losses.sinkhorn` on the log-kernel
  ``-C / eps`` (and evaluated as its dual). Rows are L2-normalised first.

  The second divergence is a null correction: between two samples of the
  same law, ``S_eps`` is not 0 but a positive finite-sample offset, which
  for ``N`` in the hundreds dominates the raw value; two independent shuffles
  are such a pair, built like the first one, so subtracting it removes most
  of the offset. For independent views both terms are offsets of the same
  kind and the estimate is about 0, of either sign (tested).

  What it estimates (measured in ``docs/metrics.md``, on the channel law
  whose WDM is known; the tests pin each statement):

  * as ``N -> inf`` both offsets vanish and the estimate tends to
    ``S_eps(P_{z1 z2}, P_{z1} ⊗ P_{z2})``, the divergence of the laws at this
    ``eps``, which is not the WDM: it tends to ``W1`` as ``eps -> 0`` and to
    half the energy distance ``E|X - Y| - (E|X - X'| + E|Y - Y'|) / 2`` as
    ``eps -> inf`` (both limits tested); at ``eps = 0.1`` it is 0.89 of the
    WDM of the channel law with ``rho = 1`` and 0.82 with ``rho = 1/2``;
  * at the ``N`` one logs it is **biased low under dependence**, below even
    that limit: the null offset it subtracts, between two samples of one
    law, exceeds what the first term carries above the laws' divergence, so
    the correction removes too much. The mean estimate is 0.77 of the WDM at
    ``N = 256`` and 0.84 at ``N = 1024`` (channel law, ``rho = 1``); 0.61
    and 0.76 for ``rho = 1/2``. For Gaussian views ``z`` and ``z + 0.1 n``
    in ``D = 4`` it is 0.27 at ``N = 1024``, below :func:`wdm_lower_bound`
    (0.70), although the WDM is above that bound;
  * the bias shrinks slowly in ``N``: the null offset between two
    ``N``-samples shrinks like ``N^{-1}`` at large ``eps`` (the divergence
    is then about half a squared MMD, a V-statistic of mean ``c / N``;
    tested at ``eps = 10``), but at ``eps = 0.1`` in ``D = 4`` only 1.17x
    and 1.29x per 4x more pairs (``N = 32`` to 512);
  * iterations: a fixed ``iters`` too small for ``eps`` leaves the plans
    unconverged, and each ``OT_eps``, the dual at the current potentials, is
    then below its value (weak duality; tested); ``iters`` must grow as
    ``eps`` shrinks.

  So a value is not the WDM, and values at different ``N``, ``D``, ``eps``
  or ``iters`` do not compare. At one ``(N, D, eps, iters)`` it grows with
  the dependence (tested along views ``z + s n``, ``s`` from 4 to 0.1): it
  ranks runs measured at the same batch size and tracks one run over
  training. Batches of fewer than :data:`WDM_SINKHORN_MIN_ROWS` pairs are
  refused. A NaN or inf entry in either view gives NaN.

  Args:
    z1, z2: ``(N, D)`` embeddings of the two views, ``N >=``
      :data:`WDM_SINKHORN_MIN_ROWS`; row ``i`` of each from sample ``i``.
    key: one ``jax.random`` key (raw or typed) for the three permutations.
    eps: entropic regularisation (finite, > 0), in units of the cost
      (distances between normalised pairs are at most ``2 sqrt(2)``).
    iters: Sinkhorn iterations of each of the six problems (an int >= 1).

  Returns:
    The scalar estimate (``O(iters N^2)`` work, ``N x N`` memory).

  Examples:
    >>> import jax
    >>> from gca_jax import metrics
    >>> z, noise = jax.random.normal(jax.random.PRNGKey(0), (2, 256, 4))
    >>> key = jax.random.PRNGKey(1)
    >>> dependent = metrics.wdm_sinkhorn(z, z + 0.25 * noise, key=key)
    >>> independent = metrics.wdm_sinkhorn(z, noise, key=key)
    >>> bool(dependent > 10 * abs(independent))
    True

  References:
    Feydy, Séjourné, Vialard, Amari, Trouvé, Peyré, "Interpolating between
    optimal transport and MMD using Sinkhorn divergences", AISTATS 2019;
    Genevay, Chizat, Bach, Cuturi, Peyré, "Sample complexity of Sinkhorn
    divergences", AISTATS 2019.
  """
  check_pair(z1, z2)
  iters = _check_sinkhorn_iters(iters)
  eps = _positive_scalar("eps", eps)
  _check_key(key)
  if z1.shape[0] < WDM_SINKHORN_MIN_ROWS:
    raise ValueError(
        f"z1 and z2 need at least {WDM_SINKHORN_MIN_ROWS} rows for wdm_sinkhorn, got "
        f"N = {z1.shape[0]}: below that the estimate is mostly finite-sample offset "
        "and noise; use wdm_lower_bound, which takes any N >= 2.")
  z1, z2 = _normalized(z1, "z1"), _normalized(z2, "z2")
  # A NaN or inf row normalises to a NaN row, whose costs the pair cost
  # would read as 0 (NaN > 0 is false): the estimate says NaN instead.
  finite = jnp.all(jnp.isfinite(z1)) & jnp.all(jnp.isfinite(z2))
  dtype = jnp.result_type(z1, z2)
  d1 = _squared_distances(z1.astype(dtype))
  d2 = _squared_distances(z2.astype(dtype))
  n = z1.shape[0]
  rows = jnp.arange(n)
  p, q, r = (jax.random.permutation(k, n) for k in jax.random.split(key, 3))
  divergence = functools.partial(_sinkhorn_divergence, d1, d2, eps=eps,
                                 iters=iters)
  estimate = divergence((rows, rows), (rows, p)) - divergence((rows, q), (rows, r))
  return jnp.where(finite, estimate, jnp.nan)
