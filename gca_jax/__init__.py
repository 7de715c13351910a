"""gca_jax: Generalized Contrastive Alignment in JAX.

Contrastive losses as distribution alignment (Chen, Lin, Liu, Xiao, Dyer,
NeurIPS 2024): InfoNCE, RINCE and their GCA generalisations run Sinkhorn or
unbalanced-OT projections on the batch's similarity kernel and align the
resulting plan with a target plan.
"""

from gca_jax import losses, metrics, reference
from gca_jax.losses import (
    LossAux, byol, class_target, domain_target, gca_ince, gca_loss,
    gca_rince, gca_uot, hs_ince, hs_rince, infonce, iot, iot_uni, rince,
    sinkhorn)
from gca_jax.metrics import alignment, uniformity

__all__ = [
    "LossAux", "alignment", "byol", "class_target", "domain_target", "gca_ince",
    "gca_loss", "gca_rince", "gca_uot", "hs_ince", "hs_rince", "infonce", "iot",
    "iot_uni", "losses", "metrics", "reference", "rince", "sinkhorn", "uniformity",
]
__version__ = "0.1.0"
