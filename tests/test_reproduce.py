"""`lookupvit reproduce --budget quick` end to end on real Fashion-MNIST images: every experiment, the report, resumability."""

import json

import pytest

import lookupvit.experiments.reproduce as reproduce_module
from lookupvit.experiments.reproduce import BUDGETS, experiments, reproduce


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("reproduce")
    return out, reproduce("quick", out, "cpu")


def test_quick_budget_runs_every_experiment_and_writes_the_report(quick_run):
    out, report = quick_run
    names = {experiment.name for experiment in experiments(BUDGETS["quick"])}
    assert {path.stem for path in (out / "results").glob("*.json")} == names
    text = report.read_text()
    for heading in ("## Claim by claim", "## 1. Accuracy against compute", "## 2. Ablations", "## 3. Multi-resolution", "## 4. Robustness", "## 5. Few-shot"):
        assert heading in text
    for image in ("accuracy_vs_flops.png", "multires.png", "robustness.png", "feature_deviation.png", "corruptions.png"):
        assert (out / image).stat().st_size > 10_000
    result = json.loads((out / "results" / "lookupvit-seed0.json").read_text())
    assert [row["grid"] for row in result["eval"]] == [[g, g] for g in range(1, 8)]
    assert set(result["robustness"]) == {"3", "5", "7"} and len(result["robustness"]["3"]["accuracy"]) == 15
    assert set(result["few_shot"]["3"]) == {"1", "5"}
    ablation = json.loads((out / "results" / "no-mhbc-p2l.json").read_text())
    assert ablation["head"] == "compressed" and ablation["eval"][0]["gflops"] < result["eval"][0]["gflops"]


def test_a_rerun_redoes_only_what_is_missing(quick_run, monkeypatch):
    out, _ = quick_run
    trained = []
    real_train = reproduce_module.train
    monkeypatch.setattr(reproduce_module, "train", lambda config: trained.append(config.out) or real_train(config))
    (out / "results" / "perceiver.json").unlink()  # as if the run was killed during this experiment
    reproduce("quick", out, "cpu")
    assert [path.rsplit("/", 1)[1] for path in trained] == ["perceiver"]
    assert (out / "results" / "perceiver.json").exists()


def test_report_only_reports_the_finished_experiments_and_names_the_others(quick_run, tmp_path, monkeypatch):
    import shutil

    out, _ = quick_run
    interim = tmp_path / "interim"
    shutil.copytree(out, interim, ignore=shutil.ignore_patterns("runs", "corrupted"))
    for name in ("perceiver", "no-mhbc-p2l"):
        (interim / "results" / f"{name}.json").unlink()
    monkeypatch.setattr(reproduce_module, "train", lambda config: pytest.fail("--report-only trained a model"))
    text = reproduce("quick", interim, "cpu", report_only=True).read_text()
    planned = len(experiments(BUDGETS["quick"]))
    assert f"{planned - 2} of {planned} experiments have finished" in text
    assert "Not run yet: perceiver, no-mhbc-p2l." in text
    assert "| Perceiver |" not in text and "| no-mhbc-p2l |" not in text
    assert "experiments have finished" not in (out / "report.md").read_text()


def test_beside_sets_the_other_token_regimes_claims_next_to_these(quick_run, tmp_path):
    import shutil
    from pathlib import Path

    out, _ = quick_run
    here = tmp_path / "here"
    shutil.copytree(out, here, ignore=shutil.ignore_patterns("runs", "corrupted"))
    paper_regime = Path(__file__).parents[1] / "docs" / "reproduction-paper"  # the committed 14x14 results
    text = reproduce("quick", here, "cpu", report_only=True, beside=paper_regime).read_text()
    assert "## Claim by claim at both token regimes" in text
    assert "| paper | claim | 7x7 lookup tokens (nano4) | 14x14 lookup tokens (nano2) |" in text
    assert "| Table 1 | LookupViT at the default grid is as accurate as ViT, or more |" in text
    with pytest.raises(ValueError, match="same token regime"):
        reproduce("quick", here, "cpu", report_only=True, beside=out)
    with pytest.raises(FileNotFoundError, match="no results"):
        reproduce("quick", here, "cpu", beside=tmp_path / "empty")


def test_another_budget_in_the_same_folder_is_refused(quick_run):
    out, _ = quick_run
    with pytest.raises(ValueError, match="another budget"):
        reproduce("full", out, "cpu")
    with pytest.raises(ValueError, match="unknown budget"):
        reproduce("huge", out, "cpu")


