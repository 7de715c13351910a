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

import inspect

from gca_jax.losses import collectives, contrastive, targets
from gca_jax.losses.signatures import lookup

__all__ = [
    "SHARDED_LOSSES", "class_target", "domain_target", "gca_ince", "gca_loss",
    "gca_rince", "gca_uot", "get", "hs_ince", "hs_rince", "infonce", "iot",
    "hierarchical_target", "iot_uni", "rince",
]


def _check_axis(axis_name) -> None:
  """``axis_name`` must be a mesh axis bound here (inside shard_map)."""
  if axis_name is None:
    raise ValueError(
        "axis_name must name the mesh axis the batch is sharded over (inside "
        "jax.shard_map); for a batch on one device use gca_jax.losses.")
  collectives.axis_size(axis_name)


# Every single-device loss, its row-sharded variant: the same declaration,
# so the same defaults and checks, with ``axis_name`` required.
_BY_NAME = {spec.name: contrastive.build(spec, check_axis=_check_axis)
            for spec in contrastive.SPECS}
gca_loss = _BY_NAME["gca_loss"]
infonce = _BY_NAME["infonce"]
gca_ince = _BY_NAME["gca_ince"]
hs_ince = _BY_NAME["hs_ince"]
rince = _BY_NAME["rince"]
gca_rince = _BY_NAME["gca_rince"]
hs_rince = _BY_NAME["hs_rince"]
gca_uot = _BY_NAME["gca_uot"]
iot = _BY_NAME["iot"]
iot_uni = _BY_NAME["iot_uni"]

#: Sharded contrastive losses selectable by name, each
#: ``fn(z1, z2, *, axis_name, **params)`` with the parameters of the
#: single-device loss of that name.
SHARDED_LOSSES = {name: _BY_NAME[name] for name in contrastive.CONTRASTIVE_LOSSES}


def get(name: str):
  """The sharded contrastive loss called ``name`` (see :data:`SHARDED_LOSSES`)."""
  return lookup(SHARDED_LOSSES, name, "sharded loss")


def _sharded_target(name: str):
  """This device's rows of ``targets.<name>``: the same parameters plus a
  required ``axis_name``; the builder's ``targets._<name>`` takes it."""
  public = getattr(targets, name)
  rows_of = getattr(targets, "_" + name)
  parameters = list(inspect.signature(public).parameters.values())
  first = [p for p in parameters if p.kind is not p.KEYWORD_ONLY]
  rest = [p for p in parameters if p.kind is p.KEYWORD_ONLY]
  signature = inspect.Signature(
      [*first, inspect.Parameter("axis_name", inspect.Parameter.KEYWORD_ONLY),
       *rest])

  def target(*args, axis_name, **options):
    _check_axis(axis_name)
    bound = signature.bind(*args, axis_name=axis_name, **options)
    bound.apply_defaults()
    return rows_of(**bound.arguments)

  target.__name__ = target.__qualname__ = name
  target.__signature__ = signature
  target.__doc__ = (
      f"This device's rows of :func:`gca_jax.losses.{name}`.\n\n"
      f"Args:\n  {first[0].name}: this device's ``(b,)`` ids (the other "
      f"devices' are gathered over ``axis_name``).\n  axis_name: the mesh "
      f"axis the batch is sharded over.\n  Others: as "
      f":func:`gca_jax.losses.{name}`.\n\nReturns:\n  The ``(n, N)`` rows of "
      f"the global target that this device's rows of the sharded loss see "
      f"(``n = 2b``, ``N = 2B`` in the joint pairing); pass it as ``target=`` "
      f"to a sharded loss.\n")
  return target


#: The target builders of :mod:`gca_jax.losses.targets` with sharded rows.
TARGETS = ("domain_target", "class_target", "hierarchical_target")
_TARGETS = {name: _sharded_target(name) for name in TARGETS}
domain_target = _TARGETS["domain_target"]
class_target = _TARGETS["class_target"]
hierarchical_target = _TARGETS["hierarchical_target"]
