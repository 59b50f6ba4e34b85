"""Claim verdicts against effects and spreads worked out by hand from small made-up result files."""

import pytest

from lookupvit.experiments.claims import claims, claims_section, regimes_section, verdict

REGIME = {"default_grid": 5, "ablation_grid": 5, "single_grids": [3, 5], "lookup_side": 14}


def image_result(top1_by_grid: dict, head: str = "average", **extra) -> dict:
    rows = [{"grid": None if grid is None else [grid, grid], head: {"top1": value / 100}, "gflops": 0.2 if grid is None else 0.01 * grid}
            for grid, value in top1_by_grid.items()]
    return {"eval": rows, "head": head, "experiment": {"group": "compare", "model": "any_nano2"}, **extra}


def robustness(corrupted: float, deviation: float) -> dict:
    # two corruptions x two severities whose mean is `corrupted` (in %), deviation in % at severity "2"
    accuracy = {"noise": {"1": (corrupted + 1) / 100, "2": (corrupted - 1) / 100}, "blur": {"1": (corrupted + 2) / 100, "2": (corrupted - 2) / 100}}
    return {"accuracy": accuracy, "deviation": {"1": {"mean": 0.0}, "2": {"mean": deviation / 100}}}


def few_shot(one: float, five: float) -> dict:
    return {"1": {"mean": one / 100}, "5": {"mean": five / 100}}


@pytest.fixture
def results():
    return {
        "vit-seed0": image_result({None: 90.0}, robustness={"None": robustness(60.0, 30.0)}, few_shot={"None": few_shot(30.0, 50.0)}),
        "vit-seed1": image_result({None: 91.0}, robustness={"None": robustness(61.0, 32.0)}, few_shot={"None": few_shot(34.0, 51.0)}),
        "lookupvit-seed0": image_result({3: 89.0, 5: 91.2}, robustness={"5": robustness(63.0, 29.0)}, few_shot={"5": few_shot(31.0, 56.0)}),
        "lookupvit-seed1": image_result({3: 89.4, 5: 91.5}, robustness={"5": robustness(65.0, 29.5)}, few_shot={"5": few_shot(33.0, 55.0)}),
        "tokenlearner-half": image_result({None: 88.0}),
        "single-grid-3": image_result({3: 89.3}),
        "single-grid-5": image_result({5: 90.8}),
        "no-lookup-tokens": image_result({5: 85.0}, head="compressed"),
        "learned-compressed-tokens": image_result({5: 91.5}),
    }


def by_claim(found):
    return {(claim.source, claim.claim): claim for claim in found}


def test_effects_and_noise_are_the_differences_worked_out_by_hand(results):
    found = by_claim(claims(results, REGIME))
    accuracy_noise = 1.0  # ViT 90.0 / 91.0 against LookupViT 5x5 91.2 / 91.5: the larger spread
    table1 = found[("Table 1", "LookupViT 5x5 is as accurate as ViT, or more, at 0.25x its FLOPs")]
    assert table1.effect == pytest.approx(91.35 - 90.5) and table1.noise == pytest.approx(accuracy_noise)
    assert table1.verdict == "reproduced (within noise)"  # a claim of parity holds as a tie
    assert found[("Table 1", "LookupViT 5x5 is more accurate than TokenLearner 1/2")].effect == pytest.approx(3.35)
    lookup_ablation = found[("Table 5", "the 5x5 model is less accurate without lookup tokens")]
    assert lookup_ablation.effect == pytest.approx(5.8) and lookup_ablation.verdict == "reproduced"
    learned = found[("Table 5", "the 5x5 model is less accurate with learned instead of resized compressed tokens")]
    assert learned.effect == pytest.approx(-0.7) and learned.verdict == "within noise"
    multires = found[("Fig. 5b", "the multi-resolution model is as accurate at 3x3 as the model trained only there")]
    assert multires.effect == pytest.approx(89.2 - 89.3) and multires.verdict == "reproduced (within noise)"
    corrupted = found[("Tables 2/6", "LookupViT 5x5 is more accurate than ViT under corruption (mean over 15 x 5)")]
    # noise: LookupViT's seeds (63, 65) spread more than ViT's (60, 61)
    assert corrupted.effect == pytest.approx(64.0 - 60.5) and corrupted.noise == pytest.approx(2.0) and corrupted.verdict == "reproduced"
    deviation = found[("Fig. 4", "LookupViT 5x5's features deviate less than ViT's at the highest severity")]
    assert deviation.effect == pytest.approx(31.0 - 29.25) and deviation.noise == pytest.approx(2.0) and deviation.verdict == "within noise"
    one_shot = found[("Table 9", "LookupViT 5x5 transfers better than ViT at 1-shot")]
    assert one_shot.effect == pytest.approx(32.0 - 32.0) and one_shot.noise == pytest.approx(4.0)
    five_shot = found[("Table 9", "LookupViT 5x5 transfers better than ViT at 5-shot")]
    assert five_shot.effect == pytest.approx(55.5 - 50.5) and five_shot.verdict == "reproduced"
    assert not any(source == "Table 5" and "p->l" in claim for source, claim in found)  # not run: no claim


