"""The batch order: which examples global step ``(seed, epoch, step)`` reads.

For small-image datasets (CIFAR, digits) the whole uint8 split lives on the
device (CIFAR-10 train is 150 MB) and a batch is a gather by indices computed
from ``(seed, epoch, step)`` (`batch_indices`): no host work per image, and
exact resumption from the step. Every epoch is a fresh permutation of the
split (`epoch_permutation`) cut into `steps_per_epoch` full global batches;
the remainder is dropped.

The gather runs in `gca_jax.training.feeds.DeviceFeed`: a jitted gather from
the split replicated on every device, outside the train step, whose result is
sharded over the mesh's data axis. The grain loader (`gca_jax.data.loader`)
reads the same indices for large images.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp


def steps_per_epoch(num_examples: int, global_batch_size: int) -> int:
  """Full batches per epoch; the remainder is dropped (reshuffled next epoch)."""
  if global_batch_size <= 0:
    raise ValueError(f"global_batch_size must be positive, got {global_batch_size}.")
  steps = num_examples // global_batch_size
  if steps == 0:
    raise ValueError(f"global_batch_size={global_batch_size} exceeds the "
                     f"{num_examples} examples of the split; lower it.")
  return steps


def epoch_permutation(seed, epoch, num_examples: int) -> jax.Array:
  """The order of examples in ``epoch``: a permutation keyed by fold_in(seed, epoch)."""
  key = jax.random.fold_in(jax.random.key(seed), epoch)
  return jax.random.permutation(key, num_examples).astype(jnp.int32)


@functools.partial(jax.jit, static_argnames=("global_batch_size", "num_examples"))
def batch_indices(seed, epoch, step, global_batch_size: int,
                  num_examples: int) -> jax.Array:
  """int32 indices of the global batch ``step`` of ``epoch``.

  Deterministic in ``(seed, epoch, step)``; within an epoch, batches are
  disjoint. ``seed``, ``epoch`` and ``step`` may be traced.
  """
  perm = epoch_permutation(seed, epoch, num_examples)
  return jax.lax.dynamic_slice(perm, (step * global_batch_size,),
                               (global_batch_size,))
