r"""Collects experiment workdirs into Markdown tables (Table 2's layout).

Walks ``--root`` (any number of them) for runs written by ``table2.py``,
``sensitivity.py`` and ``pacs_domains.py`` (each workdir holds an
``experiment.json`` and a ``metrics.json``) and prints:

* Table 2: one row per method, one column per dataset / augmentation
  policy (and CIFAR-10-C: the mean accuracy over the evaluated corruptions),
  each cell ``ours mean ± std (n seeds) [paper mean ± std]`` in % linear-probe
  accuracy; one table per loss implementation (published presets / clean);
* sensitivity: linear accuracy per method against eps and iterations;
* PACS domain targets: class and domain accuracy per (alpha, beta).

The paper's numbers: only those given in this repository's brief are filled
in (CIFAR-10 with standard augmentations: INCE 92.01 ± 0.40, GCA-UOT
92.61 ± 0.32); every other paper cell reads "n/a" rather than a number that
could not be checked.

    python -m experiments.report --root=runs/table2 --root=runs/sensitivity \
        --output=runs/report.md
"""

from __future__ import annotations

import argparse
from pathlib import Path

try:
  from experiments import common, table2
  from experiments.pacs_domains import DOMAIN_METRIC
except ImportError:  # run as a script: python experiments/report.py
  import common
  import table2
  from pacs_domains import DOMAIN_METRIC

# (method, dataset, policy) -> (mean, std) in % from the paper's Table 2.
PAPER_TABLE2 = {
    ("INCE", "cifar10", "simclr"): (92.01, 0.40),
    ("GCA-UOT", "cifar10", "simclr"): (92.61, 0.32),
}
POLICY_TITLES = {"simclr": "", "large_erase": "large erase", "brightness": "brightness",
                 "strong_crop": "strong crop"}
CORRUPTED = "corrupted"


def paper_cell(method: str, dataset: str, policy: str) -> str:
  value = PAPER_TABLE2.get((method, dataset, policy))
  return f"{value[0]:.2f} ± {value[1]:.2f}" if value else "n/a"


def column_title(dataset: str, policy: str) -> str:
  if policy == CORRUPTED:
    return "CIFAR-10-C" if dataset == "cifar10" else f"{table2.DATASETS[dataset].title}-C"
  title = table2.DATASETS[dataset].title if dataset in table2.DATASETS else dataset
  return f"{title} {POLICY_TITLES[policy]}".strip()


def table2_cells(runs):
  """{(method, (dataset, policy)): [accuracy per seed]}, corrupted included."""
  cells: dict = {}
  for record, metrics, workdir in runs:
    key = (record["method"], (record["dataset"], record["policy"]))
    cells.setdefault(key, []).append(metrics["linear_probe_acc"])
    corrupted = common.read_json(workdir / table2.CORRUPTED_FILE)
    if corrupted and corrupted.get("accuracy"):
      accuracies = list(corrupted["accuracy"].values())
      cells.setdefault((record["method"], (record["dataset"], CORRUPTED)), []).append(
          sum(accuracies) / len(accuracies))
  return cells


def ordered_columns(columns):
  datasets = list(table2.DATASETS)
  policies = list(common.POLICIES) + [CORRUPTED]
  known = [c for c in columns if c[0] in datasets]
  return (sorted(known, key=lambda c: (policies.index(c[1]) > 0, datasets.index(c[0]),
                                       policies.index(c[1])))
          + sorted(c for c in columns if c[0] not in datasets))


