"""The packaged dataset configs (`gca_jax.configs`) and their names on the command line."""

import doctest
import importlib.util

import pytest

from gca_jax import configs, theorems
from gca_jax.training import config as config_lib
from tests.conftest import REPO_ROOT, one_line_error, run_module


@pytest.mark.parametrize("module", [configs, theorems], ids=lambda m: m.__name__)
def test_doctests(module):
  runner = doctest.DocTestRunner()
  tests = doctest.DocTestFinder().find(module)
  assert sum(len(test.examples) for test in tests) > 0
  for test in tests:
    runner.run(test)
  assert runner.summarize(verbose=False).failed == 0


def test_every_dataset_has_a_packaged_config():
  # One config per dataset, plus the SimSiam recipe (a method's preset).
  assert set(configs.NAMES) == {"cifar10", "cifar100", "digits", "imagenet100", "pacs", "svhn",
                                "simsiam_cifar10"}


@pytest.mark.parametrize("name", configs.NAMES)
def test_checkout_path_gives_the_packaged_config(name):
  spec = importlib.util.spec_from_file_location(
      f"checkout_{name}", REPO_ROOT / "experiments" / "configs" / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  for variant in (None, config_lib.SMALL):
    assert module.get_config(variant).to_dict() == configs.get_config(name, variant).to_dict()


@pytest.mark.parametrize("name", configs.NAMES)
def test_small_variant_is_a_short_digits_run(name):
  config = configs.get_config(name, "small")
  assert (config.dataset, config.epochs, config.model.name) == ("digits", 1, "resnet_small")
  assert config.loss == configs.get_config(name).loss


def test_resolve_maps_a_name_to_its_file_and_keeps_paths():
  assert configs.resolve("pacs") == str(configs.CONFIG_DIR / "pacs.py")
  assert configs.resolve("svhn:small") == f"{configs.CONFIG_DIR / 'svhn.py'}:small"
  for path in ("my.py", "my.py:small", "sub/dir/config", "./cifar10"):
    assert configs.resolve(path) == path


def test_an_unknown_name_is_refused_with_the_names():
  with pytest.raises(ValueError, match="unknown config 'cifar11'; the packaged configs "
                     "are cifar10, cifar100, digits"):
    configs.resolve("cifar11:small")
  with pytest.raises(ValueError, match="unknown config 'nope'"):
    configs.get_config("nope")


def test_pretrain_refuses_an_unknown_config_name_in_one_line(tmp_path):
  error = one_line_error(run_module("gca_jax.pretrain", "--config=cifar11:small",
                                    f"--workdir={tmp_path}"))
  assert "--config=cifar11:small" in error and "cifar10, cifar100" in error


@pytest.mark.slow
def test_pretrain_reads_a_named_config(tmp_path):
  # The default config trains on digits: an error about svhn's data means the
  # name was resolved to the packaged svhn config and loaded.
  error = one_line_error(run_module("gca_jax.pretrain", "--config=svhn",
                                    "--config.data_dir=/nonexistent/tfds",
                                    f"--workdir={tmp_path}"))
  assert "svhn" in error
