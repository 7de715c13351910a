"""CIFAR-10 with the paper's setup: ResNet-18 (CIFAR stem), projector
Linear(2048, no bias)-ReLU-Linear(128), SGD Nesterov (momentum 0.9) with a
cosine schedule, global batch 512, synchronised batch norm.

    python -m gca_jax.pretrain --config=cifar10 \
        --config.data_dir=/path/to/tfds --workdir=runs/cifar10_gca_uot

Prepare the data once with ``python -m gca_jax.data.prepare cifar10``.
"""

from gca_jax.training import config as configs


def get_config(variant=None):
  """``variant="small"``: the same method as a seconds-long CPU run."""
  return configs.apply_variant(configs.paper_cifar_config("cifar10"), variant)
