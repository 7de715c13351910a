"""Experiment flags that other flags make do nothing are refused in one line
before anything runs."""

import pytest

from experiments import small_scale, table2


@pytest.mark.parametrize("module, args, message", [
    (table2, ["--protocols=linear", "--finetune_epochs=3"],
     "--finetune_epochs is a setting of the finetune protocol, which --protocols=linear does "
     "not run; add finetune to --protocols or drop --finetune_epochs"),
    (table2, ["--finetune_batch_size=64"],
     "--finetune_batch_size is a setting of the finetune protocol, which --protocols=linear "
     "does not run; add finetune to --protocols or drop --finetune_batch_size"),
    (table2, ["--corruptions=none", "--severity=3"],
     "--severity is the severity of --corruptions, which is 'none'; drop one of them"),
    (table2, ["--policies=large_erase", "--corruptions=all"],
     "--corruptions evaluates the digits runs of the simclr policy, which "
     "--datasets/--policies do not select; select them or drop --corruptions"),
    (small_scale, ["--epochs=2", "--config.epochs=3"],
     "--epochs and --config.epochs both set the epochs of every run; pass one of them"),
])
def test_contradictory_flags_are_one_line(tmp_path, capsys, module, args, message):
  with pytest.raises(SystemExit) as exited:
    module.main(["--smoke", f"--root={tmp_path}", *args])
  assert exited.value.code == 2
  assert capsys.readouterr().err == f"error: {message}\n"
  assert not any(tmp_path.iterdir())  # nothing ran
