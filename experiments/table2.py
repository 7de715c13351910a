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
        --seeds=0,1,2                          # the whole table (GPU cluster)
    python -m experiments.table2 --methods=INCE,GCA-UOT --datasets=cifar10 \
        --policies=simclr,large_erase --root=runs/table2
    python -m experiments.table2 --smoke --root=/tmp/table2_smoke   # seconds, CPU

The policy grid ``--policies=paper`` (default) is the standard augmentations
on every dataset plus the extreme ones on CIFAR-10; a comma list applies the
listed policies to every selected dataset.

The noisy-views comparison (the paper's CIFAR-10 (Ex) claim: GCA-UOT keeps
more accuracy than INCE under the extreme policies) at the CPU scale of
`experiments.cpu_scale`, CIFAR-10 read from its JPEG archive::

    python -m experiments.table2 --datasets=cifar10 --scale=cpu \
        --archive=/path/to/cifar10_jpeg.npz --methods=INCE,GCA-UOT \
        --policies=large_erase,brightness,strong_crop,simclr --corruptions=none \
        --seeds=0,1,2 --root=runs/noisy_views

Every sweep ends by writing ``<root>/noisy_views.json`` (every INCE and
GCA-UOT run's linear-probe and kNN accuracy, their mean and std over seeds,
and the pre-stated paired test of GCA-UOT against INCE per policy and over
the extreme policies together, `experiments.verdicts`) and
``<root>/noisy_views.md``; ``--report_only`` rewrites them from the
finished runs without training. A run counter ``[k/N]`` shows the progress.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from absl import flags

from experiments import cpu_scale, entry, methods, runs, tables, trainer, verdicts
from gca_jax.data import augment


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
# --archive: the dataset read from the CIFAR-10 JPEG archive instead of tfds.
ARCHIVE_DATASET = "cifar10"
STANDARD_POLICY = "simclr"
# The noisy-views comparison (`noisy_views_summary`): GCA-UOT against INCE.
NOISY_VIEWS_METHODS = ("GCA-UOT", "INCE")
NOISY_VIEWS_JSON = "noisy_views.json"
NOISY_VIEWS_MD = "noisy_views.md"
NOISY_VIEWS_MEASURES = {"linear probe": "linear_probe_acc", "kNN": "knn_acc"}
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
    grid = [(d, STANDARD_POLICY) for d in datasets]
    if EXTREME_DATASET in datasets:
      grid += [(EXTREME_DATASET, p) for p in EXTREME_POLICIES]
    return grid
  chosen = entry.select(entry.split_names(policies), augment.POLICIES, "policies")
  return [(d, p) for d in datasets for p in chosen]


