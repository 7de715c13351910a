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


# ----------------------------------------------------------------------------
# Wasserstein dependency measure.


def _unit(z):
  z = np.asarray(z, np.float64)
  return z / np.linalg.norm(z, axis=1, keepdims=True)


def _exact_w1(x, y):
  """W1 between the uniform measures on the rows of ``x`` and ``y`` (Euclidean
  cost), by linear programming over the ``n x m`` transport plans."""
  from scipy.optimize import linprog

  cost = np.linalg.norm(x[:, None] - y[None], axis=-1)
  n, m = cost.shape
  rows = np.kron(np.eye(n), np.ones((1, m)))  # sum_j P_ij = 1 / n
  cols = np.kron(np.ones((1, n)), np.eye(m))  # sum_i P_ij = 1 / m
  result = linprog(cost.ravel(), A_eq=np.vstack([rows, cols]),
                   b_eq=np.concatenate([np.full(n, 1 / n), np.full(m, 1 / m)]),
                   bounds=(0, None), method="highs")
  assert result.status == 0, result.message
  return result.fun


def _joint_and_products(z1, z2):
  """The empirical joint cloud ``[z1_i, z2_i]``, the full product (``N^2``
  atoms ``[z1_i, z2_j]``) and the product without its diagonal (``i != j``)."""
  n = len(z1)
  i, j = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
  i, j = i.ravel(), j.ravel()
  product = np.concatenate([z1[i], z2[j]], axis=1)
  return np.concatenate([z1, z2], axis=1), product, product[i != j]


def _views(kind, rng, n, d):
  z1 = rng.normal(size=(n, d))
  if kind == "independent":
    return z1, rng.normal(size=(n, d))
  if kind == "dependent":
    return z1, z1 + rng.uniform(0.01, 0.5) * rng.normal(size=(n, d))
  if kind == "identical":
    return z1, z1
  return z1, -z1  # "opposite": a negative (vacuous) bound


@pytest.mark.parametrize("kind", ["independent", "dependent", "identical", "opposite"])
@pytest.mark.slow
def test_wdm_lower_bound_never_exceeds_the_exact_w1(kind, x64):
  rng = np.random.default_rng(["independent", "dependent", "identical",
                               "opposite"].index(kind))
  for _ in range(12):
    n, d = rng.integers(6, 9), rng.integers(2, 5)
    z1, z2 = _views(kind, rng, n, d)
    bound = float(metrics.wdm_lower_bound(jnp.asarray(z1), jnp.asarray(z2)))
    joint, product, off_diagonal = _joint_and_products(_unit(z1), _unit(z2))
    w1_product, w1_off_diagonal = _exact_w1(joint, product), _exact_w1(joint, off_diagonal)
    # The LP solver's feasibility tolerance is 1e-7; the bound is float64.
    assert bound <= w1_off_diagonal + 1e-7, (n, d, bound, w1_off_diagonal)
    # The N^2-atom product is (1/N) joint + (1 - 1/N) off-diagonal, so its W1
    # is (N - 1)/N of the off-diagonal one, and so is the bound's share.
    np.testing.assert_allclose(w1_product, (n - 1) / n * w1_off_diagonal, atol=1e-7)
    assert (n - 1) / n * bound <= w1_product + 1e-7
    if kind == "opposite":
      assert bound < 0
    if kind in ("dependent", "identical"):
      assert bound > 0


def test_wdm_lower_bound_matches_the_n_by_n_definition(x64):
  z1, z2 = jax.random.normal(jax.random.PRNGKey(3), (2, 16, 5))
  u1, u2 = _unit(z1), _unit(1e-30 * z2)  # the normalisation is scale-safe
  cosines = u1 @ u2.T
  off_diagonal = cosines[~np.eye(16, dtype=bool)]
  expected = (np.mean(np.diag(cosines)) - np.mean(off_diagonal)) / np.sqrt(2)
  np.testing.assert_allclose(metrics.wdm_lower_bound(z1, 1e-30 * z2), expected, rtol=1e-12)
  assert metrics.wdm_lower_bound(z1.astype(jnp.float32),
                                 z2.astype(jnp.bfloat16)).dtype == jnp.float32


def _noisy_views(noise_scale, n=256, d=4):
  z, noise = jax.random.normal(jax.random.PRNGKey(0), (2, n, d))
  return z, z + noise_scale * noise


@pytest.mark.slow
def test_wdm_sinkhorn_grows_with_dependence():
  values = [float(metrics.wdm_sinkhorn(*_noisy_views(s), key=jax.random.PRNGKey(1)))
            for s in (4.0, 2.0, 1.0, 0.5, 0.25, 0.1)]
  assert np.all(np.diff(values) > 0), values
  assert values[0] > 0


