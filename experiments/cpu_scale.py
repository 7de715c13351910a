"""The CPU scale: the paper's CIFAR and digits setups made small enough for a 2-core CPU.

``--scale=cpu`` of `experiments.pacs_domains` and `experiments.table2`
applies these fields after the dataset's config and before the
``--config.*`` overrides. What it changes, and why each is a fair
reduction for measuring the two large effects of the paper (domain targets,
extreme views) rather than its full-scale accuracies:

* CIFAR-10 (the JPEG archive, passed with ``--archive``): a class-balanced
  subset of ``CIFAR_TRAIN_EXAMPLES`` training images (drawn by the run's
  seed) at 16x16 pixels, evaluated on a fixed class-balanced subset of
  ``TEST_EXAMPLES["cifar10"]`` test images, the narrow three-stage ResNet
  (``resnet_small``: one basic block per stage, 16-32-64 channels) with a
  512-128 projector in float32, batch 128 for ``CIFAR_EPOCHS`` epochs.
* Digits: the embedded default config (``resnet_small``, batch 128) at the
  scans' native 8x8 pixels, for ``DIGITS_EPOCHS`` epochs.

Both evaluate only at the end (kNN and a 500-step linear probe on the
frozen features) and save a checkpoint every epoch, so an interrupted sweep
loses at most one epoch per run.

Example:
  >>> from experiments import cpu_scale
  >>> from gca_jax.training import config as config_lib
  >>> config = cpu_scale.apply(config_lib.paper_cifar_config("cifar10"), "cifar10")
  >>> config.model.name, config.load_size, config.train_examples
  ('resnet_small', 16, 2000)
"""

from __future__ import annotations

from pathlib import Path

from experiments.entry import ExperimentError

SCALES = ("paper", "cpu")
CIFAR_TRAIN_EXAMPLES = 2000
CIFAR_EPOCHS = 6
DIGITS_EPOCHS = 10
# Config name -> the size of the class-balanced test subset every run is
# evaluated on (`runs.DataCache`; not a config field, so the scripts apply it).
TEST_EXAMPLES = {"cifar10": 2000}
_EVALUATION = {
    "eval_every_epochs": 0, "linear_probe": True, "linear_probe_steps": 500,
    "probe_random_init": False, "checkpoint_every_epochs": 1, "progress_bar": False,
    "log_every_steps": 20,
}
# Config name (experiments/configs) -> the fields the CPU scale sets.
FIELDS = {
    "cifar10": {
        "train_examples": CIFAR_TRAIN_EXAMPLES, "load_size": 16, "image_size": None,
        "model.name": "resnet_small", "model.width": 0, "model.dtype": "float32",
        "model.projector_hidden_dim": 512, "model.projection_dim": 128,
        "batch_size": 128, "epochs": CIFAR_EPOCHS, "learning_rate": 0.3,
        "lr_scaling": "none", "warmup_epochs": 1.0, **_EVALUATION,
    },
    "digits": {"epochs": DIGITS_EPOCHS, "load_size": 8, **_EVALUATION},
}


def test_examples(scale: str, name: str) -> int:
  """The test subset size of config ``name`` at ``scale`` (0: the whole split)."""
  return TEST_EXAMPLES.get(name, 0) if scale == "cpu" else 0


def apply(config, name: str):
  """``config`` (that of ``experiments/configs/<name>.py``) at the CPU scale."""
  if name not in FIELDS:
    raise ExperimentError(f"--scale=cpu is defined for {', '.join(FIELDS)}, not {name!r}; "
                          "use --scale=paper")
  config.update_from_flattened_dict(FIELDS[name])
  return config


def archive_dataset(archive: str | None) -> str:
  """The ``load_dataset`` name of the CIFAR-10 JPEG archive at ``archive``."""
  if not archive:
    raise ExperimentError("--archive is required: the path of the CIFAR-10 JPEG archive "
                          "(.npz with train_jpeg/test_jpeg)")
  if not Path(archive).is_file():
    raise ExperimentError(f"--archive={archive}: no such file; pass the path of the "
                          "CIFAR-10 JPEG archive (.npz)")
  return f"npz:{archive}"
