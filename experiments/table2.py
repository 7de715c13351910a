r"""Table 2 of the paper: linear readout of contrastive methods.

Pre-trains each method (INCE, GCA-INCE, RINCE, GCA-RINCE, SimCLR, BYOL, IOT,
IOT-uni, GCA-UOT) on CIFAR-10 and CIFAR-100 (ResNet-18), SVHN and
ImageNet-100 (ResNet-50), under the standard SimCLR augmentations and the
three extreme ones (``large_erase``, ``brightness``, ``strong_crop`` of
`gca_jax.data.augment`), then trains a linear probe on the frozen encoder
(`gca_jax.train.train_and_evaluate`, what ``python -m gca_jax.pretrain``
runs). Each CIFAR-10 model trained with the standard augmentations is also
probed on corrupted CIFAR-10 (CIFAR-10-C; the probe is fitted on the clean
train split and tested on each corruption).

Defaults are the paper code's: batch 512, 500 epochs (CIFAR/SVHN configs),
eps 0.5, 10 iterations, lam 0.01, q 0.6, relaxations 0.2, CE weight 1, RINCE
weight 0.02, SGD Nesterov with a cosine schedule. By default the losses are
the published-code presets of `gca_jax.reference` (the code behind the
paper's numbers; INCE and RINCE are its half-step losses ``hs_ince`` and
``hs_rince``, SimCLR its ``NT_Xent``); ``--implementation=clean`` trains the
paper-faithful losses of `gca_jax.losses` instead.

Every run has its own workdir
``<root>/<dataset>/<policy>/<method>/seed<k>``; finished runs are skipped
and interrupted ones resume from their last checkpoint, so the command can
simply be run again. Collect the table with ``python -m experiments.report``.

    python -m experiments.table2 --root=runs/table2 --data_dir=$TFDS_DIR \
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
  overrides: tuple = ()


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


def run_grid(datasets, policies: str):
  """(dataset, policy) pairs to train."""
  if policies == "paper":
    grid = [(d, "simclr") for d in datasets]
    if EXTREME_DATASET in datasets:
      grid += [(EXTREME_DATASET, p) for p in EXTREME_POLICIES]
    return grid
  chosen = common.select(common.split_names(policies), common.POLICIES, "policies")
  return [(d, p) for d in datasets for p in chosen]


def make_config(dataset: str, policy: str, m: common.Method, seed: int, args):
  spec = DATASETS[dataset]
  config = common.load_config(spec.config)
  for field, value in spec.overrides:
    common.set_field(config, field, value)
  if args.smoke:
    common.shrink_for_smoke(config)
  common.configure_method(config, m)
  config.augmentation = policy
  config.seed = seed
  config.linear_probe = True
  config.probe_random_init = False
  common.apply_common_flags(config, args)
  return config


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
    raise SystemExit(f"error: no synthetic corruption '{name}'")
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
  train_features = encoder.features(train.images)
  for name in missing:
    images, labels = corrupted_test_split(name, severity, encoder, smoke)
    accuracy[name] = common.probe_accuracy(encoder, train_features, train.labels,
                                           encoder.features(images), labels,
                                           encoder.dataset.num_classes)
    common.log(f"[corrupted] {workdir}: {name} (severity {severity}) "
               f"accuracy {accuracy[name]:.4f}")
    common.write_json(path, {"severity": severity, "accuracy": accuracy})
  return accuracy


def parse_args(argv=None):
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
  parser.add_argument("--severity", type=int, default=5, help="CIFAR-10-C severity (1-5).")
  return parser.parse_args(argv)


def main(argv=None) -> None:
  args = parse_args(argv)
  methods = common.select(common.split_names(args.methods or (
      ",".join(SMOKE_METHODS) if args.smoke else "all")), common.METHOD_LABELS, "methods")
  datasets = common.select(common.split_names(args.datasets or (
      "digits" if args.smoke else ",".join(PAPER_DATASETS))), list(DATASETS), "datasets")
  grid = run_grid(datasets, args.policies or ("simclr" if args.smoke else "paper"))
  known_corruptions = SMOKE_CORRUPTIONS if args.smoke else CIFAR10_CORRUPTIONS
  corruptions = [] if args.corruptions == "none" else common.select(
      common.split_names(args.corruptions or "all"), known_corruptions, "corruptions")
  corruption_dataset = "digits" if args.smoke else "cifar10"
  root = Path(args.root)

  for dataset, policy in grid:
    for label in methods:
      m = common.method(label, args.implementation)
      for seed in args.seeds:
        workdir = root / dataset / policy / m.slug / f"seed{seed}"
        config = make_config(dataset, policy, m, seed, args)
        record = {"experiment": "table2", "method": label, "dataset": dataset,
                  "data": config.dataset, "policy": policy, "seed": seed,
                  "loss": m.loss, "implementation": args.implementation,
                  "smoke": args.smoke}
        common.run_pretraining(config, workdir, record)
        if corruptions and dataset == corruption_dataset and policy == "simclr":
          evaluate_corruptions(workdir, corruptions, args.severity, args.smoke)
  common.log(f"all runs finished; table: python -m experiments.report --root={root}")


if __name__ == "__main__":
  main()
