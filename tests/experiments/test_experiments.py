"""Every experiment entry point, end to end in ``--smoke`` mode, then report.py.

Each smoke test runs ``python -m experiments.<name> --smoke`` in a subprocess
(the command a user types) on the embedded digits dataset with the "small"
config, and checks what the run leaves behind; `report.py` must then
tabulate the runs (its layout and paper numbers are tested on hand-made runs
in ``test_report.py``). The subprocesses share a persistent XLA compilation
cache, so repeated programs (e.g. the GCA-UOT run of table2 and of the
sensitivity sweep) compile once. The flags (absl ``--flag=value``, lists
comma-separated; ``--config.*`` overrides) and the one-line errors are
tested in-process or without JAX work.
"""

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
  sys.path.insert(0, str(REPO))

COMPILATION_CACHE = {
    "JAX_COMPILATION_CACHE_DIR": str(Path(tempfile.gettempdir()) / "gca_jax_test_jit_cache"),
    "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
    "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
}


def run_entry_point(name, *args, timeout=900, expect_failure=False):
  """Runs ``python -m experiments.<name> *args`` from the repo root; its stdout
  (if ``expect_failure``: its one ``error:`` line, which requires exit
  status 2). The timeout is generous: it only catches hangs on a loaded machine."""
  env = {**os.environ, **COMPILATION_CACHE, "JAX_PLATFORMS": "cpu"}
  command = [sys.executable, "-m", f"experiments.{name}", *map(str, args)]
  result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)
  if expect_failure:
    assert result.returncode == 2, (result.stdout[-4000:], result.stderr[-4000:])
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr[-4000:]
    return lines[0]
  assert result.returncode == 0, (
      f"experiments.{name} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
  return result.stdout


def report_of(*roots):
  return run_entry_point("report", *[f"--root={root}" for root in roots])


def table_rows(report: str, first_cell: str):
  return [line for line in report.splitlines() if line.startswith(f"| {first_cell} |")]


def section(report: str, title: str) -> list[str]:
  """The lines of the report's first section whose heading contains ``title``."""
  lines = report.splitlines()
  start = next(i for i, line in enumerate(lines)
               if line.startswith("### ") and title in line)
  end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("### ")),
             len(lines))
  return lines[start:end]


@pytest.mark.slow
def test_table2_smoke_runs_skips_finished_runs_and_reports(tmp_path):
  root = tmp_path / "table2"
  out = run_entry_point("table2", "--smoke", f"--root={root}", "--protocols=linear,finetune")
  for method in ("ince", "gca_uot"):
    workdir = root / "digits" / "simclr" / method / "seed0"
    metrics = json.loads((workdir / "metrics.json").read_text())
    assert 0.0 <= metrics["linear_probe_acc"] <= 1.0
    assert 0.0 <= metrics["finetune_last_acc"] <= metrics["finetune_best_acc"] <= 1.0
    # The history keeps every evaluation with the protocol that produced it.
    assert {r["protocol"] for r in metrics["evaluations"]} == {"knn", "linear", "finetune"}
    record = json.loads((workdir / "experiment.json").read_text())
    assert record["experiment"] == "table2" and record["seed"] == 0
    corrupted = json.loads((workdir / "corrupted.json").read_text())
    assert set(corrupted["accuracy"]) == {"brightness", "gaussian_noise"}
  assert out.count("[done]") == 2 and out.count("[finetune]") == 2

  again = run_entry_point("table2", "--smoke", f"--root={root}", "--protocols=linear,finetune")
  assert again.count("[skip]") == 2
  assert "[run]" not in again and "[finetune]" not in again
  # A finished workdir of another run is neither skipped nor silently reused.
  error = run_entry_point("table2", "--smoke", f"--root={root}", "--config.epochs=2",
                          expect_failure=True)
  assert "holds another run" in error and "epochs" in error

  report = report_of(root)
  assert "SMOKE RUNS" in report
  linear = section(report, "protocol linear")
  assert "| Method | Digits | Digits-C |" in linear
  assert len(table_rows("\n".join(linear), "INCE")) == 1
  assert len(table_rows("\n".join(linear), "GCA-UOT")) == 1
  assert not any("[paper" in line for line in linear)  # not the paper's protocol
  finetune = section(report, "protocol finetune")
  assert len(table_rows("\n".join(finetune), "GCA-UOT")) == 1


@pytest.mark.slow
def test_sensitivity_smoke(tmp_path):
  root = tmp_path / "sensitivity"
  run_entry_point("sensitivity", "--smoke", f"--root={root}", "--eps_values=0.5,1.0",
                  "--iters_values=10")
  assert (root / "sensitivity.png").stat().st_size > 0
  runs = sorted(p.parent.parent.name for p in root.rglob("metrics.json"))
  assert runs == ["eps0.5_iters10", "eps1_iters10"]
  report = report_of(root)
  assert "Sensitivity to eps" in report and "| eps=0.5 | eps=1 |" in report
  assert len(table_rows(report, "GCA-UOT (digits, published)")) == 2  # eps and iters tables


@pytest.mark.slow
def test_pacs_domains_smoke(tmp_path):
  root = tmp_path / "pacs"
  run_entry_point("pacs_domains", "--smoke", f"--root={root}", "--alphas=1")
  assert (root / "pacs_domains.png").stat().st_size > 0
  metrics = [json.loads(p.read_text()) for p in root.rglob("metrics.json")]
  assert len(metrics) == 1
  for m in metrics:
    assert 0.0 <= m["linear_probe_acc"] <= 1.0
    assert 0.0 <= m["domain_linear_probe_acc"] <= 1.0
  report = report_of(root)
  assert "Domain targets (Figure 1(B))" in report
  assert len(table_rows(report, "styled:digits")) == 1


