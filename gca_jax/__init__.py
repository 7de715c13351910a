"""gca_jax: Generalized Contrastive Alignment in JAX.

Contrastive losses as distribution alignment (Chen, Lin, Liu, Xiao, Dyer,
NeurIPS 2024): InfoNCE, RINCE and their GCA generalisations run Sinkhorn or
unbalanced-OT projections on the batch's similarity kernel and align the
resulting plan with a target plan.

The losses, targets, projections, `gca_jax.metrics`, `gca_jax.reference`,
`gca_jax.theorems` and `gca_jax.sharding` need only the core install (jax,
numpy, flax); `gca_jax.training`, `gca_jax.data`, `gca_jax.configs` and the
command lines need the ``train`` extra and say so in one line without it.
Nothing is imported here until it is used.
"""

import importlib

# Imported on first use (PEP 562), so that a command line's ``--help`` and its
# flag errors come before jax is loaded.
_SUBMODULES = ("losses", "metrics", "reference")
_FROM_LOSSES = (
    "LossAux", "byol", "class_target", "domain_target", "gca_ince", "gca_loss",
    "gca_rince", "gca_uot", "hierarchical_target", "hs_ince", "hs_rince", "infonce", "iot",
    "iot_uni", "rince", "simsiam", "sinkhorn")
_FROM_METRICS = ("alignment", "uniformity", "wdm_lower_bound", "wdm_sinkhorn")

__all__ = sorted(_SUBMODULES + _FROM_LOSSES + _FROM_METRICS)


def __getattr__(name: str):
  if name in _SUBMODULES:
    return importlib.import_module(f"gca_jax.{name}")
  if name in _FROM_LOSSES:
    return getattr(importlib.import_module("gca_jax.losses"), name)
  if name in _FROM_METRICS:
    return getattr(importlib.import_module("gca_jax.metrics"), name)
  raise AttributeError(f"module 'gca_jax' has no attribute {name!r}")


def __dir__():
  return sorted(set(globals()) | set(__all__))


__version__ = "0.1.0"
