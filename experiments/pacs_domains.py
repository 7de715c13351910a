r"""Figure 1(B) of the paper: PACS with a domain-block target plan.

GCA aligns the transport plan of each batch with a target plan; here the
target is `gca_jax.losses.domain_target(domains, alpha, beta)` (paper
Sec. 3.4): 1 on positive pairs, ``alpha`` between other samples of the same
PACS domain (photo, art painting, cartoon, sketch), ``beta`` across domains.
For each (alpha, beta) of the sweep the script pre-trains a ResNet-18
(``experiments/configs/pacs.py``) on a stratified split of all four domains,
then fits two linear probes on the frozen features: one for the class and
one for the domain. The paper's Figure 1(B) plots both accuracies against
``alpha - beta``: a larger same-domain weight makes domains linearly
separable (domain accuracy up) while class accuracy stays or drops.

    python -m experiments.pacs_domains --config.data_dir=/path/to/pacs \
        --alphas 0 0.1 0.2 0.5 1 --betas 0 --seeds 0 1 2 --root=runs/pacs
    python -m experiments.pacs_domains --smoke --root=/tmp/pacs_smoke

``--smoke`` replaces PACS by the embedded digits with four synthetic
"domains" (original, inverted, dimmed, high-contrast images). Each run has
its own workdir ``<root>/<dataset>/<loss>/alpha<a>_beta<b>/seed<k>`` with
checkpoints (interrupted runs resume) and a ``metrics.json`` holding
``linear_probe_acc`` (class) and ``domain_linear_probe_acc`` (both also in
its ``evaluations`` history, protocol ``linear``); the figure is saved as
``<root>/pacs_domains.png`` (needs matplotlib: ``pip install -e
'.[experiments]'``). ``python -m experiments.report`` tabulates the runs.
Config fields are set with ``--config.<field>=<value>`` as in ``table2.py``.

Each run is an ordinary `gca_jax.training.train_and_evaluate` run with
``config.target = "domain"`` and ``config.target_alpha`` / ``target_beta``
(the trainer builds the target of every global batch from its examples'
domains); ``python -m gca_jax.pretrain --config=experiments/configs/pacs.py
--config.target=domain --config.target_alpha=0.5`` trains the same thing.
"""

from __future__ import annotations

import argparse
from pathlib import Path

try:
  from experiments import common
except ImportError:  # run as a script: python experiments/pacs_domains.py
  import common

DOMAIN_METRIC = "domain_linear_probe_acc"
SMOKE_DOMAINS = ("original", "inverted", "dimmed", "high_contrast")
FIGURE = "pacs_domains.png"


