"""Helpers shared by the experiment entry points of ``experiments/``.

The entry points (``table2.py``, ``pacs_domains.py``, ``sensitivity.py``,
``plans.py``, ``report.py``) are thin layers over `gca_jax.training` (what
``python -m gca_jax.pretrain`` runs), `gca_jax.evaluation` and
`gca_jax.linear_eval`; what they have in common lives here:

* configs: `load_config` reads ``experiments/configs/<name>.py``; a script
  takes its own flags with argparse and leaves ml_collections'
  ``--config.<field>=<value>`` overrides to `parse_config_overrides` (typed
  as the trainer's config) and `apply_overrides`; ``--smoke`` is
  `gca_jax.training.config.small`;
* methods: the rows of the paper's Table 2 and the loss each one trains
  with, for the published-code presets (`gca_jax.reference`, default: what
  the paper's numbers come from) or the clean losses of `gca_jax.losses`;
* runs: `run_pretraining` gives every run its own workdir with an
  ``experiment.json`` record (what the run is, for `report.py`), skips
  finished runs and lets the trainer continue interrupted ones;
* encoders: `load_encoder` / `untrained_encoder` and `embed_views` for the
  analyses that look at embeddings (transport plans, corruption probes);
* errors: helpers raise (`ExperimentError` and the library's one-line
  errors); only a script's ``main`` turns them into one ``error:`` line and an
  exit status, with `one_line_errors`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib.util
import json
import math
import os
import sys
from pathlib import Path
from typing import Any, Sequence

from gca_jax import cli
from gca_jax.data import augment

EXPERIMENTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = EXPERIMENTS_DIR.parent
CONFIG_DIR = EXPERIMENTS_DIR / "configs"
RUN_RECORD = "experiment.json"
METRICS = "metrics.json"
POLICIES = augment.POLICIES
CONFIG_FLAG_PREFIX = "--config."
INSTALL_EXPERIMENTS = "pip install -e '.[experiments]'"

# Exit statuses, as every command line (gca_jax.cli).
EXIT_USAGE, EXIT_DIVERGED, EXIT_INTERRUPTED = (
    cli.EXIT_USAGE, cli.EXIT_DIVERGED, cli.EXIT_INTERRUPTED)


class ExperimentError(ValueError):
  """An experiment cannot run as asked (one-line message)."""


class MissingDependencyError(ImportError):
  """An optional package an experiment needs is not installed (one line)."""


# ---------------------------------------------------------------------------
# Errors.


@contextlib.contextmanager
def one_line_errors():
  """Turns the errors a user can cause into one ``error:`` line on stderr and
  an exit status (2: unusable input, 1: a diverged run, 130: interrupted, as
  ``python -m gca_jax.pretrain``). For a script's ``main`` only."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  from gca_jax.data import DatasetError  # pylint: disable=g-import-not-at-top
  from gca_jax.training import ConfigError, checkpoint, loop  # pylint: disable=g-import-not-at-top
  try:
    yield
  except loop.Interrupted as e:
    print(f"{e}\nRe-run the same experiment command to continue.", file=sys.stderr,
          flush=True)
    sys.stdout.flush()
    os._exit(EXIT_INTERRUPTED)  # pylint: disable=protected-access
  except loop.TrainingDiverged as e:
    cli.fail(cli.error_text(e), EXIT_DIVERGED)
  except (ExperimentError, ConfigError, checkpoint.WorkdirError, DatasetError,
          MissingDependencyError, flags.Error) as e:
    cli.fail(cli.error_text(e), EXIT_USAGE)


def pyplot():
  """``matplotlib.pyplot`` with the Agg backend, or MissingDependencyError.

  Scripts that plot call it before any training, so a missing matplotlib
  stops them at once rather than after hours of runs."""
  try:
    import matplotlib  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise MissingDependencyError(f"this experiment plots with matplotlib, which is "
                                 f"not installed: {INSTALL_EXPERIMENTS}") from None
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


# ---------------------------------------------------------------------------
# Configs.


def config_names() -> list[str]:
  return sorted(p.stem for p in CONFIG_DIR.glob("*.py"))


