r"""Figure 1(B) of the paper: PACS with a domain-block target plan.

GCA aligns the transport plan of each batch with a target plan; here the
target is `gca_jax.losses.domain_target(domains, alpha, beta)` (paper
Sec. 3.4): 1 on positive pairs, ``alpha`` between other samples of the same
PACS domain (photo, art painting, cartoon, sketch), ``beta`` across domains.
For each (alpha, beta) of the sweep the script pre-trains a ResNet-18
(``experiments/configs/pacs.py``) on a stratified split of all four domains,
then fits two linear probes on the frozen features: one for the class and
one for the domain. The paper's Figure 1(B) plots both accuracies against
``alpha - beta``: a larger same-domain weight makes domains linearly
separable (domain accuracy up) while class accuracy stays or drops.

    python -m experiments.pacs_domains --data_dir=/path/to/pacs \
        --alphas 0 0.1 0.2 0.5 1 --betas 0 --seeds 0 1 2 --root=runs/pacs
    python -m experiments.pacs_domains --smoke --root=/tmp/pacs_smoke

``--smoke`` replaces PACS by the embedded digits with four synthetic
"domains" (original, inverted, dimmed, high-contrast images). Each run has
its own workdir ``<root>/<dataset>/<loss>/alpha<a>_beta<b>/seed<k>`` with
checkpoints (interrupted runs resume) and a ``metrics.json`` holding
``linear_probe_acc`` (class) and ``domain_linear_probe_acc``; the figure is
saved as ``<root>/pacs_domains.png``. ``python -m experiments.report``
tabulates the runs.

Note: `gca_jax.train` feeds a loss only the two views' embeddings, so a
target that depends on the batch's domains needs its own step; this script
builds it from `gca_jax.train.train_step` with the batch's domains passed to
the loss (global loss scope: the plan spans the whole global batch).
"""

from __future__ import annotations

import argparse
import functools
import time
from pathlib import Path

try:
  from experiments import common
except ImportError:  # run as a script: python experiments/pacs_domains.py
  import common

DOMAIN_METRIC = "domain_linear_probe_acc"
SMOKE_DOMAINS = ("original", "inverted", "dimmed", "high_contrast")
FIGURE = "pacs_domains.png"