def make_config(dataset: str, policy: str, m: methods.Method, seed: int, *,
                smoke: bool = False, scale: str = "paper", archive: str | None = None,
                overrides: dict | None = None):
  """The config of one run: ``dataset``'s config (the small one if
  ``smoke``) at ``scale`` (`cpu_scale`), read from the CIFAR-10 JPEG
  ``archive`` if given (CIFAR-10 only), method ``m``, augmentation
  ``policy`` and ``seed``, then the ``--config.*`` ``overrides``."""
  spec = DATASETS[dataset]
  config = runs.load_config(spec.config)
  config.update_from_flattened_dict(dict(spec.overrides))
  if archive is not None and dataset == ARCHIVE_DATASET and not smoke:
    config.dataset = cpu_scale.archive_dataset(archive)
  if smoke:
    trainer.small(config)
  elif scale == "cpu":
    cpu_scale.apply(config, spec.config)
  methods.configure_method(config, m)
  config.augmentation = policy
  config.seed = seed
  config.linear_probe = True
  config.probe_random_init = False
  return entry.apply_overrides(config, overrides or {})


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
    raise entry.ExperimentError(f"no synthetic corruption {name!r}; choose from "
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
  stored = runs.read_json(path) or {}
  accuracy = stored.get("accuracy", {}) if stored.get("severity") == severity else {}
  missing = [c for c in corruptions if c not in accuracy]
  if not missing:
    return accuracy
  encoder = trainer.load_encoder(workdir)
  train = encoder.dataset.train
  train_features = encoder.split_features(train)
  for name in missing:
    images, labels = corrupted_test_split(name, severity, encoder, smoke)
    accuracy[name] = trainer.probe_accuracy(encoder, train_features, train.labels,
                                            encoder.features(images), labels,
                                            encoder.dataset.num_classes)
    runs.log(f"[corrupted] {workdir}: {name} (severity {severity}) "
             f"accuracy {accuracy[name]:.4f}")
    runs.write_json(path, {"severity": severity, "accuracy": accuracy})
  return accuracy


def evaluate_protocols(workdir: Path, protocols, **finetune_settings) -> dict:
  """Runs each of ``protocols`` the run in ``workdir`` has no result of
  (`gca_jax.protocols.evaluate`, which merges it into metrics.json);
  returns the run's metrics."""
  for protocol in protocols:
    if PROTOCOLS[protocol] not in (runs.read_json(Path(workdir) / runs.METRICS) or {}):
      settings = finetune_settings if protocol == "finetune" else {}
      result = trainer.evaluate(workdir, protocol, **settings)
      runs.log(f"[{protocol}] {workdir}: " + ", ".join(
          f"{k} {v:.4f}" for k, v in result.items()))
  return runs.read_json(Path(workdir) / runs.METRICS)


def noisy_views_rows(root: Path) -> list[dict]:
  """One row per finished run of `NOISY_VIEWS_METHODS` on CIFAR-10 (``--smoke``:
  digits) under ``root``: policy, method, seed and its accuracies."""
  rows = []
  for record, metrics, _ in runs.collect_runs(root):
    finished = metrics.get(PROTOCOLS["linear"]) is not None  # not one still training
    if (finished and record.get("experiment") == "table2"
        and record["method"] in NOISY_VIEWS_METHODS
        and record["dataset"] in (EXTREME_DATASET, "digits")):
      rows.append({"dataset": record["dataset"], "policy": record["policy"],
                   "method": record["method"], "seed": record["seed"],
                   "implementation": record.get("implementation"),
                   **{key: metrics.get(key) for key in NOISY_VIEWS_MEASURES.values()},
                   "train_seconds": metrics.get("train_seconds")})
  return rows


def noisy_views_summary(rows: list[dict]) -> dict:
  """Mean and std over seeds of each (policy, method, measure), and the
  pre-stated test (`verdicts.paired_test`, `verdicts.claim_verdict`): GCA-UOT
  against INCE paired by seed, per policy and over the extreme policies
  together (the paper's "(Ex)" column)."""
  cells: dict = {}
  for row in rows:
    cells.setdefault((row["dataset"], row["policy"], row["method"]), {})[row["seed"]] = row
  stats, tests = [], []
  for (dataset, policy, method), by_seed in sorted(cells.items()):
    stats.append({"dataset": dataset, "policy": policy, "method": method,
                  "seeds": sorted(by_seed), **{
                      f"{key}_{stat}": value for key in NOISY_VIEWS_MEASURES.values()
                      for stat, value in zip(("mean", "std"), verdicts.mean_std(
                          [r[key] for r in by_seed.values()]))}})
  uot, ince = NOISY_VIEWS_METHODS
  for dataset in sorted({d for d, _, _ in cells}):
    policies = sorted({p for d, p, _ in cells if d == dataset})
    groups = [(p, [p]) for p in policies]
    extreme = [p for p in policies if p in EXTREME_POLICIES]
    if extreme:
      groups.append(("extreme policies together", extreme))
    for name, chosen in groups:
      pairs = [(cells[(dataset, p, uot)][s], cells[(dataset, p, ince)][s]) for p in chosen
               if (dataset, p, uot) in cells and (dataset, p, ince) in cells
               for s in sorted(set(cells[(dataset, p, uot)]) & set(cells[(dataset, p, ince)]))]
      test = {"dataset": dataset, "policies": name, "pairs": len(pairs)}
      for measure, key in NOISY_VIEWS_MEASURES.items():
        result = verdicts.paired_test([a[key] for a, _ in pairs], [b[key] for _, b in pairs])
        test[measure] = {**result, "verdict": verdicts.claim_verdict(result)}
      tests.append(test)
  return {"cells": stats, "tests": tests}


def noisy_views_markdown(summary: dict) -> str:
  """The summary as a Markdown table (accuracies in %, mean ± std over
  seeds) and the tests with their verdicts."""
  uot, ince = NOISY_VIEWS_METHODS
  by_key = {(c["dataset"], c["policy"], c["method"]): c for c in summary["cells"]}
  rows = []
  for dataset, policy in sorted({(d, p) for d, p, _ in by_key}):
    row = [dataset, policy]
    for key in NOISY_VIEWS_MEASURES.values():
      for method in (ince, uot):
        cell = by_key.get((dataset, policy, method))
        row.append("–" if cell is None else
                   f"{verdicts.percent(cell[key + '_mean'], cell[key + '_std'])} "
                   f"(n={len(cell['seeds'])})")
    rows.append(row)
  header = ["dataset", "policy"] + [f"{measure}: {method}" for measure in NOISY_VIEWS_MEASURES
                                    for method in (ince, uot)]
  lines = [tables.markdown_table(header, rows), ""]
  for test in summary["tests"]:
    lines.append(f"- {test['dataset']}, {test['policies']} ({test['pairs']} pairs), "
                 f"{uot} - {ince}: " + "; ".join(
                     f"{measure} {verdicts.describe(test[measure])}: "
                     f"**{test[measure]['verdict']}**" for measure in NOISY_VIEWS_MEASURES))
  return "\n".join(lines)


def write_noisy_views_summary(root: Path) -> Path | None:
  """``<root>/noisy_views.json`` (every run's numbers and the summary) and
  ``<root>/noisy_views.md``; None if no INCE or GCA-UOT run has finished."""
  rows = noisy_views_rows(root)
  if not rows:
    return None
  summary = noisy_views_summary(rows)
  runs.write_json(Path(root) / NOISY_VIEWS_JSON, {"runs": rows, **summary})
  (Path(root) / NOISY_VIEWS_MD).write_text(noisy_views_markdown(summary) + "\n")
  return Path(root) / NOISY_VIEWS_MD


def define_flags(flag_values: flags.FlagValues, argv) -> None:
  entry.define_run_flags(flag_values, argv, default_root="runs/table2")
  define = dict(flag_values=flag_values)
  flags.DEFINE_string("methods", None, f"Comma list of {', '.join(methods.METHOD_LABELS)} "
                      f"or 'all' (default: all; --smoke: {','.join(SMOKE_METHODS)}).",
                      **define)
  flags.DEFINE_string("datasets", None, f"Comma list of {', '.join(DATASETS)} or 'all' "
                      f"(default: {','.join(PAPER_DATASETS)}; --smoke: digits).", **define)
  flags.DEFINE_string("policies", None, "'paper' (default: standard everywhere, extreme on "
                      f"CIFAR-10) or a comma list of {', '.join(augment.POLICIES)} applied "
                      "to every dataset (--smoke default: simclr).", **define)
  flags.DEFINE_enum("implementation", "published", methods.IMPLEMENTATIONS,
                    "published: gca_jax.reference presets (the paper's code); clean: "
                    "gca_jax.losses.", **define)
  flags.DEFINE_string("corruptions", None, "Comma list of CIFAR-10-C corruptions, 'all' "
                      "(default) or 'none'; evaluated for CIFAR-10 (--smoke: digits) runs "
                      "with the standard augmentations.", **define)
  flags.DEFINE_integer("severity", 5, "CIFAR-10-C severity (1-5).", lower_bound=1,
                       upper_bound=5, **define)
  flags.DEFINE_string("protocols", "linear", "Comma list of evaluation protocols: "
                      f"{', '.join(PROTOCOLS)} (linear always runs; finetune is the paper's "
                      "CIFAR protocol).", **define)
  flags.DEFINE_integer("finetune_epochs", None, "finetune: epochs (default: the protocol's "
                       "200; --smoke: 1).", **define)
  flags.DEFINE_integer("finetune_batch_size", None, "finetune: batch size (default: the "
                       "protocol's 512).", **define)
  flags.DEFINE_bool("report_only", False, "Train nothing: write the noisy-views summary "
                    "(INCE against GCA-UOT) of the runs finished under --root.", **define)
  flags.DEFINE_enum("scale", "paper", cpu_scale.SCALES,
                    "paper: the datasets' configs; cpu: experiments.cpu_scale's reduction "
                    "(cifar10, digits).", **define)
  flags.DEFINE_string("archive", None, "cifar10: read it from this CIFAR-10 JPEG archive "
                      "(.npz with train_jpeg/test_jpeg) instead of tfds.", **define)


def _check_consistent(args, protocols, grid, corruptions, corruption_dataset) -> None:
  """Refuses flags that the other flags make do nothing (ExperimentError)."""
  present = getattr(args, "present", set())
  if "finetune" not in protocols:
    unused = [name for name in ("finetune_epochs", "finetune_batch_size") if name in present]
    if unused:
      raise entry.ExperimentError(
          f"--{unused[0]} is a setting of the finetune protocol, which "
          f"--protocols={args.protocols} does not run; add finetune to --protocols or drop "
          f"--{unused[0]}")
  if not corruptions and "severity" in present:
    raise entry.ExperimentError("--severity is the severity of --corruptions, which is "
                                "'none'; drop one of them")
  if corruptions and "corruptions" in present and (corruption_dataset, "simclr") not in grid:
    raise entry.ExperimentError(
        f"--corruptions evaluates the {corruption_dataset} runs of the simclr policy, which "
        "--datasets/--policies do not select; select them or drop --corruptions")


def run(args) -> None:
  """Trains and evaluates every run ``args`` select (skipping finished ones)."""
  labels = entry.select(entry.split_names(args.methods or (
      ",".join(SMOKE_METHODS) if args.smoke else "all")), methods.METHOD_LABELS, "methods")
  datasets = entry.select(entry.split_names(args.datasets or (
      "digits" if args.smoke else ",".join(PAPER_DATASETS))), list(DATASETS), "datasets")
  grid = run_grid(datasets, args.policies or (STANDARD_POLICY if args.smoke else "paper"))
  known_corruptions = SMOKE_CORRUPTIONS if args.smoke else CIFAR10_CORRUPTIONS
  corruptions = [] if args.corruptions == "none" else entry.select(
      entry.split_names(args.corruptions or "all"), known_corruptions, "corruptions")
  corruption_dataset = "digits" if args.smoke else "cifar10"
  protocols = entry.select(entry.split_names(args.protocols), list(PROTOCOLS),
                           "protocols")
  _check_consistent(args, protocols, grid, corruptions, corruption_dataset)
  finetune_settings = {"epochs": args.finetune_epochs or (1 if args.smoke else None),
                       "batch_size": args.finetune_batch_size}
  root = Path(args.root)
  if args.report_only:
    runs.log(f"wrote {write_noisy_views_summary(root) or 'nothing: no finished run'}")
    return
  if args.archive is not None and ARCHIVE_DATASET not in datasets:
    raise entry.ExperimentError(f"--archive is read for {ARCHIVE_DATASET}, which "
                                f"--datasets does not select")

  data = {dataset: runs.DataCache(cpu_scale.test_examples(args.scale, DATASETS[dataset].config))
          for dataset in datasets}
  runs_grid = [(dataset, policy, label, seed) for dataset, policy in grid
               for label in labels for seed in args.seeds]
  for number, (dataset, policy, label, seed) in enumerate(runs_grid, start=1):
    m = methods.method(label, args.implementation)
    workdir = root / dataset / policy / m.slug / f"seed{seed}"
    runs.log(f"[{number}/{len(runs_grid)}] {dataset}, {policy}, {label}, seed {seed}")
    config = make_config(dataset, policy, m, seed, smoke=args.smoke, scale=args.scale,
                         archive=args.archive, overrides=args.config_overrides)
    record = {"experiment": "table2", "method": label, "dataset": dataset,
              "data": config.dataset, "policy": policy, "seed": seed,
              "loss": m.loss, "implementation": args.implementation,
              "scale": args.scale, "smoke": args.smoke}
    dataset_of_run = None if runs.finished_metrics(workdir) else data[dataset].get(config)
    if dataset_of_run is not None:
      record["test_examples"] = len(dataset_of_run.test)
    runs.run_pretraining(config, workdir, record, dataset=dataset_of_run)
    evaluate_protocols(workdir, protocols, **finetune_settings)
    if corruptions and dataset == corruption_dataset and policy == STANDARD_POLICY:
      evaluate_corruptions(workdir, corruptions, args.severity, args.smoke)
  summary = write_noisy_views_summary(root)
  if summary:
    runs.log(f"wrote {summary}")
  runs.log(f"all runs finished; table: python -m experiments.report --root={root}")


def main(argv=None) -> None:
  entry.main(define_flags, run, argv)


if __name__ == "__main__":
  main()