def table2_section(runs) -> str:
  parts = []
  for implementation in sorted({r.get("implementation", "published") for r, _, _ in runs}):
    chosen = [run for run in runs if run[0].get("implementation", "published")
              == implementation]
    cells = table2_cells(chosen)
    columns = ordered_columns({column for _, column in cells})
    methods = [m for m in common.METHOD_LABELS if any((m, c) in cells for c in columns)]
    rows = []
    for m in methods:
      row = [m]
      for dataset, policy in columns:
        values = cells.get((m, (dataset, policy)), [])
        paper = paper_cell(m, dataset, policy if policy != CORRUPTED else "corrupted")
        row.append(f"{common.format_mean_std(values)} [{paper}]")
      rows.append(row)
    epochs = sorted({int(metrics.get("epochs", 0)) for _, metrics, _ in chosen})
    smoke = any(r.get("smoke") for r, _, _ in chosen)
    substituted = sorted({f"{r['dataset']} <- {r['data']}" for r, _, _ in chosen
                          if r.get("data", r["dataset"]) != r["dataset"]})
    notes = f" Data substituted: {'; '.join(substituted)}." if substituted else ""
    parts.append(
        f"### Table 2: linear-probe accuracy (%), losses: {implementation}\n\n"
        f"Cells: ours mean ± std over seeds (n) [paper]. Epochs: "
        f"{', '.join(map(str, epochs))}.{notes}"
        f"{' SMOKE RUNS (not results).' if smoke else ''}"
        "\n\n" + common.markdown_table(
            ["Method"] + [column_title(*c) for c in columns], rows))
  return "\n\n".join(parts)


def sensitivity_section(runs) -> str:
  parts = []
  for swept, fixed in (("eps", "iters"), ("iters", "eps")):
    cells: dict = {}
    for record, metrics, _ in runs:
      if record[fixed] == record[f"default_{fixed}"]:
        key = (record["method"], record["dataset"], record.get("implementation"))
        cells.setdefault(key, {}).setdefault(record[swept], []).append(
            metrics["linear_probe_acc"])
    values = sorted({v for per_value in cells.values() for v in per_value})
    rows = [[f"{m} ({d}, {impl})"] + [common.format_mean_std(per_value.get(v, []))
                                      for v in values]
            for (m, d, impl), per_value in sorted(cells.items())]
    header = ["Method (dataset, losses)"] + [f"{swept}={v:g}" for v in values]
    parts.append(f"### Sensitivity to {swept} (linear-probe accuracy %)\n\n"
                 + common.markdown_table(header, rows))
  return "\n\n".join(parts)


def domains_section(runs) -> str:
  cells: dict = {}
  for record, metrics, _ in runs:
    key = (record["dataset"], record["method"], record["alpha"], record["beta"])
    cells.setdefault(key, []).append((metrics["linear_probe_acc"],
                                      metrics.get(DOMAIN_METRIC, float("nan"))))
  rows = [[dataset, method, f"{alpha:g}", f"{beta:g}", f"{alpha - beta:g}",
           common.format_mean_std([v[0] for v in values]),
           common.format_mean_std([v[1] for v in values])]
          for (dataset, method, alpha, beta), values in sorted(cells.items())]
  return ("### Domain targets (Figure 1(B)): linear-probe accuracy (%)\n\n"
          + common.markdown_table(["Dataset", "Method", "alpha", "beta", "alpha - beta",
                                   "class", "domain"], rows))


def build_report(roots) -> str:
  runs = [run for root in roots for run in common.collect_runs(Path(root))]
  by_experiment: dict = {}
  for run in runs:
    by_experiment.setdefault(run[0].get("experiment"), []).append(run)
  sections = []
  if "table2" in by_experiment:
    sections.append(table2_section(by_experiment["table2"]))
  if "sensitivity" in by_experiment:
    sections.append(sensitivity_section(by_experiment["sensitivity"]))
  if "pacs_domains" in by_experiment:
    sections.append(domains_section(by_experiment["pacs_domains"]))
  if not sections:
    return f"No finished runs under {', '.join(map(str, roots))}.\n"
  return "\n\n".join(sections) + "\n"


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--root", action="append", required=True,
                      help="A directory of runs (repeatable).")
  parser.add_argument("--output", default=None, help="Also write the report here.")
  args = parser.parse_args(argv)
  report = build_report(args.root)
  print(report, end="")
  if args.output:
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(report)


if __name__ == "__main__":
  main()
