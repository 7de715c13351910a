"""`gca_jax.configs.simsiam_cifar10` by its checkout path (``--config=simsiam_cifar10``)."""

from gca_jax.configs.simsiam_cifar10 import get_config  # noqa: F401
