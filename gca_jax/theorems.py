r"""The paper's theorems about the GCA projections, checked numerically.

Each claim is a small pure function of one configuration (an embedding
family, a batch size ``B``, a dimension ``D``, ``eps`` and a number of
iterations ``T``) that returns a :class:`Check`: the two sides of the claim
at the configuration's worst point and a *violation*, a number that is
``<= 0`` (or within round-off) where the claim holds. Everything runs in
float64 through the public API of :mod:`gca_jax.losses`: these are checks of
the library's losses as they are, not new losses.

Claims (``s = S / eps``, ``P̄`` the plan with its rows normalised):

* **Theorem 1**: ``gca_ince(iters=0) == hs_ince == infonce`` (one row
  projection of the kernel is InfoNCE's softmax).
* **Theorem 2**: ``gca_rince(iters=0) == rince`` (``q = 0.6`` and ``q = 1``).
* **Theorem 5**: the GCA-INCE loss ``-mean_i log P̄_{i,t(i)}`` does not
  increase with the iterations: ``L(k) <= L(k - 1)`` for every
  ``k = 1..T`` (``L(0)`` is InfoNCE).
* **Theorem 6**: ``gca_rince(iters=T, q=1) <= rince(q=1)``; and, to explain
  what is found, the identity that starting the balanced iterations from
  ``v = c`` leaves the plan unchanged and multiplies the ``q = 1`` loss by
  ``c`` (the potentials' free constant decides the inequality).
* **Theorem 7** ("the converged plan is more uniform"), under each reading
  the paper's wording allows, comparing the plan after ``T`` iterations with
  InfoNCE's plan (the kernel with its rows normalised):

  - ``dual``: the entropic-OT dual
    ``D(alpha, beta) = eps (<a, alpha> + <b, beta> - sum_ij exp(alpha_i +
    M_ij + beta_j))`` does not decrease along the half-steps, from
    ``(0, 0)`` through InfoNCE's plan to the plan after ``T`` iterations.
    For any plan ``Q`` with marginals ``(a, b)``,
    ``KL(Q || P) = const - D / eps``, so this reading restates Theorem 5.
  - ``plan entropy``: the entropy of the plan (normalised to mass 1) does not
    decrease: ``H(P_T) >= H(P_INCE)``.
  - ``negatives' entropy``: the mean over anchors of the entropy of the
    plan's row restricted to the negatives (normalised to sum 1) does not
    decrease.
  - ``plan-weighted uniformity``: Wang & Isola's uniformity loss with the
    pair distribution taken from the plan's negatives,
    ``log mean_i sum_{j neg} P̄neg_ij exp(-2 |ẑ_i - ẑ_j|^2)``, does not
    increase (lower is more uniform).

Violations are relative: ``|lhs - rhs| / max(1, |rhs|)`` for identities,
``(lhs - rhs) / max(1, |rhs|)`` for a claim ``lhs <= rhs``. An identity holds
within 1e-10, an inequality within 1e-12 (float64 round-off of sums over the
``N^2`` entries of a plan).

The checks run on three embedding families (`embeddings`): unrelated
Gaussian views, clustered views (positives near a shared centre) and a
near-collapse (every embedding within ~1e-6 cosine of one direction).
`run` checks every claim on a `Grid`; ``python -m experiments.theorems``
(repository checkout) is its command line.

Examples:
  >>> from gca_jax import theorems
  >>> results = theorems.run(theorems.SMOKE_GRID, theorems.CLAIMS[:1])
  >>> row = results["claims"][0]
  >>> row["claim"], row["holds"] == row["tried"] > 0
  ('Theorem 1', True)
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gca_jax import losses

IDENTITY_TOLERANCE = 1e-10
# Inequalities are exact in exact arithmetic; float64 sums over the N^2
# entries of a plan carry relative round-off far below this.
INEQUALITY_TOLERANCE = 1e-12
# Wang & Isola's uniformity temperature (gca_jax.metrics.uniformity's default).
UNIFORMITY_T = 2.0

FAMILIES = ("gaussian", "clustered", "collapsed")


def embeddings(family: str, batch: int, dim: int, seed: int = 0):
  """Two float64 views ``(z1, z2)``, ``(batch, dim)`` each, of one family.

  * ``"gaussian"``: every row of both views i.i.d. ``N(0, I)`` (the views of a
    sample are unrelated);
  * ``"clustered"``: 4 unit-norm centres; both views of a sample are its
    centre plus independent noise of norm about 0.3;
  * ``"collapsed"``: every row is one common unit direction plus independent
    noise of norm about 1e-3 (cosine similarities all within ~1e-6 of 1).
  """
  if family not in FAMILIES:
    raise ValueError(f"family must be one of {FAMILIES}, got {family!r}.")
  rng = np.random.default_rng([seed, batch, dim, FAMILIES.index(family)])

  def noise(scale):
    return scale * rng.normal(size=(batch, dim)) / math.sqrt(dim)

  if family == "gaussian":
    z1, z2 = rng.normal(size=(batch, dim)), rng.normal(size=(batch, dim))
  elif family == "clustered":
    centres = rng.normal(size=(4, dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    members = centres[rng.integers(0, 4, size=batch)]
    z1, z2 = members + noise(0.3), members + noise(0.3)
  else:
    direction = rng.normal(size=dim)
    direction /= np.linalg.norm(direction)
    z1, z2 = direction + noise(1e-3), direction + noise(1e-3)
  return jnp.asarray(z1, jnp.float64), jnp.asarray(z2, jnp.float64)


@dataclasses.dataclass(frozen=True)
class Config:
  """One point of the grid. ``iters`` is ``None`` for claims about 0 iterations."""

  family: str
  batch: int
  dim: int
  eps: float
  iters: int | None
  seed: int = 0

  def label(self) -> str:
    iters = "" if self.iters is None else f" T={self.iters}"
    return f"{self.family} B={self.batch} D={self.dim} eps={self.eps:g}{iters}"


class Check(NamedTuple):
  """The two sides of a claim at a configuration's worst point.

  ``violation <= tolerance`` means the claim holds there (see module doc).
  """

  violation: float
  lhs: float
  rhs: float


@dataclasses.dataclass(frozen=True)
class Claim:
  name: str
  reading: str
  statement: str
  check: Callable[[Config], Check]
  tolerance: float
  uses_iters: bool = True


@dataclasses.dataclass(frozen=True)
class Grid:
  families: Sequence[str] = FAMILIES
  batches: Sequence[int] = (8, 64)
  dims: Sequence[int] = (4, 32)
  eps_values: Sequence[float] = (0.1, 0.5, 1.0)
  iters_values: Sequence[int] = (1, 10, 200)
  seeds: Sequence[int] = (0,)


FULL_GRID = Grid()
SMOKE_GRID = Grid(batches=(8,), dims=(4,), eps_values=(0.5,), iters_values=(1, 5))


def config_embeddings(config: Config):
  return embeddings(config.family, config.batch, config.dim, config.seed)


# ----------------------------------------------------------------------------
# Quantities computed through the library (jitted once per shape, eps, T).

# eps stays a Python float, as a caller passes it (it selects the numerical form).
_infonce = jax.jit(losses.infonce, static_argnames=("eps",))
_hs_ince = jax.jit(losses.hs_ince, static_argnames=("eps",))
_gca_ince = jax.jit(losses.gca_ince, static_argnames=("eps", "iters"))
_rince = jax.jit(losses.rince, static_argnames=("eps", "q"))
_gca_rince = jax.jit(losses.gca_rince, static_argnames=("eps", "iters", "q", "return_aux"))


def _relative(difference, reference) -> float:
  return float(difference) / max(1.0, abs(float(reference)))


def _worst(lhs: np.ndarray, rhs: np.ndarray) -> Check:
  """The worst point of a claim ``lhs <= rhs`` over arrays of cases."""
  lhs, rhs = np.atleast_1d(np.asarray(lhs)), np.atleast_1d(np.asarray(rhs))
  violations = (lhs - rhs) / np.maximum(1.0, np.abs(rhs))
  k = int(np.argmax(violations))
  return Check(float(violations[k]), float(lhs[k]), float(rhs[k]))


def _uniform_log_marginal(size: int, dtype):
  return jnp.full(size, -math.log(size), dtype)


def _dual(log_kernel, log_a, log_b, log_u, log_v, eps):
  """``eps (<a, alpha> + <b, beta> - sum_ij exp(alpha_i + M_ij + beta_j))``."""
  mass = jnp.exp(jax.nn.logsumexp(log_u[:, None] + log_kernel + log_v[None, :]))
  return eps * (jnp.exp(log_a) @ log_u + jnp.exp(log_b) @ log_v - mass)


@functools.partial(jax.jit, static_argnames=("eps", "iters"))
def ince_trajectory(z1, z2, *, eps: float, iters: int):
  """GCA-INCE's loss after ``0..iters`` iterations and the dual on the way.

  Returns ``(losses, duals, final_loss)``: ``losses[k]`` is
  ``gca_ince(iters=k)``, computed as ``gca_ince(iters=1)`` started from the
  column potential after ``k - 1`` iterations (the same arithmetic);
  ``duals`` holds the dual at ``(0, 0)`` and after every half-step
  (``duals[1]`` is InfoNCE's plan); ``final_loss`` is ``gca_ince(iters=iters)``
  called directly, to confirm that the chained trajectory is the library's.
  """
  geometry = losses.batch_geometry(z1, z2)
  log_kernel = geometry.log_kernel(eps)
  n = log_kernel.shape[0]
  log_a = _uniform_log_marginal(n, log_kernel.dtype)  # gca_ince's default marginals
  dual = functools.partial(_dual, log_kernel, log_a, log_a, eps=eps)
  project = functools.partial(losses.sinkhorn, log_kernel, log_a, log_a)

  def step(log_v, _):
    loss = losses.gca_ince(z1, z2, eps=eps, iters=1, init_log_v=log_v)
    half = project(iters=0, init_log_v=log_v, final_row_step=True)
    full = project(iters=1, init_log_v=log_v)
    duals = jnp.stack([dual(half.log_u, log_v), dual(full.log_u, full.log_v)])
    return full.log_v, (loss, duals)

  zeros = jnp.zeros(n, log_kernel.dtype)
  _, (later_losses, later_duals) = jax.lax.scan(step, zeros, None, length=iters)
  first_loss = losses.gca_ince(z1, z2, eps=eps, iters=0)
  all_losses = jnp.concatenate([first_loss[None], later_losses])
  all_duals = jnp.concatenate([dual(zeros, zeros)[None], later_duals.reshape(-1)])
  return all_losses, all_duals, losses.gca_ince(z1, z2, eps=eps, iters=iters)


def _negatives_mask(log_plan, positives):
  """Candidate pairs that are not the anchor's positive (finite log-plan)."""
  columns = jnp.arange(log_plan.shape[1])[None, :]
  return jnp.isfinite(log_plan) & (columns != positives[:, None])


def plan_uniformity(log_plan, cost, positives):
  """Three uniformity measures of one plan (see the module docstring).

  Returns ``(plan_entropy, negatives_entropy, plan_weighted_uniformity)``.
  """
  log_mass = jax.nn.logsumexp(log_plan)
  plan = jnp.exp(log_plan - log_mass)
  entropy = -jnp.sum(jnp.where(plan > 0, plan * (log_plan - log_mass), 0.0))

  negatives = _negatives_mask(log_plan, positives)
  log_rows = jnp.where(negatives, log_plan, -jnp.inf)
  log_rows = log_rows - jax.nn.logsumexp(log_rows, axis=1, keepdims=True)
  rows = jnp.exp(log_rows)
  row_entropy = -jnp.sum(jnp.where(negatives, rows * log_rows, 0.0), axis=1)

  # |ẑ_i - ẑ_j|^2 = 2 C_ij for unit vectors.
  log_terms = jnp.where(negatives, log_rows - UNIFORMITY_T * 2.0 * cost, -jnp.inf)
  uniformity = jax.nn.logsumexp(log_terms) - math.log(log_plan.shape[0])
  return entropy, jnp.mean(row_entropy), uniformity


@functools.partial(jax.jit, static_argnames=("eps", "iters"))
def plan_uniformities(z1, z2, *, eps: float, iters: int):
  """:func:`plan_uniformity` of InfoNCE's plan and of GCA-INCE's after ``iters``.

  Returns ``(ince, gca)``, each a ``(3,)`` array. The plans are the ones the
  losses report (``return_aux=True``); the entropy is also checked against
  the library's own ``plan_entropy``.
  """
  geometry = losses.batch_geometry(z1, z2)
  _, ince_aux = losses.infonce(z1, z2, eps=eps, return_aux=True)
  _, gca_aux = losses.gca_ince(z1, z2, eps=eps, iters=iters, return_aux=True)
  measures = [jnp.stack(plan_uniformity(aux.log_plan, geometry.cost, geometry.positives))
              for aux in (ince_aux, gca_aux)]
  library_entropy = jnp.stack([ince_aux.plan_entropy, gca_aux.plan_entropy])
  return measures[0], measures[1], library_entropy


# ----------------------------------------------------------------------------
# One function per claim: a configuration in, a Check out (always in float64).


def _float64(check):
  """Runs ``check`` with float64 enabled, whatever the caller's setting."""

  @functools.wraps(check)
  def wrapped(config: Config) -> Check:
    with jax.enable_x64(True):
      return check(config)

  return wrapped


@_float64
def theorem1(config: Config) -> Check:
  """``gca_ince(iters=0)`` and ``hs_ince`` against ``infonce``."""
  z1, z2 = config_embeddings(config)
  reference = float(_infonce(z1, z2, eps=config.eps))
  values = [float(_gca_ince(z1, z2, eps=config.eps, iters=0)),
            float(_hs_ince(z1, z2, eps=config.eps))]
  worst = max(values, key=lambda v: abs(v - reference))
  return Check(_relative(abs(worst - reference), reference), worst, reference)


@_float64
def theorem2(config: Config) -> Check:
  """``gca_rince(iters=0)`` against ``rince``, at ``q = 0.6`` and ``q = 1``."""
  z1, z2 = config_embeddings(config)
  checks = []
  for q in (0.6, 1.0):
    reference = float(_rince(z1, z2, eps=config.eps, q=q))
    value = float(_gca_rince(z1, z2, eps=config.eps, iters=0, q=q))
    checks.append(Check(_relative(abs(value - reference), reference), value, reference))
  return max(checks, key=lambda c: c.violation)


@_float64
def theorem5(config: Config) -> Check:
  """``L(k) <= L(k - 1)`` for ``k = 1..T``; the worst step."""
  z1, z2 = config_embeddings(config)
  trajectory, _, direct = ince_trajectory(z1, z2, eps=config.eps, iters=config.iters)
  trajectory = np.asarray(trajectory)
  if abs(trajectory[-1] - float(direct)) > 1e-9 * max(1.0, abs(float(direct))):
    raise RuntimeError(  # the check would not be measuring the library's loss
        f"chained GCA-INCE trajectory ends at {trajectory[-1]!r}, gca_ince(iters="
        f"{config.iters}) is {float(direct)!r} ({config.label()}).")
  return _worst(trajectory[1:], trajectory[:-1])


@_float64
def theorem6(config: Config) -> Check:
  """``gca_rince(iters=T, q=1) <= rince(q=1)``."""
  z1, z2 = config_embeddings(config)
  # return_aux=True: the program theorem6_free_constant compiles as well.
  value, _ = _gca_rince(z1, z2, eps=config.eps, iters=config.iters, q=1.0, return_aux=True)
  reference = _rince(z1, z2, eps=config.eps, q=1.0)
  return _worst(value, reference)


@_float64
def theorem6_free_constant(config: Config) -> Check:
  """Why Theorem 6 can go either way: the same plan, the loss scaled by ``c``.

  A balanced plan fixes its potentials only up to ``(alpha - log c,
  beta + log c)``. Starting the iterations from ``v = c`` instead of 1
  (``init_log_v=log c``) gives the same plan and, at ``q = 1``, exactly ``c``
  times the loss, so ``gca_rince <= rince`` is not a property of the plan.
  Checks the identity for ``c = 0.5`` and ``2``; the violation also counts the
  largest relative change of the plan.
  """
  z1, z2 = config_embeddings(config)
  loss = functools.partial(_gca_rince, z1, z2, eps=config.eps, iters=config.iters,
                           q=1.0, return_aux=True)
  value, aux = loss()
  plan = np.exp(np.asarray(aux.log_plan))
  checks = []
  for c in (0.5, 2.0):
    scaled, scaled_aux = loss(init_log_v=math.log(c))
    plan_change = np.max(np.abs(np.exp(np.asarray(scaled_aux.log_plan)) - plan)) / np.max(plan)
    violation = max(_relative(abs(float(scaled) - c * float(value)), c * float(value)),
                    float(plan_change))
    checks.append(Check(violation, float(scaled), c * float(value)))
  return max(checks, key=lambda check: check.violation)


@_float64
def theorem7_dual(config: Config) -> Check:
  """The dual does not decrease over the half-steps (``-D_k <= -D_{k-1}``)."""
  z1, z2 = config_embeddings(config)
  _, duals, _ = ince_trajectory(z1, z2, eps=config.eps, iters=config.iters)
  duals = np.asarray(duals)
  check = _worst(-duals[1:], -duals[:-1])
  return Check(check.violation, -check.lhs, -check.rhs)


def _uniformity_check(config: Config, index: int, larger_is_uniform: bool) -> Check:
  z1, z2 = config_embeddings(config)
  ince, gca, _ = plan_uniformities(z1, z2, eps=config.eps, iters=config.iters)
  ince, gca = float(ince[index]), float(gca[index])
  if larger_is_uniform:  # claim gca >= ince, i.e. -gca <= -ince
    check = _worst(-gca, -ince)
    return Check(check.violation, gca, ince)
  return _worst(gca, ince)


@_float64
def theorem7_entropy(config: Config) -> Check:
  """``H(P_T) >= H(P_INCE)`` (plans normalised to mass 1)."""
  return _uniformity_check(config, 0, larger_is_uniform=True)


@_float64
def theorem7_negatives(config: Config) -> Check:
  """Mean entropy of each row's negatives: GCA's >= InfoNCE's."""
  return _uniformity_check(config, 1, larger_is_uniform=True)


@_float64
def theorem7_weighted_uniformity(config: Config) -> Check:
  """Plan-weighted uniformity loss: GCA's <= InfoNCE's."""
  return _uniformity_check(config, 2, larger_is_uniform=False)


CLAIMS = (
    Claim("Theorem 1", "identity", "gca_ince(iters=0) = hs_ince = infonce", theorem1,
          IDENTITY_TOLERANCE, uses_iters=False),
    Claim("Theorem 2", "identity", "gca_rince(iters=0) = rince (q = 0.6, 1)", theorem2,
          IDENTITY_TOLERANCE, uses_iters=False),
    Claim("Theorem 5", "loss", "GCA-INCE loss non-increasing in k = 0..T", theorem5,
          INEQUALITY_TOLERANCE),
    Claim("Theorem 6", "q = 1", "gca_rince(iters=T, q=1) <= rince(q=1)", theorem6,
          INEQUALITY_TOLERANCE),
    Claim("Theorem 6", "free constant",
          "v started at c (same plan): gca_rince(q=1) becomes c times it (c = 0.5, 2)",
          theorem6_free_constant, IDENTITY_TOLERANCE),
    Claim("Theorem 7", "dual", "entropic-OT dual non-decreasing over the half-steps",
          theorem7_dual, INEQUALITY_TOLERANCE),
    Claim("Theorem 7", "plan entropy", "H(P_T) >= H(P_INCE)", theorem7_entropy,
          INEQUALITY_TOLERANCE),
    Claim("Theorem 7", "negatives' entropy", "mean_i H(row i's negatives): P_T >= P_INCE",
          theorem7_negatives, INEQUALITY_TOLERANCE),
    Claim("Theorem 7", "plan-weighted uniformity",
          "log mean_i sum_neg P̄ exp(-2|ẑi-ẑj|²): P_T <= P_INCE",
          theorem7_weighted_uniformity, INEQUALITY_TOLERANCE),
)


# ----------------------------------------------------------------------------
# The grid, the run and the table.


def configurations(grid: Grid, uses_iters: bool = True) -> list[Config]:
  """Every configuration of ``grid`` (without the iterations if unused)."""
  iters_values = grid.iters_values if uses_iters else (None,)
  return [Config(family, batch, dim, eps, iters, seed)
          for seed, family, batch, dim, eps, iters in itertools.product(
              grid.seeds, grid.families, grid.batches, grid.dims, grid.eps_values,
              iters_values)]


def check_claim(claim: Claim, configs: Sequence[Config]) -> list[dict]:
  """One record per configuration: its parameters, the two sides, the violation."""
  records = []
  for config in configs:
    check = claim.check(config)
    records.append({**dataclasses.asdict(config), "lhs": check.lhs, "rhs": check.rhs,
                    "violation": check.violation,
                    "holds": bool(check.violation <= claim.tolerance)})
  return records


def summarize(claim: Claim, records: Sequence[dict]) -> dict:
  """The table row of a claim: counts and its worst configuration."""
  # A NaN violation (a non-finite loss) is the worst case there is.
  worst = max(records, key=lambda r: r["violation"] if not math.isnan(r["violation"])
              else math.inf)
  worst_config = Config(*(worst[f.name] for f in dataclasses.fields(Config)))
  return {"claim": claim.name, "reading": claim.reading, "statement": claim.statement,
          "tolerance": claim.tolerance, "tried": len(records),
          "holds": sum(r["holds"] for r in records), "worst_violation": worst["violation"],
          "worst_lhs": worst["lhs"], "worst_rhs": worst["rhs"],
          "worst_config": worst_config.label()}


def run(grid: Grid, claims: Sequence[Claim] = CLAIMS) -> dict:
  """Checks every claim on ``grid`` in float64; the summary rows and records."""
  with jax.enable_x64(True):
    results = {"claims": [], "records": {}}
    for claim in claims:
      records = check_claim(claim, configurations(grid, claim.uses_iters))
      key = f"{claim.name} ({claim.reading})"
      results["records"][key] = records
      results["claims"].append(summarize(claim, records))
  return results


def format_table(rows: Sequence[dict]) -> str:
  """A markdown table: claim, configurations tried, where it holds, worst case."""
  header = ("| claim | reading | statement | tried | holds | worst violation "
            "| worst case (lhs vs rhs) |")
  lines = [header, "|---|---|---|---|---|---|---|"]
  for row in rows:
    lines.append(
        f"| {row['claim']} | {row['reading']} | {row['statement']} | {row['tried']} "
        f"| {row['holds']} | {row['worst_violation']:.2e} "
        f"| {row['worst_lhs']:.6g} vs {row['worst_rhs']:.6g} ({row['worst_config']}) |")
  return "\n".join(lines)
