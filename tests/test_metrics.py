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


# ----------------------------------------------------------------------------
# What the WDM estimators estimate: limits, rates, bias and invariance.


def _shuffled_clouds(z1, z2, key):
  """The four clouds of ``wdm_sinkhorn`` (joint, ``Π_p``, ``Π_q``, ``Π_r``) of
  the normalised views, with the permutations it draws from ``key``."""
  u1, u2 = _unit(z1), _unit(z2)
  rows = np.arange(len(u1))
  p, q, r = (np.asarray(jax.random.permutation(k, len(u1))) for k in jax.random.split(key, 3))
  return [np.concatenate([u1, u2[perm]], axis=1) for perm in (rows, p, q, r)]


def _half_energy_distance(x, y):
  """``E|X - Y| - (E|X - X'| + E|Y - Y'|) / 2`` of the uniform measures on the
  rows (the self pairs included, as the entropic terms include them)."""
  mean_distance = lambda a, b: np.linalg.norm(a[:, None] - b[None], axis=-1).mean()
  return mean_distance(x, y) - 0.5 * (mean_distance(x, x) + mean_distance(y, y))


def test_wdm_sinkhorn_tends_to_the_clouds_w1_as_eps_goes_to_0(x64):
  """``S_eps -> W1`` as ``eps -> 0``: the estimate becomes the difference of
  the exact ``W1`` of its two pairs of clouds (linear programming)."""
  z, noise = jax.random.normal(jax.random.PRNGKey(3), (2, 32, 3))
  z1, z2, key = z, z + 0.5 * noise, jax.random.PRNGKey(4)
  joint, p, q, r = _shuffled_clouds(z1, z2, key)
  exact = _exact_w1(joint, p) - _exact_w1(q, r)
  errors = [abs(float(metrics.wdm_sinkhorn(z1, z2, key=key, eps=eps, iters=iters)) - exact)
            for eps, iters in ((0.1, 200), (0.01, 2000), (5e-4, 30000))]
  assert errors[2] < 1e-4 * abs(exact), (errors, exact)
  assert errors[0] > 100 * errors[2]  # the limit is approached, not the value at any eps


def test_wdm_sinkhorn_tends_to_half_the_energy_distance_as_eps_grows(x64):
  """``OT_eps`` tends to ``E_{α⊗β} C`` (the plan to the product) as
  ``eps -> inf``, so ``S_eps`` to half the energy distance, with an ``O(1/eps)``
  error."""
  z, noise = jax.random.normal(jax.random.PRNGKey(3), (2, 32, 3))
  z1, z2, key = z, z + 0.5 * noise, jax.random.PRNGKey(4)
  joint, p, q, r = _shuffled_clouds(z1, z2, key)
  energy = _half_energy_distance(joint, p) - _half_energy_distance(q, r)
  errors = [abs(float(metrics.wdm_sinkhorn(z1, z2, key=key, eps=eps, iters=10)) - energy)
            for eps in (1e2, 1e3, 1e4)]
  assert errors[2] < 1e-3 * abs(energy), (errors, energy)
  np.testing.assert_allclose(errors[0] / errors[1], 10, rtol=0.05)  # O(1/eps)
  np.testing.assert_allclose(errors[1] / errors[2], 10, rtol=0.05)


def _null_offset(n, eps, iters, draws=8):
  """Mean over ``draws`` of the null term ``S_eps(Π_q, Π_r)`` of
  ``wdm_sinkhorn`` for ``n`` independent Gaussian pairs in ``D = 4``."""
  z1, z2 = jax.random.normal(jax.random.PRNGKey(n), (2, n, 4))
  d1 = metrics._squared_distances(metrics._normalized(z1))
  d2 = metrics._squared_distances(metrics._normalized(z2))
  rows = jnp.arange(n)

  def offset(key):
    q, r = (jax.random.permutation(k, n) for k in jax.random.split(key, 2))
    return metrics._sinkhorn_divergence(d1, d2, (rows, q), (rows, r), eps, iters)

  keys = jax.random.split(jax.random.PRNGKey(1000), draws)
  return float(jnp.mean(jax.jit(jax.vmap(offset))(keys)))


