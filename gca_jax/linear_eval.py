r"""Linear evaluation of a pre-trained encoder.

    python -m gca_jax.linear_eval --workdir=runs/digits-gca_uot-...

Restores the latest checkpoint of ``--workdir`` (and its ``config.json``),
freezes the encoder, trains a linear softmax classifier on its features of
the train split and prints the test accuracy (and the kNN accuracy). The
results are merged into ``workdir/metrics.json``. Probe hyper-parameters come
from the run's config and can be overridden with flags.
"""

from __future__ import annotations

import json
from pathlib import Path

from absl import app, flags, logging

from gca_jax.pretrain import fail, parse_flags

flags.DEFINE_string("workdir", None, "Workdir of a pre-training run.", required=True)
flags.DEFINE_integer("steps", None, "Probe optimisation steps (default: the run's).")
flags.DEFINE_float("learning_rate", None, "Probe learning rate (default: the run's).")
flags.DEFINE_float("weight_decay", None, "Probe weight decay (default: the run's).")
FLAGS = flags.FLAGS


def main(argv) -> None:
  if len(argv) > 1:
    fail(f"unexpected arguments: {' '.join(argv[1:])}")
  logging.set_verbosity(logging.WARNING)
  from gca_jax import checkpointing, evaluation, train  # pylint: disable=g-import-not-at-top
  from gca_jax.data.base import DatasetError  # pylint: disable=g-import-not-at-top

  workdir = Path(FLAGS.workdir)
  try:
    config, dataset, run, state = train.load_trained(workdir)
  except (train.ConfigError, checkpointing.RunMismatchError, DatasetError) as e:
    fail(str(e))
  for name, flag in (("linear_probe_steps", FLAGS.steps),
                     ("linear_probe_learning_rate", FLAGS.learning_rate),
                     ("linear_probe_weight_decay", FLAGS.weight_decay)):
    if flag is not None:
      config[name] = flag
  embed = evaluation.make_embed_fn(run.model, run.mesh, mean=dataset.mean,
                                   std=dataset.std, image_size=config.image_size)
  result = train.evaluate_encoder(config, embed, train.variables_of(state), dataset,
                                  run.mesh, probe=True)
  print(f"step {int(state.step)}: linear-probe accuracy {result['linear_probe_acc']:.4f}, "
        f"kNN accuracy {result['knn_acc']:.4f}")
  metrics_path = workdir / "metrics.json"
  metrics = json.loads(metrics_path.read_text()) if metrics_path.exists() else {}
  metrics.update(result)
  metrics_path.write_text(json.dumps(metrics, indent=2))


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
