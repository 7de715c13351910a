"""Shared test helpers."""

import contextlib
import pathlib

import jax
import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
# The shared data folder sits beside a checkout; a plain clone has none.
SHARED_DIR = REPO_ROOT.parent / "shared"


@contextlib.contextmanager
def _x64():
  previous = jax.config.jax_enable_x64
  jax.config.update("jax_enable_x64", True)
  try:
    yield
  finally:
    jax.config.update("jax_enable_x64", previous)


@pytest.fixture
def x64():
  """Runs a test with float64 enabled, restoring the setting afterwards."""
  with _x64():
    yield


def _shared(*parts) -> pathlib.Path:
  return SHARED_DIR.joinpath(*parts)


def shared_path(*parts) -> pathlib.Path:
  """A path under the shared folder, or a clean skip when it is absent."""
  path = _shared(*parts)
  if not path.exists():
    pytest.skip(f"{path.name} is not available beside this checkout")
  return path


shared_path.__wrapped__ = _shared  # the path without the skip, for collection
