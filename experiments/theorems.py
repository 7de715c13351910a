"""The paper's theorems about the GCA projections, checked on a grid: the command line.

The claims, the grid and the checks are `gca_jax.theorems` (they ship with
the package); this entry point selects a grid, prints the table and writes
it as JSON.

    python -m experiments.theorems                  # the full grid (CPU, minutes)
    python -m experiments.theorems --smoke          # a tiny grid (seconds)
    python -m experiments.theorems --out=theorems.json --seeds=0,1
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import jax
from absl import flags

from experiments import entry
from gca_jax import theorems


def define_flags(flag_values: flags.FlagValues, argv) -> None:
  del argv  # no --config fields: the grid is the whole setting
  define = dict(flag_values=flag_values)
  flags.DEFINE_bool("smoke", False, "A tiny grid that runs in seconds (what CI runs).",
                    **define)
  flags.DEFINE_string("out", None, "Also write the table and every configuration's "
                      "record as JSON.", **define)
  entry.define_number_list("seeds", [0], "Seeds of the embeddings (one grid each).",
                           kind=int, **define)


def check_grid(args) -> dict:
  """Checks every claim on the grid the flags select; prints the table."""
  grid = theorems.SMOKE_GRID if args.smoke else theorems.FULL_GRID
  grid = dataclasses.replace(grid, seeds=tuple(args.seeds))
  results = theorems.run(grid)
  results["mode"] = "smoke" if args.smoke else "full"
  results["dtype"] = "float64"
  results["grid"] = dataclasses.asdict(grid)
  print(f"{results['mode']} grid, float64, on {jax.default_backend().upper()}: "
        + ", ".join(f"{k}={list(v)}" for k, v in results["grid"].items()))
  print(theorems.format_table(results["claims"]))
  if args.out:
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {out}", file=sys.stderr)
  return results


def main(argv=None) -> dict:
  return entry.main(define_flags, check_grid, argv)


if __name__ == "__main__":
  main()
