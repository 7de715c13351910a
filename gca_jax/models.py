"""Flax (linen) models for contrastive pre-training.

* `ResNet` with basic (ResNet-18) or bottleneck (ResNet-50) blocks and either
  the CIFAR stem (3x3 conv, stride 1, no max-pool; what the paper's code uses)
  or the ImageNet stem (7x7 conv, stride 2, 3x3 max-pool).
* `Projector`: Linear(hidden, no bias) -> ReLU -> Linear(projection_dim), the
  head of the paper's published code (hidden 2048, projection 128).
* `Predictor`: BYOL's MLP (Linear -> BN -> ReLU -> Linear).
* `ContrastiveModel`: encoder + projector (+ predictor for BYOL). The EMA target
  network of BYOL is the same module without a predictor, so its parameters
  are the ``encoder``/``projector`` subtrees of the online network
  (see `ema_update`).

Convolutions and dense layers compute in ``dtype`` (bfloat16 on accelerators);
parameters and batch statistics stay float32, batch-norm reductions run in
float32, and every output (features, projections) is cast back to float32
so the losses (Sinkhorn iterations) run in full precision.

Batch norm takes ``bn_axis_name``: inside a `jax.shard_map` over the data axis
the statistics are averaged over all devices (synchronised BN, as in the
paper's multi-GPU training). Outside a mapped context (init, evaluation with
running averages) the axis name is not used.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

ModuleDef = Any

# torchvision's ResNet initialisation: He normal, fan-out.
conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")

# The parameters' entry of the predictor head (the `ContrastiveModel` field).
PREDICTOR = "predictor"


class ResNetBlock(nn.Module):
  """Basic residual block (two 3x3 convs), used by ResNet-18/34."""

  filters: int
  conv: ModuleDef
  norm: ModuleDef
  strides: int = 1

  @nn.compact
  def __call__(self, x):
    residual = x
    y = self.conv(self.filters, (3, 3), (self.strides, self.strides))(x)
    y = nn.relu(self.norm()(y))
    y = self.conv(self.filters, (3, 3))(y)
    # Zero-init of the last BN scale makes each block start as the identity.
    y = self.norm(scale_init=nn.initializers.zeros)(y)
    if residual.shape != y.shape:
      residual = self.conv(self.filters, (1, 1), (self.strides, self.strides),
                           name="conv_proj")(residual)
      residual = self.norm(name="norm_proj")(residual)
    return nn.relu(residual + y)


class BottleneckResNetBlock(nn.Module):
  """Bottleneck block (1x1, 3x3, 1x1 with 4x expansion), used by ResNet-50."""

  filters: int
  conv: ModuleDef
  norm: ModuleDef
  strides: int = 1

  @nn.compact
  def __call__(self, x):
    residual = x
    y = nn.relu(self.norm()(self.conv(self.filters, (1, 1))(x)))
    y = self.conv(self.filters, (3, 3), (self.strides, self.strides))(y)
    y = nn.relu(self.norm()(y))
    y = self.conv(self.filters * 4, (1, 1))(y)
    y = self.norm(scale_init=nn.initializers.zeros)(y)
    if residual.shape != y.shape:
      residual = self.conv(self.filters * 4, (1, 1),
                           (self.strides, self.strides), name="conv_proj")(residual)
      residual = self.norm(name="norm_proj")(residual)
    return nn.relu(residual + y)


class ResNet(nn.Module):
  """ResNet encoder returning globally pooled features (no classifier head).

  Attributes:
    stage_sizes: number of blocks per stage.
    block_cls: `ResNetBlock` or `BottleneckResNetBlock`.
    width: channels of the first stage (64 for the standard nets; smaller for
      the CPU-sized variant); stage i has ``width * 2**i`` channels.
    stem: "cifar" (3x3 conv stride 1, no max-pool) or "imagenet".
    dtype: computation dtype.
    bn_axis_name: mapped axis over which batch statistics are averaged.
    bn_momentum: running-average momentum (0.9 = PyTorch's 0.1).
  """

  stage_sizes: Sequence[int]
  block_cls: ModuleDef
  width: int = 64
  stem: str = "cifar"
  dtype: Any = jnp.float32
  bn_axis_name: str | None = None
  bn_momentum: float = 0.9

  @nn.compact
  def __call__(self, x, train: bool = True):
    conv = functools.partial(nn.Conv, use_bias=False, dtype=self.dtype,
                             kernel_init=conv_init)
    norm = functools.partial(nn.BatchNorm, use_running_average=not train,
                             momentum=self.bn_momentum, epsilon=1e-5,
                             dtype=self.dtype, axis_name=self.bn_axis_name)
    x = x.astype(self.dtype)
    if self.stem == "cifar":
      x = conv(self.width, (3, 3), name="conv_init")(x)
      x = nn.relu(norm(name="bn_init")(x))
    elif self.stem == "imagenet":
      x = conv(self.width, (7, 7), (2, 2), padding=[(3, 3), (3, 3)],
               name="conv_init")(x)
      x = nn.relu(norm(name="bn_init")(x))
      x = nn.max_pool(x, (3, 3), strides=(2, 2), padding="SAME")
    else:
      raise ValueError(f"unknown stem {self.stem!r} (use 'cifar' or 'imagenet')")
    for i, num_blocks in enumerate(self.stage_sizes):
      for j in range(num_blocks):
        strides = 2 if i > 0 and j == 0 else 1
        x = self.block_cls(self.width * 2**i, conv=conv, norm=norm,
                           strides=strides)(x)
    return jnp.mean(x, axis=(1, 2)).astype(jnp.float32)


class Projector(nn.Module):
  """The paper's projection head: Linear(hidden, no bias) -> ReLU -> Linear."""

  hidden_dim: int = 2048
  projection_dim: int = 128
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, h):
    h = nn.Dense(self.hidden_dim, use_bias=False, dtype=self.dtype)(h)
    h = nn.relu(h)
    return nn.Dense(self.projection_dim, dtype=self.dtype)(h).astype(jnp.float32)


