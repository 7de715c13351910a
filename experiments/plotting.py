"""Figures of the experiments (matplotlib, an optional dependency)."""

from __future__ import annotations

from pathlib import Path

from experiments import tables
from experiments.entry import MissingDependencyError

INSTALL_EXPERIMENTS = "pip install -e '.[experiments]'"


def pyplot():
  """``matplotlib.pyplot`` with the Agg backend, or MissingDependencyError.

  Scripts that plot call it before any training, so a missing matplotlib
  stops them at once rather than after hours of runs."""
  try:
    import matplotlib  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise MissingDependencyError(f"this experiment plots with matplotlib, which is "
                                 f"not installed: {INSTALL_EXPERIMENTS}") from None
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


def errorbar_curve(ax, samples_by_x: dict, **kwargs) -> None:
  """Plots mean +/- std over seeds of ``samples_by_x[x]`` against sorted x."""
  xs = sorted(samples_by_x)
  stats = [tables.mean_std(samples_by_x[x]) for x in xs]
  ax.errorbar(xs, [s[0] for s in stats], yerr=[s[1] for s in stats],
              marker="o", capsize=3, **kwargs)


def save_figure(fig, path: Path, dpi: int = 100) -> Path:
  """Saves ``fig`` (tight layout) to ``path`` and releases it."""
  plt = pyplot()
  fig.tight_layout()
  fig.savefig(path, dpi=dpi)
  plt.close(fig)
  return Path(path)