@pytest.mark.slow
def test_plans_smoke(tmp_path):
  out = tmp_path / "plans"
  run_entry_point("plans", "--smoke", f"--out={out}")
  assert (out / "plans.png").stat().st_size > 0
  summary = json.loads((out / "plans.json").read_text())
  assert set(summary["plans"]) == {f"{m} eps=0.5" for m in (
      "INCE", "GCA-INCE", "GCA-RINCE", "IOT", "IOT-uni", "GCA-UOT")}
  for diagnostics in summary["plans"].values():
    assert 0.0 < diagnostics["positive_mass"] <= 1.0


@pytest.mark.parametrize("name", ["table2", "sensitivity", "pacs_domains", "plans", "report"])
@pytest.mark.slow
def test_entry_points_have_help(name):
  """Every entry point documents itself (``--help`` exits 0 without JAX work)."""
  out = run_entry_point(name, "--help", timeout=300)
  assert "usage:" in out


@pytest.mark.parametrize("args, message", [
    (["--config.epochs=abc"], "--config.epochs=abc"),
    (["--config.model.no_such_field=1"], "no config field 'no_such_field'"),
    (["--override", "epochs=2"], "unknown flag '--override'"),
    (["--methods=NOPE"], "unknown methods NOPE"),
])
@pytest.mark.slow
def test_bad_flags_end_in_one_line(tmp_path, args, message):
  error = run_entry_point("table2", "--smoke", f"--root={tmp_path}", *args,
                          expect_failure=True, timeout=300)
  assert message in error
  assert not any(tmp_path.iterdir())  # nothing was trained


@pytest.mark.parametrize("name", ["sensitivity", "pacs_domains", "plans"])
@pytest.mark.slow
def test_plotting_experiments_without_matplotlib_fail_at_once(tmp_path, name):
  """Without matplotlib: one line naming the install command, before any run."""
  hide = ("import runpy, sys; sys.modules['matplotlib'] = None; sys.argv[0] = 'x'; "
          f"runpy.run_module('experiments.{name}', run_name='__main__')")
  where = f"--out={tmp_path}" if name == "plans" else f"--root={tmp_path}"
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  result = subprocess.run([sys.executable, "-c", hide, "--smoke", where], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
  assert result.returncode == 2, result.stderr[-4000:]
  assert result.stderr.strip() == ("error: this experiment plots with matplotlib, which "
                                   "is not installed: pip install -e '.[experiments]'")
  assert not any(tmp_path.iterdir())


def test_config_flags_are_parsed_with_the_config_types():
  from experiments import entry
  overrides = entry.parse_config_overrides([
      "--config.epochs=3", "--config.model.dtype=bfloat16", "--config.loss_params.iters",
      "5", "--config.image_size=24", "--config.linear_probe=false"])
  assert overrides == {"epochs": 3, "model.dtype": "bfloat16", "loss_params.iters": 5,
                       "image_size": 24, "linear_probe": False}
  assert entry.parse_config_overrides([]) == {}
  # Helpers raise (a notebook can catch it); only main turns it into an exit.
  with pytest.raises(entry.ExperimentError, match="no config field 'nope'"):
    entry.parse_config_overrides(["--config.nope=1"])
  with pytest.raises(entry.ExperimentError, match="unexpected argument 'stray'"):
    entry.parse_config_overrides(["--config.epochs=3", "stray"])


def test_smoke_configs_are_the_small_config_with_overrides_on_top():
  from experiments import methods, pacs_domains, table2
  from gca_jax.training import config as config_lib
  small = config_lib.get_config("small")
  m = methods.method("GCA-UOT")
  config = table2.make_config("cifar10", "large_erase", m, 3, smoke=True,
                              overrides={"epochs": 2, "model.width": 8})
  assert (config.dataset, config.model.width, config.epochs) == ("digits", 8, 2)
  assert config.batch_size == small.batch_size
  assert (config.loss, config.augmentation, config.seed) == (m.loss, "large_erase", 3)
  # Only the method's loss parameters are set; the others keep the loss's defaults.
  params = {k: v for k, v in config.loss_params.items() if v is not None}
  assert params == m.params
  byol = table2.make_config("digits", "simclr", methods.method("BYOL"), 0, smoke=True)
  assert byol.loss == "byol" and all(v is None for v in byol.loss_params.values())
  pacs = pacs_domains.make_config(0.5, 0.1, 0, "GCA-UOT", smoke=True)
  assert (pacs.target, pacs.target_alpha, pacs.target_beta) == ("domain", 0.5, 0.1)
  assert pacs.model.width == small.model.width
  full = table2.make_config("svhn", "simclr", m, 0)
  assert full.model.name == "resnet50" and full.batch_size == 512


@pytest.mark.slow
def test_train_step_benchmark_measures_and_analyses_the_training_step():
  """The benchmark's functions on a tiny bfloat16 step: the timed step is the
  trainer's (finite loss), and the memory analysis adds up."""
  import math

  from experiments.benchmarks import train_step
  from gca_jax.training import config as config_lib
  config = config_lib.small(train_step.make_config(batch_size=16))
  config.update_from_flattened_dict({"batch_size": 16, "model.dtype": "bfloat16"})
  dataset = train_step.synthetic_dataset(32, image_size=8)
  result = train_step.measure_step(config, dataset, steps=1)
  assert math.isfinite(result["final_loss"]) and result["images_per_second"] > 0
  memory = train_step.step_memory(config, dataset)
  parts = memory["temp_bytes"] + memory["argument_bytes"] + memory["output_bytes"]
  assert memory["peak_bytes"] == parts and memory["argument_bytes"] > 0
  assert memory["fits_80gb"] and memory["dtype"] == "bfloat16"
