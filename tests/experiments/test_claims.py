"""`python -m experiments.claims` at a tiny N: the JSON has every row, positive FLOPs."""

import pytest
import json

from tests.conftest import one_line_error, run_module


@pytest.mark.slow
def test_smoke_writes_every_row(tmp_path):
  result = run_module("experiments.claims", "--flops_n=16", "--sizes=8,16", "--dim=8",
                      "--iters=3", "--repeats=1", f"--out={tmp_path}")
  assert result.returncode == 0, result.stderr[-3000:]
  report = json.loads((tmp_path / "claims.json").read_text())
  losses = ["infonce", "gca_ince", "gca_uot", "gca_ince (log form)", "gca_uot (log form)"]
  assert [row["loss"] for row in report["flops"]] == losses
  for row in report["flops"]:
    assert row["N"] == 16 and row["D"] == 8
    assert row["forward_flops"] > 0 and row["forward_backward_flops"] > row["forward_flops"]
    assert row["forward_flops"] >= row["forward_flops_raw"]  # the loop counted 3 times
  assert report["flops"][0]["forward_ratio"] == 1.0
  assert report["flops"][1]["paper_mflops"] == 6.65
  assert [(row["N"], row["loss"]) for row in report["timings"]] == [
      (n, loss) for n in (8, 16) for loss in losses]
  assert all(row["ms"] > 0 for row in report["timings"])
  assert "GCA-UOT faster than INCE" in (tmp_path / "claims.md").read_text()


@pytest.mark.slow
def test_bad_sizes_are_one_line_errors(tmp_path):
  result = run_module("experiments.claims", "--sizes=7", f"--out={tmp_path}")
  assert "--sizes must be even integers >= 4" in one_line_error(result)
