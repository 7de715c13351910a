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

from gca_jax.losses import arguments, collectives, contrastive, targets

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


def _rows_sharded(loss):
  """Decorator of the sharded form of the single-device ``loss``: its
  signature is ``loss``'s with a required ``axis_name`` after ``z1, z2``
  (the same defaults, written once, in ``loss``), its keywords checked as
  ``loss``'s are."""
  z1, z2, *options = (parameter for parameter in inspect.signature(loss).parameters.values()
                      if parameter.name != "axis_name")
  axis_name = inspect.Parameter("axis_name", inspect.Parameter.KEYWORD_ONLY)
  signature = inspect.Signature([z1, z2, axis_name, *options])
  return lambda sharded: arguments.with_checked_keywords(sharded, signature)


@_rows_sharded(contrastive.gca_loss)
def gca_loss(z1, z2, *, axis_name, **options):
  """:func:`gca_jax.losses.gca_loss` with the plan's rows sharded over ``axis_name``.

  Takes the keyword parameters of :func:`gca_jax.losses.gca_loss`, with its
  defaults and checks, and a required ``axis_name``; gives the value of that
  function on the global batch (the devices' rows in device order).

  Args:
    z1, z2: this device's ``(b, D)`` rows of the two views' embeddings.
    axis_name: the mesh axis the batch is sharded over (inside
      :func:`jax.shard_map`); required.

  Returns:
    The loss of the global batch (the same on every device), or
    ``(loss, aux)`` with ``return_aux=True`` (``aux.log_plan``: this
    device's rows).

  Raises:
    ValueError: for ``axis_name=None`` or an axis not bound here, and as
      :func:`gca_jax.losses.gca_loss`.
    TypeError: as :func:`gca_jax.losses.gca_loss`.
  """
  _check_axis(axis_name)
  return contrastive.gca_loss.with_axis_name(z1, z2, axis_name=axis_name, **options)


@_rows_sharded(contrastive.infonce)
def infonce(z1, z2, *, axis_name, **options):
  """:func:`gca_jax.losses.infonce` with the plan's rows sharded over ``axis_name``.

  Takes the keyword parameters of :func:`gca_jax.losses.infonce`, with its
  defaults and checks, and a required ``axis_name``; gives the value of that
  function on the global batch (the devices' rows in device order). Computed
  as :func:`gca_jax.losses.hs_ince` with marginals 1 (equal to InfoNCE by
  Theorem 1), whose projection has the collectives the rows need; its
  diagnostics report the exact row marginals of InfoNCE's plan.

  Args:
    z1, z2: this device's ``(b, D)`` rows of the two views' embeddings.
    axis_name: the mesh axis the batch is sharded over (inside
      :func:`jax.shard_map`); required.

  Returns:
    The loss of the global batch (the same on every device), or
    ``(loss, aux)`` with ``return_aux=True`` (``aux.log_plan``: this
    device's rows).

  Raises:
    ValueError: for ``axis_name=None`` or an axis not bound here, and as
      :func:`gca_jax.losses.infonce`.
    TypeError: as :func:`gca_jax.losses.infonce`.
  """
  _check_axis(axis_name)
  return contrastive.infonce.with_axis_name(z1, z2, axis_name=axis_name, **options)


@_rows_sharded(contrastive.gca_ince)
def gca_ince(z1, z2, *, axis_name, **options):
  """:func:`gca_jax.losses.gca_ince` with the plan's rows sharded over ``axis_name``.

  Takes the keyword parameters of :func:`gca_jax.losses.gca_ince`, with its
  defaults and checks, and a required ``axis_name``; gives the value of that
  function on the global batch (the devices' rows in device order).

  Args:
    z1, z2: this device's ``(b, D)`` rows of the two views' embeddings.
    axis_name: the mesh axis the batch is sharded over (inside
      :func:`jax.shard_map`); required.

  Returns:
    The loss of the global batch (the same on every device), or
    ``(loss, aux)`` with ``return_aux=True`` (``aux.log_plan``: this
    device's rows).

  Raises:
    ValueError: for ``axis_name=None`` or an axis not bound here, and as
      :func:`gca_jax.losses.gca_ince`.
    TypeError: as :func:`gca_jax.losses.gca_ince`.
  """
  _check_axis(axis_name)
  return contrastive.gca_ince.with_axis_name(z1, z2, axis_name=axis_name, **options)


