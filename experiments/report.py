r"""Collects experiment workdirs into Markdown tables (Table 2's layout).

Walks ``--root`` (any number of them) for runs written by ``table2.py``,
``sensitivity.py`` and ``pacs_domains.py`` (each workdir holds an
``experiment.json`` and a ``metrics.json``) and prints:

* Table 2, ours: one table per evaluation protocol and loss implementation
  (published presets / clean), one row per method, one column per dataset /
  augmentation policy (and CIFAR-10-C: the mean accuracy over the evaluated
  corruptions), each cell ``mean ± std (n seeds)`` in % test accuracy;
* Table 2 of the paper, all 72 cells (9 methods x 8 columns, mean ± std over
  5 seeds), read from ``experiments/data/table2.csv``: the numbers published
  in Table 2 of Chen, Lin, Liu, Xiao and Dyer, "Your contrastive learning
  problem is secretly a distribution alignment problem" (NeurIPS 2024);
* sensitivity: accuracy per method against eps and iterations;
* PACS domain targets: class and domain accuracy per (alpha, beta).

Every accuracy is labelled with its protocol (`RESULTS`):

* ``finetune``: `gca_jax.finetune`, the published code's CIFAR protocol (the
  whole encoder fine-tuned with a linear head for 200 epochs); reported as
  the best test accuracy over the epochs (model selection on the test set,
  what the paper reports) and, separately, the last epoch's;
* ``linear``: `gca_jax.evaluation.linear_probe`, a linear classifier on the
  frozen encoder's features of un-augmented images (full-batch AdamW);
* ``knn``: the weighted kNN monitor on frozen features (``--protocols``).

A paper number is printed beside one of ours only where our result was
measured the way the paper measured that column (`PAPER_PROTOCOLS`): only
the best-epoch ``finetune`` accuracy on CIFAR-10 and CIFAR-100 with the
standard augmentations. The paper's other columns use protocols this
repository does not run (see `PAPER_COLUMN_NOTES`), so ours stand alone there
and the paper's numbers appear only in its own table.

    python -m experiments.report --root=runs/table2 --root=runs/sensitivity \
        --output=runs/report.md
"""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

from absl import flags

from experiments import entry, table2, tables
from experiments.methods import METHOD_LABELS
from experiments.pacs_domains import DOMAIN_METRIC
from experiments import runs as runs_lib
from experiments.runs import collect_runs, read_json
from gca_jax.data import augment

PAPER_CSV = Path(__file__).resolve().parent / "data" / "table2.csv"
PAPER_COLUMNS = {
    "cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "svhn": "SVHN",
    "imagenet100": "ImageNet-100", "cifar10_ex": "CIFAR-10 extreme",
    "cifar100_ex": "CIFAR-100 extreme", "cifar10c": "CIFAR-10-C",
    "cifar10c_ex": "CIFAR-10-C extreme",
}


@dataclasses.dataclass(frozen=True)
class Result:
  """One accuracy a run may hold: its metrics.json key, its protocol, and
  the field of an ``evaluations`` record of that protocol holding it."""

  key: str
  protocol: str
  field: str
  title: str


RESULTS = {
    "finetune_best": Result(
        "finetune_best_acc", "finetune", "best_accuracy",
        "protocol finetune (whole encoder fine-tuned with a linear head, the published "
        "CIFAR protocol), best test epoch: model selection on the test set, as the paper "
        "reports"),
    "finetune_last": Result(
        "finetune_last_acc", "finetune", "last_accuracy",
        "protocol finetune (whole encoder fine-tuned with a linear head), last epoch"),
    "linear": Result(
        "linear_probe_acc", "linear", "accuracy",
        "protocol linear (linear probe on frozen features of un-augmented images, "
        "full-batch AdamW)"),
    "knn": Result("knn_acc", "knn", "accuracy",
                  "protocol knn (weighted kNN monitor on frozen features)"),
}
PROTOCOLS = ("finetune", "linear", "knn")
DEFAULT_PROTOCOLS = ("finetune", "linear")

