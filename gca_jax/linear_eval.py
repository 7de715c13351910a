r"""Evaluation of a pre-trained encoder by a named protocol.

    python -m gca_jax.linear_eval --workdir=runs/digits-gca_uot-...
    python -m gca_jax.linear_eval --workdir=runs/cifar10 --protocol=finetune

Restores the newest intact checkpoint of ``--workdir`` (and its
``config.json``) and runs one protocol of `gca_jax.protocols` (``linear``,
the default: a frozen-feature probe and the kNN monitor; ``finetune``: the
paper's CIFAR protocol), which describes them.

Results are merged into ``workdir/metrics.json`` (each with its protocol)
and written to TensorBoard; progress is printed as it goes. A workdir that
cannot be written is refused in one line before anything is loaded. A run
may still be training in the workdir: a checkpoint it prunes while it is
read is replaced by its newest one.
"""

from __future__ import annotations

import os
import signal
import sys

from absl import app, flags, logging

from gca_jax import cli
from gca_jax.protocols import PROTOCOLS, SETTINGS, evaluate  # noqa: F401 (evaluate: API)
from gca_jax.cli import fail, parse_flags

FLAGS = flags.FLAGS


def define_flags() -> None:
  """Defines this entry point's flags (at start-up, not at import)."""
  flags.DEFINE_string("workdir", None, "Workdir of a pre-training run.", required=True)
  flags.DEFINE_enum("protocol", "linear", PROTOCOLS, "Evaluation protocol.")
  flags.DEFINE_integer("steps", None, "linear: probe steps (default: the run's).")
  flags.DEFINE_float("learning_rate", None,
                     "linear: probe learning rate (default: the run's).")
  flags.DEFINE_float("weight_decay", None, "linear: probe weight decay (default: the run's).")
  flags.DEFINE_integer("epochs", None, "finetune: epochs (default: the protocol's 200).")
  flags.DEFINE_integer("batch_size", None, "finetune: batch size (default: 512).")
  cli.define_distributed_flags()


def main(argv) -> None:
  if len(argv) > 1:
    fail(f"unexpected arguments: {' '.join(argv[1:])}")
  logging.set_verbosity(logging.ERROR)
  cli.initialize_distributed()
  from gca_jax.training import reporting  # pylint: disable=g-import-not-at-top

  settings = {name: FLAGS[name].value for name in SETTINGS[FLAGS.protocol]}
  other = [name for p in PROTOCOLS if p != FLAGS.protocol for name in SETTINGS[p]
           if FLAGS[name].present]
  if other:
    fail(f"--{other[0]} is not a setting of --protocol={FLAGS.protocol}")
  # ValueError: a bad setting; a diverged fine-tuning (FloatingPointError)
  # reports no accuracy.
  with cli.one_line_errors(ValueError), cli.aborted_in_one_line():  # a second Ctrl-C
    result = evaluate(FLAGS.workdir, FLAGS.protocol, **settings)
  print(f"{FLAGS.protocol} protocol: " + ", ".join(
      f"{k} {v:.4f}" for k, v in result.items()))
  print(reporting.where_to_look(FLAGS.workdir))
  sys.stdout.flush()


def _exit_at_once(signum, frame) -> None:
  """Outside the evaluation (start-up, the closing lines) nothing is being
  saved: a signal ends the process in one line."""
  del frame
  print(f"stopped by {signal.Signals(signum).name}; nothing was being saved", file=sys.stderr,
        flush=True)
  os._exit(cli.EXIT_INTERRUPTED)  # pylint: disable=protected-access


def run() -> None:
  for signum in (signal.SIGTERM, signal.SIGINT):
    signal.signal(signum, _exit_at_once)
  define_flags()
  app.run(main, flags_parser=parse_flags)


if __name__ == "__main__":
  run()
