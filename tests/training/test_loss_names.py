"""The names ``config.loss`` takes: every method of the README's table, by its
paper name or its function's, and one-line errors that list them all or
point a temperature to ``eps`` as the Python API does."""

import re

import jax.numpy as jnp
import pytest

import gca_jax
from gca_jax import training
from gca_jax.losses import CONTRASTIVE_LOSSES
from gca_jax.training import config as config_lib
from gca_jax.training import objectives
from tests.conftest import one_line_error, run_module
from tests.test_docs import method_table

SMALL = "--config=gca_jax/training/config.py:small"


def _table_names():
  """(name a user types, the function it must select) for every row: the
  method's paper name as written, lower-cased, and the function's name."""
  for label, (function, _, _) in method_table().items():
    for name in (label, label.lower(), function):
      yield name, function


@pytest.mark.parametrize("name,function", sorted(set(_table_names())))
def test_every_name_of_the_method_table_selects_its_function(name, function):
  assert objectives.canonical_loss(name) == function
  config = config_lib.get_config("small")
  config.loss = name
  objective = training.validate(config, 1)  # builds and traces the objective
  if function in objectives.PREDICTOR_LOSSES:
    assert type(objective).__name__.lower() == function
  else:
    assert objective.name == function
  assert config.loss == name  # the config keeps what the user wrote


def test_simclr_is_infonce():
  z1, z2 = jnp.eye(4, 8), jnp.eye(4, 8)[::-1]
  config = config_lib.get_config("small")
  config.loss = "simclr"
  loss_fn = objectives.make_loss_fn(config, {"eps": 0.5})
  assert float(loss_fn(z1, z2)[0]) == float(gca_jax.infonce(z1, z2, eps=0.5))


def test_the_unknown_loss_error_lists_every_name():
  config = config_lib.get_config("small")
  config.loss = "no_such_loss"
  with pytest.raises(training.ConfigError) as error:
    training.validate(config, 1)
  message = str(error.value)
  assert "\n" not in message
  for name in (*CONTRASTIVE_LOSSES, "byol", "simsiam", *objectives.METHOD_ALIASES):
    assert name in message, name
  assert "reference/<preset>" in message


@pytest.mark.slow
def test_command_line_takes_method_names_and_lists_them_all(tmp_path):
  # SimCLR is accepted (the run then stops at the next check: epochs).
  accepted = run_module("gca_jax.pretrain", f"--workdir={tmp_path}", SMALL,
                        "--config.loss=SimCLR", "--config.epochs=0")
  assert "config.epochs must be" in one_line_error(accepted)
  unknown = one_line_error(run_module("gca_jax.pretrain", f"--workdir={tmp_path}", SMALL,
                                      "--config.loss=simclr2"))
  assert "simsiam" in unknown and "simclr" in unknown and "byol" in unknown


def _python_hint() -> str:
  with pytest.raises(TypeError) as error:
    gca_jax.infonce(jnp.eye(4), jnp.eye(4), temperature=0.1)  # pylint: disable=unexpected-keyword-arg
  return re.search(r" \(([^()]*)\);", str(error.value))[1]  # the hint in parentheses


@pytest.mark.slow
@pytest.mark.parametrize("config_first", [False, True])
def test_loss_params_temperature_gets_the_python_apis_eps_pointer(tmp_path, config_first):
  hint = _python_hint()
  assert hint == "use eps for temperature: eps is the temperature"
  flags = ["--config.loss_params.temperature=0.1"]
  flags = ["--config=cifar10", *flags] if config_first else flags
  line = one_line_error(run_module("gca_jax.pretrain", f"--workdir={tmp_path / 'run'}",
                                   *flags))
  assert hint in line and "config.loss_params has no field 'temperature'" in line, line
  assert not (tmp_path / "run").exists()


def test_a_loss_that_does_not_take_a_parameter_gets_the_same_pointer():
  assert objectives.keyword_hint("tau", ("eps", "iters")) == (
      "; use eps for tau: eps is the temperature")
  assert objectives.keyword_hint("iter", ("eps", "iters")) == "; did you mean iters for iter?"
  assert objectives.keyword_hint("zzz", ("eps",)) == ""
