"""PACS (photo, art painting, cartoon, sketch; 7 classes): ResNet-18.

Images are decoded at 96x96 so the whole split fits on the device.
``--config.dataset=pacs/<domain>`` holds one domain out as the test split.
At full size (``--config.load_size=224``) a train split larger than
``gca_jax.data.local.MAX_IN_MEMORY_BYTES`` stays on the host and is fed by a
grain loader instead (see ``gca_jax.training.feeds``); nothing else changes.
"""

from gca_jax.training import config as configs


def get_config(variant=None):
  """``variant="small"``: the same method as a seconds-long CPU run."""
  config = configs.get_config()
  config.dataset = "pacs"
  config.load_size = 96
  config.model.name = "resnet18"
  config.model.stem = "cifar"
  configs.use_paper_heads(config)
  config.batch_size = 256
  config.epochs = 200
  config.warmup_epochs = 10.0
  config.learning_rate = 0.06
  config.lr_scaling = "linear"
  config.eval_every_epochs = 10
  config.checkpoint_every_epochs = 10
  config.log_every_steps = 20
  return configs.apply_variant(config, variant)
