"""A config and a dataset made into a `Run`: what every training entry uses.

    run = setup(config, dataset)          # validates the config once
    state = run.initial_state()
    state, metrics = run.train_step(state, batch)
    features, projections = run.embed_fn(state.variables, images)

The trainer (`gca_jax.training.loop`), the tests, benchmarks, notebooks and
experiments all build their steps this way. The trainer fails as it builds:
`validate` checks every field's rule, builds the objective (the loss, its
target plan and the model) and traces it once on abstract inputs, before any
data is loaded; the `Run` then takes that objective.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from gca_jax import evaluation, sharding
from gca_jax.data import augment, order
from gca_jax.training import config as config_lib
from gca_jax.training import objectives, optimizers, step
from gca_jax.training.config import ConfigError
from gca_jax.training.state import TrainState


@dataclasses.dataclass(frozen=True)
class Run:
  """What a run derives from its config and dataset (``run.config`` and
  ``run.dataset`` are those it was set up with)."""

  config: Any
  dataset: Any
  mesh: Mesh
  objective: Any
  tx: optax.GradientTransformation
  schedule: optax.Schedule
  steps_per_epoch: int
  image_shape: tuple[int, int, int]   # of the model's input views

  @property
  def model(self):
    return self.objective.model

  @property
  def mean(self) -> tuple[float, ...]:
    return tuple(self.dataset.mean)

  @property
  def std(self) -> tuple[float, ...]:
    return tuple(self.dataset.std)

  def initial_state(self) -> TrainState:
    """The initial state, replicated over the mesh (deterministic in the seed)."""
    return _init_fn(self)()

  @functools.cached_property
  def train_step(self) -> Callable:
    """The jitted ``train_step(state, batch) -> (state, metrics)``."""
    return step.make_train_step(self.config, objective=self.objective, tx=self.tx,
                                schedule=self.schedule, mesh=self.mesh,
                                mean=self.mean, std=self.std)

  @functools.cached_property
  def embed_fn(self) -> Callable:
    """The jitted ``embed_fn(variables, images_uint8) -> (features,
    projections)`` of the run's model (`gca_jax.evaluation.make_embed_fn`)."""
    return evaluation.make_embed_fn(self.model, self.mesh, mean=self.mean, std=self.std,
                                    image_size=self.config.image_size)


def _init_fn(run: Run):
  # Runs once: compile it unoptimised. On CPU that is ~10x faster to compile
  # (one threefry sampler per parameter) and costs nothing at run time.
  fast_compile = ({"xla_backend_optimization_level": 0}
                  if jax.default_backend() == "cpu" else None)

  @functools.partial(jax.jit, out_shardings=sharding.replicated(run.mesh),
                     compiler_options=fast_compile)
  def init():
    init_key, augment_key = jax.random.split(jax.random.PRNGKey(run.config.seed))
    variables = run.model.init(init_key, jnp.zeros((2, *run.image_shape), jnp.float32),
                               train=False)
    params = variables["params"]
    return run.objective.create_state(params, variables["batch_stats"],
                                      run.tx.init(params), augment_key)

  return init


def validate(config, num_devices: int):
  """Raises a one-line ConfigError for any setting that cannot run; returns
  the objective it built (give it to `setup`, which then builds none).

  Checks every field's type and range, that the batch splits over the
  ``num_devices`` devices, the augmentation, the model, and the loss with its
  parameters and target (traced on small abstract inputs: nothing is
  computed). Needs no data.
  """
  config_lib.check_fields(config)
  if config.batch_size % num_devices:
    raise ConfigError(f"config.batch_size={config.batch_size} is not divisible "
                      f"by the {num_devices} devices")
  if config.augmentation not in augment.POLICIES:
    raise ConfigError(f"config.augmentation must be one of {', '.join(augment.POLICIES)}, "
                      f"got {config.augmentation!r}")
  objective = objectives.make_objective(config)
  objectives.trace(objective)
  return objective


def image_shape_of(config, dataset) -> tuple[int, int, int]:
  """Shape of the views the model sees (``config.image_size`` or the data's)."""
  h, w, c = dataset.image_shape
  size = config.image_size
  return (size, size, c) if size else (h, w, c)


def check_dataset(config, dataset) -> None:
  """Raises ConfigError if ``dataset`` lacks what ``config`` needs."""
  if config.target == "domain" and dataset.train.domains is None:
    raise ConfigError(f"config.target='domain' needs a dataset with domains; "
                      f"{config.dataset!r} has none")
  if config.target == "hierarchical" and dataset.train.coarse_labels is None:
    raise ConfigError(f"config.target='hierarchical' needs a dataset with coarse labels "
                      f"(e.g. cifar100); {config.dataset!r} has none")


def setup(config, dataset, mesh: Mesh | None = None, *, objective=None) -> Run:
  """Builds the `Run` of ``config`` on ``dataset`` and ``mesh`` (default: every
  device). ``objective``: what `validate` returned for this config and mesh
  (else the config is validated here)."""
  mesh = sharding.make_mesh() if mesh is None else mesh
  if objective is None:
    objective = validate(config, mesh.devices.size)
  check_dataset(config, dataset)
  try:
    steps_per_epoch = order.steps_per_epoch(len(dataset.train), config.batch_size)
  except ValueError as e:
    raise ConfigError(f"config.batch_size: {e}") from None
  return Run(config, dataset, mesh, objective,
             optimizers.make_optimizer(config, steps_per_epoch),
             optimizers.make_schedule(config, steps_per_epoch), steps_per_epoch,
             image_shape_of(config, dataset))
