"""Every experiment entry point, end to end in ``--smoke`` mode, then report.py.

Each test runs ``python -m experiments.<name> --smoke`` in a subprocess (the
command a user types) on the embedded digits dataset with a tiny model, and
checks what the run leaves behind; `report.py` must then tabulate the runs
in Table 2's layout. The subprocesses share a persistent XLA compilation
cache, so repeated programs (e.g. the GCA-UOT run of table2 and of the
sensitivity sweep) compile once.
"""

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
  sys.path.insert(0, str(REPO))

COMPILATION_CACHE = {
    "JAX_COMPILATION_CACHE_DIR": str(Path(tempfile.gettempdir()) / "gca_jax_test_jit_cache"),
    "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
    "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
}


def run_entry_point(name, *args, timeout=400, expect_failure=False):
  """Runs ``python -m experiments.<name> *args`` from the repo root; its stdout
  (its stderr if ``expect_failure``, which requires a non-zero exit)."""
  env = {**os.environ, **COMPILATION_CACHE, "JAX_PLATFORMS": "cpu"}
  result = subprocess.run([sys.executable, "-m", f"experiments.{name}", *map(str, args)],
                          cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)
  if expect_failure:
    assert result.returncode != 0, result.stdout[-4000:]
    return result.stderr
  assert result.returncode == 0, (
      f"experiments.{name} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
  return result.stdout


def report_of(*roots):
  return run_entry_point("report", *[f"--root={root}" for root in roots])


def table_rows(report: str, first_cell: str):
  return [line for line in report.splitlines() if line.startswith(f"| {first_cell} |")]


def test_table2_smoke_runs_skips_finished_runs_and_reports(tmp_path):
  root = tmp_path / "table2"
  out = run_entry_point("table2", "--smoke", f"--root={root}")
  for method in ("ince", "gca_uot"):
    workdir = root / "digits" / "simclr" / method / "seed0"
    metrics = json.loads((workdir / "metrics.json").read_text())
    assert 0.0 <= metrics["linear_probe_acc"] <= 1.0
    record = json.loads((workdir / "experiment.json").read_text())
    assert record["experiment"] == "table2" and record["seed"] == 0
    corrupted = json.loads((workdir / "corrupted.json").read_text())
    assert set(corrupted["accuracy"]) == {"brightness", "gaussian_noise"}
  assert out.count("[done]") == 2

  again = run_entry_point("table2", "--smoke", f"--root={root}")
  assert again.count("[skip]") == 2 and "[run]" not in again
  # A finished workdir of another run is neither skipped nor silently reused.
  error = run_entry_point("table2", "--smoke", f"--root={root}", "--epochs=2",
                          expect_failure=True)
  assert "holds another run" in error and "epochs" in error

  report = report_of(root)
  header = next(line for line in report.splitlines() if line.startswith("| Method |"))
  assert header == "| Method | Digits | Digits-C |"
  assert len(table_rows(report, "INCE")) == 1
  assert len(table_rows(report, "GCA-UOT")) == 1
  assert "(n=1) [n/a]" in table_rows(report, "INCE")[0]
  assert "SMOKE RUNS" in report


def test_sensitivity_smoke(tmp_path):
  root = tmp_path / "sensitivity"
  run_entry_point("sensitivity", "--smoke", f"--root={root}", "--eps_values", 0.5, 1.0,
                  "--iters_values", 10)
  assert (root / "sensitivity.png").stat().st_size > 0
  runs = sorted(p.parent.parent.name for p in root.rglob("metrics.json"))
  assert runs == ["eps0.5_iters10", "eps1_iters10"]
  report = report_of(root)
  assert "Sensitivity to eps" in report and "| eps=0.5 | eps=1 |" in report
  assert len(table_rows(report, "GCA-UOT (digits, published)")) == 2  # eps and iters tables


def test_pacs_domains_smoke(tmp_path):
  root = tmp_path / "pacs"
  run_entry_point("pacs_domains", "--smoke", f"--root={root}", "--alphas", 1)
  assert (root / "pacs_domains.png").stat().st_size > 0
  metrics = [json.loads(p.read_text()) for p in root.rglob("metrics.json")]
  assert len(metrics) == 1
  for m in metrics:
    assert 0.0 <= m["linear_probe_acc"] <= 1.0
    assert 0.0 <= m["domain_linear_probe_acc"] <= 1.0
  report = report_of(root)
  assert "Domain targets (Figure 1(B))" in report
  assert len(table_rows(report, "digits")) == 1


def test_plans_smoke(tmp_path):
  out = tmp_path / "plans"
  run_entry_point("plans", "--smoke", f"--out={out}")
  assert (out / "plans.png").stat().st_size > 0
  summary = json.loads((out / "plans.json").read_text())
  assert set(summary["plans"]) == {f"{m} eps=0.5" for m in (
      "INCE", "GCA-INCE", "GCA-RINCE", "IOT", "IOT-uni", "GCA-UOT")}
  for diagnostics in summary["plans"].values():
    assert 0.0 < diagnostics["positive_mass"] <= 1.0


def _fake_run(root, method, dataset, policy, seed, accuracy):
  from experiments import common
  workdir = root / dataset / policy / method / f"seed{seed}"
  common.write_json(workdir / common.RUN_RECORD, {
      "experiment": "table2", "method": method, "dataset": dataset, "policy": policy,
      "seed": seed, "implementation": "published", "smoke": False})
  common.write_json(workdir / common.METRICS, {"linear_probe_acc": accuracy, "epochs": 500})
  return workdir


def test_report_layout_and_paper_numbers(tmp_path):
  """Table 2's layout on hand-made runs: columns, mean ± std, paper cells."""
  from experiments import common, report, table2
  for seed, accuracy in enumerate((0.90, 0.92)):
    _fake_run(tmp_path, "INCE", "cifar10", "simclr", seed, accuracy)
    _fake_run(tmp_path, "GCA-UOT", "cifar10", "large_erase", seed, accuracy)
  workdir = _fake_run(tmp_path, "GCA-UOT", "cifar10", "simclr", 0, 0.93)
  common.write_json(workdir / table2.CORRUPTED_FILE,
                    {"severity": 5, "accuracy": {"fog": 0.5, "snow": 0.7}})
  _fake_run(tmp_path, "BYOL", "cifar100", "simclr", 0, 0.6)
  text = report.build_report([tmp_path])
  header = next(line for line in text.splitlines() if line.startswith("| Method |"))
  assert header == ("| Method | CIFAR-10 | CIFAR-100 | CIFAR-10 large erase | "
                    "CIFAR-10-C |")
  ince = table_rows(text, "INCE")[0].split(" | ")
  assert ince[1] == "91.00 ± 1.41 (n=2) [92.01 ± 0.40]"
  assert ince[2] == "– [n/a]"
  uot = table_rows(text, "GCA-UOT")[0].split(" | ")
  assert uot[1] == "93.00 (n=1) [92.61 ± 0.32]"
  assert uot[3] == "91.00 ± 1.41 (n=2) [n/a]"
  assert uot[4].startswith("60.00 (n=1)")
  assert [line.split(" | ")[0] for line in text.splitlines() if line.startswith("| ")
          and "---" not in line][1:] == ["| INCE", "| BYOL", "| GCA-UOT"]


@pytest.mark.parametrize("name", ["table2", "sensitivity", "pacs_domains", "plans", "report"])
def test_entry_points_have_help(name):
  """Every entry point documents itself (``--help`` exits 0 without JAX work)."""
  out = run_entry_point(name, "--help", timeout=60)
  assert "usage:" in out