class Predictor(nn.Module):
  """BYOL's and SimSiam's predictor: Linear -> BN -> ReLU -> Linear (back to
  the projection dim); SimSiam makes it a bottleneck (hidden = dim / 4)."""

  hidden_dim: int = 2048
  projection_dim: int = 128
  dtype: Any = jnp.float32
  bn_axis_name: str | None = None

  @nn.compact
  def __call__(self, z, train: bool = True):
    z = nn.Dense(self.hidden_dim, dtype=self.dtype)(z)
    z = nn.BatchNorm(use_running_average=not train, momentum=0.9,
                     dtype=self.dtype, axis_name=self.bn_axis_name)(z)
    z = nn.relu(z)
    return nn.Dense(self.projection_dim, dtype=self.dtype)(z).astype(jnp.float32)


class ModelOutput(NamedTuple):
  features: jax.Array     # encoder output h (used by kNN and linear probe)
  projection: jax.Array   # projector output z (the loss's input)
  prediction: jax.Array | None  # BYOL/SimSiam predictor output, else None


class ContrastiveModel(nn.Module):
  """Encoder + projector (+ BYOL/SimSiam predictor)."""

  encoder: nn.Module
  projector: nn.Module
  predictor: nn.Module | None = None

  def __call__(self, x, train: bool = True) -> ModelOutput:
    h = self.encoder(x, train=train)
    z = self.projector(h)
    p = self.predictor(z, train=train) if self.predictor is not None else None
    return ModelOutput(h, z, p)


_ARCHITECTURES = {
    # name: (stage sizes, block, default width)
    "resnet18": ((2, 2, 2, 2), ResNetBlock, 64),
    "resnet34": ((3, 4, 6, 3), ResNetBlock, 64),
    "resnet50": ((3, 4, 6, 3), BottleneckResNetBlock, 64),
    # Width- and depth-reduced ResNet for the embedded CPU default.
    "resnet_small": ((1, 1, 1), ResNetBlock, 16),
}


STEMS = ("cifar", "imagenet")


