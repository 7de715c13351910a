"""Pre-training configurations (ml_collections) and the rules of their fields.

`get_config()` returns every field the trainer reads, set to the embedded
default: digits on CPU in a couple of minutes. The per-dataset files in
``experiments/configs/`` start from it (or from `paper_cifar_config`) and
change what differs. Every config file takes the same optional argument as
big_vision's ``get_config(arg)``: ``"small"`` turns the same method into a
seconds-long CPU run on the embedded digits (`small`), e.g.

    python -m gca_jax.pretrain --config=experiments/configs/cifar10.py:small

This module holds data only: the defaults, the variants, the paper's
presets and each field's rule (`check_fields`, `check_value`). A config is
validated where its run is built (`gca_jax.training.setup.validate`: these
rules, then the objective built and traced once), before any data is loaded
or any step compiles, with a one-line `ConfigError` naming the field and
what is allowed.

Fields listed in `RUN_CONTROL_FIELDS` steer a run (when to log, save, stop,
how to evaluate) without changing what it trains; every other field is part
of a run's identity (``epochs`` too: the learning-rate schedule depends on
it, so a run cannot be extended), and a workdir refuses to resume a
checkpoint written under a different identity.
"""

from __future__ import annotations

import copy
import math

import ml_collections
from ml_collections import config_dict

RUN_CONTROL_FIELDS = frozenset({
    "data_dir", "data_workers", "stop_after_epoch", "checkpoint_every_epochs",
    "checkpoint_every_steps", "max_checkpoints", "eval_every_epochs",
    "log_every_steps", "progress_bar", "probe_random_init",
    # Evaluation settings: they change what is measured, not what is trained.
    "knn_k", "knn_temperature", "linear_probe", "linear_probe_steps",
    "linear_probe_learning_rate", "linear_probe_weight_decay",
})
# Fields of what a run trains whose default turns their feature off, i.e.
# is exactly what a run stored before the field existed computed: the full
# train split, the plain positive-pair target, Nesterov's SGD momentum and a
# scheduled predictor learning rate.
FEATURE_OFF_DEFAULTS = frozenset({"train_examples", "target", "target_alpha",
                                  "target_beta", "target_alphas", "nesterov",
                                  "predictor_fixed_lr"})
SMALL = "small"
VARIANTS = (SMALL,)
TARGETS = ("pairs", "domain", "class", "hierarchical")
# Label levels of the "hierarchical" target, finest first (batch fields).
HIERARCHY_LEVELS = ("label", "coarse_label")
LOSS_SCOPES = ("global", "local", "sharded")
OPTIMIZERS = ("sgd", "adam", "lars")
LR_SCALINGS = ("none", "linear")
DTYPES = ("float32", "bfloat16")


