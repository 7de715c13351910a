"""The per-dataset pre-training configs, named by their dataset.

Each module ``gca_jax/configs/<name>.py`` defines big_vision's
``get_config(variant=None)``: the paper's setup for that dataset, or with
``variant="small"`` the same method as a seconds-long CPU run on the
embedded digits. They ship with the package, so a command line names one
without a checkout: ``--config=<name>`` or ``--config=<name>:small``
resolves to the packaged file (`resolve`); a path to any config file
(``--config=my_config.py:small``) is read as it is.

    python -m gca_jax.pretrain --config=cifar10 --config.data_dir=/path/to/tfds
    python -m gca_jax.pretrain --config=cifar10:small      # seconds, CPU

Examples:
  >>> from gca_jax import configs
  >>> configs.NAMES
  ('cifar10', 'cifar100', 'digits', 'imagenet100', 'pacs', 'simsiam_cifar10', 'svhn')
  >>> configs.get_config("cifar10").model.name
  'resnet18'
  >>> config = configs.get_config("cifar10", "small")
  >>> config.dataset, config.loss
  ('digits', 'gca_uot')
"""

from __future__ import annotations

import importlib
from pathlib import Path

import gca_jax._train_extra  # noqa: F401  (without the train extra: one line naming it)

from absl import flags
from ml_collections import config_flags

CONFIG_DIR = Path(__file__).resolve().parent
NAMES = tuple(sorted(p.stem for p in CONFIG_DIR.glob("*.py") if p.stem != "__init__"))
# What separates a config file (or name) from the argument of its get_config.
VARIANT_SEPARATOR = ":"

# `define_flag` defines flags for its caller: --help lists them under the
# command line that called it, not under this module.
flags.disclaim_key_flags()


def _check_name(name: str) -> None:
  if name not in NAMES:
    raise ValueError(f"unknown config {name!r}; the packaged configs are "
                     f"{', '.join(NAMES)} (or pass the path of a config file, <file>.py)")


def path(name: str) -> Path:
  """The packaged file of config ``name`` (one of `NAMES`)."""
  _check_name(name)
  return CONFIG_DIR / f"{name}.py"


def get_config(name: str, variant: str | None = None):
  """``get_config(variant)`` of the packaged config ``name`` (one of `NAMES`)."""
  _check_name(name)
  return importlib.import_module(f"{__name__}.{name}").get_config(variant)


def resolve(argument: str) -> str:
  """A ``--config`` value as a config file: ``<name>[:<variant>]`` becomes the
  packaged file (with its variant); a path (it ends in ``.py`` or names a
  directory) is returned as it is.

  Examples:
    >>> from gca_jax import configs
    >>> configs.resolve("cifar10:small").endswith("gca_jax/configs/cifar10.py:small")
    True
    >>> configs.resolve("experiments/my_config.py:small")
    'experiments/my_config.py:small'
  """
  source, separator, variant = argument.partition(VARIANT_SEPARATOR)
  if source.endswith(".py") or "/" in source or "\\" in source:
    return argument
  return f"{path(source)}{separator}{variant}"


class _NamedConfigParser(flags.ArgumentParser):
  """A config-file flag's own parser, given ``resolve(argument)``: packaged
  configs by name, files as before."""

  def __init__(self, file_parser: flags.ArgumentParser):
    self._file_parser = file_parser

  def parse(self, argument):
    return self._file_parser.parse(resolve(argument))

  def flag_type(self) -> str:
    return self._file_parser.flag_type()


def define_flag(name: str, default: str, help_string: str, *,
                flag_values: flags.FlagValues = flags.FLAGS, **kwargs) -> flags.FlagHolder:
  """``config_flags.DEFINE_config_file`` whose value may also name a packaged
  config (``--<name>=cifar10:small``, see `resolve`); ``kwargs`` are its
  other arguments (``sys_argv``, ``lock_config``, ...).

  An unknown name fails while the flags are parsed, with one line naming
  the packaged configs.
  """
  holder = config_flags.DEFINE_config_file(name, resolve(default), help_string,
                                           flag_values=flag_values, **kwargs)
  # The default is already loaded (or, with the flag on the command line,
  # never is); every value parsed from now on is resolved first.
  flag = flag_values[name]
  flag.parser = _NamedConfigParser(flag.parser)
  return holder