@_rows_sharded(contrastive.hs_ince)
def hs_ince(z1, z2, *, axis_name, **options):
  """:func:`gca_jax.losses.hs_ince` with the plan's rows sharded over ``axis_name``.

  Takes the keyword parameters of :func:`gca_jax.losses.hs_ince`, with its
  defaults and checks, and a required ``axis_name``; gives the value of that
  function on the global batch (the devices' rows in device order).

  Args:
    z1, z2: this device's ``(b, D)`` rows of the two views' embeddings.
    axis_name: the mesh axis the batch is sharded over (inside
      :func:`jax.shard_map`); required.

  Returns:
    The loss of the global batch (the same on every device), or
    ``(loss, aux)`` with ``return_aux=True`` (``aux.log_plan``: this
    device's rows).

  Raises:
    ValueError: for ``axis_name=None`` or an axis not bound here, and as
      :func:`gca_jax.losses.hs_ince`.
    TypeError: as :func:`gca_jax.losses.hs_ince`.
  """
  _check_axis(axis_name)
  return contrastive.hs_ince.with_axis_name(z1, z2, axis_name=axis_name, **options)


@_rows_sharded(contrastive.rince)
def rince(z1, z2, *, axis_name, **options):
  """:func:`gca_jax.losses.rince` with the plan's rows sharded over ``axis_name``.

  Takes the keyword parameters of :func:`gca_jax.losses.rince`, with its
  defaults and checks, and a required ``axis_name``; gives the value of that
  function on the global batch (the devices' rows in device order). Computed
  as :func:`gca_jax.losses.hs_rince` with marginals 1 (equal to RINCE by
  Theorem 2); its diagnostics report the exact row marginals of RINCE's plan.

  Args:
    z1, z2: this device's ``(b, D)`` rows of the two views' embeddings.
    axis_name: the mesh axis the batch is sharded over (inside
      :func:`jax.shard_map`); required.

  Returns:
    The loss of the global batch (the same on every device), or
    ``(loss, aux)`` with ``return_aux=True`` (``aux.log_plan``: this
    device's rows).

  Raises:
    ValueError: for ``axis_name=None`` or an axis not bound here, and as
      :func:`gca_jax.losses.rince`.
    TypeError: as :func:`gca_jax.losses.rince`.
  """
  _check_axis(axis_name)
  return contrastive.rince.with_axis_name(z1, z2, axis_name=axis_name, **options)


@_rows_sharded(contrastive.gca_rince)
def gca_rince(z1, z2, *, axis_name, **options):
  """:func:`gca_jax.losses.gca_rince` with the plan's rows sharded over ``axis_name``.

  Takes the keyword parameters of :func:`gca_jax.losses.gca_rince`, with its
  defaults and checks, and a required ``axis_name``; gives the value of that
  function on the global batch (the devices' rows in device order).

  Args:
    z1, z2: this device's ``(b, D)`` rows of the two views' embeddings.
    axis_name: the mesh axis the batch is sharded over (inside
      :func:`jax.shard_map`); required.

  Returns:
    The loss of the global batch (the same on every device), or
    ``(loss, aux)`` with ``return_aux=True`` (``aux.log_plan``: this
    device's rows).

  Raises:
    ValueError: for ``axis_name=None`` or an axis not bound here, and as
      :func:`gca_jax.losses.gca_rince`.
    TypeError: as :func:`gca_jax.losses.gca_rince`.
  """
  _check_axis(axis_name)
  return contrastive.gca_rince.with_axis_name(z1, z2, axis_name=axis_name, **options)


@_rows_sharded(contrastive.hs_rince)
def hs_rince(z1, z2, *, axis_name, **options):
  """:func:`gca_jax.losses.hs_rince` with the plan's rows sharded over ``axis_name``.

  Takes the keyword parameters of :func:`gca_jax.losses.hs_rince`, with its
  defaults and checks, and a required ``axis_name``; gives the value of that
  function on the global batch (the devices' rows in device order).

  Args:
    z1, z2: this device's ``(b, D)`` rows of the two views' embeddings.
    axis_name: the mesh axis the batch is sharded over (inside
      :func:`jax.shard_map`); required.

  Returns:
    The loss of the global batch (the same on every device), or
    ``(loss, aux)`` with ``return_aux=True`` (``aux.log_plan``: this
    device's rows).

  Raises:
    ValueError: for ``axis_name=None`` or an axis not bound here, and as
      :func:`gca_jax.losses.hs_rince`.
    TypeError: as :func:`gca_jax.losses.hs_rince`.
  """
  _check_axis(axis_name)
  return contrastive.hs_rince.with_axis_name(z1, z2, axis_name=axis_name, **options)


@_rows_sharded(contrastive.gca_uot)
def gca_uot(z1, z2, *, axis_name, **options):
  """:func:`gca_jax.losses.gca_uot` with the plan's rows sharded over ``axis_name``.

  Takes the keyword parameters of :func:`gca_jax.losses.gca_uot`, with its
  defaults and checks, and a required ``axis_name``; gives the value of that
  function on the global batch (the devices' rows in device order).

  Args:
    z1, z2: this device's ``(b, D)`` rows of the two views' embeddings.
    axis_name: the mesh axis the batch is sharded over (inside
      :func:`jax.shard_map`); required.

  Returns:
    The loss of the global batch (the same on every device), or
    ``(loss, aux)`` with ``return_aux=True`` (``aux.log_plan``: this
    device's rows).

  Raises:
    ValueError: for ``axis_name=None`` or an axis not bound here, and as
      :func:`gca_jax.losses.gca_uot`.
    TypeError: as :func:`gca_jax.losses.gca_uot`.
  """
  _check_axis(axis_name)
  return contrastive.gca_uot.with_axis_name(z1, z2, axis_name=axis_name, **options)


