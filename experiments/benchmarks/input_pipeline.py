"""Input-pipeline throughput: on-device JAX augmentation vs per-image Pillow.

Measures, in one run on the default JAX backend:
  * augment:     two SimCLR views of a uint8 32x32 batch (jit, vmapped);
  * feed:        one training step's input: device-resident shuffle/batch
                 (``feed.device_batch``) plus the two views, in one jit;
  * pillow:      the same augmentations per image on the host with Pillow and
                 numpy (crop, flip, colour jitter, grayscale, normalise).
Rows (images/s, where an image yields two views) go to ``--out`` as JSON.

  python experiments/benchmarks/input_pipeline.py --quick
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import random
import time

import jax
import numpy as np
from PIL import Image, ImageEnhance

from gca_jax.data import augment, feed, load_dataset


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


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", default="input_pipeline_results.json",
                      help="JSON file for the result rows")
  parser.add_argument("--dataset", default="digits", help="a load_dataset name")
  parser.add_argument("--batch_size", type=int, default=512)
  parser.add_argument("--repeats", type=int, default=10)
  parser.add_argument("--pillow_images", type=int, default=1024)
  parser.add_argument("--quick", action="store_true",
                      help="small batch and few repeats (well under a minute)")
  args = parser.parse_args()
  if args.quick:
    args.batch_size, args.repeats, args.pillow_images = 256, 5, 256

  dataset = load_dataset(args.dataset)
  images = dataset.train.images
  batch = args.batch_size
  mean, std = dataset.mean, dataset.std
  host_batch = jax.device_put(images[:batch])
  rows = []

  def record(name, seconds_per_batch, count, **extra):
    row = {"name": name, "images_per_s": count / seconds_per_batch,
           "batch_size": count, "dataset": args.dataset,
           "image_shape": list(images.shape[1:]), "backend": jax.default_backend(),
           "devices": len(jax.devices()), "host": platform.processor() or platform.machine(),
           **extra}
    rows.append(row)
    print(f"{name:>10}: {row['images_per_s']:10.0f} images/s (two views each)")

  views = jax.jit(lambda k, x: augment.two_views(k, x, mean=mean, std=std))
  seconds = time_calls(lambda i: views(jax.random.key(i), host_batch), args.repeats)
  record("augment", seconds, batch)

  split = feed.to_device(dataset.train)
  steps = feed.steps_per_epoch(len(dataset.train), batch)

  @jax.jit
  def input_step(split, epoch, step):
    sample = feed.device_batch(split, 0, epoch, step, global_batch_size=batch)
    key = jax.random.fold_in(jax.random.fold_in(jax.random.key(1), epoch), step)
    return augment.two_views(key, sample.images, mean=mean, std=std), sample.labels

  seconds = time_calls(lambda i: input_step(split, i // steps, i % steps), args.repeats)
  record("feed", seconds, batch)

  rng = random.Random(0)
  mean_np, std_np = np.asarray(mean, np.float32), np.asarray(std, np.float32)
  pil_images = [Image.fromarray(im) for im in images[:args.pillow_images]]
  start = time.perf_counter()
  for image in pil_images:
    pillow_view(image, rng, mean_np, std_np)
    pillow_view(image, rng, mean_np, std_np)
  seconds = time.perf_counter() - start
  record("pillow", seconds, len(pil_images), note="per image, one process")

  with open(args.out, "w") as f:
    json.dump(rows, f, indent=2)
  print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
