"""What a run tells: TensorBoard scalars, text lines and ``metrics.json``.

* `TensorBoard`: scalars under ``workdir/tensorboard`` (process 0 only).
* `Progress`: a progress bar on a terminal, or plain text lines (step,
  epoch, loss, images/s, ETA) when there is no terminal or no bar (cluster
  jobs), every ``log_every_steps`` steps.
* `MetricsFile`: ``workdir/metrics.json``. Its top-level keys are the latest
  results (``final_loss``, ``linear_probe_acc``, ...); ``invocations`` keeps
  one record per invocation (command, steps, timings) and ``evaluations``
  one per evaluation, with the protocol that produced it (``knn``,
  ``linear``, ``finetune``). Each write merges into what is there, so a
  resume or a ``linear_eval`` never loses earlier results; the file is
  replaced atomically.
* `record_evaluation` / `record_finetune`: an evaluation's accuracies to
  TensorBoard, the log and ``metrics.json`` (one record per protocol).
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import math
import shlex
import shutil
import sys
import time
from pathlib import Path

import jax

METRICS_FILE = "metrics.json"
# The histories of metrics.json: lists of records.
HISTORY_KEYS = ("invocations", "evaluations")
TENSORBOARD_DIR = "tensorboard"


def is_main_process() -> bool:
  return jax.process_index() == 0


def log(message: str) -> None:
  """A line on stdout from process 0."""
  if is_main_process():
    print(message, flush=True)


class TensorBoard:
  """TensorBoard scalars (tensorboardX) on process 0; no-op elsewhere."""

  def __init__(self, workdir: str | Path):
    self._writer = None
    if is_main_process():
      from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
      self._writer = SummaryWriter(str(Path(workdir) / TENSORBOARD_DIR))

  def write(self, step: int, scalars: dict, prefix: str = "") -> None:
    if self._writer:
      for name, value in scalars.items():
        if value is not None:
          self._writer.add_scalar(prefix + name, float(value), step)
      self._writer.flush()

  def close(self) -> None:
    if self._writer:
      self._writer.close()


def _duration(seconds: float) -> str:
  return str(datetime.timedelta(seconds=round(seconds)))


class Progress:
  """Progress of a run: a tqdm bar, or text lines where there is no terminal."""

  def __init__(self, *, total_steps: int, initial_step: int, steps_per_epoch: int,
               batch_size: int, use_bar: bool, what: str = "step"):
    from tqdm import tqdm  # pylint: disable=g-import-not-at-top
    self._total, self._steps_per_epoch = total_steps, steps_per_epoch
    self._batch_size = batch_size
    self._text = not (use_bar and sys.stdout.isatty()) and is_main_process()
    self._bar = tqdm(total=total_steps, initial=initial_step, unit=what,
                     dynamic_ncols=True,
                     disable=self._text or not use_bar or not is_main_process())

  def update(self, steps: int = 1) -> None:
    self._bar.update(steps)

  def report(self, step: int, loss: float, images_per_second: float | None) -> None:
    """Shows the latest loss and throughput (a text line without a bar)."""
    rate = "n/a" if not images_per_second else f"{images_per_second:.0f}"
    if not self._text:
      self._bar.set_postfix(loss=f"{loss:.4f}", img_per_s=rate)
      return
    eta = ""
    if images_per_second:
      steps_per_second = images_per_second / self._batch_size
      eta = f"  eta {_duration((self._total - step) / steps_per_second)}"
    log(f"step {step}/{self._total}  epoch {step / self._steps_per_epoch:.2f}  "
        f"loss {loss:.4f}  images/s {rate}{eta}")

  def write(self, message: str) -> None:
    if self._text:
      log(message)
    else:
      self._bar.write(message)

  def close(self) -> None:
    self._bar.close()


class Throughput:
  """Source images (pairs of views) per second of training: the first step
  (compilation) and the time spent evaluating or saving are excluded."""

  def __init__(self, batch_size: int):
    self._batch_size = batch_size
    self._start, self._steps, self._excluded = None, 0, 0.0

  def step_done(self, step_metrics) -> None:
    if self._start is None:  # the clock starts once the first step is done
      jax.block_until_ready(step_metrics)
      self._start = time.perf_counter()
    else:
      self._steps += 1

  @contextlib.contextmanager
  def paused(self):
    start = time.perf_counter()
    try:
      yield
    finally:
      self._excluded += time.perf_counter() - start

  @property
  def seconds(self) -> float:
    if self._start is None:
      return 0.0
    return time.perf_counter() - self._start - self._excluded

  @property
  def images_per_second(self) -> float | None:
    seconds = self.seconds
    return self._steps * self._batch_size / seconds if self._steps and seconds > 0 else None


def finite_or_none(value):
  """JSON has no NaN/inf: a non-finite float becomes None (null)."""
  if isinstance(value, float) and not math.isfinite(value):
    return None
  return value


class MetricsFile:
  """``metrics.json``: latest results plus the history (see module doc)."""

  def __init__(self, workdir: str | Path):
    self.path = Path(workdir) / METRICS_FILE

  def read(self) -> dict:
    """The stored metrics ({} if none). An unreadable file is kept aside as
    ``metrics.json.damaged`` with a warning, never silently dropped."""
    if not self.path.exists():
      return {}
    try:
      stored = json.loads(self.path.read_text())
      if not isinstance(stored, dict):
        raise ValueError("not a JSON object")
      return self._with_usable_history(stored)
    except (OSError, ValueError) as e:
      damaged = self.path.with_name(METRICS_FILE + ".damaged")
      if is_main_process():
        self.path.replace(damaged)
      print(f"warning: {self.path} was unreadable ({e}); kept as {damaged.name}, "
            "starting a new history", file=sys.stderr, flush=True)
      return {}

  def _with_usable_history(self, stored: dict) -> dict:
    """``stored`` with each history (``invocations``, ``evaluations``) that is
    not a list of records started anew; the file is first copied to
    ``metrics.json.damaged``, with a warning."""
    broken = [key for key in HISTORY_KEYS if key in stored and not (
        isinstance(stored[key], list) and all(isinstance(r, dict) for r in stored[key]))]
    if not broken:
      return stored
    damaged = self.path.with_name(METRICS_FILE + ".damaged")
    if is_main_process():
      shutil.copyfile(self.path, damaged)
    print(f"warning: {self.path}: {broken[0]} is {json.dumps(stored[broken[0]])[:40]}, not a "
          f"list of records; copied to {damaged.name}, starting that history anew",
          file=sys.stderr, flush=True)
    return {**stored, **{key: [] for key in broken}}

  def update(self, results: dict, *, invocation: dict | None = None,
             evaluations: list[dict] = ()) -> dict:
    """Merges ``results`` (latest values) and appends the history records,
    under a lock so concurrent writers (a run and a ``linear_eval``) keep
    each other's records."""
    with self._locked():
      stored = self.read()
      merged = {**stored, **{k: finite_or_none(v) for k, v in results.items()}}
      merged["invocations"] = list(stored.get("invocations", []))
      if invocation is not None:
        merged["invocations"].append({"finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
                                      **invocation})
      merged["evaluations"] = list(stored.get("evaluations", [])) + [
          {k: finite_or_none(v) for k, v in record.items()} for record in evaluations]
      if is_main_process():
        from gca_jax.training.checkpoint import write_json  # pylint: disable=g-import-not-at-top
        write_json(self.path, merged)
    return merged

  @contextlib.contextmanager
  def _locked(self):
    if not is_main_process():
      yield
      return
    with open(self.path.with_name(METRICS_FILE + ".lock"), "a") as lock:
      fcntl.flock(lock, fcntl.LOCK_EX)
      try:
        yield
      finally:
        fcntl.flock(lock, fcntl.LOCK_UN)


