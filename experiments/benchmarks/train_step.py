r"""The pre-training step: images/s, model FLOP/s, fraction of peak, peak memory.

    python -m experiments.benchmarks.train_step             # paper setting
    python -m experiments.benchmarks.train_step --quick     # small, for a CPU
    python -m experiments.benchmarks.train_step --memory_only   # compile only

The paper setting is ResNet-18 (CIFAR stem), 2048-128 projector, bfloat16
compute, a global batch of 512 pairs of 32x32 views and the gca_uot loss,
data-parallel over every device. The timed step is what training runs:
`gca_jax.training.setup(config, dataset).train_step` (augmentation of both
views, forward, loss with its Sinkhorn plan, backward, SGD update) on the
batches of `gca_jax.training.feeds` (a gather from the device-resident
split), one feed call and one step call per step as in the training loop.

Memory: the same step for the paper setting (``--memory_batch`` pairs,
bfloat16) on one device is lowered and compiled, not run, and XLA's memory
analysis of the compiled program gives its peak: temporaries + arguments +
outputs (an upper bound: the donated state's outputs reuse its argument
buffers, the ``alias`` bytes). It is the analysis of the compiler of the
backend at hand (the CPU's buffer assignment on a CPU, which differs from a
GPU's). On a device that reports memory statistics the measured peak of the
timed steps is printed too.

Model FLOPs are counted analytically (`gca_jax.models.resnet_flops_per_example`;
XLA's cost analysis does not see inside cuDNN convolutions): forward FLOPs of
both views times 3 for forward + backward. Augmentation and the loss are not
counted. "images/s" counts examples (pairs of views) per second.
"""

from __future__ import annotations

import time

import jax
import numpy as np
from absl import flags

from experiments import entry
from gca_jax import data, models, sharding, training
from gca_jax.training import config as config_lib, feeds

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
PAPER_BATCH = 512
DEVICE_BYTES_80GB = 80e9  # an 80 GB accelerator (H100 80GB, A100 80GB)
GIB = 2 ** 30


def peak_flops(device_kind: str, dtype: str) -> float | None:
  """The table's peak for ``device_kind`` (substring match), or None (e.g. CPU)."""
  for kind, peaks in PEAK_FLOPS.items():
    if kind.lower() in device_kind.lower():
      return peaks.get(dtype)
  return None


def make_config(*, model: str = "resnet18", loss: str = "gca_uot",
                dtype: str = "bfloat16", batch_size: int = PAPER_BATCH):
  """The paper's CIFAR config (`config_lib.paper_cifar_config`) with these settings."""
  config = config_lib.paper_cifar_config("synthetic")
  config.update_from_flattened_dict({"model.name": model, "model.dtype": dtype,
                                     "loss": loss, "batch_size": batch_size})
  return config


def synthetic_dataset(num_examples: int, image_size: int = 32, seed: int = 0):
  """Random uint8 images (train = test), CIFAR-like statistics."""
  images = np.random.default_rng(seed).integers(
      0, 256, (num_examples, image_size, image_size, 3), np.uint8)
  split = data.ImageArrays(images, np.zeros(num_examples, np.int32))
  return data.Dataset(train=split, test=split, num_classes=10, name="synthetic",
                      mean=(0.5,) * 3, std=(0.25,) * 3)


def measure_step(config, dataset, *, steps: int, mesh=None) -> dict:
  """Seconds per step and images/s of ``steps`` training steps after two
  warm-up (compiling) steps, fed as the training loop feeds them."""
  run = training.setup(config, dataset, mesh)
  state = run.initial_state()
  feed = feeds.make_feed(run, start_step=0)
  try:
    for step in range(2):  # compile and warm up
      state, metrics = run.train_step(state, feed.batch(step))
    jax.block_until_ready(metrics)
    start = time.perf_counter()
    for step in range(2, 2 + steps):
      state, metrics = run.train_step(state, feed.batch(step))
    jax.block_until_ready(metrics)
    seconds = (time.perf_counter() - start) / steps
  finally:
    feed.close()
  device_stats = jax.devices()[0].memory_stats() or {}
  return {"seconds_per_step": seconds, "images_per_second": config.batch_size / seconds,
          "final_loss": float(metrics["loss"]), "devices": run.mesh.devices.size,
          "measured_peak_bytes": device_stats.get("peak_bytes_in_use")}


def step_memory(config, dataset, *, device=None) -> dict:
  """XLA's memory analysis of the train step of ``config`` compiled for one
  device (``device``, default the first); the step is compiled, never run."""
  mesh = sharding.make_mesh([device or jax.devices()[0]])
  run = training.setup(config, dataset, mesh)
  state = run.initial_state()
  batch = {"image": jax.ShapeDtypeStruct((config.batch_size, *dataset.image_shape),
                                         np.uint8, sharding=sharding.batch_sharded(mesh))}
  start = time.perf_counter()
  compiled = run.train_step.lower(state, batch).compile()
  compile_seconds = time.perf_counter() - start
  analysis = compiled.memory_analysis()
  sizes = {name: int(getattr(analysis, f"{name}_size_in_bytes"))
           for name in ("temp", "argument", "output", "alias", "generated_code")}
  peak = sizes["temp"] + sizes["argument"] + sizes["output"]
  return {"batch_size": config.batch_size, "dtype": config.model.dtype,
          "backend": jax.default_backend(), "device_kind": mesh.devices.flat[0].device_kind,
          "compile_seconds": compile_seconds, **{f"{k}_bytes": v for k, v in sizes.items()},
          "peak_bytes": peak, "fits_80gb": peak < DEVICE_BYTES_80GB,
          "fraction_of_80gb": peak / DEVICE_BYTES_80GB}


