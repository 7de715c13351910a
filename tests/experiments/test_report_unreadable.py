"""`experiments/report.py` says that a run's metrics.json is unreadable
(with a warning naming it) rather than "No finished runs"."""

import pytest

from experiments import report, runs
from tests.experiments.test_report import fake_run


@pytest.mark.parametrize("damage", ['{"epochs": 500, "linear_probe', '[1, 2]',
                                    '{"evaluations": null}'])
def test_an_unreadable_metrics_file_is_named(tmp_path, capsys, damage):
  workdir = fake_run(tmp_path, "gca_uot", "cifar10", "simclr", 0,
                     {"linear_probe_acc": 0.5})
  (workdir / runs.METRICS).write_text(damage)
  text = report.build_report([tmp_path])
  assert text.startswith(
      f"No finished runs under {tmp_path} with finetune, linear results (1 run(s) left out: "
      f"metrics.json unreadable, e.g. {workdir / runs.METRICS}).")
  assert capsys.readouterr().err == (f"warning: {workdir / runs.METRICS} is unreadable (not "
                                     "a JSON object of results); that run is left out\n")
