"""SIGINT and SIGTERM, once or twice, in every phase of ``python -m gca_jax.pretrain``.

Each case runs the command in a subprocess that pauses in the phase (see
`tests.training.pretrain_paused`: it prints a marker there and waits for the
signals) or, for the training steps, waits for its first log line; then
sends the signals. Whatever the phase, the command must end with exit
status 130 and one line on stderr (no traceback, no native crash), and
leave either nothing (a start that never saved) or a latest checkpoint that
verifies against its checksum record.
"""

import signal
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT, SUBPROCESS_TIMEOUT, pretrain_env

# Once, and twice (both kinds: a scheduler's SIGTERM, then a user's Ctrl-C).
SEQUENCES = {"SIGINT": (signal.SIGINT,), "SIGTERM_then_SIGINT": (signal.SIGTERM, signal.SIGINT)}
# phase -> (the line the run prints there, what the stop message says)
PHASES = {
    "startup": ("PAUSED startup", "while starting; nothing was saved"),
    "compile": ("PAUSED compile", "while compiling; nothing was saved"),
    "training": ("step 3/", "at step"),
    "save": ("PAUSED save", "at step 22 "),
    "evaluation": ("PAUSED evaluation", "after training, which is saved (step 44)"),
}
EPOCHS = 2  # of 22 steps: a checkpoint after each epoch


def _run_signalled(workdir, phase: str, signals) -> tuple[int, str, str]:
  marker = PHASES[phase][0]
  flags = [f"--workdir={workdir}", "--config=gca_jax/training/config.py:small",
           f"--config.epochs={EPOCHS}", "--config.log_every_steps=3",
           f"--config.linear_probe={phase == 'evaluation'}"]
  if phase == "training":
    command = [sys.executable, "-m", "gca_jax.pretrain", *flags]
  else:
    command = [sys.executable, "-m", "tests.training.pretrain_paused", phase,
               str(len(signals)), *flags]
  process = subprocess.Popen(command, env=pretrain_env(), cwd=REPO_ROOT, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
  seen = []
  for line in process.stdout:
    seen.append(line)
    if line.startswith(marker):
      break
  else:
    process.wait(timeout=SUBPROCESS_TIMEOUT)
    pytest.fail(f"no {marker!r} line: {''.join(seen)[-2000:]}{process.stderr.read()[-3000:]}")
  for signum in signals:
    process.send_signal(signum)
  stdout, stderr = process.communicate(timeout=SUBPROCESS_TIMEOUT)
  return process.returncode, "".join(seen) + stdout, stderr


def _latest_checkpoint_verifies(workdir) -> int:
  from gca_jax.training import checkpoint
  checkpointer = checkpoint.Checkpointer(workdir)
  try:
    steps = checkpointer.all_steps()
    assert steps, "no checkpoint"
    assert (workdir / checkpoint.CHECKSUM_DIR / f"{steps[-1]}.json").exists(), steps
    assert checkpointer.damage(steps[-1]) is None
    return steps[-1]
  finally:
    checkpointer.close()


@pytest.mark.slow
@pytest.mark.parametrize("sequence", SEQUENCES)
@pytest.mark.parametrize("phase", PHASES)
def test_signals_in_every_phase_end_in_one_line_and_a_saved_state(tmp_path, phase, sequence):
  workdir = tmp_path / "run"
  status, stdout, stderr = _run_signalled(workdir, phase, SEQUENCES[sequence])
  lines = stderr.strip().splitlines()
  assert status == 130, stderr[-3000:]
  assert len(lines) == 1 and lines[0].startswith("stopped by SIG"), stderr[-3000:]
  assert PHASES[phase][1] in lines[0], lines[0]
  if phase in ("startup", "compile"):  # a start that saved nothing leaves nothing
    assert not workdir.exists(), sorted(p.name for p in workdir.iterdir())
    assert "run the same command again" in lines[0]
    return
  latest = _latest_checkpoint_verifies(workdir)
  assert f"Continue with: python -m gca_jax.pretrain --workdir={workdir}" in lines[0] or (
      f"runs with: python -m gca_jax.pretrain --workdir={workdir}" in lines[0])
  if phase == "save":  # the save under way completed, then the run stopped
    assert latest == 22
  if phase == "evaluation":
    assert latest == 22 * EPOCHS


@pytest.mark.slow
def test_the_suggested_command_finishes_an_interrupted_evaluation(tmp_path):
  workdir = tmp_path / "run"
  status, _, stderr = _run_signalled(workdir, "evaluation", (signal.SIGINT,))
  assert status == 130, stderr[-3000:]
  command = stderr.split("runs with: ")[1].split()
  assert command[:3] == ["python", "-m", "gca_jax.pretrain"], command
  again = subprocess.run([sys.executable, *command[1:]], env=pretrain_env(), cwd=REPO_ROOT,
                         capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT)
  assert again.returncode == 0, again.stderr[-3000:]
  assert "linear-probe accuracy:" in again.stdout, again.stdout[-3000:]
