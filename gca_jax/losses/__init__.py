"""GCA losses: pure functions of two views' embeddings.

The mathematical contract (inputs, projections, each loss's formula, target
plans, numerics) is ``docs/losses.md``. :mod:`gca_jax.losses.sharded` holds
the same losses with the plan's rows sharded across devices;
:mod:`gca_jax.losses.tiled` is the kernel every loss recomputes in tiles with
``tile_size`` (memory linear in the batch).
"""

from gca_jax.losses.contrastive import (
    CONTRASTIVE_LOSSES, LossAux, byol, gca_ince, gca_loss, gca_rince, gca_uot,
    get, hs_ince, hs_rince, infonce, iot, iot_uni, rince)
from gca_jax.losses.geometry import BatchGeometry, batch_geometry, l2_normalize
from gca_jax.losses.projections import ProjectionOutput, sinkhorn
from gca_jax.losses.targets import (
    LabelTarget, class_target, domain_target, hierarchical_target)
from gca_jax.losses.simsiam import simsiam
from gca_jax.losses import sharded, tiled

__all__ = [
    "CONTRASTIVE_LOSSES", "BatchGeometry", "LabelTarget", "LossAux", "ProjectionOutput",
    "batch_geometry", "byol", "class_target", "domain_target", "gca_ince",
    "gca_loss", "gca_rince", "gca_uot", "get", "hierarchical_target", "hs_ince", "hs_rince",
    "infonce", "iot", "iot_uni", "l2_normalize", "rince", "sharded",
    "simsiam", "sinkhorn", "tiled",
]
