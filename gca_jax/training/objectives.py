"""What a pre-training step minimises: the contrastive, BYOL and SimSiam objectives.

An objective owns its model(s) and the state it adds to the common
`TrainState`, and exposes

* ``create_state(params, batch_stats, opt_state, rng)``: its initial state;
* ``loss(params, state, views1, views2, ids, gather) -> (loss, Output)``: the
  objective on this device's rows (inside `jax.shard_map`; ``gather`` turns
  this device's rows into the rows the loss sees: the global batch with the
  global scope), differentiable in ``params``;
* ``after_update(state) -> state``: what follows the optimiser update (BYOL:
  the EMA of the target network);
* ``id_key``: the batch field(s) the loss reads beside the images (None, a
  name, or a tuple of names whose arrays it then takes as a tuple).

`Contrastive` runs any loss of `gca_jax.losses` (or a published-code preset
of `gca_jax.reference`) on the two views' projections, optionally against a
target plan built from the batch's domains or labels (``config.target``);
with ``config.loss_scope == "sharded"`` it runs the loss's row-sharded form
(`gca_jax.losses.sharded`) on this device's rows;
`Byol` regresses the online predictions on an EMA target's projections;
`SimSiam` regresses them on the online network's own projections under a
stop-gradient (no target network).
`make_objective(config)` builds one, refusing a loss, scope, target or
parameter name that cannot go together; `trace(objective)` then checks the
parameters' values by tracing the loss on abstract inputs (nothing is
computed).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
from jax import lax
from jax.sharding import PartitionSpec as P

from gca_jax import losses, models
from gca_jax.losses import arguments, sharded, targets
from gca_jax.losses.simsiam import simsiam
from gca_jax.sharding import DATA_AXIS, make_mesh
from gca_jax.training.config import HIERARCHY_LEVELS, ConfigError
from gca_jax.training.state import ByolTrainState, TrainState

BYOL = "byol"
SIMSIAM = "simsiam"
# Siamese regressions: a predictor head, no loss parameters, no target plan.
PREDICTOR_LOSSES = (BYOL, SIMSIAM)
REFERENCE_PREFIX = "reference/"
# Which per-example ids (batch fields) a target plan is built from.
TARGET_IDS = {"domain": "domain", "class": "label", "hierarchical": HIERARCHY_LEVELS}
# SimSiam's predictor is a bottleneck: hidden width = projection_dim / 4.
SIMSIAM_BOTTLENECK = 4
# The paper's method names that are not the name of their function: SimCLR's
# NT-Xent and INCE are InfoNCE (`gca_jax.losses.infonce`). Every other method
# name (GCA-UOT, IOT-uni, ...) is its function's name up to case and "-"/"_".
METHOD_ALIASES = {"simclr": "infonce", "ince": "infonce", "nt_xent": "infonce"}


class Output(NamedTuple):
  """What `loss` returns beside the loss value."""

  state_updates: dict      # new values of state fields (batch statistics)
  diagnostics: dict        # scalar diagnostics of the loss
  z1: jax.Array            # the projections the loss saw (for metrics)
  z2: jax.Array


# ---------------------------------------------------------------------------
# Loss selection.


def loss_names() -> tuple[str, ...]:
  """Every name ``config.loss`` takes besides the ``"reference/<preset>"``
  presets: the contrastive losses, the two Siamese regressions and the
  method names of `METHOD_ALIASES`."""
  return tuple(sorted({*losses.CONTRASTIVE_LOSSES, *PREDICTOR_LOSSES, *METHOD_ALIASES}))


def canonical_loss(name: str) -> str:
  """The loss ``name`` selects: a method name as the paper writes it (case
  and "-" ignored, `METHOD_ALIASES` resolved) or a function's name; a
  ``"reference/<preset>"`` name is returned as it is. Raises a one-line
  ConfigError listing every accepted name for an unknown one.

  Examples:
    >>> from gca_jax.training import objectives
    >>> objectives.canonical_loss("SimCLR"), objectives.canonical_loss("GCA-UOT")
    ('infonce', 'gca_uot')
  """
  if not isinstance(name, str):
    raise ConfigError(f"config.loss must be a loss name, got {name!r}")
  if name.startswith(REFERENCE_PREFIX):
    return name
  key = name.strip().lower().replace("-", "_")
  key = METHOD_ALIASES.get(key, key)
  if key in losses.CONTRASTIVE_LOSSES or key in PREDICTOR_LOSSES:
    return key
  raise ConfigError(f"config.loss: unknown loss {name!r}; choose one of "
                    f"{', '.join(loss_names())} (method names of the paper's table, "
                    f"e.g. GCA-UOT, are accepted too) or {REFERENCE_PREFIX}<preset> for "
                    "the published-code presets")


def with_canonical_loss(config):
  """``config`` itself if its loss is named canonically, else a copy naming
  the loss `canonical_loss` selects (the config given stays as written)."""
  name = canonical_loss(config.loss)
  if name == config.loss:
    return config
  config = ml_collections.ConfigDict(config)
  config.loss = name
  return config


def is_reference(config) -> bool:
  return config.loss.startswith(REFERENCE_PREFIX)


def is_sharded(config) -> bool:
  return config.loss_scope == "sharded"


def loss_params_of(config) -> dict:
  """The set (not None) entries of ``config.loss_params``, as loss keywords
  (the same names for every loss, the published-code presets included)."""
  return {k: v for k, v in dict(config.loss_params).items() if v is not None}


def accepted_params(loss: Callable) -> tuple[str, ...]:
  """Keyword parameters ``loss`` takes, from its signature (and from
  `gca_jax.losses.gca_loss`'s for presets that forward ``**kwargs`` to it)."""
  signature = inspect.signature(loss).parameters
  names = [n for n, p in signature.items() if p.kind is p.KEYWORD_ONLY]
  if any(p.kind is p.VAR_KEYWORD for p in signature.values()):
    names += [n for n in inspect.signature(losses.gca_loss).parameters
              if n not in names and n not in ("z1", "z2")]
  return tuple(n for n in names if n != "return_aux")


def _check_choice(config) -> None:
  """The loss, its scope and its target go together (names only)."""
  if config.predictor_fixed_lr and config.loss not in PREDICTOR_LOSSES:
    raise ConfigError(f"config.predictor_fixed_lr=true needs a predictor head; loss "
                      f"{config.loss!r} has none (use {' or '.join(PREDICTOR_LOSSES)})")
  if config.loss in PREDICTOR_LOSSES:  # they take no loss parameters (ignore loss_params)
    if is_sharded(config):
      raise ConfigError(f"loss {config.loss!r} has no sharded form; config.loss_scope "
                        "must be 'global' or 'local'")
    if config.target != "pairs":
      raise ConfigError(f"loss {config.loss!r} takes no target plan; config.target must "
                        f"be 'pairs', got {config.target!r}")
    return
  if config.target != "pairs" and is_reference(config):
    raise ConfigError(f"loss {config.loss!r} takes no target plan; config.target "
                      f"must be 'pairs', got {config.target!r}")
  if is_sharded(config) and config.loss not in sharded.SHARDED_LOSSES:
    raise ConfigError(f"config.loss_scope='sharded' has no form for loss {config.loss!r}; "
                      f"use one of {', '.join(sorted(sharded.SHARDED_LOSSES))} or "
                      "config.loss_scope='global'")


def _reference_preset(config) -> str:
  from gca_jax import reference  # pylint: disable=g-import-not-at-top
  preset = config.loss[len(REFERENCE_PREFIX):]
  if preset not in reference.NAMES:
    raise ConfigError(f"config.loss: unknown reference loss {preset!r}; choose one "
                      f"of {', '.join(REFERENCE_PREFIX + n for n in reference.NAMES)}")
  return preset


def _check_param_names(config, params: dict) -> None:
  if is_reference(config):
    from gca_jax import reference  # pylint: disable=g-import-not-at-top
    accepted = reference.PARAMS
  else:
    accepted = accepted_params(losses.get(config.loss))
  unknown = sorted(set(params) - set(accepted))
  if unknown:
    raise ConfigError(f"loss {config.loss!r} does not take parameter {unknown[0]!r} "
                      f"(config.loss_params; it takes {', '.join(accepted)})"
                      f"{keyword_hint(unknown[0], accepted)}")


def keyword_hint(name: str, accepted) -> str:
  """The loss functions' own pointer for a parameter ``name`` a loss does
  not take (`gca_jax.losses.arguments.check_keywords`): ``eps`` for a
  temperature under another name, else the closest of ``accepted``; as a
  ``"; <hint>"`` suffix, or "" when there is none.

  Examples:
    >>> from gca_jax.training import objectives
    >>> objectives.keyword_hint("temperature", ("eps", "iters"))
    '; use eps for temperature: eps is the temperature'
  """
  try:
    arguments.check_keywords("config.loss_params", [name], tuple(accepted))
  except TypeError as e:
    hint = str(e).partition(" (")[2].partition(");")[0]
    return f"; {hint}" if hint else ""
  return ""


def scalar_diagnostics(aux) -> dict[str, jax.Array]:
  """The scalar fields of a loss's aux (vectors: their last entry, e.g. the
  marginal error after the final Sinkhorn iteration); matrices, and fields a
  loss leaves out (the tiled losses' ``log_plan``), are dropped."""
  fields = dataclasses.asdict(aux) if dataclasses.is_dataclass(aux) else dict(aux)
  out = {}
  for name, value in fields.items():
    if value is None:
      continue
    value = jnp.asarray(value)
    if value.ndim <= 1 and value.size:
      out[name] = value.reshape(-1)[-1].astype(jnp.float32)
  return out


def make_loss_fn(config, params: dict) -> Callable[..., tuple[jax.Array, dict]]:
  """``loss_fn(z1, z2, target=None) -> (loss, scalar diagnostics)`` of
  ``config.loss`` with the keywords ``params`` (`loss_params_of`); ``target``
  (an ``(N, N)`` plan) replaces the default "pairs" target. The
  published-code presets report no diagnostics."""
  config = with_canonical_loss(config)
  if is_reference(config):
    from gca_jax import reference  # pylint: disable=g-import-not-at-top
    preset = _reference_preset(config)
    return lambda z1, z2, target=None: (reference.loss(preset, z1, z2, **params), {})
  try:
    loss = losses.get(config.loss)
  except ValueError as e:
    raise ConfigError(f"config.loss: {e}") from None
  if is_sharded(config):
    loss = functools.partial(sharded.get(config.loss), axis_name=DATA_AXIS)

  def loss_fn(z1, z2, target=None):
    kwargs = {} if target is None else {"target": target}
    value, aux = loss(z1, z2, return_aux=True, **kwargs, **params)
    return value, scalar_diagnostics(aux)

  return loss_fn


def hierarchical_target_fn(alphas, beta: float, *, pairing: str,
                           axis_name: str | None, as_labels: bool = False) -> Callable:
  """``target_fn(levels) -> plan`` of `gca_jax.losses.targets.hierarchical_target`
  (``levels``: the ``(B,)`` label arrays, finest first); with ``axis_name``
  (inside shard_map, the sharded scope) this device's rows of the plan; with
  ``as_labels`` (the tiled losses) the labels, whatever the scope."""
  weights = [float(a) for a in alphas]
  if as_labels:
    return lambda levels: targets.hierarchical_target(list(levels), weights, beta=beta,
                                                      as_labels=True)
  if axis_name is None:
    return lambda levels: targets.hierarchical_target(list(levels), weights, beta=beta,
                                                      pairing=pairing)
  # The sharded builder: the row-sharded form of the same plan (levels gathered).
  return lambda levels: targets._hierarchical_target(  # pylint: disable=protected-access
      list(levels), weights, beta=beta, pairing=pairing, dtype=None, axis_name=axis_name)


def make_target_fn(config, params: dict) -> Callable[[jax.Array], jax.Array] | None:
  """``target_fn(ids) -> (N, N)`` plan of ``config.target`` from the ``(B,)``
  ids of the rows the loss sees (a tuple of them, finest first, for the
  "hierarchical" target); None for the "pairs" target. ``params``: the loss's
  keywords (their ``pairing`` applies to the plan too)."""
  kwargs = {"pairing": params.get("pairing", "joint")}
  # The sharded forms take this device's ids and give its rows of the plan.
  builders = sharded if is_sharded(config) else losses
  if is_sharded(config):
    kwargs["axis_name"] = DATA_AXIS
  # The tiled losses take a block target as its labels, never as a matrix.
  as_labels = params.get("tile_size") is not None
  if as_labels:
    kwargs["as_labels"] = True
  if config.target == "domain":
    alpha, beta = float(config.target_alpha), float(config.target_beta)
    return lambda ids: builders.domain_target(ids, alpha, beta, **kwargs)
  if config.target == "class":
    return lambda ids: builders.class_target(ids, **kwargs)
  if config.target == "hierarchical":
    return hierarchical_target_fn(config.target_alphas, float(config.target_beta),
                                  pairing=kwargs["pairing"],
                                  axis_name=kwargs.get("axis_name"), as_labels=as_labels)
  return None


# ---------------------------------------------------------------------------
# Objectives.


def _initial_state(params, batch_stats, opt_state, rng) -> TrainState:
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    batch_stats=batch_stats, opt_state=opt_state, rng=rng)