# Which of our results measures a paper column the way the paper did (None:
# none does; the paper's number is then never printed beside ours).
PAPER_PROTOCOLS = {
    "cifar10": "finetune_best", "cifar100": "finetune_best",
    "svhn": None, "imagenet100": None, "cifar10_ex": None, "cifar100_ex": None,
    "cifar10c": None, "cifar10c_ex": None,
}
# How the published code measured each column, by groups of columns.
PAPER_COLUMN_NOTES = (
    (("cifar10", "cifar100"),
     "the whole encoder fine-tuned with a linear head, best test epoch of 200 (our "
     "finetune protocol)"),
    (("svhn", "imagenet100"),
     "a linear layer trained with Adam (lr 3e-4) on frozen features of resized, "
     "un-augmented images, last epoch (not run here)"),
    (("cifar10_ex", "cifar100_ex"),
     "fine-tuned as the standard columns, with the extreme augmentation also applied to "
     "the fine-tuning and the test images (not run here: our finetune protocol tests on "
     "clean images)"),
    (("cifar10c", "cifar10c_ex"),
     "fine-tuned on CIFAR-10, best test epoch on CIFAR-10-C as the released code loads "
     "it (its loader keeps the snow corruption, all five severities; not run here: our "
     "CIFAR-10-C cells are means over corruptions at one severity)"),
)

STANDARD = "simclr"
POLICY_TITLES = {"simclr": "", "large_erase": "large erase", "brightness": "brightness",
                 "strong_crop": "strong crop"}
CORRUPTED = "corrupted"


def load_paper_table(path: Path = PAPER_CSV) -> dict:
  """{(method, column): (mean, std)} in % from the paper's Table 2 CSV."""
  with open(path, newline="") as f:
    rows = list(csv.DictReader(f))
  table = {(row["method"], row["column"]): (float(row["mean"]), float(row["std"]))
           for row in rows}
  expected = {(m, c) for m in METHOD_LABELS for c in PAPER_COLUMNS}
  if set(table) != expected or len(rows) != len(expected):
    raise ValueError(f"{path} must hold one row per (method, column) of Table 2: "
                     f"{len(expected)} rows, got {len(rows)}")
  return table


def latest_result(metrics: dict, kind: str) -> float | None:
  """Result ``kind`` of a run: its top-level key, else the latest record of
  its protocol in ``evaluations``."""
  result = RESULTS[kind]
  value = metrics.get(result.key)
  if value is None:
    records = [r for r in metrics.get("evaluations") or []
               if r.get("protocol") == result.protocol and r.get(result.field) is not None]
    if records:
      value = max(records, key=lambda r: (r.get("step", 0), r.get("epoch", 0)))[result.field]
  return None if value is None else float(value)


def selected_kinds(protocols) -> list[str]:
  """Result kinds of ``protocols``, in `RESULTS` order."""
  unknown = sorted(set(protocols) - set(PROTOCOLS))
  if unknown:
    raise ValueError(f"unknown protocols {unknown}; choose from {', '.join(PROTOCOLS)}")
  return [kind for kind, r in RESULTS.items() if r.protocol in protocols]


def paper_column(dataset: str, policy: str, corrupted: bool) -> str | None:
  """The paper's Table 2 column of our (dataset, policy[, corrupted]) cell."""
  extreme = policy in table2.EXTREME_POLICIES
  if dataset not in table2.PAPER_DATASETS or not (extreme or policy == STANDARD):
    return None
  if corrupted:
    return ("cifar10c_ex" if extreme else "cifar10c") if dataset == "cifar10" else None
  if extreme:
    return f"{dataset}_ex" if dataset in ("cifar10", "cifar100") else None
  return dataset


def column_title(dataset: str, policy: str, corrupted: bool = False) -> str:
  title = table2.DATASETS[dataset].title if dataset in table2.DATASETS else dataset
  return f"{title}{'-C' if corrupted else ''} {POLICY_TITLES.get(policy, policy)}".strip()


def table2_cells(runs, kinds) -> dict:
  """{kind: {(method, (dataset, policy, corrupted)): [accuracy per seed]}}.

  CIFAR-10-C cells hold each run's mean accuracy over the corruptions of its
  ``corrupted.json`` (written by ``table2.py`` with the linear probe unless
  the file names another ``protocol``).
  """
  cells: dict = {kind: {} for kind in kinds}
  for record, metrics, workdir in runs:
    column = (record["dataset"], record["policy"], False)
    for kind in kinds:
      value = latest_result(metrics, kind)
      if value is not None:
        cells[kind].setdefault((record["method"], column), []).append(value)
    corrupted = read_json(workdir / table2.CORRUPTED_FILE)
    kind = (corrupted or {}).get("protocol", "linear")
    if corrupted and corrupted.get("accuracy") and kind in cells:
      accuracies = list(corrupted["accuracy"].values())
      cells[kind].setdefault((record["method"], column[:2] + (True,)), []).append(
          sum(accuracies) / len(accuracies))
  return cells