@_rows_sharded(contrastive.iot)
def iot(z1, z2, *, axis_name, **options):
  """:func:`gca_jax.losses.iot` with the plan's rows sharded over ``axis_name``.

  Takes the keyword parameters of :func:`gca_jax.losses.iot`, with its
  defaults and checks, and a required ``axis_name``; gives the value of that
  function on the global batch (the devices' rows in device order).

  Args:
    z1, z2: this device's ``(b, D)`` rows of the two views' embeddings.
    axis_name: the mesh axis the batch is sharded over (inside
      :func:`jax.shard_map`); required.

  Returns:
    The loss of the global batch (the same on every device), or
    ``(loss, aux)`` with ``return_aux=True`` (``aux.log_plan``: this
    device's rows).

  Raises:
    ValueError: for ``axis_name=None`` or an axis not bound here, and as
      :func:`gca_jax.losses.iot`.
    TypeError: as :func:`gca_jax.losses.iot`.
  """
  _check_axis(axis_name)
  return contrastive.iot.with_axis_name(z1, z2, axis_name=axis_name, **options)


@_rows_sharded(contrastive.iot_uni)
def iot_uni(z1, z2, *, axis_name, **options):
  """:func:`gca_jax.losses.iot_uni` with the plan's rows sharded over ``axis_name``.

  Takes the keyword parameters of :func:`gca_jax.losses.iot_uni`, with its
  defaults and checks, and a required ``axis_name``; gives the value of that
  function on the global batch (the devices' rows in device order). The
  diagonal of ``KL(Q || P)`` is the global one; its sums add up every device's
  rows.

  Args:
    z1, z2: this device's ``(b, D)`` rows of the two views' embeddings.
    axis_name: the mesh axis the batch is sharded over (inside
      :func:`jax.shard_map`); required.

  Returns:
    The loss of the global batch (the same on every device), or
    ``(loss, aux)`` with ``return_aux=True`` (``aux.log_plan``: this
    device's rows).

  Raises:
    ValueError: for ``axis_name=None`` or an axis not bound here, and as
      :func:`gca_jax.losses.iot_uni`.
    TypeError: as :func:`gca_jax.losses.iot_uni`.
  """
  _check_axis(axis_name)
  return contrastive.iot_uni.with_axis_name(z1, z2, axis_name=axis_name, **options)


#: Sharded contrastive losses selectable by name, each
#: ``fn(z1, z2, *, axis_name, **params)`` with the parameters of the
#: single-device loss of that name.
SHARDED_LOSSES = {loss.__name__: loss for loss in (
    infonce, gca_ince, hs_ince, rince, gca_rince, hs_rince, gca_uot, iot, iot_uni)}


def get(name: str):
  """The sharded contrastive loss called ``name`` (see :data:`SHARDED_LOSSES`)."""
  return arguments.lookup(SHARDED_LOSSES, name, "sharded loss")


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
    arguments_ = dict(bound.arguments)
    if arguments_.pop("as_labels"):
      # Labels are laid out by the loss, which gathers the other devices'.
      del arguments_["axis_name"]
      return public(**arguments_, as_labels=True)
    return rows_of(**arguments_)

  target.__name__ = target.__qualname__ = name
  target.__signature__ = signature
  target.__doc__ = (
      f"This device's rows of :func:`gca_jax.losses.{name}`.\n\n"
      f"Args:\n  {first[0].name}: this device's ``(b,)`` ids (the other "
      f"devices' are gathered over ``axis_name``).\n  axis_name: the mesh "
      f"axis the batch is sharded over.\n  Others: as "
      f":func:`gca_jax.losses.{name}`.\n\nReturns:\n  The ``(n, N)`` rows of "
      f"the global target that this device's rows of the sharded loss see "
      f"(``n = 2b``, ``N = 2B`` in the joint pairing), or with "
      f"``as_labels=True`` the labels of this device's samples; pass it as "
      f"``target=`` to a sharded loss.\n")
  return target


#: The target builders of :mod:`gca_jax.losses.targets` with sharded rows.
TARGETS = ("domain_target", "class_target", "hierarchical_target")
_TARGETS = {name: _sharded_target(name) for name in TARGETS}
domain_target = _TARGETS["domain_target"]
class_target = _TARGETS["class_target"]
hierarchical_target = _TARGETS["hierarchical_target"]
