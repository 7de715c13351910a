r"""Throughput of the pre-training step: images/s, model FLOP/s, fraction of peak.

    python experiments/benchmarks/train_step.py             # paper setting
    python experiments/benchmarks/train_step.py --quick     # small, for a CPU

The paper setting is ResNet-18 (CIFAR stem), 2048-128 projector, a global
batch of 512 pairs of 32x32 views and the gca_uot loss, data-parallel over
every device. The timed step is the full jitted step: batch gather from the
device-resident split, augmentation of both views, forward, loss with its
Sinkhorn plan, backward, SGD update.

Model FLOPs are counted analytically (`gca_jax.models.resnet_flops_per_example`;
XLA's cost analysis does not see inside cuDNN convolutions): forward FLOPs of
both views times 3 for forward + backward. Augmentation and the loss are not
counted. "images/s" counts examples (pairs of views) per second.
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from gca_jax import configs, evaluation, models, optimizers, train

# Dense peak FLOP/s per device (vendor spec sheets), by compute dtype.
PEAK_FLOPS = {
    "H200": {"bfloat16": 989e12, "float32": 67e12},
    "H100": {"bfloat16": 989e12, "float32": 67e12},   # SXM
    "A100": {"bfloat16": 312e12, "float32": 19.5e12},
    "V100": {"bfloat16": 125e12, "float32": 15.7e12},  # fp16 tensor cores
    "L4": {"bfloat16": 121e12, "float32": 30e12},
    "TPU v4": {"bfloat16": 275e12},
    "TPU v5 lite": {"bfloat16": 197e12},
    "TPU v5p": {"bfloat16": 459e12},
    "TPU v6 lite": {"bfloat16": 918e12},
}


def peak_flops(device_kind: str, dtype: str) -> float | None:
  """The table's peak for ``device_kind`` (substring match), or None (e.g. CPU)."""
  for kind, peaks in PEAK_FLOPS.items():
    if kind.lower() in device_kind.lower():
      return peaks.get(dtype)
  return None


def parse_args():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--batch", type=int, default=512, help="global pairs per step")
  parser.add_argument("--image_size", type=int, default=32)
  parser.add_argument("--model", default="resnet18")
  parser.add_argument("--loss", default="gca_uot")
  parser.add_argument("--dtype", default=None,
                      help="compute dtype (default: float32 on CPU, else bfloat16)")
  parser.add_argument("--steps", type=int, default=20, help="timed steps")
  parser.add_argument("--quick", action="store_true",
                      help="CPU-sized: batch 32, 3 timed steps")
  return parser.parse_args()


def main():
  args = parse_args()
  if args.quick:
    args.batch, args.steps = 32, 3
  dtype = args.dtype or ("float32" if jax.default_backend() == "cpu" else "bfloat16")
  config = configs.paper_cifar_config("synthetic")
  config.model.name, config.model.dtype = args.model, dtype
  config.loss, config.batch_size = args.loss, args.batch

  num_train = 4 * args.batch
  images = np.random.default_rng(0).integers(
      0, 256, (num_train, args.image_size, args.image_size, 3), np.uint8)
  mesh = train.make_mesh()
  train.validate_config(config, mesh.devices.size)
  model, target = train.create_models(config)
  steps_per_epoch = num_train // args.batch
  tx = optimizers.make_optimizer(config, steps_per_epoch)
  schedule = optimizers.make_schedule(config, steps_per_epoch)
  state = train.create_train_state(config, model, tx, images.shape[1:], mesh)
  step = train.make_train_step(config, model=model, target_model=target, tx=tx,
                               schedule=schedule, mesh=mesh, mean=(0.5,) * 3,
                               std=(0.25,) * 3, num_train=num_train,
                               steps_per_epoch=steps_per_epoch).on_split
  split = evaluation.global_array(images, NamedSharding(mesh, P()))

  for _ in range(2):  # compile and warm up
    state, metrics = step(state, split)
  jax.block_until_ready(metrics)
  start = time.perf_counter()
  for _ in range(args.steps):
    state, metrics = step(state, split)
  jax.block_until_ready(metrics)
  seconds_per_step = (time.perf_counter() - start) / args.steps

  forward = models.resnet_flops_per_example(
      args.model, image_size=args.image_size, stem=config.model.stem,
      projector_hidden_dim=config.model.projector_hidden_dim,
      projection_dim=config.model.projection_dim)
  step_flops = 3 * 2 * args.batch * forward  # (fwd + bwd) x two views
  achieved = step_flops / seconds_per_step
  device = jax.devices()[0]
  peak = peak_flops(device.device_kind, dtype)
  num_devices = mesh.devices.size
  fraction = (f"{achieved / (peak * num_devices):.1%}" if peak
              else "unknown (no peak for this device kind)")
  print(f"device            {num_devices} x {device.device_kind} ({jax.default_backend()})")
  print(f"setting           {args.model} CIFAR stem, {args.image_size}x{args.image_size}, "
        f"batch {args.batch} pairs, loss {args.loss}, {dtype}")
  print(f"step time         {seconds_per_step * 1e3:.1f} ms")
  print(f"images/s          {args.batch / seconds_per_step:.1f}")
  print(f"model FLOPs/step  {step_flops / 1e9:.1f} GFLOP "
        f"({forward / 1e6:.1f} MFLOP forward per view)")
  print(f"achieved          {achieved / 1e12:.3f} TFLOP/s")
  print(f"fraction of peak  {fraction}")
  print(f"final loss        {float(metrics['loss']):.4f}")


if __name__ == "__main__":
  main()
