"""Checkpoints (orbax), their integrity, the run identity and the workdir lock.

A checkpoint holds the whole train state (params, optimiser state, batch
statistics, BYOL's EMA target, the RNG key and the step) and, as JSON, the
data position and the running sums of the epoch's metrics, so a resumed run
continues exactly where the saved one stopped, even mid-epoch.

Integrity: orbax writes each step into a temporary directory and renames it
when complete, so a process killed mid-save leaves nothing that
``all_steps()`` lists. After each save the SHA-256 of every file of the step
is recorded in ``checksums/<step>.json``; `Checkpointer.restore` verifies
them and falls back, with a warning, to the newest intact checkpoint when
the latest is truncated, has lost a file or has flipped bytes (damaged
steps are moved to ``damaged/``). A step folder without its two items (a
stray empty folder) is set aside alike, and a checkpoint without a checksum
record that cannot be read is taken as damaged (the previous one is tried).
A reader beside a run that prunes the step it reads goes on with the newest.
A failed write (a full disk) is one line and prunes nothing: the same
command continues once it can write.

Identity: a run stores its config as ``config.json``; a workdir holding a
checkpoint refuses a config that differs outside the run-control fields
(`gca_jax.training.config.RUN_CONTROL_FIELDS`), and refuses to resume at all
without its ``config.json``. `WorkdirLock` keeps two runs off one workdir.
"""

from __future__ import annotations

import errno
import fcntl
import gc
import hashlib
import json
import logging
import os
import shlex
import shutil
import sys
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from gca_jax.training.config import RUN_CONTROL_FIELDS, fill_later_fields, unknown_fields

CONFIG_FILE = "config.json"
CHECKPOINT_DIR = "checkpoints"
CHECKSUM_DIR = "checksums"
DAMAGED_DIR = "damaged"
LOCK_FILE = ".lock"
# How often a reader starts again after a run beside it pruned its step.
_MAX_PRUNED_RETRIES = 20
_PRUNED = "pruned while being verified"


class WorkdirError(RuntimeError):
  """The workdir cannot be used as asked (one-line message)."""


class RunMismatchError(WorkdirError):
  """The workdir belongs to a different run."""


class CheckpointDamaged(WorkdirError):
  """A checkpoint cannot be read although it fits the run (one-line message)."""


def _write_error(error: OSError, path: Path) -> WorkdirError:
  """The one-line error of a failed write under ``path``: a full disk loses
  nothing (the previous checkpoint stays), so the same command continues."""
  where = error.filename or path
  if error.errno == errno.ENOSPC:
    return WorkdirError(f"no space left on device writing {where}; free space and re-run "
                        "the same command")
  return WorkdirError(f"cannot write {where} ({error.strerror or error}); fix it and "
                      "re-run the same command")


# What a full disk looks like in an error of orbax's writers (tensorstore).
_NO_SPACE_TEXTS = ("No space left on device", "RESOURCE_EXHAUSTED")


def _is_no_space(error: BaseException) -> bool:
  return (isinstance(error, OSError) and error.errno == errno.ENOSPC) or any(
      text in str(error) for text in _NO_SPACE_TEXTS)


def _not_interrupted(error: BaseException) -> bool:
  from gca_jax.training.interrupts import Interrupted  # pylint: disable=g-import-not-at-top
  return not isinstance(error, Interrupted)


def _quietly(call, handled=_not_interrupted):
  """``(call(), None)``, or ``(None, error)`` for an exception ``handled(error)``
  accepts, without orbax's own report of it.

  orbax reports a failed read or write itself besides raising it: error logs
  with tracebacks from its threads, and "Exception ignored" tracebacks for
  the coroutines it abandons. The caller reports a handled failure in one
  line, so those are held back while ``call`` runs and dropped (with the
  error's traceback, which keeps the coroutines alive); they are shown as
  usual when ``call`` succeeds or fails otherwise.
  """
  held_logs, unraisables = [], []

  class Hold(logging.Filter):
    def filter(self, record):
      held_logs.append(record)
      return False

  logger, hold, hook = logging.getLogger("absl"), Hold(), sys.unraisablehook
  logger.addFilter(hold)
  sys.unraisablehook = unraisables.append
  quiet = False
  try:
    return call(), None
  except Exception as e:  # pylint: disable=broad-except
    if not handled(e):
      raise
    quiet = True
    cause = e
    while cause is not None:
      cause.__traceback__ = None
      cause = cause.__cause__ or cause.__context__
    return None, e
  finally:
    if quiet:
      gc.collect()  # the abandoned coroutines that are free report now
    sys.unraisablehook = hook
    logger.removeFilter(hold)
    if quiet:  # those orbax's event loop holds report when it closes (at exit)
      _drop_orbax_coroutine_reports()
    else:
      for record in held_logs:
        logger.handle(record)
      for unraisable in unraisables:
        hook(unraisable)


