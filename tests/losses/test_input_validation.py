"""Bad input: a correct result or one clear error, never a silent number.

Each kind of bad input has one test, parameterised over the inputs that
share its cause: non-finite embeddings, extreme scales, bad targets and
marginals, parameters out of range, the float range of the robust term,
unsafe forced forms, empty or complex inputs, wrong shapes in ``sinkhorn``.
"""

import functools
import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gca_jax import losses, metrics, reference
from gca_jax.losses import geometry, projections

ALL_LOSSES = sorted(losses.CONTRASTIVE_LOSSES)
NAN, INF = float("nan"), float("inf")


def _views(batch=4, dim=6, seed=0):
  return jax.random.normal(jax.random.PRNGKey(seed), (2, batch, dim))


def _byol(z1, z2):
  return losses.byol(z1, z2, z2[::-1], z1[::-1])


# Every loss as fn(z1, z2): the contrastive losses, BYOL, the presets.
EVERY_LOSS = {
    **{name: losses.get(name) for name in ALL_LOSSES},
    "byol": _byol,
    **{f"reference/{name}": functools.partial(reference.loss, name)
       for name in reference.NAMES},
}


# ----------------------------------------------------------------------------
# Non-finite embeddings give a non-finite loss; zero rows a finite one.


@pytest.mark.parametrize("bad", [NAN, INF, -INF])
@pytest.mark.parametrize("name", sorted(EVERY_LOSS))
@pytest.mark.slow
def test_non_finite_embedding_gives_non_finite_loss(name, bad):
  z1, z2 = _views()
  fn = jax.jit(EVERY_LOSS[name])
  assert not np.isfinite(fn(z1.at[1, 2].set(bad), z2)), name
  assert not np.isfinite(fn(z1, z2.at[3, 0].set(bad))), name


@pytest.mark.parametrize("name", sorted(EVERY_LOSS))
@pytest.mark.slow
def test_zero_row_still_gives_finite_loss_and_gradient(name):
  z1, z2 = _views()
  value, grad = jax.value_and_grad(EVERY_LOSS[name])(z1.at[0].set(0.0), z2)
  assert np.isfinite(value) and np.all(np.isfinite(grad)), name


def test_normalisation_of_zero_nan_and_inf_rows():
  z = jnp.array([[3.0, 4.0], [0.0, 0.0], [NAN, 1.0], [INF, 1.0]])
  out = np.asarray(geometry.l2_normalize(z))
  np.testing.assert_allclose(out[0], [0.6, 0.8], rtol=1e-6)
  np.testing.assert_array_equal(out[1], [0.0, 0.0])
  assert np.all(np.isnan(out[2])) and np.all(np.isnan(out[3]))
  grad = jax.grad(lambda z: jnp.sum(geometry.l2_normalize(z)[:2] ** 3))(z)
  np.testing.assert_array_equal(grad[1], [0.0, 0.0])  # zero row: zero grad
  assert np.all(np.isfinite(grad[0]))


# ----------------------------------------------------------------------------
# Scale: a finite row normalises the same at any float32 magnitude.


