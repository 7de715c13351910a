r"""Fine-tuning evaluation: the protocol behind the paper's CIFAR numbers.

The CIFAR-10/100 accuracies of the paper's Table 2 come from its published
code's ``linear_evaluation_cifar``, which, despite the name, fine-tunes the
whole encoder (it sets ``model.enc.requires_grad = False``, a plain attribute
that leaves every encoder parameter in the optimiser). `finetune` reproduces
that protocol:

* model: the pre-trained encoder followed by ``Linear(feature_dim,
  num_classes)`` (PyTorch's default init, ``U(-1/sqrt(d), 1/sqrt(d))`` for
  weights and bias); every encoder parameter is trained and batch norm runs
  in training mode (batch statistics of the global batch, running averages
  updated with PyTorch's momentum 0.1);
* inputs: ``RandomResizedCrop(image_size)`` with torchvision's defaults
  (area scale (0.08, 1), aspect ratio (3/4, 4/3)) and a horizontal flip
  (p = 0.5), then ``(x - mean) / std`` with the dataset's channel statistics;
* objective: softmax cross-entropy;
* optimiser: SGD with Nesterov momentum 0.9, no weight decay, batch 512,
  200 epochs, and at update ``t = 0 .. T - 1`` (``T = epochs *
  steps_per_epoch``) the learning rate

      lr(t) = base_lr * (c_end + (c_start - c_end) * (1 + cos(pi t / T)) / 2),

  base_lr = 0.2, c_start = 0.6, c_end = 1e-3: the published code's ``LambdaLR``
  factor (a per-step cosine from its ``learning_rate`` 0.6 down to 1e-3)
  multiplying the SGD learning rate 0.2;
* evaluation: after every epoch, test accuracy of the un-augmented,
  normalised test split with batch norm in evaluation mode (running
  statistics), as the published code's ``model.eval()`` pass does.

The published code reports the best test accuracy over the epochs: model
selection on the test set. `FinetuneResult.best_accuracy` is that number,
labelled as such; `FinetuneResult.last_accuracy` (the last epoch, no
selection) is recorded beside it, with every epoch's accuracy.

Differences from the published code: batches are drawn from a per-epoch
permutation keyed by ``(seed, epoch)`` (`gca_jax.data.order`) and the last
partial batch of an epoch is dropped (the published loader keeps it; CIFAR at
batch 512 gets 97 instead of 98 updates per epoch); crops are resampled
bilinearly with antialiasing on the device rather than by PIL; the mean/std
are the dataset's (``dataset.mean``/``std``: the published code's constants for
the catalog CIFAR datasets, sample statistics for local files); the encoder
computes in ``model_config.dtype`` (float32 gives the published precision).

Data parallel: one jitted step per batch, the batch sharded over the
mesh's (only) axis; batch statistics are those of the global batch, as on
one device. The train split is held on the device (CIFAR-size data).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct
from jax.sharding import Mesh

from gca_jax import evaluation, models, sharding
from gca_jax.data import augment, order
from gca_jax.training import checkpoint, feeds
from gca_jax.training import interrupts as interrupts_lib

BEST_ACCURACY_NOTE = ("best test accuracy over epochs: model selection on the test set, "
                      "as the paper's published code reports")


@dataclasses.dataclass(frozen=True)
class FinetuneResult:
  """Accuracies (fractions in [0, 1]) of a fine-tuning run.

  ``best_accuracy``: the maximum of ``epoch_accuracies`` (see
  `BEST_ACCURACY_NOTE`), first reached after ``best_epoch`` epochs (1-based).
  ``last_accuracy``: after the last epoch. ``variables``: the fine-tuned
  classifier's ``{"params": {"encoder", "head"}, "batch_stats": {"encoder"}}``
  (the last epoch's, not the best one's).
  """

  best_accuracy: float
  best_epoch: int
  last_accuracy: float
  epoch_accuracies: tuple[float, ...]
  train_losses: tuple[float, ...]
  steps_per_epoch: int
  variables: Any = dataclasses.field(repr=False)


def torch_linear_init(fan_in: int):
  """(kernel_init, bias_init) of PyTorch's nn.Linear: both U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
  bound = 1.0 / math.sqrt(fan_in)

  def bias_init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  # variance_scaling(1/3, fan_in, uniform) draws from U(-sqrt(1/fan_in), sqrt(1/fan_in)).
  return nn.initializers.variance_scaling(1 / 3, "fan_in", "uniform"), bias_init


