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
    ``linear`` protocol; each row names the dataset it trained on.

``DIR/accelerator_check.json`` and ``DIR/accelerator_check.md`` are
rewritten after every measurement, so a killed run keeps what it measured;
running the command again resumes the CIFAR runs (their epochs are fixed by
the first invocation). ``--smoke`` runs every part tiny (the embedded
digits instead of CIFAR, so section (d)'s rows say ``digits``) and is what
the tests run.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import jax
from absl import flags

from experiments import entry, trainer
from experiments.benchmarks import losses as loss_benchmark
from experiments.benchmarks import train_step as step_benchmark
from experiments.benchmarks.losses import median_ms
from gca_jax import losses, sharding
from gca_jax.data import augment
from gca_jax.training import config as config_lib, feeds

RESULT_FILE = "accelerator_check.json"
SUMMARY_FILE = "accelerator_check.md"
CIFAR_TRAIN_IMAGES = 50_000


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
  dataset = step_benchmark.synthetic_dataset(4 * batch_size)
  feed = feeds.DeviceFeed(dataset.train, mesh=sharding.make_mesh(), seed=0,
                          batch_size=batch_size, steps_per_epoch=4)

  @jax.jit
  def views(batch, key):
    return augment.two_views(key, batch["image"], mean=dataset.mean, std=dataset.std)

  seconds = 1e-3 * median_ms(lambda: views(feed.batch(1), jax.random.PRNGKey(1)),
                             repeats=repeats)
  return {"batch": batch_size, "images_per_second": batch_size / seconds}


def train_step_row(config, repeats: int) -> dict:
  """(c) the train step of ``config`` on random 32x32 images, with the
  train-step benchmark's measurements: throughput over all devices, model
  FLOPs and their fraction of the devices' peak, and XLA's compiled memory
  of the step on one device."""
  dataset = step_benchmark.synthetic_dataset(2 * config.batch_size)
  measured = step_benchmark.measure_step(config, dataset, steps=repeats)
  _, step_flops = step_benchmark.model_flops(config, image_size=32)
  device = jax.devices()[0]
  peak = step_benchmark.peak_flops(getattr(device, "device_kind", ""), config.model.dtype)
  memory = step_benchmark.step_memory(config, dataset)
  achieved = step_flops / measured["seconds_per_step"]
  return {"model": config.model.name, "dtype": config.model.dtype,
          "batch_pairs": config.batch_size, "devices": measured["devices"],
          "step_ms": 1e3 * measured["seconds_per_step"],
          "images_per_second": measured["images_per_second"],
          "model_flops_per_step": step_flops, "achieved_flops": achieved,
          "fraction_of_peak": achieved / (peak * measured["devices"]) if peak else None,
          "compiled_peak_bytes_one_device": memory["peak_bytes"],
          "fits_80gb": memory["fits_80gb"]}


def cifar_rows(out: Path, data: str | None, smoke: bool, epochs: int) -> list[dict]:
  """(d) INCE and GCA-UOT at ``epochs`` each, then the linear protocol; each
  row names its dataset (``digits`` with ``smoke``)."""
  rows = []
  for loss in ("infonce", "gca_uot"):
    if smoke:
      config = trainer.small(config_lib.get_config())
    else:
      config = trainer.paper_cifar_config(f"npz:{data}")
      config.progress_bar = False
    config.update_from_flattened_dict({"loss": loss, "epochs": epochs,
                                       "linear_probe": True, "probe_random_init": False})
    start = time.perf_counter()
    metrics = trainer.train_and_evaluate(config, out / "runs" / loss)
    rows.append({"dataset": config.dataset, "loss": loss, "epochs": metrics["epochs"],
                 "images_per_second": metrics.get("images_per_second"),
                 "wall_seconds": time.perf_counter() - start,
                 "linear_probe_acc": metrics["linear_probe_acc"], "protocol": "linear"})
  return rows


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


def define_flags(flag_values: flags.FlagValues, argv) -> None:
  del argv  # no --config fields: every part has its fixed setting
  define = dict(flag_values=flag_values)
  flags.DEFINE_string("out", None, "Directory for the results.", **define)
  flags.mark_flag_as_required("out", flag_values=flag_values)
  flags.DEFINE_float("budget_seconds", 540.0, "Time budget of the whole check.", **define)
  flags.DEFINE_string("data", None, "CIFAR-10 .npz archive for section (d) (JPEG layout).",
                      **define)
  flags.DEFINE_bool("smoke", False, "Every part tiny, on CPU.", **define)


def run(args) -> int:
  """Measures every section within ``--budget_seconds``, saving after each."""
  started = time.monotonic()
  out = Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  path = out / RESULT_FILE
  previous = json.loads(path.read_text()) if path.exists() else {}
  device = jax.devices()[0]
  report = {"device": f"{device.platform}: {getattr(device, 'device_kind', '')} "
                      f"x{jax.device_count()}",
            "command": args.command,
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
  paper = step_benchmark.make_config()
  if args.smoke:
    paper = trainer.small(config_lib.get_config())
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
    path.write_text(json.dumps(report, indent=2))  # a re-run resumes at these epochs
    return cifar_rows(out, args.data, args.smoke, epochs)

  record("cifar", cifar)
  return 0


def main(argv=None) -> int:
  return entry.main(define_flags, run, argv)


if __name__ == "__main__":
  sys.exit(main())
