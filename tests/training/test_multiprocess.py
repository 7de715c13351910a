"""Two processes (2 CPU devices each, loopback, gloo) = one process with 4 devices.

Both runs are subprocesses (XLA_FLAGS and jax.distributed.initialize must
come before JAX initialises); this file is also their entry point:

    python tests/training/test_multiprocess.py worker OUT PORT NUM_PROCESSES PROCESS_ID
"""

import socket
import subprocess
import sys

import pytest

import numpy as np

from tests.conftest import (ATOL, REPO_ROOT, RTOL, SUBPROCESS_TIMEOUT, max_violation,
                            one_step, pretrain_env, random_images, tiny_config)


def _meet(name: str):
  """A coordination-service barrier of all processes, with a long timeout.

  XLA's CPU backend builds its gloo communicator at the first collective a
  program runs, waiting for the other processes' addresses with gloo's fixed
  30 s timeout, which no JAX option raises. On a busy machine one process can
  finish compiling the step much later than the other and reach that first
  collective too late (``Gloo context initialization failed:
  DEADLINE_EXCEEDED``). So each process compiles at its own pace and the
  processes meet here, after compiling and before running; the wait is
  bounded by the tests' subprocess limit instead of 30 s. (JAX's public API
  has no such barrier: ``multihost_utils.sync_global_devices`` is itself a
  collective; JAX's own multi-process test harness uses this client call.)
  """
  from jax._src import distributed  # pylint: disable=g-import-not-at-top
  return lambda: distributed.global_state.client.wait_at_barrier(
      name, timeout_in_ms=SUBPROCESS_TIMEOUT * 1000)


def _worker(out_path: str, port: int, num_processes: int, process_id: int) -> None:
  import jax
  if num_processes > 1:
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}",
                               num_processes=num_processes, process_id=process_id)
  assert jax.device_count() == 4, jax.devices()
  result = {}
  for scope in ("global", "sharded"):
    config = tiny_config(**{"model.dtype": "float32", "batch_size": 32,
                            "loss_scope": scope})
    result[scope] = one_step(config, jax.devices(), random_images(config.batch_size),
                             after_compile=_meet(f"compiled-{scope}") if num_processes > 1
                             else None)
  if jax.process_index() == 0:
    np.save(out_path, result, allow_pickle=True)


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_equal_one_process_with_four_devices(tmp_path):
  port = _free_port()
  cmd = lambda out, n, i: [sys.executable, __file__, "worker", str(out), str(port),
                           str(n), str(i)]
  workers = [subprocess.Popen(cmd(tmp_path / "two.npy", 2, i), env=pretrain_env(2),
                              cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) for i in range(2)]
  single = subprocess.run(cmd(tmp_path / "one.npy", 1, 0), env=pretrain_env(4), cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT)
  outputs = [w.communicate(timeout=SUBPROCESS_TIMEOUT)[0] for w in workers]
  assert single.returncode == 0, single.stderr[-3000:]
  for worker, output in zip(workers, outputs):
    assert worker.returncode == 0, output[-3000:]
  two = np.load(tmp_path / "two.npy", allow_pickle=True).item()
  one = np.load(tmp_path / "one.npy", allow_pickle=True).item()
  for scope in ("global", "sharded"):  # the sharded plan too, over two hosts
    np.testing.assert_allclose(two[scope]["loss"], one[scope]["loss"], rtol=RTOL, atol=ATOL)
    for key in ("params", "grads", "batch_stats", "metrics"):
      assert max_violation(two[scope][key], one[scope][key]) <= 0, (scope, key)


if __name__ == "__main__" and sys.argv[1:2] == ["worker"]:
  _worker(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
