r"""The transport plan of each method on real embeddings.

Takes a batch of test images (an equal number per class, sorted by class),
embeds two augmented views of each with an encoder, and computes the plan
every loss aligns with its target (`gca_jax.losses` with ``return_aux``:
the row-softmax of INCE, the balanced Sinkhorn plan of GCA-INCE and
GCA-RINCE, IOT's normalised kernel, GCA-UOT's unbalanced plan), for one or
several ``eps``. Saves ``<out>/plans.png`` (one heat map per method and eps,
rows and columns ``[view 1 | view 2]``, so the positives are the two
off-diagonals; the class blocks show how much mass goes to same-class
negatives), ``<out>/plans.npz`` (the log-plans) and ``<out>/plans.json``
(plan entropy, mass on positives, final marginal error).

    python -m experiments.plans --workdir=runs/table2/cifar10/simclr/gca_uot/seed0 \
        --out=runs/plans --eps 0.1 0.5 1
    python -m experiments.plans --smoke --out=/tmp/plans_smoke

Without ``--workdir`` the encoder is a freshly initialised one of
``--config`` (a name of ``experiments/configs/``, its fields set with
``--config.<field>=<value>``; ``--smoke``: its ``small`` variant); its
embeddings are those of an untrained network. Needs matplotlib
(``pip install -e '.[experiments]'``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

try:
  from experiments import common
except ImportError:  # run as a script: python experiments/plans.py
  import common

# Methods of gca_jax.losses that expose their plan (RINCE is computed
# directly from logits, SimCLR's plan is INCE's).
PLAN_METHODS = ("INCE", "GCA-INCE", "GCA-RINCE", "IOT", "IOT-uni", "GCA-UOT")


def balanced_batch(labels, per_class: int):
  """Indices of ``per_class`` examples of each class, sorted by class."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  labels = np.asarray(labels)
  return np.concatenate([np.flatnonzero(labels == c)[:per_class]
                         for c in np.unique(labels)])


def method_plans(z1, z2, labels, eps_values):
  """{(label, eps): (log_plan, diagnostics)} for every plan method."""
  import functools  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from gca_jax import losses  # pylint: disable=g-import-not-at-top
  plans = {}
  for label in labels:
    m = common.method(label, "clean")
    for eps in eps_values:
      loss = functools.partial(losses.get(m.loss), return_aux=True,
                               **{**m.params, "eps": eps})
      _, aux = jax.jit(loss)(z1, z2)
      plans[(label, eps)] = (np.asarray(aux.log_plan), {
          "plan_entropy": float(aux.plan_entropy),
          "positive_mass": float(aux.positive_mass),
          "final_marginal_error": float(aux.marginal_error[-1])})
  return plans


def save_plans(plans, out: Path, class_of_row) -> Path:
  """Heat maps of the plans (each normalised to total mass 1, log10 scale)."""
  import numpy as np  # pylint: disable=g-import-not-at-top

  labels = list(dict.fromkeys(k[0] for k in plans))
  eps_values = list(dict.fromkeys(k[1] for k in plans))
  plt = common.pyplot()
  fig, axes = plt.subplots(len(eps_values), len(labels), squeeze=False,
                           figsize=(2.2 * len(labels), 2.3 * len(eps_values)))
  boundaries = np.flatnonzero(np.diff(class_of_row)) + 0.5
  for row, eps in enumerate(eps_values):
    for col, label in enumerate(labels):
      log_plan, diagnostics = plans[(label, eps)]
      finite = np.isfinite(log_plan)
      log_mass = np.log(np.exp(log_plan[finite] - log_plan[finite].max()).sum()) + (
          log_plan[finite].max())
      image = np.where(finite, (log_plan - log_mass) / np.log(10), np.nan)
      ax = axes[row, col]
      ax.imshow(image, cmap="viridis", vmin=np.nanmax(image) - 4, vmax=np.nanmax(image))
      for b in boundaries:
        ax.axhline(b, color="w", lw=0.3)
        ax.axvline(b, color="w", lw=0.3)
      ax.set_xticks([])
      ax.set_yticks([])
      ax.set_title(f"{label}, eps={eps:g}\npositives {diagnostics['positive_mass']:.2f}",
                   fontsize=8)
  return common.save_figure(fig, Path(out) / "plans.png", dpi=90)


def make_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--workdir", default=None,
                      help="A pre-training workdir (default: an untrained encoder).")
  parser.add_argument("--config", default="digits",
                      help="Config (experiments/configs/<name>.py) of the untrained "
                      "encoder when no --workdir is given; its fields are set with "
                      "--config.<field>=<value>.")
  parser.add_argument("--out", default="runs/plans", help="Where the figures go.")
  parser.add_argument("--methods", default="all",
                      help=f"Comma list of {', '.join(PLAN_METHODS)} or 'all'.")
  parser.add_argument("--eps", type=float, nargs="+", default=[0.5],
                      help="Entropic regularisations (one row of plots each).")
  parser.add_argument("--per_class", type=int, default=4,
                      help="Test images per class in the batch.")
  parser.add_argument("--max_classes", type=int, default=10,
                      help="At most this many classes in the batch.")
  parser.add_argument("--seed", type=int, default=0, help="Augmentation seed.")
  parser.add_argument("--smoke", action="store_true",
                      help="Tiny untrained encoder (the 'small' config; seconds on CPU).")
  return parser


def run(args) -> None:
  """Embeds the batch, computes every method's plan, saves figure and data."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from gca_jax.training import config as config_lib  # pylint: disable=g-import-not-at-top
  common.pyplot()  # fail now, without matplotlib
  methods = common.select(common.split_names(args.methods), PLAN_METHODS, "methods")
  if args.workdir:
    if args.config_overrides:
      raise common.ExperimentError("--config.* flags set up an untrained encoder; with "
                                   "--workdir the encoder is the run's")
    encoder = common.load_encoder(Path(args.workdir))
  else:
    config = common.load_config(args.config)
    if args.smoke:
      config_lib.small(config)
    encoder = common.untrained_encoder(common.apply_overrides(config, args.config_overrides))
  test = encoder.dataset.test
  keep = np.isin(test.labels, np.unique(test.labels)[:args.max_classes])
  indices = np.flatnonzero(keep)[balanced_batch(test.labels[keep], args.per_class)]
  images, labels = np.asarray(test.images[indices]), test.labels[indices]
  z1, z2 = common.embed_views(encoder, images, seed=args.seed)
  plans = method_plans(z1, z2, methods, args.eps)

  out = Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  class_of_row = np.concatenate([labels, labels])
  figure = save_plans(plans, out, class_of_row)
  np.savez_compressed(out / "plans.npz", labels=labels, **{
      f"{label}_eps{eps:g}": log_plan for (label, eps), (log_plan, _) in plans.items()})
  common.write_json(out / "plans.json", {
      "source": args.workdir or f"untrained {args.config}",
      "plans": {f"{label} eps={eps:g}": d for (label, eps), (_, d) in plans.items()}})
  for (label, eps), (_, d) in plans.items():
    common.log(f"{label:9s} eps={eps:<5g} entropy {d['plan_entropy']:.3f}  "
               f"mass on positives {d['positive_mass']:.3f}  "
               f"marginal error {d['final_marginal_error']:.2e}")
  common.log(f"figure: {figure}")


def main(argv=None) -> None:
  args, config_flags = make_parser().parse_known_args(argv)
  with common.one_line_errors():
    args.config_overrides = common.parse_config_overrides(config_flags)
    run(args)


if __name__ == "__main__":
  main()