@dataclasses.dataclass(frozen=True)
class Contrastive:
  """A contrastive loss on the two views' projections (see module doc)."""

  model: Any
  loss_fn: Callable
  target_fn: Callable | None = None
  id_key: str | tuple[str, ...] | None = None  # batch field(s) the target plan is built from
  name: str = ""                # config.loss (for messages)
  projection_dim: int = 0       # of the projections the loss sees
  sharded: bool = False         # the loss's row-sharded form (collectives)

  def create_state(self, params, batch_stats, opt_state, rng) -> TrainState:
    return _initial_state(params, batch_stats, opt_state, rng)

  def loss(self, params, state, views1, views2, ids, gather):
    out, new_vars = self.model.apply(
        {"params": params, "batch_stats": state.batch_stats},
        jnp.concatenate([views1, views2]), train=True, mutable=["batch_stats"])
    z1, z2 = (gather(z) for z in jnp.split(out.projection, 2))
    if self.target_fn is None:
      loss, diagnostics = self.loss_fn(z1, z2)
    else:
      loss, diagnostics = self.loss_fn(z1, z2, self.target_fn(jax.tree.map(gather, ids)))
    return loss, Output({"batch_stats": new_vars["batch_stats"]}, diagnostics, z1, z2)

  def after_update(self, state):
    return state


