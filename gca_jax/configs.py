"""The base pre-training configuration (ml_collections).

`get_config()` returns every field the trainer reads, set to the embedded
default: digits on CPU in a couple of minutes. The per-dataset files in
``experiments/configs/`` start from it and change what differs. It is also
the config that ``python -m gca_jax.pretrain`` uses without ``--config``, so
the default run works from an installed package too.

Fields listed in `RUN_CONTROL_FIELDS` steer a run (when to log, save, stop)
without changing what it computes; every other field is part of a run's
identity, and a workdir refuses to resume a checkpoint written under a
different identity.
"""

import ml_collections
from ml_collections import config_dict

RUN_CONTROL_FIELDS = frozenset({
    "data_dir", "stop_after_epoch", "checkpoint_every_epochs", "max_checkpoints",
    "eval_every_epochs", "log_every_steps", "progress_bar", "probe_random_init",
})


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0                   # init, augmentation and shuffling
  # Data: see gca_jax.data.load_dataset.
  config.dataset = "digits"
  config.data_dir = config_dict.placeholder(str)
  config.split_seed = 0
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
  config.model.predictor_hidden_dim = 512  # BYOL only

  # Loss: a name of gca_jax.losses, "reference/<name>" for the published-code
  # presets of gca_jax.reference, or "byol".
  config.loss = "gca_uot"
  # Keyword arguments of the loss; the unset (None) ones are not passed, so the
  # loss's own default applies. A loss that does not take a set parameter is a
  # config error. The "reference/<name>" presets take gca_jax.reference.PARAMS
  # (rho_a, rho_b, w_ce, w_rince are passed as relax1, relax2, r1, r2).
  # "byol" takes no parameters and ignores loss_params.
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
  })
  config.loss_scope = "global"      # global: plan over the whole global batch
  # Target plan of the loss (gca_jax.losses.targets), built in every step from
  # the ids of the batch's examples (all gathered with the global scope):
  # "pairs" (each view's positive is its other view), "domain"
  # (domain_target(domains, target_alpha, target_beta), paper Sec. 3.4 /
  # Fig. 1(B): 1 on positives, target_alpha within a domain, target_beta
  # across; needs a dataset with domains) or "class" (class_target(labels):
  # supervised). Not for "byol" or the "reference/<name>" presets.
  config.target = "pairs"
  config.target_alpha = 0.0         # "domain": same-domain weight (>= 0)
  config.target_beta = 0.0          # "domain": cross-domain weight (>= 0)
  # BYOL target network: a constant EMA decay (BYOL itself anneals it from
  # 0.996 to 1 with a cosine schedule), and the symmetric SimCLR views of
  # config.augmentation (not BYOL's asymmetric blur/solarisation pair).
  config.ema_decay = 0.99

  config.optimizer = "sgd"          # sgd (Nesterov) | adam | lars
  config.learning_rate = 0.3
  config.lr_scaling = "none"        # "linear": lr * batch_size / 256
  config.momentum = 0.9
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
  config.max_checkpoints = 2
  config.log_every_steps = 10
  config.progress_bar = True
  config.stop_after_epoch = 0       # >0: save and stop after this epoch
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
