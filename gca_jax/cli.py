"""What the command lines share: flags, one-line errors and exit statuses.

``python -m gca_jax.pretrain``, ``python -m gca_jax.linear_eval`` and the
experiment scripts end the same way: unusable input (a bad flag, a missing
dataset, a workdir of another run) prints one ``error:`` line on stderr and
exits with :data:`EXIT_USAGE`; a diverged run (a NaN or infinite loss) with
:data:`EXIT_DIVERGED`; an interrupted one (SIGTERM, Ctrl-C; its state saved)
with :data:`EXIT_INTERRUPTED`. :func:`one_line_errors` is that mapping,
written once. No command line imports another: they all import this module.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys

from absl import flags

FLAGS = flags.FLAGS

EXIT_USAGE = 2
EXIT_DIVERGED = 1
EXIT_INTERRUPTED = 130

# What loading a config file (--config=<file>, applied with its overrides
# while the flags are parsed) raises for a missing or broken file.
CONFIG_LOAD_ERRORS = (OSError, SyntaxError, AttributeError, KeyError, TypeError,
                      ValueError, ImportError, NameError)


# ml_collections re-raises an error of a config file's get_config() with the
# whole traceback in its message, after this marker.
_TRACEBACK_MARKER = "Error whilst parsing config file:"
# ... and says this of a --config.<group>=<value> flag (a group is no value).
_GROUP_FLAG = re.compile(r"flag --(\w+)\.([\w.]+)=(.*?): Failed to parse .* as a ConfigDict")


def _last_exception_line(traceback_text: str) -> str:
  """``Type: message`` of a formatted traceback's exception, with the module
  path dropped (``ConfigError: ...``), or the bare message of a ConfigError
  (its message already names the field)."""
  last = [line for line in traceback_text.splitlines() if line.strip()][-1]
  kind, _, message = last.partition(": ")
  kind = kind.rsplit(".", 1)[-1]
  return message if kind == "ConfigError" else f"{kind}: {message}"


def error_text(error: BaseException) -> str:
  """An exception's message as plain text: a KeyError's str() is a repr,
  ml_collections wraps one in an AttributeError for an unknown field, and
  flattens a config file's traceback into the message of its error."""
  if error.args and isinstance(error.args[0], BaseException):
    return error_text(error.args[0])
  text = str(error.args[0]) if isinstance(error, KeyError) and error.args else (
      str(error) or repr(error))
  if isinstance(error, (KeyError, AttributeError)) and re.fullmatch(r"'?\w+'?", text):
    return _unknown_field_text(text.strip("'")) or text
  if _TRACEBACK_MARKER in text:
    head, _, trace = text.partition(_TRACEBACK_MARKER)
    return head + _last_exception_line(trace)
  group = _GROUP_FLAG.search(text)
  if group:
    return _group_flag_text(*group.groups())
  return text


def _unknown_field_text(name: str) -> str | None:
  """The advice for ``--<flag>.<group>.<name>=...`` where the group has no
  field ``name``: the fields it has, and for ``loss_params`` the losses' own
  pointer (a temperature is ``eps``). None if no such flag was given."""
  for arg in sys.argv[1:]:
    match = re.match(rf"--(\w+)\.([\w.]+)\.{name}(=|$)", arg)
    if match:
      break
  else:
    return None
  flag, group = match[1], match[2]
  try:
    node = FLAGS[flag].value
  except Exception:  # pylint: disable=broad-except  # the flag failed while being defined
    node = None
  if node is None:  # not loaded: the fields of the config every config file starts from
    from gca_jax.training.config import get_config  # pylint: disable=g-import-not-at-top
    node = get_config()
  try:
    for part in group.split("."):
      node = node[part]
    fields = tuple(node.keys())
  except Exception:  # pylint: disable=broad-except  # the group itself is unknown
    return None
  hint = ""
  if group == "loss_params":
    from gca_jax.training.objectives import keyword_hint  # pylint: disable=g-import-not-at-top
    hint = keyword_hint(name, fields)
  return (f"{arg}: {flag}.{group} has no field {name!r}{hint}; its fields: "
          f"{', '.join(fields)}")


def _group_flag_text(flag: str, field: str, value: str) -> str:
  """The advice for ``--<flag>.<field>=<value>`` where the field is a group."""
  fields = ""
  try:
    node = FLAGS[flag].value
    for part in field.split("."):
      node = node[part]
    fields = f" (its fields: {', '.join(sorted(node.keys()))})"
  except Exception:  # pylint: disable=broad-except  # the advice stands without the list
    pass
  first = "name" if "name" in fields else "<field>"
  return (f"--{flag}.{field}={value}: {flag}.{field} is a group of fields{fields}, not a "
          f"value; set one, e.g. --{flag}.{field}.{first}={value}")