def synthetic_domain_dataset(dataset, *, seed: int = 0):
  """``dataset`` with each image restyled as one of four synthetic domains."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from gca_jax.data import base  # pylint: disable=g-import-not-at-top

  def restyle(split, offset):
    domains = np.random.default_rng(seed + offset).integers(
        0, len(SMOKE_DOMAINS), len(split)).astype(np.int32)
    x = split.images.astype(np.float32)
    styles = [x, 255.0 - x, 0.4 * x, np.clip(2.0 * x - 128.0, 0, 255)]
    images = np.stack([styles[d][i] for i, d in enumerate(domains)])
    return base.ImageArrays(np.round(images).astype(np.uint8), split.labels, domains)

  train, test = restyle(dataset.train, 0), restyle(dataset.test, 1)
  mean, std = base.channel_stats(train.images)
  return dataset._replace(train=train, test=test, mean=mean, std=std,
                          name=f"{dataset.name}-domains", domain_names=SMOKE_DOMAINS)


def train_with_domain_target(config, dataset, workdir: Path) -> dict:
  """Pre-trains ``config`` (``config.target="domain"``) on ``dataset`` with
  the trainer (`gca_jax.training.train_and_evaluate`, which continues an
  interrupted run), then fits the domain probe on the frozen features (the
  class probe is the trainer's ``linear_probe_acc``); merges the results into
  ``metrics.json`` and returns it."""
  from gca_jax import training  # pylint: disable=g-import-not-at-top
  from gca_jax.training import reporting  # pylint: disable=g-import-not-at-top

  workdir = Path(workdir)
  training.train_and_evaluate(config, workdir, dataset=dataset)
  encoder = common.load_encoder(workdir, dataset=dataset)
  train_features = encoder.split_features(dataset.train)
  test_features = encoder.split_features(dataset.test)
  results, records = {}, []
  probes = [(DOMAIN_METRIC, "domain", dataset.train.domains, dataset.test.domains,
             len(dataset.domain_names))]
  metrics_file = reporting.MetricsFile(workdir)
  if "linear_probe_acc" not in metrics_file.read():  # e.g. --config.linear_probe=false
    probes.append(("linear_probe_acc", "class", dataset.train.labels,
                   dataset.test.labels, dataset.num_classes))
  for name, target, train_ids, test_ids, num_classes in probes:
    results[name] = common.probe_accuracy(encoder, train_features, train_ids,
                                          test_features, test_ids, num_classes)
    records.append({"protocol": "linear", "predicts": target, "step": encoder.step,
                    "epoch": encoder.step // encoder.run.steps_per_epoch,
                    "accuracy": results[name], "encoder": "trained"})
  return metrics_file.update(results, evaluations=records)


def make_config(alpha: float, beta: float, seed: int, method: str, *,
                smoke: bool = False, overrides: dict | None = None):
  """The config of one run: PACS's (the small one if ``smoke``), the clean
  loss of ``method`` against the domain target (alpha, beta), ``seed``, then
  the ``--config.*`` ``overrides``."""
  from gca_jax.training import config as config_lib  # pylint: disable=g-import-not-at-top
  config = common.load_config("pacs")
  if smoke:
    config_lib.small(config)
  common.configure_method(config, common.method(method, "clean"))
  config.target = "domain"
  config.target_alpha = alpha
  config.target_beta = beta
  config.linear_probe = True          # the class probe
  config.probe_random_init = False
  config.seed = seed
  return common.apply_overrides(config, overrides or {})


def save_figure(root: Path) -> Path | None:
  """Class and domain accuracy against alpha - beta (mean over seeds)."""
  plt = common.pyplot()
  by_gap: dict[float, list[tuple[float, float]]] = {}
  for record, metrics, _ in common.collect_runs(root):
    if record.get("experiment") == "pacs_domains" and DOMAIN_METRIC in metrics:
      gap = record["alpha"] - record["beta"]
      by_gap.setdefault(gap, []).append((metrics["linear_probe_acc"],
                                         metrics[DOMAIN_METRIC]))
  if not by_gap:
    return None
  fig, ax = plt.subplots(figsize=(4.5, 3.2))
  for column, name, color in ((0, "class", "tab:blue"), (1, "domain", "tab:red")):
    common.errorbar_curve(
        ax, {gap: [100 * v[column] for v in runs] for gap, runs in by_gap.items()},
        color=color, label=f"{name} accuracy")
  ax.set_xlabel(r"$\alpha - \beta$")
  ax.set_ylabel("linear-probe accuracy (%)")
  ax.legend()
  return common.save_figure(fig, Path(root) / FIGURE)


def make_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  common.add_common_flags(parser, default_root="runs/pacs_domains")
  parser.add_argument("--alphas", type=float, nargs="+", default=None,
                      help="Same-domain weights (default 0 0.1 0.2 0.5 1; --smoke: 0 1).")
  parser.add_argument("--betas", type=float, nargs="+", default=[0.0],
                      help="Cross-domain weights (default 0).")
  parser.add_argument("--method", default="GCA-UOT",
                      choices=["INCE", "GCA-INCE", "GCA-RINCE", "IOT", "IOT-uni", "GCA-UOT"],
                      help="Loss (gca_jax.losses, which take target=).")
  return parser


def run(args) -> None:
  """Trains every (alpha, beta, seed) run (skipping finished ones), then plots."""
  common.pyplot()  # fail now, not after the runs, without matplotlib
  loss = common.method(args.method, "clean").loss
  alphas = args.alphas or ([0.0, 1.0] if args.smoke else [0.0, 0.1, 0.2, 0.5, 1.0])
  root = Path(args.root)
  dataset = None
  for alpha in alphas:
    for beta in args.betas:
      for seed in args.seeds:
        config = make_config(alpha, beta, seed, args.method, smoke=args.smoke,
                             overrides=args.config_overrides)
        workdir = (root / config.dataset.replace("/", "_") / loss /
                   f"alpha{alpha:g}_beta{beta:g}" / f"seed{seed}")
        common.check_workdir(workdir, config)
        if common.finished_metrics(workdir, DOMAIN_METRIC) is not None:
          common.log(f"[skip] {workdir} (finished)")
          continue
        if dataset is None:
          dataset = load_domain_dataset(config, args.smoke)
        common.log(f"[run] {workdir}")
        common.write_json(workdir / common.RUN_RECORD, {
            "experiment": "pacs_domains", "dataset": config.dataset, "method": args.method,
            "loss": loss, "alpha": alpha, "beta": beta, "seed": seed,
            "smoke": args.smoke})
        metrics = train_with_domain_target(config, dataset, workdir)
        common.log(f"[done] {workdir}: class accuracy {metrics['linear_probe_acc']:.4f}, "
                   f"domain accuracy {metrics[DOMAIN_METRIC]:.4f}")
  figure = save_figure(root)
  if figure:
    common.log(f"figure: {figure}")


def load_domain_dataset(config, smoke: bool):
  """The dataset of ``config`` (with synthetic domains if ``smoke``)."""
  from gca_jax.training import feeds  # pylint: disable=g-import-not-at-top
  dataset = feeds.load_data(config)
  if smoke:
    dataset = synthetic_domain_dataset(dataset)
  if dataset.train.domains is None:
    raise common.ExperimentError(f"dataset {config.dataset!r} has no domain labels")
  return dataset


def main(argv=None) -> None:
  args, config_flags = make_parser().parse_known_args(argv)
  with common.one_line_errors():
    args.config_overrides = common.parse_config_overrides(config_flags)
    run(args)


if __name__ == "__main__":
  main()
