"""The train step: ``train_step(state, batch) -> (state, metrics)``.

One jitted program per global batch. ``batch["image"]`` is the uint8 global
batch sharded over the mesh's data axis (and ``batch["domain"]``,
``batch["label"]`` or, for the hierarchical target, ``batch["label"]`` and
``batch["coarse_label"]`` its int32 ids when the objective builds a target
plan from them). The step augments both views on the device with the key
``fold_in(state.rng, state.step)``, then runs `device_step` under
`jax.shard_map` over the one-axis mesh:

* batch-norm statistics are averaged over all devices (synchronised BN);
* with ``config.loss_scope == "global"`` the projections (and ids) of all
  devices are all-gathered, so the loss and its transport plan see the whole
  global batch exactly as on one device; ``"sharded"`` computes the same
  loss with each device holding only its rows of the plan (the loss gathers
  what it needs, `gca_jax.losses.sharded`); ``"local"`` keeps one plan per
  device on its own rows (cheaper, but a different objective);
* gradients and metrics are averaged over devices with ``lax.pmean``.

Gradient bookkeeping: the shard_map runs with ``check_vma=False`` (pmap
semantics), where each device differentiates its own copy of the objective
and collectives transpose as in pmap (all_gather -> psum_scatter). The
device gradients then sum to the gradient of ``sum_d L_d``; with the global
scope every ``L_d`` is the same global loss, so ``pmean`` gives exactly the
single-device gradient, and with the local scope the gradient of the mean
of the per-device losses. The same program runs on several hosts after
``jax.distributed.initialize``.
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
import optax
from jax import lax
from jax.sharding import PartitionSpec as P

from gca_jax import metrics
from gca_jax.data import augment
from gca_jax.sharding import DATA_AXIS, batch_sharded


def device_step(state, views1, views2, ids, *, objective, tx, schedule,
                global_scope: bool):
  """One optimisation step on this device's rows (runs inside shard_map).

  ``views1[k]``/``views2[k]`` are the two augmentations of example k and
  ``ids[k]`` its domain or class (a tuple of such arrays for a target of
  several label levels; None without a target plan). The
  ``alignment``/``uniformity``/``wdm_lower_bound`` metrics are of the
  projections the loss sees: the global batch with the global scope, this
  device's rows (averaged over devices) otherwise. ``wdm_lower_bound`` is
  `gca_jax.metrics.wdm_lower_bound` (the critic bound of the Wasserstein
  dependency measure between the two views, O(N D)).
  """

  def gather(x):  # this device's rows -> the rows the loss sees
    return lax.all_gather(x, DATA_AXIS, tiled=True) if global_scope else x

  (loss, out), grads = jax.value_and_grad(objective.loss, has_aux=True)(
      state.params, state, views1, views2, ids, gather)
  grads = lax.pmean(grads, DATA_AXIS)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  new_state = state.replace(step=state.step + 1,
                            params=optax.apply_updates(state.params, updates),
                            opt_state=opt_state, **out.state_updates)
  new_state = objective.after_update(new_state)
  z1, z2 = lax.stop_gradient(out.z1), lax.stop_gradient(out.z2)
  step_metrics = {
      "loss": loss,
      "alignment": metrics.alignment(z1, z2),
      "uniformity": metrics.uniformity(jnp.concatenate([z1, z2])),
      "wdm_lower_bound": metrics.wdm_lower_bound(z1, z2),
      "grad_norm": optax.tree.norm(grads),
      "learning_rate": schedule(state.step),
      **out.diagnostics,
  }
  return new_state, lax.pmean(step_metrics, DATA_AXIS)


def id_keys_of(objective) -> tuple[str, ...]:
  """The batch fields ``objective`` reads beside the images (maybe none)."""
  key = objective.id_key
  return () if key is None else (key,) if isinstance(key, str) else tuple(key)


def batch_ids(batch: dict, id_key):
  """What the loss takes as ``ids``: None, ``batch[id_key]``, or the tuple of
  the arrays of a tuple of keys (finest label level first)."""
  if id_key is None:
    return None
  if isinstance(id_key, str):
    return batch[id_key]
  return tuple(batch[k] for k in id_key)


def make_train_step(config, *, objective, tx, schedule, mesh, mean, std) -> Callable:
  """The jitted ``train_step(state, batch) -> (state, metrics)`` (state donated).

  ``mean``/``std``: the dataset's channel statistics (view normalisation).
  """
  sharding = batch_sharded(mesh)
  id_keys = id_keys_of(objective)
  step = functools.partial(device_step, objective=objective, tx=tx, schedule=schedule,
                           global_scope=config.loss_scope == "global")
  sharded_step = jax.shard_map(
      step, mesh=mesh, in_specs=(P(), P(DATA_AXIS), P(DATA_AXIS), P(DATA_AXIS)),
      out_specs=(P(), P()), check_vma=False)

  @functools.partial(jax.jit, donate_argnums=0)
  def train_step(state, batch):
    key = jax.random.fold_in(state.rng, state.step)
    images = lax.with_sharding_constraint(batch["image"], sharding)
    views1, views2 = augment.two_views(key, images, policy=config.augmentation,
                                       mean=mean, std=std, out_size=config.image_size)
    ids = batch_ids(batch, objective.id_key)
    constrain = lambda x: jax.tree.map(lambda a: lax.with_sharding_constraint(a, sharding), x)
    return sharded_step(state, constrain(views1), constrain(views2), constrain(ids))

  def checked_train_step(state, batch):
    missing = [k for k in id_keys if k not in batch]
    if missing:
      raise KeyError(f"with config.target={config.target!r} the batch needs "
                     f"{', '.join(repr(k) for k in missing)} ids beside 'image'")
    return train_step(state, batch)

  checked_train_step.lower = train_step.lower  # ahead-of-time compilation
  return checked_train_step