class ConfigError(ValueError):
  """The config asks for something that cannot run (one-line message)."""


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
  """The base config; ``variant="small"`` for a seconds-long CPU run."""
  config = ml_collections.ConfigDict()
  config.seed = 0                   # init, augmentation and shuffling
  # Data: see gca_jax.data.load_dataset.
  config.dataset = "digits"
  config.data_dir = config_dict.placeholder(str)
  config.split_seed = 0
  config.train_examples = 0         # >0: a class-balanced subset of the train split
  config.augmentation = "simclr"    # gca_jax.data.augment policy
  config.data_workers = 0           # grain worker processes (host-fed datasets)
  config.load_size = 16             # host-side image side (None: the source's)
  config.image_size = config_dict.placeholder(int)  # view side (None: load size)

  config.model = ml_collections.ConfigDict()
  config.model.name = "resnet_small"  # resnet_small | resnet18 | resnet50
  config.model.stem = "cifar"         # cifar | imagenet
  config.model.width = 0              # 0: the architecture's default width
  config.model.dtype = "float32"      # bfloat16 on accelerators
  config.model.projector_hidden_dim = 512
  config.model.projection_dim = 128
  config.model.predictor_hidden_dim = 512  # BYOL only (SimSiam: projection_dim / 4)

  # Loss: a name of gca_jax.losses, "reference/<name>" for the published-code
  # presets of gca_jax.reference, "byol" or "simsiam".
  config.loss = "gca_uot"
  # Keyword arguments of the loss; the unset (None) ones are not passed, so the
  # loss's own default applies. A loss that does not take a set parameter is a
  # config error. The "reference/<name>" presets take gca_jax.reference.PARAMS
  # (the same names).
  # "byol" and "simsiam" take no parameters and ignore loss_params.
  config.loss_params = ml_collections.ConfigDict({
      "eps": 0.5,
      "iters": config_dict.placeholder(int),
      "rho_a": config_dict.placeholder(float),
      "rho_b": config_dict.placeholder(float),
      "lam": config_dict.placeholder(float),
      "q": config_dict.placeholder(float),
      "w_ce": config_dict.placeholder(float),
      "w_rince": config_dict.placeholder(float),
      "lambda_p": config_dict.placeholder(float),
      # Rows per tile of the memory-linear (tiled) kernel; unset: materialised.
      "tile_size": config_dict.placeholder(int),
  })
  # global: every device computes the plan of the whole global batch (from
  # the all-gathered embeddings); sharded: the same plan and loss, each
  # device holding only its examples' rows of it (memory and work / devices);
  # local: one plan per device on its own rows (a different objective).
  config.loss_scope = "global"
  # Target plan of the loss (gca_jax.losses.targets), built in every step from
  # the ids of the batch's examples (all gathered with the global scope):
  # "pairs" (each view's positive is its other view), "domain"
  # (domain_target(domains, target_alpha, target_beta), paper Sec. 3.4 /
  # Fig. 1(A): 1 on positives, target_alpha within a domain, target_beta
  # across; needs a dataset with domains), "class" (class_target(labels):
  # supervised) or "hierarchical" (hierarchical_target([labels,
  # coarse_labels], target_alphas, beta=target_beta): 1 on positives,
  # target_alphas[0] within a class, target_alphas[1] within a coarse class,
  # target_beta across; needs a dataset with coarse labels, e.g. CIFAR-100).
  # Not for "byol", "simsiam" or the "reference/<name>" presets.
  config.target = "pairs"
  config.target_alpha = 0.0         # "domain": same-domain weight (>= 0)
  config.target_beta = 0.0          # "domain"/"hierarchical": weight of pairs sharing nothing
  config.target_alphas = (0.5, 0.25)  # "hierarchical": same-class, same-coarse-class weights
  # BYOL target network: a constant EMA decay (BYOL itself anneals it from
  # 0.996 to 1 with a cosine schedule), and the symmetric SimCLR views of
  # config.augmentation (not BYOL's asymmetric blur/solarisation pair).
  config.ema_decay = 0.99

  config.optimizer = "sgd"          # sgd | adam | lars
  config.learning_rate = 0.3
  config.lr_scaling = "none"        # "linear": lr * batch_size / 256
  config.momentum = 0.9
  config.nesterov = True            # "sgd": Nesterov's momentum (the paper code's)
  # BYOL/SimSiam: the predictor at the constant peak rate, not the schedule.
  config.predictor_fixed_lr = False
  config.weight_decay = 5e-4
  config.warmup_epochs = 1.0
  config.batch_size = 128           # global: pairs per step over all devices
  config.epochs = 50

  # Evaluation.
  config.eval_every_epochs = 10     # kNN monitor; 0 disables
  config.knn_k = 200
  config.knn_temperature = 0.1
  config.linear_probe = True        # train a linear probe at the end
  config.probe_random_init = True   # ... and one on a randomly initialised encoder
  config.linear_probe_steps = 500
  config.linear_probe_learning_rate = 0.01
  config.linear_probe_weight_decay = 1e-4

  # Run control.
  config.checkpoint_every_epochs = 10
  config.checkpoint_every_steps = 0  # >0: also every this many steps
  config.max_checkpoints = 2
  config.log_every_steps = 10
  config.progress_bar = True
  config.stop_after_epoch = 0       # >0: save and stop after this epoch
  return apply_variant(config, variant)


def apply_variant(config, variant: str | None) -> ml_collections.ConfigDict:
  """``config`` as the config-file argument ``variant`` asks (None: as is)."""
  if not variant:
    return config
  if variant != SMALL:
    raise ConfigError(f"unknown config variant {variant!r}; the allowed one is "
                      f"{SMALL!r} (e.g. --config=<file>.py:{SMALL})")
  return small(config)


