r"""Per-device memory and step time of a loss over a mesh: global vs sharded plan.

    XLA_FLAGS=--xla_force_host_platform_device_count=8 \
        python -m experiments.benchmarks.sharded_memory          # N in 1k, 8k, 32k
    python -m experiments.benchmarks.sharded_memory --sizes=8192 --no_time

Both scopes run what a data-parallel step runs for the loss, inside
`jax.shard_map(..., check_vma=False)` over a one-axis mesh of every device:
each device projects its own rows ``x1, x2`` with a replicated ``W``
(``z = x W``), differentiates the loss with respect to ``W`` and averages
the gradient with ``lax.pmean``.

* ``global``: the embeddings are all-gathered and every device computes the
  whole loss, its ``N x N`` plan included (the training step's global scope);
* ``sharded``: :mod:`gca_jax.losses.sharded`, each device holding its
  ``(N/P) x N`` rows of the plan.

Memory: XLA's memory analysis of the compiled per-device program (compiled,
not run): temporaries + arguments + outputs. It is the analysis of the
backend at hand (the CPU's buffer assignment on host devices). Time: median
forward+backward of the compiled program; on host devices all devices share
the CPU, so it measures the total work of the mesh. A size is timed only if
all devices' peaks fit in half of the available host memory (else it is
reported as compile only), or never with ``--no_time``.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from absl import flags
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from experiments import entry, runs
from experiments.benchmarks.losses import median_ms
from gca_jax import losses, sharding
from gca_jax.losses import sharded

AXIS = sharding.DATA_AXIS
SCOPES = ("global", "sharded")
MIB = 2 ** 20


def loss_step(scope: str, mesh: Mesh, *, loss: str = "gca_uot", **params):
  """The jitted ``step(W, x1, x2) -> (loss, pmean'd dloss/dW)`` of a scope."""
  if scope not in SCOPES:
    raise ValueError(f"scope must be one of {SCOPES}, got {scope!r}")

  def device_step(w, x1, x2):
    def device_loss(w):
      z1, z2 = x1 @ w, x2 @ w
      if scope == "sharded":
        return sharded.get(loss)(z1, z2, axis_name=AXIS, **params)
      gather = lambda z: lax.all_gather(z, AXIS, tiled=True)
      return losses.get(loss)(gather(z1), gather(z2), **params)

    value, grads = jax.value_and_grad(device_loss)(w)
    return value, lax.pmean(grads, AXIS)

  return jax.jit(jax.shard_map(
      device_step, mesh=mesh, in_specs=(P(), P(AXIS), P(AXIS)),
      out_specs=(P(), P()), check_vma=False))


def abstract_inputs(mesh: Mesh, n: int, dim: int, dtype=jnp.float32):
  """``W (dim, dim)`` replicated and ``x1, x2 (n/2, dim)`` sharded by rows."""
  replicated, rows = NamedSharding(mesh, P()), NamedSharding(mesh, P(AXIS))
  w = jax.ShapeDtypeStruct((dim, dim), dtype, sharding=replicated)
  x = jax.ShapeDtypeStruct((n // 2, dim), dtype, sharding=rows)
  return w, x, x


def peak_bytes(compiled) -> dict:
  """XLA's per-device memory analysis: temp, argument, output and their sum."""
  analysis = compiled.memory_analysis()
  sizes = {name: int(getattr(analysis, f"{name}_size_in_bytes"))
           for name in ("temp", "argument", "output")}
  return {**{f"{k}_bytes": v for k, v in sizes.items()},
          "peak_bytes": sum(sizes.values())}


def compiled_memory(scope: str, mesh: Mesh, n: int, dim: int, **params):
  """``(compiled program, its memory analysis)`` of a scope at ``N = n``."""
  compiled = loss_step(scope, mesh, **params).lower(
      *abstract_inputs(mesh, n, dim)).compile()
  return compiled, peak_bytes(compiled)


def available_host_bytes() -> int | None:
  """``MemAvailable`` of ``/proc/meminfo`` (None where there is none)."""
  try:
    with open("/proc/meminfo") as f:
      for line in f:
        if line.startswith("MemAvailable:"):
          return int(line.split()[1]) * 1024
  except OSError:
    pass
  return None


def concrete_inputs(mesh: Mesh, n: int, dim: int):
  """Random ``W``, ``x1``, ``x2`` placed as :func:`abstract_inputs`."""
  keys = jax.random.split(jax.random.PRNGKey(n), 3)
  w = jax.random.normal(keys[0], (dim, dim)) / np.sqrt(dim)
  x1, x2 = (jax.random.normal(k, (n // 2, dim)) for k in keys[1:])
  return [jax.device_put(a, s.sharding)
          for a, s in zip((w, x1, x2), abstract_inputs(mesh, n, dim))]


FORMS = ("auto", "log", "scaling")


def define_flags(flag_values: flags.FlagValues, argv) -> None:
  del argv  # no --config fields
  define = dict(flag_values=flag_values)
  entry.define_number_list("sizes", [1024, 8192, 32768], "N = 2B, rows of the joint plan.",
                           kind=int, **define)
  flags.DEFINE_string("loss", "gca_uot", "Loss (a name of gca_jax.losses).", **define)
  flags.DEFINE_integer("dim", 128, "Embedding dimension D.", **define)
  flags.DEFINE_integer("iters", 10, "Iterations of the projections.", **define)
  flags.DEFINE_float("eps", 0.5, "Temperature and entropic regularisation.", **define)
  flags.DEFINE_enum("form", "auto", FORMS, "Form of the projections.", **define)
  flags.DEFINE_integer("repeats", 3, "Timed calls per row (the median is kept).", **define)
  flags.DEFINE_bool("no_time", False, "Compile only.", **define)
  flags.DEFINE_string("out", "sharded_memory.json", "JSON file of the rows.", **define)


def benchmark(args) -> list[dict]:
  """Compiles (and times) both scopes at every size; prints them and writes ``args.out``."""
  mesh = sharding.make_mesh()
  devices = mesh.devices.size
  params = dict(loss=args.loss, eps=args.eps, iters=args.iters, form=args.form)
  cpu = jax.default_backend() == "cpu"
  print(f"{devices} x {jax.devices()[0].device_kind} ({jax.default_backend()}), "
        f"loss {args.loss}, D={args.dim}, iters={args.iters}, eps={args.eps}, "
        f"form {args.form}, float32, forward+backward")
  print("\n| N | scope | per-device peak MiB | temp MiB | sharded / global | "
        "step ms |\n|---|---|---|---|---|---|")
  results = []
  for n in args.sizes:
    if n % (2 * devices):
      raise entry.ExperimentError(f"--sizes: N = {n} is not a multiple of 2 x {devices} "
                                  "devices")
    global_peak = None
    for scope in SCOPES:
      compiled, memory = compiled_memory(scope, mesh, n, args.dim, **params)
      global_peak = memory["peak_bytes"] if scope == "global" else global_peak
      ms = None
      available = available_host_bytes() if cpu else None
      fits = not cpu or (available is not None
                         and devices * memory["peak_bytes"] < available / 2)
      if not args.no_time and fits:
        ms = median_ms(compiled, *concrete_inputs(mesh, n, args.dim),
                       repeats=args.repeats)
      ratio = memory["peak_bytes"] / global_peak
      time_text = f"{ms:.0f}" if ms is not None else "compile only"
      print(f"| {n} | {scope} | {memory['peak_bytes'] / MIB:.1f} | "
            f"{memory['temp_bytes'] / MIB:.1f} | {ratio:.3f} | {time_text} |",
            flush=True)
      results.append(dict(n=n, scope=scope, devices=devices, ms=ms,
                          ratio_to_global=ratio, backend=jax.default_backend(),
                          **memory, **params, dim=args.dim))
  runs.write_rows(args.out, results)
  return results


def main(argv=None) -> list[dict]:
  return entry.main(define_flags, benchmark, argv)


if __name__ == "__main__":
  if "XLA_FLAGS" not in os.environ:
    print("note: one device unless XLA_FLAGS=--xla_force_host_platform_device_count=8")
  main()
