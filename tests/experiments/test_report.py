"""`experiments/report.py` on hand-made workdirs: protocols and paper numbers.

Each fake run is an ``experiment.json`` and a ``metrics.json`` in the schema
the trainer writes (top-level latest results, an ``evaluations`` list).
"""

import csv
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
  sys.path.insert(0, str(REPO))

from experiments import report, runs, table2  # noqa: E402


def fake_run(root, method, dataset, policy, seed, metrics, implementation="published"):
  workdir = root / dataset / policy / method / f"seed{seed}"
  runs.write_json(workdir / runs.RUN_RECORD, {
      "experiment": "table2", "method": method, "dataset": dataset, "policy": policy,
      "seed": seed, "implementation": implementation, "smoke": False})
  runs.write_json(workdir / runs.METRICS, {"epochs": 500, **metrics})
  return workdir


def section(text, title):
  """The lines of the section whose heading starts with ``title``."""
  lines = text.splitlines()
  start = next(i for i, line in enumerate(lines) if line.startswith(f"### {title}"))
  end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("### ")),
             len(lines))
  return lines[start:end]


def rows(lines, first_cell):
  return [line.split(" | ") for line in lines if line.startswith(f"| {first_cell} |")]


PAPER_TITLE = "Table 2 of the paper"
FINETUNE_BEST = "Table 2, ours: test accuracy (%), protocol finetune (whole encoder " \
                "fine-tuned with a linear head, the published CIFAR protocol), best"
FINETUNE_LAST = "Table 2, ours: test accuracy (%), protocol finetune (whole encoder " \
                "fine-tuned with a linear head), last"
LINEAR = "Table 2, ours: test accuracy (%), protocol linear"


def paper_csv_rows():
  with open(report.PAPER_CSV, newline="") as f:
    return list(csv.DictReader(f))


def test_paper_csv_holds_all_72_cells():
  table = report.load_paper_table()
  assert len(table) == 72 == len(paper_csv_rows())
  assert table[("INCE", "cifar10")] == (92.01, 0.40)
  assert table[("GCA-UOT", "cifar10c_ex")] == (77.60, 0.54)


def test_report_shows_every_paper_cell(tmp_path):
  fake_run(tmp_path, "INCE", "cifar10", "simclr", 0, {"linear_probe_acc": 0.9})
  paper = section(report.build_report([tmp_path]), PAPER_TITLE)
  header = next(line for line in paper if line.startswith("| Method |"))
  assert header.split(" | ")[1:] == list(report.PAPER_COLUMNS.values())[:-1] + [
      "CIFAR-10-C extreme |"]
  for row in paper_csv_rows():
    cells = rows(paper, row["method"])
    assert len(cells) == 1, row["method"]
    column = list(report.PAPER_COLUMNS).index(row["column"]) + 1
    assert cells[0][column].rstrip(" |") == f"{row['mean']} ± {row['std']}"


def test_linear_results_never_carry_a_paper_number(tmp_path):
  for dataset in report.PAPER_COLUMNS:
    if dataset in table2.DATASETS:
      fake_run(tmp_path, "GCA-UOT", dataset, "simclr", 0,
               {"linear_probe_acc": 0.9, "knn_acc": 0.8})
  for policy in table2.EXTREME_POLICIES:
    fake_run(tmp_path, "GCA-UOT", "cifar10", policy, 0, {"linear_probe_acc": 0.7})
  workdir = fake_run(tmp_path, "INCE", "cifar10", "simclr", 0, {"linear_probe_acc": 0.9})
  runs.write_json(workdir / table2.CORRUPTED_FILE,
                    {"severity": 5, "accuracy": {"fog": 0.5, "snow": 0.7}})
  text = report.build_report([tmp_path], protocols=("linear", "knn"))
  ours = [line for line in text.split(f"### {PAPER_TITLE}")[0].splitlines()
          if line.startswith("| ") and "---" not in line and "Method" not in line]
  assert len(ours) == 3  # the linear table's two methods, the kNN table's GCA-UOT
  assert not any("paper" in line for line in ours)
  header = next(line for line in section(text, LINEAR) if line.startswith("| Method |"))
  assert header == ("| Method | CIFAR-10 | CIFAR-100 | SVHN | ImageNet-100 | CIFAR-10 large "
                    "erase | CIFAR-10 brightness | CIFAR-10 strong crop | CIFAR-10-C |")
  assert rows(section(text, LINEAR), "INCE")[0][-1] == "60.00 (n=1) |"


