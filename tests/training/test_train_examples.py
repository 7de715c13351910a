"""``config.train_examples`` below the number of classes is refused in one
line: the subset would drop classes the test split still holds."""

import pytest

from tests.conftest import one_line_error, run_module


@pytest.mark.slow
def test_fewer_train_examples_than_classes_is_one_line(tmp_path):
  result = run_module("gca_jax.pretrain", f"--workdir={tmp_path}",
                      "--config=gca_jax/training/config.py:small",
                      "--config.train_examples=5")
  assert one_line_error(result) == (
      "error: config.train_examples=5 is below the 10 classes of the train split, so the "
      "subset would drop classes; use at least 10 (or 0: the whole split)")


def test_as_many_train_examples_as_classes_keeps_every_class():
  import numpy as np
  from gca_jax.training import feeds
  from tests.conftest import tiny_config
  dataset = feeds.load_data(tiny_config(train_examples=10))
  assert sorted(np.asarray(dataset.train.labels).tolist()) == list(range(10))
