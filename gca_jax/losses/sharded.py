"""The GCA losses with the transport plan sharded by rows across devices.

For use inside :func:`jax.shard_map` over a mesh axis ``axis_name`` of ``P``
devices, device ``d`` holding its own examples' embeddings ``z1, z2``
(``b = B / P`` rows each). Each device gathers every device's embeddings
for the columns and holds only its rows of the cost, ``(N/P) x N``: the
plan's memory and work are split over the devices instead of repeated on
each. The result is the loss of the single-device function on the global
batch (the devices' examples in device order), on every device:

* the row half-step of a projection is local; the column half-step adds up
  all devices' rows, with a log-sum-exp shifted by the global maximum in
  the log form and a ``psum`` of ``Kᵀ u`` in the scaling form;
* every loss term and diagnostic is a ``psum`` of per-row terms;
* rows in the joint pairing: the global rows are ``[z1_all; z2_all]``
  (``N = 2B``); device ``d``'s rows are its ``z1`` rows (global ``d b + k``)
  then its ``z2`` rows (global ``B + d b + k``); positives, self pairs and
  marginals (``1/N`` for ``"uniform"``) are the global ones.

Each function takes the keyword parameters of its single-device namesake in
:mod:`gca_jax.losses` (same defaults and checks) plus ``axis_name``. With
``return_aux=True`` the :class:`~gca_jax.losses.LossAux` holds the global
marginal error, plan entropy and positive mass, and ``log_plan`` holds this
device's rows ``(n, N)``. A marginal given as arrays is ``(a, b)`` with
``a`` this device's ``(n,)`` rows and ``b`` all ``N`` columns; a matrix
``target`` is this device's ``(n, N)`` rows (:func:`domain_target`,
:func:`class_target` build them). ``grad_mode`` ``"unroll"``, ``"detach"``
and ``"implicit"`` all work.

Gradients: differentiate on each device and average with ``lax.pmean``,
under ``jax.shard_map(..., check_vma=False)``::

  def device_grads(params, x1, x2):       # x1, x2: this device's rows
    def loss(params):
      z1, z2 = model(params, x1), model(params, x2)
      return sharded.gca_uot(z1, z2, axis_name="data")
    return lax.pmean(jax.grad(loss)(params), "data")

This is the single-device gradient of the global loss: with pmap semantics
a collective's transpose sums over the devices, so each device's gradient
is that of the sum of every device's copy of the loss, ``P`` times the
global loss (the same bookkeeping as gathering the embeddings and computing
the whole loss on every device). ``docs/losses.md`` (section 11) has the
contract.
"""

from __future__ import annotations

import jax.numpy as jnp

from gca_jax.losses import collectives, contrastive, targets

__all__ = [
    "SHARDED_LOSSES", "class_target", "domain_target", "gca_ince", "gca_loss",
    "gca_rince", "gca_uot", "get", "hs_ince", "hs_rince", "infonce", "iot",
    "iot_uni", "rince",
]


def _check_axis(axis_name) -> None:
  """``axis_name`` must be a mesh axis bound here (inside shard_map)."""
  if axis_name is None:
    raise ValueError(
        "axis_name must name the mesh axis the batch is sharded over (inside "
        "jax.shard_map); for a batch on one device use gca_jax.losses.")
  collectives.axis_size(axis_name)


def gca_loss(z1, z2, *, axis_name, **kwargs):
  """:func:`gca_jax.losses.gca_loss` of the global batch, plan rows sharded.

  Args:
    z1, z2: this device's ``(b, D)`` embeddings of the two views.
    axis_name: the mesh axis the batch is sharded over.
    **kwargs: the keyword parameters of :func:`gca_jax.losses.gca_loss`
      (see the module docstring for ``marginals`` arrays, ``target`` and
      ``return_aux``).

  Returns:
    The global loss (the same on every device), or ``(loss, aux)``.
  """
  _check_axis(axis_name)
  return contrastive._gca_loss(z1, z2, axis_name=axis_name, **kwargs)  # pylint: disable=protected-access


def gca_ince(z1, z2, *, axis_name, eps: float = 0.5, iters: int = 10,
             **kwargs):
  """:func:`gca_jax.losses.gca_ince`, plan rows sharded over ``axis_name``."""
  _check_axis(axis_name)
  return contrastive.gca_ince(z1, z2, eps=eps, iters=iters,
                              axis_name=axis_name, **kwargs)


def hs_ince(z1, z2, *, axis_name, eps: float = 0.5, **kwargs):
  """:func:`gca_jax.losses.hs_ince`, plan rows sharded over ``axis_name``."""
  _check_axis(axis_name)
  return contrastive.hs_ince(z1, z2, eps=eps, axis_name=axis_name, **kwargs)


def gca_rince(z1, z2, *, axis_name, eps: float = 0.5, iters: int = 10,
              lam: float = 0.01, q: float = 0.6, **kwargs):
  """:func:`gca_jax.losses.gca_rince`, plan rows sharded over ``axis_name``."""
  _check_axis(axis_name)
  return contrastive.gca_rince(z1, z2, eps=eps, iters=iters, lam=lam, q=q,
                               axis_name=axis_name, **kwargs)


def hs_rince(z1, z2, *, axis_name, eps: float = 0.5, lam: float = 0.01,
             q: float = 0.6, **kwargs):
  """:func:`gca_jax.losses.hs_rince`, plan rows sharded over ``axis_name``."""
  _check_axis(axis_name)
  return contrastive.hs_rince(z1, z2, eps=eps, lam=lam, q=q,
                              axis_name=axis_name, **kwargs)


