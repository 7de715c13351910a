"""The training loop: ``train_and_evaluate(config, workdir) -> (state, metrics)``.

A run goes through named phases:

1. `_open`: validate the config (building its objective once), take the
   workdir's lock, find the newest intact checkpoint and check that the
   workdir holds this run;
2. `_start`: load the data, set the run up, restore or initialise the state;
3. `_Trainer`: the steps, with text/TensorBoard logs every
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
finished one is left as it is, except that its training summary (kept in
every checkpoint beside the data position) is written back to metrics.json
when a stop between the final save and the metrics write, or a lost file,
dropped it. Throughput (``images_per_second``) counts
source images, i.e. pairs of views, and excludes compilation.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gca_jax import evaluation, stopping
from gca_jax.training import checkpoint, feeds, reporting, summary
from gca_jax.training import interrupts as interrupts_lib
from gca_jax.training.interrupts import Interrupted, continue_command  # noqa: F401 (cli catches loop.Interrupted)
from gca_jax.training.restore import restore_state
from gca_jax.training.setup import Run, setup, validate


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


class _Outputs(NamedTuple):
  """Where a run writes: its workdir, checkpoints, TensorBoard and metrics.json."""

  workdir: Path
  checkpointer: checkpoint.Checkpointer
  tensorboard: reporting.TensorBoard
  metrics_file: reporting.MetricsFile


def _stopped_after_training(signal_name: str, state, workdir: Path) -> str:
  """The message of a stop once training is saved (metrics, evaluation)."""
  return (f"stopped by {signal_name} after training, which is saved (step "
          f"{int(state.step)}) in {workdir}; what is left (its metrics.json summary, the "
          f"final evaluation) runs with: {continue_command(workdir)}")


def _open(config, workdir: Path, resume: bool) -> tuple[checkpoint.Checkpointer, int | None]:
  checkpointer = checkpoint.Checkpointer(
      workdir, max_to_keep=config.max_checkpoints,
      identity=checkpoint.run_identity(config, jax.device_count()))
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
  return checkpointer, latest


def _position(step: int, steps_per_epoch: int, sums: _EpochSums, epoch_means: dict,
              invocation: dict) -> dict:
  """What a checkpoint keeps beside the state: the data position, the
  running sums of the epoch, and the training summary so far (the last
  epoch's means and this invocation's start and timing), so that the
  summary is recoverable if the process stops before metrics.json is written."""
  epoch, step_in_epoch = divmod(step, steps_per_epoch)
  return {"epoch": epoch, "step": step_in_epoch, "epoch_sums": sums.sums,
          "epoch_count": sums.count, "epoch_means": epoch_means, "invocation": invocation}


def _training_results(steps: int, epochs: int, epoch_means: dict, timing: dict) -> dict:
  """The training summary of metrics.json (``final_<metric>``: last epoch's means)."""
  return {"epochs": epochs, "steps": steps, "final_loss": epoch_means.get("loss"), **timing,
          **{f"final_{k}": v for k, v in epoch_means.items() if k != "loss"}}


def _recover_summary(metrics_file, step: int, position: dict) -> dict:
  """metrics.json, with the training summary of checkpoint ``step`` put back
  from the checkpoint if it lacks it (the process stopped between the final
  save and the metrics write, or the file was lost)."""
  metrics = metrics_file.read()
  if metrics.get("steps") == step:
    return metrics
  timing = dict(position.get("invocation", {}))
  start_step = timing.pop("start_step", None)
  reporting.log(f"{metrics_file.path} lacked the training summary of step {step}; "
                "recovered it from that checkpoint")
  return metrics_file.update(
      _training_results(step, position["epoch"], position.get("epoch_means", {}), timing),
      invocation={"command": "pretrain", "start_step": start_step, "end_step": step,
                  **timing, "recovered_from_checkpoint": step})


def _last_epoch(config) -> int:
  """The epoch this invocation stops after."""
  return min(config.epochs, config.stop_after_epoch or config.epochs)


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
  workdir = Path(workdir)
  with stopping.stops_at_once(lambda name: f"stopped by {name} while starting; "
                              f"{interrupts_lib.unchanged_since_start(workdir)}"):
    objective = validate(config, jax.device_count())
    created = _first_missing(workdir)
    was_empty = created is None and workdir.is_dir() and not any(workdir.iterdir())
    workdir = checkpoint.prepare_workdir(workdir)
    try:
      lock = checkpoint.WorkdirLock(workdir)
      try:
        checkpointer, latest = _open(config, workdir, resume)
        try:
          return _run(config, objective, workdir, checkpointer, latest, dataset)
        finally:
          with stopping.deferred():  # closing is never cut short by a signal
            checkpointer.close()
      finally:
        lock.release()
    except BaseException as e:
      if not isinstance(e, TrainingDiverged):
        with stopping.deferred():
          _remove_failed_start(workdir, created, was_empty)
      raise


def _first_missing(path: Path) -> Path | None:
  """The outermost of ``path`` and its parents that does not exist (None if
  ``path`` exists): what creating ``path`` creates."""
  missing = None
  for candidate in (path, *path.parents):
    if candidate.exists():
      break
    missing = candidate
  return missing


def _remove_failed_start(workdir: Path, created: Path | None, was_empty: bool) -> None:
  """Removes what a run that stopped before its first checkpoint left (the
  lock, config.json, logs): the folders it created, or the contents of the
  empty workdir it was given. A workdir that held anything, or that holds a
  checkpoint now, is left as it is."""
  if not reporting.is_main_process() or checkpoint.holds_checkpoint(workdir):
    return
  if created is not None:
    shutil.rmtree(created, ignore_errors=True)
  elif was_empty:
    for entry in workdir.iterdir():
      if entry.is_dir() and not entry.is_symlink():
        shutil.rmtree(entry, ignore_errors=True)
      else:
        entry.unlink(missing_ok=True)


def _run(config, objective, workdir: Path, checkpointer, latest: int | None,
         dataset) -> TrainResult:
  metrics_file = reporting.MetricsFile(workdir)
  position = {"epoch": 0, "step": 0}
  if latest is not None:
    latest, position = checkpointer.newest_readable(checkpointer.read_position, start=latest)
    if position["epoch"] >= _last_epoch(config):
      if not _final_evaluation_missing(config, metrics_file, position["epoch"]):
        return _already_complete(config, metrics_file, latest, position)
      reporting.log("training is complete but its final evaluation is missing "
                    "(it failed or was interrupted); running it")

  # Phase 2: data, setup, state.
  with stopping.stops_at_once(lambda name: f"stopped by {name} while starting; "
                              f"{interrupts_lib.unchanged_since_start(workdir, latest)}"):
    dataset = feeds.load_data(config) if dataset is None else dataset
    run = setup(config, dataset, objective=objective)
    summary.announce(run, workdir)
    if latest is None:  # the run's identity, once its data and model are set up
      checkpoint.write_config_json(workdir, config)
      state = run.initial_state()
    else:
      latest, (state, position) = checkpointer.newest_readable(
          lambda step: restore_state(run, checkpointer, step), start=latest)
      reporting.log(f"resuming from step {latest} (epoch {position['epoch']})")

  # Phase 3: training.
  start_step = int(state.step)
  outputs = _Outputs(workdir, checkpointer, reporting.TensorBoard(workdir), metrics_file)
  try:
    if start_step < _last_epoch(config) * run.steps_per_epoch:
      trainer = _Trainer(run, state, position, outputs)
      state = trainer.train()
    with stopping.stops_at_once(lambda name: _stopped_after_training(name, state, workdir)):
      if start_step < int(state.step):
        steps = int(state.step)
        results = _training_results(steps, steps // run.steps_per_epoch, trainer.summary,
                                    trainer.timing)
        invocation = {"command": "pretrain", "start_step": start_step, "end_step": steps,
                      **trainer.timing}
        metrics = metrics_file.update(results, invocation=invocation)
      else:  # only the evaluation
        metrics = _recover_summary(metrics_file, start_step, position)
      # Phase 4: final evaluation, after the final checkpoint.
      if int(state.step) == config.epochs * run.steps_per_epoch and config.linear_probe:
        metrics = _final_evaluation(run, state, outputs)
  finally:
    with stopping.deferred():  # a signal never interrupts tensorboardX's writer thread
      outputs.tensorboard.close()
  return TrainResult(state, metrics)


class _Trainer:
  """Phase 3: the steps until the invocation's last epoch.

  ``train()`` returns the state; ``summary`` then holds the last epoch's
  metric means and ``timing`` the throughput. Step metrics stay on the
  device until a sync point (a log line, an epoch end, a save), where they
  are fetched and checked for divergence before anything is saved.
  """

  def __init__(self, run: Run, state, position: dict, outputs: _Outputs):
    self.run, self.state, self.outputs = run, state, outputs
    self.step = int(state.step)
    self.start_step = self.saved_step = self.step
    self.sums = _EpochSums(position.get("epoch_sums"), position.get("epoch_count", 0))
    self.summary: dict = {}
    self.timing: dict = {}
    self._pending: list = []      # step metrics not fetched yet
    self._log_window: list = []   # fetched step metrics since the last log line
    config = run.config
    self.progress = reporting.Progress(
        total_steps=config.epochs * run.steps_per_epoch, initial_step=self.step,
        steps_per_epoch=run.steps_per_epoch, batch_size=config.batch_size,
        use_bar=config.progress_bar)
    self.throughput = reporting.Throughput(config.batch_size)

  def fetch_and_check(self) -> None:
    fetched = jax.device_get(self._pending)
    _check_finite(fetched, self.step - len(fetched), self.outputs.workdir)
    self.sums.add(fetched)
    self._log_window.extend(fetched)
    self._pending = []

  def save(self) -> None:
    if self.step == self.saved_step:
      return
    if not bool(_all_finite(self.state.params)):  # finite loss and gradient, overflowed update
      raise TrainingDiverged(
          f"training diverged: the parameters are not finite after step {self.step}; the "
          f"latest checkpoint in {self.outputs.workdir} is the last finite state (lower "
          "config.learning_rate)")
    invocation = {"start_step": self.start_step, "train_seconds": self.throughput.seconds,
                  "images_per_second": self.throughput.images_per_second}
    with self.throughput.paused():
      self.outputs.checkpointer.save(
          self.state, _position(self.step, self.run.steps_per_epoch, self.sums,
                                self.summary, invocation))
    self.saved_step = self.step

  def train(self):
    feed = feeds.make_feed(self.run, self.step)
    try:
      with interrupts_lib.Interrupts() as interrupts:
        self._steps(feed, interrupts)
        if interrupts.requested(True):  # a signal after the last step: stop before evaluating
          raise stopping.interrupted(
              f"stopped by {interrupts.signal_name} after the last step (saved in "
              f"{self.outputs.workdir}); the final evaluation runs with: "
              f"{continue_command(self.outputs.workdir)}")
        jax.block_until_ready(self.state)
    finally:
      feed.close()
      self.progress.close()
    self.timing = {"train_seconds": self.throughput.seconds,
                   "images_per_second": self.throughput.images_per_second}
    return self.state

  def _steps(self, feed, interrupts) -> None:
    config, spe, workdir = self.run.config, self.run.steps_per_epoch, self.outputs.workdir
    last_epoch = _last_epoch(config)
    end_step = last_epoch * spe
    batch = feed.batch(self.step)  # the first step compiles while a signal is honoured
    step_fn = interrupts_lib.compile_step(self.run.train_step, self.state, batch,
                                          interrupts, workdir, self.saved_step or None)
    sync_point = True
    while self.step < end_step:
      if interrupts.requested(sync_point):
        self.fetch_and_check()
        self.save()
        raise stopping.interrupted(
            f"stopped by {interrupts.signal_name} at step {self.step} (epoch "
            f"{self.step / spe:.2f}); saved in {workdir}. Continue with: "
            f"{continue_command(workdir)}")
      batch = batch if batch is not None else feed.batch(self.step)
      self.state, step_metrics = step_fn(self.state, batch)
      batch = None
      self._pending.append(step_metrics)
      self.step += 1
      self.progress.update()
      self.throughput.step_done(step_metrics)
      step = self.step
      epoch_end, epoch = step % spe == 0, step // spe
      save_now = ((config.checkpoint_every_steps
                   and step % config.checkpoint_every_steps == 0)
                  or (epoch_end and (epoch % config.checkpoint_every_epochs == 0
                                     or epoch == last_epoch)))
      log_now = step % config.log_every_steps == 0
      sync_point = log_now or epoch_end or save_now
      if sync_point:  # a divergence stops before any save
        self.fetch_and_check()
      if log_now:
        self._log()
      if epoch_end:
        self._end_epoch(epoch)
      if save_now:
        self.save()

  def _log(self) -> None:
    """Means over the steps since the previous log line."""
    window = self._log_window
    interval = {k: np.mean([m[k] for m in window]) for k in window[0]}
    window.clear()
    self.outputs.tensorboard.write(self.step, interval, "train/")
    self.progress.report(self.step, float(interval["loss"]),
                         self.throughput.images_per_second)

  def _end_epoch(self, epoch: int) -> None:
    config = self.run.config
    self.summary, self.sums = self.sums.means(), _EpochSums()
    self.outputs.tensorboard.write(self.step, self.summary, "epoch/")
    if config.eval_every_epochs and epoch % config.eval_every_epochs == 0 and (
        epoch < config.epochs or not config.linear_probe):
      with self.throughput.paused():
        result = _evaluate(self.run, self.state.variables, probe=False)
      _record(result, self.step, epoch, self.outputs, write=self.progress.write,
              train_examples=config.train_examples)


def _evaluate(run: Run, variables, *, probe: bool) -> dict:
  return evaluation.evaluate_encoder(run.config, run.embed_fn, variables, run.dataset,
                                     run.mesh, probe=probe)


def _record(result: dict, step: int, epoch: int, outputs: _Outputs, **kwargs) -> dict:
  return reporting.record_evaluation(result, step=step, epoch=epoch,
                                     tensorboard=outputs.tensorboard,
                                     metrics_file=outputs.metrics_file, **kwargs)


def _final_evaluation(run: Run, state, outputs: _Outputs) -> dict:
  """Phase 4: kNN and linear probe of the trained encoder (and of a randomly
  initialised one if ``config.probe_random_init``)."""
  config = run.config
  step, epoch = int(state.step), int(state.step) // run.steps_per_epoch
  reporting.log("final evaluation (kNN monitor, linear probe)...")
  result = _evaluate(run, state.variables, probe=True)
  metrics = _record(result, step, epoch, outputs, train_examples=config.train_examples)
  if config.probe_random_init:
    random_init = _evaluate(run, run.initial_state().variables, probe=True)
    metrics = _record(random_init, step, epoch, outputs, random_init=True,
                      train_examples=config.train_examples)
  return metrics


def _final_evaluation_missing(config, metrics_file, saved_epoch: int) -> bool:
  """Whether a finished run lacks the final linear probe it asks for."""
  if saved_epoch < config.epochs or not config.linear_probe:
    return False
  return not any(record.get("protocol") == "linear" and record.get("epoch") == saved_epoch
                 and record.get("encoder") == "trained"
                 for record in metrics_file.read().get("evaluations", []))


def _already_complete(config, metrics_file, step: int, position: dict) -> TrainResult:
  saved_epoch = position["epoch"]
  metrics = _recover_summary(metrics_file, step, position)
  if saved_epoch >= config.epochs:
    reporting.log(f"run already complete: {metrics_file.path}")
  else:
    reporting.log(f"nothing to train: the checkpoint is at epoch {saved_epoch} and "
                  f"config.stop_after_epoch={config.stop_after_epoch}: {metrics_file.path}")
  return TrainResult(None, {**metrics, "already_complete": True})