@dataclasses.dataclass(frozen=True)
class Byol:
  """BYOL: online predictions regress an EMA target's projections.

  A constant EMA decay (BYOL anneals it from 0.996 to 1 with a cosine
  schedule), and the symmetric views of ``config.augmentation`` (not BYOL's
  asymmetric blur/solarisation pair).
  """

  model: Any            # online network, with predictor
  target_model: Any     # the same network without predictor
  ema_decay: float
  id_key = None

  def create_state(self, params, batch_stats, opt_state, rng) -> ByolTrainState:
    base = _initial_state(params, batch_stats, opt_state, rng)
    return ByolTrainState(**vars(base), target_params=models.target_subtree(params),
                          target_batch_stats=models.target_subtree(batch_stats))

  def loss(self, params, state, views1, views2, ids, gather):
    del ids
    both_views = jnp.concatenate([views1, views2])
    target_out, target_vars = self.target_model.apply(
        {"params": state.target_params, "batch_stats": state.target_batch_stats},
        both_views, train=True, mutable=["batch_stats"])
    t1, t2 = (gather(t) for t in jnp.split(lax.stop_gradient(target_out.projection), 2))
    out, new_vars = self.model.apply(
        {"params": params, "batch_stats": state.batch_stats},
        both_views, train=True, mutable=["batch_stats"])
    z1, z2 = (gather(z) for z in jnp.split(out.projection, 2))
    p1, p2 = (gather(p) for p in jnp.split(out.prediction, 2))
    updates = {"batch_stats": new_vars["batch_stats"],
               "target_batch_stats": target_vars["batch_stats"]}
    return losses.byol(p1, p2, t1, t2), Output(updates, {}, z1, z2)

  def after_update(self, state):
    return state.replace(target_params=models.ema_update(
        state.target_params, state.params, self.ema_decay))


