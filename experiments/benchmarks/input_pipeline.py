"""Input-pipeline throughput: what training feeds its step, and per-image Pillow.

Measures, in one run on the default JAX backend (all devices), the input
side of a training step exactly as training runs it: the config's batches
from `gca_jax.training.feeds` and the two views of `gca_jax.data.augment`
with the arguments `gca_jax.training.step` passes (``config.augmentation``,
the dataset's mean/std, ``config.image_size``), jitted:

  * augment:     two views of a device-resident uint8 batch (jit);
  * device feed: one step's input when the split fits on the devices:
                 ``DeviceFeed.batch(step)`` (a jitted gather of the step's
                 examples) then the two views, one call each as in the loop;
  * host feed:   the same with ``HostFeed`` (a grain loader, the path of
                 datasets too large for device memory); the split is read
                 from memory here, so image decoding is not included;
  * pillow:      the same augmentations per image on the host with Pillow and
                 numpy (crop, flip, colour jitter, grayscale, normalise), a
                 torchvision-style baseline.

Rows (images/s, where an image yields two views) go to ``--out`` as JSON.

  python -m experiments.benchmarks.input_pipeline --quick
"""

from __future__ import annotations

import math
import platform
import random
import time

import jax
import numpy as np
from absl import flags
from PIL import Image, ImageEnhance

from experiments import entry, runs
from gca_jax import training
from gca_jax.data import augment
from gca_jax.training import config as config_lib, feeds


def time_calls(fn, repeats: int) -> float:
  """Seconds per call of ``fn`` after one warm-up (compile) call."""
  jax.block_until_ready(fn(0))
  start = time.perf_counter()
  for i in range(repeats):
    out = fn(i + 1)
  jax.block_until_ready(out)
  return (time.perf_counter() - start) / repeats


def pillow_view(image: Image.Image, rng: random.Random, mean, std) -> np.ndarray:
  """One SimCLR view on the host, as torchvision would compute it with PIL."""
  width, height = image.size
  for _ in range(10):  # RandomResizedCrop((0.08, 1), (3/4, 4/3))
    area = width * height * rng.uniform(0.08, 1.0)
    aspect = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
    w, h = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
    if 0 < w <= width and 0 < h <= height:
      top, left = rng.randint(0, height - h), rng.randint(0, width - w)
      break
  else:
    top, left, h, w = 0, 0, height, width
  view = image.resize((width, height), Image.BILINEAR, box=(left, top, left + w, top + h))
  if rng.random() < 0.5:
    view = view.transpose(Image.FLIP_LEFT_RIGHT)
  if rng.random() < 0.8:  # ColorJitter(0.4, 0.4, 0.4, 0.1), random order
    ops = [lambda v: ImageEnhance.Brightness(v).enhance(rng.uniform(0.6, 1.4)),
           lambda v: ImageEnhance.Contrast(v).enhance(rng.uniform(0.6, 1.4)),
           lambda v: ImageEnhance.Color(v).enhance(rng.uniform(0.6, 1.4)),
           lambda v: shift_hue(v, rng.uniform(-0.1, 0.1))]
    rng.shuffle(ops)
    for op in ops:
      view = op(view)
  if rng.random() < 0.2:
    view = view.convert("L").convert("RGB")
  return (np.asarray(view, np.float32) / 255.0 - mean) / std


def shift_hue(image: Image.Image, shift: float) -> Image.Image:
  hsv = np.array(image.convert("HSV"))
  hsv[..., 0] = (hsv[..., 0].astype(np.int16) + int(shift * 255)) % 256
  return Image.fromarray(hsv, "HSV").convert("RGB")


def make_config(dataset: str, *, batch_size: int, load_size: int | None,
                data_dir: str | None = None, augmentation: str = "simclr"):
  """The trainer's config for ``dataset`` as the benchmark feeds it."""
  config = config_lib.get_config()
  config.update_from_flattened_dict({
      "dataset": dataset, "batch_size": batch_size, "load_size": load_size,
      "data_dir": data_dir, "augmentation": augmentation})
  return config


