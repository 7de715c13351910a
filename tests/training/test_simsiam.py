"""SimSiam: no gradient through the stop-gradient branch; it learns on digits."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.conftest import random_images, tiny_config


def test_loss_gives_no_gradient_to_the_projections():
  from gca_jax.losses.simsiam import simsiam
  p1, p2, z1, z2 = jax.random.normal(jax.random.key(0), (4, 6, 5))
  dp1, dp2, dz1, dz2 = jax.grad(lambda *a: simsiam(*a), argnums=(0, 1, 2, 3))(p1, p2, z1, z2)
  np.testing.assert_array_equal(dz1, 0.0)
  np.testing.assert_array_equal(dz2, 0.0)
  assert float(jnp.abs(dp1).max()) > 1e-3 and float(jnp.abs(dp2).max()) > 1e-3


def test_loss_is_a_quarter_of_byol_minus_one():
  from gca_jax.losses import byol
  from gca_jax.losses.simsiam import simsiam
  p1, p2, z1, z2 = jax.random.normal(jax.random.key(1), (4, 8, 3))
  np.testing.assert_allclose(simsiam(p1, p2, z1, z2), byol(p1, p2, z1, z2) / 4 - 1.0,
                             rtol=1e-6, atol=1e-6)


def test_objective_gradient_ignores_the_projection_branch():
  """Through the model: the objective's gradient equals that of the same loss
  with the projections replaced by constants of the same value."""
  from jax.sharding import PartitionSpec as P
  from gca_jax import sharding, training
  from gca_jax.losses.simsiam import simsiam
  from gca_jax.training import objectives
  config = tiny_config(loss="simsiam")
  objective = objectives.make_objective(config)
  assert isinstance(objective, objectives.SimSiam)
  # The bottleneck predictor: hidden = projection_dim / 4.
  run = training.setup(config, _digits_like(config.batch_size))
  state = run.initial_state()
  hidden = state.params["predictor"]["Dense_0"]["kernel"].shape[1]
  assert hidden == config.model.projection_dim // 4
  views = jax.random.uniform(jax.random.key(2), (2, config.batch_size, 8, 8, 3))
  apply = lambda params: objective.model.apply(
      {"params": params, "batch_stats": state.batch_stats},
      jnp.concatenate([views[0], views[1]]), train=True, mutable=["batch_stats"])[0]

  def full(params):  # the objective itself, as the train step differentiates it
    return objective.loss(params, state, views[0], views[1], None, lambda x: x)[0]

  def projections_constant(params, z):
    p1, p2 = jnp.split(apply(params).prediction, 2)
    return simsiam(p1, p2, *jnp.split(z, 2))

  def grads(params):
    z = apply(params).projection
    return jax.grad(full)(params), jax.grad(projections_constant)(params, z)

  # The model's synchronised batch norm needs its mesh axis bound.
  mesh = sharding.make_mesh(jax.devices()[:1])
  got, want = jax.jit(jax.shard_map(grads, mesh=mesh, in_specs=P(), out_specs=P(),
                                    check_vma=False))(state.params)
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
  # ... and the gradient reaches the encoder (only) through the predictor.
  assert max(float(jnp.abs(g).max()) for g in jax.tree.leaves(got["encoder"])) > 0


def _digits_like(n):
  from tests.conftest import random_dataset
  return random_dataset(random_images(n))


def test_simsiam_refuses_a_target_plan_and_the_sharded_scope():
  from gca_jax.training import ConfigError, objectives
  with pytest.raises(ConfigError, match="takes no target plan"):
    objectives.make_objective(tiny_config(loss="simsiam", target="class"))
  with pytest.raises(ConfigError, match="has no sharded form"):
    objectives.make_objective(tiny_config(loss="simsiam", loss_scope="sharded"))


def test_paper_preset_is_the_published_recipe():
  from gca_jax.training import config as config_lib
  config = config_lib.paper_simsiam_config("cifar10")
  config_lib.check_fields(config)
  assert (config.loss, config.optimizer, config.momentum) == ("simsiam", "sgd", 0.9)
  assert (config.learning_rate, config.lr_scaling) == (0.03, "linear")
  assert (config.weight_decay, config.batch_size) == (5e-4, 512)
  assert config.nesterov is False and config.warmup_epochs == 0.0


@pytest.mark.slow
def test_trains_on_digits_without_collapse_and_beats_random_init(tmp_path):
  from gca_jax import training
  from gca_jax.training import feeds
  config = tiny_config(loss="simsiam", epochs=6, learning_rate=0.05, linear_probe=True,
                       linear_probe_steps=200, probe_random_init=True)
  dataset = feeds.load_data(config)
  metrics = training.train_and_evaluate(config, tmp_path, dataset=dataset).metrics
  assert metrics["linear_probe_acc"] > metrics["random_init_linear_probe_acc"], metrics
  trained = training.load_trained(tmp_path)
  _, z = trained.run.embed_fn(trained.state.variables, dataset.test.images[:256])
  z = np.asarray(z)
  z = z / np.linalg.norm(z, axis=1, keepdims=True)
  dim = z.shape[1]
  # A collapsed SimSiam maps everything to one point (std 0); a spread one
  # has per-dimension std near 1/sqrt(dim).
  assert z.std(axis=0).mean() > 0.1 / np.sqrt(dim), z.std(axis=0)


def test_fixed_predictor_lr_trains_the_real_model():
  """SimSiam's option on the model's own parameter tree: a step runs, the
  predictor's labels are the only fixed ones, and every part moves."""
  from gca_jax import sharding, training
  from gca_jax.training import optimizers
  config = tiny_config(loss="simsiam", predictor_fixed_lr=True)
  images = random_images(config.batch_size)
  mesh = sharding.make_mesh(jax.devices()[:1])
  run = training.setup(config, _digits_like(config.batch_size), mesh)
  state = run.initial_state()
  labels = optimizers._predictor_labels(state.params)  # pylint: disable=protected-access
  assert set(jax.tree.leaves(labels["predictor"])) == {"fixed"}
  assert {v for k, tree in labels.items() if k != "predictor"
          for v in jax.tree.leaves(tree)} == {"scheduled"}
  batch = {"image": sharding.global_array(images, sharding.replicated(mesh))}
  before = jax.tree.map(np.asarray, state.params)  # the step donates its state
  new_state, metrics = run.train_step(state, batch)
  assert np.isfinite(float(metrics["loss"]))
  for part in before:
    moved = max(float(np.abs(np.asarray(a) - b).max()) for a, b in zip(
        jax.tree.leaves(new_state.params[part]), jax.tree.leaves(before[part])))
    assert moved > 0, part
