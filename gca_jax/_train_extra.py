"""Importing this module checks that the train extra is installed.

``pip install .`` installs the core (the losses, targets, projections,
metrics, ``gca_jax.reference``); the trainer, data, configs and command
lines need the ``train`` extra of ``pyproject.toml``. Each of them imports
this module first, so that without the extra it fails in one line naming it
rather than deep inside with the name of one missing package: a
``ModuleNotFoundError`` for an import from Python, or one ``error:`` line and
exit status 2 for a command line (``python -m gca_jax.pretrain``).
"""

from __future__ import annotations

import importlib.util
import sys

# The import names of the train extra's packages (tests/test_wheel.py holds
# them equal to pyproject.toml's list).
MODULES = ("optax", "orbax", "tensorflow_datasets", "array_record", "importlib_resources",
           "grain", "ml_collections", "sklearn", "PIL", "tensorboardX", "tqdm")
INSTALL = "pip install -e '.[train]'"


def missing_modules() -> list[str]:
  """The train extra's import names that cannot be imported here."""
  return [name for name in MODULES if importlib.util.find_spec(name) is None]


def _check() -> None:
  missing = missing_modules()
  if not missing:
    return
  message = (f"gca_jax's trainer, data, configs and command lines need the train extra "
             f"(missing: {', '.join(missing)}); install it from the repository root "
             f"with: {INSTALL}")
  spec = getattr(sys.modules.get("__main__"), "__spec__", None)
  if spec is not None and spec.name.startswith("gca_jax."):  # python -m gca_jax.<command>
    from gca_jax.cli import fail  # pylint: disable=g-import-not-at-top
    fail(message)
  raise ModuleNotFoundError(message)


_check()