def test_wdm_sinkhorn_null_offset_shrinks_like_one_over_n_at_large_eps(x64):
  """At large ``eps`` the divergence is about half a squared MMD, a
  V-statistic whose mean between two samples of one law is ``c / N``: 4x the
  pairs, a quarter of the offset (3.80x and 3.96x from N = 32 to 128 to 512
  with 100 iterations in experiments/RESULTS.md)."""
  small, large = _null_offset(32, 10.0, 20), _null_offset(128, 10.0, 20)
  assert 0 < large < small
  assert 3.2 < small / large < 4.8, (small, large)


def _channel_views(key, n, rho, k=4):
  """``n`` pairs of a law with a known WDM: ``z1`` uniform on the ``k`` unit
  vectors ``e_a``; ``z2 = z1`` with probability ``rho``, else a fresh uniform
  ``e_b``."""
  first, keep, fresh = jax.random.split(key, 3)
  a = jax.random.randint(first, (n,), 0, k)
  b = jnp.where(jax.random.uniform(keep, (n,)) < rho, a, jax.random.randint(fresh, (n,), 0, k))
  return jnp.eye(k)[a], jnp.eye(k)[b]


def _channel_wdm(rho, k=4):
  """The channel law's WDM, ``sqrt(2) rho (1 - 1/k)``: the product puts
  ``rho (1 - 1/k)`` more mass than the joint off the diagonal pairs
  ``(e_a, e_b), a != b``, and each of them is ``sqrt(2)`` or more from every
  diagonal pair ``(e_c, e_c)``, where that mass goes."""
  return np.sqrt(2) * rho * (1 - 1 / k)


def test_channel_law_wdm_is_its_exact_w1():
  # rho = 1/2, k = 4 as atoms of equal mass: the joint puts 5/32 on each
  # diagonal pair and 1/32 on each other one; the product 2/32 on every pair.
  eye = np.eye(4)
  pair = lambda a, b: np.concatenate([eye[a], eye[b]])
  joint = [pair(a, b) for a in range(4) for b in range(4) for _ in range(5 if a == b else 1)]
  product = [pair(a, b) for a in range(4) for b in range(4) for _ in range(2)]
  np.testing.assert_allclose(_exact_w1(np.array(joint), np.array(product)),
                             _channel_wdm(0.5), rtol=1e-7)


def _mean_estimates(n, rho, draws=16):
  keys = jax.random.split(jax.random.PRNGKey(n), draws)

  def both(key):
    z1, z2 = _channel_views(key, n, rho)
    return (metrics.wdm_sinkhorn(z1, z2, key=jax.random.fold_in(key, 1)),
            metrics.wdm_lower_bound(z1, z2))

  sinkhorn_estimates, bounds = jax.jit(jax.vmap(both))(keys)
  return float(jnp.mean(sinkhorn_estimates)), float(jnp.mean(bounds))


@pytest.mark.parametrize("rho", [1.0, 0.5])
def test_wdm_sinkhorn_is_biased_low_and_the_bound_is_half_the_wdm(rho):
  """On the channel law (known WDM): ``wdm_sinkhorn`` underestimates by a
  fifth or more at ``N <= 128`` (the table of docs/metrics.md: less at
  larger ``N``); ``wdm_lower_bound`` estimates its population value, exactly
  half the WDM here, without bias."""
  wdm = _channel_wdm(rho)
  (sinkhorn_32, bound_32), (sinkhorn_128, bound_128) = (_mean_estimates(n, rho)
                                                        for n in (32, 128))
  for estimate in (sinkhorn_32, sinkhorn_128):
    assert 0.2 * wdm < estimate < 0.8 * wdm, (sinkhorn_32, sinkhorn_128, wdm)
  if rho == 1.0:  # with rho = 1/2 the step from N = 32 to 128 is within the
    assert sinkhorn_32 < sinkhorn_128  # noise of 16 draws (0.43 and 0.52 of the WDM)
  # 16 draws: the standard error of the bound's mean is about 0.01.
  np.testing.assert_allclose([bound_32, bound_128], wdm / 2, atol=0.04)


