"""Every ``Examples:`` doctest in the ``gca_jax`` package runs and holds.

The modules are found by walking the package, so examples added to any
module are executed here; a module without examples passes.
"""

import doctest
import importlib
import pkgutil

import pytest

import gca_jax

MODULES = sorted(
    info.name for info in pkgutil.walk_packages(gca_jax.__path__, "gca_jax."))


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
  module = importlib.import_module(name)
  result = doctest.testmod(
      module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE,
      verbose=False, report=False)
  assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}"