def test_few_shot_noise_is_at_least_two_standard_errors_of_the_paired_draws(results):
    def with_draws(result, grid, draws):
        result["experiment"]["seed"] = int(result["experiment"]["name"][-1])
        result["few_shot"][grid]["1"]["accuracies"] = [value / 100 for value in draws]
        result["few_shot"][grid]["1"]["mean"] = sum(draws) / len(draws) / 100

    for name in ("vit-seed0", "vit-seed1", "lookupvit-seed0", "lookupvit-seed1"):
        results[name]["experiment"]["name"] = name
    with_draws(results["vit-seed0"], "None", [30.0, 30.0])
    with_draws(results["vit-seed1"], "None", [30.0, 30.0])
    with_draws(results["lookupvit-seed0"], "5", [40.0, 30.0])  # paired differences 10, 0, 10, 0
    with_draws(results["lookupvit-seed1"], "5", [40.0, 30.0])
    one_shot = by_claim(claims(results, REGIME))[("Table 9", "LookupViT 5x5 transfers better than ViT at 1-shot")]
    # seed spreads are 0; the paired differences' standard deviation is 5.77, over 4 draws: 2 x 5.77 / 2
    assert one_shot.effect == pytest.approx(5.0) and one_shot.noise == pytest.approx(2 * 5.773503 / 2, rel=1e-5)
    assert one_shot.verdict == "within noise"


def test_the_opposite_effect_beyond_the_noise_is_not_reproduced_and_one_seed_gives_no_verdict(results):
    assert verdict(-1.5, 1.0) == "not reproduced" and verdict(1.0, 1.0) == "within noise" and verdict(1.01, 1.0) == "reproduced"
    assert verdict(-1.0, 1.0, parity=True) == "reproduced (within noise)" and verdict(-1.01, 1.0, parity=True) == "not reproduced"
    one_seed = {name: result for name, result in results.items() if not name.endswith("seed1")}
    assert {claim.verdict for claim in claims(one_seed, REGIME)} == {"one seed: no verdict"}
    lines = claims_section(one_seed, REGIME)
    assert lines[0] == "## Claim by claim" and any("| Table 1 |" in line and "| - |" in line for line in lines)


def test_without_vit_or_lookupvit_results_there_is_no_claim_table(results):
    assert claims({"vit-seed0": results["vit-seed0"]}, REGIME) == [] and claims_section({}, REGIME) == []