def gca_uot(z1, z2, *, axis_name, eps: float = 0.5, iters: int = 10,
            rho_a: float = 0.2, rho_b: float = 0.2, lam: float = 0.01,
            q: float = 0.6, w_ce: float = 1.0, w_rince: float = 0.02,
            **kwargs):
  """:func:`gca_jax.losses.gca_uot`, plan rows sharded over ``axis_name``."""
  _check_axis(axis_name)
  return contrastive.gca_uot(z1, z2, eps=eps, iters=iters, rho_a=rho_a,
                             rho_b=rho_b, lam=lam, q=q, w_ce=w_ce,
                             w_rince=w_rince, axis_name=axis_name, **kwargs)


def iot(z1, z2, *, axis_name, eps: float = 0.5, iters: int = 10, **kwargs):
  """:func:`gca_jax.losses.iot`, plan rows sharded over ``axis_name``."""
  _check_axis(axis_name)
  return contrastive.iot(z1, z2, eps=eps, iters=iters, axis_name=axis_name,
                         **kwargs)


def iot_uni(z1, z2, *, axis_name, eps: float = 0.5, iters: int = 10,
            lambda_p: float = 0.2, **kwargs):
  """:func:`gca_jax.losses.iot_uni`, plan rows sharded over ``axis_name``."""
  _check_axis(axis_name)
  return contrastive.iot_uni(z1, z2, eps=eps, iters=iters, lambda_p=lambda_p,
                             axis_name=axis_name, **kwargs)


def _row_normalized(result, return_aux: bool):
  """The diagnostics of :func:`gca_jax.losses.infonce`/``rince``: their plan
  is the row-normalised kernel, whose row marginals are exact."""
  if not return_aux:
    return result
  loss, aux = result
  return loss, aux.replace(marginal_error=jnp.zeros_like(aux.marginal_error))


def infonce(z1, z2, *, axis_name, eps: float = 0.5, pairing: str = "joint",
            self_mask: str = "exclude", similarity_floor=None,
            target="pairs", return_aux: bool = False):
  """:func:`gca_jax.losses.infonce`, rows sharded over ``axis_name``.

  Computed as a single row projection of the kernel with marginals 1 (the
  half step ``hs_ince``, equal to InfoNCE by Theorem 1; its plan is the
  row-normalised kernel, as InfoNCE's diagnostics report).
  """
  _check_axis(axis_name)
  return _row_normalized(contrastive.hs_ince(
      z1, z2, eps=eps, marginals="ones", pairing=pairing, self_mask=self_mask,
      similarity_floor=similarity_floor, target=target, return_aux=return_aux,
      axis_name=axis_name), return_aux)


def rince(z1, z2, *, axis_name, eps: float = 0.5, lam: float = 0.01,
          q: float = 0.6, pairing: str = "joint", self_mask: str = "exclude",
          similarity_floor=None, return_aux: bool = False):
  """:func:`gca_jax.losses.rince`, rows sharded over ``axis_name``.

  Computed as ``hs_rince`` (equal to RINCE by Theorem 2), whose plan is the
  row-normalised kernel, as RINCE's diagnostics report.
  """
  _check_axis(axis_name)
  return _row_normalized(contrastive.hs_rince(
      z1, z2, eps=eps, lam=lam, q=q, pairing=pairing, self_mask=self_mask,
      similarity_floor=similarity_floor, return_aux=return_aux,
      axis_name=axis_name), return_aux)


#: Sharded contrastive losses selectable by name, each
#: ``fn(z1, z2, *, axis_name, **params)`` with the parameters of the
#: single-device loss of that name.
SHARDED_LOSSES = {
    "infonce": infonce,
    "gca_ince": gca_ince,
    "rince": rince,
    "gca_rince": gca_rince,
    "gca_uot": gca_uot,
    "hs_ince": hs_ince,
    "hs_rince": hs_rince,
    "iot": iot,
    "iot_uni": iot_uni,
}


def get(name: str):
  """The sharded contrastive loss called ``name`` (see :data:`SHARDED_LOSSES`)."""
  try:
    return SHARDED_LOSSES[name]
  except KeyError:
    raise ValueError(
        f"unknown sharded loss name {name!r}; choose one of "
        f"{sorted(SHARDED_LOSSES)}.") from None


def domain_target(domains, alpha, beta, *, axis_name, pairing: str = "joint",
                  dtype=None):
  """This device's rows of :func:`gca_jax.losses.domain_target`.

  Args:
    domains: this device's ``(b,)`` domain ids (the other devices' are
      gathered over ``axis_name``).
    alpha, beta, pairing, dtype: as :func:`gca_jax.losses.domain_target`.
    axis_name: the mesh axis the batch is sharded over.

  Returns:
    The ``(n, N)`` rows of the global target that this device's rows of the
    sharded loss see (``n = 2b``, ``N = 2B`` in the joint pairing); pass it
    as ``target=`` to a sharded loss.
  """
  _check_axis(axis_name)
  return targets._domain_target(domains, alpha, beta, pairing=pairing,  # pylint: disable=protected-access
                                dtype=dtype, axis_name=axis_name)


def class_target(labels, *, axis_name, pairing: str = "joint", dtype=None):
  """This device's rows of :func:`gca_jax.losses.class_target`, from this
  device's ``(b,)`` labels (see :func:`domain_target`)."""
  _check_axis(axis_name)
  return targets._class_target(labels, pairing=pairing, dtype=dtype,  # pylint: disable=protected-access
                               axis_name=axis_name)
