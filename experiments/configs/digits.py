"""Digits (scikit-learn's bundled 8x8 scans, 16x16 RGB): the embedded CPU default.

    python -m gca_jax.pretrain --config=experiments/configs/digits.py

A width-reduced ResNet (3 stages of one basic block, 16-64 channels) and a
512-wide projector pre-train in about 1.5 minutes on two CPU cores; the
linear probe reaches ~0.97 test accuracy (a random encoder: ~0.80).
"""

from gca_jax import configs


def get_config():
  return configs.get_config()