def _is_orbax_coroutine(unraisable) -> bool:
  code = getattr(unraisable.object, "cr_code", None)
  return code is not None and f"{os.sep}orbax{os.sep}" in code.co_filename


def _drop_orbax_coroutine_reports() -> None:
  """From now on, the "Exception ignored" reports of orbax's abandoned
  coroutines are dropped (the failure they belong to was reported)."""
  hook = sys.unraisablehook
  if getattr(hook, "drops_orbax_coroutines", False):
    return

  def quiet_hook(unraisable):
    if not _is_orbax_coroutine(unraisable):
      hook(unraisable)

  quiet_hook.drops_orbax_coroutines = True
  sys.unraisablehook = quiet_hook


# ---------------------------------------------------------------------------
# The workdir.


def prepare_workdir(workdir: str | Path) -> Path:
  """Creates ``workdir`` if needed and checks that it is a writable directory."""
  workdir = Path(workdir)
  if workdir.exists() and not workdir.is_dir():
    raise WorkdirError(f"--workdir {workdir} is a file, not a directory")
  try:
    workdir.mkdir(parents=True, exist_ok=True)
    _write_probe(workdir)
  except OSError as e:
    raise WorkdirError(f"cannot write to --workdir {workdir}: {e.strerror or e}") from None
  return workdir


def _write_probe(workdir: Path) -> None:
  """Creates and removes a file in ``workdir`` (raises OSError if it cannot)."""
  probe = workdir / f".write_test.{jax.process_index()}.{os.getpid()}"
  probe.write_text("")
  probe.unlink()


def check_writable(workdir: str | Path, what: str) -> None:
  """Raises WorkdirError, before anything is loaded, unless ``what`` (a
  command that writes its results into the run's workdir) can write there."""
  workdir = Path(workdir)
  if not workdir.is_dir():
    return  # the reader's own error names a missing run
  try:
    _write_probe(workdir)
  except OSError as e:
    raise WorkdirError(f"{what} writes its results into --workdir {workdir}, which cannot "
                       f"be written ({e.strerror or e}); copy the workdir somewhere "
                       "writable and evaluate the copy") from None


class WorkdirLock:
  """An exclusive lock on a workdir for the life of a run (process 0 only).

  The operating system releases it when the process dies, so a killed run
  never leaves a stale lock.
  """

  def __init__(self, workdir: str | Path):
    self._file = None
    if jax.process_index() != 0:
      return
    path = Path(workdir) / LOCK_FILE
    self._file = open(path, "a+")  # pylint: disable=consider-using-with
    try:
      fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
      self._file.seek(0)
      holder = self._file.read().strip() or "another process"
      self._file.close()
      self._file = None
      raise WorkdirError(f"workdir {workdir} is in use by another run ({holder}); "
                         "wait for it to finish or use another --workdir") from None
    self._file.seek(0)
    self._file.truncate()
    self._file.write(f"pid {os.getpid()}")
    self._file.flush()

  def release(self) -> None:
    if self._file is not None:
      fcntl.flock(self._file, fcntl.LOCK_UN)
      self._file.close()
      self._file = None


# ---------------------------------------------------------------------------
# Run identity.


def config_to_json(config) -> dict:
  """The config as a plain JSON-compatible dict, with its local dataset path
  and ``data_dir`` absolute and resolved: a run is the same from any folder
  and whatever spelling of its files it is given."""
  from gca_jax.data.registry import resolved_name  # pylint: disable=g-import-not-at-top
  stored = json.loads(config.to_json(sort_keys=True))
  if "dataset" in stored:
    stored["dataset"] = resolved_name(stored["dataset"])
  data_dir = stored.get("data_dir")
  if isinstance(data_dir, str) and data_dir.strip() and "://" not in data_dir:
    stored["data_dir"] = str(Path(stored["data_dir"]).expanduser().resolve())
  return stored


def _drop_none(value):
  """``value`` without the None entries of its (nested) dicts: an unset
  placeholder field and a field absent from an older config.json agree."""
  if isinstance(value, dict):
    return {k: _drop_none(v) for k, v in value.items() if v is not None}
  return value


