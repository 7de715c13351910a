"""SVHN (cropped digits, 32x32): the paper's CIFAR-10 setup (see cifar10.py)."""

from gca_jax.training import config as configs


def get_config(variant=None):
  """``variant="small"``: the same method as a seconds-long CPU run."""
  return configs.apply_variant(configs.paper_cifar_config("svhn_cropped"), variant)
