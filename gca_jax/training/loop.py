"""The training loop: ``train_and_evaluate(config, workdir) -> (state, metrics)``.

A run goes through named phases:

1. `_open`: validate the config, take the workdir's lock, find the newest
   intact checkpoint and check that the workdir holds this run;
2. `_start`: load the data, set the run up, restore or initialise the state;
3. `_train`: the steps, with text/TensorBoard logs every
   ``log_every_steps``, checkpoints every ``checkpoint_every_steps`` steps
   and ``checkpoint_every_epochs`` epochs (always at the last epoch), the kNN
   monitor every ``eval_every_epochs``; it stops at the first non-finite loss
   or gradient (`TrainingDiverged`, the last checkpoint stays the latest
   finite one) and, on SIGTERM or SIGINT, saves the current step and stops
   (`Interrupted`);
4. `_finish`: the final evaluation (linear probe, and the same probe on a
   randomly initialised encoder), after the final checkpoint was written so
   a failing evaluation loses no training.

A workdir that holds a run is continued from its latest checkpoint; a
finished one is left as it is. Throughput (``images_per_second``) counts
source images, i.e. pairs of views, and excludes compilation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gca_jax import evaluation
from gca_jax.training import checkpoint, config as config_lib, feeds, reporting
from gca_jax.training import interrupts as interrupts_lib
from gca_jax.training.interrupts import Interrupted, continue_command
from gca_jax.training.setup import Run, setup


class TrainingDiverged(RuntimeError):
  """A loss or gradient became NaN or infinite (one-line message)."""


class TrainResult(NamedTuple):
  state: Any        # the trained state (None when a finished run was reopened)
  metrics: dict     # what metrics.json holds


# ---------------------------------------------------------------------------
# Running means of the step metrics over an epoch (checkpointed).


class _EpochSums:
  def __init__(self, sums: dict | None = None, count: int = 0):
    self.sums, self.count = dict(sums or {}), count

  def add(self, fetched: list[dict]) -> None:
    for step_metrics in fetched:
      for name, value in step_metrics.items():
        self.sums[name] = self.sums.get(name, 0.0) + float(value)
      self.count += 1

  def means(self) -> dict:
    return {k: v / self.count for k, v in self.sums.items()} if self.count else {}


def _check_finite(fetched: list[dict], first_step: int, workdir) -> None:
  for offset, step_metrics in enumerate(fetched):
    for name in ("loss", "grad_norm"):
      if not np.isfinite(step_metrics[name]):
        raise TrainingDiverged(
            f"training diverged: {name} is {float(step_metrics[name])} at step "
            f"{first_step + offset + 1}; the latest checkpoint in {workdir} is the last "
            "finite state (lower config.learning_rate or raise config.loss_params.eps)")


@jax.jit
def _all_finite(tree) -> jax.Array:
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


# ---------------------------------------------------------------------------
# Phases.


class _Opened(NamedTuple):
  checkpointer: checkpoint.Checkpointer
  latest: int | None


def _open(config, workdir: Path, resume: bool) -> _Opened:
  checkpointer = checkpoint.Checkpointer(workdir, max_to_keep=config.max_checkpoints)
  try:
    latest = checkpointer.latest_step()
    if latest is None and resume:
      raise checkpoint.WorkdirError(f"no checkpoint to resume in {workdir}; drop "
                                    "--resume to start a new run there")
    if latest is not None:
      checkpoint.check_run_identity(workdir, config)
  except Exception:
    checkpointer.close()
    raise
  return _Opened(checkpointer, latest)


def _restore(run: Run, checkpointer, step: int):
  state, position = checkpointer.restore(run.initial_state(), step)
  expected = position["epoch"] * run.steps_per_epoch + position["step"]
  if int(state.step) != expected:
    raise checkpoint.WorkdirError(
        f"checkpoint {step}: its data position (epoch {position['epoch']}, step "
        f"{position['step']}) disagrees with its state's step {int(state.step)}; the "
        "checkpoint is inconsistent, move it away to resume from an earlier one")
  return state, position


def _position(step: int, steps_per_epoch: int, sums: _EpochSums) -> dict:
  epoch, step_in_epoch = divmod(step, steps_per_epoch)
  return {"epoch": epoch, "step": step_in_epoch, "epoch_sums": sums.sums,
          "epoch_count": sums.count}


def train_and_evaluate(config, workdir: str | Path, *, resume: bool = False,
                       dataset=None) -> TrainResult:
  """Pre-trains per ``config`` in ``workdir``, continuing a run it holds.

  ``dataset``: the data to train and evaluate on (default: the config's,
  `gca_jax.training.feeds.load_data`). ``resume=True`` insists that the
  workdir holds a checkpoint.

  metrics.json (see `gca_jax.training.reporting.MetricsFile`): ``epochs``,
  ``steps``, ``final_loss`` and the other ``final_<metric>`` (means over the
  last epoch), ``images_per_second`` and ``train_seconds`` of this
  invocation, the evaluation accuracies, and the history. A finished run is
  left as it is and its metrics come back with ``already_complete: True``.

  Raises ConfigError, WorkdirError (RunMismatchError), DatasetError,
  TrainingDiverged or Interrupted, each with a one-line message.
  """
  config_lib.validate(config, jax.device_count())
  workdir = checkpoint.prepare_workdir(workdir)
  lock = checkpoint.WorkdirLock(workdir)
  try:
    opened = _open(config, workdir, resume)
    try:
      return _run(config, workdir, opened, dataset)
    finally:
      opened.checkpointer.close()
  finally:
    lock.release()


def _run(config, workdir: Path, opened: _Opened, dataset) -> TrainResult:
  metrics_file = reporting.MetricsFile(workdir)
  last_epoch = min(config.epochs, config.stop_after_epoch or config.epochs)
  position = {"epoch": 0, "step": 0}
  if opened.latest is not None:
    position = opened.checkpointer.read_position(opened.latest)
    if position["epoch"] >= last_epoch:
      if not _final_evaluation_missing(config, metrics_file, position["epoch"]):
        return _already_complete(config, metrics_file, position["epoch"])
      reporting.log("training is complete but its final evaluation is missing "
                    "(it failed or was interrupted); running it")

  # Phase 2: data, setup, state.
  dataset = feeds.load_data(config) if dataset is None else dataset
  run = setup(config, dataset, validated=True)
  if opened.latest is None:  # the run's identity, once its data and model are set up
    checkpoint.write_config_json(workdir, config)
    state = run.initial_state()
  else:
    state, position = _restore(run, opened.checkpointer, opened.latest)
    reporting.log(f"resuming from step {opened.latest} (epoch {position['epoch']})")

  # Phase 3: training.
  start_step = int(state.step)
  tensorboard = reporting.TensorBoard(workdir)
  embed = evaluation.make_embed_fn(run.model, run.mesh, mean=dataset.mean,
                                   std=dataset.std, image_size=config.image_size)
  try:
    metrics = metrics_file.read()
    if start_step < last_epoch * run.steps_per_epoch:  # else only the evaluation is left
      state, summary, timing = _train(config, run, dataset, state, position, workdir,
                                      opened.checkpointer, tensorboard, metrics_file,
                                      embed, last_epoch)
      steps = int(state.step)
      results = {
          "epochs": steps // run.steps_per_epoch, "steps": steps,
          "final_loss": summary.get("loss"), **timing,
          **{f"final_{k}": v for k, v in summary.items() if k != "loss"},
      }
      invocation = {"command": "pretrain", "start_step": start_step, "end_step": steps,
                    **timing}
      metrics = metrics_file.update(results, invocation=invocation)
    steps = int(state.step)
    # Phase 4: final evaluation, after the final checkpoint.
    if steps == config.epochs * run.steps_per_epoch and config.linear_probe:
      metrics = _final_evaluation(config, run, dataset, state, embed, tensorboard,
                                  metrics_file)
  finally:
    tensorboard.close()
  return TrainResult(state, metrics)


def _train(config, run: Run, dataset, state, position, workdir, checkpointer,
           tensorboard, metrics_file, embed, last_epoch):
  """Phase 3: steps until ``last_epoch``; returns (state, last epoch's metric
  means, timing)."""
  spe = run.steps_per_epoch
  step, end_step = int(state.step), last_epoch * spe
  sums = _EpochSums(position.get("epoch_sums"), position.get("epoch_count", 0))
  summary: dict = {}
  feed = feeds.make_feed(config, run, dataset.train, step)
  progress = reporting.Progress(total_steps=config.epochs * spe, initial_step=step,
                                steps_per_epoch=spe, batch_size=config.batch_size,
                                use_bar=config.progress_bar)
  throughput = reporting.Throughput(config.batch_size)
  pending, log_window, saved_step = [], [], step

  def fetch_and_check():
    nonlocal pending
    fetched = jax.device_get(pending)
    _check_finite(fetched, step - len(fetched), workdir)
    sums.add(fetched)
    log_window.extend(fetched)
    pending = []

  def save():
    nonlocal saved_step
    if step == saved_step:
      return
    if not bool(_all_finite(state.params)):  # finite loss and gradient, overflowed update
      raise TrainingDiverged(
          f"training diverged: the parameters are not finite after step {step}; the "
          f"latest checkpoint in {workdir} is the last finite state (lower "
          "config.learning_rate)")
    with throughput.paused():
      checkpointer.save(state, _position(step, spe, sums))
    saved_step = step

  try:
    with interrupts_lib.Interrupts() as interrupts:
      batch = feed.batch(step) if step < end_step else None
      step_fn = (interrupts_lib.compile_step(run.train_step, state, batch, interrupts, workdir)
                 if batch is not None else None)
      sync_point = True
      while step < end_step:
        if interrupts.requested(sync_point):
          fetch_and_check()
          save()
          raise Interrupted(
              f"stopped by {interrupts.signal_name} at step {step} (epoch "
              f"{step / spe:.2f}); saved in {workdir}. Continue with: "
              f"{continue_command(workdir)}")
        batch = batch if batch is not None else feed.batch(step)
        state, step_metrics = step_fn(state, batch)
        batch = None
        pending.append(step_metrics)
        step += 1
        progress.update()
        throughput.step_done(step_metrics)
        epoch_end, epoch = step % spe == 0, step // spe
        save_now = ((config.checkpoint_every_steps
                     and step % config.checkpoint_every_steps == 0)
                    or (epoch_end and (epoch % config.checkpoint_every_epochs == 0
                                       or epoch == last_epoch)))
        log_now = step % config.log_every_steps == 0
        sync_point = log_now or epoch_end or save_now
        if sync_point:  # a divergence stops before any save
          fetch_and_check()
        if log_now:  # means over the steps since the previous log line
          interval = {k: np.mean([m[k] for m in log_window]) for k in log_window[0]}
          log_window.clear()
          tensorboard.write(step, interval, "train/")
          progress.report(step, float(interval["loss"]), throughput.images_per_second)
        if epoch_end:
          summary, sums = sums.means(), _EpochSums()
          tensorboard.write(step, summary, "epoch/")
          if config.eval_every_epochs and epoch % config.eval_every_epochs == 0 and (
              epoch < config.epochs or not config.linear_probe):
            with throughput.paused():
              result = evaluation.evaluate_encoder(config, embed, state.variables,
                                                   dataset, run.mesh, probe=False)
            record_evaluation(result, step, epoch, tensorboard, metrics_file, progress,
                              train_examples=config.train_examples)
        if save_now:
          save()
      if interrupts.requested(True):  # a signal after the last step: stop before evaluating
        raise Interrupted(f"stopped by {interrupts.signal_name} after the last step "
                          f"(saved in {workdir}); the final evaluation runs with: "
                          f"{continue_command(workdir)}")
      jax.block_until_ready(state)
  finally:
    feed.close()
    progress.close()
  timing = {"train_seconds": throughput.seconds,
            "images_per_second": throughput.images_per_second}
  return state, summary, timing


def record_evaluation(result: dict, step: int, epoch: int, tensorboard,
                      metrics_file, progress=None, prefix: str = "",
                      train_examples: int = 0) -> dict:
  """Writes an evaluation's accuracies to TensorBoard, the log and metrics.json
  (``train_examples`` > 0: the train split was a subset of that size)."""
  subset = {"train_examples": train_examples} if train_examples else {}
  protocols = {"knn_acc": "knn", "linear_probe_acc": "linear"}
  tensorboard.write(step, {prefix + k: v for k, v in result.items()}, "eval/")
  line = f"epoch {epoch}: " + ", ".join(f"{prefix}{k} {v:.4f}" for k, v in result.items())
  (progress.write if progress else reporting.log)(line)
  records = [{"protocol": protocols[k], "step": step, "epoch": epoch, "accuracy": v,
              "encoder": "random_init" if prefix else "trained", **subset}
             for k, v in result.items()]
  return metrics_file.update({prefix + k: v for k, v in result.items()},
                             evaluations=records)


def _final_evaluation(config, run: Run, dataset, state, embed, tensorboard, metrics_file):
  """Phase 4: kNN and linear probe of the trained encoder (and of a randomly
  initialised one if ``config.probe_random_init``)."""
  step, epoch = int(state.step), int(state.step) // run.steps_per_epoch
  reporting.log("final evaluation (kNN monitor, linear probe)...")
  result = evaluation.evaluate_encoder(config, embed, state.variables, dataset, run.mesh,
                                       probe=True)
  metrics = record_evaluation(result, step, epoch, tensorboard, metrics_file,
                              train_examples=config.train_examples)
  if config.probe_random_init:
    random_init = evaluation.evaluate_encoder(config, embed,
                                              run.initial_state().variables, dataset,
                                              run.mesh, probe=True)
    metrics = record_evaluation(random_init, step, epoch, tensorboard, metrics_file,
                                prefix="random_init_", train_examples=config.train_examples)
  return metrics


def _final_evaluation_missing(config, metrics_file, saved_epoch: int) -> bool:
  """Whether a finished run lacks the final linear probe it asks for."""
  if saved_epoch < config.epochs or not config.linear_probe:
    return False
  return not any(record.get("protocol") == "linear" and record.get("epoch") == saved_epoch
                 and record.get("encoder") == "trained"
                 for record in metrics_file.read().get("evaluations", []))


def _already_complete(config, metrics_file, saved_epoch: int) -> TrainResult:
  if saved_epoch >= config.epochs:
    reporting.log(f"run already complete: {metrics_file.path}")
  else:
    reporting.log(f"nothing to train: the checkpoint is at epoch {saved_epoch} and "
                  f"config.stop_after_epoch={config.stop_after_epoch}: {metrics_file.path}")
  return TrainResult(None, {**metrics_file.read(), "already_complete": True})


def load_trained(workdir: str | Path, dataset=None):
  """(config, dataset, run, state) of the newest intact checkpoint in ``workdir``
  (``dataset``: the run's if given, else loaded from its config)."""
  import ml_collections  # pylint: disable=g-import-not-at-top
  workdir = Path(workdir)
  stored = checkpoint.read_config_json(workdir) if workdir.is_dir() else None
  if stored is None:
    raise checkpoint.WorkdirError(f"no run in {workdir} (no {checkpoint.CONFIG_FILE})")
  config = ml_collections.ConfigDict(stored)
  checkpointer = checkpoint.Checkpointer(workdir)
  try:
    latest = checkpointer.latest_step(set_aside=False)  # read only: no lock held
    if latest is None:
      raise checkpoint.WorkdirError(f"no checkpoint in {workdir}")
    dataset = feeds.load_data(config) if dataset is None else dataset
    run = setup(config, dataset)
    state, _ = _restore(run, checkpointer, latest)
  finally:
    checkpointer.close()
  return config, dataset, run, state

