"""Trace-time checks of the losses' arguments, and the numerics policy.

The scalar checks (``eps``, ``iters``, relaxations, weights, choices), the
public face of a loss written as a function (:func:`public_loss`: its
keywords checked, one clear ``TypeError`` for a wrong one), and the
numerics policy (which numerical form of a projection is safe, which ``eps``
the robust term allows). The marginals and the target are built from their
arguments in :mod:`gca_jax.losses.problem`.

Every check runs while a loss is traced, so a bad concrete argument fails at
once with one line naming it and its allowed values, and nothing runs inside
a jitted step. A traced argument (a jitted or vmapped one) cannot be read at
trace time: :func:`concrete` says so by returning ``None``, and the check
leaves it to the numerics: a traced scalar out of range is returned as NaN
(:func:`nan_unless`), a traced marginal or target entry out of range
becomes NaN, so the loss is not finite, never a finite wrong one.

Examples:
  >>> from gca_jax.losses import arguments
  >>> arguments.concrete(0.5), arguments.check_iters(3)
  (0.5, 3)
  >>> arguments.relaxation(0.2, 0.2)  # tau = rho / (rho + eps)
  0.5
"""

from __future__ import annotations

import difflib
import functools
import inspect
import math
import operator
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

FORMS = ("auto", "log", "scaling")
GRAD_MODES = ("unroll", "implicit", "detach")
RINCE_KERNELS = ("cost", "similarity")

#: Options that shape the traced program (Python ints, bools and strings):
#: under :func:`jax.jit` they must be static arguments.
STATIC_OPTIONS = ("iters", "final_row_step", "rince_kernel", "pairing", "self_mask",
                  "grad_mode", "form", "tile_size", "return_aux", "axis_name")
#: Names users give the temperature; the losses call it ``eps``.
TEMPERATURE_ALIASES = ("temperature", "tau", "t", "temp")

# Largest static ``max C / eps`` at which the scaling form is used. In
# float32, exp(35) = 1.6e15: scalings and their squares (which appear in the
# backward pass) stay far from the float32 limit of 3.4e38. The float64
# limit is chosen the same way against 1.8e308.
_SCALING_FORM_LIMIT = {jnp.dtype(jnp.float32): 35.0,
                       jnp.dtype(jnp.float64): 300.0}


def concrete(value) -> float | None:
  """``float(value)``, or ``None`` for a traced (or non-scalar) value."""
  try:
    return float(value)
  except (TypeError, jax.errors.ConcretizationTypeError):
    return None


def check_keywords(function: str, given, accepted) -> None:
  """Refuses keywords of ``given`` that ``function`` does not take (TypeError).

  The message lists the accepted keywords and suggests ``eps`` for a
  temperature under another name, the sharded loss for ``axis_name``, or the
  closest accepted name.
  """
  unknown = [name for name in given if name not in accepted]
  if not unknown:
    return
  hints = []
  for name in unknown:
    if name in TEMPERATURE_ALIASES and "eps" in accepted:
      hints.append(f"use eps for {name}: eps is the temperature")
    elif name == "axis_name":
      hints.append(f"rows sharded over a mesh axis: gca_jax.losses.sharded.{function}")
    else:
      close = difflib.get_close_matches(name, accepted, n=1)
      if close:
        hints.append(f"did you mean {close[0]} for {name}?")
  raise TypeError(
      f"{function}() got unexpected keyword argument(s) {', '.join(unknown)}"
      + (f" ({'; '.join(hints)})" if hints else "")
      + f"; it accepts {', '.join(accepted)}.")


def check_static(function: str, options: dict, static: tuple[str, ...]) -> None:
  """Refuses a traced value of an option that must be static under jit."""
  for name in STATIC_OPTIONS:
    if isinstance(options.get(name), jax.core.Tracer):
      names = ", ".join(repr(n) for n in STATIC_OPTIONS if n in static)
      raise TypeError(
          f"{function}: {name} is traced, but it shapes the program; under "
          f"jax.jit pass it as static, e.g. jax.jit({function}, "
          f"static_argnames=({names})).")


def with_checked_keywords(function: Callable, signature: inspect.Signature):
  """``function(z1, z2, **options)`` behind ``signature``, keywords checked.

  The result shows ``signature`` (``inspect.signature``, ``help``, autodoc,
  ``jax.jit(static_argnames=...)``) and refuses, with one line, a keyword
  that ``signature`` does not list (:func:`check_keywords`) and a traced
  option that must be static under :func:`jax.jit` (:func:`check_static`);
  then it calls ``function``. Its name, docstring and module are
  ``function``'s.
  """
  name = function.__name__
  accepted = tuple(signature.parameters)[2:]

  @functools.wraps(function)
  def checked(z1, z2, **options):
    check_keywords(name, options, accepted)
    check_static(name, options, accepted)
    return function(z1, z2, **options)

  # The signature is ``signature``, which may list less than ``function``
  # takes: not the one ``inspect`` would find by following ``__wrapped__``.
  del checked.__wrapped__
  checked.__signature__ = signature
  checked.__doc__ = inspect.getdoc(function)  # dedented, as help() shows it
  return checked


