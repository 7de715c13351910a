"""Mean ± std over seeds, and Markdown tables, for the experiments' reports."""

from __future__ import annotations

import math
from typing import Sequence


def mean_std(values: Sequence[float]) -> tuple[float, float]:
  """Mean and sample standard deviation (0 for a single value).

  Examples:
    >>> mean_std([1.0, 3.0])
    (2.0, 1.4142135623730951)
  """
  values = [float(v) for v in values]
  mean = sum(values) / len(values)
  if len(values) < 2:
    return mean, 0.0
  return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def format_mean_std(values: Sequence[float], scale: float = 100.0) -> str:
  """``mean ± std (n=...)`` of ``values * scale`` (a dash for no values).

  Examples:
    >>> format_mean_std([0.5, 0.7])
    '60.00 ± 14.14 (n=2)'
  """
  if not values:
    return "–"
  mean, std = mean_std([v * scale for v in values])
  if len(values) == 1:
    return f"{mean:.2f} (n=1)"
  return f"{mean:.2f} ± {std:.2f} (n={len(values)})"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
  """A Markdown table.

  Examples:
    >>> print(markdown_table(["a", "b"], [[1, 2]]))
    | a | b |
    | --- | --- |
    | 1 | 2 |
  """
  lines = ["| " + " | ".join(header) + " |",
           "| " + " | ".join("---" for _ in header) + " |"]
  lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
  return "\n".join(lines)
