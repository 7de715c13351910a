"""`python -m experiments.theorems --smoke`, in-process: the table is complete and consistent.

The claims and the grid are `gca_jax.theorems`; `experiments.theorems` is its
command line.

The counts of configurations where Theorems 5-7 hold are what the run finds;
only their consistency is asserted here. Theorems 1 and 2 are identities of
the losses and must hold everywhere to 1e-10 (float64).
"""

import json
import math
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
  sys.path.insert(0, str(REPO))

from experiments import theorems as theorems_cli  # noqa: E402
from gca_jax import theorems  # noqa: E402


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
  out = tmp_path_factory.mktemp("theorems") / "theorems.json"
  results = theorems_cli.main(["--smoke", f"--out={out}"])
  return results, out


@pytest.mark.slow
def test_smoke_table_has_every_claim_once(smoke):
  results, _ = smoke
  rows = results["claims"]
  assert [(r["claim"], r["reading"]) for r in rows] == [
      (c.name, c.reading) for c in theorems.CLAIMS]
  assert {r["claim"] for r in rows} == {"Theorem 1", "Theorem 2", "Theorem 5", "Theorem 6",
                                       "Theorem 7"}
  assert {r["reading"] for r in rows if r["claim"] == "Theorem 7"} >= {"dual", "plan entropy"}
  assert results["dtype"] == "float64" and results["mode"] == "smoke"


def test_theorems_1_and_2_hold_to_1e10_everywhere(smoke):
  results, _ = smoke
  for row in results["claims"][:2]:
    assert row["claim"] in ("Theorem 1", "Theorem 2")
    assert row["holds"] == row["tried"] > 0, row
    assert 0.0 <= row["worst_violation"] <= 1e-10, row
    assert math.isclose(row["worst_lhs"], row["worst_rhs"], rel_tol=1e-10)


def test_counts_are_consistent_with_the_records_and_the_grid(smoke):
  results, _ = smoke
  for claim, row in zip(theorems.CLAIMS, results["claims"]):
    records = results["records"][f"{claim.name} ({claim.reading})"]
    expected = theorems.configurations(theorems.SMOKE_GRID, claim.uses_iters)
    assert row["tried"] == len(records) == len(expected) > 0
    assert len({tuple(sorted(r.items())) for r in records}) == len(records)
    holds = [r["violation"] <= claim.tolerance for r in records]
    assert [r["holds"] for r in records] == holds
    assert 0 <= row["holds"] == sum(holds) <= row["tried"]
    assert row["worst_violation"] == max(r["violation"] for r in records)
    assert all(np.isfinite([r["lhs"], r["rhs"], r["violation"]]).all() for r in records)
    # Where the worst case holds, every case holds.
    assert (row["worst_violation"] <= claim.tolerance) == (row["holds"] == row["tried"])


def test_json_output_matches_the_returned_table(smoke):
  results, out = smoke
  saved = json.loads(out.read_text())
  assert saved["claims"] == results["claims"]
  assert saved["grid"]["iters_values"] == list(theorems.SMOKE_GRID.iters_values)


def test_printed_table_has_a_row_per_claim(capsys):
  theorems_cli.main(["--smoke"])
  lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| Theorem")]
  assert len(lines) == len(theorems.CLAIMS)


def test_checks_run_in_float64_whatever_the_callers_setting():
  config = theorems.Config("gaussian", 8, 4, 0.1, None)
  previous = jax.config.jax_enable_x64
  jax.config.update("jax_enable_x64", False)
  try:
    check = theorems.theorem2(config)
  finally:
    jax.config.update("jax_enable_x64", previous)
  # float32 round-off of RINCE at eps = 0.1 is ~1e-7 relative.
  assert 0.0 <= check.violation <= 1e-10


def test_an_inequality_violation_is_reported_with_its_sign():
  held = theorems._worst(np.array([1.0, 2.0]), np.array([1.5, 2.0]))
  assert held.violation == 0.0 and held.lhs == 2.0
  broken = theorems._worst(np.array([1.0, 5.0]), np.array([1.5, 4.0]))
  assert broken.violation == pytest.approx(0.25) and (broken.lhs, broken.rhs) == (5.0, 4.0)


def test_unknown_family_is_refused():
  with pytest.raises(ValueError, match="family must be one of"):
    theorems.embeddings("uniform", 8, 4)