def test_finetune_result_on_cifar10_carries_the_paper_number(tmp_path):
  for seed, (best, last) in enumerate(((0.93, 0.92), (0.95, 0.90))):
    fake_run(tmp_path, "GCA-UOT", "cifar10", "simclr", seed, {
        "linear_probe_acc": 0.85, "finetune_best_acc": best, "finetune_last_acc": last})
  # A run holding its finetune result only in the evaluations list.
  fake_run(tmp_path, "INCE", "cifar10", "simclr", 0, {"linear_probe_acc": 0.8, "evaluations": [
      {"protocol": "finetune", "step": 100, "epoch": 500, "accuracy": 0.5,
       "best_accuracy": 0.5, "last_accuracy": 0.5, "best_epoch": 3},
      {"protocol": "finetune", "step": 200, "epoch": 1000, "accuracy": 0.9,
       "best_accuracy": 0.91, "last_accuracy": 0.9, "best_epoch": 190}]})
  # An extreme-augmentation finetune result: the paper's extreme column was
  # measured with the extreme transform on the test images too, so no number.
  fake_run(tmp_path, "GCA-UOT", "cifar10", "large_erase", 0,
           {"finetune_best_acc": 0.8, "finetune_last_acc": 0.8})
  text = report.build_report([tmp_path])
  best = section(text, FINETUNE_BEST)
  assert "model selection on the test set" in best[0]
  uot = rows(best, "GCA-UOT")[0]
  assert uot[1] == "94.00 ± 1.41 (n=2) [paper 92.61 ± 0.32]"
  assert uot[2] == "80.00 (n=1) |"
  assert rows(best, "INCE")[0][1] == "91.00 (n=1) [paper 92.01 ± 0.40]"
  last = section(text, FINETUNE_LAST)
  assert rows(last, "GCA-UOT")[0][1] == "91.00 ± 1.41 (n=2)"
  assert not any("[paper" in line for line in last)
  linear = section(text, LINEAR)
  assert rows(linear, "GCA-UOT")[0][1] == "85.00 ± 0.00 (n=2) |"
  assert not any("[paper" in line for line in linear)


def test_protocols_are_selectable_and_checked(tmp_path):
  fake_run(tmp_path, "INCE", "cifar10", "simclr", 0,
           {"linear_probe_acc": 0.9, "knn_acc": 0.8, "finetune_best_acc": 0.93,
            "finetune_last_acc": 0.92})
  text = report.build_report([tmp_path], protocols=("knn",))
  assert "protocol knn" in text and "protocol linear" not in text
  assert "protocol finetune" not in text
  with pytest.raises(ValueError, match="unknown protocols"):
    report.build_report([tmp_path], protocols=("frozen",))


def test_empty_root_still_shows_the_paper_table(tmp_path):
  text = report.build_report([tmp_path])
  assert text.startswith("No finished runs")
  assert len(rows(section(text, PAPER_TITLE), "GCA-UOT")) == 1


def test_sensitivity_runs_are_labelled_with_their_protocol(tmp_path):
  for eps in (0.5, 1.0):
    workdir = tmp_path / f"eps{eps}"
    runs.write_json(workdir / runs.RUN_RECORD, {
        "experiment": "sensitivity", "method": "GCA-UOT", "dataset": "cifar10",
        "policy": "simclr", "eps": eps, "iters": 10, "default_eps": 0.5,
        "default_iters": 10, "seed": 0, "implementation": "published"})
    runs.write_json(workdir / runs.METRICS, {"linear_probe_acc": 0.8 + eps / 10})
  text = report.build_report([tmp_path])
  eps_table = section(text, "Sensitivity to eps")
  assert "protocol linear" in eps_table[0]
  assert rows(eps_table, "GCA-UOT (cifar10, published)")[0][1:] == [
      "85.00 (n=1)", "90.00 (n=1) |"]
  assert PAPER_TITLE not in text


def test_a_subset_run_never_carries_a_paper_number(tmp_path):
  fake_run(tmp_path, "GCA-UOT", "cifar10", "simclr", 0, {
      "finetune_best_acc": 0.6, "finetune_last_acc": 0.6, "evaluations": [
          {"protocol": "finetune", "step": 10, "epoch": 2, "accuracy": 0.6,
           "best_accuracy": 0.6, "last_accuracy": 0.6, "best_epoch": 2,
           "train_examples": 1000}]})
  text = report.build_report([tmp_path])
  best = section(text, FINETUNE_BEST)
  assert rows(best, "GCA-UOT")[0][1] == "60.00 (n=1) |"
  assert any("subset of the train split" in line for line in best)
