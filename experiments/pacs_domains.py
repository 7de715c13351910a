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
    python -m experiments.pacs_domains --data=styled_cifar10 --scale=cpu \
        --archive=/path/to/cifar10_jpeg.npz --method=GCA-INCE \
        --alphas=0,1,0.2,0.5 --seeds=0,1,2 --root=runs/domains
    python -m experiments.pacs_domains --smoke --root=/tmp/pacs_smoke

``--data`` picks the four-domain data: PACS (``--config.data_dir``), or a
styled dataset built from real images (`gca_jax.data.styled`: every image
rendered once as photo, sketch, cartoon or painting, its domain):
``styled_digits`` (embedded) or ``styled_cifar10`` (the CIFAR-10 JPEG
archive at ``--archive``). ``--scale=cpu`` shrinks the styled runs to a
2-core CPU (`experiments.cpu_scale`). ``--smoke`` runs the small config on
styled 8x8 digits. Each run has its own workdir
``<root>/<dataset>/<loss>/alpha<a>_beta<b>/seed<k>`` with checkpoints
(interrupted runs resume; a run counter ``[k/N]`` shows the progress) and
a ``metrics.json`` holding ``linear_probe_acc`` (class),
``domain_linear_probe_acc`` and the raw-pixel probes of the sanity
baseline (``raw_pixel_domain_linear_probe_acc``,
``raw_pixel_linear_probe_acc``), all also in its ``evaluations`` history
(protocol ``linear``). After the sweep, ``<root>/pacs_domains.json`` holds
every run's numbers and, per (dataset, method), the mean and std over seeds
of each ``alpha - beta`` with the pre-stated test (`summarise`,
`experiments.verdicts`), ``<root>/pacs_domains.md`` the same as tables,
and ``<root>/pacs_domains.png`` the figure (class and domain accuracy
against ``alpha - beta``, mean ± std over seeds; needs matplotlib: ``pip
install -e '.[experiments]'``); ``--report_only`` rewrites them from the
finished runs. ``python -m experiments.report`` tabulates the runs too.
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

from experiments import cpu_scale, entry, methods, plotting, runs, tables, trainer
from experiments import verdicts
from gca_jax.data import styled

DOMAIN_METRIC = "domain_linear_probe_acc"
FIGURE = "pacs_domains.png"
SUMMARY_JSON = "pacs_domains.json"
SUMMARY_MD = "pacs_domains.md"
# Linear probes on the raw pixels (the sanity baseline: how separable the
# domains and classes are before any training), stored with every run.
RAW_DOMAIN_METRIC = "raw_pixel_domain_linear_probe_acc"
RAW_CLASS_METRIC = "raw_pixel_linear_probe_acc"
# --data: the experiment config (experiments/configs) and the dataset it
# trains on ("{archive}": the load_dataset name of --archive).
DOMAIN_DATA = {
    "pacs": ("pacs", None),
    "styled_digits": ("digits", styled.PREFIX + "digits"),
    "styled_cifar10": ("cifar10", styled.PREFIX + "{archive}"),
}
# The verdict's contrast: the largest alpha - beta against the plain target.
NO_DOMAIN_WEIGHT = 0.0


