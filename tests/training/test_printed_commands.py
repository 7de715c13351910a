"""The commands a run prints to be pasted back (``next:``, ``Continue with:``,
the TensorBoard command) are shell-quoted: a workdir with spaces or quotes
works."""

import shlex

import pytest

from gca_jax.training import interrupts, reporting


@pytest.mark.parametrize("workdir", ["runs/plain", "runs/with space", "runs/it's $HOME"])
def test_printed_commands_give_the_workdir_back_to_a_shell(workdir):
  finished = reporting.next_command(workdir, finished=True)
  continuing = reporting.next_command(workdir, finished=False)
  for line, module in ((finished, "gca_jax.linear_eval"), (continuing, "gca_jax.pretrain")):
    command = line.removeprefix("next: ").split("  (")[0]
    assert shlex.split(command) == ["python", "-m", module, f"--workdir={workdir}"]
  assert shlex.split(interrupts.continue_command(workdir)) == [
      "python", "-m", "gca_jax.pretrain", f"--workdir={workdir}"]
  view = reporting.where_to_look(workdir).split("(view: ")[1].rstrip(")")
  assert shlex.split(view) == ["tensorboard", "--logdir", f"{workdir}/tensorboard"]


def test_the_evaluation_command_is_shell_quoted():
  from gca_jax import protocols
  command = protocols.command("runs/a b", "finetune", epochs=3, batch_size=None)
  assert shlex.split(command) == ["python", "-m", "gca_jax.linear_eval", "--workdir=runs/a b",
                                  "--protocol=finetune", "--epochs=3"]
