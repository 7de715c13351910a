"""The styled-domain sweep (`experiments.pacs_domains`) and the noisy-views
table (`experiments.table2`, INCE against GCA-UOT): their ``--smoke`` runs end
to end, their summaries and pre-stated tests on hand-made runs, and the
one-line errors of their flags."""

import json
import math
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
  sys.path.insert(0, str(REPO))

from experiments import cpu_scale, pacs_domains, table2, verdicts  # noqa: E402
from tests.experiments.test_experiments import run_entry_point  # noqa: E402

ALLOWED_VERDICTS = (verdicts.REPRODUCED, verdicts.NOT_DISTINGUISHABLE, verdicts.NOT_REPRODUCED,
                    f"{verdicts.NOT_REPRODUCED} (the class accuracy falls)")


@pytest.mark.slow
def test_domain_sweep_smoke_on_styled_digits_resumes_and_summarises(tmp_path):
  root = tmp_path / "domains"
  args = ("--smoke", f"--root={root}", "--method=GCA-INCE", "--alphas=0,1", "--seeds=0,1")
  out = run_entry_point("pacs_domains", *args)
  assert "[1/4] [run]" in out and "[4/4] [run]" in out
  saved = json.loads((root / pacs_domains.SUMMARY_JSON).read_text())
  assert len(saved["runs"]) == 4
  for row in saved["runs"]:
    assert row["dataset"] == "styled_digits" and row["method"] == "GCA-INCE"
    assert 0.0 <= row["class_acc"] <= 1.0 and 0.0 <= row["domain_acc"] <= 1.0
    # The sanity baseline: the styles are visible in the pixels (chance 0.25).
    assert row["raw_pixel_domain_acc"] > 0.6, row
  (summary,) = saved["summaries"]
  assert [g["alpha_minus_beta"] for g in summary["by_alpha_minus_beta"]] == [0.0, 1.0]
  assert summary["test"]["seeds"] == [0, 1] and summary["test"]["domain"]["n"] == 2
  assert summary["test"]["verdict"] in ALLOWED_VERDICTS
  assert "Verdict: **" in (root / pacs_domains.SUMMARY_MD).read_text()
  assert (root / pacs_domains.FIGURE).stat().st_size > 0
  again = run_entry_point("pacs_domains", *args)
  assert again.count("[skip]") == 4 and "[run]" not in again
  (root / pacs_domains.SUMMARY_JSON).unlink()
  report = run_entry_point("pacs_domains", f"--root={root}", "--report_only")
  assert "[run]" not in report and json.loads(
      (root / pacs_domains.SUMMARY_JSON).read_text())["runs"] == saved["runs"]


@pytest.mark.slow
def test_noisy_views_smoke_pairs_ince_and_gca_uot(tmp_path):
  root = tmp_path / "noisy"
  out = run_entry_point("table2", "--smoke", f"--root={root}", "--policies=large_erase",
                        "--seeds=0,1", "--corruptions=none")
  assert "[4/4] digits, large_erase, GCA-UOT, seed 1" in out
  saved = json.loads((root / table2.NOISY_VIEWS_JSON).read_text())
  assert sorted((r["method"], r["seed"]) for r in saved["runs"]) == [
      ("GCA-UOT", 0), ("GCA-UOT", 1), ("INCE", 0), ("INCE", 1)]
  assert all(0.0 <= r["linear_probe_acc"] <= 1.0 and 0.0 <= r["knn_acc"] <= 1.0
             for r in saved["runs"])
  tests = {t["policies"]: t for t in saved["tests"]}
  assert set(tests) == {"large_erase", "extreme policies together"}
  for test in tests.values():
    assert test["pairs"] == 2
    for measure in table2.NOISY_VIEWS_MEASURES:
      assert test[measure]["verdict"] in ALLOWED_VERDICTS[:3]
  assert "| digits | large_erase |" in (root / table2.NOISY_VIEWS_MD).read_text()
  (root / table2.NOISY_VIEWS_JSON).unlink()
  report = run_entry_point("table2", f"--root={root}", "--report_only")
  assert "[run]" not in report
  assert json.loads((root / table2.NOISY_VIEWS_JSON).read_text())["tests"] == saved["tests"]


def test_paired_test_matches_the_t_statistic_and_its_directions():
  a, b = [0.70, 0.74, 0.69, 0.80], [0.60, 0.66, 0.65, 0.70]
  test = verdicts.paired_test(a, b)
  d = [x - y for x, y in zip(a, b)]
  mean = sum(d) / 4
  std = math.sqrt(sum((x - mean) ** 2 for x in d) / 3)
  assert test["t"] == pytest.approx(mean / (std / 2))
  assert test["p_greater"] < 0.05 < test["p_less"]
  assert test["p_greater"] + test["p_less"] == pytest.approx(1.0)
  assert verdicts.claim_verdict(test) == verdicts.REPRODUCED
  assert verdicts.claim_verdict(verdicts.paired_test(b, a)) == verdicts.NOT_REPRODUCED
  single = verdicts.paired_test([0.9], [0.1])
  assert single["p_greater"] is None and single["mean_difference"] == pytest.approx(0.8)
  assert verdicts.claim_verdict(single) == verdicts.NOT_DISTINGUISHABLE
  with pytest.raises(ValueError, match="equal lengths"):
    verdicts.paired_test([0.1, 0.2], [0.1])


