r"""Sensitivity of the GCA losses to eps and to the number of iterations.

The paper's sensitivity study: pre-train with the entropic regularisation
``eps`` swept at the default 10 iterations, and the number of Sinkhorn
iterations swept at the default ``eps = 0.5``, then evaluate each encoder
with a linear probe. Runs are those of Table 2 (same configs, same
`runs.run_pretraining`: skip finished, resume interrupted) with one loss
parameter changed, in workdirs ``<root>/<dataset>/<method>/eps<e>_iters<t>/seed<k>``
(the default point is shared by both sweeps). The curves are saved as
``<root>/sensitivity.png`` (needs matplotlib: ``pip install -e '.[experiments]'``);
``python -m experiments.report`` tabulates them. Config fields are set with
``--config.<field>=<value>`` as in ``table2.py``.

    python -m experiments.sensitivity --dataset=cifar10 --config.data_dir=$TFDS_DIR \
        --methods=GCA-INCE,GCA-UOT --eps_values=0.1,0.2,0.5,1 \
        --iters_values=1,2,5,10,20 --seeds=0,1,2 --root=runs/sensitivity
    python -m experiments.sensitivity --smoke --root=/tmp/sensitivity_smoke
"""

from __future__ import annotations

from pathlib import Path

from absl import flags

from experiments import entry, methods, plotting, runs, table2
from gca_jax.data import augment

FIGURE = "sensitivity.png"
# (The published GCA-RINCE preset always runs 10 iterations: sweep it with
# --implementation=clean.)
ITERATIVE_METHODS = ("GCA-INCE", "GCA-RINCE", "IOT", "IOT-uni", "GCA-UOT")


def sweep_points(eps_values, iters_values, default_eps: float, default_iters: int):
  """(eps, iters) pairs: eps swept at default iters, iters at default eps."""
  points = [(e, default_iters) for e in eps_values]
  points += [(default_eps, t) for t in iters_values if (default_eps, t) not in points]
  return points


def save_figure(root: Path) -> Path | None:
  """Linear accuracy against eps (left) and iterations (right), per method."""
  plt = plotting.pyplot()
  finished = [(r, m) for r, m, _ in runs.collect_runs(root)
              if r.get("experiment") == "sensitivity"]
  if not finished:
    return None
  fig, axes = plt.subplots(1, 2, figsize=(8, 3.2), sharey=True)
  for ax, swept, fixed in ((axes[0], "eps", "iters"), (axes[1], "iters", "eps")):
    for label in sorted({r["method"] for r, _ in finished}):
      curve: dict[float, list[float]] = {}
      for r, m in finished:
        if r["method"] == label and r[fixed] == r[f"default_{fixed}"]:
          curve.setdefault(r[swept], []).append(100 * m["linear_probe_acc"])
      plotting.errorbar_curve(ax, curve, label=label)
    ax.set_xlabel(r"$\varepsilon$" if swept == "eps" else "iterations")
    if swept == "eps":
      ax.set_xscale("log")
  axes[0].set_ylabel("linear-probe accuracy (%)")
  axes[1].legend()
  return plotting.save_figure(fig, Path(root) / FIGURE)


def define_flags(flag_values: flags.FlagValues, argv) -> None:
  entry.define_run_flags(flag_values, argv, default_root="runs/sensitivity")
  define = dict(flag_values=flag_values)
  flags.DEFINE_string("methods", None, f"Comma list of {', '.join(ITERATIVE_METHODS)} "
                      "(default: GCA-INCE,GCA-UOT; --smoke: GCA-UOT).", **define)
  flags.DEFINE_enum("dataset", None, list(table2.DATASETS),
                    "Default cifar10 (--smoke: digits).", **define)
  flags.DEFINE_enum("policy", "simclr", augment.POLICIES, "Augmentation policy.", **define)
  entry.define_number_list("eps_values", None, "Default 0.1,0.2,0.5,1 (--smoke: 0.5,1).",
                           kind=float, **define)
  entry.define_number_list("iters_values", None, "Default 1,2,5,10,20 (--smoke: 2,10).",
                           kind=int, **define)
  flags.DEFINE_enum("implementation", "published", methods.IMPLEMENTATIONS,
                    "published: gca_jax.reference presets; clean: gca_jax.losses.", **define)


def run(args) -> None:
  """Trains every point of the sweeps (skipping finished runs), then plots."""
  plotting.pyplot()  # fail now, not after the runs, without matplotlib
  labels = entry.select(entry.split_names(args.methods or (
      "GCA-UOT" if args.smoke else "GCA-INCE,GCA-UOT")), ITERATIVE_METHODS, "methods")
  dataset = args.dataset or ("digits" if args.smoke else "cifar10")
  eps_values = args.eps_values or ([0.5, 1.0] if args.smoke else [0.1, 0.2, 0.5, 1.0])
  iters_values = args.iters_values or ([2, 10] if args.smoke else [1, 2, 5, 10, 20])
  root = Path(args.root)
  for label in labels:
    base = methods.method(label, args.implementation)
    default_eps, default_iters = base.params["eps"], base.params["iters"]
    for eps, iters in sweep_points(eps_values, iters_values, default_eps, default_iters):
      m = methods.with_loss_param(methods.with_loss_param(base, "eps", eps), "iters", iters)
      for seed in args.seeds:
        workdir = root / dataset / m.slug / f"eps{eps:g}_iters{iters}" / f"seed{seed}"
        record = {"experiment": "sensitivity", "method": label, "dataset": dataset,
                  "policy": args.policy, "eps": eps, "iters": iters,
                  "default_eps": default_eps, "default_iters": default_iters,
                  "seed": seed, "loss": m.loss, "implementation": args.implementation,
                  "smoke": args.smoke}
        config = table2.make_config(dataset, args.policy, m, seed, smoke=args.smoke,
                                    overrides=args.config_overrides)
        runs.run_pretraining(config, workdir, record)
  figure = save_figure(root)
  if figure:
    runs.log(f"figure: {figure}")


def main(argv=None) -> None:
  entry.main(define_flags, run, argv)


if __name__ == "__main__":
  main()
