"""The kNN monitor and the linear protocol on features with known answers."""

import numpy as np
import pytest


def _clusters(per_class=30, classes=3, dim=8, spread=0.05, seed=0):
  centres = np.random.default_rng(0).normal(size=(classes, dim))  # shared by all splits
  rng = np.random.default_rng(seed + 1)
  labels = np.repeat(np.arange(classes), per_class)
  return centres[labels] + spread * rng.normal(size=(len(labels), dim)), labels


def test_knn_classifies_separated_clusters_and_fails_on_shuffled_labels():
  from gca_jax import evaluation
  train_x, train_y = _clusters()
  test_x, test_y = _clusters(seed=1)
  assert evaluation.knn_accuracy(train_x, train_y, test_x, test_y, 3, k=5) == 1.0
  shuffled = np.random.default_rng(0).permutation(train_y)
  assert evaluation.knn_accuracy(train_x, shuffled, test_x, test_y, 3, k=5) < 0.7


def test_knn_votes_are_weighted_by_similarity():
  from gca_jax import evaluation
  bank = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
  labels = np.array([0, 1, 1])
  query = np.array([[1.0, 0.05]])
  # Two weak votes for class 1 lose to one strong vote for class 0 at low T.
  assert evaluation.knn_accuracy(bank, labels, query, [0], 2, k=3, temperature=0.05) == 1.0
  assert evaluation.knn_accuracy(bank, labels, query, [0], 2, k=3, temperature=100.0) == 0.0


def test_linear_probe_separates_linearly_separable_features():
  from gca_jax import evaluation
  train_x, train_y = _clusters(spread=0.3)
  test_x, test_y = _clusters(spread=0.3, seed=1)
  assert evaluation.linear_probe(train_x, train_y, test_x, test_y, 3, steps=200) >= 0.95
  # Labels independent of the features: near chance.
  noise_y = np.random.default_rng(2).integers(0, 3, len(test_y))
  assert evaluation.linear_probe(train_x, train_y, test_x, noise_y, 3, steps=200) < 0.6


@pytest.mark.parametrize("batch,devices,expected", [(512, 3, 510), (2, 4, 4), (8, 1, 8)])
def test_eval_batch_size_is_a_multiple_of_the_devices(batch, devices, expected):
  from gca_jax import evaluation
  assert evaluation.eval_batch_size(batch, devices) == expected
