"""`gca_jax.configs.cifar100` by its checkout path (``--config=cifar100`` names it)."""

from gca_jax.configs.cifar100 import get_config  # noqa: F401
