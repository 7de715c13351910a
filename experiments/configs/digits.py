"""`gca_jax.configs.digits` by its checkout path (``--config=digits`` names it)."""

from gca_jax.configs.digits import get_config  # noqa: F401
