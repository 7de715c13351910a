"""Data-parallel contrastive pre-training (in the style of Flax's ImageNet example).

One jitted step does everything for a global batch: gather the batch from the
device-resident uint8 train split (``gca_jax.data.feed``), augment both views
(``gca_jax.data.augment``), and run `train_step` under `jax.shard_map` over a
one-axis device mesh (``"data"``) spanning every device of every process:

* batch-norm statistics are averaged over all devices (synchronised BN);
* with ``config.loss_scope == "global"`` the embeddings of all devices are
  all-gathered (tiled) so the loss -- and its transport plan -- sees the whole
  global batch, exactly as on one device; ``"local"`` keeps one plan per
  device on its own rows (cheaper, but a different objective);
* gradients are averaged over devices with ``lax.pmean``;
* with ``config.target`` ``"domain"`` or ``"class"`` the step also takes the
  batch's per-example ids (domains or class labels, gathered like the
  embeddings with the global scope) and gives the loss the target plan of
  the batch (`gca_jax.losses.domain_target` / ``class_target``); with the
  default ``"pairs"`` the step takes no ids and its program is unchanged.

Gradient bookkeeping: the shard_map runs with ``check_vma=False`` (pmap
semantics), where each device differentiates its own copy of the objective
and collectives transpose as in pmap (all_gather -> psum_scatter, psum ->
psum). The device gradients then sum to the gradient of ``sum_d L_d``; with
the global scope every ``L_d`` is the same global loss, so ``pmean`` gives
exactly the single-device gradient, and with the local scope it gives the
gradient of the mean of the per-device losses.

The same program runs on several hosts after ``jax.distributed.initialize``:
every process holds the whole train split (replicated), computes the same
global batch indices, and the jitted step partitions the work.

Datasets whose train split is too large for device memory (``LazyImages``:
ImageNet-100, PACS at full size, large image folders) are fed from the host
instead: a grain loader (``gca_jax.data.host_feed``) decodes and centre-crops
each process's rows of the global batch, they become one uint8 array
sharded along the batch axis, and the same jitted step
(`StepFunctions.on_images`) augments both views on the device and trains
(``on_split`` differs only in gathering that batch from device memory).
Its batches are those of the device-fed path (the same per-epoch
permutation, `gca_jax.data.feed.batch_indices`), so the data position is the
step and ``--resume`` reads exactly the batches the interrupted run would
have read; the kNN monitor and the linear probe embed such splits batch by batch from a
host loader too.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import time
from pathlib import Path
from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from gca_jax import checkpointing, evaluation, losses, metrics, models, optimizers
from gca_jax.data import augment, feed, host_feed
from gca_jax.data.feed import FeedState

DATA_AXIS = "data"
BYOL = "byol"
REFERENCE_PREFIX = "reference/"
TARGETS = ("pairs", "domain", "class")


class ConfigError(ValueError):
  """The config asks for something that cannot run (one-line message)."""


class TrainState(flax.struct.PyTreeNode):
  """Everything a step reads and writes; all of it is checkpointed."""

  step: jax.Array            # global step (int32)
  params: Any
  batch_stats: Any
  opt_state: Any
  target_params: Any         # BYOL EMA target ({} for contrastive losses)
  target_batch_stats: Any
  rng: jax.Array             # base key of the augmentations (uint32[2])


# ---------------------------------------------------------------------------
# Setup.


def make_mesh(devices=None) -> Mesh:
  """A 1-D data-parallel mesh over ``devices`` (default: all, all hosts)."""
  devices = jax.devices() if devices is None else devices
  return Mesh(np.asarray(devices), (DATA_AXIS,))


def uses_byol(config) -> bool:
  return config.loss == BYOL


# config.loss_params names of gca_jax.losses passed to the published-code
# presets of gca_jax.reference under their names there.
REFERENCE_PARAM_NAMES = {"rho_a": "relax1", "rho_b": "relax2", "w_ce": "r1",
                         "w_rince": "r2"}


def loss_params_of(config) -> dict:
  """The set (not None) entries of ``config.loss_params``, as loss keywords."""
  params = {k: v for k, v in dict(config.loss_params).items() if v is not None}
  if not config.loss.startswith(REFERENCE_PREFIX):
    return params
  from gca_jax import reference  # pylint: disable=g-import-not-at-top
  mapped = {}
  for name, value in params.items():
    target = REFERENCE_PARAM_NAMES.get(name, name)
    if target not in reference.PARAMS:
      raise ConfigError(f"loss {config.loss!r} does not take parameter {name!r} "
                        f"(it takes {', '.join(reference.PARAMS)})")
    if target in mapped:
      raise ConfigError(f"loss {config.loss!r}: parameter {target!r} is set twice "
                        f"(as {name!r} too)")
    mapped[target] = value
  return mapped


def _unexpected_keyword(error: TypeError) -> str | None:
  import re  # pylint: disable=g-import-not-at-top
  match = re.search(r"unexpected keyword argument '(\w+)'", str(error))
  return match[1] if match else None


def target_of(config) -> str:
  """``config.target`` ("pairs" for configs written before it existed)."""
  return config.get("target", "pairs")


def uses_target(config) -> bool:
  """Whether the step takes per-example ids to build a target plan."""
  return target_of(config) != "pairs"


def make_target_fn(config) -> Callable[[jax.Array], jax.Array]:
  """``target_fn(ids) -> (N, N)`` target plan of ``config.target`` from the
  ``(B,)`` ids (domains or class labels) of the batch the loss sees."""
  pairing = loss_params_of(config).get("pairing", "joint")
  if target_of(config) == "domain":
    alpha = float(config.get("target_alpha", 0.0))
    beta = float(config.get("target_beta", 0.0))
    return lambda ids: losses.domain_target(ids, alpha, beta, pairing=pairing)
  return lambda ids: losses.class_target(ids, pairing=pairing)


def target_ids(config, split) -> np.ndarray:
  """The int32 per-example ids of ``split`` the target of ``config`` is built
  from: its domains ("domain") or class labels ("class")."""
  if target_of(config) == "domain":
    if split.domains is None:
      raise ConfigError(f"config.target='domain' needs a dataset with domains; "
                        f"{config.dataset!r} has none")
    return np.asarray(split.domains, np.int32)
  return np.asarray(split.labels, np.int32)


def make_loss_fn(config) -> Callable[..., tuple[jax.Array, dict]]:
  """``loss_fn(z1, z2, target=None) -> (loss, scalar diagnostics)`` for
  ``config.loss``; a given ``target`` (an ``(N, N)`` plan) is passed as the
  loss's ``target=`` (None: the loss's default, the "pairs" target).

  Names of `gca_jax.losses` report their plan diagnostics; the published-code
  presets (``"reference/<name>"``) report none and take no target. Only the
  set (not None) entries of ``config.loss_params`` are passed (see
  `loss_params_of`).
  """
  params = loss_params_of(config)
  if config.loss.startswith(REFERENCE_PREFIX):
    from gca_jax import reference  # pylint: disable=g-import-not-at-top
    preset = config.loss[len(REFERENCE_PREFIX):]
    if preset not in reference.NAMES:
      raise ConfigError(f"unknown reference loss {preset!r}; choose one of "
                        f"{', '.join(reference.NAMES)}")
    return lambda z1, z2, target=None: (reference.loss(preset, z1, z2, **params), {})
  try:
    loss = losses.get(config.loss)
  except ValueError as e:
    raise ConfigError(str(e)) from None

  def loss_fn(z1, z2, target=None):
    kwargs = {} if target is None else {"target": target}
    value, aux = loss(z1, z2, return_aux=True, **kwargs, **params)
    return value, scalar_diagnostics(aux)

  return loss_fn


def check_loss(config) -> None:
  """Traces the loss once on small abstract inputs (no computation), so that
  bad parameters (unknown names, eps <= 0, ...) are a one-line ConfigError."""
  loss_fn = make_loss_fn(config)
  z = jax.ShapeDtypeStruct((4, config.model.projection_dim), jnp.float32)
  if uses_target(config):
    target_fn = make_target_fn(config)
    traced = lambda z1, z2: loss_fn(z1, z2, target_fn(jnp.zeros((4,), jnp.int32)))
  else:
    traced = loss_fn
  try:
    jax.eval_shape(traced, z, z)
  except TypeError as e:
    name = _unexpected_keyword(e)
    if name is None:
      raise ConfigError(f"loss {config.loss!r}: {e}") from None
    raise ConfigError(f"loss {config.loss!r} does not take parameter {name!r}") from None
  except ValueError as e:
    raise ConfigError(f"loss {config.loss!r}: {e}") from None


def scalar_diagnostics(aux) -> dict[str, jax.Array]:
  """The scalar fields of a loss's aux (vectors: their last entry, e.g. the
  marginal error after the final Sinkhorn iteration); matrices are dropped."""
  fields = dataclasses.asdict(aux) if dataclasses.is_dataclass(aux) else dict(aux)
  out = {}
  for name, value in fields.items():
    value = jnp.asarray(value)
    if value.ndim <= 1 and value.size:
      out[name] = value.reshape(-1)[-1].astype(jnp.float32)
  return out


def validate_config(config, num_devices: int) -> None:
  """Raises ConfigError for settings that cannot run."""
  if config.loss_scope not in ("global", "local"):
    raise ConfigError(f"config.loss_scope must be 'global' or 'local', got "
                      f"{config.loss_scope!r}")
  validate_target(config)
  if config.batch_size % num_devices:
    raise ConfigError(f"config.batch_size={config.batch_size} is not divisible "
                      f"by the {num_devices} devices")
  if config.optimizer not in ("sgd", "adam", "lars"):
    raise ConfigError(f"config.optimizer must be sgd, adam or lars, got "
                      f"{config.optimizer!r}")
  if config.augmentation not in augment.POLICIES:
    raise ConfigError(f"config.augmentation must be one of {augment.POLICIES}, "
                      f"got {config.augmentation!r}")
  for name in ("epochs", "log_every_steps", "checkpoint_every_epochs"):
    value = config[name]
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
      raise ConfigError(f"config.{name} must be an integer >= 1, got {value!r}")
  try:
    create_models(config)
  except (TypeError, ValueError) as e:
    raise ConfigError(f"config.model: {e}") from None
  if not isinstance(config.model.projection_dim, int) or config.model.projection_dim < 1:
    raise ConfigError(f"config.model.projection_dim must be an integer >= 1, got "
                      f"{config.model.projection_dim!r}")
  if not uses_byol(config):  # BYOL takes no loss parameters (ignores loss_params)
    check_loss(config)


def validate_target(config) -> None:
  """Raises ConfigError for an unusable ``config.target`` (see configs.py)."""
  target = target_of(config)
  if target not in TARGETS:
    raise ConfigError(f"config.target must be one of {', '.join(TARGETS)}, got "
                      f"{target!r}")
  if target == "pairs":
    return
  if uses_byol(config) or config.loss.startswith(REFERENCE_PREFIX):
    raise ConfigError(f"loss {config.loss!r} takes no target plan; config.target "
                      f"must be 'pairs', got {target!r}")
  if target == "domain":
    for name in ("target_alpha", "target_beta"):
      value = config.get(name, 0.0)
      if (isinstance(value, bool) or not isinstance(value, (int, float))
          or not value >= 0 or not np.isfinite(value)):
        raise ConfigError(f"config.{name} must be a finite number >= 0, got {value!r}")


def check_dataset(config, dataset) -> None:
  """Raises ConfigError if ``dataset`` lacks what ``config`` needs."""
  if target_of(config) == "domain" and dataset.train.domains is None:
    raise ConfigError(f"config.target='domain' needs a dataset with domains; "
                      f"{config.dataset!r} has none")


def create_models(config):
  """(online model, EMA target model or None); BN synchronised over DATA_AXIS."""
  model = models.create_model(config.model, with_predictor=uses_byol(config),
                              bn_axis_name=DATA_AXIS)
  target = (models.create_model(config.model, bn_axis_name=DATA_AXIS)
            if uses_byol(config) else None)
  return model, target


def create_train_state(config, model, tx, image_shape, mesh) -> TrainState:
  """Initial state, replicated over the mesh (deterministic in config.seed)."""

  # Runs once: compile it unoptimised. On CPU that is ~10x faster to compile
  # (one threefry sampler per parameter) and costs nothing at run time.
  fast_compile = ({"xla_backend_optimization_level": 0}
                  if jax.default_backend() == "cpu" else None)

  @functools.partial(jax.jit, out_shardings=NamedSharding(mesh, P()),
                     compiler_options=fast_compile)
  def init():
    init_key, augment_key = jax.random.split(jax.random.PRNGKey(config.seed))
    variables = model.init(init_key, jnp.zeros((2, *image_shape), jnp.float32),
                           train=False)
    params, batch_stats = variables["params"], variables["batch_stats"]
    byol = uses_byol(config)
    return TrainState(
        step=jnp.zeros((), jnp.int32), params=params, batch_stats=batch_stats,
        opt_state=tx.init(params),
        target_params=models.target_subtree(params) if byol else {},
        target_batch_stats=models.target_subtree(batch_stats) if byol else {},
        rng=augment_key)

  return init()


# ---------------------------------------------------------------------------
# The step.


def train_step(state: TrainState, views1, views2, ids=None, *, model, target_model,
               tx, schedule, loss_fn, config, target_fn=None):
  """One optimisation step on this device's rows (runs inside shard_map).

  ``views1[k]``/``views2[k]`` are the two augmentations of example k, and
  ``ids[k]`` (if given) its domain or class: the loss then gets the target
  ``target_fn(ids of the rows it sees)`` (the global batch with the global
  scope). Returns the new state and device-averaged metrics.
  """
  global_scope = config.loss_scope == "global"

  def gather(x):  # this device's rows -> the global batch (global scope)
    return lax.all_gather(x, DATA_AXIS, tiled=True) if global_scope else x

  plan = None if ids is None else target_fn(gather(ids))
  both_views = jnp.concatenate([views1, views2])
  if target_model is not None:
    target_out, target_vars = target_model.apply(
        {"params": state.target_params, "batch_stats": state.target_batch_stats},
        both_views, train=True, mutable=["batch_stats"])
    targets = jnp.split(lax.stop_gradient(target_out.projection), 2)

  def objective(params):
    out, new_vars = model.apply({"params": params, "batch_stats": state.batch_stats},
                                both_views, train=True, mutable=["batch_stats"])
    z1, z2 = (gather(z) for z in jnp.split(out.projection, 2))
    if target_model is not None:
      p1, p2 = (gather(p) for p in jnp.split(out.prediction, 2))
      loss, diagnostics = losses.byol(p1, p2, *(gather(t) for t in targets)), {}
    else:
      loss, diagnostics = loss_fn(z1, z2) if plan is None else loss_fn(z1, z2, plan)
    return loss, (new_vars["batch_stats"], diagnostics, z1, z2)

  (loss, (batch_stats, diagnostics, z1, z2)), grads = jax.value_and_grad(
      objective, has_aux=True)(state.params)
  grads = lax.pmean(grads, DATA_AXIS)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)

  new_state = state.replace(step=state.step + 1, params=params,
                            batch_stats=batch_stats, opt_state=opt_state)
  if target_model is not None:
    # BYOL: a constant config.ema_decay (not BYOL's cosine 0.996 -> 1 schedule),
    # and the two views are the symmetric ones of config.augmentation.
    new_state = new_state.replace(
        target_params=models.ema_update(state.target_params, params, config.ema_decay),
        target_batch_stats=target_vars["batch_stats"])

  z1, z2 = lax.stop_gradient(z1), lax.stop_gradient(z2)
  step_metrics = {
      "loss": loss,
      "alignment": metrics.alignment(z1, z2),
      "uniformity": metrics.uniformity(jnp.concatenate([z1, z2])),
      "grad_norm": optax.tree.norm(grads),
      "learning_rate": schedule(state.step),
      **diagnostics,
  }
  return new_state, lax.pmean(step_metrics, DATA_AXIS)


@dataclasses.dataclass(frozen=True)
class StepFunctions:
  """The jitted steps built by `make_train_step`.

  on_views(state, views1, views2): the sharded step on given (global) views.
  on_images(state, images_uint8): augments a global uint8 batch, then steps.
  on_split(state, train_images): gathers the batch of ``state.step`` from the
    device-resident train split (shuffled per epoch), augments, steps.

  With a target (``config.target`` not "pairs") each takes one more
  argument, the int32 ids (`target_ids`) of its examples: ``ids`` of the
  batch for on_views / on_images, those of the whole train split for
  on_split (gathered with the images).
  """

  on_views: Callable
  on_images: Callable
  on_split: Callable


def make_train_step(config, *, model, target_model, tx, schedule, mesh,
                    mean, std, num_train: int, steps_per_epoch: int) -> StepFunctions:
  """Builds the jitted, device-sharded steps (see `StepFunctions`)."""
  data_sharding = NamedSharding(mesh, P(DATA_AXIS))
  num_ids = int(uses_target(config))  # extra per-example arguments (0 or 1)
  step = functools.partial(train_step, model=model, target_model=target_model,
                           tx=tx, schedule=schedule, loss_fn=make_loss_fn(config)
                           if not uses_byol(config) else None, config=config,
                           target_fn=make_target_fn(config) if num_ids else None)
  sharded_step = jax.shard_map(
      step, mesh=mesh, in_specs=(P(),) + (P(DATA_AXIS),) * (2 + num_ids),
      out_specs=(P(), P()), check_vma=False)

  def check_ids(ids):
    if len(ids) != num_ids:
      raise TypeError(f"with config.target={target_of(config)!r} the step takes "
                      f"{num_ids} id argument(s), got {len(ids)}")

  def sharded(state, views1, views2, *ids):
    check_ids(ids)
    return sharded_step(state, views1, views2, *ids)

  def on_images(state, images_uint8, *ids):
    check_ids(ids)
    key = jax.random.fold_in(state.rng, state.step)
    images_uint8 = lax.with_sharding_constraint(images_uint8, data_sharding)
    views1, views2 = augment.two_views(key, images_uint8, policy=config.augmentation,
                                       mean=mean, std=std, out_size=config.image_size)
    return sharded(state, *(lax.with_sharding_constraint(v, data_sharding)
                            for v in (views1, views2, *ids)))

  def on_split(state, train_images, *train_ids):
    check_ids(train_ids)
    epoch, step_in_epoch = jnp.divmod(state.step, steps_per_epoch)
    indices = feed.batch_indices(config.seed, epoch, step_in_epoch,
                                 config.batch_size, num_train)
    return on_images(state, train_images[indices], *(ids[indices] for ids in train_ids))

  jit = functools.partial(jax.jit, donate_argnums=0)
  return StepFunctions(jit(sharded), jit(on_images), jit(on_split))


# ---------------------------------------------------------------------------
# The training loop.


def load_data(config):
  """The dataset of ``config`` (raises gca_jax.data.DatasetError if missing)."""
  from gca_jax import data  # pylint: disable=g-import-not-at-top
  return data.load_dataset(config.dataset, data_dir=config.data_dir,
                           split_seed=config.split_seed, image_size=config.load_size)


def image_shape_of(config, dataset) -> tuple[int, int, int]:
  h, w, c = dataset.image_shape
  size = config.image_size
  return (size, size, c) if size else (h, w, c)


class MetricWriter:
  """TensorBoard scalars (tensorboardX) on process 0; no-op elsewhere."""

  def __init__(self, workdir):
    self._writer = None
    if jax.process_index() == 0:
      from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
      self._writer = SummaryWriter(str(Path(workdir) / "tensorboard"))

  def write(self, step: int, scalars: dict) -> None:
    if self._writer:
      for name, value in scalars.items():
        self._writer.add_scalar(name, float(value), step)
      self._writer.flush()

  def close(self):
    if self._writer:
      self._writer.close()


def data_workers(config) -> int:
  """grain worker processes of host-fed runs (``config.data_workers``, default 0:
  decoding in grain's reader threads of the training process)."""
  return int(config.data_workers or 0)


def make_host_loader(config, split, start_step: int = 0):
  """The grain loader of a host-fed train split: this process's uint8 rows of
  the global batches of steps ``start_step`` .. ``config.epochs`` epochs.

  The batches are those the device-fed path gathers (`feed.batch_indices`
  of ``config.seed``, epoch and step), so the train state's step is the data
  position: a resumed run starts the loader at its restored step.
  """
  try:
    total = config.epochs * feed.steps_per_epoch(len(split), config.batch_size)
    return host_feed.make_loader(split, global_batch_size=config.batch_size,
                                 seed=config.seed, start_step=start_step,
                                 num_steps=total - start_step,
                                 worker_count=data_workers(config))
  except ValueError as e:
    raise ConfigError(str(e)) from None


def embed_host_split(embed, variables, split, mesh, *, batch_size: int = 512,
                     worker_count: int = 0):
  """(features, projections) as numpy of a split too large for memory.

  As `evaluation.embed_split`, with the images decoded batch by batch by a
  grain loader; each process decodes only its rows of every batch.
  """
  data_sharding = NamedSharding(mesh, P(mesh.axis_names[0]))
  batch_size = evaluation.eval_batch_size(batch_size, mesh.devices.size)
  loader = host_feed.process_eval_loader(split, global_batch_size=batch_size,
                                         worker_count=worker_count)
  return evaluation.embed_batches(
      embed, variables, (batch["image"] for batch in loader), len(split),
      lambda images: host_feed.to_global_array(images, data_sharding))


def embed_images(config, embed, variables, split, mesh):
  """Encoder features of a split: from memory, or from a host loader if lazy."""
  if split.in_memory or not len(split):
    return evaluation.embed_split(embed, variables, split.images, mesh)
  return embed_host_split(embed, variables, split, mesh,
                          worker_count=data_workers(config))


def evaluate_encoder(config, embed, variables, dataset, mesh, *, probe: bool) -> dict:
  """kNN accuracy (and linear-probe accuracy if ``probe``) of an encoder."""
  train_h, _ = embed_images(config, embed, variables, dataset.train, mesh)
  test_h, _ = embed_images(config, embed, variables, dataset.test, mesh)
  result = {"knn_acc": evaluation.knn_accuracy(
      train_h, dataset.train.labels, test_h, dataset.test.labels,
      dataset.num_classes, k=config.knn_k, temperature=config.knn_temperature)}
  if probe:
    result["linear_probe_acc"] = evaluation.linear_probe(
        train_h, dataset.train.labels, test_h, dataset.test.labels,
        dataset.num_classes, steps=config.linear_probe_steps,
        learning_rate=config.linear_probe_learning_rate,
        weight_decay=config.linear_probe_weight_decay)
  return result


def variables_of(state: TrainState) -> dict:
  return {"params": state.params, "batch_stats": state.batch_stats}


@dataclasses.dataclass(frozen=True)
class Setup:
  """What a run derives from its config and dataset."""

  mesh: Mesh
  model: Any
  target_model: Any
  tx: optax.GradientTransformation
  schedule: optax.Schedule
  steps_per_epoch: int
  image_shape: tuple[int, int, int]

  def initial_state(self, config) -> TrainState:
    return create_train_state(config, self.model, self.tx, self.image_shape, self.mesh)


def setup(config, dataset, mesh=None) -> Setup:
  mesh = make_mesh() if mesh is None else mesh
  validate_config(config, mesh.devices.size)
  check_dataset(config, dataset)
  try:
    steps_per_epoch = feed.steps_per_epoch(len(dataset.train), config.batch_size)
  except ValueError as e:
    raise ConfigError(str(e)) from None
  model, target_model = create_models(config)
  return Setup(mesh, model, target_model,
               optimizers.make_optimizer(config, steps_per_epoch),
               optimizers.make_schedule(config, steps_per_epoch),
               steps_per_epoch, image_shape_of(config, dataset))


def load_trained(workdir: str | Path, dataset=None):
  """(config, dataset, setup, state) of the latest checkpoint in ``workdir``
  (``dataset``: the run's dataset if given, else loaded from its config)."""
  import ml_collections  # pylint: disable=g-import-not-at-top
  stored = checkpointing.read_config_json(workdir)
  if stored is None or not Path(workdir).is_dir():
    raise checkpointing.RunMismatchError(f"no checkpoint in {workdir}")
  checkpointer = checkpointing.Checkpointer(workdir, create=False)
  if checkpointer.latest_step() is None:
    checkpointer.close()
    raise checkpointing.RunMismatchError(f"no checkpoint in {workdir}")
  config = ml_collections.ConfigDict(stored)
  dataset = load_data(config) if dataset is None else dataset
  run = setup(config, dataset)
  state, _ = checkpointer.restore(run.initial_state(config))
  checkpointer.close()
  return config, dataset, run, state


def train_and_evaluate(config, workdir: str | Path, *, resume: bool = False,
                       dataset=None) -> dict:
  """Pre-trains per ``config`` in ``workdir``; returns (and writes) metrics.json.

  ``dataset`` is the data to train and evaluate on (default: `load_data` of
  ``config``; e.g. a restyled copy for a synthetic experiment).

  metrics.json: ``epochs``, ``steps``, ``final_loss`` (mean over the last
  epoch trained), ``images_per_second`` (source images, i.e. pairs of
  augmented views, per second of training; the encoder sees twice as many
  views), ``train_seconds``, the other ``final_<metric>`` epoch means and the
  evaluation accuracies; a value that could not be measured is null.

  Resuming (``resume=True``) a checkpoint that is already at or after the
  last epoch to train trains nothing and leaves metrics.json as it is; it
  returns that metrics.json's contents with ``"already_complete": True``.

  Raises ConfigError, checkpointing.RunMismatchError or
  gca_jax.data.DatasetError with a one-line message for unusable inputs.
  """
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top

  workdir = Path(workdir)
  validate_config(config, jax.device_count())  # before a long dataset load
  checkpointer = checkpointing.Checkpointer(workdir, max_to_keep=config.max_checkpoints,
                                            create=False)
  latest = checkpointer.latest_step()
  if latest is None and resume:
    checkpointer.close()
    raise checkpointing.RunMismatchError(f"no checkpoint to resume in {workdir}")
  if latest is not None:
    checkpointing.check_run_identity(workdir, config)
    if not resume:
      checkpointer.close()
      raise checkpointing.RunMismatchError(
          f"workdir {workdir} already holds a checkpoint (step {latest}); pass "
          "--resume to continue it or use a new --workdir")
    saved_epoch = int(checkpointer.read_feed(latest)["epoch"])
    if saved_epoch >= min(config.epochs, config.stop_after_epoch or config.epochs):
      checkpointer.close()
      return _already_complete(config, workdir, saved_epoch)
  dataset = load_data(config) if dataset is None else dataset
  run = setup(config, dataset)
  if latest is None:  # the run's identity, once its data and model are set up
    checkpointing.write_config_json(workdir, config)
  mesh, steps_per_epoch = run.mesh, run.steps_per_epoch
  state = run.initial_state(config)
  position = FeedState(0, 0)
  log = functools.partial(print, flush=True) if jax.process_index() == 0 else (
      lambda *_: None)
  host_fed = not dataset.train.in_memory
  if latest is not None:
    state, saved = checkpointer.restore(state)
    position = FeedState(saved["epoch"], saved["step"])
    assert int(state.step) == position.epoch * steps_per_epoch + position.step
    log(f"resuming from step {latest} (epoch {position.epoch})")

  steps = make_train_step(config, model=run.model, target_model=run.target_model,
                          tx=run.tx, schedule=run.schedule, mesh=mesh,
                          mean=dataset.mean, std=dataset.std,
                          num_train=len(dataset.train), steps_per_epoch=steps_per_epoch)
  data_iterator = None
  # Per-example ids of the train split for the target plan (none for "pairs").
  split_ids = target_ids(config, dataset.train) if uses_target(config) else None
  if host_fed:
    # The batches of steps state.step onwards: the step is the data position.
    data_iterator = iter(make_host_loader(config, dataset.train, int(state.step)))
    batch_sharding = NamedSharding(mesh, P(DATA_AXIS))

    def train_one_step(state):
      batch = next(data_iterator)  # decoded while the device steps
      ids = () if split_ids is None else (
          host_feed.to_global_array(split_ids[batch["index"]], batch_sharding),)
      return steps.on_images(
          state, host_feed.to_global_array(batch["image"], batch_sharding), *ids)
  else:
    replicated = NamedSharding(mesh, P())
    train_images = evaluation.global_array(dataset.train.images, replicated)
    train_ids = () if split_ids is None else (
        evaluation.global_array(split_ids, replicated),)

    def train_one_step(state):
      return steps.on_split(state, train_images, *train_ids)

  embed = evaluation.make_embed_fn(run.model, mesh, mean=dataset.mean,
                                   std=dataset.std, image_size=config.image_size)
  writer = MetricWriter(workdir)
  last_epoch = config.epochs
  if config.stop_after_epoch:
    last_epoch = min(last_epoch, config.stop_after_epoch)
  progress = tqdm(total=config.epochs * steps_per_epoch, initial=int(state.step),
                  unit="step", dynamic_ncols=True,
                  disable=not config.progress_bar or jax.process_index() != 0)
  train_seconds, timed_steps, first_step = 0.0, 0, True
  epoch_summary, evaluation_result = {}, {}
  while position.epoch < last_epoch:
    progress.set_description(f"epoch {position.epoch + 1}/{config.epochs}")
    epoch_metrics, tick = [], time.perf_counter()
    for _ in range(position.step, steps_per_epoch):
      state, step_metrics = train_one_step(state)
      epoch_metrics.append(step_metrics)
      if first_step:  # exclude compilation from the throughput
        jax.block_until_ready(step_metrics)
        first_step, tick = False, time.perf_counter()
      else:
        timed_steps += 1
      progress.update()
      if len(epoch_metrics) % config.log_every_steps == 0:
        loss = float(step_metrics["loss"])  # waits for the step
        rate = timed_steps * config.batch_size / max(  # source images (pairs)
            train_seconds + time.perf_counter() - tick, 1e-9)
        progress.set_postfix(loss=f"{loss:.4f}", src_img_per_s=f"{rate:.0f}")
    jax.block_until_ready(state)
    train_seconds += time.perf_counter() - tick
    position = FeedState(position.epoch + 1, 0)
    step = int(state.step)

    if epoch_metrics:
      fetched = jax.device_get(epoch_metrics)
      epoch_summary = {k: float(np.mean([m[k] for m in fetched])) for k in fetched[0]}
      writer.write(step, {f"train/{k}": v for k, v in epoch_summary.items()})
    finished = position.epoch == config.epochs
    probe = finished and config.linear_probe
    if probe or (config.eval_every_epochs
                 and position.epoch % config.eval_every_epochs == 0):
      evaluation_result = evaluate_encoder(config, embed, variables_of(state),
                                           dataset, mesh, probe=probe)
      writer.write(step, {f"eval/{k}": v for k, v in evaluation_result.items()})
      progress.write(f"epoch {position.epoch}: " + ", ".join(
          f"{k} {v:.4f}" for k, v in evaluation_result.items()))
    if position.epoch == last_epoch or position.epoch % config.checkpoint_every_epochs == 0:
      checkpointer.save(state, position)
  progress.close()
  if data_iterator is not None:
    host_feed.close_iterator(data_iterator)

  result = {
      "epochs": position.epoch,
      "steps": int(state.step),
      "final_loss": epoch_summary.get("loss"),
      # Source images (pairs of views) per second, compilation excluded.
      "images_per_second": (timed_steps * config.batch_size / train_seconds
                            if timed_steps else None),
      "train_seconds": train_seconds,
      **{f"final_{k}": v for k, v in epoch_summary.items() if k != "loss"},
      **evaluation_result,
  }
  if "linear_probe_acc" in result and config.probe_random_init:
    random_init = evaluate_encoder(config, embed, variables_of(run.initial_state(config)),
                                   dataset, mesh, probe=True)
    result.update({f"random_init_{k}": v for k, v in random_init.items()})
    writer.write(int(state.step), {f"eval/random_init_{k}": v
                                   for k, v in random_init.items()})
  checkpointer.close()
  writer.close()
  result = {k: _finite_or_none(v) for k, v in result.items()}
  if jax.process_index() == 0:
    (workdir / "metrics.json").write_text(json.dumps(result, indent=2, allow_nan=False))
  return result


def _finite_or_none(value):
  """JSON has no NaN/inf: a non-finite float becomes None (null)."""
  if isinstance(value, float) and not np.isfinite(value):
    return None
  return value


def _already_complete(config, workdir: Path, saved_epoch: int) -> dict:
  """What resuming a checkpoint with nothing left to train returns (see
  `train_and_evaluate`); metrics.json is left as it is."""
  path = workdir / "metrics.json"
  if jax.process_index() == 0:
    if saved_epoch >= config.epochs:
      print(f"run already complete: {path}", flush=True)
    else:
      print(f"nothing to train: the checkpoint is at epoch {saved_epoch} and "
            f"config.stop_after_epoch={config.stop_after_epoch}: {path}", flush=True)
  try:
    stored = json.loads(path.read_text())
  except (OSError, ValueError):
    stored = {}
  return {**stored, "already_complete": True}
