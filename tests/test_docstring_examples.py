"""Every ``Examples:`` doctest in the ``gca_jax`` package runs and holds.

The modules are found by walking the package, so examples added to any
module are executed here; a module without examples passes. Functions built
by a factory (the public losses) name their declaring module in
``__module__``; their examples run with that module.
"""

import doctest
import importlib
import inspect
import pkgutil

import pytest

import gca_jax

MODULES = sorted(
    info.name for info in pkgutil.walk_packages(gca_jax.__path__, "gca_jax."))
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def _examples(module):
  finder = doctest.DocTestFinder()
  tests = finder.find(module)
  for attribute, value in sorted(vars(module).items()):
    # doctest skips functions defined in another module's namespace.
    if (inspect.isfunction(value) and value.__module__ == module.__name__
        and value.__globals__ is not vars(module)):
      tests += finder.find(value, f"{module.__name__}.{attribute}", module=False,
                           globs=dict(vars(module)))
  return [test for test in tests if test.examples]


@pytest.mark.parametrize("name", MODULES)
@pytest.mark.slow
def test_docstring_examples(name):
  runner = doctest.DocTestRunner(optionflags=FLAGS, verbose=False)
  for test in _examples(importlib.import_module(name)):
    runner.run(test)
  result = runner.summarize(verbose=False)
  assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}"


def test_the_public_losses_have_examples():
  from gca_jax.losses import contrastive
  named = {test.name.rsplit(".", 1)[-1] for test in _examples(contrastive)}
  assert {"gca_loss", "infonce", "gca_uot", "iot_uni", "byol"} <= named
