"""GCA losses: pure functions of two views' embeddings (SPEC section 3)."""

from gca_jax.losses.contrastive import (
    LossAux, byol, gca_ince, gca_loss, gca_rince, gca_uot, hs_ince, hs_rince,
    infonce, iot, iot_uni, rince)
from gca_jax.losses.geometry import BatchGeometry, batch_geometry, l2_normalize
from gca_jax.losses.projections import ProjectionOutput, sinkhorn
from gca_jax.losses.targets import class_target, domain_target

#: Contrastive losses selectable by name, each ``fn(z1, z2, **params)``.
CONTRASTIVE_LOSSES = {
    "infonce": infonce,
    "gca_ince": gca_ince,
    "rince": rince,
    "gca_rince": gca_rince,
    "gca_uot": gca_uot,
    "hs_ince": hs_ince,
    "hs_rince": hs_rince,
    "iot": iot,
    "iot_uni": iot_uni,
}


def get(name: str):
  """The contrastive loss called ``name`` (one of :data:`CONTRASTIVE_LOSSES`)."""
  try:
    return CONTRASTIVE_LOSSES[name]
  except KeyError:
    raise ValueError(
        f"unknown loss name {name!r}; choose one of "
        f"{sorted(CONTRASTIVE_LOSSES)} (or 'byol' with its own signature)."
    ) from None
