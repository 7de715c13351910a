r"""Contrastive pre-training from the command line.

    python -m gca_jax.pretrain                      # digits on CPU, 2.5 CPU-minutes
    python -m gca_jax.pretrain --config=cifar10 \
        --config.epochs=2 --config.loss=gca_uot --workdir=runs/cifar10
    python -m gca_jax.pretrain --workdir=runs/cifar10       # continue that run
    python -m gca_jax.pretrain --config=cifar10:small

A workdir that holds a run is continued from its own saved config and
latest checkpoint: flags are needed only to change run-control fields (e.g.
``--config.log_every_steps=50``); a changed field that alters what the run
computes is refused, naming the fields. ``epochs`` is such a field (the
learning-rate schedule depends on it), so a finished run is not extended.
SIGTERM or Ctrl-C, once or twice, in any phase, ends in one line: while
training, the current step is saved (a save under way always completes)
and the same command continues; before the first step nothing is saved (a
new workdir is removed again); after training, the rerun does what is left.
``--config.loss=simsiam`` brings SimSiam's published optimiser settings
(`gca_jax.training.config.METHOD_RECIPES`) unless flags set them too.

Uses every device of the host (or of all hosts: pass ``--coordinator_address``,
``--num_processes`` and ``--process_id``, or ``--distributed`` to let JAX
detect a cluster). ``--workdir`` receives checkpoints, TensorBoard events and
``metrics.json``; by default a new ``runs/<dataset>-<loss>-<time>`` directory.
Unusable input (a bad flag, a missing dataset, a workdir of another run)
ends with one line on stderr and exit status 2; a diverged run (a NaN or
infinite loss) with status 1; an interrupted one with status 130.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import gca_jax._train_extra  # noqa: F401  (without the train extra: one line naming it)

from absl import app, flags, logging
from ml_collections import config_flags

from gca_jax import stopping
from gca_jax.cli import (  # noqa: F401 (EXIT_* are this command's statuses too)
    CONFIG_LOAD_ERRORS, EXIT_DIVERGED, EXIT_INTERRUPTED, EXIT_USAGE, FLAGS,
    define_distributed_flags, error_text, fail, initialize_distributed, one_line_errors,
    parse_flags)

# The embedded config, named by its path: importing gca_jax.training would load
# jax before the flags are parsed (``--help`` and flag errors come at once).
DEFAULT_CONFIG_FILE = Path(__file__).parent / "training" / "config.py"


def define_flags() -> None:
  """Defines this entry point's flags (at start-up, not at import, so that
  other entry points can import the helpers below)."""
  from gca_jax import configs  # pylint: disable=g-import-not-at-top (no jax)
  configs.define_flag(
      "config", str(DEFAULT_CONFIG_FILE),
      f"A packaged dataset config ({', '.join(configs.NAMES)}) or a config file "
      "(<file>.py), either with :small for a seconds-long CPU run (cifar10:small); "
      "fields are overridable as --config.<field>=<value>. "
      "Default: the run saved in --workdir, else the embedded digits config.")
  flags.DEFINE_string("workdir", None, "Directory for checkpoints and metrics.")
  flags.DEFINE_bool("resume", False, "Insist on continuing the run checkpointed in "
                    "--workdir (a workdir holding a run is continued in any case).")
  define_distributed_flags()


def resolve_config(workdir: Path):
  """The config to run in ``workdir``: the run it holds, with only the
  ``--config.<field>`` flags given applied, unless ``--config`` names a file."""
  import ml_collections  # pylint: disable=g-import-not-at-top
  from gca_jax.training import checkpoint  # pylint: disable=g-import-not-at-top
  from gca_jax.training.config import ConfigError  # pylint: disable=g-import-not-at-top
  config = FLAGS.config
  if FLAGS["config"].present or not checkpoint.holds_checkpoint(workdir):
    return config
  stored = checkpoint.read_config_json(workdir, note=True)
  if stored is None:
    return config  # train_and_evaluate refuses a checkpoint without identity
  resumed = ml_collections.ConfigDict(stored)
  resumed.stop_after_epoch = 0  # a stop applies to the invocation that asked for it
  overrides = config_flags.get_override_values(FLAGS["config"])
  try:
    resumed.update_from_flattened_dict(overrides)
  except (KeyError, AttributeError, TypeError) as e:
    raise ConfigError(f"cannot apply --config flags to the run in {workdir}: "
                                 f"{e}") from None
  return resumed


def apply_recipe_of_selected_loss(config) -> dict:
  """A loss selected by ``--config.loss`` brings its method's own published
  settings (`gca_jax.training.config.METHOD_RECIPES`: SimSiam's optimiser),
  except for the fields set by flags too; says which, and returns them."""
  from gca_jax.training import config as config_lib  # pylint: disable=g-import-not-at-top
  from gca_jax.training import objectives  # pylint: disable=g-import-not-at-top
  overrides = config_flags.get_override_values(FLAGS["config"])
  if "loss" not in overrides:
    return {}
  try:
    loss = objectives.canonical_loss(config.loss)
  except config_lib.ConfigError:
    return {}  # the run's validation names the loss
  applied = config_lib.apply_method_recipe(config, loss, given=overrides)
  if applied:
    settings = " ".join(f"--config.{k}={v}" for k, v in applied.items())
    print(f"{loss}: using its published recipe's {settings} (set any of them to choose "
          "otherwise)", flush=True)
  return applied


def default_workdir(config) -> Path:
  loss = config.loss.replace("/", "_")
  return Path("runs") / f"{config.dataset}-{loss}-{time.strftime('%Y%m%d-%H%M%S')}"


def main(argv) -> None:
  if len(argv) > 1:
    fail(f"unexpected arguments: {' '.join(argv[1:])}")
  logging.set_verbosity(logging.ERROR)  # orbax logs saves (INFO) and recoveries (WARNING)
  initialize_distributed()
  # Imported after distributed init: nothing may touch the backend before it.
  from gca_jax import training  # pylint: disable=g-import-not-at-top
  from gca_jax.training import checkpoint  # pylint: disable=g-import-not-at-top

  try:
    FLAGS.config.get("loss")  # a config file that failed to load raises here
    workdir = Path(FLAGS.workdir) if FLAGS.workdir else default_workdir(FLAGS.config)
    config = resolve_config(workdir)
  except checkpoint.WorkdirError as e:
    fail(str(e))
  except CONFIG_LOAD_ERRORS as e:
    fail(f"cannot load --config: {type(e).__name__}: {error_text(e)}")
  if config is FLAGS.config:  # a new run (a stored one keeps its settings)
    apply_recipe_of_selected_loss(config)
  print(f"workdir: {workdir}", flush=True)
  with one_line_errors():
    result = training.train_and_evaluate(config, workdir, resume=FLAGS.resume).metrics
  with _stop_on_signal(lambda name: f"stopped by {name} after the run ended; its results "
                       f"are in {workdir}"):
    _report(result, config, workdir)


def _report(result: dict, config, workdir: Path) -> None:
  """The closing lines of a run: its results, where they are, what to run next."""
  from gca_jax.training import reporting  # pylint: disable=g-import-not-at-top
  if not result.get("already_complete"):  # else train_and_evaluate said so
    print(f"epochs {result.get('epochs')}  final loss "
          f"{_number(result.get('final_loss'), '.4f')}  "
          f"{_number(result.get('images_per_second'), '.0f')} images/s "
          "(source images; each gives two views)")
    if "knn_acc" in result:
      print(f"kNN accuracy: {result['knn_acc']:.4f}")
    if "linear_probe_acc" in result:
      print(f"linear-probe accuracy: {result['linear_probe_acc']:.4f}")
    if "random_init_linear_probe_acc" in result:
      print(f"linear-probe accuracy of a randomly initialised encoder: "
            f"{result['random_init_linear_probe_acc']:.4f}")
    print(reporting.where_to_look(workdir))
  print(reporting.next_command(workdir, finished=result.get("epochs") == config.epochs))


def _number(value, spec: str) -> str:
  return "n/a" if value is None else format(value, spec)


def run() -> None:
  # A signal at any point ends in one line (`gca_jax.stopping`): here, before
  # the run has a workdir, nothing is saved yet.
  with _stop_on_signal(lambda name: f"stopped by {name} while starting; nothing new was saved"):
    try:  # config_flags applies --config.* overrides while defining the flag
      define_flags()
    except (AttributeError, KeyError, TypeError, ValueError, flags.Error) as e:
      fail(f"invalid --config or --config.<field> flag: {error_text(e)}")
    app.run(main, flags_parser=parse_flags)


@contextlib.contextmanager
def _stop_on_signal(message):
  """`gca_jax.stopping.stops_at_once` with ``message``, its `Interrupted`
  (or an inner one) printed as the command's last line (exit status 130)."""
  try:
    with stopping.stops_at_once(message):
      yield
  except stopping.Interrupted as e:
    stopping.exit_interrupted(e)


if __name__ == "__main__":
  run()