def encoder_feature_dim(name: str, width: int | None = None) -> int:
  """Dimension of the pooled encoder features of architecture ``name``."""
  stages, block, default_width = _ARCHITECTURES[name]
  expansion = 4 if block is BottleneckResNetBlock else 1
  return (width or default_width) * 2 ** (len(stages) - 1) * expansion


def make_encoder(name: str, *, stem: str = "cifar", width: int | None = None,
                 dtype: Any = jnp.float32, bn_axis_name: str | None = None) -> ResNet:
  if name not in _ARCHITECTURES:
    raise ValueError(f"unknown model {name!r}; choose from {sorted(_ARCHITECTURES)}")
  if stem not in STEMS:
    raise ValueError(f"unknown stem {stem!r}; choose from {STEMS}")
  stages, block, default_width = _ARCHITECTURES[name]
  return ResNet(stage_sizes=stages, block_cls=block, width=width or default_width,
                stem=stem, dtype=dtype, bn_axis_name=bn_axis_name)


def create_model(model_config, *, with_predictor: bool = False,
                 bn_axis_name: str | None = None,
                 predictor_hidden_dim: int | None = None) -> ContrastiveModel:
  """Builds the model described by ``config.model`` (see experiments/configs).

  ``predictor_hidden_dim``: the predictor's hidden width, instead of
  ``config.model.predictor_hidden_dim`` (SimSiam's bottleneck is a quarter of
  the projection dimension)."""
  dtype = jnp.dtype(model_config.dtype)
  encoder = make_encoder(model_config.name, stem=model_config.stem,
                         width=model_config.get("width") or None, dtype=dtype,
                         bn_axis_name=bn_axis_name)
  projector = Projector(model_config.projector_hidden_dim,
                        model_config.projection_dim, dtype=dtype)
  predictor = None
  if with_predictor:
    predictor = Predictor(predictor_hidden_dim or model_config.predictor_hidden_dim,
                          model_config.projection_dim, dtype=dtype,
                          bn_axis_name=bn_axis_name)
  return ContrastiveModel(encoder, projector, predictor)


def target_subtree(online_tree):
  """The part of the online network's variables the EMA target mirrors."""
  return {k: v for k, v in online_tree.items() if k != PREDICTOR}


def ema_update(target, online, decay: float | jax.Array):
  """target <- decay * target + (1 - decay) * online (BYOL's target update)."""
  return jax.tree.map(lambda t, o: decay * t + (1.0 - decay) * o,
                      target, target_subtree(online))


def resnet_flops_per_example(name: str, *, image_size: int, stem: str = "cifar",
                             width: int | None = None, projector_hidden_dim: int = 2048,
                             projection_dim: int = 128, channels: int = 3) -> float:
  """Analytic forward FLOPs (2 * multiply-adds) of conv and dense layers.

  Counted by hand because XLA's cost analysis does not see inside cuDNN
  convolution custom calls. Batch norm, ReLU and pooling are ignored (<1%).
  """
  stages, block, default_width = _ARCHITECTURES[name]
  width = width or default_width
  flops = 0.0

  def conv(hw, k, cin, cout):
    return 2.0 * hw * hw * k * k * cin * cout

  if stem == "cifar":
    hw = image_size
    flops += conv(hw, 3, channels, width)
  else:
    hw = -(-image_size // 2)
    flops += conv(hw, 7, channels, width)
    hw = -(-hw // 2)
  cin = width
  for i, num_blocks in enumerate(stages):
    filters = width * 2**i
    for j in range(num_blocks):
      stride = 2 if i > 0 and j == 0 else 1
      out_hw = -(-hw // stride)
      if block is ResNetBlock:
        flops += conv(out_hw, 3, cin, filters) + conv(out_hw, 3, filters, filters)
        cout = filters
      else:
        flops += (conv(hw, 1, cin, filters) + conv(out_hw, 3, filters, filters)
                  + conv(out_hw, 1, filters, 4 * filters))
        cout = 4 * filters
      if stride != 1 or cin != cout:
        flops += conv(out_hw, 1, cin, cout)
      cin, hw = cout, out_hw
  flops += 2.0 * (cin * projector_hidden_dim + projector_hidden_dim * projection_dim)
  return flops