def synthetic_domain_dataset(dataset, *, seed: int = 0):
  """``dataset`` with each image restyled as one of four synthetic domains."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from gca_jax.data import base  # pylint: disable=g-import-not-at-top

  def restyle(split, offset):
    domains = np.random.default_rng(seed + offset).integers(
        0, len(SMOKE_DOMAINS), len(split)).astype(np.int32)
    x = split.images.astype(np.float32)
    styles = [x, 255.0 - x, 0.4 * x, np.clip(2.0 * x - 128.0, 0, 255)]
    images = np.stack([styles[d][i] for i, d in enumerate(domains)])
    return base.ImageArrays(np.round(images).astype(np.uint8), split.labels, domains)

  train, test = restyle(dataset.train, 0), restyle(dataset.test, 1)
  mean, std = base.channel_stats(train.images)
  return dataset._replace(train=train, test=test, mean=mean, std=std,
                          name=f"{dataset.name}-domains", domain_names=SMOKE_DOMAINS)


def make_domain_step(config, setup, dataset, alpha: float, beta: float):
  """jitted ``step(state, train_images, train_domains) -> (state, metrics)``.

  As `gca_jax.train.make_train_step`'s ``on_split``, with the loss given the
  domain target of the batch being trained on.
  """
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from jax.sharding import PartitionSpec as P  # pylint: disable=g-import-not-at-top
  from gca_jax import losses, train  # pylint: disable=g-import-not-at-top
  from gca_jax.data import augment, feed  # pylint: disable=g-import-not-at-top

  loss = losses.get(config.loss)
  params = dict(config.loss_params)

  def step(state, views1, views2, domains):
    target = losses.domain_target(domains, alpha, beta)

    def loss_fn(z1, z2):
      value, aux = loss(z1, z2, target=target, return_aux=True, **params)
      return value, train.scalar_diagnostics(aux)

    return train.train_step(state, views1, views2, model=setup.model, target_model=None,
                            tx=setup.tx, schedule=setup.schedule, loss_fn=loss_fn,
                            config=config)

  data = P(train.DATA_AXIS)
  sharded = jax.shard_map(step, mesh=setup.mesh, in_specs=(P(), data, data, P()),
                          out_specs=(P(), P()), check_vma=False)

  @functools.partial(jax.jit, donate_argnums=0)
  def on_split(state, train_images, train_domains):
    epoch, step_in_epoch = jnp.divmod(state.step, setup.steps_per_epoch)
    indices = feed.batch_indices(config.seed, epoch, step_in_epoch, config.batch_size,
                                 train_images.shape[0])
    key = jax.random.fold_in(state.rng, state.step)
    views = augment.two_views(key, train_images[indices], policy=config.augmentation,
                              mean=dataset.mean, std=dataset.std,
                              out_size=config.image_size)
    return sharded(state, *views, train_domains[indices])

  return on_split


def train_with_domain_target(config, dataset, workdir: Path) -> dict:
  """Pre-trains with the domain target of ``config.domain_target``, then fits
  the class and domain probes; writes and returns ``metrics.json``."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from jax.sharding import NamedSharding, PartitionSpec as P  # pylint: disable=g-import-not-at-top
  from gca_jax import checkpointing, evaluation, train  # pylint: disable=g-import-not-at-top
  from gca_jax.data import FeedState  # pylint: disable=g-import-not-at-top

  if config.loss_scope != "global":
    raise SystemExit("error: the domain target spans the global batch; use "
                     "loss_scope=global")
  if not dataset.train.in_memory:
    raise SystemExit(f"error: the train split of {config.dataset} is decoded lazily "
                     "(too large for device memory); this script feeds from the device: "
                     "lower --override load_size=... (the config's 96 fits)")
  checkpointing.check_run_identity(workdir, config)
  setup = train.setup(config, dataset)
  step = make_domain_step(config, setup, dataset, config.domain_target.alpha,
                          config.domain_target.beta)
  checkpointer = checkpointing.Checkpointer(workdir, max_to_keep=config.max_checkpoints)
  state, epoch = setup.initial_state(config), 0
  if checkpointer.latest_step() is not None:
    state, position = checkpointer.restore(state)
    epoch = position["epoch"]
    common.log(f"resuming from epoch {epoch}")
  replicated = NamedSharding(setup.mesh, P())
  images = evaluation.global_array(dataset.train.images, replicated)
  domains = evaluation.global_array(dataset.train.domains, replicated)
  seconds, timed_steps, losses_of_epoch = 0.0, 0, []
  while epoch < config.epochs:
    tick, losses_of_epoch = time.perf_counter(), []
    for i in range(setup.steps_per_epoch):
      state, metrics = step(state, images, domains)
      losses_of_epoch.append(metrics["loss"])
      if i == 0 and timed_steps == 0:  # leave compilation out of the throughput
        jax.block_until_ready(metrics)
        tick = time.perf_counter()
      else:
        timed_steps += 1
    jax.block_until_ready(state)
    seconds += time.perf_counter() - tick
    epoch += 1
    if epoch == config.epochs or epoch % config.checkpoint_every_epochs == 0:
      checkpointer.save(state, FeedState(epoch, 0))
  checkpointer.close()

  encoder = common.Encoder(config, dataset, setup, train.variables_of(state))
  train_features = encoder.features(dataset.train.images)
  test_features = encoder.features(dataset.test.images)
  num_domains = len(dataset.domain_names)
  result = {
      "epochs": epoch,
      "final_loss": float(np.mean(jax.device_get(losses_of_epoch))) if losses_of_epoch
      else float("nan"),
      "images_per_second": timed_steps * config.batch_size / seconds if timed_steps
      else float("nan"),
      "linear_probe_acc": common.probe_accuracy(
          encoder, train_features, dataset.train.labels, test_features,
          dataset.test.labels, dataset.num_classes),
      DOMAIN_METRIC: common.probe_accuracy(
          encoder, train_features, dataset.train.domains, test_features,
          dataset.test.domains, num_domains),
  }
  common.write_json(Path(workdir) / common.METRICS, result)
  return result