def test_rotating_one_view_moves_the_bound_but_not_the_sinkhorn_estimate(x64):
  """``(x, y) -> (x, Q y)`` is an isometry of the pair space that maps the
  joint and product laws of ``(z1, z2)`` to those of ``(z1, Q z2)``: the WDM
  and the Sinkhorn estimate (costs of distances only) are unchanged; the
  cosine critic of the bound is not, ``Q = -I`` flips its sign."""
  z = jax.random.normal(jax.random.PRNGKey(0), (32, 4))
  rotation, _ = jnp.linalg.qr(jax.random.normal(jax.random.PRNGKey(1), (4, 4)))
  key = jax.random.PRNGKey(2)
  estimate = metrics.wdm_sinkhorn(z, z, key=key)
  bound = float(metrics.wdm_lower_bound(z, z))
  for q in (rotation, -jnp.eye(4)):
    np.testing.assert_allclose(metrics.wdm_sinkhorn(z, z @ q, key=key), estimate, rtol=1e-9)
  np.testing.assert_allclose(metrics.wdm_lower_bound(z, -z), -bound, rtol=1e-12)
  assert float(metrics.wdm_lower_bound(z, z @ rotation)) < bound - 0.1


def test_wdm_lower_bound_is_about_half_the_exact_w1_of_identical_views(x64):
  rng = np.random.default_rng(0)
  ratios = []
  for _ in range(3):
    z = rng.normal(size=(8, 4))
    joint, _, off_diagonal = _joint_and_products(_unit(z), _unit(z))
    ratios.append(float(metrics.wdm_lower_bound(jnp.asarray(z), jnp.asarray(z)))
                  / _exact_w1(joint, off_diagonal))
  assert all(0.45 < ratio < 0.6 for ratio in ratios), ratios


# ----------------------------------------------------------------------------
# Inputs the metrics do not take, non-finite inputs and small batches.

_KEY = jax.random.PRNGKey(0)
_Z = jax.random.normal(jax.random.PRNGKey(9), (32, 3))


@pytest.mark.parametrize("call, message", [
    (lambda: metrics.alignment([[1.0, 0.0]], [[1.0, 0.0]]), "z1 must be a jax or numpy array"),
    (lambda: metrics.alignment(_Z[0], _Z[1]), r"z1 and z2 must be \(B, D\) matrices"),
    (lambda: metrics.alignment(_Z[None], _Z[None]), r"z1 and z2 must be \(B, D\) matrices"),
    (lambda: metrics.alignment(_Z, _Z, alpha=2j), "alpha must be a real number"),
    (lambda: metrics.alignment(_Z, _Z, alpha="2"), "alpha must be a real number"),
    (lambda: metrics.alignment(_Z, _Z, alpha=-1.0), "alpha must be finite and > 0"),
    (lambda: metrics.uniformity([[1.0, 0.0], [0.0, 1.0]]), "z must be a jax or numpy array"),
    (lambda: metrics.uniformity(_Z.astype(jnp.complex64)), "z must have a real"),
    (lambda: metrics.uniformity(jnp.ones((4, 0))), "D >= 1"),
    (lambda: metrics.uniformity(_Z, t=-1.0), "t must be finite and > 0"),
    (lambda: metrics.uniformity(_Z, t=jnp.ones(2)), "t must be a real number"),
    (lambda: metrics.wdm_lower_bound([[1.0], [0.0]], [[1.0], [0.0]]), "z1 must be a jax"),
    (lambda: metrics.wdm_lower_bound(_Z, _Z.astype(jnp.complex64)), "z2 must have a real"),
    (lambda: metrics.wdm_sinkhorn(_Z.tolist(), _Z, key=_KEY), "z1 must be a jax"),
    (lambda: metrics.wdm_sinkhorn(_Z, _Z, key=0), "key must be one jax.random key"),
    (lambda: metrics.wdm_sinkhorn(_Z, _Z, key=None), "key must be one jax.random key"),
    (lambda: metrics.wdm_sinkhorn(_Z, _Z, key=jnp.zeros(2)), "key must be one jax.random key"),
    (lambda: metrics.wdm_sinkhorn(_Z, _Z, key=jax.random.split(_KEY, 3)),
     "key must be one jax.random key"),
    (lambda: metrics.wdm_sinkhorn(_Z, _Z, key=_KEY, eps=0.1j), "eps must be a real number"),
    (lambda: metrics.wdm_sinkhorn(_Z, _Z, key=_KEY, eps="0.1"), "eps must be a real number"),
    (lambda: metrics.wdm_sinkhorn(_Z, _Z, key=_KEY, eps=jnp.ones(2)), "eps must be a real"),
    (lambda: metrics.wdm_sinkhorn(_Z, _Z, key=_KEY, iters=True), "iters must be an int >= 1"),
])
def test_metrics_refuse_inputs_they_do_not_take_in_one_line(call, message):
  with pytest.raises((TypeError, ValueError), match=message) as error:
    call()
  assert "\n" not in str(error.value)


