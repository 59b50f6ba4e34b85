"""`lookupvit motion --budget quick`: the video job's whole pipeline on a few videos."""

import json

import pytest

from lookupvit.cli import main
from lookupvit.experiments.motion import motion_runs


def test_the_quick_motion_job_writes_its_report_and_resumes(tmp_path, capsys):
    out = tmp_path / "motion"
    assert main(["motion", "--budget", "quick", "--out", str(out)]) == 0
    report = (out / "report.md").read_text()
    for run in motion_runs():
        result = json.loads((out / "results" / f"{run.name}.json").read_text())
        assert len(result["one_view"]) == len(result["multi_view"]) == (4 if run.name == "lookupvivit" else 1)
        assert result["multi_view"][0]["views"] == 4 and result["one_view"][0]["views"] == 1
        assert run.label in report
    for picture in ("accuracy_vs_flops.png", "clips.png", "attention_strips.png"):
        assert (out / picture).stat().st_size > 10_000, picture
    assert "| LookupViViT (multi-res) | 2x2x2 |" in report and "Sanity check" in report
    capsys.readouterr()
    # A rerun trains nothing: every model's result is there.
    assert main(["motion", "--budget", "quick", "--out", str(out)]) == 0
    assert capsys.readouterr().out.count("done earlier, skipped") == len(motion_runs())
    # Another budget or seed in the same folder is refused, naming the file.
    assert main(["motion", "--budget", "quick", "--seed", "1", "--out", str(out)]) == 2
    assert "holds results of another budget or seed" in capsys.readouterr().err


@pytest.mark.parametrize("budget", ["huge"])
def test_an_unknown_budget_is_refused(tmp_path, budget, capsys):
    with pytest.raises(SystemExit):
        main(["motion", "--budget", budget, "--out", str(tmp_path)])
    assert "invalid choice" in capsys.readouterr().err
