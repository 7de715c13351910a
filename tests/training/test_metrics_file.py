"""metrics.json whose history is not a list of records (``"evaluations":
null``) is copied aside with a warning and its history started anew; the
other values are kept."""

import json

import pytest

from gca_jax.training import reporting


@pytest.mark.parametrize("key, value", [("evaluations", None), ("invocations", {"a": 1}),
                                        ("evaluations", [1, 2])])
def test_a_history_that_is_not_a_list_of_records_is_started_anew(tmp_path, capsys, key,
                                                                 value):
  path = tmp_path / "metrics.json"
  text = json.dumps({"final_loss": 1.5, "invocations": [], key: value})
  path.write_text(text)
  metrics = reporting.MetricsFile(tmp_path).update(
      {"knn_acc": 0.5}, evaluations=[{"protocol": "knn", "accuracy": 0.5}])
  assert metrics["final_loss"] == 1.5 and metrics["knn_acc"] == 0.5
  assert metrics["evaluations"][-1] == {"protocol": "knn", "accuracy": 0.5}
  assert isinstance(metrics["invocations"], list)
  assert json.loads(path.read_text()) == metrics
  assert (tmp_path / "metrics.json.damaged").read_text() == text
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith(f"warning: {path}: {key} is ")
  assert err[0].endswith("not a list of records; copied to metrics.json.damaged, starting "
                         "that history anew")
