"""The train state: everything a step reads and writes, all of it checkpointed.

`TrainState` is what every objective needs (step, parameters, batch
statistics, optimiser state, the augmentation key); `ByolTrainState` adds
BYOL's EMA target network. Nothing else lives in a state: a contrastive run
carries no empty BYOL fields.
"""

from __future__ import annotations

from typing import Any

import flax
import jax


class TrainState(flax.struct.PyTreeNode):
  """State of a contrastive run."""

  step: jax.Array            # global step (int32); also the data position
  params: Any
  batch_stats: Any
  opt_state: Any
  rng: jax.Array             # base key of the augmentations

  @property
  def variables(self) -> dict:
    """The model's variables, as ``model.apply`` takes them."""
    return {"params": self.params, "batch_stats": self.batch_stats}


class ByolTrainState(TrainState):
  """State of a BYOL run: the online network's plus its EMA target."""

  target_params: Any
  target_batch_stats: Any