def train_with_domain_target(config, dataset, workdir: Path) -> dict:
  """Pre-trains ``config`` (``config.target="domain"``) on ``dataset`` with
  the trainer (`gca_jax.training.train_and_evaluate`, which continues an
  interrupted run), then fits the domain probe on the frozen features (the
  class probe is the trainer's ``linear_probe_acc``) and, as the sanity
  baseline, the domain and class probes on the raw pixels (scaled to [0, 1]);
  merges the results into ``metrics.json`` and returns it."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  workdir = Path(workdir)
  trainer.train_and_evaluate(config, workdir, dataset=dataset)
  encoder = trainer.load_encoder(workdir, dataset=dataset)
  features = {"trained": (encoder.split_features(dataset.train),
                          encoder.split_features(dataset.test))}
  features["raw pixels"] = tuple(
      np.asarray(split.images, np.float32).reshape(len(split), -1) / 255.0
      for split in (dataset.train, dataset.test))
  domains = (dataset.train.domains, dataset.test.domains, len(dataset.domain_names))
  classes = (dataset.train.labels, dataset.test.labels, dataset.num_classes)
  probes = [(DOMAIN_METRIC, "domain", "trained", domains),
            (RAW_DOMAIN_METRIC, "domain", "raw pixels", domains),
            (RAW_CLASS_METRIC, "class", "raw pixels", classes)]
  metrics_file = trainer.metrics_file(workdir)
  if "linear_probe_acc" not in metrics_file.read():  # e.g. --config.linear_probe=false
    probes.append(("linear_probe_acc", "class", "trained", classes))
  results, records = {}, []
  for name, target, encoded_by, (train_ids, test_ids, num_classes) in probes:
    train_features, test_features = features[encoded_by]
    results[name] = trainer.probe_accuracy(encoder, train_features, train_ids,
                                           test_features, test_ids, num_classes)
    records.append({"protocol": "linear", "predicts": target, "step": encoder.step,
                    "epoch": encoder.step // encoder.steps_per_epoch,
                    "accuracy": results[name], "encoder": encoded_by})
  return metrics_file.update(results, evaluations=records)


def make_config(alpha: float, beta: float, seed: int, method: str, *,
                data: str = "pacs", archive: str | None = None, scale: str = "paper",
                smoke: bool = False, overrides: dict | None = None):
  """The config of one run: the config of ``data`` (`DOMAIN_DATA`; the small
  one on styled digits if ``smoke``) at ``scale`` (`cpu_scale`), the clean
  loss of ``method`` against the domain target (alpha, beta), ``seed``, then
  the ``--config.*`` ``overrides``."""
  config_name, dataset = DOMAIN_DATA[data]
  config = runs.load_config(config_name)
  if smoke:
    trainer.small(config)
    dataset = styled.PREFIX + config.dataset
  elif scale == "cpu":
    cpu_scale.apply(config, config_name)
  if dataset is not None and "{archive}" in dataset:
    dataset = dataset.format(archive=cpu_scale.archive_dataset(archive))
  if dataset is not None:
    config.dataset = dataset
  methods.configure_method(config, methods.method(method, "clean"))
  config.target = "domain"
  config.target_alpha = alpha
  config.target_beta = beta
  config.linear_probe = True          # the class probe
  config.probe_random_init = False
  config.seed = seed
  return entry.apply_overrides(config, overrides or {})


def dataset_slug(name: str) -> str:
  """A folder name for the dataset ``name``: an archive path by its file's stem.

  Examples:
    >>> dataset_slug("styled:npz:/data/cifar10_jpeg.npz"), dataset_slug("pacs/photo")
    ('styled_cifar10_jpeg', 'pacs_photo')
  """
  parts = name.split(":")
  if len(parts) > 1 and parts[-2] == "npz":
    parts = [*parts[:-2], Path(parts[-1]).stem]
  return "_".join(parts).replace("/", "_")


def run_rows(root: Path) -> list[dict]:
  """One row per finished run under ``root``: what it is and its accuracies."""
  rows = []
  for record, metrics, _ in runs.collect_runs(root):
    if record.get("experiment") == "pacs_domains" and DOMAIN_METRIC in metrics:
      rows.append({
          "dataset": record.get("data", record["dataset"]), "method": record["method"],
          "alpha": record["alpha"], "beta": record["beta"], "seed": record["seed"],
          "class_acc": metrics["linear_probe_acc"], "domain_acc": metrics[DOMAIN_METRIC],
          "knn_acc": metrics.get("knn_acc"),
          "raw_pixel_class_acc": metrics.get(RAW_CLASS_METRIC),
          "raw_pixel_domain_acc": metrics.get(RAW_DOMAIN_METRIC),
          "train_seconds": metrics.get("train_seconds")})
  return rows


def _groups(rows: list[dict]) -> dict:
  groups: dict = {}
  for row in rows:
    groups.setdefault((row["dataset"], row["method"]), []).append(row)
  return groups


def summarise(rows: list[dict]) -> list[dict]:
  """Per (dataset, method): mean and std over seeds of each alpha - beta's
  accuracies, and the pre-stated test (`verdicts.paired_test`): the domain
  accuracy at the largest alpha - beta against alpha - beta = 0, paired by
  seed, and the class accuracy likewise."""
  summaries = []
  for (dataset, method), group in sorted(_groups(rows).items()):
    by_gap: dict = {}
    for row in group:
      by_gap.setdefault(round(row["alpha"] - row["beta"], 6), {})[row["seed"]] = row
    gaps = []
    for gap in sorted(by_gap):
      seeds = by_gap[gap]
      gaps.append({"alpha_minus_beta": gap, "seeds": sorted(seeds), **{
          f"{key}_{stat}": value
          for key in ("class_acc", "domain_acc", "raw_pixel_domain_acc")
          for stat, value in zip(("mean", "std"), verdicts.mean_std(
              [r[key] for r in seeds.values()]))}})
    summary = {"dataset": dataset, "method": method, "by_alpha_minus_beta": gaps}
    top = max(by_gap)
    if NO_DOMAIN_WEIGHT in by_gap and top > NO_DOMAIN_WEIGHT:
      base, high = by_gap[NO_DOMAIN_WEIGHT], by_gap[top]
      shared = sorted(set(base) & set(high))
      domain = verdicts.paired_test([high[s]["domain_acc"] for s in shared],
                                    [base[s]["domain_acc"] for s in shared])
      klass = verdicts.paired_test([high[s]["class_acc"] for s in shared],
                                   [base[s]["class_acc"] for s in shared])
      summary["test"] = {"contrast": f"alpha - beta = {top:g} vs 0", "seeds": shared,
                         "domain": domain, "class": klass,
                         "verdict": verdicts.domain_target_verdict(domain, klass)}
    summaries.append(summary)
  return summaries


def summary_markdown(summaries: list[dict]) -> str:
  """The summaries as Markdown tables (accuracies in %, mean ± std over seeds)."""
  parts = []
  for summary in summaries:
    rows = [[f"{g['alpha_minus_beta']:g}", len(g["seeds"]),
             verdicts.percent(g["class_acc_mean"], g["class_acc_std"]),
             verdicts.percent(g["domain_acc_mean"], g["domain_acc_std"]),
             verdicts.percent(g["raw_pixel_domain_acc_mean"], g["raw_pixel_domain_acc_std"])]
            for g in summary["by_alpha_minus_beta"]]
    text = (f"#### {summary['dataset']}, {summary['method']}\n\n" + tables.markdown_table(
        ["alpha - beta", "seeds", "class acc (%)", "domain acc (%)",
         "raw-pixel domain acc (%)"], rows))
    if "test" in summary:
      test = summary["test"]
      text += ("\n\n" + f"Test ({test['contrast']}, paired over seeds {test['seeds']}): "
               f"domain {verdicts.describe(test['domain'])}; class "
               f"{verdicts.describe(test['class'])}. Verdict: **{test['verdict']}**.")
    parts.append(text)
  return "\n\n".join(parts)


def write_summary(root: Path) -> Path | None:
  """``<root>/pacs_domains.json`` (every run's numbers and the summaries) and
  ``<root>/pacs_domains.md``; None if no run has finished."""
  rows = run_rows(root)
  if not rows:
    return None
  summaries = summarise(rows)
  runs.write_json(Path(root) / SUMMARY_JSON, {"runs": rows, "summaries": summaries})
  (Path(root) / SUMMARY_MD).write_text(summary_markdown(summaries) + "\n")
  return Path(root) / SUMMARY_MD


def save_figure(root: Path) -> Path | None:
  """Class and domain accuracy against alpha - beta (mean ± std over seeds),
  one panel per (dataset, method), with the raw-pixel domain probe dotted."""
  plt = plotting.pyplot()
  groups = _groups(run_rows(root))
  if not groups:
    return None
  fig, axes = plt.subplots(1, len(groups), figsize=(4.2 * len(groups), 3.2), squeeze=False)
  for ax, ((dataset, method), group) in zip(axes[0], sorted(groups.items())):
    for key, name, color in (("class_acc", "class", "tab:blue"),
                             ("domain_acc", "domain", "tab:red")):
      by_gap: dict = {}
      for row in group:
        by_gap.setdefault(row["alpha"] - row["beta"], []).append(100 * row[key])
      plotting.errorbar_curve(ax, by_gap, color=color, label=f"{name} accuracy")
    raw = verdicts.mean_std([row["raw_pixel_domain_acc"] for row in group])[0]
    if raw is not None:
      ax.axhline(100 * raw, color="tab:red", linestyle=":", label="domain, raw pixels")
    ax.set_title(f"{dataset}, {method}", fontsize=9)
    ax.set_xlabel(r"$\alpha - \beta$")
    ax.set_ylabel("linear-probe accuracy (%)")
    ax.legend(fontsize=8)
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
  flags.DEFINE_enum("data", "pacs", list(DOMAIN_DATA),
                    "pacs (--config.data_dir), or a styled four-domain dataset "
                    "(gca_jax.data.styled): styled_digits (embedded) or styled_cifar10 "
                    "(--archive); --smoke: styled digits.", **define)
  flags.DEFINE_string("archive", None, "styled_cifar10: path of the CIFAR-10 JPEG archive "
                      "(.npz with train_jpeg/test_jpeg).", **define)
  flags.DEFINE_enum("scale", "paper", cpu_scale.SCALES,
                    "paper: the dataset's config; cpu: experiments.cpu_scale's reduction "
                    "(styled_digits, styled_cifar10).", **define)
  flags.DEFINE_bool("report_only", False, "Train nothing: write the summary and the figure "
                    "of the runs finished under --root.", **define)


def run(args) -> None:
  """Trains every (alpha, beta, seed) run (skipping finished ones), then
  writes the summary and the figure."""
  plotting.pyplot()  # fail now, not after the runs, without matplotlib
  loss = methods.method(args.method, "clean").loss
  alphas = args.alphas or ([0.0, 1.0] if args.smoke else [0.0, 0.1, 0.2, 0.5, 1.0])
  root = Path(args.root)
  if args.report_only:
    return write_report(root)
  settings = dict(data=args.data, archive=args.archive, scale=args.scale,
                  smoke=args.smoke, overrides=args.config_overrides)
  grid = [(alpha, beta, seed) for alpha in alphas for beta in args.betas
          for seed in args.seeds]
  data = runs.DataCache(cpu_scale.test_examples(args.scale, DOMAIN_DATA[args.data][0]))
  for number, (alpha, beta, seed) in enumerate(grid, start=1):
    config = make_config(alpha, beta, seed, args.method, **settings)
    slug = dataset_slug(config.dataset)
    workdir = root / slug / loss / f"alpha{alpha:g}_beta{beta:g}" / f"seed{seed}"
    progress = f"[{number}/{len(grid)}]"
    trainer.check_workdir(workdir, config)
    if runs.finished_metrics(workdir, DOMAIN_METRIC) is not None:
      runs.log(f"{progress} [skip] {workdir} (finished)")
      continue
    dataset = data.get(config)
    if dataset.train.domains is None:
      raise entry.ExperimentError(f"dataset {config.dataset!r} has no domain labels")
    runs.log(f"{progress} [{'resume' if trainer.holds_checkpoint(workdir) else 'run'}] "
             f"{workdir}")
    runs.write_json(workdir / runs.RUN_RECORD, {
        "experiment": "pacs_domains", "dataset": config.dataset, "data": slug,
        "method": args.method, "loss": loss, "alpha": alpha, "beta": beta, "seed": seed,
        "scale": args.scale, "test_examples": len(dataset.test), "smoke": args.smoke})
    metrics = train_with_domain_target(config, dataset, workdir)
    runs.log(f"{progress} [done] {workdir}: class accuracy "
             f"{metrics['linear_probe_acc']:.4f}, domain accuracy "
             f"{metrics[DOMAIN_METRIC]:.4f} (raw pixels: {metrics[RAW_DOMAIN_METRIC]:.4f})")
  write_report(root)


def write_report(root: Path) -> None:
  """The summary (`write_summary`) and the figure of the runs finished under ``root``."""
  written = [path for path in (write_summary(root), save_figure(root)) if path]
  for path in written:
    runs.log(f"wrote {path}")
  if not written:
    runs.log(f"no finished run under {root}")


def main(argv=None) -> None:
  entry.main(define_flags, run, argv)


if __name__ == "__main__":
  main()