@dataclasses.dataclass(frozen=True)
class SimSiam:
  """SimSiam: each view's prediction regresses the other view's projection of
  the same (online) network under a stop-gradient (`gca_jax.losses.simsiam`);
  no target network, so the state is the common `TrainState`."""

  model: Any            # encoder, projector and the bottleneck predictor
  id_key = None

  def create_state(self, params, batch_stats, opt_state, rng) -> TrainState:
    return _initial_state(params, batch_stats, opt_state, rng)

  def loss(self, params, state, views1, views2, ids, gather):
    del ids
    out, new_vars = self.model.apply(
        {"params": params, "batch_stats": state.batch_stats},
        jnp.concatenate([views1, views2]), train=True, mutable=["batch_stats"])
    z1, z2 = (gather(z) for z in jnp.split(out.projection, 2))
    p1, p2 = (gather(p) for p in jnp.split(out.prediction, 2))
    return simsiam(p1, p2, z1, z2), Output({"batch_stats": new_vars["batch_stats"]}, {},
                                           z1, z2)

  def after_update(self, state):
    return state


def _simsiam_model(model_config):
  """The model with SimSiam's bottleneck predictor (hidden = projection_dim / 4)."""
  hidden = max(model_config.projection_dim // SIMSIAM_BOTTLENECK, 1)
  return models.create_model(model_config, with_predictor=True, bn_axis_name=DATA_AXIS,
                             predictor_hidden_dim=hidden)


def make_objective(config) -> Contrastive | Byol | SimSiam:
  """The objective of ``config.loss``, checked as it is built: a loss, scope,
  target or parameter that cannot go together raises a one-line ConfigError
  (`trace` then checks the values without computing anything)."""
  config = with_canonical_loss(config)
  _check_choice(config)
  try:
    if config.loss == SIMSIAM:
      return SimSiam(_simsiam_model(config.model))
    model = models.create_model(config.model, with_predictor=config.loss == BYOL,
                                bn_axis_name=DATA_AXIS)
  except (TypeError, ValueError) as e:
    raise ConfigError(f"config.model: {e}") from None
  if config.loss == BYOL:
    return Byol(model, models.create_model(config.model, bn_axis_name=DATA_AXIS),
                float(config.ema_decay))
  params = loss_params_of(config)  # once: every piece below takes these
  loss_fn = make_loss_fn(config, params)  # an unknown loss fails before its parameters
  _check_param_names(config, params)
  return Contrastive(model, loss_fn, make_target_fn(config, params),
                     TARGET_IDS.get(config.target), name=config.loss,
                     projection_dim=config.model.projection_dim, sharded=is_sharded(config))


def trace(objective) -> None:
  """Raises a one-line ConfigError if ``objective``'s loss and target plan
  cannot run with their parameters: traces them on abstract projections
  (nothing is computed). BYOL's and SimSiam's regressions have no parameters
  to check."""
  if not isinstance(objective, Contrastive):
    return
  z = jax.ShapeDtypeStruct((4, objective.projection_dim), jnp.float32)

  def traced(z1, z2):
    if objective.target_fn is None:
      return objective.loss_fn(z1, z2)
    ids = jnp.arange(4, dtype=jnp.int32) % 2
    if isinstance(objective.id_key, tuple):
      ids = tuple(ids for _ in objective.id_key)
    return objective.loss_fn(z1, z2, objective.target_fn(ids))

  if objective.sharded:  # the collectives need the mesh axis bound
    traced = jax.shard_map(traced, mesh=make_mesh(jax.devices()[:1]),
                           in_specs=P(DATA_AXIS), out_specs=P(), check_vma=False)
  try:
    jax.eval_shape(traced, z, z)
  except (TypeError, ValueError) as e:
    raise ConfigError(f"loss {objective.name!r} (config.loss_params): "
                      f"{' '.join(str(e).split())}") from None
