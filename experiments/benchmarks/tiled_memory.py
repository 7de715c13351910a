"""Peak resident memory of one forward+backward pass, materialised and tiled.

Each form runs in a fresh process (so its peak resident set is its own):
one jitted ``value_and_grad`` of ``gca_uot`` (``iters`` iterations, unrolled
and implicit) on ``(B, D)`` views, ``N = 2B`` rows in the joint plan. The
row reports the process's peak resident set (``ru_maxrss``), the compiled
program's temporary memory and the time of one call after compiling.

    python -m experiments.benchmarks.tiled_memory              # N = 16384
    python -m experiments.benchmarks.tiled_memory --n=4096 --tile_size=256
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time

from absl import flags

from experiments import entry, runs

FORMS = ("materialised", "tiled", "tiled implicit")


def define_flags(flag_values: flags.FlagValues, argv) -> None:
  del argv  # no --config fields
  define = dict(flag_values=flag_values)
  flags.DEFINE_integer("n", 16384, "N = 2B, rows of the joint plan.", **define)
  flags.DEFINE_integer("dim", 128, "Embedding dimension D.", **define)
  flags.DEFINE_integer("iters", 10, "Iterations of the projection.", **define)
  flags.DEFINE_integer("tile_size", 512, "Rows per tile of the tiled forms.", **define)
  flags.DEFINE_list("forms", list(FORMS), f"Forms to measure, of {FORMS}.", **define)
  flags.DEFINE_string("child", "", "Internal: measure this one form here.", **define)
  flags.DEFINE_string("out", "tiled_memory.json", "JSON file of the rows.", **define)


def measure(form: str, n: int, dim: int, iters: int, tile_size: int) -> dict:
  """One forward+backward of ``form`` in this process."""
  import jax

  from gca_jax import losses

  z1, z2 = jax.random.normal(jax.random.PRNGKey(0), (2, n // 2, dim))
  options = dict(iters=iters)
  if form != "materialised":
    options["tile_size"] = tile_size
  if form.endswith("implicit"):
    options["grad_mode"] = "implicit"
  step = jax.jit(jax.value_and_grad(lambda a, b: losses.gca_uot(a, b, **options),
                                    argnums=(0, 1)))
  compiled = step.lower(z1, z2).compile()
  jax.block_until_ready(compiled(z1, z2))
  start = time.perf_counter()
  jax.block_until_ready(compiled(z1, z2))
  seconds = time.perf_counter() - start
  peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
  return dict(form=form, n=n, dim=dim, iters=iters,
              tile_size=None if form == "materialised" else tile_size,
              peak_rss_mib=peak_kib / 1024,
              temp_mib=compiled.memory_analysis().temp_size_in_bytes / 2**20,
              seconds=seconds, device=jax.devices()[0].device_kind)


def benchmark(args) -> list[dict]:
  if args.child:
    print(json.dumps(measure(args.child, args.n, args.dim, args.iters, args.tile_size)))
    return []
  forms = entry.select(args.forms, FORMS, "form")
  print(f"gca_uot forward+backward, N={args.n}, D={args.dim}, iters={args.iters}, "
        f"float32, one process per form")
  print(f"{'form':16s} {'peak RSS MiB':>13s} {'temp MiB':>10s} {'s / call':>10s}")
  rows = []
  for form in forms:
    result = subprocess.run(
        [sys.executable, "-m", "experiments.benchmarks.tiled_memory", f"--child={form}",
         f"--n={args.n}", f"--dim={args.dim}", f"--iters={args.iters}",
         f"--tile_size={args.tile_size}"], capture_output=True, text=True)
    if result.returncode != 0:
      raise entry.ExperimentError(
          f"{form} at N={args.n} failed: {result.stderr.strip().splitlines()[-1:]}")
    row = json.loads(result.stdout.strip().splitlines()[-1])
    print(f"{form:16s} {row['peak_rss_mib']:13.0f} {row['temp_mib']:10.0f} "
          f"{row['seconds']:10.2f}", flush=True)
    rows.append(row)
  runs.write_rows(args.out, rows)
  return rows


def main(argv=None) -> list[dict]:
  return entry.main(define_flags, benchmark, argv)


if __name__ == "__main__":
  main()
