"""Public signatures and docstrings of the losses, built from declarations.

A loss is declared as a :class:`LossSpec` (its math, its implementation, its
signature); :func:`build` turns it into the public function: its full
signature for ``inspect.signature``/``help``/autodoc, a docstring whose
``Args:`` take one shared text per parameter, one clear ``TypeError`` for a
keyword it does not take (``eps`` suggested for a temperature under another
name) or a traced option that must be static under :func:`jax.jit`. The
same declaration gives the row-sharded variant (:mod:`gca_jax.losses.sharded`).

Examples:
  >>> import inspect
  >>> from gca_jax import losses
  >>> list(inspect.signature(losses.iot).parameters)[:5]
  ['z1', 'z2', 'eps', 'iters', 'tau_a']
  >>> inspect.signature(losses.iot).parameters["marginals"].default
  'ones'
"""

from __future__ import annotations

import inspect
from typing import Callable, NamedTuple

from gca_jax.losses import arguments


# One text per parameter, shared by every loss that takes it.
_ARGS = {
    "z1, z2": "``(B, D)`` embeddings of the two views, row ``k`` of each from "
              "sample ``k`` (a stacked ``(2B, D)`` array is ``z1, z2 = "
              "jnp.split(z, 2)``).",
    "eps": "the temperature, exactly: logits are ``s = S / eps`` and the kernel "
           "``exp(-C / eps)``; finite and > 0.",
    "iters": "static number of full (row then column) Sinkhorn iterations, an "
             "int >= 0 (under ``jax.jit``: a static argument).",
    "tau_a": "row-marginal relaxation in ``(0, 1]`` (1: balanced; "
             "``rho / (rho + eps)`` for a KL-relaxed marginal of weight ``rho``).",
    "tau_b": "column-marginal relaxation, as ``tau_a``.",
    "rho_a": "KL weight of the row marginal, > 0 (``tau_a = rho_a / (rho_a + "
             "eps)``; ``inf``: a balanced marginal).",
    "rho_b": "KL weight of the column marginal, as ``rho_a``.",
    "marginals": "``\"uniform\"`` (``1/N``), ``\"ones\"``, or a pair ``(a, b)`` of "
                 "finite, positive ``(N,)`` arrays (a single string applies to "
                 "both).",
    "init_log_v": "starting column potential ``log v`` (scalar or ``(N,)``; "
                  "``None``: 0).",
    "final_row_step": "one more row projection after the iterations gives the "
                      "``u`` of the robust term (with ``iters=0``: a half step).",
    "w_ce": "weight of the alignment cross-entropy, finite and >= 0.",
    "w_rince": "weight of the robust (RINCE) term, finite and >= 0.",
    "w_plan": "weight of the plan log-likelihood (IOT), finite and >= 0.",
    "lam": "RINCE's weight of the negatives, finite and >= 0.",
    "q": "RINCE's exponent, in ``(0, 1]``.",
    "rince_kernel": "``\"cost\"`` (``P = u exp(M) v``) or ``\"similarity\"`` "
                    "(``P = u exp(s) v``, eq. (13)).",
    "lambda_p": "weight of IOT-uni's ``KL(Q || P)``, finite and >= 0.",
    "pairing": "``\"joint\"`` (both views stacked, ``N = 2B``) or ``\"cross\"`` "
               "(``z1`` against ``z2``, ``N = B``).",
    "self_mask": "self pairs of the joint pairing: ``\"exclude\"``, "
                 "``\"max_cost\"`` or ``\"lowered\"`` (see "
                 ":func:`~gca_jax.losses.batch_geometry`).",
    "similarity_floor": "``None``, or a floor on the cosine similarity.",
    "target": "``\"pairs\"`` (each row's positive) or an ``(N, N)`` target plan "
              "(:func:`~gca_jax.losses.domain_target`, "
              ":func:`~gca_jax.losses.class_target`): finite, >= 0, each row "
              "with a positive entry off the excluded self pairs.",
    "grad_mode": "``\"unroll\"`` (through the iterations), ``\"implicit\"`` (at "
                 "the fixed point) or ``\"detach\"`` (potentials held constant).",
    "form": "``\"auto\"`` (the scaling form when safe, else log), ``\"log\"`` or "
            "``\"scaling\"`` (refused where the static bound calls it unsafe).",
    "tile_size": "``None`` (the ``N x N`` kernel is materialised) or an int "
                 ">= 1: the kernel is recomputed ``tile_size`` rows at a time "
                 "in the forward and backward passes, memory linear in ``N`` "
                 "(:mod:`gca_jax.losses.tiled`; static under ``jax.jit``).",
    "return_aux": "also return a :class:`~gca_jax.losses.LossAux` of the plan.",
    "axis_name": "``None`` (one device), or, inside :func:`jax.shard_map`, the "
                 "mesh axis the batch's rows are sharded over (see "
                 ":mod:`gca_jax.losses.sharded`).",
}
_SHARDED_AXIS = ("the mesh axis the batch is sharded over (inside "
                 ":func:`jax.shard_map`); ``z1, z2`` are this device's rows.")