def test_wdm_sinkhorn_takes_numpy_integers_and_typed_keys():
  expected = metrics.wdm_sinkhorn(_Z, _Z, key=_KEY, iters=10)
  np.testing.assert_array_equal(metrics.wdm_sinkhorn(_Z, _Z, key=_KEY, iters=np.int64(10)),
                                expected)
  np.testing.assert_array_equal(
      metrics.wdm_sinkhorn(_Z, _Z, key=jax.random.key(0), iters=10), expected)


@pytest.mark.parametrize("name, value", [("alpha", -2.0), ("t", 0.0), ("eps", -0.1)])
def test_a_traced_setting_out_of_range_gives_nan(name, value):
  call = {"alpha": lambda v: metrics.alignment(_Z, _Z + 1, alpha=v),
          "t": lambda v: metrics.uniformity(_Z, t=v),
          "eps": lambda v: metrics.wdm_sinkhorn(_Z, _Z, key=_KEY, eps=v, iters=5)}[name]
  assert np.isnan(jax.jit(call)(value))
  assert np.isfinite(jax.jit(call)(0.5))


@pytest.mark.parametrize("spoil", [
    lambda z1, z2: (z1.at[3, 0].set(jnp.nan), z2),
    lambda z1, z2: (z1, z2.at[0, 2].set(jnp.inf)),
    lambda z1, z2: (z1 * jnp.nan, z2),
    lambda z1, z2: (z1.at[5].set(-jnp.inf), z2.at[5].set(jnp.nan)),
], ids=["nan entry", "inf entry", "all nan", "nan and inf rows"])
def test_wdm_estimates_are_nan_for_non_finite_inputs(spoil):
  z1, z2 = spoil(_Z, _Z + 0.1)
  assert np.isnan(metrics.wdm_sinkhorn(z1, z2, key=_KEY, iters=5))
  assert np.isnan(jax.jit(lambda a, b: metrics.wdm_sinkhorn(a, b, key=_KEY, iters=5))(z1, z2))
  assert np.isnan(metrics.wdm_lower_bound(z1, z2))


@pytest.mark.parametrize("n", [2, 16, 31])
def test_wdm_sinkhorn_refuses_batches_too_small_to_estimate(n):
  z = _Z[:n]
  with pytest.raises(ValueError, match=f"need at least 32 rows for wdm_sinkhorn, got N = {n}"):
    metrics.wdm_sinkhorn(z, z, key=_KEY)
  assert np.isfinite(metrics.wdm_lower_bound(z, z))  # the bound takes them


def test_too_few_iterations_under_estimate_each_entropic_cost(x64):
  """Each ``OT_eps`` is the dual objective at the current potentials, a lower
  bound of ``OT_eps`` at any potentials (weak duality), which the
  iterations (block coordinate ascent) only raise."""
  x, y = jax.random.normal(jax.random.PRNGKey(0), (2, 24, 3))
  cost = jnp.linalg.norm(x[:, None] - y[None], axis=-1)
  values = [float(metrics._entropic_cost(cost, 0.05, iters)) for iters in (1, 3, 10, 2000)]
  assert np.all(np.diff(values) > 0), values