def small(config) -> ml_collections.ConfigDict:
  """``config``'s method as a seconds-long CPU run: digits at 8x8, a 4-channel
  ResNet, batch 64, one epoch, a 50-step linear probe (float32, no warm-up).

  The loss, its parameters, the target and the optimiser's kind are kept.
  """
  config.update_from_flattened_dict({
      "dataset": "digits", "load_size": 8, "image_size": None, "train_examples": 0,
      "model.name": "resnet_small", "model.stem": "cifar", "model.width": 4,
      "model.dtype": "float32", "model.projector_hidden_dim": 32,
      "model.projection_dim": 16, "model.predictor_hidden_dim": 32,
      "learning_rate": 0.1, "lr_scaling": "none", "weight_decay": 5e-4,
      "batch_size": 64, "epochs": 1, "warmup_epochs": 0.0,
      "eval_every_epochs": 0, "linear_probe": True, "linear_probe_steps": 50,
      "probe_random_init": False, "checkpoint_every_epochs": 1,
      "log_every_steps": 10, "progress_bar": False, "data_workers": 0,
  })
  if config.target in ("domain", "hierarchical"):  # digits have no domains, no coarse labels
    config.target = "pairs"
  return config


def use_paper_heads(config) -> ml_collections.ConfigDict:
  """The paper code's projector (Linear 2048, no bias - ReLU - Linear 128),
  BYOL's 4096-wide predictor, and bfloat16 compute for accelerators."""
  config.model.dtype = "bfloat16"
  config.model.projector_hidden_dim = 2048
  config.model.projection_dim = 128
  config.model.predictor_hidden_dim = 4096
  return config


def paper_cifar_config(dataset: str) -> ml_collections.ConfigDict:
  """The paper's CIFAR setup (ResNet-18, CIFAR stem, 2048-128 projector,
  SGD Nesterov + cosine, batch 512, synchronised BN) on a 32x32 dataset."""
  config = get_config()
  config.dataset = dataset
  config.load_size = None
  config.model.name = "resnet18"
  config.model.stem = "cifar"
  use_paper_heads(config)
  config.batch_size = 512
  config.epochs = 500
  config.warmup_epochs = 10.0
  config.learning_rate = 0.06       # x batch_size / 256
  config.lr_scaling = "linear"
  config.weight_decay = 5e-4
  config.eval_every_epochs = 10
  config.checkpoint_every_epochs = 10
  config.linear_probe_steps = 2000
  config.log_every_steps = 50
  return config


# What a method's own published recipe sets beside the loss, where the
# embedded default's setting (tuned for the contrastive losses) keeps it from
# learning: SimSiam (Chen & He 2021, CIFAR) trains with plain momentum, no
# warm-up and a peak rate far below the default's 0.3 with Nesterov, at which
# its projections collapse onto a few directions (the digits run's probe
# falls below a random encoder's).
METHOD_RECIPES = {
    "simsiam": {"nesterov": False, "warmup_epochs": 0.0, "learning_rate": 0.06,
                "lr_scaling": "none"},
}


def apply_method_recipe(config, loss: str, given=()) -> dict:
  """Sets in ``config`` the fields of loss ``loss``'s `METHOD_RECIPES` entry
  that are not in ``given`` (the fields a user set); returns those set
  (empty for a loss without a recipe).

  Examples:
    >>> config = get_config()
    >>> apply_method_recipe(config, "simsiam", given={"learning_rate"})
    {'nesterov': False, 'warmup_epochs': 0.0, 'lr_scaling': 'none'}
    >>> config.nesterov, config.learning_rate
    (False, 0.3)
  """
  applied = {k: v for k, v in METHOD_RECIPES.get(loss, {}).items() if k not in set(given)}
  config.update_from_flattened_dict(applied)
  return applied


