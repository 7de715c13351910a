"""Bregman projections of a batch kernel: balanced and unbalanced Sinkhorn.

The math (``docs/losses.md``), in potentials measured in units of ``eps``
(``alpha = f / eps``, ``beta = g / eps``) on the log-kernel ``M = -C / eps``.
One iteration is a row projection then a column projection::

    alpha_i = tau_a * (log a_i - LSE_j(M_ij + beta_j))
    beta_j  = tau_b * (log b_j - LSE_i(M_ij + alpha_i))
    log P_ij = alpha_i + beta_j + M_ij

``tau = 1`` is the balanced (Sinkhorn) projection onto ``{P 1 = a, Pᵀ 1 = b}``;
``tau = rho / (rho + eps)`` is the KL-relaxed (unbalanced) one with marginal
weights ``rho`` (Chizat et al. 2018; in scaling form ``u = (a / K v)^tau``).
``iters`` iterations run under :func:`jax.lax.scan` with a static count.

Two numerical forms compute the same ``LSE_j(M_ij + beta_j)``:

* ``"log"``: a log-sum-exp over the ``N x N`` matrix (safe for any ``eps``;
  ``N^2`` exponentials per half step);
* ``"scaling"``: ``log(K @ exp(beta))`` with ``K = exp(M)`` computed once
  (one matrix-vector product per half step: the fast form). It is safe while
  ``exp(-max C / eps)`` and the scalings stay inside the float range, which
  :func:`scaling_form_is_safe` checks from a static bound on the cost
  (the losses refuse a forced ``"scaling"`` form that the bound calls unsafe;
  :func:`sinkhorn` itself sees only the log-kernel and trusts its caller).

Differentiation (``grad_mode``): ``"unroll"`` backpropagates through every
iteration; ``"implicit"`` differentiates the fixed point
``beta = F(beta, M)`` (implicit function theorem, adjoint solved by the
same number of fixed-point iterations, memory independent of ``iters``);
``"detach"`` treats the potentials as constants (gradients then flow through
the kernel only).

Rows sharded over a mesh axis (``axis_name``, inside :func:`jax.shard_map`):
each device holds its rows of ``M`` against all columns, ``(N/P) x N``, its
rows' ``alpha`` and the whole ``beta``. The row half-step is local; the
column half-step's ``LSE_i`` adds up all devices' rows
(:func:`gca_jax.losses.collectives.logsumexp` in the log form, a ``psum`` of
``Kᵀ u`` in the scaling form), so every device holds the same ``beta``, the
``beta`` of the unsharded projection.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import struct

from gca_jax.losses import collectives
from gca_jax.losses.arguments import (  # noqa: F401  (re-exported)
    FORMS, GRAD_MODES, check_choice, check_iters, check_relaxation,
    scaling_form_is_safe)

SOLVER_FORMS = ("log", "scaling")  # "auto" is resolved by the losses


class KernelOps(NamedTuple):
  """Log-sum-exp of the kernel against a potential, along rows or columns.

  ``row_lse(beta)_i = log sum_j exp(M_ij + beta_j)`` and
  ``col_lse(alpha)_j = log sum_i exp(M_ij + alpha_i)`` (the sum over the
  rows of every device when the rows are sharded).
  """

  row_lse: callable
  col_lse: callable


def kernel_ops(log_kernel: jax.Array, form: str,
               axis_name=None) -> KernelOps:
  """Builds the row/column log-sum-exp operators of one numerical form.

  ``axis_name``: ``None``, or the mesh axis the rows are sharded over (the
  column operator then reduces across it).
  """
  if form == "log":
    def row_lse(beta):
      return jax.nn.logsumexp(log_kernel + beta[None, :], axis=1)

    if axis_name is None:
      def col_lse(alpha):
        return jax.nn.logsumexp(log_kernel + alpha[:, None], axis=0)
    else:
      def col_lse(alpha):
        return collectives.logsumexp(log_kernel + alpha[:, None], axis_name,
                                     axis=0)
  elif form == "scaling":
    kernel = jnp.exp(log_kernel)

    def row_lse(beta):
      return jnp.log(kernel @ jnp.exp(beta))

    if axis_name is None:
      def col_lse(alpha):
        return jnp.log(jnp.exp(alpha) @ kernel)
    else:
      def col_lse(alpha):
        return jnp.log(jax.lax.psum(jnp.exp(alpha) @ kernel, axis_name))
  else:
    check_choice("form", form, SOLVER_FORMS)
  return KernelOps(row_lse, col_lse)


@struct.dataclass
class ProjectionOutput:
  """Potentials of a projected plan and its convergence record.

  Attributes:
    log_u: ``(N,)`` row potential ``alpha = f / eps`` (``u = exp(alpha)``).
    log_v: ``(M,)`` column potential ``beta = g / eps``.
    marginal_error: ``(iters + 1,)`` L1 error of the row marginal,
      ``|P 1 - a|_1``, of the starting plan and after each iteration (the
      column marginal is exact after a balanced column step).
  """

  log_u: jax.Array
  log_v: jax.Array
  marginal_error: jax.Array

  def log_plan(self, log_kernel: jax.Array) -> jax.Array:
    """``log P = alpha + beta + M``."""
    return self.log_u[:, None] + self.log_v[None, :] + log_kernel


def _row_step(ops, log_v, log_a, tau_a):
  return tau_a * (log_a - ops.row_lse(log_v))


def _col_step(ops, log_u, log_b, tau_b):
  return tau_b * (log_b - ops.col_lse(log_u))


def _row_marginal_error(log_u, row_lse, log_a, axis_name=None):
  errors = jnp.abs(jnp.exp(log_u + row_lse) - jnp.exp(log_a))
  if axis_name is None:
    return jnp.sum(errors)
  return collectives.total(errors, axis_name)


def _iterate(ops, log_a, log_b, log_u, log_v, *, iters, tau_a, tau_b,
             checkpoint, axis_name=None):
  """``iters`` row-then-column iterations; returns potentials and errors.

  The row marginal error of iteration ``k`` is read off the
  ``row_lse(beta)`` that the next row step computes anyway, so recording it
  costs no extra matrix product inside the loop.
  """

  def body(carry, _):
    log_u, log_v = carry
    row_lse = ops.row_lse(log_v)
    error = _row_marginal_error(log_u, row_lse, log_a, axis_name)
    log_u = tau_a * (log_a - row_lse)
    log_v = _col_step(ops, log_u, log_b, tau_b)
    return (log_u, log_v), error

  if checkpoint:
    # The log form's residuals are N x N per iteration; recomputing them in
    # the backward pass makes memory independent of ``iters``.
    body = jax.checkpoint(body)
  (log_u, log_v), errors = jax.lax.scan(body, (log_u, log_v), None,
                                        length=iters)
  last = _row_marginal_error(log_u, ops.row_lse(log_v), log_a, axis_name)
  return log_u, log_v, jnp.concatenate([errors, last[None]])


def _real_array(name: str, value) -> jax.Array:
  value = jnp.asarray(value)
  if not (jnp.issubdtype(value.dtype, jnp.floating)
          or jnp.issubdtype(value.dtype, jnp.integer)):
    raise TypeError(f"{name} must be a real array, got dtype {value.dtype}.")
  return value


def _check_shapes(log_kernel, log_a, log_b, init_log_v):
  """Trace-time shape checks; returns the arguments as arrays."""
  log_kernel = _real_array("log_kernel", log_kernel)
  if log_kernel.ndim != 2 or 0 in log_kernel.shape:
    raise ValueError(
        f"log_kernel must be a non-empty (N, M) matrix, got shape "
        f"{log_kernel.shape}.")
  if not jnp.issubdtype(log_kernel.dtype, jnp.floating):
    log_kernel = log_kernel.astype(jnp.result_type(float))
  rows, cols = log_kernel.shape
  checked = []
  for name, value, size in (("log_a", log_a, rows), ("log_b", log_b, cols),
                            ("init_log_v", init_log_v, cols)):
    if value is None:
      checked.append(None)
      continue
    value = _real_array(name, value)
    if value.shape != (size,):
      raise ValueError(
          f"{name} must have shape ({size},) for a log_kernel of shape "
          f"{log_kernel.shape}, got {value.shape}.")
    checked.append(value.astype(log_kernel.dtype))
  return (log_kernel, *checked)


def sinkhorn(
    log_kernel: jax.Array,
    log_a: jax.Array,
    log_b: jax.Array,
    *,
    iters: int,
    tau_a: float = 1.0,
    tau_b: float = 1.0,
    init_log_v: jax.Array | None = None,
    final_row_step: bool = False,
    form: str = "log",
    grad_mode: str = "unroll",
    axis_name=None,
) -> ProjectionOutput:
  """Balanced or unbalanced Sinkhorn projection of ``exp(log_kernel)``.

  Args:
    log_kernel: ``(N, M)`` log-kernel ``M = -C / eps`` (``-inf`` allowed for
      excluded pairs).
    log_a, log_b: ``(N,)`` and ``(M,)`` log-marginals.
    iters: static number of full (row then column) iterations; 0 runs none.
    tau_a, tau_b: marginal relaxations in ``(0, 1]`` (1: balanced).
    init_log_v: ``(M,)`` starting column potential ``beta`` (default 0, as
      ott-jax).
    final_row_step: after the iterations, one more row projection replaces
      ``log_u`` (a "half step"; with ``iters = 0`` it is the only step).
    form: ``"log"`` or ``"scaling"`` (see the module docstring).
    grad_mode: ``"unroll"``, ``"implicit"`` or ``"detach"``.
    axis_name: ``None``, or, inside :func:`jax.shard_map`, the mesh axis the
      rows are sharded over: ``log_kernel`` and ``log_a`` are then this
      device's rows (``(n, M)``, ``(n,)``), ``log_b``/``init_log_v`` the
      whole columns, and the result is this device's ``log_u`` with the
      global ``log_v`` and marginal error (the same on every device).

  Returns:
    A :class:`ProjectionOutput`.

  Raises:
    ValueError: for a shape that does not match ``log_kernel``, a concrete
      ``tau`` outside ``(0, 1]``, or an unknown ``form``/``grad_mode``.

  Examples:
    >>> import jax.numpy as jnp
    >>> from gca_jax.losses import projections
    >>> log_kernel = jnp.log(jnp.array([[2.0, 1.0], [1.0, 2.0]]))
    >>> uniform = jnp.log(jnp.full(2, 0.5))
    >>> out = projections.sinkhorn(log_kernel, uniform, uniform, iters=5)
    >>> plan = jnp.exp(out.log_plan(log_kernel))  # rows and columns sum to 1/2
    >>> print([[f"{p:.3f}" for p in row] for row in plan.tolist()])
    [['0.333', '0.167'], ['0.167', '0.333']]
  """
  iters = check_iters(iters)
  check_choice("grad_mode", grad_mode, GRAD_MODES)
  check_choice("form", form, SOLVER_FORMS)
  check_relaxation("tau_a", tau_a)
  check_relaxation("tau_b", tau_b)
  log_kernel, log_a, log_b, init_log_v = _check_shapes(
      log_kernel, log_a, log_b, init_log_v)

  def make_ops(log_kernel, axis_name):
    return kernel_ops(log_kernel, form, axis_name)

  # The log form's residuals are N x N per iteration; recomputing them in
  # the backward pass makes memory independent of ``iters``.
  return project(make_ops, log_kernel, log_a, log_b, iters=iters,
                 tau_a=tau_a, tau_b=tau_b, init_log_v=init_log_v,
                 final_row_step=final_row_step, grad_mode=grad_mode,
                 checkpoint=form == "log", axis_name=axis_name)


def project(make_ops, kernel, log_a, log_b, *, iters: int, tau_a, tau_b,
            init_log_v=None, final_row_step: bool = False,
            grad_mode: str = "unroll", checkpoint: bool = False,
            axis_name=None) -> ProjectionOutput:
  """The iterations of :func:`sinkhorn` on any kernel that has the two
  operators of :class:`KernelOps`.

  ``make_ops(kernel, axis_name)`` builds the operators from ``kernel``, a
  pytree of arrays (the log-kernel of the materialised forms, the
  embeddings of :class:`gca_jax.losses.tiled.TiledKernel`): the implicit
  gradient differentiates the fixed point with respect to that pytree.
  ``checkpoint``: recompute each iteration in the backward pass (for a
  kernel whose operators keep ``N x N`` residuals). Arguments are trusted
  (:func:`sinkhorn` checks them).
  """
  dtype = log_a.dtype
  if init_log_v is None:
    init_log_v = jnp.zeros(log_b.shape[0], dtype)
  log_u0 = jnp.zeros(log_a.shape[0], dtype)
  iterate = functools.partial(_iterate, iters=iters, tau_a=tau_a,
                              tau_b=tau_b, checkpoint=checkpoint,
                              axis_name=axis_name)

  if grad_mode == "implicit" and iters > 0:
    # The relaxations are primal inputs, not static ones: a traced tau (a
    # jitted or vmapped eps or rho) must not leak out of the custom_vjp.
    try:
      log_u, log_v, errors = _implicit_iterate(
          make_ops, iters, axis_name, jnp.asarray(tau_a, dtype),
          jnp.asarray(tau_b, dtype), kernel, log_a, log_b, init_log_v)
    except TypeError as error:
      if "forward-mode" not in str(error):
        raise
      # The adjoint is a reverse-mode rule (a custom_vjp): jax.jvp,
      # jax.jacfwd and jax.hessian have no rule to call.
      raise TypeError(
          "grad_mode='implicit' supports reverse-mode differentiation only "
          "(jax.grad, jax.vjp, jax.jacrev); for jax.jvp, jax.jacfwd or "
          "jax.hessian use grad_mode='unroll'.") from None
  else:
    ops = make_ops(kernel, axis_name)
    log_u, log_v, errors = iterate(ops, log_a, log_b, log_u0, init_log_v)
    if grad_mode == "detach":
      log_u, log_v = jax.lax.stop_gradient((log_u, log_v))
  if final_row_step:
    ops = make_ops(kernel, axis_name)
    log_u = _row_step(ops, log_v, log_a, tau_a)
  return ProjectionOutput(log_u, log_v, jax.lax.stop_gradient(errors))


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2))
def _implicit_iterate(make_ops, iters, axis_name, tau_a, tau_b, kernel, log_a,
                      log_b, init_log_v):
  ops = make_ops(kernel, axis_name)
  log_u0 = jnp.zeros(log_a.shape[0], log_a.dtype)
  return _iterate(ops, log_a, log_b, log_u0, init_log_v, iters=iters,
                  tau_a=tau_a, tau_b=tau_b, checkpoint=False,
                  axis_name=axis_name)


def _implicit_fwd(make_ops, iters, axis_name, tau_a, tau_b, kernel, log_a,
                  log_b, init_log_v):
  out = _implicit_iterate(make_ops, iters, axis_name, tau_a, tau_b, kernel,
                          log_a, log_b, init_log_v)
  _, log_v, _ = out
  return out, (tau_a, tau_b, kernel, log_a, log_b, log_v, init_log_v)


def _add_cotangents(first, second):
  """Sum of two cotangent pytrees (integer leaves have ``float0`` ones)."""
  return jax.tree.map(
      lambda a, b: a if a.dtype == jax.dtypes.float0 else a + b, first, second)


def _implicit_bwd(make_ops, iters, axis_name, residuals, cotangents):
  """Adjoint of the fixed point ``beta* = F(beta*)``, ``F = col ∘ row``.

  With ``alpha* = R(beta*)``, the loss's cotangents ``(ᾱ, β̄)`` give
  ``w = β̄ + ∂Rᵀ ᾱ + ∂Fᵀ w``, solved by ``iters`` fixed-point steps (a
  truncated Neumann series, the same contraction as the forward iterations);
  then ``M̄ = ∂R/∂Mᵀ ᾱ + ∂F/∂Mᵀ w`` and likewise for the marginals. For a
  balanced plan ``F(beta + c) = F(beta) + c``, but the cotangent of a plan is
  orthogonal to that shift, so the series converges.

  With sharded rows every vector-Jacobian product below is a device's
  transpose under pmap semantics (the column step's ``psum`` transposes to
  a ``psum``); the series then solves the adjoint of the system in which
  each device holds its own copy of ``beta``, whose fixed point and
  derivative are those of the unsharded one.

  The relaxations ``tau_a, tau_b`` are differentiated like the marginals
  (``rho`` and ``eps`` reach the gradient through them as well).
  """
  tau_a, tau_b, kernel, log_a, log_b, log_v, init_log_v = residuals
  log_u_bar, log_v_bar, _ = cotangents

  def row(beta, kernel, log_a, tau_a):
    # The row step is local to a device's rows: no collective.
    return _row_step(make_ops(kernel, None), beta, log_a, tau_a)

  def fixed_point_map(beta, kernel, log_a, log_b, tau_a, tau_b):
    ops = make_ops(kernel, axis_name)
    return _col_step(ops, _row_step(ops, beta, log_a, tau_a), log_b, tau_b)

  _, row_vjp = jax.vjp(row, log_v, kernel, log_a, tau_a)
  beta_bar, kernel_bar, log_a_bar, row_tau_a_bar = row_vjp(log_u_bar)
  rhs = log_v_bar + beta_bar
  _, map_vjp = jax.vjp(fixed_point_map, log_v, kernel, log_a, log_b,
                       tau_a, tau_b)

  def neumann_step(w, _):
    return rhs + map_vjp(w)[0], None

  w, _ = jax.lax.scan(neumann_step, rhs, None, length=iters)
  _, map_kernel_bar, map_a_bar, map_b_bar, tau_a_bar, tau_b_bar = map_vjp(w)
  return (row_tau_a_bar + tau_a_bar, tau_b_bar,
          _add_cotangents(kernel_bar, map_kernel_bar),
          log_a_bar + map_a_bar, map_b_bar, jnp.zeros_like(init_log_v))


_implicit_iterate.defvjp(_implicit_fwd, _implicit_bwd)