@pytest.mark.parametrize("scale", [1e19, 1e30, 1e-20, 1e-30])
def test_normalisation_is_scale_invariant_in_float32(scale):
  z, _ = _views(dim=64)
  scaled = (z * jnp.float32(scale)).astype(jnp.float32)
  assert np.all(np.isfinite(scaled))
  np.testing.assert_allclose(geometry.l2_normalize(scaled),
                             geometry.l2_normalize(z), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("jit", [False, True])
def test_normalisation_up_to_the_largest_float32(jit):
  z, _ = _views(dim=64)
  normalize = jax.jit(geometry.l2_normalize) if jit else geometry.l2_normalize
  largest = float(jnp.finfo(jnp.float32).max)
  for peak in (largest, 0.5 * largest, 2.0 ** 64 * 1.5):
    huge = (z / jnp.max(jnp.abs(z), axis=1, keepdims=True)) * jnp.float32(peak)
    assert np.all(np.isfinite(huge))
    np.testing.assert_allclose(normalize(huge), geometry.l2_normalize(z),
                               rtol=1e-6, atol=1e-7)
  z1, z2 = _views()
  huge = (z1 / jnp.max(jnp.abs(z1))) * jnp.float32(largest)
  value, grad = jax.value_and_grad(losses.gca_uot)(huge, z2)
  np.testing.assert_allclose(value, losses.gca_uot(z1, z2), rtol=1e-6)
  assert np.all(np.isfinite(grad))


def test_subnormal_rows_read_as_zero_rows_in_float32():
  # The documented range: a row whose largest entry is below the smallest
  # normal float32 is flushed to zero by XLA; one just above is normalised.
  tiny = float(jnp.finfo(jnp.float32).tiny)
  z = jnp.array([[0.3 * tiny, 0.4 * tiny], [3.0 * tiny, 4.0 * tiny]], jnp.float32)
  out = np.asarray(jax.jit(geometry.l2_normalize)(z))
  np.testing.assert_array_equal(out[0], [0.0, 0.0])
  np.testing.assert_allclose(out[1], [0.6, 0.8], rtol=1e-6)


@pytest.mark.parametrize("scale", [1e19, 1e-20])
@pytest.mark.parametrize("name", ["infonce", "gca_uot", "gca_rince", "iot_uni",
                                  "byol", "reference/gca_ince"])
def test_losses_do_not_depend_on_the_scale_of_the_embeddings(name, scale):
  z1, z2 = _views()
  fn = EVERY_LOSS[name]
  np.testing.assert_allclose(fn(z1 * scale, z2), fn(z1, z2), rtol=1e-5)


def test_metrics_normalise_the_same_way():
  z1, z2 = _views()
  np.testing.assert_allclose(metrics.uniformity(z1 * 1e30),
                             metrics.uniformity(z1), rtol=1e-5)
  assert np.isnan(metrics.alignment(z1.at[0, 0].set(NAN), z2))
  with pytest.raises(TypeError, match="z must have a real"):
    metrics.uniformity(z1.astype(jnp.complex64))


# ----------------------------------------------------------------------------
# Target plans.


def _target(kind):
  target = np.array(losses.domain_target(jnp.array([0, 0, 1, 1]), 0.5, 0.1))
  if kind == "negative":
    target[0, 1] = -0.2
  elif kind == "nan":
    target[2, 5] = NAN
  elif kind == "inf":
    target[3, 0] = INF
  elif kind == "all zero":
    target[:] = 0.0
  elif kind == "zero row":
    target[5] = 0.0
  elif kind == "only self pairs":
    target = np.eye(8)
  return target


BAD_TARGETS = [
    ("negative", ">= 0 everywhere"), ("nan", "must be finite"),
    ("inf", "must be finite"), ("all zero", "every row of target"),
    ("zero row", r"rows \[5\]"), ("only self pairs", "every row of target"),
]


@pytest.mark.parametrize("kind, message", BAD_TARGETS)
@pytest.mark.parametrize("name", ["infonce", "gca_ince", "gca_uot",
                                  "gca_rince", "iot_uni"])
def test_bad_concrete_target_is_refused(name, kind, message):
  z1, z2 = _views()
  target = _target(kind)  # concrete: closed over by the jitted function
  with pytest.raises(ValueError, match=message):
    jax.jit(lambda a, b: losses.get(name)(a, b, target=target))(z1, z2)


@pytest.mark.parametrize("kind", [kind for kind, _ in BAD_TARGETS])
@pytest.mark.parametrize("name", ["infonce", "gca_ince", "gca_uot",
                                  "gca_rince", "iot_uni"])
def test_bad_traced_target_gives_non_finite_loss(name, kind):
  z1, z2 = _views()
  fn = jax.jit(lambda a, b, t: losses.get(name)(a, b, target=t))
  assert np.isfinite(fn(z1, z2, _target("valid")))
  assert not np.isfinite(fn(z1, z2, _target(kind))), (name, kind)


def test_complex_target_is_refused():
  z1, z2 = _views()
  with pytest.raises(TypeError, match="target must be a real matrix"):
    losses.gca_ince(z1, z2, target=_target("valid").astype(np.complex64))


def test_max_cost_self_pairs_may_carry_target_weight():
  # Self pairs are candidates with self_mask="max_cost": a diagonal target
  # is then a valid (if odd) target.
  z1, z2 = _views()
  value = losses.gca_ince(z1, z2, self_mask="max_cost", target=np.eye(8))
  assert np.isfinite(value)


# ----------------------------------------------------------------------------
# Parameters out of range.


@pytest.mark.parametrize("call, message", [
    (lambda z: losses.gca_loss(z, z, tau_a=INF), r"tau_a must be in \(0, 1\]"),
    (lambda z: losses.gca_loss(z, z, tau_b=1.5), r"tau_b must be in \(0, 1\]"),
    (lambda z: losses.gca_loss(z, z, tau_a=0.0), r"tau_a must be in \(0, 1\]"),
    (lambda z: losses.gca_loss(z, z, tau_b=NAN), r"tau_b must be in \(0, 1\]"),
    (lambda z: losses.gca_rince(z, z, tau_a=-0.5), r"tau_a must be in"),
    (lambda z: losses.gca_uot(z, z, rho_a=-1.0), "rho_a must be > 0"),
    (lambda z: losses.gca_uot(z, z, rho_b=NAN), "rho_b must be > 0"),
    (lambda z: losses.rince(z, z, lam=-0.01), "lam must be finite and >= 0"),
    (lambda z: losses.gca_rince(z, z, lam=-1.0), "lam must be finite"),
    (lambda z: losses.gca_uot(z, z, lam=INF), "lam must be finite"),
    (lambda z: losses.iot_uni(z, z, lambda_p=-0.2),
     "lambda_p must be finite and >= 0"),
    (lambda z: losses.gca_uot(z, z, w_rince=-0.02), "w_rince must be finite"),
    (lambda z: losses.gca_loss(z, z, w_ce=NAN), "w_ce must be finite"),
    (lambda z: losses.gca_loss(z, z, w_plan=-1.0), "w_plan must be finite"),
    (lambda z: losses.infonce(z, z, eps=INF), "eps must be > 0 and finite"),
    (lambda z: losses.gca_ince(z, z, eps=NAN), "eps must be > 0 and finite"),
    (lambda z: reference.loss("rince", z, z, q=0.0), r"q must be in \(0, 1\]"),
    (lambda z: reference.loss("gca_uot", z, z, w_rince=-1.0), "w_rince must be"),
    (lambda z: reference.loss("iot_uni", z, z, lambda_p=-1.0), "lambda_p"),
    (lambda z: reference.loss("gca_uot", z, z, rho_a=0.0), "rho_a must be"),
])
def test_parameter_out_of_range_is_refused(call, message):
  z = jnp.ones((4, 6))
  with pytest.raises(ValueError, match=message):
    jax.jit(call)(z)


@pytest.mark.parametrize("marginals, message", [
    ((-np.ones(8), np.ones(8)), r"marginals \(a\) must be finite and > 0"),
    ((np.ones(8), np.zeros(8)), r"marginals \(b\) must be finite and > 0"),
    ((np.full(8, NAN), np.ones(8)), r"marginals \(a\) must be finite"),
    ((np.ones(8), np.full(8, INF)), r"marginals \(b\) must be finite"),
])
def test_bad_concrete_marginals_are_refused(marginals, message):
  z1, z2 = _views()
  with pytest.raises(ValueError, match=message):
    losses.gca_ince(z1, z2, marginals=marginals)


@pytest.mark.parametrize("bad", [-1.0, 0.0, NAN, INF])
def test_bad_traced_marginals_give_non_finite_loss(bad):
  z1, z2 = _views()
  fn = jax.jit(lambda a: losses.gca_uot(z1, z2, marginals=(a, jnp.ones(8))))
  good = jnp.full(8, 0.125)
  assert np.isfinite(fn(good))
  assert not np.isfinite(fn(good.at[3].set(bad)))


def test_infinite_rho_is_the_balanced_marginal(x64):
  z1, z2 = _views()
  kw = dict(eps=0.3, iters=5, lam=0.01, q=0.6, w_ce=1.0, w_rince=0.02)
  np.testing.assert_allclose(
      losses.gca_uot(z1, z2, rho_a=INF, rho_b=0.2, **kw),
      losses.gca_loss(z1, z2, tau_a=1.0, tau_b=0.2 / 0.5, **kw), rtol=1e-13)
  np.testing.assert_allclose(
      losses.gca_uot(z1, z2, rho_a=INF, rho_b=INF, **kw),
      losses.gca_loss(z1, z2, **kw), rtol=1e-13)


def test_zero_lam_drops_the_negatives(x64):
  z1, z2 = _views()
  z = np.concatenate([z1, z2])
  z = z / np.linalg.norm(z, axis=1, keepdims=True)
  positives = (np.arange(8) + 4) % 8
  s_positive = np.sum(z * z[positives], axis=1) / 0.5
  expected = np.mean(-np.exp(0.6 * s_positive)) / 0.6
  value, grad = jax.value_and_grad(losses.rince)(z1, z2, lam=0.0)
  np.testing.assert_allclose(value, expected, rtol=1e-12)
  assert np.all(np.isfinite(grad))


# ----------------------------------------------------------------------------
# The float range of the robust term on the similarity kernel.


@pytest.mark.parametrize("name", ["rince", "gca_rince", "hs_rince"])
@pytest.mark.parametrize("q", [0.6, 1.0])
def test_robust_term_out_of_float32_range_is_refused_with_the_limit(name, q):
  """eps = 1e-3 is refused; the eps the message names works, finitely."""
  z1, z2 = _views(batch=16, dim=8)
  z2 = z1 + 0.05 * z2  # close positives: the largest values
  fn = losses.get(name)
  with pytest.raises(ValueError, match="too small for the robust") as error:
    fn(z1, z2, eps=1e-3, q=q)
  smallest = float(re.search(r"Use eps >= ([0-9.e-]+)", str(error.value))[1])
  assert 1e-3 < smallest < 0.05
  value, grad = jax.jit(jax.value_and_grad(
      functools.partial(fn, eps=smallest, q=q)))(z1, z2)
  assert np.isfinite(value) and np.all(np.isfinite(grad))
  assert value < -1e20  # the term is huge there, and represented
  with pytest.raises(ValueError, match="too small"):
    fn(z1, z2, eps=0.98 * smallest, q=q)


@pytest.mark.parametrize("name", ["rince", "gca_rince", "hs_rince"])
def test_robust_term_at_small_eps_is_finite_in_float64(name, x64):
  z1, z2 = _views(batch=16, dim=8)
  value, grad = jax.value_and_grad(
      functools.partial(losses.get(name), eps=1e-3))(z1, z1 + 0.05 * z2)
  assert np.isfinite(value) and np.all(np.isfinite(grad))


def test_robust_bound_has_the_sum_and_gradient_margins():
  # q/eps alone would allow exp(88) per anchor, whose sum over anchors or
  # whose gradient overflows float32; the bound keeps both in range.
  z1, z2 = _views(batch=512, dim=8)
  with pytest.raises(ValueError, match="too small"):
    losses.rince(z1, z2, eps=1.0 / 85.0, q=1.0)
  assert math.log(np.finfo(np.float32).max) > 85.0


# ----------------------------------------------------------------------------
# Forced numerical forms.


@pytest.mark.parametrize("name", ["gca_ince", "gca_uot", "iot"])
def test_forced_unsafe_scaling_form_is_refused(name):
  z1, z2 = _views()
  with pytest.raises(ValueError, match="form='scaling' is unsafe.*form='log'"):
    losses.get(name)(z1, z2, eps=0.01, form="scaling")


def test_forced_scaling_form_is_accepted_where_safe(x64):
  z1, z2 = _views()
  # float64 keeps the scaling form safe at eps = 0.01 (max C / eps = 200).
  np.testing.assert_allclose(
      losses.gca_ince(z1, z2, eps=0.01, form="scaling"),
      losses.gca_ince(z1, z2, eps=0.01, form="log"), rtol=1e-10)


def test_forced_scaling_form_with_traced_eps_is_trusted():
  z1, z2 = _views()
  fn = jax.jit(lambda eps: losses.gca_ince(z1, z2, eps=eps, form="scaling"))
  np.testing.assert_allclose(fn(0.5), losses.gca_ince(z1, z2, eps=0.5),
                             rtol=1e-6)


def test_relaxed_similarity_kernel_takes_the_log_form_earlier():
  # The potentials of exp(s) reach 1/eps further: (2 + 1) / eps > 35 here,
  # although 2 / eps <= 35.
  z1, z2 = _views()
  with pytest.raises(ValueError, match="form='scaling' is unsafe"):
    losses.gca_rince(z1, z2, eps=0.06, tau_a=0.5, tau_b=0.5, form="scaling")
  value, grad = jax.value_and_grad(functools.partial(
      losses.gca_rince, eps=0.06, tau_a=0.5, tau_b=0.5))(z1, z2)
  assert np.isfinite(value) and np.all(np.isfinite(grad))


# ----------------------------------------------------------------------------
# Empty, complex and non-array embeddings.


@pytest.mark.parametrize("name", sorted(EVERY_LOSS))
def test_empty_feature_dimension_is_refused(name):
  z = jnp.ones((4, 0))
  with pytest.raises(ValueError, match=r"at least 1 feature \(D >= 1\)"):
    EVERY_LOSS[name](z, z)


@pytest.mark.parametrize("name", sorted(EVERY_LOSS))
def test_complex_embeddings_are_refused(name):
  z = jnp.ones((4, 3), jnp.complex64)
  with pytest.raises(TypeError, match="real .* dtype, got complex64.*complex"):
    EVERY_LOSS[name](z, z)


def test_non_array_embeddings_are_refused():
  with pytest.raises(TypeError, match="z1 must be a jax or numpy array"):
    losses.infonce([[1.0, 2.0], [3.0, 4.0]], np.ones((2, 2)))


def test_integer_embeddings_are_computed_in_float():
  z1, z2 = _views()
  ints = (10 * z1).astype(jnp.int32), (10 * z2).astype(jnp.int32)
  np.testing.assert_allclose(
      losses.infonce(*ints),
      losses.infonce(*(z.astype(jnp.float32) for z in ints)), rtol=1e-6)


# ----------------------------------------------------------------------------
# sinkhorn(): wrong shapes name the argument and the expected shape.


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(log_kernel=jnp.zeros(5)), ValueError,
     r"log_kernel must be a non-empty \(N, M\) matrix, got shape \(5,\)"),
    (dict(log_kernel=jnp.zeros((0, 3))), ValueError, "non-empty"),
    (dict(log_a=jnp.zeros(4)), ValueError,
     r"log_a must have shape \(5,\) for a log_kernel of shape \(5, 3\), "
     r"got \(4,\)"),
    (dict(log_b=jnp.zeros((3, 1))), ValueError,
     r"log_b must have shape \(3,\)"),
    (dict(init_log_v=jnp.zeros(5)), ValueError,
     r"init_log_v must have shape \(3,\)"),
    (dict(tau_a=2.0), ValueError, r"tau_a must be in \(0, 1\]"),
    (dict(tau_b=INF), ValueError, r"tau_b must be in \(0, 1\]"),
    (dict(form="auto"), ValueError, "form must be 'log' or 'scaling'"),
    (dict(log_kernel=jnp.zeros((5, 3), jnp.complex64)), TypeError,
     "log_kernel must be a real array"),
])
def test_sinkhorn_refuses_bad_arguments_clearly(kwargs, error, message):
  args = dict(log_kernel=jnp.zeros((5, 3)), log_a=jnp.full(5, -math.log(5)),
              log_b=jnp.full(3, -math.log(3)))
  args.update(kwargs)
  with pytest.raises(error, match=message):
    projections.sinkhorn(args.pop("log_kernel"), args.pop("log_a"),
                         args.pop("log_b"), iters=2, **args)


