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
        --out=runs/plans --eps=0.1,0.5,1
    python -m experiments.plans --smoke --out=/tmp/plans_smoke

Without ``--workdir`` the encoder is a freshly initialised one of
``--config`` (a config file, default ``experiments/configs/digits.py``, its
fields set with ``--config.<field>=<value>``; ``--smoke``: made small first,
the ``--config.*`` fields applied after); its embeddings are those of an
untrained network. Needs matplotlib
(``pip install -e '.[experiments]'``).
"""

from __future__ import annotations

from pathlib import Path

from absl import flags

from experiments import entry, methods, plotting, runs, trainer

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
    m = methods.method(label, "clean")
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
  plt = plotting.pyplot()
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
  return plotting.save_figure(fig, Path(out) / "plans.png", dpi=90)


def define_flags(flag_values: flags.FlagValues, argv) -> None:
  define = dict(flag_values=flag_values)
  flags.DEFINE_string("workdir", None, "A pre-training workdir (default: an untrained "
                      "encoder).", **define)
  entry.define_config_file(flag_values, argv, str(runs.CONFIG_DIR / "digits.py"),
                           "Config file of the untrained encoder when no --workdir is "
                           "given; its fields are set with --config.<field>=<value>.")
  flags.DEFINE_string("out", "runs/plans", "Where the figures go.", **define)
  flags.DEFINE_string("methods", "all", f"Comma list of {', '.join(PLAN_METHODS)} or "
                      "'all'.", **define)
  entry.define_number_list("eps", [0.5], "Entropic regularisations (one row of plots "
                           "each).", kind=float, **define)
  flags.DEFINE_integer("per_class", 4, "Test images per class in the batch.", **define)
  flags.DEFINE_integer("max_classes", 10, "At most this many classes in the batch.",
                       **define)
  flags.DEFINE_integer("seed", 0, "Augmentation seed.", **define)
  flags.DEFINE_bool("smoke", False, "Tiny untrained encoder (the 'small' config; seconds "
                    "on CPU).", **define)


def run(args) -> None:
  """Embeds the batch, computes every method's plan, saves figure and data."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  plotting.pyplot()  # fail now, without matplotlib
  chosen = entry.select(entry.split_names(args.methods), PLAN_METHODS, "methods")
  if args.workdir:
    if args.config_overrides:
      raise entry.ExperimentError("--config.* flags set up an untrained encoder; with "
                                  "--workdir the encoder is the run's")
    encoder = trainer.load_encoder(Path(args.workdir))
  else:
    config = args.config
    if args.smoke:  # the --config.* fields (applied while parsing) go on top of small
      config = entry.apply_overrides(trainer.small(config), args.config_overrides)
    encoder = trainer.untrained_encoder(config)
  test = encoder.dataset.test
  keep = np.isin(test.labels, np.unique(test.labels)[:args.max_classes])
  indices = np.flatnonzero(keep)[balanced_batch(test.labels[keep], args.per_class)]
  images, labels = np.asarray(test.images[indices]), test.labels[indices]
  z1, z2 = trainer.embed_views(encoder, images, seed=args.seed)
  plans = method_plans(z1, z2, chosen, args.eps)

  out = Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  class_of_row = np.concatenate([labels, labels])
  figure = save_plans(plans, out, class_of_row)
  np.savez_compressed(out / "plans.npz", labels=labels, **{
      f"{label}_eps{eps:g}": log_plan for (label, eps), (log_plan, _) in plans.items()})
  runs.write_json(out / "plans.json", {
      "source": args.workdir or f"untrained {Path(args.config_file).stem}",
      "plans": {f"{label} eps={eps:g}": d for (label, eps), (_, d) in plans.items()}})
  for (label, eps), (_, d) in plans.items():
    runs.log(f"{label:9s} eps={eps:<5g} entropy {d['plan_entropy']:.3f}  "
             f"mass on positives {d['positive_mass']:.3f}  "
             f"marginal error {d['final_marginal_error']:.2e}")
  runs.log(f"figure: {figure}")


def main(argv=None) -> None:
  entry.main(define_flags, run, argv)


if __name__ == "__main__":
  main()
