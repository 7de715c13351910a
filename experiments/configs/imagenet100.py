"""`gca_jax.configs.imagenet100` by its checkout path (``--config=imagenet100`` names it)."""

from gca_jax.configs.imagenet100 import get_config  # noqa: F401