def test_sinkhorn_accepts_numpy_inputs(x64):
  cost = np.random.default_rng(0).uniform(0, 2, (5, 3))
  out = projections.sinkhorn(-cost / 0.5, np.full(5, -math.log(5)),
                             np.full(3, -math.log(3)), iters=50)
  plan = np.exp(out.log_plan(-cost / 0.5))
  np.testing.assert_allclose(plan.sum(axis=0), 1.0 / 3.0, rtol=1e-10)


# ----------------------------------------------------------------------------
# Traced scalar parameters: out of range gives NaN, never a finite number.

# (loss, traced parameter, a good value, a bad value)
TRACED_PARAMETERS = [
    (losses.infonce, "eps", 0.5, -0.1),
    (losses.gca_uot, "eps", 0.5, -0.1),
    (losses.gca_uot, "rho_a", 0.2, -0.2),
    (losses.gca_loss, "tau_a", 0.8, -0.5),
    (losses.gca_loss, "tau_b", 0.8, 1.5),
    (losses.rince, "q", 0.6, 2.0),
    (losses.rince, "lam", 0.01, -0.1),
    (losses.gca_uot, "lam", 0.01, -0.1),
    (losses.gca_uot, "w_rince", 0.02, -1.0),
    (losses.gca_loss, "w_ce", 1.0, -1.0),
    (losses.gca_loss, "w_plan", 1.0, -1.0),
    (losses.iot_uni, "lambda_p", 0.2, -0.2),
    (losses.infonce, "similarity_floor", 0.1, 2.0),
]


