"""A trained run restored from its workdir: ``load_trained(workdir) -> Trained``.

The newest intact checkpoint of a workdir, with the `Run` of the config the
workdir saved (``config.json``), for the evaluations (`gca_jax.linear_eval`)
and the experiments. Reading takes no lock: a run may still be writing newer
checkpoints beside it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

from gca_jax.training import checkpoint, feeds
from gca_jax.training.setup import Run, setup


class Trained(NamedTuple):
  run: Run          # run.config: the saved config; run.dataset: its data
  state: Any        # the restored TrainState


def restore_state(run: Run, checkpointer: checkpoint.Checkpointer, step: int):
  """(state, data position) of checkpoint ``step``; raises WorkdirError if
  the two disagree (the position is the state's step)."""
  state, position = checkpointer.restore(run.initial_state(), step)
  expected = position["epoch"] * run.steps_per_epoch + position["step"]
  if int(state.step) != expected:
    raise checkpoint.WorkdirError(
        f"checkpoint {step}: its data position (epoch {position['epoch']}, step "
        f"{position['step']}) disagrees with its state's step {int(state.step)}; the "
        "checkpoint is inconsistent, move it away to resume from an earlier one")
  return state, position


def _restore_pinned(run: Run, checkpointer: checkpoint.Checkpointer, step: int):
  """`restore_state` from a hard-linked copy of ``step`` (see `Checkpointer.pinned`)."""
  pinned = checkpointer.pinned(step)
  try:
    return restore_state(run, pinned, step)
  finally:
    checkpoint.Checkpointer.unpin(pinned)


def load_trained(workdir: str | Path, dataset=None) -> Trained:
  """The run in ``workdir`` and its newest intact checkpoint's state
  (``dataset``: the run's if given, else loaded from its config).

  Raises WorkdirError (no run, no checkpoint), ConfigError or DatasetError.
  """
  import ml_collections  # pylint: disable=g-import-not-at-top
  workdir = Path(workdir)
  stored = checkpoint.read_config_json(workdir, note=True) if workdir.is_dir() else None
  if stored is None:
    raise checkpoint.WorkdirError(f"no run in {workdir} (no {checkpoint.CONFIG_FILE})")
  config = ml_collections.ConfigDict(stored)
  checkpointer = checkpoint.Checkpointer(workdir, identity=checkpoint.run_identity(config))
  try:
    latest = checkpointer.latest_step(set_aside=False)  # read only: no lock held
    if latest is None:
      raise checkpoint.WorkdirError(f"no checkpoint in {workdir}")
    dataset = feeds.load_data(config) if dataset is None else dataset
    run = setup(config, dataset)
    # A run beside this reader may prune ``latest`` meanwhile: the newest then.
    _, (state, _) = checkpointer.newest_readable(
        lambda step: _restore_pinned(run, checkpointer, step), set_aside=False, start=latest)
  finally:
    checkpointer.close()
  return Trained(run, state)