# Result key -> the protocol that produced it.
PROTOCOLS = {"knn_acc": "knn", "linear_probe_acc": "linear"}
RANDOM_INIT_PREFIX = "random_init_"
FINETUNE_SELECTION = "best test accuracy over epochs (as the paper)"


def _subset(train_examples: int) -> dict:
  """A record's mark that the train split was a subset of that size (not
  comparable with full-data numbers); nothing for the full split."""
  return {"train_examples": train_examples} if train_examples else {}


# Result keys measured beside the accuracies: carried by each record of the
# evaluation, not records of their own.
EVALUATION_MEASURES = ("wdm_lower_bound",)


def record_evaluation(result: dict, *, step: int, epoch: int, tensorboard: TensorBoard,
                      metrics_file: MetricsFile, write=log, random_init: bool = False,
                      train_examples: int = 0) -> dict:
  """Writes the ``knn_acc``/``linear_probe_acc`` of an encoder (``random_init``:
  a randomly initialised one, keys prefixed `RANDOM_INIT_PREFIX`) to
  TensorBoard, a line through ``write`` and metrics.json; returns the merged
  metrics. The `EVALUATION_MEASURES` in ``result`` (the WDM bound of the
  encoder's views) go to the same places and into each accuracy record.
  ``train_examples`` > 0: the train split was a subset of that size."""
  prefix = RANDOM_INIT_PREFIX if random_init else ""
  tensorboard.write(step, {prefix + k: v for k, v in result.items()}, "eval/")
  write(f"epoch {epoch}: " + ", ".join(f"{prefix}{k} {v:.4f}" for k, v in result.items()))
  measures = {k: v for k, v in result.items() if k in EVALUATION_MEASURES}
  records = [{"protocol": PROTOCOLS[k], "step": step, "epoch": epoch, "accuracy": v,
              "encoder": "random_init" if random_init else "trained", **measures,
              **_subset(train_examples)}
             for k, v in result.items() if k in PROTOCOLS]
  return metrics_file.update({prefix + k: v for k, v in result.items()},
                             evaluations=records)