def ordered_columns(columns) -> list:
  """Standard columns, then extreme policies, then corrupted; by dataset."""
  datasets, policies = list(table2.DATASETS), list(augment.POLICIES)

  def key(column):
    dataset, policy, corrupted = column
    group = 2 if corrupted else int(policy != STANDARD)
    return (group, datasets.index(dataset) if dataset in datasets else len(datasets),
            dataset, policies.index(policy) if policy in policies else len(policies), policy)
  return sorted(columns, key=key)


def paper_cell(paper: dict, method: str, column: str | None) -> str:
  value = paper.get((method, column))
  return f"{value[0]:.2f} ± {value[1]:.2f}" if value else "n/a"


def ours_section(runs, kinds, paper: dict) -> str:
  parts = []
  for implementation in sorted({r.get("implementation", "published") for r, _, _ in runs}):
    chosen = [run for run in runs
              if run[0].get("implementation", "published") == implementation]
    epochs = sorted({int(metrics.get("epochs", 0)) for _, metrics, _ in chosen})
    substituted = sorted({f"{r['dataset']} <- {r['data']}" for r, _, _ in chosen
                          if r.get("data", r["dataset"]) != r["dataset"]})
    notes = f" Data substituted: {'; '.join(substituted)}." if substituted else ""
    # Runs on a subset of the train split (config.train_examples) are not
    # comparable with the paper's full-data numbers.
    subset = any(e.get("train_examples") for _, metrics, _ in chosen
                 for e in metrics.get("evaluations", []))
    if subset:
      notes += (" Trained on a subset of the train split (train_examples): no paper "
                "number beside these results.")
    if any(r.get("smoke") for r, _, _ in chosen):
      notes += " SMOKE RUNS (not results)."
    for kind, cells in table2_cells(chosen, kinds).items():
      if not cells:
        continue
      columns = ordered_columns({column for _, column in cells})
      methods = [m for m in METHOD_LABELS if any((m, c) in cells for c in columns)]
      compared, elsewhere = False, set()
      rows = []
      for m in methods:
        row = [m]
        for column in columns:
          cell = tables.format_mean_std(cells.get((m, column), []))
          target = paper_column(*column)
          if (m, column) in cells and target and PAPER_PROTOCOLS[target] == kind and (
              not subset):
            cell += f" [paper {paper_cell(paper, m, target)}]"
            compared = True
          elif target:
            elsewhere.add(PAPER_COLUMNS[target])
          row.append(cell)
        rows.append(row)
      beside = (" [paper mean ± std] where the paper measured the column with this "
                "protocol" if compared else "")
      if elsewhere:
        beside += (f". No paper number beside {', '.join(sorted(elsewhere))}: the paper's "
                   "were not measured this way (its table is below)")
      corrupted = sorted({c[0] for _, c in cells if c[2]})
      c_note = (f" {', '.join(column_title(d, STANDARD, True) for d in corrupted)}: mean "
                f"over the evaluated corruptions." if corrupted else "")
      parts.append(
          f"### Table 2, ours: test accuracy (%), {RESULTS[kind].title}; losses: "
          f"{implementation}\n\nCells: mean ± std over seeds (n){beside}. Pre-training "
          f"epochs: {', '.join(map(str, epochs))}.{c_note}{notes}\n\n"
          + tables.markdown_table(["Method"] + [column_title(*c) for c in columns], rows))
  return "\n\n".join(parts)


def paper_section(paper: dict) -> str:
  rows = [[m] + [paper_cell(paper, m, c) for c in PAPER_COLUMNS]
          for m in METHOD_LABELS]
  notes = "\n".join(
      f"* {', '.join(PAPER_COLUMNS[c] for c in columns)}: {note}"
      + ("; printed beside our best-epoch finetune results." if any(
          PAPER_PROTOCOLS[c] for c in columns) else ".")
      for columns, note in PAPER_COLUMN_NOTES)
  return ("### Table 2 of the paper: test accuracy (%), mean ± std over 5 seeds\n\n"
          "Columns: ResNet-18 on CIFAR, ResNet-50 on SVHN and ImageNet-100; \"extreme\": "
          "pre-trained and fine-tuned with an extreme augmentation (which of large erase, "
          "brightness and strong crop is not recorded with these numbers). How the "
          "published code measured each column:\n\n" + notes + "\n\n"
          + tables.markdown_table(["Method"] + list(PAPER_COLUMNS.values()), rows))