def public_loss(loss: Callable | None = None, *, axis_name_public: bool = False):
  """Decorator: the public face of a loss written as a function.

  The loss is written ``def name(z1, z2, *, options..., axis_name=None)``
  with its docstring. The public function takes ``z1, z2`` and the options
  (its signature is the written one without ``axis_name``, unless
  ``axis_name_public``), with the keyword checks of
  :func:`with_checked_keywords`. The written function, which also takes
  ``axis_name``, stays reachable as ``public.with_axis_name``: the
  row-sharded losses of :mod:`gca_jax.losses.sharded` call it.
  """
  if loss is None:
    return functools.partial(public_loss, axis_name_public=axis_name_public)
  written = inspect.signature(loss)
  parameters = [p for p in written.parameters.values()
                if axis_name_public or p.name != "axis_name"]
  public = with_checked_keywords(loss, written.replace(parameters=parameters))
  public.with_axis_name = loss
  return public


def check_iters(iters) -> int:
  """``iters`` as a Python int: an int (or numpy integer) >= 0."""
  if isinstance(iters, jax.core.Tracer):
    raise TypeError(
        "iters is traced, but it is the static number of iterations; under "
        "jax.jit pass it as static: static_argnames=('iters', ...).")
  if isinstance(iters, (bool, np.bool_)) or not isinstance(iters, (int, np.integer)):
    raise ValueError(f"iters must be an int >= 0, got {iters!r}.")
  iters = operator.index(iters)
  if iters < 0:
    raise ValueError(f"iters must be an int >= 0, got {iters!r}.")
  return iters


def check_choice(name: str, value, allowed: tuple[str, ...]) -> None:
  """``value`` must be one of the strings ``allowed``."""
  if not isinstance(value, str) or value not in allowed:
    choices = (f"'{allowed[0]}' or '{allowed[1]}'" if len(allowed) == 2
               else f"one of {allowed}")
    raise ValueError(f"{name} must be {choices}, got {value!r}.")


def nan_unless(valid, value):
  """``value`` where ``valid``, else NaN: a traced argument out of range.

  The check cannot run at trace time, so the argument itself becomes NaN and
  with it the loss and every gradient, its own included (a product, not a
  ``where``, whose unselected branch would get a zero gradient); under
  :func:`jax.vmap`, only the problems whose argument is out of range. A valid
  value is multiplied by 1: unchanged, bit for bit, and so is its gradient.
  """
  return value * jnp.where(valid, 1.0, jnp.nan)


def check_eps(eps):
  """``eps``, which must be finite and > 0 (traced: NaN if it is not)."""
  value = concrete(eps)
  if value is None:
    return nan_unless((eps > 0) & (eps < jnp.inf), eps)
  if not 0 < value < math.inf:
    raise ValueError(f"eps must be > 0 and finite, got {eps}.")
  return eps


def check_q(q):
  """``q``, which must be in ``(0, 1]`` (traced: NaN if it is not)."""
  value = concrete(q)
  if value is None:
    return nan_unless((q > 0) & (q <= 1), q)
  if not 0 < value <= 1:
    raise ValueError(f"q must be in (0, 1], got {q}.")
  return q


def check_nonnegative(name: str, value):
  """``value``, which must be finite and >= 0 (traced: NaN if it is not)."""
  checked = concrete(value)
  if checked is None:
    return nan_unless((value >= 0) & (value < jnp.inf), value)
  if not 0 <= checked < math.inf:
    raise ValueError(f"{name} must be finite and >= 0, got {value}.")
  return value


def check_relaxation(name: str, tau):
  """``tau``, which must be in ``(0, 1]`` (traced: NaN if it is not)."""
  value = concrete(tau)
  if value is None:
    return nan_unless((tau > 0) & (tau <= 1), tau)
  if not 0.0 < value <= 1.0:
    raise ValueError(
        f"{name} must be in (0, 1] (1: balanced; rho / (rho + eps) for a "
        f"KL-relaxed marginal), got {tau}.")
  return tau


def check_similarity_floor(floor):
  """``None`` or a floor in ``[-1, 1)`` (traced: NaN if it is not).

  A floor of 1 or more clamps every similarity to the same value, so the
  loss is constant and its gradient zero; below -1 it clamps nothing.
  """
  if floor is None:
    return None
  value = concrete(floor)
  if value is None:
    return nan_unless((floor >= -1) & (floor < 1), floor)
  if not -1.0 <= value < 1.0:
    raise ValueError(
        f"similarity_floor must be None or in [-1, 1), got {floor}.")
  return floor


def is_zero(weight) -> bool:
  """Whether ``weight`` is statically 0 (its term is dropped); traced: no."""
  return concrete(weight) == 0.0


