"""The run summary: what a run trains, printed as it starts and kept in the workdir."""

import jax

from gca_jax import data, training
from gca_jax.training import summary
from tests.conftest import tiny_config


def _lines(text: str) -> dict:
  """{first word: the line} of a summary."""
  return {line.split(":")[0].split()[0]: line for line in text.splitlines()}


def test_the_summary_names_every_field(tmp_path, capsys):
  config = tiny_config(loss="SimCLR", epochs=3)
  config.loss_params.eps = 0.2
  run = training.setup(config, data.load_dataset("digits", image_size=8))
  (tmp_path / "w").mkdir()
  text = summary.announce(run, tmp_path / "w")
  lines = _lines(text)
  assert lines["dataset"] == ("dataset: digits, train 1438 / test 359 examples, 10 classes, "
                              "images 8x8x3")
  assert lines["model"].startswith("model: resnet_small, cifar stem, width 4 (16 features), "
                                   "projector 32 -> 16")
  assert lines["loss"].startswith("loss: SimCLR (= infonce) (eps=0.2; other parameters: the "
                                  "function's defaults), target pairs, scope global")
  assert lines["optimiser"].startswith("optimiser: sgd, learning rate 0.1 (momentum 0.9, "
                                       "nesterov)")
  assert lines["batch"] == ("batch 64 pairs, 22 steps per epoch, 3 epochs (66 steps), "
                            "augmentation simclr")
  assert lines["devices"].startswith(f"devices: {jax.device_count()} x cpu")
  assert "precision: float32 compute" in lines["devices"]
  assert lines["workdir"] == f"workdir: {tmp_path / 'w'}"
  assert capsys.readouterr().out.strip() == text  # printed as it is saved
  assert (tmp_path / "w" / summary.SUMMARY_FILE).read_text() == text + "\n"


def test_a_predictor_method_names_its_head_and_no_loss_parameters(tmp_path):
  config = tiny_config(loss="simsiam", image_size=6)
  run = training.setup(config, data.load_dataset("digits", image_size=8))
  lines = _lines(summary.describe(run, tmp_path))
  assert "predictor 4 -> 16" in lines["model"]  # SimSiam's bottleneck: 16 / 4
  assert lines["loss"] == "loss: simsiam (no loss parameters; config.loss_params unused)"
  assert lines["dataset"].endswith("images 6x6x3 (loaded at 8x8)")