@pytest.mark.parametrize("fn, name, good, bad", TRACED_PARAMETERS,
                         ids=[f"{fn.__name__}-{name}" for fn, name, *_ in TRACED_PARAMETERS])
def test_traced_parameter_out_of_range_gives_nan(fn, name, good, bad):
  z1, z2 = _views()
  value_and_grad = jax.value_and_grad(
      lambda z, p: fn(z, z2, **{name: p}), argnums=(0, 1))
  value, (grad_z, grad_p) = jax.jit(value_and_grad)(z1, bad)
  assert np.isnan(value) and np.all(np.isnan(grad_z)) and np.isnan(grad_p)
  # Under vmap the good problem of the batch is untouched.
  values, (grads_z, _) = jax.jit(jax.vmap(value_and_grad, in_axes=(None, 0)))(
      z1, jnp.array([good, bad]))
  expected, expected_grad = jax.value_and_grad(
      lambda z: fn(z, z2, **{name: good}))(z1)
  np.testing.assert_allclose(values[0], expected, rtol=1e-6)
  np.testing.assert_allclose(grads_z[0], expected_grad, rtol=1e-5, atol=1e-7)
  assert np.isnan(values[1]) and np.all(np.isnan(grads_z[1]))


def test_traced_infinite_rho_is_the_balanced_marginal():
  z1, z2 = _views()
  kw = dict(eps=0.3, iters=5, rho_b=0.2)
  value, grad = jax.jit(jax.value_and_grad(
      lambda z, rho: losses.gca_uot(z, z2, rho_a=rho, **kw)))(z1, INF)
  expected, expected_grad = jax.value_and_grad(
      lambda z: losses.gca_uot(z, z2, rho_a=INF, **kw))(z1)
  np.testing.assert_allclose(value, expected, rtol=1e-6)
  np.testing.assert_allclose(grad, expected_grad, rtol=1e-5, atol=1e-7)
  # The gradient in eps stays finite too (no 0 * NaN from inf / inf).
  grad_eps = jax.grad(lambda e: losses.gca_uot(
      z1, z2, eps=e, rho_a=jnp.asarray(INF), rho_b=0.2))(0.3)
  assert np.isfinite(grad_eps)


