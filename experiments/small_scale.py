r"""Every method at small scale on the embedded digits: accuracy, geometry, WDM.

All nine methods of the paper's Table 2 (`experiments.methods`) plus SimSiam,
each for every seed, under one shared small config (`small_config`: the
trainer's "small" digits setup, ``EPOCHS`` epochs, a kNN evaluation after
every epoch and a linear probe plus a random-init probe at the end). The
table reports, as mean +/- std over seeds, beside a randomly initialised
encoder:

* the linear-probe and kNN accuracies of the final encoder;
* the alignment and uniformity of the projections (train means of the last
  epoch, `gca_jax.metrics`);
* the WDM lower bound (`gca_jax.metrics.wdm_lower_bound`) of the encoder's
  features of two fixed augmented views of the test subset
  (`gca_jax.evaluation.view_wdm`), logged with every evaluation, so per epoch.

and the Spearman rank correlation between the WDM bound and accuracy: across
all runs (final bound vs linear-probe accuracy) and across each run's epochs
(the per-epoch bound vs that epoch's kNN accuracy: the linear probe runs only
at the end; the mean over runs is reported).

Each run has its own workdir ``<root>/<method>/seed<k>`` (`runs.run_pretraining`:
finished runs are skipped, interrupted ones continue), and
``<out>/small_scale.json`` and ``<out>/small_scale.md`` are rewritten after
every run, so an interrupted table is simply run again.

Sizing: the default (``EPOCHS`` = 8 epochs of 22 steps at batch 64, 8 kNN
evaluations, two 200-step probes per run) ran all 30 runs in 8.5 minutes
of wall time on an otherwise idle 2-core CPU machine, most of it
compilation; with the two cores shared (load average 9) one GCA-UOT run took
90 s instead, so allow about 40 minutes on a busy machine.

    python -m experiments.small_scale --seeds=0,1,2 --root=runs/small_scale
    python -m experiments.small_scale --smoke --root=/tmp/small_scale_smoke
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from absl import flags

from experiments import entry, methods, runs

SIMSIAM = "SimSiam"
LABELS = (*methods.METHOD_LABELS, SIMSIAM)
RANDOM_INIT = "random init"
EPOCHS = 8
SMOKE_EPOCHS = 2
SMOKE_LABELS = ("INCE", SIMSIAM)
PROBE_STEPS = 200
RESULTS_JSON = "small_scale.json"
RESULTS_MD = "small_scale.md"
# Column -> (metrics.json key of the trained encoder, of the random-init one).
PROBE_KEY, WDM_KEY = "linear_probe_acc", "wdm_lower_bound"
COLUMNS = {
    "linear probe": (PROBE_KEY, "random_init_linear_probe_acc"),
    "kNN": ("knn_acc", "random_init_knn_acc"),
    "alignment": ("final_alignment", None),
    "uniformity": ("final_uniformity", None),
    "WDM bound": (WDM_KEY, "random_init_wdm_lower_bound"),
}


def method_of(label: str, implementation: str) -> methods.Method:
  """Table 2's row ``label`` (`methods.method`), or SimSiam."""
  if label == SIMSIAM:
    return methods.Method(SIMSIAM, "simsiam", {})
  return methods.method(label, implementation)


def small_config(m: methods.Method, seed: int, *, epochs: int, overrides: dict):
  """The shared small config training ``m`` with ``seed``."""
  from gca_jax.training import config as config_lib  # pylint: disable=g-import-not-at-top
  config = methods.configure_method(config_lib.get_config("small"), m)
  config.update_from_flattened_dict({
      "seed": seed, "epochs": epochs, "eval_every_epochs": 1, "linear_probe": True,
      "linear_probe_steps": PROBE_STEPS, "probe_random_init": True,
      "checkpoint_every_epochs": epochs})
  return entry.apply_overrides(config, overrides)