@pytest.mark.slow
def test_wdm_sinkhorn_is_near_zero_for_independent_views():
  z, _ = _noisy_views(0.0)
  _, dependent = _noisy_views(0.5)
  reference = float(metrics.wdm_sinkhorn(z, dependent, key=jax.random.PRNGKey(1)))
  independent = jax.random.normal(jax.random.PRNGKey(7), z.shape)
  values = [float(metrics.wdm_sinkhorn(z, independent, key=jax.random.PRNGKey(k)))
            for k in range(4)]
  # The null correction leaves a fluctuation of either sign, a few percent of
  # the dependent value at this N.
  assert max(abs(v) for v in values) < 0.1 * reference, (values, reference)


def _ott_divergence(x, y, eps, iters):
  from ott.geometry import costs, pointcloud
  from ott.tools import sinkhorn_divergence

  solver = dict(min_iterations=iters, max_iterations=iters, inner_iterations=1,
                threshold=-1.0)
  value, _ = sinkhorn_divergence.sinkhorn_divergence(
      pointcloud.PointCloud, x, y, cost_fn=costs.Euclidean(), epsilon=eps,
      solve_kwargs=solver, symmetric_sinkhorn=False)
  return value


@pytest.mark.parametrize("eps, iters", [(0.1, 30), (0.5, 10), (0.05, 200)])
@pytest.mark.slow
def test_wdm_sinkhorn_matches_ott_sinkhorn_divergence(eps, iters, x64):
  """The same divergences from ott-jax, iterate for iterate.

  ott-jax updates the column potential first and these projections the row
  potential first, so ott's divergence of ``(y, x)`` runs the very iterates of
  ours of ``(x, y)``; ``symmetric_sinkhorn=False`` keeps ott's plain
  alternating updates on the symmetric terms. Equal to float64 round-off
  (the costs are formed from Gram matrices here and from differences in ott).
  """
  z1, z2 = _noisy_views(0.5, n=48, d=3)
  key = jax.random.PRNGKey(5)
  u1, u2 = _unit(z1), _unit(z2)
  n = len(u1)
  p, q, r = (np.asarray(jax.random.permutation(k, n)) for k in jax.random.split(key, 3))
  cloud = lambda perm: jnp.asarray(np.concatenate([u1, u2[perm]], axis=1))
  expected = (_ott_divergence(cloud(p), cloud(np.arange(n)), eps, iters)
              - _ott_divergence(cloud(r), cloud(q), eps, iters))
  ours = metrics.wdm_sinkhorn(z1, z2, key=key, eps=eps, iters=iters)
  assert ours.dtype == jnp.float64
  np.testing.assert_allclose(ours, expected, rtol=1e-9, atol=1e-12)


@pytest.mark.slow
def test_wdm_sinkhorn_is_jittable_and_differentiable():
  z1, z2 = _noisy_views(0.5, n=32)
  key = jax.random.PRNGKey(2)
  value = metrics.wdm_sinkhorn(z1, z2, key=key)
  jitted = jax.jit(metrics.wdm_sinkhorn, static_argnames="iters")(z1, z2, key=key)
  np.testing.assert_allclose(jitted, value, rtol=1e-5)
  grads = jax.grad(metrics.wdm_sinkhorn)(z1, z1, key=key)  # coincident pairs
  assert np.all(np.isfinite(grads))


@pytest.mark.parametrize("fn", [metrics.wdm_lower_bound,
                                lambda a, b: metrics.wdm_sinkhorn(a, b, key=jax.random.PRNGKey(0))])
def test_wdm_refuses_bad_shapes(fn):
  with pytest.raises(ValueError, match="same shape"):
    fn(jnp.ones((4, 3)), jnp.ones((4, 2)))
  with pytest.raises(ValueError, match="at least 2 rows"):
    fn(jnp.ones((1, 3)), jnp.ones((1, 3)))


@pytest.mark.parametrize("params, message", [
    (dict(eps=0.0), "eps must be finite and > 0, got 0.0"),
    (dict(eps=float("inf")), "eps must be finite and > 0"),
    (dict(iters=0), "iters must be an int >= 1, got 0"),
    (dict(iters=2.5), "iters must be an int >= 1, got 2.5")])
def test_wdm_sinkhorn_refuses_bad_settings(params, message):
  z = jnp.ones((4, 3))
  with pytest.raises(ValueError, match=message):
    metrics.wdm_sinkhorn(z, z, key=jax.random.PRNGKey(0), **params)


@pytest.mark.slow
def test_docstring_examples_run():
  import doctest

  for fn in (metrics.wdm_lower_bound, metrics.wdm_sinkhorn):
    runner = doctest.DocTestRunner()
    for test in doctest.DocTestFinder().find(fn):
      runner.run(test)
    assert runner.summarize(verbose=False).failed == 0, fn.__name__
