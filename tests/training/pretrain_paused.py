"""``python -m gca_jax.pretrain`` that pauses in one phase until signalled.

    python -m tests.training.pretrain_paused <phase> <signals> [pretrain flags...]

The run prints ``PAUSED <phase>`` when it reaches the phase, then waits
(without timing assumptions) until ``<signals>`` signals have arrived before
it goes on, so a test signals exactly in that phase:

* ``startup``: loading the data (a signal stops at once);
* ``compile``: compiling the first step, in its helper thread;
* ``save``: writing a checkpoint, after orbax finished it and before its
  checksum record is written (the window a stop must never leave open);
* ``evaluation``: the final evaluation, after the final checkpoint.

A phase whose first signal raises (start-up, evaluation) leaves the wait at
once; the others wait for every signal, as a user's keys would arrive.
"""

import sys
import time

from gca_jax import evaluation, pretrain, stopping
from gca_jax.training import checkpoint, feeds, interrupts

# Long enough for any loaded machine; the wait ends as soon as the signals arrived.
MAX_WAIT_SECONDS = 600


def pause(phase: str, signals: int) -> None:
  print(f"PAUSED {phase}", flush=True)
  deadline = time.monotonic() + MAX_WAIT_SECONDS
  while stopping.signal_count() < signals and time.monotonic() < deadline:
    time.sleep(0.01)


def _pausing(function, phase: str, signals: int, *, once: bool = True):
  state = {"paused": False}

  def wrapper(*args, **kwargs):
    if not (once and state["paused"]):
      state["paused"] = True
      pause(phase, signals)
    return function(*args, **kwargs)

  return wrapper


class _CompilingSlowly:
  """A jitted step whose ``lower(...).compile()`` pauses first (in the
  trainer's compilation thread)."""

  def __init__(self, step_fn, signals: int):
    self._step_fn, self._signals = step_fn, signals

  def lower(self, *args):
    lowered = self._step_fn.lower(*args)
    signals = self._signals

    class _Lowered:
      def compile(self):
        pause("compile", signals)
        return lowered.compile()

    return _Lowered()


def install(phase: str, signals: int) -> None:
  if phase == "startup":
    feeds.load_data = _pausing(feeds.load_data, phase, signals)
  elif phase == "compile":
    compile_step = interrupts.compile_step
    interrupts.compile_step = lambda step_fn, *args, **kwargs: compile_step(
        _CompilingSlowly(step_fn, signals), *args, **kwargs)
  elif phase == "save":
    checkpoint._file_digests = _pausing(  # pylint: disable=protected-access
        checkpoint._file_digests, phase, signals)  # pylint: disable=protected-access
  elif phase == "evaluation":
    evaluation.evaluate_encoder = _pausing(evaluation.evaluate_encoder, phase, signals)
  else:
    raise SystemExit(f"unknown phase {phase!r}")


if __name__ == "__main__":
  install(sys.argv[1], int(sys.argv[2]))
  sys.argv = ["gca_jax.pretrain", *sys.argv[3:]]
  pretrain.run()