def spearman(x, y) -> float:
  """Spearman's rank correlation of two equal-length samples (average ranks
  for ties); NaN with fewer than 3 points or a constant sample.

  Examples:
    >>> spearman([1, 2, 3, 4], [10, 20, 25, 100])
    1.0
    >>> spearman([1, 2, 3], [3, 2, 1])
    -1.0
  """
  x, y = np.asarray(x, float), np.asarray(y, float)
  if len(x) != len(y):
    raise ValueError(f"samples of different lengths {len(x)} and {len(y)}")
  if len(x) < 3:
    return math.nan
  rx, ry = _ranks(x), _ranks(y)
  if rx.std() == 0 or ry.std() == 0:
    return math.nan
  return float(np.corrcoef(rx, ry)[0, 1])


def _ranks(values: np.ndarray) -> np.ndarray:
  order = np.argsort(values, kind="stable")
  ranks = np.empty(len(values))
  ranks[order] = np.arange(1, len(values) + 1)
  for value in np.unique(values):  # ties share their mean rank
    tied = values == value
    ranks[tied] = ranks[tied].mean()
  return ranks


def epoch_series(metrics: dict) -> list[dict]:
  """(epoch, kNN accuracy, WDM bound) of the trained encoder's evaluations."""
  return [{"epoch": r["epoch"], "knn_acc": r["accuracy"], "wdm": r.get("wdm_lower_bound")}
          for r in metrics.get("evaluations", [])
          if r.get("protocol") == "knn" and r.get("encoder") == "trained"]


def _mean_std(values) -> dict:
  values = [v for v in values if v is not None and math.isfinite(v)]
  if not values:
    return {"mean": None, "std": None, "n": 0}
  return {"mean": float(np.mean(values)), "std": float(np.std(values)), "n": len(values)}


def summarise(results: dict) -> dict:
  """The table of ``results`` (``{method: {seed: {"metrics", "epochs"}}}``)."""
  rows = {}
  for label, by_seed in results.items():
    rows[label] = {c: _mean_std([r["metrics"].get(key) for r in by_seed.values()])
                   for c, (key, _) in COLUMNS.items()}
  all_runs = [r for by_seed in results.values() for r in by_seed.values()]
  # The random-init encoder depends on the seed only: one value per seed.
  random_by_seed = {seed: r["metrics"] for by_seed in results.values()
                    for seed, r in by_seed.items()}
  rows[RANDOM_INIT] = {c: _mean_std([m.get(key) for m in random_by_seed.values()])
                       if key else _mean_std([]) for c, (_, key) in COLUMNS.items()}
  per_run = [spearman([e["wdm"] for e in r["epochs"]], [e["knn_acc"] for e in r["epochs"]])
             for r in all_runs]
  per_run = [v for v in per_run if math.isfinite(v)]
  # For comparison, every other column's correlation with the probe across
  # runs, and the bound's across the methods of each seed (the seed, through
  # the initialisation and the augmentations, moves every method's bound).
  across = {c: _probe_correlation(all_runs, key) for c, (key, _) in COLUMNS.items()
            if key != PROBE_KEY}
  within_seed = {seed: _probe_correlation(
      [by_seed[seed] for by_seed in results.values() if seed in by_seed], WDM_KEY)
      for seed in random_by_seed}
  return {"rows": rows, "spearman_wdm_probe_across_runs": across["WDM bound"],
          "spearman_probe_across_runs": across,
          "spearman_wdm_probe_within_seed": within_seed,
          "spearman_wdm_knn_across_epochs": _mean_std(per_run)}


def _probe_correlation(some_runs, key: str):
  """Spearman's rho of ``key`` with the linear probe over ``some_runs`` (None if undefined)."""
  return _finite(spearman([r["metrics"].get(key, math.nan) for r in some_runs],
                          [r["metrics"].get(PROBE_KEY, math.nan) for r in some_runs]))


def _finite(value):
  return value if isinstance(value, float) and math.isfinite(value) else None


def _cell(stat: dict, percent: bool) -> str:
  if stat["mean"] is None:
    return "-"
  if percent:
    return f"{100 * stat['mean']:.2f} ± {100 * stat['std']:.2f}"
  return f"{stat['mean']:.3f} ± {stat['std']:.3f}"


