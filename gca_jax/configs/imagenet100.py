"""ImageNet-100 (CMC's 100-class subset): ResNet-50, ImageNet stem, 224 views.

Images are decoded on the host at 256x256 (``load_size``) by a grain loader
(``gca_jax.data.loader``: the split is too large for device memory), put
on the devices as uint8 batches and cropped to 224 views on the device. The
batches are a function of the step, so a continued run reads exactly the
batches the interrupted one would have read.
Needs the manual download prepared with
``python -m gca_jax.data.prepare imagenet100 --data_dir=...``.
"""

from gca_jax.training import config as configs


def get_config(variant=None):
  """``variant="small"``: the same method as a seconds-long CPU run."""
  config = configs.get_config()
  config.dataset = "imagenet100"
  config.load_size = 256
  config.image_size = 224
  config.model.name = "resnet50"
  config.model.stem = "imagenet"
  configs.use_paper_heads(config)
  config.batch_size = 256
  config.epochs = 200
  config.warmup_epochs = 10.0
  config.optimizer = "lars"
  config.learning_rate = 0.3        # x batch_size / 256 (SimCLR's LARS setting)
  config.lr_scaling = "linear"
  config.weight_decay = 1e-6
  config.eval_every_epochs = 10
  config.checkpoint_every_epochs = 5
  config.linear_probe_steps = 2000
  config.log_every_steps = 50
  # grain worker processes decoding JPEGs (0: grain's 16 reader threads in the
  # training process, enough for most hosts as Pillow releases the GIL).
  # A run-control field: the batches are the same with any number of workers.
  config.data_workers = 0
  return configs.apply_variant(config, variant)