def paper_simsiam_config(dataset: str) -> ml_collections.ConfigDict:
  """SimSiam's published CIFAR recipe (Chen & He 2021, Sec. 5 / App.) on a
  32x32 dataset: ResNet-18 (CIFAR stem), 2048-d projections and a 512-wide
  bottleneck predictor, SGD momentum 0.9 at 0.03 x batch/256, weight decay
  5e-4, cosine schedule without warm-up, batch 512, 800 epochs.

  Differences from the paper: the projector is this library's two-layer
  head (no batch norm). The predictor's learning rate follows the schedule
  as in SimSiam's CIFAR runs; ``--config.predictor_fixed_lr=true`` keeps it
  at the peak rate (their option, Sec. 4.4).
  """
  # SGD with momentum 0.9, weight decay 5e-4, the linear batch scaling and
  # batch 512 are the paper's CIFAR setup's too; the rest is SimSiam's.
  config = paper_cifar_config(dataset)
  config.loss = "simsiam"
  config.model.projector_hidden_dim = 2048
  config.model.projection_dim = 2048   # the predictor's hidden width is a quarter
  apply_method_recipe(config, "simsiam", given=("learning_rate", "lr_scaling"))
  config.learning_rate = 0.03          # x batch_size / 256 (linear scaling, as published)
  config.epochs = 800
  return config


# ---------------------------------------------------------------------------
# Validation.


def _is_int(value) -> bool:
  return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
  return (isinstance(value, (int, float)) and not isinstance(value, bool)
          and math.isfinite(value))


def _require(ok: bool, field: str, allowed: str, value) -> None:
  if not ok:
    raise ConfigError(f"config.{field} must be {allowed}, got {value!r}")


def check_value(field: str, value, name: str) -> None:
  """Raises ConfigError naming ``name`` unless ``value`` is allowed for the
  config field ``field`` (for flags that set a field, e.g. ``--steps``)."""
  ok, allowed = _FIELD_RULES[field]
  if not ok(value):
    raise ConfigError(f"{name} must be {allowed}, got {value!r}")


# field -> (predicate, what is allowed)
_INT_AT_LEAST_1 = (lambda v: _is_int(v) and v >= 1, "an integer >= 1")
_INT_AT_LEAST_0 = (lambda v: _is_int(v) and v >= 0, "an integer >= 0")
_POSITIVE = (lambda v: _is_number(v) and v > 0, "a finite number > 0")
_NON_NEGATIVE = (lambda v: _is_number(v) and v >= 0, "a finite number >= 0")
_FIELD_RULES = {
    "seed": (_is_int, "an integer"),
    "split_seed": (_is_int, "an integer"),
    "train_examples": _INT_AT_LEAST_0,
    "data_workers": _INT_AT_LEAST_0,
    "load_size": (lambda v: v is None or (_is_int(v) and v >= 1),
                  "None or an integer >= 1"),
    "image_size": (lambda v: v is None or (_is_int(v) and v >= 1),
                   "None or an integer >= 1"),
    "loss_scope": (lambda v: v in LOSS_SCOPES, f"one of {', '.join(LOSS_SCOPES)}"),
    "target": (lambda v: v in TARGETS, f"one of {', '.join(TARGETS)}"),
    "target_alpha": _NON_NEGATIVE,
    "target_beta": _NON_NEGATIVE,
    "target_alphas": (lambda v: isinstance(v, (tuple, list))
                      and len(v) == len(HIERARCHY_LEVELS)
                      and all(_is_number(a) and a >= 0 for a in v),
                      f"{len(HIERARCHY_LEVELS)} finite numbers >= 0 (weights of "
                      f"{' and '.join(HIERARCHY_LEVELS)} pairs)"),
    "ema_decay": (lambda v: _is_number(v) and 0 <= v <= 1, "a number in [0, 1]"),
    "optimizer": (lambda v: v in OPTIMIZERS, f"one of {', '.join(OPTIMIZERS)}"),
    "learning_rate": _POSITIVE,
    "lr_scaling": (lambda v: v in LR_SCALINGS, f"one of {', '.join(LR_SCALINGS)}"),
    "momentum": (lambda v: _is_number(v) and 0 <= v < 1, "a number in [0, 1)"),
    "nesterov": (lambda v: isinstance(v, bool), "true or false"),
    "predictor_fixed_lr": (lambda v: isinstance(v, bool), "true or false"),
    "weight_decay": _NON_NEGATIVE,
    "warmup_epochs": _NON_NEGATIVE,
    # Two pairs at least: a contrastive loss needs a negative, and batch
    # normalisation a batch statistic over more than one image.
    "batch_size": (lambda v: _is_int(v) and v >= 2, "an integer >= 2"),
    "epochs": _INT_AT_LEAST_1,
    "eval_every_epochs": _INT_AT_LEAST_0,
    "knn_k": _INT_AT_LEAST_1,
    "knn_temperature": _POSITIVE,
    "linear_probe": (lambda v: isinstance(v, bool), "true or false"),
    "probe_random_init": (lambda v: isinstance(v, bool), "true or false"),
    "linear_probe_steps": _INT_AT_LEAST_1,
    "linear_probe_learning_rate": _POSITIVE,
    "linear_probe_weight_decay": _NON_NEGATIVE,
    "checkpoint_every_epochs": _INT_AT_LEAST_1,
    "checkpoint_every_steps": _INT_AT_LEAST_0,
    "max_checkpoints": _INT_AT_LEAST_1,
    "log_every_steps": _INT_AT_LEAST_1,
    "progress_bar": (lambda v: isinstance(v, bool), "true or false"),
    "stop_after_epoch": _INT_AT_LEAST_0,
    "model.dtype": (lambda v: v in DTYPES, f"one of {', '.join(DTYPES)}"),
    "model.projection_dim": _INT_AT_LEAST_1,
    "model.projector_hidden_dim": _INT_AT_LEAST_1,
    "model.predictor_hidden_dim": _INT_AT_LEAST_1,
    "model.width": _INT_AT_LEAST_0,
}