# ----------------------------------------------------------------------------
# Balanced plans need marginals of equal total mass.


@pytest.mark.parametrize("marginals", [
    ("uniform", "ones"),
    (np.ones(8), np.full(8, 0.5)),
])
def test_balanced_marginals_of_unequal_mass_are_refused(marginals):
  z1, z2 = _views()
  with pytest.raises(ValueError, match="must have equal total mass"):
    losses.gca_ince(z1, z2, marginals=marginals)
  # A relaxed side absorbs the difference; with no column step it is unused.
  assert np.isfinite(losses.gca_ince(z1, z2, marginals=marginals, tau_b=0.5))
  assert np.isfinite(losses.gca_ince(z1, z2, marginals=marginals, iters=0))


@pytest.mark.parametrize("form", ["log", "scaling"])
@pytest.mark.parametrize("preset", [dict(), dict(w_ce=0.0, w_plan=1.0)])
def test_balanced_traced_marginals_of_unequal_mass_give_nan_at_once(form, preset):
  z1, z2 = _views()
  fn = jax.jit(lambda a, tau: losses.gca_loss(
      z1, z2, marginals=(a, jnp.ones(8)), iters=1, tau_b=tau, form=form,
      **preset))
  assert np.isfinite(fn(jnp.ones(8), 1.0))
  assert np.isnan(fn(jnp.full(8, 0.5), 1.0))  # after one iteration already
  assert np.isfinite(fn(jnp.full(8, 0.5), 0.5))  # relaxed: any masses


@pytest.mark.parametrize("floor", [1.0, 2.0, -1.5, NAN])
def test_similarity_floor_out_of_range_is_refused(floor):
  z1, z2 = _views()
  with pytest.raises(ValueError, match=r"similarity_floor must be None or in \[-1, 1\)"):
    losses.infonce(z1, z2, similarity_floor=floor)
  assert np.isfinite(losses.infonce(z1, z2, similarity_floor=-1.0))