def markdown(summary: dict, *, seeds, epochs: int) -> str:
  """The table as Markdown (accuracies in %)."""
  header = "| method | " + " | ".join(COLUMNS) + " |"
  lines = [f"# Small-scale table (digits, {epochs} epochs, seeds "
           f"{', '.join(map(str, seeds))}; mean ± std over seeds)", "", header,
           "|" + " --- |" * (len(COLUMNS) + 1)]
  for label, row in summary["rows"].items():
    cells = [_cell(row[c], c in ("linear probe", "kNN")) for c in COLUMNS]
    lines.append(f"| {label} | " + " | ".join(cells) + " |")
  across = summary["spearman_wdm_probe_across_runs"]
  epochs_stat = summary["spearman_wdm_knn_across_epochs"]
  others = ", ".join(f"{c} {_rho(v)}" for c, v in summary["spearman_probe_across_runs"].items()
                     if c != "WDM bound")
  seeds_text = ", ".join(f"seed {k} {_rho(v)}"
                         for k, v in summary["spearman_wdm_probe_within_seed"].items())
  lines += ["", "Spearman rank correlation of the WDM bound with accuracy: across all "
            f"runs (final bound vs linear probe) {_rho(across)}; "
            f"across each run's epochs (bound vs kNN) {_cell(epochs_stat, False)} "
            f"(mean ± std over {epochs_stat['n']} runs); across the methods of one seed "
            f"{seeds_text}. For comparison, across all runs with the linear probe: {others}.",
            ""]
  return "\n".join(lines)


def _rho(value) -> str:
  return "-" if value is None else f"{value:.3f}"


def define_flags(flag_values: flags.FlagValues, argv) -> None:
  entry.define_run_flags(flag_values, argv, default_root="runs/small_scale")
  define = dict(flag_values=flag_values)
  flags.DEFINE_string("out", None, "Directory of small_scale.json / .md (default: --root).",
                      **define)
  flags.DEFINE_string("methods", None, f"Comma list of {', '.join(LABELS)} or 'all' "
                      f"(default: all; --smoke: {','.join(SMOKE_LABELS)}).", **define)
  flags.DEFINE_integer("epochs", None, f"Epochs per run (default {EPOCHS}; --smoke: "
                       f"{SMOKE_EPOCHS}).", **define)
  flags.DEFINE_enum("implementation", "published", methods.IMPLEMENTATIONS,
                    "published: gca_jax.reference presets; clean: gca_jax.losses.", **define)


def run(args) -> dict:
  """Trains every (method, seed) run, rewriting the table after each; returns it."""
  labels = entry.select(entry.split_names(args.methods or (
      ",".join(SMOKE_LABELS) if args.smoke else "all")), LABELS, "methods")
  if args.epochs is not None and "epochs" in args.config_overrides:
    raise entry.ExperimentError("--epochs and --config.epochs both set the epochs of every "
                                "run; pass one of them")
  epochs = args.epochs or (SMOKE_EPOCHS if args.smoke else EPOCHS)
  if epochs < 1:
    raise entry.ExperimentError(f"--epochs must be >= 1, got {epochs}")
  root, out = Path(args.root), Path(args.out or args.root)
  results: dict = {}
  for label in labels:
    m = method_of(label, args.implementation)
    for seed in args.seeds:
      config = small_config(m, seed, epochs=epochs, overrides=args.config_overrides)
      record = {"experiment": "small_scale", "method": label, "dataset": config.dataset,
                "seed": seed, "loss": m.loss, "implementation": args.implementation,
                "epochs": epochs, "smoke": args.smoke}
      metrics = runs.run_pretraining(config, root / m.slug / f"seed{seed}", record)
      results.setdefault(label, {})[str(seed)] = {"metrics": _kept(metrics),
                                                  "epochs": epoch_series(metrics)}
      summary = summarise(results)
      runs.write_json(out / RESULTS_JSON, {"epochs": epochs, "seeds": list(args.seeds),
                                           "runs": results, **summary})
      (out / RESULTS_MD).write_text(markdown(summary, seeds=args.seeds, epochs=epochs))
  runs.log(f"table: {out / RESULTS_MD}")
  return summary


def _kept(metrics: dict) -> dict:
  keys = {k for pair in COLUMNS.values() for k in pair if k}
  return {k: metrics[k] for k in sorted(keys) if k in metrics}


def main(argv=None) -> None:
  entry.main(define_flags, run, argv)


if __name__ == "__main__":
  main()