def make_head(feature_dim: int, num_classes: int) -> nn.Dense:
  kernel_init, bias_init = torch_linear_init(feature_dim)
  return nn.Dense(num_classes, kernel_init=kernel_init, bias_init=bias_init)


class Classifier(nn.Module):
  """Encoder followed by a linear head (``"head"``) initialised as nn.Linear."""

  encoder: nn.Module
  num_classes: int

  @nn.compact
  def __call__(self, x, train: bool = True):
    h = self.encoder(x, train=train)
    kernel_init, bias_init = torch_linear_init(h.shape[-1])
    return nn.Dense(self.num_classes, kernel_init=kernel_init, bias_init=bias_init,
                    name="head")(h)


def make_classifier(model_config, num_classes: int) -> Classifier:
  """The encoder of ``config.model`` (see `gca_jax.models.create_model`) + head."""
  encoder = models.make_encoder(model_config.name, stem=model_config.stem,
                                width=model_config.get("width") or None,
                                dtype=jnp.dtype(model_config.dtype))
  return Classifier(encoder, num_classes)


def learning_rate_schedule(base_lr: float, total_steps: int, cosine_start: float = 0.6,
                           cosine_end: float = 1e-3) -> optax.Schedule:
  """``t -> base_lr * (end + (start - end) * (1 + cos(pi t / T)) / 2)``, T = total_steps."""
  def schedule(step):
    progress = jnp.asarray(step, jnp.float32) / total_steps
    factor = cosine_end + (cosine_start - cosine_end) * 0.5 * (1.0 + jnp.cos(jnp.pi * progress))
    return base_lr * factor
  return schedule


def make_optimizer(base_lr: float, total_steps: int, cosine_start: float = 0.6,
                   cosine_end: float = 1e-3, momentum: float = 0.9) -> optax.GradientTransformation:
  """SGD, Nesterov momentum, no weight decay, at `learning_rate_schedule`.

  optax's Nesterov trace is PyTorch's: ``b <- momentum * b + g`` and the
  step ``-lr(t) * (g + momentum * b)``.
  """
  schedule = learning_rate_schedule(base_lr, total_steps, cosine_start, cosine_end)
  return optax.sgd(schedule, momentum=momentum, nesterov=True)


def initial_variables(model_config, variables, num_classes: int, seed: int = 0) -> dict:
  """The classifier before fine-tuning: the pre-trained encoder's variables
  and a head drawn from the key of ``seed``."""
  feature_dim = models.encoder_feature_dim(model_config.name, model_config.get("width") or None)
  head_key = jax.random.fold_in(jax.random.key(seed), 0)
  head = make_head(feature_dim, num_classes).init(head_key, jnp.zeros((1, feature_dim)))
  return {"params": {"encoder": variables["params"]["encoder"], "head": head["params"]},
          "batch_stats": {"encoder": variables["batch_stats"]["encoder"]}}


class FinetuneSettings(NamedTuple):
  """The protocol's settings (defaults: the published code's)."""

  epochs: int = 200
  batch_size: int = 512
  base_lr: float = 0.2
  cosine_start: float = 0.6
  cosine_end: float = 1e-3
  momentum: float = 0.9
  seed: int = 0                    # head initialisation, batch order and augmentation
  image_size: int | None = None    # crops and test images (None: the data's height)


class Inputs(NamedTuple):
  """How images become the classifier's inputs (hashable: a static field)."""

  image_size: int
  mean: tuple[float, ...]
  std: tuple[float, ...]


class FinetuneState(struct.PyTreeNode):
  """The classifier being fine-tuned, its optimiser and its augmentation key.

  ``step`` counts updates; update ``t`` augments with ``fold_in(rng, t)``.
  ``apply_fn``, ``tx`` and ``inputs`` are static (part of the jitted
  programs, not traced).
  """

  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any
  rng: jax.Array
  apply_fn: Callable = struct.field(pytree_node=False)
  tx: optax.GradientTransformation = struct.field(pytree_node=False)
  inputs: Inputs = struct.field(pytree_node=False)

  @property
  def variables(self) -> dict:
    return {"params": self.params, "batch_stats": self.batch_stats}


def _augment_one(key, image_uint8, *, out_size, mean, std):
  crop_key, flip_key = jax.random.split(key)
  image = image_uint8.astype(jnp.float32) / 255.0
  image = augment.random_resized_crop(crop_key, image, out_size,
                                      scale=augment.SIMCLR_CROP_SCALE, ratio=augment.CROP_RATIO)
  image = augment.random_flip(flip_key, image)
  return (image - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)


