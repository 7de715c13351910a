"""``python -m experiments.small_scale --smoke``: the table, written as it goes, resumable."""

import json
import math

import pytest

from tests.experiments.test_experiments import run_entry_point


def test_spearman_ranks_with_ties():
  from experiments.small_scale import spearman
  assert spearman([1, 2, 3, 4], [1, 4, 9, 16]) == pytest.approx(1.0)
  assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
  # Ties share their mean rank: ranks (1, 2.5, 2.5, 4) against (1, 2, 3, 4).
  assert spearman([0, 1, 1, 2], [0, 1, 2, 3]) == pytest.approx(0.9486832980505138)
  assert math.isnan(spearman([1, 1, 1], [1, 2, 3]))


@pytest.mark.slow
def test_smoke_writes_the_table_and_skips_finished_runs(tmp_path):
  root = tmp_path / "runs"
  out = run_entry_point("small_scale", "--smoke", "--seeds=0", f"--root={root}",
                        "--implementation=clean")
  table = json.loads((root / "small_scale.json").read_text())
  assert set(table["rows"]) == {"INCE", "SimSiam", "random init"}
  for label in ("INCE", "SimSiam"):
    row = table["rows"][label]
    for column in ("linear probe", "kNN", "alignment", "uniformity", "WDM bound"):
      assert row[column]["n"] == 1 and math.isfinite(row[column]["mean"]), (label, column)
    # The bound is logged per epoch (with each kNN evaluation).
    epochs = table["runs"][label]["0"]["epochs"]
    assert [e["epoch"] for e in epochs] == [1, 2]
    assert all(math.isfinite(e["wdm"]) for e in epochs)
  assert table["rows"]["random init"]["linear probe"]["n"] == 1
  markdown = (root / "small_scale.md").read_text()
  assert "| SimSiam |" in markdown and "Spearman" in markdown
  assert "[run]" in out
  again = run_entry_point("small_scale", "--smoke", "--seeds=0", f"--root={root}",
                          "--implementation=clean")
  assert again.count("[skip]") == 2, again
  assert json.loads((root / "small_scale.json").read_text())["rows"] == table["rows"]


def test_unknown_method_is_one_line():
  line = run_entry_point("small_scale", "--methods=NOPE", expect_failure=True)
  assert "unknown methods NOPE" in line


def test_summary_correlates_the_bound_across_runs_and_within_each_seed():
  from experiments import small_scale
  results = {}
  # Three methods x three seeds: the probe rises with the bound within each
  # seed, and the seeds' levels cross (seed 2's runs have the largest bound
  # and the lowest probe), so across all runs the correlation is not 1.
  for m, method in enumerate(("A", "B", "C")):
    for seed, (bound, probe) in enumerate([(0.1, 0.6), (0.2, 0.7), (0.5, 0.4)]):
      probe += 0.1 * m
      metrics = {"linear_probe_acc": probe, "wdm_lower_bound": bound + 0.01 * m,
                 "knn_acc": probe, "final_alignment": 1.0 - probe,
                 "final_uniformity": -probe, "random_init_linear_probe_acc": 0.3,
                 "random_init_knn_acc": 0.2, "random_init_wdm_lower_bound": 0.0}
      epochs = [{"epoch": e, "knn_acc": probe * e, "wdm": bound * e} for e in (1, 2, 3)]
      results.setdefault(method, {})[str(seed)] = {"metrics": metrics, "epochs": epochs}
  summary = small_scale.summarise(results)
  assert summary["spearman_wdm_probe_within_seed"] == {"0": 1.0, "1": 1.0, "2": 1.0}
  assert summary["spearman_wdm_knn_across_epochs"]["mean"] == 1.0
  assert summary["spearman_wdm_knn_across_epochs"]["n"] == 9
  across = summary["spearman_probe_across_runs"]
  assert across["WDM bound"] == summary["spearman_wdm_probe_across_runs"]
  assert across["WDM bound"] < 0.5
  assert across["alignment"] < 0 < across["kNN"]
  assert summary["rows"]["random init"]["linear probe"]["mean"] == 0.3
  text = small_scale.markdown(summary, seeds=[0, 1, 2], epochs=3)
  assert "seed 0 1.000, seed 1 1.000, seed 2 1.000" in text and "kNN 1.000" in text
