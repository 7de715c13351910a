"""SVHN (cropped digits, 32x32): the paper's CIFAR-10 setup (see cifar10.py)."""

from gca_jax import configs


def get_config():
  return configs.paper_cifar_config("svhn_cropped")
