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