def fail(message: str, status: int = EXIT_USAGE) -> None:
  """Prints ``message`` as one line to stderr and exits with ``status``."""
  print(f"error: {' '.join(str(message).split())}", file=sys.stderr, flush=True)
  sys.exit(status)


HELP_FLAGS = ("--help", "-h", "-?", "--helpshort", "--helpfull", "--helpxml")


def parse_flags(argv):
  """absl flag parsing that reports a bad flag in one line (no usage dump);
  ``--help`` prints the usage and exits 0 (absl itself exits 1)."""
  try:
    return FLAGS(argv)
  except SystemExit as e:
    if e.code == 1 and any(arg in HELP_FLAGS for arg in argv[1:]):
      sys.exit(0)
    raise
  except flags.Error as e:
    fail(error_text(e))
  except CONFIG_LOAD_ERRORS as e:
    fail(f"cannot load --config: {type(e).__name__}: {error_text(e)}")


def define_distributed_flags() -> None:
  """The multi-host flags every entry point shares (see `initialize_distributed`)."""
  flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (multi-host).")
  flags.DEFINE_integer("num_processes", None, "Number of processes (multi-host).")
  flags.DEFINE_integer("process_id", None, "Index of this process (multi-host).")
  flags.DEFINE_bool("distributed", False, "Call jax.distributed.initialize() "
                    "with cluster auto-detection.")
  flags.DEFINE_string("cpu_collectives", None, "CPU collectives implementation for "
                      "multi-process CPU runs (e.g. 'gloo').")


def initialize_distributed() -> None:
  """``jax.distributed.initialize`` as the distributed flags ask (or nothing)."""
  import jax  # pylint: disable=g-import-not-at-top
  if FLAGS.cpu_collectives:
    jax.config.update("jax_cpu_collectives_implementation", FLAGS.cpu_collectives)
  if FLAGS.coordinator_address or FLAGS.num_processes:
    jax.distributed.initialize(coordinator_address=FLAGS.coordinator_address,
                               num_processes=FLAGS.num_processes,
                               process_id=FLAGS.process_id)
  elif FLAGS.distributed:
    jax.distributed.initialize()


def usage_errors() -> tuple[type[BaseException], ...]:
  """The exceptions that mean unusable input (exit :data:`EXIT_USAGE`)."""
  from gca_jax.data.base import DatasetError  # pylint: disable=g-import-not-at-top
  from gca_jax.training import checkpoint  # pylint: disable=g-import-not-at-top
  from gca_jax.training.config import ConfigError  # pylint: disable=g-import-not-at-top
  return (ConfigError, checkpoint.WorkdirError, DatasetError, flags.Error)


@contextlib.contextmanager
def aborted_in_one_line():
  """A KeyboardInterrupt (a second Ctrl-C, which aborts without saving) as
  one line and :data:`EXIT_INTERRUPTED`, not a traceback."""
  try:
    yield
  except KeyboardInterrupt:
    print("aborted by Ctrl-C; what was saved before is kept", file=sys.stderr,
          flush=True)
    sys.stdout.flush()
    os._exit(EXIT_INTERRUPTED)  # pylint: disable=protected-access


@contextlib.contextmanager
def one_line_errors(*usage: type[BaseException], resume_hint: str | None = None):
  """Turns the errors a user can cause into one ``error:`` line and an exit status.

  ``usage``: further exception types that mean unusable input (beside
  :func:`usage_errors`). ``resume_hint``: a line printed after an
  interruption's own message (e.g. the command that continues). For a
  command line's ``main`` only: library code raises.
  """
  from gca_jax.training import loop  # pylint: disable=g-import-not-at-top
  try:
    yield
  except loop.Interrupted as e:
    print(str(e) if resume_hint is None else f"{e}\n{resume_hint}", file=sys.stderr,
          flush=True)
    sys.stdout.flush()
    os._exit(EXIT_INTERRUPTED)  # pylint: disable=protected-access
  except (loop.TrainingDiverged, FloatingPointError) as e:
    fail(error_text(e), EXIT_DIVERGED)
  except usage_errors() + usage as e:
    fail(error_text(e), EXIT_USAGE)
