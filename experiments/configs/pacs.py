"""`gca_jax.configs.pacs` by its checkout path (``--config=pacs`` names it)."""

from gca_jax.configs.pacs import get_config  # noqa: F401
