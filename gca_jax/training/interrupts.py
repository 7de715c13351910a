"""Stopping a run on SIGTERM or SIGINT without losing it.

The loop installs `Interrupts` for the run: a signal becomes a request the
loop honours between steps (it saves the current step, then raises
`Interrupted`); a second SIGINT aborts at once. `compile_step` compiles the
first step in a helper thread so that a signal during a long compilation is
honoured at once too.
"""

from __future__ import annotations

import shlex
import signal
import threading

import jax
import numpy as np


class Interrupted(RuntimeError):
  """SIGTERM or SIGINT stopped the run after saving it (one-line message)."""


def continue_command(workdir) -> str:
  return shlex.join(["python", "-m", "gca_jax.pretrain", f"--workdir={workdir}"])


# ---------------------------------------------------------------------------
# Signals.


class Interrupts:
  """Turns SIGTERM/SIGINT into a request the loop honours between steps (a
  second SIGINT aborts at once). On several hosts the processes stop
  together: a request counts once any process has one, checked where they
  all synchronise anyway (logging, saving, epoch ends)."""

  def __init__(self):
    self.signal_name = None
    self._previous = {}

  def _handle(self, signum, frame):
    del frame
    if self.signal_name is not None and signum == signal.SIGINT:
      raise KeyboardInterrupt
    self.signal_name = signal.Signals(signum).name

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      for signum in (signal.SIGTERM, signal.SIGINT):
        self._previous[signum] = signal.signal(signum, self._handle)
    return self

  def __exit__(self, *exc):
    for signum, handler in self._previous.items():
      signal.signal(signum, handler)

  def requested(self, at_sync_point: bool) -> bool:
    """Whether to stop now (the same answer on every process)."""
    if jax.process_count() == 1:
      return self.signal_name is not None
    if not at_sync_point:
      return False
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    flags = multihost_utils.process_allgather(np.int32(self.signal_name is not None))
    if np.any(flags) and self.signal_name is None:
      self.signal_name = "a signal to another process"
    return bool(np.any(flags))


def compile_step(step_fn, state, batch, interrupts: "Interrupts", workdir):
  """``step_fn`` compiled for these arguments in a helper thread, so that a
  signal during a long compilation is honoured at once."""
  result = {}

  def work():
    try:
      result["compiled"] = step_fn.lower(state, batch).compile()
    except Exception as e:  # pylint: disable=broad-except
      result["error"] = e

  worker = threading.Thread(target=work, daemon=True)
  worker.start()
  while worker.is_alive():
    worker.join(0.1)
    if interrupts.signal_name:
      raise Interrupted(f"stopped by {interrupts.signal_name} while compiling; nothing "
                        f"new to save. Continue with: {continue_command(workdir)}")
  if "error" in result:
    raise result["error"]
  return result["compiled"]