def load_config(name: str, variant: str | None = None):
  """``get_config(variant)`` of ``experiments/configs/<name>.py``."""
  path = CONFIG_DIR / f"{name}.py"
  if not path.exists():
    raise ExperimentError(f"no config {name!r} in experiments/configs/ (available: "
                          f"{', '.join(config_names())})")
  spec = importlib.util.spec_from_file_location(f"gca_config_{name}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(variant)


def parse_config_overrides(args: Sequence[str]) -> dict[str, Any]:
  """``{"a.b": value}`` from ``--config.a.b=value`` arguments.

  ml_collections parses them (`config_flags`) with the types of the
  trainer's config (`gca_jax.training.config.get_config`), which every
  experiment config extends; raises a one-line error for an unknown field, a
  value of the wrong type or an argument that is not such a flag.
  """
  from absl import flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  from gca_jax.training import config as config_lib  # pylint: disable=g-import-not-at-top
  args = list(args)
  stray = [a for a in args if a.startswith("-") and not a.startswith(CONFIG_FLAG_PREFIX)]
  if stray:
    raise ExperimentError(f"unknown flag {stray[0]!r} (config fields are set as "
                          f"{CONFIG_FLAG_PREFIX}<field>=<value>)")
  argv = ["experiment", *args]
  flag_values = flags.FlagValues()
  try:
    config_flags.DEFINE_config_dict("config", config_lib.get_config(),
                                    flag_values=flag_values, sys_argv=argv)
    rest = flag_values(argv)
  except (AttributeError, KeyError) as e:  # ml_collections: a field it does not have
    name = str(e.args[0] if e.args else e).strip("'\"")
    flag = next((a for a in args if name in a), name)
    raise ExperimentError(f"no config field {name!r} ({flag}); the fields are those "
                          "of gca_jax/training/config.py") from None
  if len(rest) > 1:
    raise ExperimentError(f"unexpected argument {rest[1]!r}")
  return config_flags.get_override_values(flag_values["config"])


def apply_overrides(config, overrides: dict[str, Any]):
  """``config`` with the parsed ``--config.*`` overrides applied."""
  try:
    config.update_from_flattened_dict(overrides)
  except (KeyError, AttributeError, TypeError) as e:
    raise ExperimentError(f"cannot apply the --config flags: {e}") from None
  return config


def add_common_flags(parser, *, default_root: str) -> None:
  """Flags every training entry point has."""
  parser.add_argument("--root", default=default_root,
                      help="Directory under which every run gets its own workdir.")
  parser.add_argument("--seeds", type=int, nargs="+", default=[0],
                      help="Seeds (model init, augmentation, shuffling); one run each.")
  parser.add_argument("--smoke", action="store_true",
                      help="Tiny end-to-end run on CPU in seconds (the 'small' config: "
                      "digits, 1 epoch, tiny model); for tests.")
  parser.epilog = (
      "Any field of the runs' config is set with --config.<field>=<value> (applied\n"
      "after --smoke's small config), e.g. --config.epochs=100 --config.batch_size=256\n"
      "--config.data_dir=/data --config.model.dtype=float32\n"
      "--config.dataset=npz:cifar10.npz --config.train_examples=1000")


def split_names(text: str) -> list[str]:
  return [name.strip() for name in text.split(",") if name.strip()]


def select(requested: Sequence[str], available: Sequence[str], what: str) -> list[str]:
  """``requested`` names, checked against ``available`` ("all": every one)."""
  if list(requested) == ["all"]:
    return list(available)
  unknown = [name for name in requested if name not in available]
  if unknown:
    raise ExperimentError(f"unknown {what} {', '.join(unknown)}; choose from "
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
# relaxations 0.2, CE weight 1, RINCE weight 0.02 (config.loss_params names;
# the trainer passes rho_a, rho_b, w_ce, w_rince to the presets as relax1,
# relax2, r1, r2).
PUBLISHED_PARAMS = dict(eps=0.5, iters=10, lam=0.01, q=0.6, rho_a=0.2, rho_b=0.2,
                        w_ce=1.0, w_rince=0.02)
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
  if label not in METHOD_LABELS:
    raise ExperimentError(f"unknown method {label!r}; choose from "
                          f"{', '.join(METHOD_LABELS)}")
  if implementation not in IMPLEMENTATIONS:
    raise ExperimentError(f"implementation must be one of {', '.join(IMPLEMENTATIONS)}, "
                          f"got {implementation!r}")
  if label == "BYOL":
    return Method(label, "byol", {})
  if implementation == "published":
    return Method(label, f"reference/{PUBLISHED_LOSSES[label]}", dict(PUBLISHED_PARAMS))
  loss, params = CLEAN_METHODS[label]
  return Method(label, loss, dict(params))


def with_loss_param(m: Method, name: str, value) -> Method:
  """``m`` with one loss hyper-parameter changed (eps, iters, ...)."""
  if name not in m.params:
    raise ExperimentError(f"{m.label} ({m.loss}) has no parameter {name!r}")
  return dataclasses.replace(m, params={**m.params, name: value})


def configure_method(config, m: Method):
  """``config`` set to train ``m``: its loss, its parameters, and every other
  loss parameter unset (the loss's default)."""
  config.loss = m.loss
  params = {f"loss_params.{name}": None for name in config.loss_params}
  params.update({f"loss_params.{name}": value for name, value in m.params.items()})
  config.update_from_flattened_dict(params)
  return config


# ---------------------------------------------------------------------------
# Runs.


def read_json(path: Path) -> dict | None:
  try:
    return json.loads(Path(path).read_text())
  except (FileNotFoundError, json.JSONDecodeError):
    return None


def write_json(path: Path, value: dict) -> None:
  """Writes atomically (a killed process never leaves half a file), creating
  the folder."""
  from gca_jax.training import checkpoint  # pylint: disable=g-import-not-at-top
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  checkpoint.write_json(path, value)


def finished_metrics(workdir: Path, required: str = "linear_probe_acc") -> dict | None:
  metrics = read_json(Path(workdir) / METRICS)
  return metrics if metrics and required in metrics else None


def check_workdir(workdir: Path, config) -> None:
  """Raises RunMismatchError if ``workdir`` holds a run other than ``config``
  (e.g. one of other epochs): such a run is neither skipped nor continued."""
  from gca_jax.training import checkpoint  # pylint: disable=g-import-not-at-top
  if checkpoint.holds_checkpoint(workdir):
    checkpoint.check_run_identity(workdir, config)


def log(message: str) -> None:
  print(message, flush=True)


def run_pretraining(config, workdir: Path, record: dict) -> dict:
  """Pre-trains ``config`` in ``workdir`` then evaluates it linearly.

  Finished runs (``metrics.json`` with a linear-probe accuracy) are skipped;
  the trainer continues a workdir that holds a checkpoint of this run, so an
  interrupted sweep loses at most the step in flight per run. ``record``
  (what the run is) is stored as ``experiment.json`` for `report.py`.
  Returns the run's metrics.
  """
  from gca_jax import linear_eval, training  # pylint: disable=g-import-not-at-top
  from gca_jax.training import checkpoint  # pylint: disable=g-import-not-at-top
  workdir = Path(workdir)
  check_workdir(workdir, config)
  done = finished_metrics(workdir)
  if done is not None:
    log(f"[skip] {workdir} (finished: linear-probe accuracy "
        f"{done['linear_probe_acc']:.4f})")
    return done
  log(f"[{'resume' if checkpoint.holds_checkpoint(workdir) else 'run'}] {workdir}")
  write_json(workdir / RUN_RECORD, record)
  metrics = training.train_and_evaluate(config, workdir).metrics
  if "linear_probe_acc" not in metrics:  # e.g. --config.linear_probe=false
    linear_eval.evaluate(workdir, protocol="linear")
    metrics = read_json(workdir / METRICS)
  rate = metrics.get("images_per_second")
  log(f"[done] {workdir}: linear-probe accuracy {metrics['linear_probe_acc']:.4f}, "
      f"{'n/a' if rate is None else f'{rate:.0f}'} images/s")
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
  plt = pyplot()
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
  """A model with its variables, and the config/dataset/`Run` it belongs to."""

  config: Any
  dataset: Any
  run: Any              # gca_jax.training.Run
  variables: dict
  step: int = 0         # training steps behind ``variables``

  @functools.cached_property
  def embed_fn(self):
    """jitted ``(variables, images_uint8) -> (features, projections)``."""
    from gca_jax import evaluation  # pylint: disable=g-import-not-at-top
    return evaluation.make_embed_fn(self.run.model, self.run.mesh,
                                    mean=self.dataset.mean, std=self.dataset.std,
                                    image_size=self.config.image_size)

  def features(self, images) -> Any:
    """Encoder features (numpy) of uint8 images, in evaluation mode."""
    from gca_jax import evaluation  # pylint: disable=g-import-not-at-top
    features, _ = evaluation.embed_split(self.embed_fn, self.variables, images,
                                         self.run.mesh)
    return features

  def split_features(self, split) -> Any:
    """Encoder features (numpy) of a dataset split (in memory or lazy)."""
    from gca_jax import evaluation  # pylint: disable=g-import-not-at-top
    features, _ = evaluation.embed_any_split(self.embed_fn, self.variables, split,
                                             self.run.mesh,
                                             worker_count=self.config.data_workers)
    return features


def load_encoder(workdir: Path, dataset=None) -> Encoder:
  """The encoder of the latest checkpoint of a pre-training workdir
  (``dataset``: the run's data if it is not loadable from its config)."""
  from gca_jax.training import loop  # pylint: disable=g-import-not-at-top
  config, dataset, run, state = loop.load_trained(workdir, dataset=dataset)
  return Encoder(config, dataset, run, state.variables, int(state.step))


def untrained_encoder(config, dataset=None) -> Encoder:
  """A freshly initialised encoder of ``config`` (seeded by config.seed)."""
  from gca_jax import training  # pylint: disable=g-import-not-at-top
  from gca_jax.training import feeds  # pylint: disable=g-import-not-at-top
  dataset = feeds.load_data(config) if dataset is None else dataset
  run = training.setup(config, dataset)
  return Encoder(config, dataset, run, run.initial_state().variables)


def embed_views(encoder: Encoder, images_uint8, *, seed: int = 0,
                policy: str = "simclr"):
  """Projections ``(z1, z2)`` of two augmented views of each image (eval mode)."""
  import jax  # pylint: disable=g-import-not-at-top
  from gca_jax.data import augment  # pylint: disable=g-import-not-at-top
  views = augment.two_views(jax.random.PRNGKey(seed), jax.numpy.asarray(images_uint8),
                            policy=policy, mean=encoder.dataset.mean,
                            std=encoder.dataset.std, out_size=encoder.config.image_size)
  apply = jax.jit(lambda v, x: encoder.run.model.apply(v, x, train=False).projection)
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
