"""What a run trains, in a few plain lines: printed as it starts, kept in the workdir.

`describe(run, workdir)` names the dataset with its split sizes and image
size, the model and its widths, the loss with the parameters it is given,
the optimiser, the batch and epochs, the devices and the precision, and the
workdir; `announce` prints it and writes it to ``workdir/summary.txt``
(process 0), so a result can always be read beside what produced it. A
loss's parameters that are not listed take the loss function's own
defaults.

Example (the embedded default, on one CPU)::

    dataset: digits, train 1437 / test 360 examples, 10 classes, images 16x16x3
    model: resnet_small, width 16 (64 features), projector 512 -> 128
    loss: gca_uot (eps=0.5; other parameters: the function's defaults), target pairs
    optimiser: sgd, learning rate 0.3 (nesterov), weight decay 0.0005, warm-up 1 epoch(s)
    batch 128 pairs, 11 steps per epoch, 50 epochs (550 steps), augmentation simclr
    devices: 1 x cpu, 1 process(es); precision: float32 compute, float32 parameters
    workdir: runs/digits-gca_uot-20250101-120000
"""

from __future__ import annotations

from pathlib import Path

import jax

from gca_jax import models
from gca_jax.training import objectives, optimizers, reporting

SUMMARY_FILE = "summary.txt"


def _dataset_line(run) -> str:
  dataset, config = run.dataset, run.config
  h, w, c = run.image_shape
  loaded = "x".join(str(d) for d in dataset.image_shape[:2])
  views = f"images {h}x{w}x{c}"
  if (h, w) != tuple(dataset.image_shape[:2]):
    views += f" (loaded at {loaded})"
  subset = " (a class-balanced subset: config.train_examples)" if config.train_examples else ""
  return (f"dataset: {config.dataset}, train {len(dataset.train)}{subset} / test "
          f"{len(dataset.test)} examples, {dataset.num_classes} classes, {views}")


def _model_line(run) -> str:
  model, config = run.model, run.config
  encoder = model.encoder
  width = f"width {encoder.width}"
  if not config.model.width:
    width += " (the architecture's default)"
  features = models.encoder_feature_dim(config.model.name, encoder.width)
  line = (f"model: {config.model.name}, {config.model.stem} stem, {width} ({features} "
          f"features), projector {model.projector.hidden_dim} -> "
          f"{model.projector.projection_dim}")
  if model.predictor is not None:
    line += (f", predictor {model.predictor.hidden_dim} -> "
             f"{model.predictor.projection_dim}")
  return line


def _loss_line(run) -> str:
  config = run.config
  name = objectives.canonical_loss(config.loss)
  shown = name if name == config.loss else f"{config.loss} (= {name})"
  if name in objectives.PREDICTOR_LOSSES:
    extra = f", EMA decay {config.ema_decay}" if name == objectives.BYOL else ""
    return f"loss: {shown} (no loss parameters{extra}; config.loss_params unused)"
  params = objectives.loss_params_of(config)
  given = ", ".join(f"{k}={v}" for k, v in params.items()) or "none set"
  line = (f"loss: {shown} ({given}; other parameters: the function's defaults), "
          f"target {config.target}, scope {config.loss_scope}")
  if config.target == "domain":
    line += f" (alpha {config.target_alpha}, beta {config.target_beta})"
  elif config.target == "hierarchical":
    line += f" (alphas {tuple(config.target_alphas)}, beta {config.target_beta})"
  return line


def _optimiser_line(run) -> str:
  config = run.config
  peak = optimizers.learning_rate(config, config.batch_size)
  rate = f"learning rate {peak:g}"
  if config.lr_scaling == "linear":
    rate += f" ({config.learning_rate:g} x batch / 256)"
  details = []
  if config.optimizer == "sgd":
    details.append(f"momentum {config.momentum:g}{', nesterov' if config.nesterov else ''}")
  if config.predictor_fixed_lr:
    details.append("predictor at the peak rate")
  extra = f" ({'; '.join(details)})" if details else ""
  return (f"optimiser: {config.optimizer}, {rate}{extra}, cosine schedule, weight decay "
          f"{config.weight_decay:g}, warm-up {config.warmup_epochs:g} epoch(s)")


def _schedule_line(run) -> str:
  config, spe = run.config, run.steps_per_epoch
  stop = (f", stopping after epoch {config.stop_after_epoch}"
          if config.stop_after_epoch and config.stop_after_epoch < config.epochs else "")
  return (f"batch {config.batch_size} pairs, {spe} steps per epoch, {config.epochs} epochs "
          f"({config.epochs * spe} steps){stop}, augmentation {config.augmentation}")


def _devices_line(run) -> str:
  devices = run.mesh.devices.flatten()
  kinds = sorted({d.device_kind for d in devices})
  return (f"devices: {len(devices)} x {jax.default_backend()} ({', '.join(kinds)}), "
          f"{jax.process_count()} process(es); precision: {run.config.model.dtype} compute, "
          "float32 parameters and loss")


def describe(run, workdir: str | Path) -> str:
  """The summary of ``run`` (a `gca_jax.training.Run`) in ``workdir``: one
  line each for the dataset, model, loss, optimiser, batch and epochs,
  devices and precision, and the workdir (see the module doc)."""
  return "\n".join([_dataset_line(run), _model_line(run), _loss_line(run),
                    _optimiser_line(run), _schedule_line(run), _devices_line(run),
                    f"workdir: {workdir}"])


def announce(run, workdir: str | Path) -> str:
  """Prints `describe` (process 0) and writes it to ``workdir/summary.txt``;
  returns it."""
  text = describe(run, workdir)
  reporting.log(text)
  if reporting.is_main_process():  # atomically: a reader never sees half of it
    temporary = Path(workdir) / (SUMMARY_FILE + ".tmp")
    temporary.write_text(text + "\n")
    temporary.replace(Path(workdir) / SUMMARY_FILE)
  return text