# No donation: the state's first buffers may be the caller's own arrays.
@jax.jit
def train_step(state: FinetuneState, batch: dict):
  """One SGD update on ``batch`` (uint8 ``"image"``, int32 ``"label"``, sharded
  over the mesh); returns (state, (loss, accuracy)) of the batch."""
  images, labels = batch["image"], batch["label"]
  keys = jax.random.split(jax.random.fold_in(state.rng, state.step), images.shape[0])
  x = jax.vmap(functools.partial(_augment_one, out_size=state.inputs.image_size,
                                 mean=state.inputs.mean, std=state.inputs.std))(keys, images)

  def loss_fn(params):
    logits, updates = state.apply_fn({"params": params, "batch_stats": state.batch_stats},
                                     x, train=True, mutable=["batch_stats"])
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    return loss, (updates["batch_stats"], jnp.mean(jnp.argmax(logits, -1) == labels))

  (loss, (batch_stats, accuracy)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
      state.params)
  updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
  return state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                       batch_stats=batch_stats, opt_state=opt_state), (loss, accuracy)


@jax.jit
def eval_step(state: FinetuneState, batch: dict) -> jax.Array:
  """``[correct, non-finite]`` counts of the un-augmented ``batch`` (uint8
  ``"image"``, ``"label"``, bool ``"valid"`` marking the padding), batch norm
  in evaluation mode."""
  x = evaluation.preprocess_for_eval(batch["image"], mean=state.inputs.mean,
                                     std=state.inputs.std, image_size=state.inputs.image_size)
  logits = state.apply_fn(state.variables, x, train=False)
  valid = batch["valid"]
  finite = jnp.all(jnp.isfinite(logits), axis=-1)
  correct = (jnp.argmax(logits, -1) == batch["label"]) & finite & valid
  return jnp.stack([jnp.sum(correct), jnp.sum(valid & ~finite)])


def accuracy_on(state: FinetuneState, split, mesh: Mesh, batch_size: int) -> float:
  """Accuracy of ``state``'s classifier on the whole ``split`` (NaN if any
  logit is not finite); the last, partial batch is padded and masked."""
  batch_size = evaluation.eval_batch_size(batch_size, mesh.devices.size)
  images, labels = split.images, np.asarray(split.labels, np.int32)
  batch_sharding = sharding.batch_sharded(mesh)
  totals = []
  for start in range(0, len(labels), batch_size):
    chunk = labels[start:start + batch_size]
    batch = {"image": evaluation.pad_batch(np.asarray(images[start:start + batch_size]),
                                           batch_size),
             "label": evaluation.pad_batch(chunk, batch_size),
             "valid": np.arange(batch_size) < len(chunk)}
    totals.append(eval_step(state, {k: sharding.global_array(v, batch_sharding)
                                    for k, v in batch.items()}))
  correct, nonfinite = np.sum([np.asarray(t) for t in totals], axis=0)
  # Non-finite logits make the accuracy undefined, not a count of argmax = 0.
  return float("nan") if nonfinite else float(correct) / len(labels)


def _check(ok: bool, message: str) -> None:
  if not ok:
    raise ValueError(message)


