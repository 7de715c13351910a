"""Forward+backward time of each loss, next to ott-jax doing the same work.

One run measures every row side by side on the same device, so the ratios
(``x infonce``) are comparable; absolute times only mean something on the
device named in the output.

    python -m experiments.benchmarks.losses                # N in 256, 1024, 4096
    python -m experiments.benchmarks.losses --sizes=1024,4096 --out=losses.json
    python -m experiments.benchmarks.losses --rows=gca_uot --skip_ott \
        --sizes=1024,4096,16384 --tile_size=512   # materialised beside tiled

Rows: every loss of ``gca_jax.losses`` (``iters`` iterations where it has
them) and the published-code presets of ``gca_jax.reference`` for the GCA
losses; then ott-jax's Sinkhorn on the same cosine cost with the same
iterations (balanced and unbalanced, unrolled and implicit), followed by the
same cross-entropy on its plan; then the tiled (memory-linear) forms of
``gca_uot`` and ``gca_ince`` (``tile_size`` rows per tile, unrolled and
implicit). Embeddings are ``(B, D)`` per view with ``N = 2B`` rows in the
joint plan. Each row also reports the compiled program's temporary memory
(XLA's ``memory_analysis``), the memory the forward+backward pass needs
besides its inputs and outputs.
"""

from __future__ import annotations

import functools
import statistics
import time

import jax
import jax.numpy as jnp
from absl import flags

from experiments import entry, runs
from gca_jax import losses, reference


def median_ms(fn, *args, repeats: int) -> float:
  """Median wall time of ``fn(*args)`` in ms, after one compiling call."""
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(1e3 * (time.perf_counter() - start))
  return statistics.median(times)