def make_views(config, run):
  """``views(key, images_uint8)``: the augmentation of `gca_jax.training.step`."""
  return jax.jit(lambda key, images: augment.two_views(
      key, images, policy=config.augmentation, mean=run.mean, std=run.std,
      out_size=config.image_size))


def time_feed(config, run, feed, views, repeats: int) -> float:
  """Seconds per step of ``feed.batch(step)`` followed by the two views."""
  key = jax.random.key(config.seed)
  return time_calls(lambda i: views(jax.random.fold_in(key, i), feed.batch(i)["image"]),
                    repeats)


def define_flags(flag_values: flags.FlagValues, argv) -> None:
  del argv  # no --config fields: the flags below are the config's
  define = dict(flag_values=flag_values)
  flags.DEFINE_string("out", "input_pipeline_results.json", "JSON file for the result rows.",
                      **define)
  flags.DEFINE_string("dataset", "digits", "config.dataset (a gca_jax.data.load_dataset "
                      "name).", **define)
  flags.DEFINE_string("data_dir", None, "config.data_dir.", **define)
  flags.DEFINE_integer("load_size", 32, "config.load_size (0: the source's size).", **define)
  flags.DEFINE_enum("augmentation", "simclr", augment.POLICIES, "config.augmentation.",
                    **define)
  flags.DEFINE_integer("batch_size", 512, "Images per batch.", **define)
  flags.DEFINE_integer("repeats", 10, "Timed calls per row.", **define)
  flags.DEFINE_integer("pillow_images", 1024, "Images augmented with Pillow.", **define)
  flags.DEFINE_bool("quick", False, "Small batch and few repeats (well under a minute).",
                    **define)


def benchmark(args) -> list[dict]:
  """Measures every row; prints them and writes ``args.out``."""
  if args.quick:
    args.batch_size, args.repeats, args.pillow_images = 256, 5, 256

  config = make_config(args.dataset, batch_size=args.batch_size,
                       load_size=args.load_size or None, data_dir=args.data_dir,
                       augmentation=args.augmentation)
  dataset = feeds.load_data(config)
  run = training.setup(config, dataset)
  images = dataset.train.images
  batch = args.batch_size
  rows = []

  def record(name, seconds_per_batch, count, **extra):
    row = {"name": name, "images_per_s": count / seconds_per_batch,
           "batch_size": count, "dataset": args.dataset,
           "image_shape": list(images.shape[1:]), "backend": jax.default_backend(),
           "devices": run.mesh.devices.size,
           "host": platform.processor() or platform.machine(), **extra}
    rows.append(row)
    print(f"{name:>12}: {row['images_per_s']:10.0f} images/s (two views each)")

  views = make_views(config, run)
  device_feed = feeds.make_feed(run, start_step=0)
  on_device = device_feed.batch(0)["image"]
  key = jax.random.key(config.seed)
  seconds = time_calls(lambda i: views(jax.random.fold_in(key, i), on_device), args.repeats)
  record("augment", seconds, batch)
  record("device feed", time_feed(config, run, device_feed, views, args.repeats), batch)
  device_feed.close()
  host_feed = feeds.HostFeed(dataset.train, mesh=run.mesh, seed=config.seed,
                             batch_size=batch, total_steps=args.repeats + 1, start_step=0,
                             worker_count=config.data_workers)
  try:
    seconds = time_feed(config, run, host_feed, views, args.repeats)
  finally:
    host_feed.close()
  record("host feed", seconds, batch, note="grain loader from memory (no decoding)")

  rng = random.Random(0)
  mean_np, std_np = np.asarray(dataset.mean, np.float32), np.asarray(dataset.std, np.float32)
  pil_images = [Image.fromarray(im) for im in images[:args.pillow_images]]
  start = time.perf_counter()
  for image in pil_images:
    pillow_view(image, rng, mean_np, std_np)
    pillow_view(image, rng, mean_np, std_np)
  seconds = time.perf_counter() - start
  record("pillow", seconds, len(pil_images), note="per image, one process")

  runs.write_rows(args.out, rows)
  return rows


def main(argv=None) -> list[dict]:
  return entry.main(define_flags, benchmark, argv)


if __name__ == "__main__":
  main()
