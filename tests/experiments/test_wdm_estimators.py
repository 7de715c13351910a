"""The measurement of the WDM estimators: its command line end to end (smoke)
and its one-line errors; the laws and limits it reports are tested in
tests/test_metrics.py."""

import json
import math

import pytest

from tests.experiments.test_experiments import run_entry_point


def test_smoke_prints_and_writes_every_table(tmp_path):
  out = tmp_path / "wdm.json"
  printed = run_entry_point("wdm_estimators", "--smoke", f"--out={out}")
  result = json.loads(out.read_text())
  for title in ("channel law, rho = 1: WDM = 1.061", "channel law, rho = 0.5: WDM = 0.530",
                "Gaussian views", "null offset", "small batches"):
    assert title in printed
  for law in result["channel"]:
    assert law["wdm"] == pytest.approx(math.sqrt(2) * law["rho"] * 0.75)
    # eps = 0.1 blurs the transport: the laws' divergence is below their W1.
    assert 0 < law["population_divergence_eps_0.1"] < law["wdm"]
    (row,) = law["rows"]
    assert row["N"] == 32 and row["wdm_lower_bound"]["sd"] >= 0
  (null,) = result["null"]
  assert null["offsets"][0] > null["offsets"][1] > 0  # the offset shrinks with N


@pytest.mark.parametrize("flag, message", [("--draws=1", "--draws must be >= 2"),
                                           ("--sizes=16,64", "--sizes must be >= 32")])
def test_bad_flags_are_one_line_errors(flag, message):
  assert message in run_entry_point("wdm_estimators", flag, expect_failure=True)