def sensitivity_section(runs, kinds) -> str:
  parts = []
  for kind in kinds:
    for swept, fixed in (("eps", "iters"), ("iters", "eps")):
      cells: dict = {}
      for record, metrics, _ in runs:
        value = latest_result(metrics, kind)
        if value is not None and record[fixed] == record[f"default_{fixed}"]:
          key = (record["method"], record["dataset"], record.get("implementation"))
          cells.setdefault(key, {}).setdefault(record[swept], []).append(value)
      if not cells:
        continue
      values = sorted({v for per_value in cells.values() for v in per_value})
      rows = [[f"{m} ({d}, {impl})"] + [tables.format_mean_std(per_value.get(v, []))
                                        for v in values]
              for (m, d, impl), per_value in sorted(cells.items())]
      header = ["Method (dataset, losses)"] + [f"{swept}={v:g}" for v in values]
      parts.append(f"### Sensitivity to {swept}: test accuracy (%), "
                   f"{RESULTS[kind].title}\n\n" + tables.markdown_table(header, rows))
  return "\n\n".join(parts)


def domains_section(runs) -> str:
  cells: dict = {}
  for record, metrics, _ in runs:
    key = (record["dataset"], record["method"], record["alpha"], record["beta"])
    cells.setdefault(key, []).append((latest_result(metrics, "linear"),
                                      metrics.get(DOMAIN_METRIC)))
  rows = [[dataset, method, f"{alpha:g}", f"{beta:g}", f"{alpha - beta:g}",
           tables.format_mean_std([v[0] for v in values if v[0] is not None]),
           tables.format_mean_std([v[1] for v in values if v[1] is not None])]
          for (dataset, method, alpha, beta), values in sorted(cells.items())]
  return ("### Domain targets (Figure 1(B)): test accuracy (%), "
          f"{RESULTS['linear'].title}, of class and of domain labels\n\n"
          + tables.markdown_table(["Dataset", "Method", "alpha", "beta", "alpha - beta",
                                   "class", "domain"], rows))


def build_report(roots, protocols=DEFAULT_PROTOCOLS) -> str:
  """The Markdown report of every finished run under ``roots``."""
  kinds = selected_kinds(protocols)
  paper = load_paper_table()
  runs = [run for root in roots for run in collect_runs(Path(root))]
  by_experiment: dict = {}
  for run in runs:
    by_experiment.setdefault(run[0].get("experiment"), []).append(run)
  sections = []
  if "table2" in by_experiment:
    sections.append(ours_section(by_experiment["table2"], kinds, paper))
  if "sensitivity" in by_experiment:
    sections.append(sensitivity_section(by_experiment["sensitivity"], kinds))
  if "pacs_domains" in by_experiment:
    sections.append(domains_section(by_experiment["pacs_domains"]))
  sections = [s for s in sections if s]
  if not sections:
    unreadable = [path for root in roots for path in Path(root).rglob(runs_lib.METRICS)
                  if not runs_lib.usable_metrics(runs_lib.read_json(path))]
    sections.append(f"No finished runs under {', '.join(map(str, roots))} "
                    f"with {', '.join(protocols)} results"
                    + (f" ({len(unreadable)} run(s) left out: metrics.json unreadable, e.g. "
                       f"{unreadable[0]})." if unreadable else "."))
  if "table2" in by_experiment or not runs:
    sections.append(paper_section(paper))
  return "\n\n".join(sections) + "\n"


def define_flags(flag_values: flags.FlagValues, argv) -> None:
  del argv  # no --config fields: the report reads finished runs
  define = dict(flag_values=flag_values)
  flags.DEFINE_multi_string("root", None, "A directory of runs (repeatable).", **define)
  flags.mark_flag_as_required("root", flag_values=flag_values)
  flags.DEFINE_string("output", None, "Also write the report here.", **define)
  flags.DEFINE_string("protocols", ",".join(DEFAULT_PROTOCOLS), "Comma list of the "
                      f"protocols to tabulate: {', '.join(PROTOCOLS)}.", **define)


def run(args) -> None:
  """Prints the report of ``--root`` (and writes it to ``--output``)."""
  report = build_report(args.root, entry.split_names(args.protocols))
  print(report, end="")
  if args.output:
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(report)


def main(argv=None) -> None:
  # A malformed paper table or an unknown protocol is unusable input.
  entry.main(define_flags, run, argv, usage_errors=(ValueError, OSError))


if __name__ == "__main__":
  main()
