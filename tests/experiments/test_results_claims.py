"""The claims table in experiments/RESULTS.md is complete and agrees with its own tables.

The Section 3.5 rows (FLOPs and speed) and the WDM-correlation row each carry
numbers and a verdict, and those numbers are the ones the section's FLOP and
timing tables and the small-scale paragraph report, so that editing one
without the other fails here.
"""

import re

import pytest

from tests.conftest import REPO_ROOT

RESULTS = REPO_ROOT / "experiments" / "RESULTS.md"
SECTION = "## Section 3.5's cost claims and the WDM, checked"
VERDICT_WORDS = (
    "not reproduced", "contradicted", "not in general", "weakly", "reproduced", "holds")


def _section(text: str, title: str) -> str:
  start = text.index(title)
  end = text.find("\n## ", start + len(title))
  return text[start:end if end != -1 else len(text)]


def _tables(section: str) -> dict[str, list[list[str]]]:
  """Markdown tables of the section, keyed by their header line."""
  tables, current = {}, None
  for line in section.splitlines():
    if line.startswith("|"):
      cells = [c.strip() for c in line.strip().strip("|").split("|")]
      if current is None:
        current = tables.setdefault(" | ".join(cells), [])
      elif not set("".join(cells)) <= set("-: "):
        current.append(cells)
    else:
      current = None
  return tables


@pytest.fixture(scope="module")
def claims_section():
  return _section(RESULTS.read_text(), SECTION)


@pytest.fixture(scope="module")
def tables(claims_section):
  return _tables(claims_section)


def _rows_by_claim(tables):
  rows = tables["claim | numbers | verdict"]
  wanted = {"gca_ince_flops": "5% more Flops", "gca_uot_flops": "saves 30%",
            "gca_uot_speed": "faster than INCE", "wdm": "WDM"}
  found = {}
  for key, phrase in wanted.items():
    matching = [r for r in rows if phrase in r[0]]
    assert len(matching) == 1, (phrase, rows)
    found[key] = matching[0]
  return found


def test_every_claim_has_numbers_and_a_plain_verdict(tables):
  for claim, numbers, verdict in _rows_by_claim(tables).values():
    assert re.search(r"\d", numbers), claim
    assert verdict.startswith(VERDICT_WORDS), (claim, verdict)


def test_flop_claims_quote_the_flop_table(tables):
  flop_rows = {r[0]: r for r in tables[
      "loss | forward MFLOP | x INCE | fwd+bwd MFLOP | x INCE | paper MFlops | paper x INCE"]}
  rows = _rows_by_claim(tables)
  for loss, key in (("gca_ince", "gca_ince_flops"), ("gca_uot", "gca_uot_flops")):
    forward, backward = float(flop_rows[loss][2]), float(flop_rows[loss][4])
    numbers = rows[key][1]
    assert f"+{100 * (forward - 1):.1f}% forward" in numbers, (loss, numbers)
    assert f"+{100 * (backward - 1):.1f}% forward+backward" in numbers, (loss, numbers)


def test_speed_claim_quotes_the_timing_table(tables):
  timing = tables[
      "N | gca_ince x INCE | gca_uot x INCE | gca_ince (log) x INCE | gca_uot (log) x INCE"]
  numbers = _rows_by_claim(tables)["gca_uot_speed"][1]
  assert [r[0] for r in timing] == ["256", "1024", "4096"]
  for n, _, uot, *_ in timing:
    quoted = rf"{re.escape(uot)} \((N = )?{n}\)"
    assert re.search(quoted, numbers), (n, uot, numbers)


def test_wdm_claim_quotes_the_small_scale_correlations(tables):
  text = RESULTS.read_text()
  paragraph = text[text.index("Spearman rank correlations of the WDM bound"):]
  paragraph = paragraph[:paragraph.index("\n\n")]
  numbers = _rows_by_claim(tables)["wdm"][1]
  quoted = re.findall(r"-?\d+\.\d{3}", numbers)
  assert len(quoted) >= 4, numbers
  for value in quoted:
    assert value in paragraph, (value, paragraph)
