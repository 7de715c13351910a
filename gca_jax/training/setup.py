"""A config and a dataset made into a `Run`: what every training entry uses.

    run = setup(config, dataset)          # validates the config once
    state = run.initial_state()
    state, metrics = run.train_step(state, batch)

The trainer (`gca_jax.training.loop`), the tests, benchmarks, notebooks and
experiments all build their steps this way.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from gca_jax import sharding
from gca_jax.data import feed
from gca_jax.training import config as config_lib
from gca_jax.training import objectives, optimizers, step
from gca_jax.training.state import TrainState


@dataclasses.dataclass(frozen=True)
class Run:
  """What a run derives from its config and dataset."""

  config: Any
  mesh: Mesh
  objective: Any
  tx: optax.GradientTransformation
  schedule: optax.Schedule
  steps_per_epoch: int
  image_shape: tuple[int, int, int]   # of the model's input views
  mean: tuple[float, ...]
  std: tuple[float, ...]

  @property
  def model(self):
    return self.objective.model

  def initial_state(self) -> TrainState:
    """The initial state, replicated over the mesh (deterministic in the seed)."""
    return _init_fn(self)()

  @functools.cached_property
  def train_step(self) -> Callable:
    """The jitted ``train_step(state, batch) -> (state, metrics)``."""
    return step.make_train_step(self.config, objective=self.objective, tx=self.tx,
                                schedule=self.schedule, mesh=self.mesh,
                                mean=self.mean, std=self.std)


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


def image_shape_of(config, dataset) -> tuple[int, int, int]:
  """Shape of the views the model sees (``config.image_size`` or the data's)."""
  h, w, c = dataset.image_shape
  size = config.image_size
  return (size, size, c) if size else (h, w, c)


def check_dataset(config, dataset) -> None:
  """Raises ConfigError if ``dataset`` lacks what ``config`` needs."""
  if config.target == "domain" and dataset.train.domains is None:
    raise config_lib.ConfigError(f"config.target='domain' needs a dataset with "
                                 f"domains; {config.dataset!r} has none")


def setup(config, dataset, mesh: Mesh | None = None, *, validated: bool = False) -> Run:
  """Validates ``config`` (unless the caller just did: ``validated``) against
  ``dataset`` and the mesh; builds the `Run`."""
  mesh = sharding.make_mesh() if mesh is None else mesh
  if not validated:
    config_lib.validate(config, mesh.devices.size)
  check_dataset(config, dataset)
  try:
    steps_per_epoch = feed.steps_per_epoch(len(dataset.train), config.batch_size)
  except ValueError as e:
    raise config_lib.ConfigError(f"config.batch_size: {e}") from None
  return Run(config, mesh, objectives.make_objective(config),
             optimizers.make_optimizer(config, steps_per_epoch),
             optimizers.make_schedule(config, steps_per_epoch), steps_per_epoch,
             image_shape_of(config, dataset), tuple(dataset.mean), tuple(dataset.std))