def identity(config_json: dict) -> dict:
  """The fields of a config that define what a run computes."""
  return _drop_none({k: v for k, v in config_json.items()
                     if k not in RUN_CONTROL_FIELDS})


def differing_fields(old: dict, new: dict) -> list[str]:
  """Top-level identity fields where two configs (as JSON) differ."""
  old, new = identity(old), identity(new)
  return sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))


def read_config_json(workdir: str | Path, *, note: bool = False) -> dict | None:
  """The stored config of ``workdir`` (None if there is none), with the
  fields added since it was written set to their defaults where that is what
  the run did (`gca_jax.training.config.fill_later_fields`); ``note``: say so
  on stderr (where the run is continued or evaluated)."""
  path = Path(workdir) / CONFIG_FILE
  if not path.exists():
    return None
  try:
    stored = json.loads(path.read_text())
  except (OSError, ValueError) as e:
    raise WorkdirError(f"{path} is unreadable ({type(e).__name__}: {e}); restore it "
                       "or use a new --workdir") from None
  if not isinstance(stored, dict):
    raise WorkdirError(f"{path} is not a config (a JSON object); restore it or use a new "
                       "--workdir")
  unknown = unknown_fields(stored)
  if unknown:
    raise WorkdirError(f"{path} has an unknown field config.{unknown[0]} (misspelt?); fix "
                       "or restore the file")
  stored, filled = fill_later_fields(stored)
  if filled and note:
    print(f"note: {path} predates config.{', config.'.join(filled)}; "
          f"{'they take' if len(filled) > 1 else 'it takes'} the default, which is what "
          "the run did", file=sys.stderr, flush=True)
  return stored


def holds_checkpoint(workdir: str | Path) -> bool:
  """Whether ``workdir`` holds a complete checkpoint (without verifying it)."""
  directory = Path(workdir) / CHECKPOINT_DIR
  return directory.is_dir() and any(p.name.isdigit() for p in directory.iterdir())


def check_run_identity(workdir: str | Path, config) -> None:
  """Raises RunMismatchError unless ``config`` is the run stored in ``workdir``.

  Call it only when ``workdir`` holds a checkpoint (a ``config.json`` alone
  is what a start that failed before its first checkpoint left).
  """
  stored = read_config_json(workdir)
  if stored is None:
    raise RunMismatchError(
        f"workdir {workdir} holds checkpoints but no {CONFIG_FILE}, so its run "
        "cannot be identified; restore the file or use a new --workdir")
  differing = differing_fields(stored, config_to_json(config))
  if differing:
    raise RunMismatchError(
        f"workdir {workdir} holds another run (config differs in: "
        f"{', '.join(differing)}); continue it with "
        f"{shlex.join(['python', '-m', 'gca_jax.pretrain', f'--workdir={workdir}'])} "
        "(its own config), or use a new --workdir")


# Where a checkpoint's data position records the identity of its run.
_IDENTITY_KEY = "run_identity"
# The identity entry of the device count (where the objective depends on it).
DEVICES_FIELD = "device_count"


def run_identity(config, num_devices: int | None = None) -> dict:
  """What defines the run of ``config``, as each checkpoint records it: its
  `identity` fields and, with ``config.loss_scope='local'`` (one plan per
  device: the objective depends on their number), ``num_devices`` (None:
  not part of it, e.g. for an evaluation)."""
  result = identity(config_to_json(config))
  if num_devices is not None and config.get("loss_scope") == "local":
    result[DEVICES_FIELD] = num_devices
  return result


def _flat(value, prefix: str) -> dict:
  if isinstance(value, dict):
    return {k: v for key, item in value.items()
            for k, v in _flat(item, f"{prefix}.{key}").items()}
  return {prefix: value}


def identity_differences(stored: dict, now: dict) -> list[tuple[str, Any, Any]]:
  """``(field, stored value, value now)`` for each leaf where two
  `run_identity` records differ (the device count only where ``now`` has it)."""
  if DEVICES_FIELD not in now:
    stored = {k: v for k, v in stored.items() if k != DEVICES_FIELD}
  old, new = _flat(stored, "config"), _flat(now, "config")
  return [(field, old.get(field), new.get(field)) for field in sorted(old.keys() | new.keys())
          if old.get(field) != new.get(field)]


def write_config_json(workdir: str | Path, config) -> None:
  """Stores ``config`` as the run identity of ``workdir`` (process 0)."""
  if jax.process_index() == 0:
    write_json(Path(workdir) / CONFIG_FILE, config_to_json(config))


