"""The methods of the paper's Table 2, as data: the loss each row trains with.

Two implementations of every row: ``"published"``, the presets of
`gca_jax.reference` (the code behind the paper's numbers; INCE and RINCE are
its half-step losses ``hs_ince`` and ``hs_rince``, which equal InfoNCE and
RINCE by Theorems 1 and 2 in the code's plan formulation, and SimCLR its
``NT_Xent``), and ``"clean"``, the paper-faithful losses of `gca_jax.losses`.
BYOL is the same in both. Parameters carry the losses' own names
(``config.loss_params``): ``eps`` the entropic regularisation, ``iters`` the
Sinkhorn iterations, ``lam`` and ``q`` RINCE's, ``rho_a``/``rho_b`` the
unbalanced relaxations, ``w_ce``/``w_rince`` GCA-UOT's weights, ``lambda_p``
IOT-uni's.
"""

from __future__ import annotations

import dataclasses

from experiments.entry import ExperimentError


@dataclasses.dataclass(frozen=True)
class Method:
  """A row of Table 2: ``config.loss`` and ``config.loss_params`` to train it."""

  label: str
  loss: str
  params: dict

  @property
  def slug(self) -> str:
    return self.label.lower().replace("-", "_")


# The paper code's defaults: eps 0.5, 10 iterations, lam 0.01, q 0.6,
# relaxations 0.2, CE weight 1, RINCE weight 0.02.
EPS, ITERS, LAM, Q = 0.5, 10, 0.01, 0.6
RHO, W_CE, W_RINCE = 0.2, 1.0, 0.02
PUBLISHED_PARAMS = dict(eps=EPS, iters=ITERS, lam=LAM, q=Q, rho_a=RHO, rho_b=RHO,
                        w_ce=W_CE, w_rince=W_RINCE)
METHOD_LABELS = ("INCE", "GCA-INCE", "RINCE", "GCA-RINCE", "SimCLR", "BYOL", "IOT",
                 "IOT-uni", "GCA-UOT")
PUBLISHED_LOSSES = {
    "INCE": "hs_ince", "GCA-INCE": "gca_ince", "RINCE": "hs_rince",
    "GCA-RINCE": "gca_rince", "SimCLR": "NT_Xent", "IOT": "iot", "IOT-uni": "iot_uni",
    "GCA-UOT": "gca_uot",
}
CLEAN_METHODS = {
    "INCE": ("infonce", dict(eps=EPS)),
    "GCA-INCE": ("gca_ince", dict(eps=EPS, iters=ITERS)),
    "RINCE": ("rince", dict(eps=EPS, lam=LAM, q=Q)),
    "GCA-RINCE": ("gca_rince", dict(eps=EPS, iters=ITERS, lam=LAM, q=Q)),
    # In the clean library SimCLR's NT-Xent is InfoNCE itself.
    "SimCLR": ("infonce", dict(eps=EPS)),
    "IOT": ("iot", dict(eps=EPS, iters=ITERS)),
    "IOT-uni": ("iot_uni", dict(eps=EPS, iters=ITERS, lambda_p=0.2)),
    "GCA-UOT": ("gca_uot", dict(eps=EPS, iters=ITERS, rho_a=RHO, rho_b=RHO, lam=LAM,
                                q=Q, w_ce=W_CE, w_rince=W_RINCE)),
}
IMPLEMENTATIONS = ("published", "clean")


def method(label: str, implementation: str = "published") -> Method:
  """The loss that trains Table 2's row ``label``.

  ``"published"``: the presets of `gca_jax.reference` (the code behind the
  paper's numbers); ``"clean"``: the paper-faithful `gca_jax.losses`.
  BYOL is the same in both.

  Examples:
    >>> method("GCA-INCE", "clean")
    Method(label='GCA-INCE', loss='gca_ince', params={'eps': 0.5, 'iters': 10})
    >>> method("INCE").loss
    'reference/hs_ince'
  """
  if label not in METHOD_LABELS:
    raise ExperimentError(f"unknown method {label!r}; choose from "
                          f"{', '.join(METHOD_LABELS)}")
  if implementation not in IMPLEMENTATIONS:
    raise ExperimentError(f"implementation must be one of {', '.join(IMPLEMENTATIONS)}, "
                          f"got {implementation!r}")
  if label == "BYOL":
    return Method(label, "byol", {})
  if implementation == "published":
    return Method(label, f"reference/{PUBLISHED_LOSSES[label]}", dict(PUBLISHED_PARAMS))
  loss, params = CLEAN_METHODS[label]
  return Method(label, loss, dict(params))


def with_loss_param(m: Method, name: str, value) -> Method:
  """``m`` with one loss hyper-parameter changed (eps, iters, ...)."""
  if name not in m.params:
    raise ExperimentError(f"{m.label} ({m.loss}) has no parameter {name!r}")
  return dataclasses.replace(m, params={**m.params, name: value})


def configure_method(config, m: Method):
  """``config`` set to train ``m``: its loss, its parameters, and every other
  loss parameter unset (the loss's default)."""
  config.loss = m.loss
  params = {f"loss_params.{name}": None for name in config.loss_params}
  params.update({f"loss_params.{name}": value for name, value in m.params.items()})
  config.update_from_flattened_dict(params)
  return config