def _check_args(settings: FinetuneSettings, dataset, variables, mesh) -> None:
  def positive_int(name, value):
    _check(isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= 1,
           f"{name} must be a positive integer, got {value!r}.")

  def finite(name, value, low, low_ok=False):
    ok = isinstance(value, (int, float)) and math.isfinite(value) and (
        value >= low if low_ok else value > low)
    _check(ok, f"{name} must be a finite number {'>=' if low_ok else '>'} {low}, "
           f"got {value!r}.")

  _check(isinstance(settings, FinetuneSettings),
         f"settings must be a FinetuneSettings, got {type(settings).__name__}.")
  positive_int("epochs", settings.epochs)
  positive_int("batch_size", settings.batch_size)
  if settings.image_size is not None:
    positive_int("image_size", settings.image_size)
  finite("base_lr", settings.base_lr, 0)
  finite("cosine_start", settings.cosine_start, 0)
  finite("cosine_end", settings.cosine_end, 0, low_ok=True)
  momentum = settings.momentum
  _check(isinstance(momentum, (int, float)) and 0 <= momentum < 1,
         f"momentum must lie in [0, 1), got {momentum!r}.")
  _check(tuple(mesh.axis_names) == (sharding.DATA_AXIS,), "mesh must have the one axis "
         f"({sharding.DATA_AXIS!r},) of gca_jax.sharding.make_mesh, got {mesh.axis_names}.")
  batch_size = settings.batch_size
  _check(batch_size % mesh.devices.size == 0, f"batch_size={batch_size} must be a multiple "
         f"of the {mesh.devices.size} devices of the mesh.")
  _check(dataset.train.in_memory, "finetune needs an in-memory train split (uint8 array); "
         f"{dataset.name!r} decodes its images lazily.")
  _check(batch_size <= len(dataset.train), f"batch_size={batch_size} exceeds the "
         f"{len(dataset.train)} examples of the train split; lower it.")
  _check(len(dataset.test) > 0, f"the test split of {dataset.name!r} is empty.")
  for name, split in (("train", dataset.train), ("test", dataset.test)):
    labels = np.asarray(split.labels)
    _check(labels.min() >= 0 and labels.max() < dataset.num_classes,
           f"{name} labels must lie in [0, num_classes={dataset.num_classes}).")
  _check(isinstance(variables, Mapping) and {"params", "batch_stats"} <= set(variables)
         and "encoder" in variables["params"] and "encoder" in variables["batch_stats"],
         "variables must be {'params': {'encoder': ...}, 'batch_stats': {'encoder': ...}} "
         "of a gca_jax.models.create_model model.")
  encoder = (variables["params"]["encoder"], variables["batch_stats"]["encoder"])
  _check(all(bool(jnp.all(jnp.isfinite(leaf))) for leaf in jax.tree.leaves(encoder)),
         "variables hold non-finite values; the pre-trained encoder is unusable.")


def create_state(model_config, variables, dataset, settings: FinetuneSettings, mesh: Mesh,
                 total_steps: int) -> FinetuneState:
  """The state before fine-tuning (`initial_variables`), replicated over ``mesh``."""
  tx = make_optimizer(settings.base_lr, total_steps, settings.cosine_start,
                      settings.cosine_end, settings.momentum)
  initial = initial_variables(model_config, variables, dataset.num_classes, settings.seed)
  inputs = Inputs(settings.image_size or dataset.train.images.shape[1], tuple(dataset.mean),
                  tuple(dataset.std))
  state = FinetuneState(
      step=jnp.zeros((), jnp.int32), params=initial["params"],
      batch_stats=initial["batch_stats"], opt_state=tx.init(initial["params"]),
      rng=jax.random.fold_in(jax.random.key(settings.seed), 1),
      apply_fn=make_classifier(model_config, dataset.num_classes).apply, tx=tx,
      inputs=inputs)
  return jax.device_put(state, sharding.replicated(mesh))


def finetune(model_config, variables, dataset, settings: FinetuneSettings = FinetuneSettings(),
             *, mesh: Mesh | None = None,
             progress: Callable[[int, dict], None] | None = None,
             checkpoint_dir: str | Path | None = None,
             identity: Mapping[str, Any] | None = None) -> FinetuneResult:
  """Fine-tunes the pre-trained encoder with a linear head (module docstring).

  Args:
    model_config: ``config.model`` of the pre-training run (name, stem,
      width, dtype).
    variables: pre-trained ``{"params", "batch_stats"}`` of
      ``gca_jax.models.create_model(model_config)``; the ``"encoder"``
      subtrees are used (projector and predictor are dropped).
    dataset: a `gca_jax.data.Dataset` (uint8 images, labels, mean, std,
      num_classes); its train split must be in memory.
    settings: the protocol's `FinetuneSettings` (default: the published code's).
    mesh: a one-axis device mesh (default: every device).
    progress: called after every epoch as ``progress(epoch, metrics)``
      (1-based epoch; metrics: step, learning_rate of the epoch's last
      update, train_loss and train_accuracy averaged over the epoch's
      batches, test_accuracy, best_accuracy, best_epoch, and
      ``epoch_accuracies``, the test accuracies of every epoch so far).
    checkpoint_dir: if given, the fine-tuning is saved there (with
      `gca_jax.training.checkpoint.Checkpointer`) after every epoch, and on
      SIGTERM or SIGINT at the current step before `Interrupted` is raised;
      a call with the same arguments continues from the newest save and
      ends as an uninterrupted call would (the batch order and the
      augmentation keys follow the step). It holds one fine-tuning at a
      time: a save of other ``settings`` or ``identity`` is refused with a
      `gca_jax.training.checkpoint.WorkdirError` naming the field.
    identity: further JSON values the save must match (e.g. the
      pre-training step of ``variables``).

  Returns:
    A `FinetuneResult`. Raises ValueError for a bad argument and
    FloatingPointError if the training loss becomes non-finite.

  Examples:
    >>> import jax, jax.numpy as jnp, numpy as np, ml_collections
    >>> from gca_jax import data, finetune, models
    >>> digits = data.load_dataset("digits", image_size=8)
    >>> digits = digits._replace(train=digits.train.take(np.arange(64)),
    ...                          test=digits.test.take(np.arange(32)))
    >>> model_config = ml_collections.ConfigDict({"name": "resnet_small",
    ...     "stem": "cifar", "width": 2, "dtype": "float32", "projector_hidden_dim": 8,
    ...     "projection_dim": 4, "predictor_hidden_dim": 8})
    >>> pretrained = models.create_model(model_config).init(
    ...     jax.random.PRNGKey(0), jnp.zeros((2, 8, 8, 3)), train=False)
    >>> result = finetune.finetune(model_config, pretrained, digits,
    ...                            finetune.FinetuneSettings(epochs=1, batch_size=32))
    >>> len(result.epoch_accuracies), result.steps_per_epoch
    (1, 2)
  """
  mesh = sharding.make_mesh() if mesh is None else mesh
  _check_args(settings, dataset, variables, mesh)
  spe = order.steps_per_epoch(len(dataset.train), settings.batch_size)
  total_steps = settings.epochs * spe
  state = create_state(model_config, variables, dataset, settings, mesh, total_steps)
  if checkpoint_dir is None:
    return _Loop(state, dataset, settings, mesh, spe, progress).run(None)
  saves = _Saves(checkpoint_dir, {**settings._asdict(), **(identity or {})})
  try:
    return _Loop(state, dataset, settings, mesh, spe, progress).run(saves)
  finally:
    saves.close()


