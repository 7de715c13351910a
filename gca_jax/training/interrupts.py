"""Stopping a run on SIGTERM or SIGINT without losing it.

The loop trains inside `Interrupts` (a `gca_jax.stopping.deferred` phase):
a signal becomes a request the loop honours between steps (it saves the
current step, then raises `Interrupted`); further signals wait for a save
under way to complete. `compile_step` compiles the first step in a helper
thread so that a signal during a long compilation is honoured at once too.
"""

from __future__ import annotations

import shlex
import threading

import jax
import numpy as np

from gca_jax import stopping
from gca_jax.stopping import Interrupted  # noqa: F401 (the loop's exception)


def continue_command(workdir) -> str:
  return shlex.join(["python", "-m", "gca_jax.pretrain", f"--workdir={workdir}"])


def unchanged_since_start(workdir, saved_step: int | None = None) -> str:
  """What a stop before the first new step leaves: the run saved at
  ``saved_step`` (continued by `continue_command`), or, with ``saved_step``
  not known, the run the workdir holds or nothing (the same command starts
  or continues it)."""
  if saved_step is None:
    from gca_jax.training import checkpoint  # pylint: disable=g-import-not-at-top
    if checkpoint.holds_checkpoint(workdir):  # not known yet: the workdir says
      return "nothing new was saved; run the same command again to continue the run"
    return "nothing was saved; run the same command again to start the run"
  return (f"nothing new to save (the run is saved at step {saved_step}). Continue with: "
          f"{continue_command(workdir)}")


# ---------------------------------------------------------------------------
# Signals.


class Interrupts:
  """Turns SIGTERM/SIGINT into a request the loop honours between steps
  (`gca_jax.stopping.deferred`). On several hosts the processes stop
  together: a request counts once any process has one, checked where they
  all synchronise anyway (logging, saving, epoch ends)."""

  def __init__(self):
    self._phase = stopping.deferred()
    self._other_process = False

  @property
  def signal_name(self) -> str | None:
    if self._other_process:
      return "a signal to another process"
    return stopping.requested_signal()

  def __enter__(self):
    self._phase.__enter__()
    return self

  def __exit__(self, *exc):
    return self._phase.__exit__(*exc)

  def requested(self, at_sync_point: bool) -> bool:
    """Whether to stop now (the same answer on every process)."""
    if jax.process_count() == 1:
      return self.signal_name is not None
    if not at_sync_point:
      return False
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    flags = multihost_utils.process_allgather(np.int32(self.signal_name is not None))
    if np.any(flags) and self.signal_name is None:
      self._other_process = True
    return bool(np.any(flags))


def compile_step(step_fn, state, batch, interrupts: "Interrupts", workdir,
                 saved_step: int | None = None):
  """``step_fn`` compiled for these arguments in a helper thread, so that a
  signal during a long compilation is honoured at once (``saved_step``: the
  run's latest checkpoint, None for a new run)."""
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
      raise stopping.interrupted(f"stopped by {interrupts.signal_name} while compiling; "
                                 f"{unchanged_since_start(workdir, saved_step)}")
  if "error" in result:
    raise result["error"]
  return result["compiled"]
