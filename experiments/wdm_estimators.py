r"""What the two WDM estimators of `gca_jax.metrics` estimate, measured.

The Wasserstein dependency measure ``W1(P_{z1 z2}, P_{z1} ⊗ P_{z2})`` is
known in closed form for the *channel law*: ``z1`` uniform on the ``k`` unit
vectors ``e_a`` of ``R^k``, ``z2 = z1`` with probability ``rho``, else a fresh
uniform ``e_b``; its WDM is ``sqrt(2) rho (1 - 1/k)`` (docs/metrics.md). This
command prints, at each batch size ``N``, the mean and standard deviation over
``--draws`` batches of ``wdm_sinkhorn`` (``eps = 0.1``, 100 iterations, the
defaults) and ``wdm_lower_bound`` against that value and against the
population value of the entropic divergence at ``eps = 0.1`` (the estimate's
large-``N`` limit); the same for Gaussian views ``z`` and ``z + 0.1 n`` in
``D = 4`` (no closed form); the null offset ``S_eps(Π_q, Π_r)`` of
``wdm_sinkhorn`` as ``N`` grows at several ``eps``; and, at the smallest
``N``, how often identical views get an estimate ``<= 0``.

    python -m experiments.wdm_estimators                # minutes on a CPU
    python -m experiments.wdm_estimators --smoke        # seconds
    python -m experiments.wdm_estimators --out=wdm.json --sizes=32,128 --draws=16
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags

from experiments import entry, runs
from gca_jax import metrics

CHANNEL_RHOS = (1.0, 0.5)
CHANNEL_CLASSES = 4
GAUSSIAN_NOISE = 0.1
GAUSSIAN_DIM = 4
NULL_EPS = (10.0, 1.0, 0.1)
SMALL_SIZES = (2, 4, 8, 16, 32, 64)


def define_flags(flag_values: flags.FlagValues, argv) -> None:
  del argv  # no --config fields: nothing is trained
  define = dict(flag_values=flag_values)
  flags.DEFINE_bool("smoke", False, "Two small sizes and two draws (seconds; for tests).",
                    **define)
  flags.DEFINE_string("out", None, "Also write every number as JSON.", **define)
  entry.define_number_list("sizes", [32, 128, 256, 512, 1024], "Batch sizes N of the bias tables.",
                           kind=int, **define)
  entry.define_number_list("null_sizes", [32, 128, 512], "Batch sizes of the null offset "
                           "table (each 4x the previous gives the rate).", kind=int, **define)
  flags.DEFINE_integer("draws", 8, "Batches (and keys) averaged per entry.", **define)


def channel_views(key, n: int, rho: float, k: int = CHANNEL_CLASSES):
  """``n`` pairs of the channel law (see the module docstring)."""
  first, keep, fresh = jax.random.split(key, 3)
  a = jax.random.randint(first, (n,), 0, k)
  b = jnp.where(jax.random.uniform(keep, (n,)) < rho, a, jax.random.randint(fresh, (n,), 0, k))
  return jnp.eye(k)[a], jnp.eye(k)[b]


def channel_wdm(rho: float, k: int = CHANNEL_CLASSES) -> float:
  """The channel law's WDM, ``sqrt(2) rho (1 - 1/k)``."""
  return math.sqrt(2.0) * rho * (1.0 - 1.0 / k)


