"""Data-parallel pre-training, one job per module.

* `config`: the configs (`get_config`, the ``"small"`` variant, the paper's
  presets) and the rules of their fields (data only);
* `objectives`: what a step minimises (`Contrastive` over any loss of
  `gca_jax.losses`, `Byol`), selected from the config;
* `state`: `TrainState` (and BYOL's);
* `optimizers`: optax optimisers and schedules;
* `setup`: `validate` (the field rules, then the objective built and traced
  once) and a config and a dataset made into a `Run` (mesh, objective,
  optimiser, initial state, the jitted `train_step` and `embed_fn`);
* `step`: ``train_step(state, batch) -> (state, metrics)``, one `shard_map`;
* `feeds`: batches from a device-resident split or a host loader;
* `checkpoint`: orbax checkpoints with checksums, the run identity, the
  workdir lock;
* `reporting`: TensorBoard, text logs and the ``metrics.json`` history;
* `summary`: what a run trains, printed as it starts and kept as ``summary.txt``;
* `interrupts`: SIGTERM/SIGINT become a save and a clean stop (`gca_jax.stopping`);
* `loop`: `train_and_evaluate`, the whole run in named phases;
* `restore`: `load_trained`, a workdir's run and newest intact state.
"""

import gca_jax._train_extra  # noqa: F401  (without the train extra: one line naming it)
from gca_jax.training.checkpoint import RunMismatchError
from gca_jax.training.config import ConfigError, get_config
from gca_jax.training.loop import TrainingDiverged, train_and_evaluate
from gca_jax.training.restore import Trained, load_trained
from gca_jax.training.setup import Run, setup, validate
from gca_jax.training.state import ByolTrainState, TrainState

__all__ = [
    "ByolTrainState", "ConfigError", "Run", "RunMismatchError", "TrainState", "Trained",
    "TrainingDiverged", "get_config", "load_trained", "setup", "train_and_evaluate",
    "validate",
]