class _Saves:
  """The fine-tuning's checkpoints in ``directory`` (the pre-training's
  `Checkpointer`, with its integrity checks, and its workdir lock): the
  state, and as its JSON position the ``identity`` it belongs to, the
  per-epoch accuracies and losses, and the step metrics of the epoch so far."""

  def __init__(self, directory: str | Path, identity: dict):
    self.directory = checkpoint.prepare_workdir(directory)
    self.identity = json.loads(json.dumps(identity))  # as it reads back
    self._lock = checkpoint.WorkdirLock(self.directory)
    try:
      self._checkpointer = checkpoint.Checkpointer(self.directory)
    except BaseException:
      self._lock.release()
      raise

  def restore(self, state: FinetuneState) -> tuple[FinetuneState, dict | None]:
    """The newest save (state, position), or (state, None) if there is none."""
    checkpointer = self._checkpointer
    latest = checkpointer.latest_step()
    if latest is None:
      return state, None
    latest, position = checkpointer.newest_readable(checkpointer.read_position, start=latest)
    differing = checkpoint.differing_fields(position.get("identity", {}),
                                                  self.identity)
    if differing:
      stored = position.get("identity", {})
      raise checkpoint.WorkdirError(
          f"{self.directory} holds an unfinished fine-tuning with other settings "
          f"({', '.join(f'{k}={stored.get(k)!r}, now {self.identity.get(k)!r}' for k in differing)}"
          f"); continue it with its settings, or delete {self.directory} to start over")
    _, (state, position) = checkpointer.newest_readable(
        lambda step: checkpointer.restore(state, step), start=latest)
    return state, position

  def save(self, state: FinetuneState, position: dict) -> None:
    """Saves at ``state.step`` (nothing if that step is saved already)."""
    if int(jax.device_get(state.step)) in self._checkpointer.all_steps():
      return
    self._checkpointer.save(state, {"identity": self.identity, **position})

  def close(self) -> None:
    try:
      self._checkpointer.close()
    finally:
      self._lock.release()


