"""Evaluation protocols of a pre-trained run, by name: ``linear`` and ``finetune``.

`evaluate(workdir, protocol, **settings)` restores the newest intact
checkpoint of a workdir (and its ``config.json``) and runs one protocol:

* ``linear`` (default): the encoder frozen, a linear softmax classifier
  trained on its features of the un-augmented train split (full-batch
  AdamW, `gca_jax.evaluation.linear_probe`), plus the kNN monitor. Fast,
  and the standard frozen-feature probe; not the paper's CIFAR protocol.
* ``finetune``: the protocol behind the paper's CIFAR numbers
  (`gca_jax.finetune`): the whole encoder and a linear head trained with
  augmentation; both the best test accuracy over the epochs (what the paper
  reports: model selection on the test set) and the last epoch's are kept.

Results are merged into ``workdir/metrics.json`` (each with its protocol)
and written to TensorBoard. ``python -m gca_jax.linear_eval`` is its
command line; experiments call `evaluate` directly.

Both protocols stop on SIGTERM or SIGINT with `Interrupted`. The fine-tuning
saves its state (model, optimiser, step, the accuracies of the epochs so
far) in ``workdir/finetune/`` after every epoch and when it is stopped; the
same call continues it and ends with the results of an uninterrupted one.
Its per-epoch accuracies are in metrics.json as they come
(``finetune_progress``); the saves are removed once its result is recorded.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import sys
import threading
from pathlib import Path

PROTOCOLS = ("linear", "finetune")
# Protocol setting -> the config field whose rule it follows.
SETTINGS = {"linear": {"steps": "linear_probe_steps",
                       "learning_rate": "linear_probe_learning_rate",
                       "weight_decay": "linear_probe_weight_decay"},
            "finetune": {"epochs": "epochs", "batch_size": "batch_size"}}
# The unfinished fine-tuning of a workdir.
FINETUNE_DIR = "finetune"


def command(workdir: str | Path, protocol: str, **settings) -> str:
  """The shell command (quoted) that runs ``protocol`` with ``settings`` on ``workdir``."""
  words = ["python", "-m", "gca_jax.linear_eval", f"--workdir={workdir}"]
  if protocol != PROTOCOLS[0]:
    words.append(f"--protocol={protocol}")
  words += [f"--{name}={value}" for name, value in settings.items() if value is not None]
  return shlex.join(words)


# A signal whose exception Python swallowed (raised inside a garbage-collection
# callback, where exceptions are only printed) still stops the process after
# this many seconds.
SWALLOWED_SIGNAL_EXIT_SECONDS = 5.0


@contextlib.contextmanager
def _stopped_by_signals(stopped: str, cleanup=lambda: None):
  """SIGTERM and SIGINT raise `Interrupted` (``stopped``: what follows
  "stopped by <signal>") at once: where nothing is saved, nothing waits.

  Python only prints an exception raised inside a garbage-collection
  callback; such a swallowed `Interrupted` is not shown, and the process
  then ends (``cleanup()``, the message, exit status 130) after
  `SWALLOWED_SIGNAL_EXIT_SECONDS`, or raises it when the work ends first.
  """
  from gca_jax import cli  # pylint: disable=g-import-not-at-top
  from gca_jax.training.interrupts import Interrupted  # pylint: disable=g-import-not-at-top
  if threading.current_thread() is not threading.main_thread():
    yield
    return
  raised = {}

  def exit_now(message):
    cleanup()
    print(message, file=sys.stderr, flush=True)
    os._exit(cli.EXIT_INTERRUPTED)  # pylint: disable=protected-access

  unraisable_hook = sys.unraisablehook

  def swallowed_quietly(unraisable):
    if not isinstance(unraisable.exc_value, Interrupted):
      unraisable_hook(unraisable)

  def handle(signum, frame):
    del frame
    message = f"stopped by {signal.Signals(signum).name} {stopped}"
    if not raised:
      raised["message"] = message
      raised["timer"] = threading.Timer(SWALLOWED_SIGNAL_EXIT_SECONDS, exit_now, (message,))
      raised["timer"].daemon = True
      raised["timer"].start()
    raise Interrupted(message)

  previous = {signum: signal.signal(signum, handle) for signum in (signal.SIGTERM,
                                                                   signal.SIGINT)}
  sys.unraisablehook = swallowed_quietly
  try:
    yield
  finally:
    for signum, handler in previous.items():
      signal.signal(signum, handler)
    if sys.unraisablehook is swallowed_quietly:  # else wrapped since: it stays (it passes on)
      sys.unraisablehook = unraisable_hook
    if raised:
      raised["timer"].cancel()
  if raised:  # swallowed, and the work went on to its end
    raise Interrupted(raised["message"])


def evaluate(workdir: str | Path, protocol: str = "linear", **overrides) -> dict:
  """Runs ``protocol`` on the run in ``workdir``; returns its results (also
  merged into metrics.json). ``overrides``: the protocol's settings (linear:
  ``steps``, ``learning_rate``, ``weight_decay``; finetune: ``epochs``,
  ``batch_size``), None meaning the default."""
  from gca_jax.training import checkpoint  # pylint: disable=g-import-not-at-top
  from gca_jax.training import config as config_lib  # pylint: disable=g-import-not-at-top
  if protocol not in PROTOCOLS:
    raise ValueError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
  settings = {name: value for name, value in overrides.items() if value is not None}
  for name, value in settings.items():  # before anything is loaded
    if name not in SETTINGS[protocol]:
      raise ValueError(f"--{name} is not a setting of the {protocol!r} protocol "
                       f"(it takes {', '.join(SETTINGS[protocol])})")
    config_lib.check_value(SETTINGS[protocol][name], value, f"--{name}")
  workdir = Path(workdir)
  checkpoint.check_writable(workdir, "linear_eval")
  again = command(workdir, protocol, **settings)
  with _stopped_by_signals(f"before the {protocol} results were recorded; run it again "
                           f"with: {again}",
                           cleanup=lambda: checkpoint.remove_private_copy(workdir)):
    return _evaluate(workdir, protocol, settings, again)


def _evaluate(workdir: Path, protocol: str, settings: dict, again: str) -> dict:
  from gca_jax import evaluation  # pylint: disable=g-import-not-at-top
  from gca_jax.training import reporting, restore  # pylint: disable=g-import-not-at-top
  run, state = restore.load_trained(workdir)
  config, dataset = run.config, run.dataset
  step = int(state.step)
  where = dict(step=step, epoch=step // run.steps_per_epoch,
               tensorboard=reporting.TensorBoard(workdir),
               metrics_file=reporting.MetricsFile(workdir),
               train_examples=config.train_examples)
  try:
    if protocol == "finetune":
      return _finetune(run, state, settings, where, workdir, again)
    for name, value in settings.items():
      config[SETTINGS[protocol][name]] = value
    reporting.log(f"step {step}: embedding {len(dataset.train)} train and "
                  f"{len(dataset.test)} test images, then a "
                  f"{config.linear_probe_steps}-step linear probe...")
    result = evaluation.evaluate_encoder(config, run.embed_fn, state.variables, dataset,
                                         run.mesh, probe=True)
    reporting.record_evaluation(result, **where)
    return result
  finally:
    where["tensorboard"].close()


def _finetune(run, state, settings: dict, where: dict, workdir: Path, again: str) -> dict:
  """The ``finetune`` protocol (`gca_jax.finetune`) of the restored run,
  saved in `FINETUNE_DIR` as it goes."""
  from gca_jax import finetune  # pylint: disable=g-import-not-at-top
  from gca_jax.training import reporting  # pylint: disable=g-import-not-at-top
  from gca_jax.training.interrupts import Interrupted  # pylint: disable=g-import-not-at-top
  tensorboard, saves = where["tensorboard"], workdir / FINETUNE_DIR
  settings = finetune.FinetuneSettings(seed=run.config.seed, image_size=run.config.image_size,
                                       **settings)

  def progress(finetune_epoch, epoch_metrics):
    scalars = {k: v for k, v in epoch_metrics.items() if k != "epoch_accuracies"}
    reporting.log(f"finetune epoch {finetune_epoch}: " + ", ".join(
        f"{k} {v:.4f}" for k, v in scalars.items()))
    tensorboard.write(finetune_epoch, scalars, "finetune/")
    where["metrics_file"].update({"finetune_progress": {
        "step": where["step"], "epochs": settings.epochs, "epochs_done": finetune_epoch,
        "epoch_accuracies": list(epoch_metrics["epoch_accuracies"]),
        "saved_in": str(saves)}})

  reporting.log(f"step {where['step']}: fine-tuning the whole encoder (the paper's CIFAR "
                f"protocol), saved in {saves} as it goes...")
  try:
    outcome = finetune.finetune(run.config.model, state.variables, run.dataset, settings,
                                mesh=run.mesh, progress=progress, checkpoint_dir=saves,
                                identity={"pretrained_step": where["step"]})
  except Interrupted as e:
    raise Interrupted(f"{e}. Continue with: {again}") from None
  result = reporting.record_finetune(outcome, **where)
  shutil.rmtree(saves, ignore_errors=True)  # recorded: nothing left to continue
  return result
