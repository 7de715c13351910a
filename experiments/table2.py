r"""Table 2 of the paper: linear readout of contrastive methods.

Pre-trains each method (INCE, GCA-INCE, RINCE, GCA-RINCE, SimCLR, BYOL, IOT,
IOT-uni, GCA-UOT) on CIFAR-10 and CIFAR-100 (ResNet-18), SVHN and
ImageNet-100 (ResNet-50), under the standard SimCLR augmentations and the
three extreme ones (``large_erase``, ``brightness``, ``strong_crop`` of
`gca_jax.data.augment`), then evaluates each encoder by the protocols of
``--protocols`` (`gca_jax.linear_eval`):

* ``linear`` (default): a linear probe on the frozen encoder, what
  `gca_jax.training.train_and_evaluate` (``python -m gca_jax.pretrain``)
  runs at the end of every run: fast, but not how the paper measured;
* ``finetune``: the published code's CIFAR protocol behind the paper's
  CIFAR-10/100 numbers (`gca_jax.finetune`: the whole encoder fine-tuned
  with a linear head for 200 epochs; best and last epoch recorded).

Each CIFAR-10 model trained with the standard augmentations is also probed on
corrupted CIFAR-10 (CIFAR-10-C; the linear probe is fitted on the clean train
split and tested on each corruption).

Defaults are the paper code's: batch 512, 500 epochs (CIFAR/SVHN configs),
eps 0.5, 10 iterations, lam 0.01, q 0.6, relaxations 0.2, CE weight 1, RINCE
weight 0.02, SGD Nesterov with a cosine schedule. By default the losses are
the published-code presets of `gca_jax.reference` (the code behind the
paper's numbers; INCE and RINCE are its half-step losses ``hs_ince`` and
``hs_rince``, SimCLR its ``NT_Xent``); ``--implementation=clean`` trains the
paper-faithful losses of `gca_jax.losses` instead.

Every run has its own workdir
``<root>/<dataset>/<policy>/<method>/seed<k>``; finished runs are skipped
and interrupted ones continue from their last checkpoint, so the command can
simply be run again. Collect the table with ``python -m experiments.report``.
Any field of the runs' config is set with ml_collections' syntax,
``--config.<field>=<value>`` (e.g. ``--config.epochs=100``,
``--config.data_dir=...``, ``--config.train_examples=1000`` for a quick
class-balanced subset); ``--smoke`` starts from the ``small`` config
(`gca_jax.training.config.small`).

    python -m experiments.table2 --root=runs/table2 --config.data_dir=$TFDS_DIR \
        --seeds 0 1 2                          # the whole table (GPU cluster)
    python -m experiments.table2 --methods=INCE,GCA-UOT --datasets=cifar10 \
        --policies=simclr,large_erase --root=runs/table2
    python -m experiments.table2 --smoke --root=/tmp/table2_smoke   # seconds, CPU

The policy grid ``--policies=paper`` (default) is the standard augmentations
on every dataset plus the extreme ones on CIFAR-10; a comma list applies the
listed policies to every selected dataset.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

try:
  from experiments import common
except ImportError:  # run as a script: python experiments/table2.py
  import common


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
  """A column group of Table 2: the config file and what the paper changes."""

  config: str
  title: str
  overrides: tuple = ()       # (dotted field, value) pairs


DATASETS = {
    "cifar10": DatasetSpec("cifar10", "CIFAR-10"),
    "cifar100": DatasetSpec("cifar100", "CIFAR-100"),
    # The paper trains a ResNet-50 on SVHN (the svhn config is ResNet-18).
    "svhn": DatasetSpec("svhn", "SVHN", (("model.name", "resnet50"),)),
    "imagenet100": DatasetSpec("imagenet100", "ImageNet-100"),
    # Embedded (no download): CPU checks and --smoke.
    "digits": DatasetSpec("digits", "Digits"),
}
PAPER_DATASETS = ("cifar10", "cifar100", "svhn", "imagenet100")
EXTREME_POLICIES = ("large_erase", "brightness", "strong_crop")
EXTREME_DATASET = "cifar10"
SMOKE_METHODS = ("INCE", "GCA-UOT")
CORRUPTED_FILE = "corrupted.json"
# The 19 corruptions of CIFAR-10-C (tfds cifar10_corrupted/<name>_<severity>).
CIFAR10_CORRUPTIONS = (
    "brightness", "contrast", "defocus_blur", "elastic", "fog", "frost",
    "frosted_glass_blur", "gaussian_blur", "gaussian_noise", "impulse_noise",
    "jpeg_compression", "motion_blur", "pixelate", "saturate", "shot_noise", "snow",
    "spatter", "speckle_noise", "zoom_blur")
# --smoke: synthetic corruptions of the digits test split (no download).
SMOKE_CORRUPTIONS = ("brightness", "gaussian_noise")
# Evaluation protocols (gca_jax.linear_eval) and the metrics.json key that
# shows a run has been evaluated by each.
PROTOCOLS = {"linear": "linear_probe_acc", "finetune": "finetune_best_acc"}


def run_grid(datasets, policies: str):
  """(dataset, policy) pairs to train."""
  if policies == "paper":
    grid = [(d, "simclr") for d in datasets]
    if EXTREME_DATASET in datasets:
      grid += [(EXTREME_DATASET, p) for p in EXTREME_POLICIES]
    return grid
  chosen = common.select(common.split_names(policies), common.POLICIES, "policies")
  return [(d, p) for d in datasets for p in chosen]


def make_config(dataset: str, policy: str, m: common.Method, seed: int, *,
                smoke: bool = False, overrides: dict | None = None):
  """The config of one run: ``dataset``'s config (the small one if
  ``smoke``), method ``m``, augmentation ``policy`` and ``seed``, then the
  ``--config.*`` ``overrides``."""
  from gca_jax.training import config as config_lib  # pylint: disable=g-import-not-at-top
  spec = DATASETS[dataset]
  config = common.load_config(spec.config)
  config.update_from_flattened_dict(dict(spec.overrides))
  if smoke:
    config_lib.small(config)
  common.configure_method(config, m)
  config.augmentation = policy
  config.seed = seed
  config.linear_probe = True
  config.probe_random_init = False
  return common.apply_overrides(config, overrides or {})


def synthetic_corruption(name: str, severity: int, images_uint8):
  """Smoke-mode stand-in for CIFAR-10-C: ImageNet-C brightness or Gaussian
  noise (std 0.04 * severity of the [0, 1] range) on uint8 images."""
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from gca_jax.data import augment  # pylint: disable=g-import-not-at-top
  images = np.asarray(images_uint8, np.float32) / 255.0
  if name == "brightness":
    images = np.asarray(augment.brightness_corruption(jnp.asarray(images), severity))
  elif name == "gaussian_noise":
    noise = np.random.default_rng(severity).normal(0.0, 0.04 * severity, images.shape)
    images = images + noise
  else:
    raise common.ExperimentError(f"no synthetic corruption {name!r}; choose from "
                                 f"{', '.join(SMOKE_CORRUPTIONS)}")
  return np.clip(np.round(images * 255.0), 0, 255).astype(np.uint8)


def corrupted_test_split(name: str, severity: int, encoder, smoke: bool):
  """(images, labels) of the corrupted test split."""
  if smoke:
    test = encoder.dataset.test
    return synthetic_corruption(name, severity, test.images), test.labels
  from gca_jax.data import load_dataset  # pylint: disable=g-import-not-at-top
  test = load_dataset(f"cifar10_corrupted/{name}_{severity}",
                      data_dir=encoder.config.data_dir).test
  return test.images, test.labels


def evaluate_corruptions(workdir: Path, corruptions, severity: int, smoke: bool) -> dict:
  """Linear probe fitted on clean train features, tested on each corruption.

  Results go to ``workdir/corrupted.json``; corruptions already there (at
  the same severity) are not evaluated again.
  """
  path = Path(workdir) / CORRUPTED_FILE
  stored = common.read_json(path) or {}
  accuracy = stored.get("accuracy", {}) if stored.get("severity") == severity else {}
  missing = [c for c in corruptions if c not in accuracy]
  if not missing:
    return accuracy
  encoder = common.load_encoder(workdir)
  train = encoder.dataset.train
  train_features = encoder.split_features(train)
  for name in missing:
    images, labels = corrupted_test_split(name, severity, encoder, smoke)
    accuracy[name] = common.probe_accuracy(encoder, train_features, train.labels,
                                           encoder.features(images), labels,
                                           encoder.dataset.num_classes)
    common.log(f"[corrupted] {workdir}: {name} (severity {severity}) "
               f"accuracy {accuracy[name]:.4f}")
    common.write_json(path, {"severity": severity, "accuracy": accuracy})
  return accuracy


def evaluate_protocols(workdir: Path, protocols, **finetune_settings) -> dict:
  """Runs each of ``protocols`` the run in ``workdir`` has no result of
  (`gca_jax.linear_eval.evaluate`, which merges it into metrics.json);
  returns the run's metrics."""
  from gca_jax import linear_eval  # pylint: disable=g-import-not-at-top
  for protocol in protocols:
    if PROTOCOLS[protocol] not in (common.read_json(Path(workdir) / common.METRICS) or {}):
      settings = finetune_settings if protocol == "finetune" else {}
      result = linear_eval.evaluate(workdir, protocol, **settings)
      common.log(f"[{protocol}] {workdir}: " + ", ".join(
          f"{k} {v:.4f}" for k, v in result.items()))
  return common.read_json(Path(workdir) / common.METRICS)


