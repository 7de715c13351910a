"""Checkpoints (orbax) and the run identity of a workdir.

A checkpoint holds the whole `TrainState` (params, optimiser state, batch
statistics, BYOL's EMA target, the RNG key and the step) plus the data
position (`FeedState`) as JSON, so a resumed run continues exactly where the
saved one stopped. Host-fed runs need nothing more: their batches are a
function of the step (`gca_jax.data.host_feed.make_loader`).

Orbax's `CheckpointManager` writes each step into a temporary directory and
renames it when complete; a process killed mid-save leaves only that
temporary directory, which `latest_step()` ignores, so a restart resumes from
the last complete checkpoint.

`check_run_identity` keeps a workdir to one run: a run stores its config as
``config.json`` (`write_config_json`, once its data and model are set up) and
a workdir holding a checkpoint refuses a different config (ignoring the
run-control fields of `gca_jax.configs.RUN_CONTROL_FIELDS`). A start that
failed before its first checkpoint does not block the workdir.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp

from gca_jax.configs import RUN_CONTROL_FIELDS

CONFIG_FILE = "config.json"


class RunMismatchError(RuntimeError):
  """The workdir belongs to a different run (or needs --resume)."""


def config_to_json(config) -> dict:
  """The config as a plain JSON-compatible dict."""
  return json.loads(config.to_json(sort_keys=True))


def _drop_none(value):
  """``value`` without the None entries of its (nested) dicts: an unset
  placeholder field and a field absent from an older config.json agree."""
  if isinstance(value, dict):
    return {k: _drop_none(v) for k, v in value.items() if v is not None}
  return value


def _identity(config_json: dict) -> dict:
  return _drop_none({k: v for k, v in config_json.items()
                     if k not in RUN_CONTROL_FIELDS})


def read_config_json(workdir: str | Path) -> dict | None:
  path = Path(workdir) / CONFIG_FILE
  return json.loads(path.read_text()) if path.exists() else None


def check_run_identity(workdir: str | Path, config) -> None:
  """Raises RunMismatchError if ``workdir`` holds a run with another config.

  Call it only when ``workdir`` holds a checkpoint: a ``config.json`` alone
  is what a start that failed before its first checkpoint left. Writes
  nothing (see `write_config_json`).
  """
  stored = read_config_json(workdir)
  if stored is not None:
    old, new = _identity(stored), _identity(config_to_json(config))
    if old != new:
      differing = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
      raise RunMismatchError(
          f"workdir {workdir} holds another run (config differs in: "
          f"{', '.join(differing)}); use a new --workdir")


def write_config_json(workdir: str | Path, config) -> None:
  """Stores ``config`` as the run identity of ``workdir`` (process 0)."""
  if jax.process_index() == 0:
    Path(workdir).mkdir(parents=True, exist_ok=True)
    (Path(workdir) / CONFIG_FILE).write_text(
        json.dumps(config_to_json(config), indent=2))


class Checkpointer:
  """Saves and restores (TrainState, FeedState) under ``workdir/checkpoints``."""

  def __init__(self, workdir: str | Path, *, max_to_keep: int = 2,
               create: bool = True):
    """``create=False``: only read; a missing directory is not created (and
    holds no checkpoint). ``save`` creates it in any case."""
    self._directory = Path(workdir).absolute() / "checkpoints"
    self._manager = ocp.CheckpointManager(
        self._directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=create),
        item_names=("state", "feed"))

  def latest_step(self) -> int | None:
    """Step of the newest complete checkpoint, or None."""
    return self._manager.latest_step()

  def save(self, state, feed) -> None:
    """Saves ``state`` and the ``feed`` position at ``state.step``."""
    step = int(jax.device_get(state.step))
    if jax.process_index() == 0:
      self._directory.mkdir(parents=True, exist_ok=True)
    self._manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        feed=ocp.args.JsonSave({"epoch": int(feed.epoch), "step": int(feed.step)})))

  def read_feed(self, step: int | None = None) -> dict:
    """The saved data position (``{"epoch", "step"}``) of ``step`` (default:
    latest), without restoring the state."""
    step = self.latest_step() if step is None else step
    return self._manager.restore(
        step, args=ocp.args.Composite(feed=ocp.args.JsonRestore())).feed

  def restore(self, abstract_state, step: int | None = None) -> tuple[Any, dict]:
    """(state, feed dict) of ``step`` (default: latest).

    ``abstract_state`` gives the tree structure, shapes, dtypes and shardings
    (e.g. a freshly initialised state).
    """
    step = self.latest_step() if step is None else step
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, abstract_state)
    restored = self._manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract), feed=ocp.args.JsonRestore()))
    return restored.state, restored.feed

  def close(self) -> None:
    """Waits for pending (asynchronous) saves and releases resources."""
    self._manager.wait_until_finished()
    self._manager.close()