def record_finetune(outcome, *, step: int, epoch: int, tensorboard: TensorBoard,
                    metrics_file: MetricsFile, train_examples: int = 0) -> dict:
  """Writes a `gca_jax.finetune.FinetuneResult` of the encoder trained for
  ``step`` steps (``epoch`` epochs): its best and last test accuracies;
  returns them as ``finetune_best_acc``/``finetune_last_acc``."""
  result = {"finetune_best_acc": outcome.best_accuracy,
            "finetune_last_acc": outcome.last_accuracy}
  record = {"protocol": "finetune", "step": step, "epoch": epoch,
            "accuracy": outcome.best_accuracy, "best_accuracy": outcome.best_accuracy,
            "last_accuracy": outcome.last_accuracy, "best_epoch": outcome.best_epoch,
            "selection": FINETUNE_SELECTION, "epochs": len(outcome.epoch_accuracies),
            "epoch_accuracies": list(outcome.epoch_accuracies), "encoder": "trained",
            **_subset(train_examples)}
  metrics_file.update(result, evaluations=[record])
  tensorboard.write(step, result, "eval/")
  return result


def where_to_look(workdir: str | Path) -> str:
  """The closing lines of a run: where its results are and how to view them."""
  workdir = Path(workdir)
  return (f"metrics: {workdir / METRICS_FILE}\n"
          f"TensorBoard logs: {workdir / TENSORBOARD_DIR}  "
          f"(view: tensorboard --logdir {shlex.quote(str(workdir / TENSORBOARD_DIR))})")


def next_command(workdir: str | Path, *, finished: bool) -> str:
  """The line that says what to run next on ``workdir``: its evaluation
  once the run is ``finished``, else the command that continues it."""
  workdir_flag = shlex.quote(f"--workdir={workdir}")  # pasted back into a shell
  if finished:
    return (f"next: python -m gca_jax.linear_eval {workdir_flag}  "
            "(--protocol=finetune: the paper's CIFAR protocol)")
  return f"next: python -m gca_jax.pretrain {workdir_flag}  (continues the run)"
