"""The one-command accelerator check, in its tiny CPU mode."""

import pytest
import json

from experiments import accelerator_check


@pytest.mark.slow
def test_smoke_writes_every_section(tmp_path):
  assert accelerator_check.main(["--smoke", f"--out={tmp_path}"]) == 0
  report = json.loads((tmp_path / "accelerator_check.json").read_text())
  sections = report["sections"]
  assert set(sections) == {"losses", "input", "train_step", "cifar"}
  assert {row["loss"] for row in sections["losses"]} >= {"gca_uot", "gca_ince", "infonce"}
  assert all(row["ms"] > 0 for row in sections["losses"])
  assert sections["input"]["images_per_second"] > 0
  step = sections["train_step"]
  assert step["dtype"] == "bfloat16" and step["images_per_second"] > 0
  assert step["model_flops_per_step"] > 0 and step["achieved_flops"] > 0
  assert step["compiled_peak_bytes_one_device"] > 0 and step["fits_80gb"]
  runs = {row["loss"]: row for row in sections["cifar"]}
  assert set(runs) == {"infonce", "gca_uot"}
  assert runs["infonce"]["epochs"] == runs["gca_uot"]["epochs"] == report["cifar_epochs"]
  assert all(0 <= row["linear_probe_acc"] <= 1 and row["protocol"] == "linear"
             for row in runs.values())
  summary = (tmp_path / "accelerator_check.md").read_text()
  assert report["device"] in summary and "## cifar" in summary
  # Re-running resumes the finished runs at the same epochs.
  assert accelerator_check.main(["--smoke", f"--out={tmp_path}"]) == 0
  again = json.loads((tmp_path / "accelerator_check.json").read_text())
  assert again["cifar_epochs"] == report["cifar_epochs"]
  assert [r["linear_probe_acc"] for r in again["sections"]["cifar"]] == [
      r["linear_probe_acc"] for r in sections["cifar"]]