def model_flops(config, image_size: int) -> tuple[float, float]:
  """(forward FLOPs per view, model FLOPs of one step: fwd + bwd of both views)."""
  forward = models.resnet_flops_per_example(
      config.model.name, image_size=image_size, stem=config.model.stem,
      width=config.model.width or None,
      projector_hidden_dim=config.model.projector_hidden_dim,
      projection_dim=config.model.projection_dim)
  return forward, 3 * 2 * config.batch_size * forward


def print_throughput(config, result: dict, image_size: int) -> None:
  forward, step_flops = model_flops(config, image_size)
  achieved = step_flops / result["seconds_per_step"]
  device = jax.devices()[0]
  peak = peak_flops(device.device_kind, config.model.dtype)
  num_devices = result["devices"]
  fraction = (f"{achieved / (peak * num_devices):.1%}" if peak
              else "unknown (no peak for this device kind)")
  print(f"device            {num_devices} x {device.device_kind} ({jax.default_backend()})")
  print(f"setting           {config.model.name} CIFAR stem, {image_size}x{image_size}, "
        f"batch {config.batch_size} pairs, loss {config.loss}, {config.model.dtype}")
  print(f"step time         {result['seconds_per_step'] * 1e3:.1f} ms")
  print(f"images/s          {result['images_per_second']:.1f}")
  print(f"model FLOPs/step  {step_flops / 1e9:.1f} GFLOP "
        f"({forward / 1e6:.1f} MFLOP forward per view)")
  print(f"achieved          {achieved / 1e12:.3f} TFLOP/s")
  print(f"fraction of peak  {fraction}")
  print(f"final loss        {result['final_loss']:.4f}")
  if result["measured_peak_bytes"] is not None:
    print(f"measured peak     {result['measured_peak_bytes'] / GIB:.2f} GiB "
          "(device memory statistics, first device)")


def print_memory(config, memory: dict, image_size: int) -> None:
  gib = lambda name: f"{memory[name] / GIB:.2f} GiB"
  print(f"compiled step     {config.model.name}, {image_size}x{image_size}, batch "
        f"{memory['batch_size']} pairs, {memory['dtype']}, one {memory['device_kind']} "
        f"({memory['backend']} compiler, {memory['compile_seconds']:.0f} s to compile)")
  print(f"memory analysis   temp {gib('temp_bytes')} + arguments {gib('argument_bytes')} "
        f"+ outputs {gib('output_bytes')} (of which aliased to arguments "
        f"{gib('alias_bytes')})")
  verdict = "fits" if memory["fits_80gb"] else "does NOT fit"
  print(f"peak              {gib('peak_bytes')}: {verdict} an 80 GB device "
        f"({memory['fraction_of_80gb']:.1%} of it)")


def define_flags(flag_values: flags.FlagValues, argv) -> None:
  del argv  # no --config fields: the flags below are the config's
  define = dict(flag_values=flag_values)
  flags.DEFINE_integer("batch", PAPER_BATCH, "Global pairs per timed step.", lower_bound=1,
                       **define)
  flags.DEFINE_integer("image_size", 32, "Side of the views.", lower_bound=1, **define)
  flags.DEFINE_string("model", "resnet18", "config.model.name.", **define)
  flags.DEFINE_string("loss", "gca_uot", "config.loss.", **define)
  flags.DEFINE_enum("dtype", None, config_lib.DTYPES, "Compute dtype of the timed step "
                    "(default: float32 on CPU, else bfloat16).", **define)
  flags.DEFINE_integer("steps", 20, "Timed steps.", lower_bound=1, **define)
  flags.DEFINE_integer("memory_batch", PAPER_BATCH, "Pairs per step of the compiled-only "
                       "bfloat16 step whose memory is analysed (0: skip).", lower_bound=0,
                       **define)
  flags.DEFINE_bool("memory_only", False, "Only compile the step and print its memory "
                    "analysis.", **define)
  flags.DEFINE_bool("quick", False, "CPU-sized timing: batch 32, 3 timed steps.", **define)


def benchmark(args) -> None:
  """Times the step (unless ``--memory_only``) and analyses its memory."""
  if args.quick:
    args.batch, args.steps = 32, 3
  if args.memory_only and not args.memory_batch:
    raise entry.ExperimentError("--memory_batch must be >= 1 with --memory_only")
  if not args.memory_only:
    dtype = args.dtype or ("float32" if jax.default_backend() == "cpu" else "bfloat16")
    config = make_config(model=args.model, loss=args.loss, dtype=dtype,
                         batch_size=args.batch)
    result = measure_step(config, synthetic_dataset(4 * args.batch, args.image_size),
                          steps=args.steps)
    print_throughput(config, result, args.image_size)
  if args.memory_batch:
    config = make_config(model=args.model, loss=args.loss, dtype="bfloat16",
                         batch_size=args.memory_batch)
    memory = step_memory(config, synthetic_dataset(args.memory_batch, args.image_size))
    print_memory(config, memory, args.image_size)


def main(argv=None) -> None:
  return entry.main(define_flags, benchmark, argv)


if __name__ == "__main__":
  main()
