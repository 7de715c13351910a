"""`gca_jax.configs.cifar10` by its checkout path (``--config=cifar10`` names it)."""

from gca_jax.configs.cifar10 import get_config  # noqa: F401