def make_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  common.add_common_flags(parser, default_root="runs/table2")
  parser.add_argument("--methods", default=None,
                      help=f"Comma list of {', '.join(common.METHOD_LABELS)} or 'all' "
                      f"(default: all; --smoke: {','.join(SMOKE_METHODS)}).")
  parser.add_argument("--datasets", default=None,
                      help=f"Comma list of {', '.join(DATASETS)} or 'all' (default: "
                      f"{','.join(PAPER_DATASETS)}; --smoke: digits).")
  parser.add_argument("--policies", default=None,
                      help="'paper' (default: standard everywhere, extreme on "
                      f"CIFAR-10) or a comma list of {', '.join(common.POLICIES)} "
                      "applied to every dataset (--smoke default: simclr).")
  parser.add_argument("--implementation", default="published",
                      choices=common.IMPLEMENTATIONS,
                      help="published: gca_jax.reference presets (the paper's code); "
                      "clean: gca_jax.losses.")
  parser.add_argument("--corruptions", default=None,
                      help="Comma list of CIFAR-10-C corruptions, 'all' (default) or "
                      "'none'; evaluated for CIFAR-10 (--smoke: digits) runs with the "
                      "standard augmentations.")
  parser.add_argument("--severity", type=int, default=5, choices=range(1, 6),
                      help="CIFAR-10-C severity (1-5).")
  parser.add_argument("--protocols", default="linear",
                      help=f"Comma list of evaluation protocols: {', '.join(PROTOCOLS)} "
                      "(linear always runs; finetune is the paper's CIFAR protocol).")
  parser.add_argument("--finetune_epochs", type=int, default=None,
                      help="finetune: epochs (default: the protocol's 200; --smoke: 1).")
  parser.add_argument("--finetune_batch_size", type=int, default=None,
                      help="finetune: batch size (default: the protocol's 512).")
  return parser