def test_ranking_movement_compares_the_last_two_epochs():
    from lookupvit.experiments.claims import ranking_movement

    still_moving = ranking_movement({"vit": [0.80, 0.88, 0.905], "lookupvit": [0.82, 0.89, 0.90]}, noise=0.5)
    text = " ".join(still_moving)
    assert "Order after the last epoch: vit (90.50) > lookupvit (90.00)." in text
    assert "After the epoch before: lookupvit (89.00) > vit (88.00): the order changed." in text
    assert "vit +2.50, lookupvit +1.00 points; the largest, vit's, is beyond the seed spread of 0.50 points." in text
    settled = " ".join(ranking_movement({"vit": [0.80, 0.90, 0.901], "lookupvit": [0.82, 0.91, 0.912]}, noise=0.5))
    assert "the same order" in settled and "within the seed spread" in settled
    assert ranking_movement({"vit": [0.8, 0.9]}, noise=None) == []  # one model: no ranking
    assert "no seed spread" in " ".join(ranking_movement({"a": [0.1, 0.2], "b": [0.3, 0.1]}, noise=None))


def test_budget_check_says_whether_lookupvits_standing_holds_with_longer_training(results):
    from lookupvit.experiments.claims import budget_check

    for name in ("vit-seed0", "lookupvit-seed0"):
        results[name]["epoch_top1"] = [0.5] * 6  # six epochs at the budget; the values do not enter the check
    assert budget_check(results, REGIME) == []  # no longer runs yet
    results["vit-12-epochs"] = image_result({None: 92.0}, experiment={"group": "budget-check", "model": "vit_nano2", "epochs": 12})
    results["lookupvit-12-epochs"] = image_result({5: 91.5}, experiment={"group": "budget-check", "model": "lookupvit_nano2", "epochs": 12})
    text = " ".join(budget_check(results, REGIME))
    assert "+1.20 points after 6 epochs and -0.50 after 12 (ViT 92.00 %, LookupViT 91.50 %)." in text
    # the seed spread is 1.0 (ViT 90.0 / 91.0): a gap that moves 1.7 points means the budget is too short
    assert "The gap moved -1.70 points, beyond the seed spread of 1.00: 6 epochs are too short to settle it." in text
    results["lookupvit-12-epochs"] = image_result({5: 92.5}, experiment={"group": "budget-check", "model": "lookupvit_nano2", "epochs": 12})
    assert "The gap moved -0.70 points, within the seed spread of 1.00: 6 epochs are long enough" in " ".join(budget_check(results, REGIME))


def test_two_token_regimes_line_up_claim_by_claim(results):
    small_regime = {"default_grid": 3, "ablation_grid": 3, "single_grids": [3], "lookup_side": 7}
    small = {
        "vit-seed0": image_result({None: 80.0}), "vit-seed1": image_result({None: 82.0}),
        "lookupvit-seed0": image_result({3: 79.0}), "lookupvit-seed1": image_result({3: 80.0}),
        "single-grid-3": image_result({3: 78.0}),
    }
    lines = regimes_section({"14x14": (results, REGIME), "7x7": (small, small_regime)})  # listed by lookup tokens
    rows = {line.split(" | ")[1]: line.split(" | ")[2:] for line in lines if line.startswith("| Table") or line.startswith("| Fig")}
    # LookupViT 3x3 at 7x7 tokens (79.5 vs 81.0, spread 2.0) beside LookupViT 5x5 at 14x14 (91.35 vs 90.5, spread 1.0)
    assert rows["LookupViT at the default grid is as accurate as ViT, or more"] == [
        "-1.50 (noise 2.00): reproduced (within noise)", "+0.85 (noise 1.00): reproduced (within noise) |"]
    # the multi-resolution model at 3x3 exists in both; TokenLearner only in the 14x14 results
    assert rows["the multi-resolution model is as accurate at 3x3 as the model trained only there"][0] == "+1.50 (noise 2.00): reproduced (within noise)"
    assert rows["LookupViT at the default grid is more accurate than TokenLearner 1/2"][0] == "-"
    assert lines[0] == "## Claim by claim at both token regimes" and "| paper | claim | 7x7 | 14x14 |" in lines
    sources = [line.split(" | ")[0].removeprefix("| ") for line in lines if line.startswith(("| Table", "| Fig"))]
    assert sources == sorted(sources, key=["Table 1", "Table 5", "Fig. 5b", "Tables 2/6", "Fig. 4", "Table 9"].index)