def channel_population_divergence(rho: float, eps: float = 0.1, iters: int = 2000,
                                  k: int = CHANNEL_CLASSES) -> float:
  """``S_eps`` between the channel law's joint and product, exactly: both are
  uniform on a multiset of the ``k^2`` pairs ``(e_a, e_b)`` (``2 k^2`` atoms;
  ``rho`` must make the counts whole), on which ``S_eps`` is that of the laws."""
  atoms = 2 * k * k
  diagonal = atoms * (rho + (1 - rho) / k) / k
  off_diagonal = atoms * (1 - rho) / (k * k)
  if not (float(diagonal).is_integer() and float(off_diagonal).is_integer()):
    raise entry.ExperimentError(f"rho = {rho} gives no whole counts on {atoms} atoms")
  joint = [(a, b) for a in range(k) for b in range(k)
           for _ in range(int(diagonal if a == b else off_diagonal))]
  product = [(a, b) for a in range(k) for b in range(k) for _ in range(atoms // (k * k))]
  unit = metrics._squared_distances(jnp.eye(k, dtype=jnp.float32))
  as_cloud = lambda pairs: tuple(jnp.array(column) for column in zip(*pairs))
  return float(metrics._sinkhorn_divergence(unit, unit, as_cloud(joint), as_cloud(product),
                                            eps, iters))


def _estimates(views, n: int, draws: int):
  """Both estimators on ``draws`` batches of ``views(key, n)``: two arrays."""
  def both(key):
    z1, z2 = views(key, n)
    return (metrics.wdm_sinkhorn(z1, z2, key=jax.random.fold_in(key, 1)),
            metrics.wdm_lower_bound(z1, z2))

  keys = jax.random.split(jax.random.PRNGKey(n), draws)
  sinkhorn_values, bounds = jax.jit(jax.vmap(both))(keys)
  return np.asarray(sinkhorn_values), np.asarray(bounds)


def gaussian_views(key, n: int, noise: float = GAUSSIAN_NOISE):
  z, n_ = jax.random.normal(key, (2, n, GAUSSIAN_DIM))
  return z, z + noise * n_


def null_offset(n: int, eps: float, draws: int) -> float:
  """Mean of the null term ``S_eps(Π_q, Π_r)`` of ``wdm_sinkhorn`` for ``n``
  independent Gaussian pairs in ``D = 4`` (100 iterations)."""
  z1, z2 = jax.random.normal(jax.random.PRNGKey(n), (2, n, GAUSSIAN_DIM))
  d1 = metrics._squared_distances(metrics._normalized(z1))
  d2 = metrics._squared_distances(metrics._normalized(z2))
  rows = jnp.arange(n)

  def offset(key):
    q, r = (jax.random.permutation(k, n) for k in jax.random.split(key, 2))
    return metrics._sinkhorn_divergence(d1, d2, (rows, q), (rows, r), eps, 100)

  keys = jax.random.split(jax.random.PRNGKey(1000), draws)
  return float(jnp.mean(jax.jit(jax.vmap(offset))(keys)))


def small_batch_signs(n: int, draws: int) -> dict:
  """Identical and independent Gaussian views at a small ``n``: the share of
  keys whose estimate of identical views is ``<= 0``, and the independent
  views' spread. Computed below ``WDM_SINKHORN_MIN_ROWS`` through the
  estimator's own terms (the public function refuses such batches)."""
  z, w = jax.random.normal(jax.random.PRNGKey(n), (2, n, GAUSSIAN_DIM))

  def estimate(z1, z2, key):
    u1, u2 = metrics._normalized(z1), metrics._normalized(z2)
    d1, d2 = metrics._squared_distances(u1), metrics._squared_distances(u2)
    rows = jnp.arange(n)
    p, q, r = (jax.random.permutation(k, n) for k in jax.random.split(key, 3))
    divergence = lambda x, y: metrics._sinkhorn_divergence(d1, d2, x, y, 0.1, 100)
    return divergence((rows, rows), (rows, p)) - divergence((rows, q), (rows, r))

  keys = jax.random.split(jax.random.PRNGKey(0), draws)
  identical = np.asarray(jax.jit(jax.vmap(estimate, in_axes=(None, None, 0)))(z, z, keys))
  independent = np.asarray(jax.jit(jax.vmap(estimate, in_axes=(None, None, 0)))(z, w, keys))
  return {"N": n, "identical_share_at_most_0": float(np.mean(identical <= 0)),
          "identical_mean": float(identical.mean()),
          "independent_mean": float(independent.mean()),
          "independent_sd": float(independent.std())}


def _summary(values) -> dict:
  return {"mean": float(np.mean(values)), "sd": float(np.std(values))}


def measure(sizes, null_sizes, draws: int, small_sizes=SMALL_SIZES,
            null_eps=NULL_EPS) -> dict:
  """Every number of the tables (see the module docstring)."""
  channel = []
  for rho in CHANNEL_RHOS:
    rows = []
    for n in sizes:
      views = lambda key, n_, rho=rho: channel_views(key, n_, rho)
      sinkhorn_values, bounds = _estimates(views, n, draws)
      rows.append({"N": n, "wdm_sinkhorn": _summary(sinkhorn_values),
                   "wdm_lower_bound": _summary(bounds)})
    channel.append({"rho": rho, "wdm": channel_wdm(rho),
                    "population_divergence_eps_0.1": channel_population_divergence(rho),
                    "rows": rows})
  gaussian = []
  for n in sizes:
    sinkhorn_values, bounds = _estimates(gaussian_views, n, draws)
    gaussian.append({"N": n, "wdm_sinkhorn": _summary(sinkhorn_values),
                     "wdm_lower_bound": _summary(bounds)})
  null = [{"eps": eps, "offsets": [null_offset(n, eps, draws) for n in null_sizes]}
          for eps in null_eps]
  small = [small_batch_signs(n, 64) for n in small_sizes]
  return {"draws": draws, "sizes": list(sizes), "null_sizes": list(null_sizes),
          "channel": channel, "gaussian": gaussian, "null": null, "small": small}


def _cell(summary: dict) -> str:
  return f"{summary['mean']:.3f} ± {summary['sd']:.3f}"


def tables(result: dict) -> str:
  """The measurements as markdown tables."""
  lines = []
  for law in result["channel"]:
    lines += [f"channel law, rho = {law['rho']:g}: WDM = {law['wdm']:.3f}, "
              f"S_0.1 of the laws = {law['population_divergence_eps_0.1']:.3f}", "",
              "| N | wdm_sinkhorn | / WDM | wdm_lower_bound | / WDM |",
              "| --- | --- | --- | --- | --- |"]
    for row in law["rows"]:
      lines.append(f"| {row['N']} | {_cell(row['wdm_sinkhorn'])} | "
                   f"{row['wdm_sinkhorn']['mean'] / law['wdm']:.2f} | "
                   f"{_cell(row['wdm_lower_bound'])} | "
                   f"{row['wdm_lower_bound']['mean'] / law['wdm']:.2f} |")
    lines.append("")
  lines += [f"Gaussian views z, z + {GAUSSIAN_NOISE:g} n, D = {GAUSSIAN_DIM}", "",
            "| N | wdm_sinkhorn | wdm_lower_bound |", "| --- | --- | --- |"]
  lines += [f"| {row['N']} | {_cell(row['wdm_sinkhorn'])} | {_cell(row['wdm_lower_bound'])} |"
            for row in result["gaussian"]]
  sizes = result["null_sizes"]
  lines += ["", "null offset S_eps(Π_q, Π_r), independent Gaussian views, D = 4", "",
            "| eps | " + " | ".join(f"N = {n}" for n in sizes) + " | drop per step |",
            "| --- |" + " --- |" * (len(sizes) + 1)]
  for row in result["null"]:
    offsets = row["offsets"]
    drops = ", ".join(f"{a / b:.2f}x" for a, b in zip(offsets, offsets[1:]))
    lines.append(f"| {row['eps']:g} | " + " | ".join(f"{v:.4f}" for v in offsets)
                 + f" | {drops} |")
  lines += ["", "small batches, Gaussian views, D = 4, 64 keys", "",
            "| N | identical views: share <= 0 | identical: mean | independent: mean ± sd |",
            "| --- | --- | --- | --- |"]
  lines += [f"| {row['N']} | {row['identical_share_at_most_0']:.2f} | "
            f"{row['identical_mean']:.3f} | "
            f"{row['independent_mean']:.3f} ± {row['independent_sd']:.3f} |"
            for row in result["small"]]
  return "\n".join(lines)


def run(args) -> dict:
  if args.draws < 2:
    raise entry.ExperimentError(f"--draws must be >= 2 (a standard deviation), got {args.draws}")
  too_small = [n for n in args.sizes if n < metrics.WDM_SINKHORN_MIN_ROWS]
  if too_small or any(n < 2 for n in args.null_sizes):
    raise entry.ExperimentError(
        f"--sizes must be >= {metrics.WDM_SINKHORN_MIN_ROWS} and --null_sizes >= 2, got "
        f"{args.sizes} and {args.null_sizes}")
  if args.smoke:
    result = measure((32,), (16, 32), 2, small_sizes=(16,), null_eps=(10.0,))
  else:
    result = measure(args.sizes, args.null_sizes, args.draws)
  print(tables(result))
  if args.out:
    runs.write_json(args.out, result)
  return result


def main(argv=None) -> None:
  entry.main(define_flags, run, argv)


if __name__ == "__main__":
  main()