def test_the_paper_budget_runs_the_papers_token_regime():
    """14x14 lookup tokens (patch 2 at 28 px), Multi-Res over grids 3..10, single grids 3/5/7/10, Table 5 at 5x5."""
    from lookupvit.experiments.reproduce import train_config
    from lookupvit.models.registry import model_config

    budget = BUDGETS["paper"]
    found = {experiment.name: experiment for experiment in experiments(budget)}
    assert {"vit-seed0", "vit-seed1", "lookupvit-seed0", "lookupvit-seed1", "single-grid-10", "no-mhbc-p2l", "perceiver"} <= set(found)
    assert found["vit-12-epochs"].epochs == 12 and train_config(found["lookupvit-12-epochs"], budget, reproduce_module.Path("/r")).epochs == 12
    assert all(experiment.model.endswith("_nano2") for experiment in found.values())
    assert model_config("lookupvit_nano2").patch_grid == (14, 14)
    multires = train_config(found["lookupvit-seed1"], budget, reproduce_module.Path("/runs"))
    assert multires.grids == list(range(3, 11)) and multires.model_args == {"compressed_grid": 5} and multires.seed == 1
    assert multires.eval_grids == list(range(1, 15)) and multires.train_subset is None
    ablation = found["no-lookup-tokens"]
    assert ablation.model_args == {"compressed_grid": 5, "use_lookup_tokens": False} and ablation.grids == (5,)
    assert found["perceiver"].model_args == {"num_latents": 25}


def test_the_paper_budget_learns_all_ten_classes_and_transfers_to_digits():
    from lookupvit.experiments.reproduce import train_config, transfer_sets

    budget = BUDGETS["paper"]
    config = train_config(experiments(budget)[0], budget, reproduce_module.Path("/runs"))
    assert config.classes is None  # all ten Fashion-MNIST classes
    pool, test = transfer_sets(budget)
    assert (len(pool), len(test)) == (1000, 797) and pool.classes == test.classes == tuple("0123456789")
    assert pool.images.shape[1:] == (1, 28, 28) and pool.images.dtype == reproduce_module.torch.uint8
    assert min(reproduce_module.torch.bincount(pool.labels, minlength=10)) >= 25  # enough for 25 shots of every digit
    pooled = {bytes(image.numpy()) for image in pool.images}
    assert not any(bytes(image.numpy()) in pooled for image in test.images)  # no image is both a shot and a test item


def test_paper_quick_runs_the_ten_class_suite_with_digit_transfer(tmp_path):
    report = reproduce("paper-quick", tmp_path, "cpu")
    result = json.loads((tmp_path / "results" / "lookupvit-seed0.json").read_text())
    assert [row["grid"] for row in result["eval"]] == [[g, g] for g in range(1, 15)]
    assert set(result["few_shot"]) == {"5", "7", "10"} and set(result["robustness"]) == {"5", "7", "10"}
    assert json.loads((tmp_path / "runs" / "vit-seed0" / "config.json").read_text())["classes"] is None  # all ten classes
    text = report.read_text()
    assert "## 5. Few-shot transfer to handwritten digits" in text and "of all ten classes" in text
    longer = json.loads((tmp_path / "results" / "lookupvit-2-epochs.json").read_text())
    assert len(longer["epoch_top1"]) == 2 and "robustness" not in longer  # the budget check trains longer, evaluates clean only
    assert "Budget check (seed 0): LookupViT 5x5 − ViT is" in text


def test_held_out_class_transfer_is_refused_for_backbones_that_saw_those_classes():
    import dataclasses

    from lookupvit.experiments.reproduce import transfer_sets

    ten_classes = dataclasses.replace(BUDGETS["full"], classes=None)
    with pytest.raises(ValueError, match="never saw classes"):
        transfer_sets(ten_classes)
    with pytest.raises(ValueError, match="unknown transfer set"):
        transfer_sets(dataclasses.replace(BUDGETS["full"], transfer="cifar"))


def test_a_folder_written_before_a_setting_existed_resumes_at_its_default(tmp_path):
    from lookupvit.experiments.results import open_suite

    open_suite(BUDGETS, "full", tmp_path, "cpu")
    written = json.loads((tmp_path / "budget.json").read_text())
    old = {key: value for key, value in written.items() if key not in ("classes", "transfer")}  # as folders of 0.2.0 hold it
    (tmp_path / "budget.json").write_text(json.dumps(old))
    open_suite(BUDGETS, "full", tmp_path, "cpu")  # the full budget ran at the defaults: accepted
    assert json.loads((tmp_path / "budget.json").read_text()) == written
    (tmp_path / "budget.json").write_text(json.dumps({**old, "classes": None}))
    with pytest.raises(ValueError, match="another budget"):
        open_suite(BUDGETS, "full", tmp_path, "cpu")
