"""Digits (scikit-learn's bundled 8x8 scans, 16x16 RGB): the embedded CPU default.

    python -m gca_jax.pretrain --config=digits

A width-reduced ResNet (3 stages of one basic block, 16-64 channels) and a
512-wide projector pre-train for 50 epochs in about 2.5 minutes of CPU time;
the linear probe reaches ~0.97 test accuracy (a random encoder: ~0.80).
"""

from gca_jax.training import config as configs


def get_config(variant=None):
  """``variant="small"``: the same method as a seconds-long CPU run."""
  return configs.get_config(variant)