def is_one(tau) -> bool:
  """Whether ``tau`` is statically 1 (a balanced side); traced: unknown."""
  return concrete(tau) == 1.0


def relaxation(rho, eps, name: str = "rho"):
  """``tau = rho / (rho + eps)`` of a KL-relaxed marginal of weight ``rho``.

  ``rho = inf`` is the hard constraint (``tau = 1``, balanced); ``rho`` must
  be > 0 (a traced one out of range gives a NaN ``tau``).
  """
  value = concrete(rho)
  if value is not None:
    if not value > 0:
      raise ValueError(
          f"{name} must be > 0 (inf: a balanced marginal), got {rho}.")
    if value == math.inf:
      return 1.0
    return rho / (rho + eps)
  hard = rho == jnp.inf
  # inf / (inf + eps) is NaN, in the value and in the gradient of the
  # unselected branch: a finite stand-in keeps both clean.
  finite_rho = jnp.where(hard, 1.0, rho)
  tau = jnp.where(hard, 1.0, finite_rho / (finite_rho + eps))
  return nan_unless(rho > 0, tau)


def scaling_form_is_safe(cost_bound: float, eps, dtype) -> bool:
  """Whether ``exp(-C / eps)`` and its scalings fit in ``dtype``.

  Decided at trace time from a static bound on the cost (``max C <= 2`` for
  normalised embeddings): no data-dependent branch runs inside a jitted step.
  A traced ``eps`` cannot be checked and selects the log form.
  """
  eps = concrete(eps)
  if eps is None:
    return False
  limit = _SCALING_FORM_LIMIT.get(jnp.dtype(dtype), 0.0)
  return cost_bound / eps <= limit


def select_form(form: str, cost_bound: float, eps, dtype) -> str:
  """The numerical form: ``"auto"`` resolved, a forced unsafe one refused.

  ``cost_bound`` is the static bound on ``max C`` (plus the range the
  potentials gain from a shifted kernel). A traced ``eps`` cannot be judged:
  ``"auto"`` then takes the log form and a forced ``"scaling"`` is trusted.
  """
  check_choice("form", form, FORMS)
  if form == "log":
    return form
  safe = scaling_form_is_safe(cost_bound, eps, dtype)
  if form == "auto":
    return "scaling" if safe else "log"
  if not safe and concrete(eps) is not None:
    raise ValueError(
        f"form='scaling' is unsafe at eps={eps} in {jnp.dtype(dtype).name}: "
        f"exp(-C / eps) and its scalings leave the float range (static bound "
        f"max C / eps = {cost_bound / float(eps):.4g}). Use form='auto' (which "
        f"picks the log form here) or form='log'.")
  return form


def _robust_log_magnitude(eps: float, q: float, lam: float, rows: int):
  """Static log-bound on the similarity-kernel robust term and its gradient.

  Per anchor ``x^q <= exp(q / eps)`` and ``y^q <= (lam N exp(1 / eps))^q``;
  the sum over ``N`` anchors adds ``log N`` and the gradient a factor
  ``1 / eps``.
  """
  return (q * (1.0 / eps + max(0.0, math.log(lam * rows) if lam else 0.0))
          + math.log(rows) + max(0.0, math.log(1.0 / eps)))


def check_robust_range(eps, q, lam, rows: int, dtype) -> None:
  """Refuses an ``eps`` at which the similarity-kernel robust term overflows
  ``dtype``, naming the smallest allowed ``eps``."""
  eps, q, lam = concrete(eps), concrete(q), concrete(lam)
  if eps is None or q is None or lam is None:
    return  # traced: cannot be checked at trace time
  limit = math.log(float(jnp.finfo(dtype).max))
  if _robust_log_magnitude(eps, q, lam, rows) <= limit:
    return
  low, high = eps, 1.0  # smallest representable eps, by bisection
  while _robust_log_magnitude(high, q, lam, rows) > limit:
    high *= 2.0
  for _ in range(60):
    middle = 0.5 * (low + high)
    if _robust_log_magnitude(middle, q, lam, rows) > limit:
      low = middle
    else:
      high = middle
  step = 10.0 ** (math.floor(math.log10(high)) - 2)  # 3 significant digits,
  smallest = math.ceil(high / step) * step  # rounded up: itself allowed
  raise ValueError(
      f"eps={eps} is too small for the robust (RINCE) term in "
      f"{jnp.dtype(dtype).name}: it grows like exp(q / eps) = exp({q / eps:.4g})"
      f", beyond the dtype's range. Use eps >= {smallest:.3g} (for q={q}, "
      f"lam={lam}, N={rows}), or enable float64 (jax_enable_x64).")


def lookup(registry: dict, name: str, what: str, hint: str = ""):
  """``registry[name]``, or one line naming ``what`` and the choices."""
  try:
    return registry[name]
  except KeyError:
    raise ValueError(
        f"unknown {what} name {name!r}; choose one of {sorted(registry)}{hint}."
    ) from None
