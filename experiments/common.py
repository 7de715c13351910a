"""Helpers shared by the experiment entry points of ``experiments/``.

The entry points (``table2.py``, ``pacs_domains.py``, ``sensitivity.py``,
``plans.py``, ``report.py``) are thin layers over `gca_jax.train` (what
``python -m gca_jax.pretrain`` runs) and `gca_jax.evaluation`; what they have
in common lives here:

* configs: `load_config` reads ``experiments/configs/<name>.py``,
  `apply_overrides` applies ``--override field=value`` flags,
  `shrink_for_smoke` turns any config into a seconds-long CPU run;
* methods: the rows of the paper's Table 2 and the loss each one trains
  with, for the published-code presets (`gca_jax.reference`, default: what
  the paper's numbers come from) or the clean losses of `gca_jax.losses`;
* runs: `run_pretraining` gives every run its own workdir with an
  ``experiment.json`` record (what the run is, for `report.py`), skips
  finished runs and resumes interrupted ones from their last checkpoint;
* encoders: `load_encoder` / `untrained_encoder` and `embed_views` for the
  analyses that look at embeddings (transport plans, corruption probes).
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterable, Sequence

EXPERIMENTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = EXPERIMENTS_DIR.parent
CONFIG_DIR = EXPERIMENTS_DIR / "configs"
RUN_RECORD = "experiment.json"
METRICS = "metrics.json"
POLICIES = ("simclr", "large_erase", "brightness", "strong_crop")

# ---------------------------------------------------------------------------
# Configs.


def load_config(name: str):
  """``get_config()`` of ``experiments/configs/<name>.py``."""
  path = CONFIG_DIR / f"{name}.py"
  if not path.exists():
    available = sorted(p.stem for p in CONFIG_DIR.glob("*.py"))
    raise SystemExit(f"error: no config '{name}' in {CONFIG_DIR.name}/ "
                     f"(available: {', '.join(available)})")
  spec = importlib.util.spec_from_file_location(f"gca_config_{name}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def set_field(config, dotted: str, value: Any) -> None:
  """``config.a.b = value`` for ``dotted == "a.b"`` (fields must exist)."""
  *parents, leaf = dotted.split(".")
  node = config
  for parent in parents:
    node = node[parent]
  if leaf not in node:
    raise SystemExit(f"error: the config has no field '{dotted}'")
  node[leaf] = value


def parse_value(text: str) -> Any:
  """A Python literal (number, bool, None, list) if ``text`` is one, else the string."""
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text


def apply_overrides(config, overrides: Iterable[str]) -> None:
  """Applies ``field=value`` strings (e.g. ``model.dtype=float32``)."""
  for override in overrides:
    field, sep, value = override.partition("=")
    if not sep:
      raise SystemExit(f"error: --override expects field=value, got '{override}'")
    set_field(config, field.strip(), parse_value(value.strip()))


def shrink_for_smoke(config, *, dataset: str = "digits") -> None:
  """Makes ``config`` a seconds-long CPU run: digits at 8x8, a 4-channel
  ResNet, batch 64, one epoch, a 50-step linear probe."""
  config.dataset = dataset
  config.load_size = 8
  config.image_size = None
  config.model.name = "resnet_small"
  config.model.stem = "cifar"
  config.model.width = 4
  config.model.dtype = "float32"
  config.model.projector_hidden_dim = 32
  config.model.projection_dim = 16
  config.model.predictor_hidden_dim = 32
  config.optimizer = "sgd"
  config.learning_rate = 0.1
  config.lr_scaling = "none"
  config.batch_size = 64
  config.epochs = 1
  config.warmup_epochs = 0.0
  config.eval_every_epochs = 0
  config.linear_probe = True
  config.linear_probe_steps = 50
  config.probe_random_init = False
  config.checkpoint_every_epochs = 1
  config.log_every_steps = 10
  config.progress_bar = False


def add_common_flags(parser, *, default_root: str) -> None:
  """Flags every training entry point has."""
  parser.add_argument("--root", default=default_root,
                      help="Directory under which every run gets its own workdir.")
  parser.add_argument("--seeds", type=int, nargs="+", default=[0],
                      help="Seeds (model init, augmentation, shuffling); one run each.")
  parser.add_argument("--epochs", type=int, default=None,
                      help="Pre-training epochs (default: the config's, 500 for CIFAR).")
  parser.add_argument("--batch_size", type=int, default=None,
                      help="Global batch size (default: the config's, 512 for CIFAR).")
  parser.add_argument("--data_dir", default=None,
                      help="Where the prepared datasets are (config.data_dir).")
  parser.add_argument("--override", action="append", default=[], metavar="FIELD=VALUE",
                      help="Set any config field, e.g. --override model.dtype=float32 "
                      "or --override dataset=npz:cifar10_subset.npz (repeatable).")
  parser.add_argument("--smoke", action="store_true",
                      help="Tiny end-to-end run on CPU in seconds (digits, 1 epoch, "
                      "tiny model); for tests.")


def apply_common_flags(config, args) -> None:
  """``--epochs``, ``--batch_size``, ``--data_dir`` and ``--override``."""
  if args.epochs is not None:
    config.epochs = args.epochs
  if args.batch_size is not None:
    config.batch_size = args.batch_size
  if args.data_dir is not None:
    config.data_dir = args.data_dir
  apply_overrides(config, args.override)


def split_names(text: str) -> list[str]:
  return [name.strip() for name in text.split(",") if name.strip()]


def select(requested: Sequence[str], available: Sequence[str], what: str) -> list[str]:
  """``requested`` names, checked against ``available`` ("all": every one)."""
  if list(requested) == ["all"]:
    return list(available)
  unknown = [name for name in requested if name not in available]
  if unknown:
    raise SystemExit(f"error: unknown {what} {unknown}; choose from "
                     f"{', '.join(available)} (or 'all')")
  return list(requested)


# ---------------------------------------------------------------------------
# Methods: the rows of Table 2.


@dataclasses.dataclass(frozen=True)
class Method:
  """A row of Table 2: ``config.loss`` and ``config.loss_params`` to train it."""

  label: str
  loss: str
  params: dict

  @property
  def slug(self) -> str:
    return self.label.lower().replace("-", "_")


# The paper code's defaults: eps 0.5, 10 iterations, lam 0.01, q 0.6,
# relaxations 0.2, CE weight 1, RINCE weight 0.02 (gca_jax.reference names).
PUBLISHED_PARAMS = dict(eps=0.5, iters=10, lam=0.01, q=0.6, relax1=0.2, relax2=0.2,
                        r1=1.0, r2=0.02)
METHOD_LABELS = ("INCE", "GCA-INCE", "RINCE", "GCA-RINCE", "SimCLR", "BYOL", "IOT",
                 "IOT-uni", "GCA-UOT")
# Published code: INCE and RINCE are its half-step (HS) losses, which equal
# InfoNCE and RINCE (Theorems 1 and 2) in the code's plan formulation; SimCLR
# is its NT-Xent.
PUBLISHED_LOSSES = {
    "INCE": "hs_ince", "GCA-INCE": "gca_ince", "RINCE": "hs_rince",
    "GCA-RINCE": "gca_rince", "SimCLR": "NT_Xent", "IOT": "iot", "IOT-uni": "iot_uni",
    "GCA-UOT": "gca_uot",
}
EPS, ITERS, LAM, Q = 0.5, 10, 0.01, 0.6
CLEAN_METHODS = {
    "INCE": ("infonce", dict(eps=EPS)),
    "GCA-INCE": ("gca_ince", dict(eps=EPS, iters=ITERS)),
    "RINCE": ("rince", dict(eps=EPS, lam=LAM, q=Q)),
    "GCA-RINCE": ("gca_rince", dict(eps=EPS, iters=ITERS, lam=LAM, q=Q)),
    # In the clean library SimCLR's NT-Xent is InfoNCE itself.
    "SimCLR": ("infonce", dict(eps=EPS)),
    "IOT": ("iot", dict(eps=EPS, iters=ITERS)),
    "IOT-uni": ("iot_uni", dict(eps=EPS, iters=ITERS, lambda_p=0.2)),
    "GCA-UOT": ("gca_uot", dict(eps=EPS, iters=ITERS, rho_a=0.2, rho_b=0.2, lam=LAM,
                                q=Q, w_ce=1.0, w_rince=0.02)),
}
IMPLEMENTATIONS = ("published", "clean")


def method(label: str, implementation: str = "published") -> Method:
  """The loss that trains Table 2's row ``label``.

  ``"published"``: the presets of `gca_jax.reference` (the code behind the
  paper's numbers); ``"clean"``: the paper-faithful `gca_jax.losses`.
  BYOL is the same in both.
  """
  if label == "BYOL":
    return Method(label, "byol", {})
  if implementation == "published":
    return Method(label, f"reference/{PUBLISHED_LOSSES[label]}", dict(PUBLISHED_PARAMS))
  if implementation == "clean":
    loss, params = CLEAN_METHODS[label]
    return Method(label, loss, dict(params))
  raise SystemExit(f"error: --implementation must be one of {IMPLEMENTATIONS}")


def with_loss_param(m: Method, name: str, value) -> Method:
  """``m`` with one loss hyper-parameter changed (eps, iters, ...)."""
  if name not in m.params:
    raise SystemExit(f"error: {m.label} ({m.loss}) has no parameter '{name}'")
  return dataclasses.replace(m, params={**m.params, name: value})


def configure_method(config, m: Method) -> None:
  import ml_collections  # pylint: disable=g-import-not-at-top
  config.loss = m.loss
  config.loss_params = ml_collections.ConfigDict(m.params)


# ---------------------------------------------------------------------------
# Runs.


def read_json(path: Path) -> dict | None:
  try:
    return json.loads(Path(path).read_text())
  except (FileNotFoundError, json.JSONDecodeError):
    return None


def write_json(path: Path, value: dict) -> None:
  """Writes atomically (a killed process never leaves half a file)."""
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_suffix(path.suffix + ".tmp")
  tmp.write_text(json.dumps(value, indent=2, sort_keys=True))
  tmp.replace(path)


def has_checkpoint(workdir: Path) -> bool:
  checkpoints = Path(workdir) / "checkpoints"
  return checkpoints.is_dir() and any(p.name.isdigit() for p in checkpoints.iterdir())


def finished_metrics(workdir: Path, required: str = "linear_probe_acc") -> dict | None:
  metrics = read_json(Path(workdir) / METRICS)
  return metrics if metrics and required in metrics else None


def log(message: str) -> None:
  print(message, flush=True)


def run_linear_eval(workdir: Path) -> dict:
  """``python -m gca_jax.linear_eval --workdir`` (adds linear_probe_acc)."""
  subprocess.run([sys.executable, "-m", "gca_jax.linear_eval", f"--workdir={workdir}"],
                 check=True, cwd=REPO_ROOT)
  return read_json(Path(workdir) / METRICS)


def run_pretraining(config, workdir: Path, record: dict) -> dict:
  """Pre-trains ``config`` in ``workdir`` then evaluates it linearly.

  Finished runs (``metrics.json`` with a linear-probe accuracy) are skipped;
  a workdir with a checkpoint resumes from it, so an interrupted sweep loses
  at most ``config.checkpoint_every_epochs`` epochs per run. ``record``
  (what the run is) is stored as ``experiment.json`` for `report.py`.
  Returns the run's metrics.
  """
  workdir = Path(workdir)
  from gca_jax import checkpointing  # pylint: disable=g-import-not-at-top
  try:  # a workdir of another run (e.g. other --epochs) is neither skipped nor resumed
    checkpointing.check_run_identity(workdir, config)
  except checkpointing.RunMismatchError as e:
    raise SystemExit(f"error: {e}") from None
  done = finished_metrics(workdir)
  if done is not None:
    log(f"[skip] {workdir} (finished: linear-probe accuracy "
        f"{done['linear_probe_acc']:.4f})")
    return done
  from gca_jax import train  # pylint: disable=g-import-not-at-top
  resume = has_checkpoint(workdir)
  log(f"[{'resume' if resume else 'run'}] {workdir}")
  write_json(workdir / RUN_RECORD, record)
  metrics = train.train_and_evaluate(config, workdir, resume=resume)
  if "linear_probe_acc" not in metrics:
    metrics = run_linear_eval(workdir)
  log(f"[done] {workdir}: linear-probe accuracy {metrics['linear_probe_acc']:.4f}, "
      f"{metrics.get('images_per_second', float('nan')):.0f} images/s")
  return metrics


def collect_runs(root: Path) -> list[tuple[dict, dict, Path]]:
  """(record, metrics, workdir) of every finished run under ``root``."""
  runs = []
  for record_path in sorted(Path(root).rglob(RUN_RECORD)):
    metrics = read_json(record_path.parent / METRICS)
    record = read_json(record_path)
    if record is not None and metrics is not None:
      runs.append((record, metrics, record_path.parent))
  return runs


def mean_std(values: Sequence[float]) -> tuple[float, float]:
  """Mean and sample standard deviation (0 for a single value)."""
  values = [float(v) for v in values]
  mean = sum(values) / len(values)
  if len(values) < 2:
    return mean, 0.0
  return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def errorbar_curve(ax, samples_by_x: dict, **kwargs) -> None:
  """Plots mean +/- std over seeds of ``samples_by_x[x]`` against sorted x."""
  xs = sorted(samples_by_x)
  stats = [mean_std(samples_by_x[x]) for x in xs]
  ax.errorbar(xs, [s[0] for s in stats], yerr=[s[1] for s in stats],
              marker="o", capsize=3, **kwargs)


def save_figure(fig, path: Path, dpi: int = 100) -> Path:
  """Saves ``fig`` (tight layout) to ``path`` and releases it."""
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig.tight_layout()
  fig.savefig(path, dpi=dpi)
  plt.close(fig)
  return Path(path)


def format_mean_std(values: Sequence[float], scale: float = 100.0) -> str:
  if not values:
    return "–"
  mean, std = mean_std([v * scale for v in values])
  if len(values) == 1:
    return f"{mean:.2f} (n=1)"
  return f"{mean:.2f} ± {std:.2f} (n={len(values)})"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
  lines = ["| " + " | ".join(header) + " |",
           "| " + " | ".join("---" for _ in header) + " |"]
  lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
  return "\n".join(lines)


# ---------------------------------------------------------------------------
# Encoders and embeddings.


@dataclasses.dataclass
class Encoder:
  """A model with its variables, and the dataset/config it belongs to."""

  config: Any
  dataset: Any
  setup: Any            # gca_jax.train.Setup
  variables: dict

  @functools.cached_property
  def embed_fn(self):
    """jitted ``(variables, images_uint8) -> (features, projections)``."""
    from gca_jax import evaluation  # pylint: disable=g-import-not-at-top
    return evaluation.make_embed_fn(self.setup.model, self.setup.mesh,
                                    mean=self.dataset.mean, std=self.dataset.std,
                                    image_size=self.config.image_size)

  def features(self, images) -> Any:
    """Encoder features (numpy) of uint8 images, in evaluation mode."""
    from gca_jax import evaluation  # pylint: disable=g-import-not-at-top
    features, _ = evaluation.embed_split(self.embed_fn, self.variables, images,
                                         self.setup.mesh)
    return features


def load_encoder(workdir: Path) -> Encoder:
  """The encoder of the latest checkpoint of a pre-training workdir."""
  from gca_jax import train  # pylint: disable=g-import-not-at-top
  config, dataset, setup, state = train.load_trained(workdir)
  return Encoder(config, dataset, setup, train.variables_of(state))


def untrained_encoder(config, dataset=None) -> Encoder:
  """A freshly initialised encoder of ``config`` (seeded by config.seed)."""
  from gca_jax import train  # pylint: disable=g-import-not-at-top
  dataset = train.load_data(config) if dataset is None else dataset
  setup = train.setup(config, dataset)
  return Encoder(config, dataset, setup, train.variables_of(setup.initial_state(config)))


def embed_views(encoder: Encoder, images_uint8, *, seed: int = 0,
                policy: str = "simclr"):
  """Projections ``(z1, z2)`` of two augmented views of each image (eval mode)."""
  import jax  # pylint: disable=g-import-not-at-top
  from gca_jax.data import augment  # pylint: disable=g-import-not-at-top
  views = augment.two_views(jax.random.PRNGKey(seed), jax.numpy.asarray(images_uint8),
                            policy=policy, mean=encoder.dataset.mean,
                            std=encoder.dataset.std, out_size=encoder.config.image_size)
  apply = jax.jit(lambda v, x: encoder.setup.model.apply(v, x, train=False).projection)
  return tuple(apply(encoder.variables, v) for v in views)


def probe_accuracy(encoder: Encoder, train_features, train_labels, test_features,
                   test_labels, num_classes: int) -> float:
  """Linear-probe test accuracy with the probe settings of the run's config."""
  from gca_jax import evaluation  # pylint: disable=g-import-not-at-top
  config = encoder.config
  return evaluation.linear_probe(
      train_features, train_labels, test_features, test_labels, num_classes,
      steps=config.linear_probe_steps, learning_rate=config.linear_probe_learning_rate,
      weight_decay=config.linear_probe_weight_decay)