# ---------------------------------------------------------------------------
# Checkpoints.


def _file_digests(directory: Path) -> dict[str, str]:
  digests = {}
  for path in sorted(directory.rglob("*")):
    if path.is_file():
      with open(path, "rb") as f:
        digests[str(path.relative_to(directory))] = hashlib.file_digest(f, "sha256").hexdigest()
  return digests


def write_json(path: Path, value) -> None:
  """Writes ``value`` as JSON to ``path`` atomically (a reader never sees a
  partial file)."""
  temporary = path.with_name(path.name + ".tmp")
  temporary.write_text(json.dumps(value, indent=2, allow_nan=False))
  temporary.replace(path)


def _on_every_process(value: int) -> int:
  """Process 0's ``value``, on every process (one decision for all hosts)."""
  if jax.process_count() == 1:
    return value
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  return int(multihost_utils.broadcast_one_to_all(np.int64(value)))


# The private copy of a reader (`Checkpointer.pinned`), by its process id.
_PRIVATE_COPY = ".reading."


def _remove_stale_copies(workdir: Path) -> None:
  """Removes the private copies of readers that died before removing them
  (SIGKILL): their process is gone."""
  for copy in workdir.glob(f"{_PRIVATE_COPY}*"):
    pid = copy.name[len(_PRIVATE_COPY):]
    if not pid.isdigit() or int(pid) == os.getpid():
      continue
    try:
      os.kill(int(pid), 0)
    except ProcessLookupError:
      shutil.rmtree(copy, ignore_errors=True)
    except OSError:  # alive, another user's
      pass


def remove_private_copy(workdir: str | Path) -> None:
  """Removes this process's private copy (`Checkpointer.pinned`) in ``workdir``."""
  shutil.rmtree(Path(workdir).absolute() / f"{_PRIVATE_COPY}{os.getpid()}",
                ignore_errors=True)


