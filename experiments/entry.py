"""The one way an experiment command line is written: absl flags, then ``run``.

Every ``python -m experiments.<name>`` takes absl flags, ``--flag=value``,
with lists comma-separated (``--seeds=0,1,2``, ``--methods=INCE,GCA-UOT``),
and the fields of its runs' config as ml_collections' overrides,
``--config.<field>=<value>``, typed as the trainer's config
(`gca_jax.training.config.get_config`, which every experiment config
extends). A script is two functions, ``define_flags(flag_values, argv)``
and ``run(args)``, handed to :func:`main`::

    def define_flags(flag_values, argv):
      entry.define_run_flags(flag_values, argv, default_root="runs/mine")

    def run(args):  # args.root, args.seeds, args.smoke, args.config_overrides
      ...

    if __name__ == "__main__":
      entry.main(define_flags, run)

Helpers raise (:class:`ExperimentError`, :class:`MissingDependencyError`
and the library's errors); only :func:`main` turns them into one ``error:``
line and an exit status (`gca_jax.cli.one_line_errors`: 2 unusable input,
1 a diverged run, 130 interrupted).
"""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path
from typing import Any, Callable, Sequence

from absl import flags

from gca_jax import cli

CONFIG = "config"
RESUME_HINT = "Re-run the same experiment command to continue."
HELP_FLAGS = ("--help", "-h", "--helpfull", "-?")


class ExperimentError(ValueError):
  """An experiment cannot run as asked (one-line message)."""


class MissingDependencyError(ImportError):
  """An optional package an experiment needs is not installed (one line)."""


class _NumberListParser(flags.ListParser):
  """A comma-separated list of numbers of one type (``0,1,2``)."""

  def __init__(self, kind: type):
    super().__init__()
    self._kind = kind

  def parse(self, argument):
    items = super().parse(argument)
    try:
      return [self._kind(item) for item in items]
    except (TypeError, ValueError):
      raise ValueError(f"expected a comma-separated list of {self._kind.__name__}s, "
                       f"got {argument!r}") from None

  def flag_type(self) -> str:
    return f"comma-separated list of {self._kind.__name__}s"


def define_number_list(name: str, default, help_string: str, *, kind: type,
                       flag_values: flags.FlagValues) -> None:
  """``--name=1,2,3``: a list of ``kind`` (int or float)."""
  flags.DEFINE(_NumberListParser(kind), name, default, help_string, flag_values,
               flags.CsvListSerializer(","))


def define_config_overrides(flag_values: flags.FlagValues, argv: Sequence[str]) -> None:
  """``--config.<field>=<value>``, typed as the trainer's config (ml_collections).

  ml_collections defines a flag per override found in ``argv`` (so it needs
  them now); an unknown field is an :class:`ExperimentError`.
  """
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  from gca_jax.training import config as config_lib  # pylint: disable=g-import-not-at-top
  try:
    config_flags.DEFINE_config_dict(
        CONFIG, config_lib.get_config(), "Fields of the runs' config, set as "
        "--config.<field>=<value> (e.g. --config.epochs=100 --config.data_dir=/data).",
        flag_values=flag_values, sys_argv=["experiment", *argv])
  except (AttributeError, KeyError) as e:  # ml_collections: a field it does not have
    raise _no_field(e, argv) from None


def define_config_file(flag_values: flags.FlagValues, argv: Sequence[str], default: str,
                       help_string: str) -> None:
  """``--config=<file>.py`` (its ``get_config``) and its ``--config.<field>`` overrides."""
  from gca_jax import configs  # pylint: disable=g-import-not-at-top
  try:  # a packaged config's name (cifar10:small) or a file
    configs.define_flag(CONFIG, default, help_string, flag_values=flag_values,
                        sys_argv=["experiment", *argv])
  except (AttributeError, KeyError) as e:
    raise _no_field(e, argv) from None


def _no_field(error: BaseException, argv: Sequence[str]) -> ExperimentError:
  name = cli.error_text(error).strip("'\"")
  # The command lines' advice names the field; this message wants its name.
  advice = re.search(r"has no field '(\w+)'", name)
  name = advice.group(1) if advice else name
  flag = next((a for a in argv if name in a), name)
  return ExperimentError(f"no config field {name!r} ({flag}); the fields are those of "
                         "gca_jax/training/config.py")


def define_run_flags(flag_values: flags.FlagValues, argv: Sequence[str], *,
                     default_root: str) -> None:
  """The flags of every command that trains runs: --root, --seeds, --smoke and
  the config overrides."""
  flags.DEFINE_string("root", default_root, "Directory under which every run gets its "
                      "own workdir.", flag_values=flag_values)
  define_number_list("seeds", [0], "Seeds (model init, augmentation, shuffling); one run "
                     "each.", kind=int, flag_values=flag_values)
  flags.DEFINE_bool("smoke", False, "Tiny end-to-end run on CPU in seconds (the 'small' "
                    "config: digits, 1 epoch, tiny model; --config.* applied after it); "
                    "for tests.", flag_values=flag_values)
  define_config_overrides(flag_values, argv)


