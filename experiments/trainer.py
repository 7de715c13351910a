"""Every call the experiments make into gca_jax's training and evaluation APIs.

The experiments are thin layers over `gca_jax.training` (what ``python -m
gca_jax.pretrain`` runs), `gca_jax.evaluation` and `gca_jax.linear_eval`;
they reach those APIs only through this module, so a change of the library's
entry points is answered here once. What it holds: the smoke config, a
run's training, evaluation and workdir checks, and encoders (a trained or
freshly initialised model with its variables) with the embeddings and
linear probes the analyses compute from them.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Any


def small(config):
  """``config`` made tiny (`gca_jax.training.config.small`: digits, 1 epoch)."""
  from gca_jax.training import config as config_lib  # pylint: disable=g-import-not-at-top
  return config_lib.small(config)


def paper_cifar_config(data: str):
  """The paper's CIFAR-10 pre-training config on the dataset ``data``."""
  from gca_jax.training import config as config_lib  # pylint: disable=g-import-not-at-top
  return config_lib.paper_cifar_config(data)


def train_and_evaluate(config, workdir: Path, dataset=None) -> dict:
  """Trains ``config`` in ``workdir`` (continuing a checkpoint of the same
  run) with its end-of-run evaluations; returns the run's metrics."""
  from gca_jax import training  # pylint: disable=g-import-not-at-top
  return training.train_and_evaluate(config, Path(workdir), dataset=dataset).metrics


def evaluate(workdir: Path, protocol: str, **settings) -> dict:
  """`gca_jax.protocols.evaluate` of the run in ``workdir`` by ``protocol``
  (merged into its metrics.json); returns the protocol's results."""
  from gca_jax import protocols  # pylint: disable=g-import-not-at-top
  return protocols.evaluate(Path(workdir), protocol, **settings)


def holds_checkpoint(workdir: Path) -> bool:
  from gca_jax.training import checkpoint  # pylint: disable=g-import-not-at-top
  return checkpoint.holds_checkpoint(Path(workdir))


def check_workdir(workdir: Path, config) -> None:
  """Raises the library's WorkdirError if ``workdir`` holds a run other than
  ``config`` (e.g. one of other epochs): such a run is neither skipped nor
  continued."""
  from gca_jax.training import checkpoint  # pylint: disable=g-import-not-at-top
  if checkpoint.holds_checkpoint(Path(workdir)):
    checkpoint.check_run_identity(Path(workdir), config)


def write_json(path: Path, value) -> None:
  """The library's atomic JSON write (a killed process never leaves half a file)."""
  from gca_jax.training import checkpoint  # pylint: disable=g-import-not-at-top
  checkpoint.write_json(Path(path), value)


def metrics_file(workdir: Path):
  """The run's ``metrics.json`` (`read()`, `update(results, evaluations=...)`,
  under the trainer's lock)."""
  from gca_jax.training import reporting  # pylint: disable=g-import-not-at-top
  return reporting.MetricsFile(Path(workdir))


def load_data(config):
  """The dataset ``config`` trains on."""
  from gca_jax.training import feeds  # pylint: disable=g-import-not-at-top
  return feeds.load_data(config)


def class_balanced_subset(split, num_examples: int, seed: int):
  """``num_examples`` examples of ``split``, as equal per class as possible
  (`gca_jax.training.feeds.class_balanced_subset`, deterministic in ``seed``)."""
  from gca_jax.training import feeds  # pylint: disable=g-import-not-at-top
  return feeds.class_balanced_subset(split, num_examples, seed)


@dataclasses.dataclass
class Encoder:
  """A model with its variables, and the config/dataset/`Run` it belongs to."""

  config: Any
  dataset: Any
  run: Any              # gca_jax.training.Run
  variables: dict
  step: int = 0         # training steps behind ``variables``

  @functools.cached_property
  def embed_fn(self):
    """jitted ``(variables, images_uint8) -> (features, projections)``."""
    return self.run.embed_fn

  @property
  def steps_per_epoch(self) -> int:
    return self.run.steps_per_epoch

  def features(self, images) -> Any:
    """Encoder features (numpy) of uint8 images, in evaluation mode."""
    from gca_jax import evaluation  # pylint: disable=g-import-not-at-top
    features, _ = evaluation.embed_split(self.embed_fn, self.variables, images,
                                         self.run.mesh)
    return features

  def split_features(self, split) -> Any:
    """Encoder features (numpy) of a dataset split (in memory or lazy)."""
    from gca_jax import evaluation  # pylint: disable=g-import-not-at-top
    features, _ = evaluation.embed_any_split(self.embed_fn, self.variables, split,
                                             self.run.mesh,
                                             worker_count=self.config.data_workers)
    return features


def load_encoder(workdir: Path, dataset=None) -> Encoder:
  """The encoder of the latest checkpoint of a pre-training workdir
  (``dataset``: the run's data if it is not loadable from its config)."""
  from gca_jax.training import restore  # pylint: disable=g-import-not-at-top
  run, state = restore.load_trained(Path(workdir), dataset=dataset)
  return Encoder(run.config, run.dataset, run, state.variables, int(state.step))


def untrained_encoder(config, dataset=None) -> Encoder:
  """A freshly initialised encoder of ``config`` (seeded by config.seed)."""
  from gca_jax import training  # pylint: disable=g-import-not-at-top
  dataset = load_data(config) if dataset is None else dataset
  run = training.setup(config, dataset)
  return Encoder(config, dataset, run, run.initial_state().variables)


def embed_views(encoder: Encoder, images_uint8, *, seed: int = 0,
                policy: str = "simclr"):
  """Projections ``(z1, z2)`` of two augmented views of each image (eval mode)."""
  import jax  # pylint: disable=g-import-not-at-top
  from gca_jax.data import augment  # pylint: disable=g-import-not-at-top
  views = augment.two_views(jax.random.PRNGKey(seed), jax.numpy.asarray(images_uint8),
                            policy=policy, mean=encoder.dataset.mean,
                            std=encoder.dataset.std, out_size=encoder.config.image_size)
  apply = jax.jit(lambda v, x: encoder.run.model.apply(v, x, train=False).projection)
  return tuple(apply(encoder.variables, v) for v in views)


def probe_accuracy(encoder: Encoder, train_features, train_labels, test_features,
                   test_labels, num_classes: int) -> float:
  """Linear-probe test accuracy with the probe settings of the run's config."""
  from gca_jax import evaluation  # pylint: disable=g-import-not-at-top
  config = encoder.config
  return evaluation.linear_probe(
      train_features, train_labels, test_features, test_labels, num_classes,
      steps=config.linear_probe_steps, learning_rate=config.linear_probe_learning_rate,
      weight_decay=config.linear_probe_weight_decay)
