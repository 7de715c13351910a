"""Optimisers and learning-rate schedules (optax).

``config.optimizer`` selects one of

* ``"sgd"``: SGD with momentum (0.9; Nesterov's unless ``config.nesterov`` is
  false), weight decay added to the
  gradient (coupled, as in PyTorch's ``SGD(weight_decay=...)``) but for
  kernels only: unlike the paper code's PyTorch SGD, which decays every
  parameter, batch-norm scales/offsets and biases are not decayed;
* ``"adam"``: AdamW (decoupled weight decay);
* ``"lars"``: LARS (SimCLR's large-batch optimiser), trust ratio and weight
  decay skipped for biases and batch-norm parameters as in SimCLR.

With every optimiser, weight decay applies to kernels (weight matrices and
convolution kernels, ``ndim > 1``) only, never to biases or batch-norm
parameters.
All use linear warm-up followed by cosine decay to zero over the run. The
base learning rate is scaled by ``global_batch_size / 256`` when
``config.lr_scaling == "linear"``.

``config.predictor_fixed_lr`` (SimSiam's option, Chen & He 2021, Sec. 4.4:
"the predictor's learning rate is fixed"): the predictor head's parameters
(the top-level ``"predictor"`` entry of the parameters) are updated by the
same optimiser at the constant peak rate instead of the schedule; the rest
of the network follows the schedule.
"""

from __future__ import annotations

import jax
import optax

from gca_jax import models


def learning_rate(config, global_batch_size: int) -> float:
  """Peak learning rate after the optional linear batch-size scaling."""
  lr = config.learning_rate
  if config.get("lr_scaling", "none") == "linear":
    lr *= global_batch_size / 256
  return lr


def make_schedule(config, steps_per_epoch: int) -> optax.Schedule:
  peak = learning_rate(config, config.batch_size)
  total_steps = max(config.epochs * steps_per_epoch, 1)
  warmup_steps = min(int(config.warmup_epochs * steps_per_epoch), total_steps - 1)
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0 if warmup_steps else peak, peak_value=peak,
      warmup_steps=warmup_steps, decay_steps=total_steps, end_value=0.0)


def _is_kernel(params):
  """Mask: True for weight matrices/conv kernels, False for biases and BN."""
  return jax.tree.map(lambda p: p.ndim > 1, params)


def _predictor_labels(params):
  """``"fixed"`` for every leaf of the predictor head, ``"scheduled"`` elsewhere."""
  return {name: jax.tree.map(lambda _, n=name: "fixed" if n == models.PREDICTOR else "scheduled",
                             subtree)
          for name, subtree in params.items()}


def make_optimizer(config, steps_per_epoch: int) -> optax.GradientTransformation:
  """The optimiser of ``config`` (module docstring) over ``steps_per_epoch``."""
  scheduled = _optimizer(config, make_schedule(config, steps_per_epoch))
  if not config.predictor_fixed_lr:
    return scheduled
  fixed = _optimizer(config, learning_rate(config, config.batch_size))
  return optax.multi_transform({"scheduled": scheduled, "fixed": fixed}, _predictor_labels)


def _optimizer(config, schedule) -> optax.GradientTransformation:
  name, wd = config.optimizer, config.weight_decay
  if name == "sgd":
    return optax.chain(
        optax.add_decayed_weights(wd, mask=_is_kernel),
        optax.sgd(schedule, momentum=config.momentum, nesterov=config.nesterov))
  if name == "adam":
    return optax.adamw(schedule, weight_decay=wd, mask=_is_kernel)
  if name == "lars":
    return optax.lars(schedule, weight_decay=wd, weight_decay_mask=_is_kernel,
                      trust_ratio_mask=_is_kernel, momentum=config.momentum)
  raise ValueError(f"unknown optimizer {name!r}; use 'sgd', 'adam' or 'lars'")
