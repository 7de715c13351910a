"""CIFAR-100: the CIFAR-10 setup of the paper (see cifar10.py) on 100 classes."""

from gca_jax import configs


def get_config():
  return configs.paper_cifar_config("cifar100")
