"""Experiment runs: their configs, workdirs and records, and pre-training one.

Every run of an experiment has its own workdir holding the trainer's
checkpoints and ``metrics.json`` and an ``experiment.json`` record (what the
run is: experiment, method, dataset, seed, ...) that ``python -m
experiments.report`` groups by. `run_pretraining` skips finished runs and
lets the trainer continue interrupted ones, so a sweep is simply run again.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

from experiments import trainer
from experiments.entry import ExperimentError

EXPERIMENTS_DIR = Path(__file__).resolve().parent
CONFIG_DIR = EXPERIMENTS_DIR / "configs"
RUN_RECORD = "experiment.json"
METRICS = "metrics.json"


def config_names() -> list[str]:
  return sorted(p.stem for p in CONFIG_DIR.glob("*.py"))


def load_config(name: str, variant: str | None = None):
  """``get_config(variant)`` of ``experiments/configs/<name>.py``."""
  path = CONFIG_DIR / f"{name}.py"
  if not path.exists():
    raise ExperimentError(f"no config {name!r} in experiments/configs/ (available: "
                          f"{', '.join(config_names())})")
  spec = importlib.util.spec_from_file_location(f"gca_config_{name}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(variant)


def read_json(path: Path) -> dict | None:
  try:
    return json.loads(Path(path).read_text())
  except (FileNotFoundError, json.JSONDecodeError):
    return None


def write_json(path: Path, value) -> None:
  """Writes ``value`` as JSON atomically (a killed process never leaves half a file), creating
  the folder."""
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  trainer.write_json(path, value)


def write_rows(path, rows: list) -> None:
  """A benchmark's rows as JSON (`write_json`), and a line saying so."""
  write_json(path, rows)
  print(f"\nwrote {len(rows)} rows to {path}", flush=True)


def finished_metrics(workdir: Path, required: str = "linear_probe_acc") -> dict | None:
  metrics = read_json(Path(workdir) / METRICS)
  return metrics if metrics and required in metrics else None


def log(message: str) -> None:
  print(message, flush=True)


# The seed of a test subset: one fixed test set for every run of a sweep.
TEST_SUBSET_SEED = 0


class DataCache:
  """The datasets of a sweep's runs, each loaded once: runs that differ only
  in what they train (method, target, policy) share the load of their data;
  a train subset (``config.train_examples``) is drawn by the run's seed, so
  it is part of the key. ``test_examples`` > 0: every run is evaluated on the
  same class-balanced subset of that many test images (seed
  `TEST_SUBSET_SEED`), to bound the cost of evaluation at small scale."""

  def __init__(self, test_examples: int = 0):
    self.test_examples = test_examples
    self._loaded: dict = {}

  def get(self, config):
    """The dataset ``config`` trains on (`trainer.load_data`)."""
    key = (config.dataset, config.data_dir, config.load_size, config.split_seed,
           config.train_examples, config.seed if config.train_examples else None)
    if key not in self._loaded:
      dataset = trainer.load_data(config)
      if self.test_examples and self.test_examples < len(dataset.test):
        dataset = dataset._replace(test=trainer.class_balanced_subset(
            dataset.test, self.test_examples, TEST_SUBSET_SEED))
      self._loaded[key] = dataset
    return self._loaded[key]


def run_pretraining(config, workdir: Path, record: dict, dataset=None) -> dict:
  """Pre-trains ``config`` in ``workdir`` then evaluates it linearly.

  Finished runs (``metrics.json`` with a linear-probe accuracy) are skipped;
  the trainer continues a workdir that holds a checkpoint of this run, so an
  interrupted sweep loses at most the step in flight per run. ``record``
  (what the run is) is stored as ``experiment.json`` for `report.py`.
  ``dataset``: the run's data if already loaded (`DataCache`; default: loaded
  from the config). Returns the run's metrics.
  """
  workdir = Path(workdir)
  trainer.check_workdir(workdir, config)
  done = finished_metrics(workdir)
  if done is not None:
    log(f"[skip] {workdir} (finished: linear-probe accuracy "
        f"{done['linear_probe_acc']:.4f})")
    return done
  log(f"[{'resume' if trainer.holds_checkpoint(workdir) else 'run'}] {workdir}")
  write_json(workdir / RUN_RECORD, record)
  metrics = trainer.train_and_evaluate(config, workdir, dataset=dataset)
  if "linear_probe_acc" not in metrics:  # e.g. --config.linear_probe=false
    trainer.evaluate(workdir, "linear")
    metrics = read_json(workdir / METRICS)
  rate = metrics.get("images_per_second")
  log(f"[done] {workdir}: linear-probe accuracy {metrics['linear_probe_acc']:.4f}, "
      f"{'n/a' if rate is None else f'{rate:.0f}'} images/s")
  return metrics


def collect_runs(root: Path) -> list[tuple[dict, dict, Path]]:
  """(record, metrics, workdir) of every finished run under ``root``."""
  runs = []
  for record_path in sorted(Path(root).rglob(RUN_RECORD)):
    record = read_json(record_path)
    metrics_path = record_path.parent / METRICS
    metrics = read_json(metrics_path)
    if metrics_path.exists() and not usable_metrics(metrics):
      # A finished run must not vanish from a table without a word.
      print(f"warning: {metrics_path} is unreadable (not a JSON object of results); that "
            "run is left out", file=sys.stderr, flush=True)
      continue
    if record is not None and metrics is not None:
      runs.append((record, metrics, record_path.parent))
  return runs


def usable_metrics(metrics) -> bool:
  """Whether ``metrics`` (a parsed metrics.json) is an object whose
  evaluations, if any, are a list."""
  return isinstance(metrics, dict) and isinstance(metrics.get("evaluations", []), list)