def ott_loss(z1, z2, *, eps, iters, tau, implicit):
  """Cross-entropy on ott-jax's plan of the same joint cosine cost."""
  from ott.geometry import geometry
  from ott.problems.linear import linear_problem
  from ott.solvers.linear import implicit_differentiation, sinkhorn

  z = jnp.concatenate([z1, z2])
  z = z / jnp.linalg.norm(z, axis=1, keepdims=True)
  n = z.shape[0]
  cost = 1.0 - z @ z.T
  cost = jnp.where(jnp.eye(n, dtype=bool), 2.0, cost)  # no -inf in ott
  marginal = jnp.full(n, 1.0 / n)
  problem = linear_problem.LinearProblem(
      geometry.Geometry(cost_matrix=cost, epsilon=eps), a=marginal,
      b=marginal, tau_a=tau, tau_b=tau)
  solver = sinkhorn.Sinkhorn(
      min_iterations=0, max_iterations=iters, inner_iterations=iters,
      threshold=-1.0,
      implicit_diff=(implicit_differentiation.ImplicitDiff() if implicit
                     else None))
  plan = solver(problem).matrix
  positives = (jnp.arange(n) + n // 2) % n
  row_normalized = plan / plan.sum(axis=1, keepdims=True)
  return -jnp.mean(jnp.log(row_normalized[jnp.arange(n), positives]))


def _rows(eps: float, iters: int, tile_size: int):
  """``(name, loss_fn)`` pairs, each ``loss_fn(z1, z2) -> scalar``."""
  rows = []
  # infonce first: every ratio is taken against it.
  names = ["infonce"] + sorted(set(losses.CONTRASTIVE_LOSSES) - {"infonce"})
  for name in names:
    fn = losses.get(name)
    kwargs = dict(eps=eps)
    if name not in ("infonce", "rince", "hs_ince", "hs_rince"):
      kwargs["iters"] = iters
    rows.append((name, functools.partial(fn, **kwargs)))
  rows.append(("gca_uot (log form)",
               functools.partial(losses.gca_uot, eps=eps, iters=iters,
                                 form="log")))
  rows.append(("gca_uot (implicit)",
               functools.partial(losses.gca_uot, eps=eps, iters=iters,
                                 grad_mode="implicit")))
  for name in ("gca_ince", "gca_uot"):
    rows.append((f"reference/{name}",
                 functools.partial(reference.loss, name, eps=eps,
                                   iters=iters)))
  for name, grad_mode in (("gca_uot", "unroll"), ("gca_uot", "implicit"),
                          ("gca_ince", "unroll")):
    rows.append((f"{name} (tiled {tile_size}"
                 + (", implicit)" if grad_mode == "implicit" else ")"),
                 functools.partial(losses.get(name), eps=eps, iters=iters,
                                   grad_mode=grad_mode, tile_size=tile_size)))
  tau_uot = 0.2 / (0.2 + eps)
  for label, tau in (("balanced", 1.0), ("unbalanced", tau_uot)):
    for implicit in (False, True):
      mode = "implicit" if implicit else "unrolled"
      rows.append((f"ott sinkhorn {label} {mode}",
                   functools.partial(ott_loss, eps=eps, iters=iters,
                                     tau=tau, implicit=implicit)))
  return rows


def define_flags(flag_values: flags.FlagValues, argv) -> None:
  del argv  # no --config fields
  define = dict(flag_values=flag_values)
  entry.define_number_list("sizes", [256, 1024, 4096], "N = 2B, rows of the joint plan.",
                           kind=int, **define)
  flags.DEFINE_integer("dim", 128, "Embedding dimension D.", **define)
  flags.DEFINE_integer("iters", 10, "Iterations of the projections.", **define)
  flags.DEFINE_float("eps", 0.5, "Temperature and entropic regularisation.", **define)
  flags.DEFINE_integer("repeats", 10, "Timed calls per row (the median is kept).", **define)
  flags.DEFINE_bool("skip_ott", False, "Leave out the ott-jax rows.", **define)
  flags.DEFINE_integer("tile_size", 512, "Rows per tile of the tiled rows.", **define)
  flags.DEFINE_list("rows", [], "Only the rows whose name starts with one of these "
                    "(infonce, the baseline, is always timed); empty: every row.",
                    **define)
  flags.DEFINE_string("out", "loss_benchmark.json", "JSON file of the rows.", **define)


def benchmark(args) -> list[dict]:
  """Times every row at every size; prints them and writes ``args.out``."""
  device = jax.devices()[0]
  print(f"device: {device.device_kind} ({jax.default_backend()}), "
        f"D={args.dim}, iters={args.iters}, eps={args.eps}, float32, "
        "forward+backward")
  results = []
  for n in args.sizes:
    z1, z2 = jax.random.normal(jax.random.PRNGKey(n), (2, n // 2, args.dim))
    baseline = None
    print(f"\nN = {n}\n{'loss':36s} {'ms':>10s} {'x infonce':>10s} "
          f"{'temp MiB':>10s}")
    for name, fn in _rows(args.eps, args.iters, args.tile_size):
      if args.skip_ott and name.startswith("ott"):
        continue
      if args.rows and name != "infonce" and not name.startswith(tuple(args.rows)):
        continue
      step = jax.jit(jax.value_and_grad(fn, argnums=(0, 1)))
      temp = step.lower(z1, z2).compile().memory_analysis().temp_size_in_bytes
      ms = median_ms(step, z1, z2, repeats=args.repeats)
      baseline = ms if name == "infonce" else baseline
      ratio = ms / baseline
      print(f"{name:36s} {ms:10.3f} {ratio:10.2f} {temp / 2**20:10.1f}", flush=True)
      results.append(dict(loss=name, n=n, dim=args.dim, iters=args.iters,
                          eps=args.eps, ms=ms, ratio_to_infonce=ratio,
                          temp_bytes=temp, device=device.device_kind,
                          backend=jax.default_backend()))
  runs.write_rows(args.out, results)
  return results


def main(argv=None) -> list[dict]:
  return entry.main(define_flags, benchmark, argv)


if __name__ == "__main__":
  main()