def make_config(alpha: float, beta: float, seed: int, args):
  import ml_collections  # pylint: disable=g-import-not-at-top
  config = common.load_config("pacs")
  if args.smoke:
    common.shrink_for_smoke(config)
  config.loss = args.loss
  config.loss_params = ml_collections.ConfigDict(
      dict(common.method(args.method, "clean").params))
  config.domain_target = ml_collections.ConfigDict({"alpha": alpha, "beta": beta})
  config.seed = seed
  common.apply_common_flags(config, args)
  return config


def save_figure(root: Path) -> Path | None:
  """Class and domain accuracy against alpha - beta (mean over seeds)."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  by_gap: dict[float, list[tuple[float, float]]] = {}
  for record, metrics, _ in common.collect_runs(root):
    if record.get("experiment") == "pacs_domains" and DOMAIN_METRIC in metrics:
      gap = record["alpha"] - record["beta"]
      by_gap.setdefault(gap, []).append((metrics["linear_probe_acc"],
                                         metrics[DOMAIN_METRIC]))
  if not by_gap:
    return None
  gaps = sorted(by_gap)
  fig, ax = plt.subplots(figsize=(4.5, 3.2))
  for column, name, color in ((0, "class", "tab:blue"), (1, "domain", "tab:red")):
    stats = [common.mean_std([100 * v[column] for v in by_gap[g]]) for g in gaps]
    ax.errorbar(gaps, [s[0] for s in stats], yerr=[s[1] for s in stats], marker="o",
                color=color, label=f"{name} accuracy", capsize=3)
  ax.set_xlabel(r"$\alpha - \beta$")
  ax.set_ylabel("linear-probe accuracy (%)")
  ax.legend()
  fig.tight_layout()
  path = Path(root) / FIGURE
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  common.add_common_flags(parser, default_root="runs/pacs_domains")
  parser.add_argument("--alphas", type=float, nargs="+", default=None,
                      help="Same-domain weights (default 0 0.1 0.2 0.5 1; --smoke: 0 1).")
  parser.add_argument("--betas", type=float, nargs="+", default=[0.0],
                      help="Cross-domain weights (default 0).")
  parser.add_argument("--method", default="GCA-UOT",
                      choices=["INCE", "GCA-INCE", "GCA-RINCE", "IOT", "IOT-uni", "GCA-UOT"],
                      help="Loss (gca_jax.losses, which take target=).")
  return parser.parse_args(argv)


def main(argv=None) -> None:
  args = parse_args(argv)
  args.loss = common.method(args.method, "clean").loss
  alphas = args.alphas or ([0.0, 1.0] if args.smoke else [0.0, 0.1, 0.2, 0.5, 1.0])
  root = Path(args.root)
  dataset = None
  for alpha in alphas:
    for beta in args.betas:
      for seed in args.seeds:
        config = make_config(alpha, beta, seed, args)
        workdir = (root / config.dataset.replace("/", "_") / args.loss /
                   f"alpha{alpha:g}_beta{beta:g}" / f"seed{seed}")
        done = common.finished_metrics(workdir, DOMAIN_METRIC)
        if done is not None:
          common.log(f"[skip] {workdir} (finished)")
          continue
        if dataset is None:
          from gca_jax import train  # pylint: disable=g-import-not-at-top
          dataset = train.load_data(config)
          if args.smoke:
            dataset = synthetic_domain_dataset(dataset)
          if dataset.train.domains is None:
            raise SystemExit(f"error: dataset {config.dataset} has no domain labels")
        common.log(f"[run] {workdir}")
        common.write_json(workdir / common.RUN_RECORD, {
            "experiment": "pacs_domains", "dataset": config.dataset, "method": args.method,
            "loss": args.loss, "alpha": alpha, "beta": beta, "seed": seed,
            "smoke": args.smoke})
        metrics = train_with_domain_target(config, dataset, workdir)
        common.log(f"[done] {workdir}: class accuracy {metrics['linear_probe_acc']:.4f}, "
                   f"domain accuracy {metrics[DOMAIN_METRIC]:.4f}")
  figure = save_figure(root)
  if figure:
    common.log(f"figure: {figure}")


if __name__ == "__main__":
  main()