class Checkpointer:
  """Saves and restores (state, position) under ``workdir/checkpoints``.

  Keeps the newest ``max_to_keep`` checkpoints; older ones are deleted only
  after the new one's checksums are recorded, so a process killed at any
  moment leaves at least one verifiable checkpoint. ``identity``: the
  `run_identity` of the run, saved beside each checkpoint and compared with
  the one saved there whenever a checkpoint is read (RunMismatchError).
  """

  def __init__(self, workdir: str | Path, *, max_to_keep: int = 2,
               identity: dict | None = None):
    self._workdir = Path(workdir).absolute()
    self._identity = identity
    self._origin = self._workdir  # the workdir a private copy was made of (messages)
    self._directory = self._workdir / CHECKPOINT_DIR
    self._max_to_keep = max_to_keep
    if self._directory.exists() and not self._directory.is_dir():
      raise WorkdirError(f"{self._directory} is a file, not a directory of checkpoints; "
                         "move it away and re-run the same command")
    self._manager = ocp.CheckpointManager(
        self._directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=None, create=False),
        item_names=("state", "feed"))

  def all_steps(self) -> list[int]:
    """Steps of the complete checkpoints, oldest first (as on disk now: a
    run may be writing and pruning beside a reader)."""
    for _ in range(_MAX_PRUNED_RETRIES):
      try:
        self._manager.reload()
        break
      except FileNotFoundError:  # a step was pruned while being listed: list again
        continue
    return sorted(self._manager.all_steps())

  def _checksum_file(self, step: int) -> Path:
    return self._workdir / CHECKSUM_DIR / f"{step}.json"

  def save(self, state, position: dict) -> None:
    """Saves ``state`` and the JSON ``position`` at ``state.step``, waits for
    the write, records its checksums, then drops the oldest checkpoints."""
    step = int(jax.device_get(state.step))
    if self._identity is not None:
      position = {**position, _IDENTITY_KEY: self._identity}

    def write():
      if jax.process_index() == 0:
        self._directory.mkdir(parents=True, exist_ok=True)
      self._manager.save(step, args=ocp.args.Composite(
          state=ocp.args.StandardSave(state), feed=ocp.args.JsonSave(position)))
      self._manager.wait_until_finished()
      if jax.process_index() == 0:
        self._checksum_file(step).parent.mkdir(exist_ok=True)
        write_json(self._checksum_file(step), _file_digests(self._step_dir(step)))

    _, error = _quietly(write, lambda e: isinstance(e, OSError) or (
        _is_no_space(e) and _not_interrupted(e)))
    if error is not None:  # nothing is pruned: the previous checkpoints stay
      if not isinstance(error, OSError):  # orbax's writers raise ValueError
        error = OSError(errno.ENOSPC, "No space left on device")
      raise _write_error(error, self._step_dir(step))
    for old in self.all_steps()[:-self._max_to_keep]:
      self._manager.delete(old)
      if jax.process_index() == 0:
        self._checksum_file(old).unlink(missing_ok=True)

  def _step_dir(self, step: int) -> Path:
    return self._directory / str(step)

  def damage(self, step: int) -> str | None:
    """Why checkpoint ``step`` fails verification (None if it is intact).

    A step folder without the two items (``state``, ``feed``) is incomplete
    (e.g. a stray empty folder). A complete checkpoint without a checksum
    record (written by an older version, or being recorded just now) is
    accepted unverified, with a warning; `restore` then treats a failure to
    read it as damage.
    """
    missing_items = [item for item in ("state", "feed")
                     if not (self._step_dir(step) / item).is_dir()]
    if missing_items:
      return f"incomplete: no {missing_items[0]}/ item"
    try:
      expected = json.loads(self._checksum_file(step).read_text())
    except FileNotFoundError:
      print(f"warning: checkpoint {step} in {self._workdir} has no checksum record; "
            "using it unverified", file=sys.stderr, flush=True)
      return None
    except (OSError, ValueError):
      return "its checksum record is unreadable"
    try:
      actual = _file_digests(self._step_dir(step))
    except FileNotFoundError:  # pruned while read, or a file is missing
      if not self._step_dir(step).exists():
        return _PRUNED
      raise
    missing = sorted(expected.keys() - actual.keys())
    if missing:
      return f"file {missing[0]} is missing"
    changed = sorted(k for k in expected if expected[k] != actual[k])
    if changed:
      return f"file {changed[0]} has changed (truncated or corrupted)"
    return None

  def pinned(self, step: int) -> "Checkpointer":
    """A read-only Checkpointer of a private copy of ``step`` made of hard
    links (instant, no data copied): a run beside the reader may prune the
    step, the linked files stay until `unpin`. Raises FileNotFoundError if
    the step vanishes while it is linked."""
    _remove_stale_copies(self._workdir)
    private = self._workdir / f"{_PRIVATE_COPY}{os.getpid()}"
    shutil.rmtree(private, ignore_errors=True)
    shutil.copytree(self._step_dir(step), private / CHECKPOINT_DIR / str(step),
                    copy_function=os.link)
    try:  # its verification record too: a failure to read it then means a mismatch
      (private / CHECKSUM_DIR).mkdir()
      shutil.copy(self._checksum_file(step), private / CHECKSUM_DIR)
    except FileNotFoundError:
      pass
    copy = Checkpointer(private, identity=self._identity)
    copy._origin = self._workdir  # pylint: disable=protected-access
    return copy

  @staticmethod
  def unpin(pinned: "Checkpointer") -> None:
    pinned.close()
    shutil.rmtree(pinned._workdir, ignore_errors=True)  # pylint: disable=protected-access

  def _set_aside(self, step: int) -> None:
    target = self._workdir / DAMAGED_DIR / str(step)
    target.parent.mkdir(exist_ok=True)
    shutil.rmtree(target, ignore_errors=True)
    shutil.move(str(self._step_dir(step)), str(target))
    self._checksum_file(step).unlink(missing_ok=True)

  def _warn_damaged(self, step: int, reason: str, set_aside: bool) -> None:
    print(f"warning: checkpoint {step} in {self._workdir} is damaged ({reason}); "
          + (f"moved to {DAMAGED_DIR}/ and " if set_aside else "") + "skipped",
          file=sys.stderr, flush=True)
    if set_aside:
      self._set_aside(step)

  def latest_step(self, *, set_aside: bool = True, below: int | None = None) -> int | None:
    """Step of the newest intact checkpoint (older than ``below`` if given);
    None if there is none at all.

    Damaged newer ones are skipped with a warning and, if ``set_aside``,
    moved to ``damaged/`` (only a run holding the workdir's lock should).
    Process 0 verifies and every process gets its answer. Raises
    WorkdirError if checkpoints exist but none is intact.
    """
    chosen, steps = -1, [s for s in self.all_steps() if below is None or s < below]
    if jax.process_index() == 0:
      for step in reversed(steps):
        reason = self.damage(step)
        if reason is None:
          chosen = step
          break
        if reason is _PRUNED:  # a run beside this reader pruned it: list again
          return self.latest_step(set_aside=set_aside, below=below)
        self._warn_damaged(step, reason, set_aside)
    chosen = _on_every_process(chosen)
    if set_aside:
      self._manager.reload()
    if chosen < 0 and steps:
      raise WorkdirError(f"every checkpoint in {self._directory} is damaged (see the "
                         "warnings); move the workdir away to start over")
    return None if chosen < 0 else chosen

  def newest_readable(self, read, *, set_aside: bool = True, start: int | None = None):
    """``(step, read(step))`` for the newest intact checkpoint (from ``start``
    down) that ``read`` can read; ``(None, None)`` if there is no checkpoint.

    A `CheckpointDamaged` step is skipped with a warning (set aside if
    ``set_aside``) and the previous one tried. A step that vanished while it
    was read (a run beside this reader pruned it) makes the reader start
    again from the newest one.
    """
    step = self.latest_step(set_aside=set_aside) if start is None else start
    for _ in range(_MAX_PRUNED_RETRIES):
      if step is None:
        return None, None
      try:
        return step, read(step)
      except Exception as e:  # pylint: disable=broad-except
        if not self._step_dir(step).exists():  # pruned: a newer one exists
          step = self.latest_step(set_aside=set_aside)
          continue
        if not isinstance(e, CheckpointDamaged):
          raise
        if jax.process_index() == 0:
          self._warn_damaged(step, str(e), set_aside)
        step = self.latest_step(set_aside=set_aside, below=step)
        if step is None:
          raise WorkdirError(f"no intact checkpoint left in {self._directory} (see the "
                             "warnings); move the workdir away to start over") from None
    raise WorkdirError(f"the checkpoints in {self._directory} were pruned "
                       f"{_MAX_PRUNED_RETRIES} times while being read; re-run the command")

  def _verified(self, step: int) -> bool:
    return self._checksum_file(step).exists()

  def read_position(self, step: int) -> dict:
    """The saved JSON position of ``step`` without restoring the state."""
    try:
      position = self._manager.restore(
          step, args=ocp.args.Composite(feed=ocp.args.JsonRestore())).feed
    except Exception as e:  # pylint: disable=broad-except  # orbax raises bare Exceptions too
      if not _not_interrupted(e):
        raise
      raise CheckpointDamaged(f"its data position is unreadable: {type(e).__name__}") from None
    self._check_identity(step, position)
    return position

  def _check_identity(self, step: int, position) -> None:
    """Raises RunMismatchError if checkpoint ``step`` was written by a run
    of another identity (a checkpoint older than the record is not checked)."""
    stored = position.get(_IDENTITY_KEY) if isinstance(position, dict) else None
    if self._identity is None or stored is None:
      return
    differences = identity_differences(stored, self._identity)
    if not differences:
      return
    field, old, new = differences[0]
    if field == f"config.{DEVICES_FIELD}":
      raise RunMismatchError(
          f"workdir {self._origin} holds a config.loss_scope='local' run (one plan per "
          f"device) whose checkpoint {step} was written on {old} devices; this process has "
          f"{new}: resume it on {old} devices, or use a new --workdir")
    raise RunMismatchError(
        f"workdir {self._origin} holds another run: its checkpoint {step} was written with "
        f"{field}={old!r}, not {new!r}; an edit of {CONFIG_FILE} cannot change a run: "
        "restore it, or use a new --workdir")

  def restore(self, abstract_state, step: int) -> tuple[Any, dict]:
    """(state, position) of the intact checkpoint ``step``.

    ``abstract_state`` gives the tree structure, shapes, dtypes and shardings
    (e.g. a freshly initialised state).
    """
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, abstract_state)
    # orbax raises bare Exceptions too (a truncated array file).
    restored, error = _quietly(lambda: self._manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract), feed=ocp.args.JsonRestore())))
    if error is not None:
      if not self._verified(step):
        # Without a checksum record, damage (e.g. a garbled _METADATA or a
        # half-written file) and a state of another shape fail alike; the
        # identity check already passed, so it is taken as damage and the
        # previous step is tried.
        raise CheckpointDamaged(f"unverified and unreadable: {type(error).__name__}")
      raise WorkdirError(f"checkpoint {step} in {self._directory} does not fit this "
                         f"run's state ({type(error).__name__}); use a new --workdir")
    self._check_identity(step, restored.feed)
    return restored.state, restored.feed

  def close(self) -> None:
    """Waits for pending saves and releases resources."""
    self._manager.wait_until_finished()
    self._manager.close()
