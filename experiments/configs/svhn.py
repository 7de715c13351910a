"""`gca_jax.configs.svhn` by its checkout path (``--config=svhn`` names it)."""

from gca_jax.configs.svhn import get_config  # noqa: F401