def _field(config, dotted: str):
  node = config
  for part in dotted.split("."):
    node = node[part]
  return node


def unknown_fields(tree: dict) -> list[str]:
  """The dotted names in ``tree`` (a config as a dict) that `get_config` has
  not: no trainer reads them (a misspelt field would be silently ignored)."""
  known = _flatten(get_config().to_dict())
  groups = {name.rsplit(".", 1)[0] for name in known if "." in name}
  unknown = set()
  for name in _flatten(tree):
    parts = name.split(".")
    for end in range(1, len(parts) + 1):
      prefix = ".".join(parts[:end])
      if prefix in known:
        break
      if prefix not in groups:  # the outermost unknown name
        unknown.add(prefix)
        break
  return sorted(unknown)


def check_fields(config) -> None:
  """Raises a one-line ConfigError for a missing or unknown field or a value
  outside its rule (type and range; the loss and the model are checked as
  the run is built, `gca_jax.training.setup.validate`)."""
  unknown = unknown_fields(config.to_dict())
  if unknown:
    raise ConfigError(f"config.{unknown[0]} is not a field of the trainer (misspelt?); the "
                      "fields are those of gca_jax.training.get_config()")
  for dotted, (ok, allowed) in _FIELD_RULES.items():
    try:
      value = _field(config, dotted)
    except (KeyError, AttributeError):
      raise ConfigError(f"config.{dotted} is missing; start from "
                        "gca_jax.training.get_config()") from None
    _require(ok(value), dotted, allowed, value)


def _flatten(tree: dict, prefix: str = "") -> dict:
  flat = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      flat.update(_flatten(value, f"{prefix}{key}."))
    else:
      flat[f"{prefix}{key}"] = value
  return flat


def fill_later_fields(stored: dict) -> tuple[dict, list[str]]:
  """A stored config (as JSON) with the fields added after it was written
  set to their defaults, and the names of those fields.

  Only where the default is what the stored run did: the run-control fields
  (`RUN_CONTROL_FIELDS`: they change no result) and `FEATURE_OFF_DEFAULTS`.
  Any other missing field stays missing (`check_fields` names it).
  """
  stored_flat, filled, result = _flatten(stored), [], copy.deepcopy(stored)
  for dotted, default in _flatten(get_config().to_dict()).items():
    top = dotted.split(".")[0]
    if dotted in stored_flat or top in stored_flat:
      continue
    if top not in RUN_CONTROL_FIELDS and top not in FEATURE_OFF_DEFAULTS:
      continue
    node = result
    for part in dotted.split(".")[:-1]:
      node = node.setdefault(part, {})
    node[dotted.split(".")[-1]] = default
    filled.append(dotted)
  return result, filled
