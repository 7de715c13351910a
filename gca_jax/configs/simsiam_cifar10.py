"""SimSiam's published CIFAR-10 recipe (Chen & He 2021): ResNet-18 (CIFAR
stem), 2048-d projections, a 512-wide bottleneck predictor, SGD momentum 0.9
at 0.03 x batch/256, weight decay 5e-4, cosine schedule, batch 512, 800 epochs.

    python -m gca_jax.pretrain --config=simsiam_cifar10 \
        --config.data_dir=/path/to/tfds --workdir=runs/cifar10_simsiam
"""

from gca_jax.training import config as configs


def get_config(variant=None):
  """``variant="small"``: the same method as a seconds-long CPU run."""
  return configs.apply_variant(configs.paper_simsiam_config("cifar10"), variant)