def domain_rows(domain_gain, class_change, seeds=(0, 1, 2)):
  rows = []
  for seed in seeds:
    for alpha in (0.0, 0.5, 1.0):
      rows.append({"dataset": "styled_digits", "method": "GCA-INCE", "alpha": alpha,
                   "beta": 0.0, "seed": seed, "knn_acc": None, "train_seconds": None,
                   "class_acc": 0.8 + alpha * class_change + 0.01 * seed * (1 + alpha),
                   "domain_acc": 0.6 + alpha * domain_gain + 0.02 * seed * (1 + alpha),
                   "raw_pixel_class_acc": 0.7, "raw_pixel_domain_acc": 0.95})
  return rows


def test_domain_summary_applies_the_pre_stated_test():
  (summary,) = pacs_domains.summarise(domain_rows(0.3, 0.0))
  assert summary["test"]["contrast"] == "alpha - beta = 1 vs 0"
  assert summary["test"]["domain"]["mean_difference"] == pytest.approx(0.32)
  assert summary["test"]["verdict"] == verdicts.REPRODUCED
  gaps = summary["by_alpha_minus_beta"]
  assert gaps[1]["domain_acc_mean"] == pytest.approx(0.6 + 0.15 + 0.02 * 1.5)
  (falls,) = pacs_domains.summarise(domain_rows(0.3, -0.2))
  assert falls["test"]["verdict"] == f"{verdicts.NOT_REPRODUCED} (the class accuracy falls)"
  (lower,) = pacs_domains.summarise(domain_rows(-0.3, 0.0))
  assert lower["test"]["verdict"] == verdicts.NOT_REPRODUCED
  text = pacs_domains.summary_markdown([summary])
  assert "| 1 | 3 | 82.00 ± 2.00 |" in text and "Verdict: **reproduced**" in text


def test_noisy_views_summary_pools_the_extreme_policies():
  rows = [{"dataset": "cifar10", "policy": policy, "method": method, "seed": seed,
           "implementation": "published", "train_seconds": None,
           "linear_probe_acc": 0.5 + 0.01 * seed + (gain if method == "GCA-UOT" else 0.0),
           "knn_acc": 0.4 + 0.01 * seed}
          for policy, gain in (("simclr", 0.0), ("large_erase", 0.05), ("brightness", 0.02),
                               ("strong_crop", 0.03))
          for method in ("INCE", "GCA-UOT") for seed in range(3)]
  rows[0]["linear_probe_acc"] += 0.001   # some spread of the standard policy's differences
  summary = table2.noisy_views_summary(rows)
  tests = {t["policies"]: t for t in summary["tests"]}
  pooled = tests["extreme policies together"]
  assert pooled["pairs"] == 9
  assert pooled["linear probe"]["mean_difference"] == pytest.approx((0.05 + 0.02 + 0.03) / 3)
  assert pooled["linear probe"]["verdict"] == verdicts.REPRODUCED
  assert pooled["kNN"]["verdict"] == verdicts.NOT_DISTINGUISHABLE   # no differences at all
  assert tests["simclr"]["pairs"] == 3
  text = table2.noisy_views_markdown(summary)
  assert "| cifar10 | large_erase | 51.00 ± 1.00 (n=3) | 56.00 ± 1.00 (n=3) |" in text


def test_noisy_views_rows_leave_out_runs_still_training(tmp_path):
  from experiments import runs
  for seed, metrics in ((0, {"linear_probe_acc": 0.3, "knn_acc": 0.25}), (1, {"epochs": 6})):
    workdir = tmp_path / f"seed{seed}"
    runs.write_json(workdir / runs.RUN_RECORD, {
        "experiment": "table2", "method": "INCE", "dataset": "cifar10",
        "policy": "large_erase", "seed": seed})
    runs.write_json(workdir / runs.METRICS, metrics)
  (row,) = table2.noisy_views_rows(tmp_path)
  assert (row["seed"], row["linear_probe_acc"], row["knn_acc"]) == (0, 0.3, 0.25)


def test_the_cpu_scale_and_the_archive_flag():
  from gca_jax.training import config as config_lib
  config = cpu_scale.apply(config_lib.get_config(), "digits")
  assert (config.load_size, config.epochs) == (8, cpu_scale.DIGITS_EPOCHS)
  assert cpu_scale.test_examples("cpu", "cifar10") == cpu_scale.TEST_EXAMPLES["cifar10"]
  assert cpu_scale.test_examples("paper", "cifar10") == 0
  with pytest.raises(ValueError, match="--scale=cpu is defined for cifar10, digits"):
    cpu_scale.apply(config, "pacs")
  assert pacs_domains.dataset_slug("styled:npz:/x/cifar10_jpeg.npz") == "styled_cifar10_jpeg"


@pytest.mark.parametrize("script, args, message", [
    ("pacs_domains", ("--data=styled_cifar10",), "--archive is required"),
    ("pacs_domains", ("--data=styled_cifar10", "--archive=/nonexistent/c.npz"),
     "--archive=/nonexistent/c.npz: no such file"),
    ("pacs_domains", ("--scale=cpu",), "--scale=cpu is defined for cifar10, digits"),
    ("pacs_domains", ("--data=photos",), "--data"),
    ("table2", ("--datasets=digits", "--archive=x.npz"), "which --datasets does not select"),
])
def test_unusable_flags_fail_in_one_line(tmp_path, script, args, message):
  error = run_entry_point(script, f"--root={tmp_path}", *args, expect_failure=True)
  assert message in error


@pytest.mark.parametrize("module", [verdicts, cpu_scale, pacs_domains],
                         ids=lambda m: m.__name__)
def test_docstring_examples(module):
  import doctest
  runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
  tests = [t for t in doctest.DocTestFinder().find(module) if t.examples]
  assert tests
  for test in tests:
    runner.run(test)
  assert runner.summarize(verbose=False).failed == 0
