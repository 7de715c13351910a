r"""Everything measured on an accelerator, in one command and one time budget.

    python -m experiments.accelerator_check --out=runs/accel \
        --data=/path/to/cifar10_jpeg.npz            # default budget: 540 s
    python -m experiments.accelerator_check --smoke --out=/tmp/accel   # CPU, tiny

Prints the device, then within ``--budget_seconds``:

(a) ``losses``: forward+backward of gca_uot, gca_ince and infonce at
    N = 1024 and 4096 joint rows (and ott-jax's Sinkhorn on the same work
    when it is installed);
(b) ``input``: two augmented 32x32 views per image from the device-resident
    feed the trainer uses, images/s;
(c) ``train_step``: the paper's step (ResNet-18, bfloat16, 2048-128
    projector, batch 512 pairs, GCA-UOT): images/s, analytic FLOPs, the
    fraction of the device's peak, and XLA's compiled memory;
(d) ``cifar``: INCE and GCA-UOT pre-trained on the ``--data`` archive for as
    many equal epochs as the remaining budget allows, each followed by the
    ``linear`` protocol.

``DIR/accelerator_check.json`` and ``DIR/accelerator_check.md`` are
rewritten after every measurement, so a killed run keeps what it measured;
running the command again resumes the CIFAR runs (their epochs are fixed by
the first invocation). ``--smoke`` runs every part tiny (digits instead of
CIFAR) and is what the tests run.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import jax
import numpy as np

from experiments.benchmarks import losses as loss_benchmark
from experiments.benchmarks.losses import median_ms
from gca_jax import losses, models, sharding, training
from gca_jax.data import augment
from gca_jax.training import config as config_lib, feeds

RESULT_FILE = "accelerator_check.json"
SUMMARY_FILE = "accelerator_check.md"
CIFAR_TRAIN_IMAGES = 50_000
# Dense bfloat16 peak FLOP/s by device kind (vendor data sheets).
PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "TPU v5": 197e12,
                   "TPU v4": 275e12}


def peak_flops(device) -> float | None:
  kind = getattr(device, "device_kind", "")
  return next((v for k, v in PEAK_BF16_FLOPS.items() if k in kind), None)


def loss_rows(sizes, repeats: int) -> list[dict]:
  """(a) forward+backward seconds of the losses at each joint size N."""
  rows = []
  for n in sizes:
    z1, z2 = jax.random.normal(jax.random.PRNGKey(0), (2, n // 2, 128))
    for name in ("gca_uot", "gca_ince", "infonce"):
      fn = jax.jit(jax.value_and_grad(losses.get(name), argnums=(0, 1)))
      rows.append({"loss": name, "N": n, "ms": median_ms(fn, z1, z2, repeats=repeats)})
    try:  # ott-jax is an optional dependency ([experiments])
      ott = jax.jit(jax.value_and_grad(lambda a, b: loss_benchmark.ott_loss(
          a, b, eps=0.5, iters=10, tau=1.0, implicit=False), argnums=(0, 1)))
      rows.append({"loss": "ott sinkhorn (unrolled)", "N": n,
                   "ms": median_ms(ott, z1, z2, repeats=repeats)})
    except (ImportError, AttributeError):
      pass
  return rows


def input_row(batch_size: int, repeats: int) -> dict:
  """(b) images/s of two augmented 32x32 views from the device-resident feed."""
  images = np.random.default_rng(0).integers(0, 256, (4 * batch_size, 32, 32, 3), np.uint8)
  feed = feeds.DeviceFeed(_dataset(images).train, mesh=sharding.make_mesh(), seed=0,
                          batch_size=batch_size, steps_per_epoch=4)

  @jax.jit
  def views(batch, key):
    return augment.two_views(key, batch["image"], mean=(0.5,) * 3, std=(0.25,) * 3)

  seconds = 1e-3 * median_ms(lambda: views(feed.batch(1), jax.random.PRNGKey(1)),
                             repeats=repeats)
  return {"batch": batch_size, "images_per_second": batch_size / seconds}


def train_step_row(config, repeats: int) -> dict:
  """(c) the train step of ``config`` on random 32x32 images."""
  images = np.random.default_rng(0).integers(0, 256, (config.batch_size, 32, 32, 3),
                                             np.uint8)
  run = training.setup(config, _dataset(images))
  batch = {"image": sharding.global_array(images, sharding.batch_sharded(run.mesh))}
  state = run.initial_state()
  compiled = run.train_step.lower(state, batch).compile()
  memory = compiled.memory_analysis()
  step_state = [state]

  def step():
    step_state[0], metrics = compiled(step_state[0], batch)
    return metrics

  seconds = 1e-3 * median_ms(step, repeats=repeats)
  # Forward + backward ~ 3x forward, for the two views of every image.
  flops = 3 * 2 * config.batch_size * models.resnet_flops_per_example(
      config.model.name, image_size=32, stem=config.model.stem,
      width=config.model.width or None,
      projector_hidden_dim=config.model.projector_hidden_dim,
      projection_dim=config.model.projection_dim)
  peak = peak_flops(jax.devices()[0])
  row = {"model": config.model.name, "dtype": config.model.dtype,
         "batch_pairs": config.batch_size, "step_ms": 1e3 * seconds,
         "images_per_second": config.batch_size / seconds, "flops_per_step": flops,
         "fraction_of_peak": flops / seconds / peak if peak else None}
  if memory is not None:
    row["compiled_bytes"] = {k: int(getattr(memory, f"{k}_size_in_bytes"))
                             for k in ("argument", "output", "temp")}
  return row


def cifar_rows(out: Path, data: str | None, smoke: bool, epochs: int) -> list[dict]:
  """(d) INCE and GCA-UOT at ``epochs`` each, then the linear protocol."""
  from gca_jax import linear_eval  # pylint: disable=g-import-not-at-top
  rows = []
  for loss in ("infonce", "gca_uot"):
    if smoke:
      config = config_lib.small(config_lib.get_config())
    else:
      config = config_lib.paper_cifar_config(f"npz:{data}")
      config.progress_bar = False
    config.loss = loss
    config.epochs = epochs
    config.linear_probe = False
    workdir = out / "runs" / loss
    start = time.perf_counter()
    metrics = training.train_and_evaluate(config, workdir).metrics
    result = linear_eval.evaluate(workdir, "linear")
    rows.append({"loss": loss, "epochs": metrics["epochs"],
                 "images_per_second": metrics.get("images_per_second"),
                 "wall_seconds": time.perf_counter() - start,
                 "linear_probe_acc": result["linear_probe_acc"], "protocol": "linear"})
  return rows


def _small_config(batch_size: int):
  config = config_lib.small(config_lib.get_config())
  config.batch_size = batch_size
  return config


def _dataset(images):
  from gca_jax import data  # pylint: disable=g-import-not-at-top
  labels = np.zeros(len(images), np.int32)
  split = data.ImageArrays(images, labels)
  return data.Dataset(train=split, test=split, num_classes=1, name="random",
                      mean=(0.5,) * 3, std=(0.25,) * 3)


def _summary(report: dict) -> str:
  lines = [f"# Accelerator check: {report['device']}", "",
           f"Command: `{report['command']}`", ""]
  for section, rows in report["sections"].items():
    lines.append(f"## {section}")
    if isinstance(rows, str):
      lines += [rows, ""]
      continue
    rows = rows if isinstance(rows, list) else [rows]
    keys = list(dict.fromkeys(k for row in rows for k in row))
    lines += ["| " + " | ".join(keys) + " |", "|" + " --- |" * len(keys)]
    lines += ["| " + " | ".join(_cell(row.get(k)) for k in keys) + " |" for row in rows]
    lines.append("")
  return "\n".join(lines)


def _cell(value) -> str:
  if isinstance(value, float):
    return f"{value:.4g}"
  return "" if value is None else str(value)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--out", required=True, help="Directory for the results.")
  parser.add_argument("--budget_seconds", type=float, default=540.0)
  parser.add_argument("--data", default=None,
                      help="CIFAR-10 .npz archive for section (d) (JPEG layout).")
  parser.add_argument("--smoke", action="store_true", help="Every part tiny, on CPU.")
  args = parser.parse_args(argv)
  started = time.monotonic()
  out = Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  path = out / RESULT_FILE
  previous = json.loads(path.read_text()) if path.exists() else {}
  device = jax.devices()[0]
  report = {"device": f"{device.platform}: {getattr(device, 'device_kind', '')} "
                      f"x{jax.device_count()}",
            "command": " ".join(["python -m experiments.accelerator_check", *(argv or [])]),
            "smoke": args.smoke, "sections": {}}
  print(f"device: {report['device']}", flush=True)
  repeats = 3 if args.smoke else 20

  def record(section, compute):
    left = args.budget_seconds - (time.monotonic() - started)
    if left <= 0:
      report["sections"][section] = "skipped: budget spent"
    else:
      report["sections"][section] = compute(left)
    path.write_text(json.dumps(report, indent=2))
    (out / SUMMARY_FILE).write_text(_summary(report))
    print(f"{section}: {json.dumps(report['sections'][section])}", flush=True)

  record("losses", lambda _: loss_rows((64,) if args.smoke else (1024, 4096), repeats))
  record("input", lambda _: input_row(64 if args.smoke else 512, repeats))
  paper = config_lib.paper_cifar_config("random")
  if args.smoke:
    paper = _small_config(64)
    paper.model.dtype = "bfloat16"
  record("train_step", lambda _: train_step_row(paper, repeats))

  def cifar(left):
    if not args.smoke and not args.data:
      return "skipped: no --data archive given"
    epochs = previous.get("cifar_epochs")
    if epochs is None:
      rate = report["sections"]["train_step"]["images_per_second"]
      # Two runs plus their probes in what is left, with a margin for
      # compilation and evaluation.
      epochs = 1 if args.smoke else max(1, int(0.35 * left * rate / CIFAR_TRAIN_IMAGES))
    report["cifar_epochs"] = epochs
    return cifar_rows(out, args.data, args.smoke, epochs)

  record("cifar", cifar)
  return 0


if __name__ == "__main__":
  try:
    sys.exit(main())
  except (training.ConfigError, ValueError) as e:
    print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
    sys.exit(2)
