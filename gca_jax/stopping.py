"""SIGINT and SIGTERM of a command line, in every phase of its run.

A command runs in phases, each saying what a signal does there:

* `stops_at_once(message)` (start-up, final evaluation, anything that saves
  nothing): the first signal raises `Interrupted` with ``message(name)``,
  one line saying what is saved and how to go on; the command prints it and
  exits with status 130.
* `deferred()` (training steps and saving): a signal is only recorded; the
  training loop sees it (`requested_signal`) between steps, saves the
  current step and raises `Interrupted` itself. A save is never cut short:
  a checkpoint is complete, with its checksum record, before the process
  stops, however many signals arrive meanwhile.

Once `Interrupted` is on its way out (closing files, removing what a
failed start left), a second signal is ignored and a third ends the process
at once with the same one line (nothing is being saved then). The handlers
never raise ``KeyboardInterrupt``, so no library is interrupted at an
arbitrary point, and a command ends through ``os._exit`` after an
interruption (`gca_jax.cli.one_line_errors`), never through the
interpreter's shutdown with a compiler thread still running.

Handlers are installed by the outermost phase of the main thread and the
previous ones restored when it ends, so a Python caller's own handling
(a notebook's Ctrl-C) is back once a run returns. Off the main thread
nothing is installed and the phases do nothing.

Examples:
  >>> from gca_jax import stopping
  >>> with stopping.deferred():
  ...   stopping.requested_signal() is None
  True
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from typing import Callable

SIGNALS = (signal.SIGINT, signal.SIGTERM)
EXIT_INTERRUPTED = 130


class Interrupted(RuntimeError):
  """SIGTERM or SIGINT stopped the run (one-line message: what is saved and
  how to continue)."""


class _State:
  """The process's signal handling: a stack of phases, the first signal's
  name, how many arrived, and the message of an `Interrupted` under way."""

  def __init__(self):
    self.phases: list = []      # Callable[[str], str] (stops at once) or None (deferred)
    self.previous: dict = {}
    self.reset()

  def reset(self):
    self.signal_name: str | None = None
    self.count = 0
    self.leaving: str | None = None  # the message of the Interrupted raised


_STATE = _State()


# The signal that ends a process at once while an Interrupted is on its way out.
_SIGNALS_TO_EXIT_AT_ONCE = 3


def _handle(signum, frame) -> None:
  del frame
  state = _STATE
  state.count += 1
  if state.signal_name is None:
    state.signal_name = signal.Signals(signum).name
  phase = state.phases[-1] if state.phases else None
  if phase is None:  # deferred: the loop saves, then raises; a save is never cut short
    return
  if state.leaving is not None:  # already stopping: let it tidy up, unless insisted on
    if state.count >= _SIGNALS_TO_EXIT_AT_ONCE:
      os.write(2, f"{state.leaving}\n".encode())
      os._exit(EXIT_INTERRUPTED)  # pylint: disable=protected-access
    return
  raise interrupted(phase(state.signal_name))


def interrupted(message: str) -> Interrupted:
  """The `Interrupted` to raise with ``message``; from now on a further
  signal exits at once with the same line."""
  if _STATE.phases:
    _STATE.leaving = " ".join(message.split())
  return Interrupted(message)


def requested_signal() -> str | None:
  """The name of the first signal received in this run (None: none)."""
  return _STATE.signal_name


def signal_count() -> int:
  """How many signals this run received."""
  return _STATE.count


@contextlib.contextmanager
def _phase(entry: Callable[[str], str] | None):
  if threading.current_thread() is not threading.main_thread():
    yield
    return
  state = _STATE
  outermost = not state.phases
  if outermost:
    state.reset()
    for signum in SIGNALS:
      state.previous[signum] = signal.signal(signum, _handle)
  state.phases.append(entry)
  try:
    if entry is not None and state.signal_name is not None and state.leaving is None:
      # A signal deferred by the phase that just ended: stop here.
      raise interrupted(entry(state.signal_name))
    yield
  finally:
    state.phases.pop()
    if outermost:
      for signum, handler in state.previous.items():
        signal.signal(signum, handler)
      state.previous.clear()
      state.reset()


def stops_at_once(message: Callable[[str], str]):
  """A phase in which the first signal raises ``Interrupted(message(name))``
  (``name``: ``"SIGINT"`` or ``"SIGTERM"``). A signal recorded by an inner
  `deferred` phase that ended without acting on it raises on entry."""
  return _phase(message)


def deferred():
  """A phase in which signals are only recorded (`requested_signal`)."""
  return _phase(None)


def exit_interrupted(error: Interrupted, hint: str | None = None) -> None:
  """Prints ``error`` (and ``hint``) as the command's last line and ends the
  process with status 130, without the interpreter's shutdown."""
  print(str(error) if hint is None else f"{error}\n{hint}", file=sys.stderr, flush=True)
  sys.stdout.flush()
  os._exit(EXIT_INTERRUPTED)  # pylint: disable=protected-access
