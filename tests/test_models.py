"""Model shapes, dtypes, the paper's projector and the analytic FLOP count."""

import jax
import jax.numpy as jnp
import ml_collections
import pytest

from gca_jax import models


def _shapes(model, image_size):
  return jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0),
                                           jnp.zeros((2, image_size, image_size, 3)),
                                           train=False))


@pytest.mark.parametrize("name,stem,size", [("resnet18", "cifar", 32),
                                            ("resnet50", "imagenet", 64),
                                            ("resnet_small", "cifar", 16)])
@pytest.mark.slow
def test_encoder_feature_dims_and_float32_params(name, stem, size):
  encoder = models.make_encoder(name, stem=stem, dtype=jnp.bfloat16)
  variables = _shapes(encoder, size)
  out = jax.eval_shape(lambda v: encoder.apply(v, jnp.zeros((2, size, size, 3)),
                                               train=False), variables)
  assert out.shape == (2, models.encoder_feature_dim(name))
  assert out.dtype == jnp.float32
  for leaf in jax.tree.leaves(variables):
    assert leaf.dtype == jnp.float32


def test_cifar_stem_keeps_resolution_imagenet_stem_quarters_it():
  cifar = _shapes(models.make_encoder("resnet18", stem="cifar"), 32)
  imagenet = _shapes(models.make_encoder("resnet18", stem="imagenet"), 32)
  assert cifar["params"]["conv_init"]["kernel"].shape == (3, 3, 3, 64)
  assert imagenet["params"]["conv_init"]["kernel"].shape == (7, 7, 3, 64)


def test_paper_projector_and_byol_target_subtree():
  config = ml_collections.ConfigDict(dict(
      name="resnet_small", stem="cifar", width=0, dtype="float32",
      projector_hidden_dim=2048, projection_dim=128, predictor_hidden_dim=64))
  model = models.create_model(config, with_predictor=True)
  params = _shapes(model, 16)["params"]
  first, second = params["projector"]["Dense_0"], params["projector"]["Dense_1"]
  assert set(first) == {"kernel"} and first["kernel"].shape == (64, 2048)
  assert second["kernel"].shape == (2048, 128) and "bias" in second
  assert set(models.target_subtree(params)) == {"encoder", "projector"}


def test_analytic_flops_match_published_counts():
  # torchvision: ResNet-18 1.82 GMACs, ResNet-50 4.11 GMACs at 224x224.
  for name, gmacs in (("resnet18", 1.82), ("resnet50", 4.11)):
    flops = models.resnet_flops_per_example(name, image_size=224, stem="imagenet",
                                            projector_hidden_dim=0)
    assert abs(flops / 2e9 - gmacs) / gmacs < 0.03, (name, flops)
