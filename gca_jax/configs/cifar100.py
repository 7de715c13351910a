"""CIFAR-100: the CIFAR-10 setup of the paper (see cifar10.py) on 100 classes."""

from gca_jax.training import config as configs


def get_config(variant=None):
  """``variant="small"``: the same method as a seconds-long CPU run."""
  return configs.apply_variant(configs.paper_cifar_config("cifar100"), variant)