def parse(define_flags: Callable, argv: Sequence[str], *, prog: str = "experiment",
          doc: str = "") -> types.SimpleNamespace:
  """The flags ``define_flags`` defines, parsed from ``argv`` (no program name).

  Returns their values as attributes, plus ``command`` (the command line
  as typed), ``present`` (the names of the flags given) and, where the
  command has a config flag, ``config_overrides`` (``{"a.b": value}`` of the
  ``--config.a.b=value`` flags) and ``config_file``. ``--help`` prints the usage and exits 0.
  """
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  argv = list(argv)
  flag_values = flags.FlagValues()
  define_flags(flag_values, argv)
  if any(arg in HELP_FLAGS for arg in argv):
    print(f"usage: python -m {prog} [--flag=value ...]\n\n{doc.strip()}\n\nflags:\n"
          f"{flag_values.get_help(include_special_flags=False)}")
    sys.exit(0)
  try:
    rest = flag_values([prog, *argv])
  except flags.UnrecognizedFlagError as e:
    raise ExperimentError(f"unknown flag '--{e.flagname}' (flags are --flag=value; "
                          "config fields are set as --config.<field>=<value>)") from None
  if CONFIG in flag_values:
    try:  # ml_collections reports a config file that failed to load on first use
      flag_values[CONFIG].value.keys()
    except cli.CONFIG_LOAD_ERRORS as e:
      raise ExperimentError(f"cannot load --config: {type(e).__name__}: "
                            f"{cli.error_text(e)}") from None
  if len(rest) > 1:
    raise ExperimentError(f"unexpected argument {rest[1]!r}")
  values = {name: flag_values[name].value for name in flag_values if "." not in name}
  _check_folders(values)
  args = types.SimpleNamespace(**values, command=" ".join(["python -m", prog, *argv]))
  args.present = {name for name in values if flag_values[name].present}  # given, not defaults
  if CONFIG in flag_values:
    args.config_overrides = config_flags.get_override_values(flag_values[CONFIG])
    args.config_file = getattr(flag_values[CONFIG], "config_filename", None)
  return args


# The flags that name a folder to write (or read) runs and results in.
FOLDER_FLAGS = ("root", "out")


def _check_folders(values: dict) -> None:
  """Raises ExperimentError if a folder flag names a file (or a path under one)."""
  for name in FOLDER_FLAGS:
    given = values.get(name) or []
    for value in [given] if isinstance(given, str) else given:  # a repeatable flag: a list
      path = Path(value)
      blocking = next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()),
                      None)
      if blocking is not None:
        where = "is a file" if blocking == path else f"is under the file {blocking}"
        raise ExperimentError(f"--{name}={value} {where}, not a folder; pass a folder "
                              "(created if missing)")


def parse_config_overrides(argv: Sequence[str]) -> dict[str, Any]:
  """``{"a.b": value}`` from ``--config.a.b=value`` arguments (and nothing else)."""
  return parse(define_config_overrides, argv).config_overrides


def apply_overrides(config, overrides: dict[str, Any]):
  """``config`` with the parsed ``--config.*`` overrides applied."""
  try:
    config.update_from_flattened_dict(overrides)
  except (KeyError, AttributeError, TypeError) as e:
    raise ExperimentError(f"cannot apply the --config flags: {e}") from None
  return config


def split_names(text: str) -> list[str]:
  return [name.strip() for name in text.split(",") if name.strip()]


def select(requested: Sequence[str], available: Sequence[str], what: str) -> list[str]:
  """``requested`` names, checked against ``available`` ("all": every one)."""
  if list(requested) == ["all"]:
    return list(available)
  unknown = [name for name in requested if name not in available]
  if unknown:
    raise ExperimentError(f"unknown {what} {', '.join(unknown)}; choose from "
                          f"{', '.join(available)} (or 'all')")
  return list(requested)


def main(define_flags: Callable, run: Callable, argv: Sequence[str] | None = None,
         *, usage_errors: tuple[type[BaseException], ...] = ()):
  """Parses the flags (``argv``: the arguments, default ``sys.argv[1:]``) and
  returns ``run(args)``; an error a user can cause ends in one line and its
  exit status. ``usage_errors``: further exceptions that mean unusable input."""
  module = sys.modules[run.__module__]
  spec = getattr(module, "__spec__", None)
  prog = spec.name if spec is not None else run.__module__
  with cli.one_line_errors(ExperimentError, MissingDependencyError, *usage_errors,
                           resume_hint=RESUME_HINT):
    args = parse(define_flags, sys.argv[1:] if argv is None else argv, prog=prog,
                 doc=module.__doc__ or "")
    return run(args)
