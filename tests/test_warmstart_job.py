"""`lookupvit warmstart --budget quick`: the whole pipeline (source ViT, conversion, warm and scratch runs, report) and its resume."""

import json

import pytest

from lookupvit.cli import main


def test_the_quick_warmstart_job_writes_its_report_and_resumes(tmp_path, capsys):
    out = tmp_path / "warmstart"
    assert main(["warmstart", "--budget", "quick", "--out", str(out)]) == 0
    report = (out / "report.md").read_text()
    assert "| 3x3 |" in report and "warm, seed 1" in report and "scratch, seed 0" in report
    assert (out / "warmstart.png").stat().st_size > 10_000
    warm = json.loads((out / "results" / "warm-seed0.json").read_text())
    assert warm["config"]["init_weights"] == str(out / "warm-start.safetensors")
    assert json.loads((out / "results" / "scratch-seed0.json").read_text())["config"]["init_weights"] is None
    assert [step for step, _ in warm["losses"]] == list(range(1, 9))  # a loss curve: every step of the quick budget
    capsys.readouterr()
    assert main(["warmstart", "--budget", "quick", "--out", str(out)]) == 0
    assert capsys.readouterr().out.count("done earlier, skipped") == 5
    with pytest.raises(ValueError, match="another budget"):
        from lookupvit.experiments.warmstart import run_warmstart

        run_warmstart("full", out)
