r"""The pre-stated test behind a claim's verdict: a paired comparison over seeds.

Two settings trained with the same seeds (same initialisation, data subset
and augmentation stream) give paired accuracies ``a_s`` and ``b_s``. The
test is Student's paired t-test on the differences ``d_s = a_s - b_s``:
``t = mean(d) / (std(d) / sqrt(n))`` with ``n - 1`` degrees of freedom
(`scipy.stats.ttest_rel`), one-sided in each direction, at level
``LEVEL``. A claim "a beats b" is

* **reproduced** if ``p(a > b) < LEVEL``,
* **not reproduced** if ``p(a < b) < LEVEL`` (significantly the other way),
* **not distinguishable at this scale** otherwise (including fewer than two
  pairs, or differences that are all equal).

Example:
  >>> from experiments import verdicts
  >>> test = verdicts.paired_test([0.9, 0.8, 0.85], [0.7, 0.65, 0.6])
  >>> round(test["mean_difference"], 4), test["p_greater"] < 0.05
  (0.2, True)
  >>> verdicts.claim_verdict(test)
  'reproduced'
  >>> verdicts.claim_verdict(verdicts.paired_test([0.5, 0.6], [0.55, 0.5]))
  'not distinguishable at this scale'
"""

from __future__ import annotations

from typing import Sequence

from experiments import tables

LEVEL = 0.05
REPRODUCED = "reproduced"
NOT_REPRODUCED = "not reproduced"
NOT_DISTINGUISHABLE = "not distinguishable at this scale"


def paired_test(a: Sequence[float], b: Sequence[float]) -> dict:
  """The paired t-test of ``a`` against ``b`` (same seeds, same order): the
  mean and std of the differences, ``t``, and the one-sided p-values
  ``p_greater`` (a > b) and ``p_less`` (a < b); None where undefined (fewer
  than two pairs, or no spread of the differences), as JSON has no NaN."""
  from scipy import stats  # pylint: disable=g-import-not-at-top
  if len(a) != len(b):
    raise ValueError(f"paired samples need equal lengths, got {len(a)} and {len(b)}")
  differences = [float(x) - float(y) for x, y in zip(a, b)]
  n = len(differences)
  mean, std = tables.mean_std(differences) if n else (None, None)
  t = p_greater = p_less = None
  if n >= 2 and std > 0:
    t = float(stats.ttest_rel(a, b).statistic)
    p_greater = float(stats.ttest_rel(a, b, alternative="greater").pvalue)
    p_less = float(stats.ttest_rel(a, b, alternative="less").pvalue)
  return {"n": n, "mean_difference": mean, "std_difference": std, "t": t,
          "p_greater": p_greater, "p_less": p_less}


def claim_verdict(test: dict) -> str:
  """The verdict on "a beats b" from `paired_test` (see the module doc)."""
  if _significant(test["p_greater"]):
    return REPRODUCED
  if _significant(test["p_less"]):
    return NOT_REPRODUCED
  return NOT_DISTINGUISHABLE


def _significant(p: float | None) -> bool:
  return p is not None and p < LEVEL


def domain_target_verdict(domain: dict, klass: dict) -> str:
  """Figure 1(B)'s claim: with a larger same-domain weight the domain
  accuracy rises (``domain``: the paired test, larger weight against none)
  while the class accuracy does not fall (``klass``, the same pairs): the
  claim is reproduced only if the rise is significant and no fall of the
  class accuracy is; a significant class fall makes it not reproduced."""
  rise = claim_verdict(domain)
  if rise == REPRODUCED and _significant(klass["p_less"]):
    return f"{NOT_REPRODUCED} (the class accuracy falls)"
  return rise


def mean_std(values: Sequence[float | None]) -> tuple[float | None, float | None]:
  """`tables.mean_std` of the values that are not None; (None, None) if none is."""
  values = [v for v in values if v is not None]
  return tables.mean_std(values) if values else (None, None)


def percent(mean: float | None, std: float | None) -> str:
  """``mean ± std`` of a fraction, in % (a dash for None)."""
  if mean is None:
    return "–"
  return f"{100 * mean:.2f} ± {100 * std:.2f}"


def _number(value: float | None, form: str) -> str:
  return "n/a" if value is None else format(value, form)


def describe(test: dict) -> str:
  """The test in words: the mean difference in percentage points, t and p."""
  if test["mean_difference"] is None:
    return "no pairs"
  return (f"difference {100 * test['mean_difference']:+.2f} ± "
          f"{100 * test['std_difference']:.2f} pp (n={test['n']}), "
          f"t={_number(test['t'], '.2f')}, p(greater)={_number(test['p_greater'], '.3g')}, "
          f"p(less)={_number(test['p_less'], '.3g')}")
