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
        --alphas=0,0.1,0.2,0.5,1 --betas=0 --seeds=0,1,2 --root=runs/pacs
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

from pathlib import Path

from absl import flags

from experiments import entry, methods, plotting, runs, trainer

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
  workdir = Path(workdir)
  trainer.train_and_evaluate(config, workdir, dataset=dataset)
  encoder = trainer.load_encoder(workdir, dataset=dataset)
  train_features = encoder.split_features(dataset.train)
  test_features = encoder.split_features(dataset.test)
  results, records = {}, []
  probes = [(DOMAIN_METRIC, "domain", dataset.train.domains, dataset.test.domains,
             len(dataset.domain_names))]
  metrics_file = trainer.metrics_file(workdir)
  if "linear_probe_acc" not in metrics_file.read():  # e.g. --config.linear_probe=false
    probes.append(("linear_probe_acc", "class", dataset.train.labels,
                   dataset.test.labels, dataset.num_classes))
  for name, target, train_ids, test_ids, num_classes in probes:
    results[name] = trainer.probe_accuracy(encoder, train_features, train_ids,
                                           test_features, test_ids, num_classes)
    records.append({"protocol": "linear", "predicts": target, "step": encoder.step,
                    "epoch": encoder.step // encoder.steps_per_epoch,
                    "accuracy": results[name], "encoder": "trained"})
  return metrics_file.update(results, evaluations=records)


def make_config(alpha: float, beta: float, seed: int, method: str, *,
                smoke: bool = False, overrides: dict | None = None):
  """The config of one run: PACS's (the small one if ``smoke``), the clean
  loss of ``method`` against the domain target (alpha, beta), ``seed``, then
  the ``--config.*`` ``overrides``."""
  config = runs.load_config("pacs")
  if smoke:
    trainer.small(config)
  methods.configure_method(config, methods.method(method, "clean"))
  config.target = "domain"
  config.target_alpha = alpha
  config.target_beta = beta
  config.linear_probe = True          # the class probe
  config.probe_random_init = False
  config.seed = seed
  return entry.apply_overrides(config, overrides or {})


def save_figure(root: Path) -> Path | None:
  """Class and domain accuracy against alpha - beta (mean over seeds)."""
  plt = plotting.pyplot()
  by_gap: dict[float, list[tuple[float, float]]] = {}
  for record, metrics, _ in runs.collect_runs(root):
    if record.get("experiment") == "pacs_domains" and DOMAIN_METRIC in metrics:
      gap = record["alpha"] - record["beta"]
      by_gap.setdefault(gap, []).append((metrics["linear_probe_acc"],
                                         metrics[DOMAIN_METRIC]))
  if not by_gap:
    return None
  fig, ax = plt.subplots(figsize=(4.5, 3.2))
  for column, name, color in ((0, "class", "tab:blue"), (1, "domain", "tab:red")):
    plotting.errorbar_curve(
        ax, {gap: [100 * v[column] for v in pairs] for gap, pairs in by_gap.items()},
        color=color, label=f"{name} accuracy")
  ax.set_xlabel(r"$\alpha - \beta$")
  ax.set_ylabel("linear-probe accuracy (%)")
  ax.legend()
  return plotting.save_figure(fig, Path(root) / FIGURE)


DOMAIN_TARGET_METHODS = ("INCE", "GCA-INCE", "GCA-RINCE", "IOT", "IOT-uni", "GCA-UOT")


def define_flags(flag_values: flags.FlagValues, argv) -> None:
  entry.define_run_flags(flag_values, argv, default_root="runs/pacs_domains")
  define = dict(flag_values=flag_values)
  entry.define_number_list("alphas", None, "Same-domain weights (default 0,0.1,0.2,0.5,1; "
                           "--smoke: 0,1).", kind=float, **define)
  entry.define_number_list("betas", [0.0], "Cross-domain weights (default 0).", kind=float,
                           **define)
  flags.DEFINE_enum("method", "GCA-UOT", DOMAIN_TARGET_METHODS,
                    "Loss (gca_jax.losses, which take target=).", **define)


def run(args) -> None:
  """Trains every (alpha, beta, seed) run (skipping finished ones), then plots."""
  plotting.pyplot()  # fail now, not after the runs, without matplotlib
  loss = methods.method(args.method, "clean").loss
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
        trainer.check_workdir(workdir, config)
        if runs.finished_metrics(workdir, DOMAIN_METRIC) is not None:
          runs.log(f"[skip] {workdir} (finished)")
          continue
        if dataset is None:
          dataset = load_domain_dataset(config, args.smoke)
        runs.log(f"[run] {workdir}")
        runs.write_json(workdir / runs.RUN_RECORD, {
            "experiment": "pacs_domains", "dataset": config.dataset, "method": args.method,
            "loss": loss, "alpha": alpha, "beta": beta, "seed": seed,
            "smoke": args.smoke})
        metrics = train_with_domain_target(config, dataset, workdir)
        runs.log(f"[done] {workdir}: class accuracy {metrics['linear_probe_acc']:.4f}, "
                 f"domain accuracy {metrics[DOMAIN_METRIC]:.4f}")
  figure = save_figure(root)
  if figure:
    runs.log(f"figure: {figure}")


def load_domain_dataset(config, smoke: bool):
  """The dataset of ``config`` (with synthetic domains if ``smoke``)."""
  dataset = trainer.load_data(config)
  if smoke:
    dataset = synthetic_domain_dataset(dataset)
  if dataset.train.domains is None:
    raise entry.ExperimentError(f"dataset {config.dataset!r} has no domain labels")
  return dataset


def main(argv=None) -> None:
  entry.main(define_flags, run, argv)


if __name__ == "__main__":
  main()