_RETURNS = ("The scalar loss (the same on every device when sharded), or "
            "``(loss, aux)`` with ``return_aux=True``.")
_RAISES = ("ValueError: for a concrete parameter outside its range (a traced "
           "one makes the loss NaN), a concrete target or marginal with a "
           "negative, zero-row, NaN or inf entry, balanced marginals of "
           "unequal mass, a forced unsafe ``form=\"scaling\"``, or an ``eps`` "
           "at which the similarity-kernel robust term overflows the dtype."
           "\n    TypeError: for an unknown keyword, a traced static option, or "
           "complex or non-array embeddings.")


class LossSpec(NamedTuple):
  """A public loss, as data.

  Attributes:
    name: the public name.
    summary: the docstring's math (before ``Args:``).
    call: the implementation, ``call(z1, z2, **options, axis_name=...)``.
    signature: the public signature (every option with its default).
    example: the rounded value of the docstring's example.
  """

  name: str
  summary: str
  call: Callable
  signature: inspect.Signature
  example: str


def derive(base: inspect.Signature, names=None, *, drop=(), defaults=None,
           replace=None) -> inspect.Signature:
  """``(z1, z2, *, ...)`` from the parameters of ``base`` (:func:`gca_loss`'s):
  ``names`` (all by default) minus ``drop``, with changed ``defaults``, and
  each name of ``replace`` swapped for its keyword-only ``(name, default)``
  pairs. The defaults stay written once, in ``base``."""
  defaults, replace = defaults or {}, replace or {}
  base = base.parameters
  names = list(base)[2:] if names is None else names
  parameters = [base["z1"], base["z2"]]
  for name in names:
    if name in drop:
      continue
    if name in replace:
      parameters += [inspect.Parameter(new, inspect.Parameter.KEYWORD_ONLY,
                                       default=default, annotation="float")
                     for new, default in replace[name]]
      continue
    parameter = base[name]
    if name in defaults:
      parameter = parameter.replace(default=defaults[name])
    parameters.append(parameter)
  return inspect.Signature(parameters)


def preset(base: Callable, name, summary, example, fixed=(), defaults=None,
           call=None, replace=None) -> LossSpec:
  """A preset of ``base`` (:func:`gca_loss`'s body): the values it ``fixed``
  and the ``defaults`` it changes; ``call`` (default ``base``) runs it."""
  fixed, call = dict(fixed), call or base

  def preset_call(z1, z2, **options):
    return call(z1, z2, **fixed, **options)

  preset_call.__module__ = call.__module__

  signature = derive(inspect.signature(base), drop=(*fixed, "axis_name"),
                     defaults=defaults, replace=replace)
  return LossSpec(name, summary, preset_call, signature, example)


def _docstring(spec: LossSpec, sharded: bool) -> str:
  lines = [spec.summary.strip(), "", "Args:"]
  names = ["z1, z2"] + list(spec.signature.parameters)[2:]
  for name in names:
    text = _SHARDED_AXIS if sharded and name == "axis_name" else _ARGS[name]
    lines.append(f"  {name}: {text}")
  lines += ["", "Returns:", f"  {_RETURNS}", "", "Raises:", f"  {_RAISES}"]
  if not sharded:
    lines += ["", "Examples:",
              "  >>> import jax",
              "  >>> from gca_jax import losses",
              "  >>> z1, z2 = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 16))",
              f"  >>> print(f\"{{float(losses.{spec.name}(z1, z2)):.4f}}\")",
              f"  {spec.example}"]
  return "\n".join(lines) + "\n"


def build(spec: LossSpec, check_axis: Callable | None = None):
  """The public function of ``spec``; with ``check_axis``, its row-sharded
  variant, whose ``axis_name`` is required and checked by ``check_axis``."""
  parameters = dict(spec.signature.parameters)
  if check_axis is not None:
    parameters.pop("axis_name", None)
    axis = inspect.Parameter("axis_name", inspect.Parameter.KEYWORD_ONLY)
    z1, z2, *options = parameters.values()
    signature = inspect.Signature([z1, z2, axis, *options])
  else:
    signature = spec.signature
  accepted = tuple(signature.parameters)[2:]
  name = spec.name

  def loss(z1, z2, **options):
    arguments.check_keywords(name, options, accepted)
    arguments.check_static(name, options, accepted)
    bound = signature.bind(z1, z2, **options)
    bound.apply_defaults()
    options = dict(bound.arguments)
    del options["z1"], options["z2"]
    if check_axis is not None:
      check_axis(options["axis_name"])
    return spec.call(z1, z2, **options)

  loss.__name__ = loss.__qualname__ = name
  # The module that declares it (for autodoc and doctest), not this one.
  loss.__module__ = (check_axis or spec.call).__module__
  loss.__signature__ = signature
  loss.__doc__ = _docstring(spec, sharded=check_axis is not None)
  return loss


def lookup(registry: dict, name: str, what: str, hint: str = ""):
  """``registry[name]``, or one line naming ``what`` and the choices."""
  try:
    return registry[name]
  except KeyError:
    raise ValueError(
        f"unknown {what} name {name!r}; choose one of {sorted(registry)}{hint}."
    ) from None