def run(args) -> None:
  """Trains and evaluates every run ``args`` select (skipping finished ones)."""
  methods = common.select(common.split_names(args.methods or (
      ",".join(SMOKE_METHODS) if args.smoke else "all")), common.METHOD_LABELS, "methods")
  datasets = common.select(common.split_names(args.datasets or (
      "digits" if args.smoke else ",".join(PAPER_DATASETS))), list(DATASETS), "datasets")
  grid = run_grid(datasets, args.policies or ("simclr" if args.smoke else "paper"))
  known_corruptions = SMOKE_CORRUPTIONS if args.smoke else CIFAR10_CORRUPTIONS
  corruptions = [] if args.corruptions == "none" else common.select(
      common.split_names(args.corruptions or "all"), known_corruptions, "corruptions")
  corruption_dataset = "digits" if args.smoke else "cifar10"
  protocols = common.select(common.split_names(args.protocols), list(PROTOCOLS),
                            "protocols")
  finetune_settings = {"epochs": args.finetune_epochs or (1 if args.smoke else None),
                       "batch_size": args.finetune_batch_size}
  root = Path(args.root)

  for dataset, policy in grid:
    for label in methods:
      m = common.method(label, args.implementation)
      for seed in args.seeds:
        workdir = root / dataset / policy / m.slug / f"seed{seed}"
        config = make_config(dataset, policy, m, seed, smoke=args.smoke,
                             overrides=args.config_overrides)
        record = {"experiment": "table2", "method": label, "dataset": dataset,
                  "data": config.dataset, "policy": policy, "seed": seed,
                  "loss": m.loss, "implementation": args.implementation,
                  "smoke": args.smoke}
        common.run_pretraining(config, workdir, record)
        evaluate_protocols(workdir, protocols, **finetune_settings)
        if corruptions and dataset == corruption_dataset and policy == "simclr":
          evaluate_corruptions(workdir, corruptions, args.severity, args.smoke)
  common.log(f"all runs finished; table: python -m experiments.report --root={root}")


def main(argv=None) -> None:
  args, config_flags = make_parser().parse_known_args(argv)
  with common.one_line_errors():
    args.config_overrides = common.parse_config_overrides(config_flags)
    run(args)


if __name__ == "__main__":
  main()