class _Loop:
  """The epochs of `finetune`, from a save if there is one."""

  def __init__(self, state, dataset, settings: FinetuneSettings, mesh: Mesh, spe: int,
               progress):
    self.state, self.dataset, self.settings, self.mesh = state, dataset, settings, mesh
    self.spe, self.progress = spe, progress
    self.schedule = learning_rate_schedule(settings.base_lr, settings.epochs * spe,
                                           settings.cosine_start, settings.cosine_end)
    self.accuracies: list[float] = []
    self.losses: list[float] = []
    self.epoch_metrics: list[list[float]] = []  # [loss, accuracy] of the epoch's steps so far

  def _position(self) -> dict:
    return {"epoch_accuracies": self.accuracies, "train_losses": self.losses,
            "epoch_step_metrics": self.epoch_metrics}

  def run(self, saves: _Saves | None) -> FinetuneResult:
    if saves is not None:
      self.state, position = saves.restore(self.state)
      if position is not None:
        self.accuracies = list(position["epoch_accuracies"])
        self.losses = list(position["train_losses"])
        self.epoch_metrics = [list(m) for m in position["epoch_step_metrics"]]
    # The pre-training feed: the same batch order (a permutation per (seed, epoch)).
    feed = feeds.DeviceFeed(self.dataset.train, mesh=self.mesh, seed=self.settings.seed,
                            batch_size=self.settings.batch_size, steps_per_epoch=self.spe,
                            id_key="label")
    with contextlib.ExitStack() as stack:
      interrupts = (stack.enter_context(interrupts_lib.Interrupts()) if saves is not None
                    else None)
      self._epochs(feed, saves, interrupts)
    best_epoch = _best_epoch(self.accuracies)
    return FinetuneResult(
        best_accuracy=self.accuracies[best_epoch - 1], best_epoch=best_epoch,
        last_accuracy=self.accuracies[-1], epoch_accuracies=tuple(self.accuracies),
        train_losses=tuple(self.losses), steps_per_epoch=self.spe,
        variables=jax.device_get(self.state.variables))

  def _epochs(self, feed, saves, interrupts) -> None:
    settings, spe = self.settings, self.spe
    step = int(self.state.step)
    pending = []  # step metrics not fetched yet
    step_fn = train_step
    if interrupts is not None and step < settings.epochs * spe:
      try:  # the first step compiles while a signal is honoured
        step_fn = interrupts_lib.compile_step(train_step, self.state, feed.batch(step),
                                              interrupts, saves.directory)
      except interrupts_lib.Interrupted:
        raise interrupts_lib.Interrupted(
            f"stopped by {interrupts.signal_name} while compiling the fine-tuning step; "
            f"nothing new to save ({saves.directory} holds what was saved)") from None
    while step < settings.epochs * spe:
      # Every process stops at the same step: they agree every 10 steps.
      if interrupts is not None and interrupts.requested(step % 10 == 0):
        self._fetch(pending, step)
        saves.save(self.state, self._position())
        raise interrupts_lib.Interrupted(
            f"stopped by {interrupts.signal_name} at fine-tuning step {step} (epoch "
            f"{step / spe:.2f} of {settings.epochs}); saved in {saves.directory}")
      self.state, metrics = step_fn(self.state, feed.batch(step))
      pending.append(metrics)
      step += 1
      if step % spe == 0:
        self._fetch(pending, step)
        self._end_epoch(step // spe)
        if saves is not None:
          saves.save(self.state, self._position())

  def _fetch(self, pending: list, step: int) -> None:
    fetched = [[float(loss), float(accuracy)] for loss, accuracy in jax.device_get(pending)]
    pending.clear()
    if not all(math.isfinite(loss) for loss, _ in fetched):
      raise FloatingPointError(f"fine-tuning diverged in epoch {(step - 1) // self.spe + 1}: "
                               f"non-finite training loss (lower base_lr="
                               f"{self.settings.base_lr}).")
    self.epoch_metrics.extend(fetched)

  def _end_epoch(self, epoch: int) -> None:
    # float32 means, as the step metrics are: a resumed epoch gives the same numbers.
    loss, train_accuracy = np.mean(np.asarray(self.epoch_metrics, np.float32), axis=0)
    self.epoch_metrics = []
    self.losses.append(float(loss))
    self.accuracies.append(accuracy_on(self.state, self.dataset.test, self.mesh,
                                       self.settings.batch_size))
    if math.isnan(self.accuracies[-1]):
      raise FloatingPointError(f"fine-tuning diverged in epoch {epoch}: non-finite "
                               "test logits.")
    best_epoch = _best_epoch(self.accuracies)
    if self.progress is not None:
      self.progress(epoch, {
          "step": epoch * self.spe,
          "learning_rate": float(self.schedule(epoch * self.spe - 1)),
          "train_loss": float(loss), "train_accuracy": float(train_accuracy),
          "test_accuracy": self.accuracies[-1],
          "best_accuracy": self.accuracies[best_epoch - 1], "best_epoch": best_epoch,
          "epoch_accuracies": tuple(self.accuracies)})


def _best_epoch(accuracies: list[float]) -> int:
  """The first epoch (1-based) of the highest accuracy."""
  return int(np.argmax(accuracies)) + 1
