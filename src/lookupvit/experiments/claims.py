"""The paper's claims, one row each, judged against the run-to-run spread of `lookupvit reproduce`'s results.

Every claim is a signed effect in points, positive in the direction the paper reports (LookupViT more accurate,
an ablation costing accuracy, ...). It is "reproduced" when the effect exceeds the noise, "not reproduced" when
the opposite exceeds it, and "within noise" otherwise. A claim of parity ("as accurate as ViT, or more") is
reproduced as long as the effect is not below minus the noise: "reproduced (within noise)" says it holds as a
tie. The noise is the seed-to-seed spread the suite measured for the same quantity (largest − smallest over the
seeds of ViT and of the multi-resolution LookupViT, the larger of the two); with one seed there is no spread,
and the verdict says so. A few-shot probe is itself noisy (a few images per class decide it), so its noise is the
larger of that spread and two standard errors of the paired difference over the probe's draws of shots.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from .results import eval_row, top1

ABLATIONS = {
    "no-lookup-tokens": "without lookup tokens",
    "no-mhbc-p2l": "without MHBC p->l",
    "compressed-loss-only": "with the loss on the compressed head only",
    "lookup-loss-only": "with the loss on the lookup head only",
    "learned-compressed-tokens": "with learned instead of resized compressed tokens",
}


SOURCES = ("Table 1", "Table 5", "Fig. 5b", "Tables 2/6", "Fig. 4", "Table 9")  # the order claims are listed in


@dataclass(frozen=True)
class Claim:
    source: str  # the paper's table or figure
    claim: str
    effect: float  # points, positive in the paper's direction
    noise: float | None  # the seed spread of the same quantity, None with one seed
    parity: bool = False  # the paper claims "as good, or better", not "better"
    across_regimes: str | None = None  # the claim without the regime's own grid, to line it up with another regime's

    @property
    def verdict(self) -> str:
        return verdict(self.effect, self.noise, self.parity)

    @property
    def key(self) -> str:
        return self.across_regimes or self.claim


def verdict(effect: float, noise: float | None, parity: bool = False) -> str:
    if noise is None:
        return "one seed: no verdict"
    if effect > noise:
        return "reproduced"
    if effect < -noise:
        return "not reproduced"
    return "reproduced (within noise)" if parity else "within noise"


def spread(values: list[float]) -> float | None:
    return max(values) - min(values) if len(values) > 1 else None


def _largest(*spreads: float | None) -> float | None:
    known = [spread for spread in spreads if spread is not None]
    return max(known) if known else None


def _corrupted_accuracy(block: dict) -> float:
    values = [value for per_severity in block["accuracy"].values() for value in per_severity.values()]
    return 100 * sum(values) / len(values)


def _deviation(block: dict) -> float:
    """Normalised feature deviation at the highest severity (where the paper's gap is widest), in points."""
    return 100 * block["deviation"][max(block["deviation"], key=int)]["mean"]


def seed_spread(results: dict[str, dict], regime: dict) -> float | None:
    """Test top-1 spread over seeds in points, the larger of ViT's and the multi-resolution LookupViT's (default grid)."""
    vits = [r for name, r in results.items() if name.startswith("vit-seed")]
    lookups = [r for name, r in results.items() if name.startswith("lookupvit-seed")]
    grid = regime["default_grid"]
    return _largest(spread([top1(r, None) for r in vits]), spread([top1(r, grid) for r in lookups]))


def ranking_movement(epoch_top1: dict[str, list[float]], noise: float | None) -> list[str]:
    """Is the budget long enough? The models' order after the last two epochs, and what the last epoch still added.

    `epoch_top1`: each model's test top-1 (fractions) after every epoch.
    """
    complete = {name: values for name, values in epoch_top1.items() if len(values) >= 2}
    if len(complete) < 2:
        return []

    def order(epoch: int) -> list[str]:
        return sorted(complete, key=lambda name: -complete[name][epoch])

    def listed(names: list[str], epoch: int) -> str:
        return " > ".join(f"{name} ({100 * complete[name][epoch]:.2f})" for name in names)

    last, before = order(-1), order(-2)
    gains = {name: 100 * (values[-1] - values[-2]) for name, values in complete.items()}
    largest = max(gains, key=lambda name: abs(gains[name]))
    against = "no seed spread to compare with" if noise is None else (
        f"{'within' if abs(gains[largest]) <= noise else 'beyond'} the seed spread of {noise:.2f} points")
    return [f"Order after the last epoch: {listed(last, -1)}.", "",
            f"After the epoch before: {listed(before, -2)}: {'the same order' if last == before else 'the order changed'}.", "",
            "Last epoch's change: " + ", ".join(f"{name} {gain:+.2f}" for name, gain in gains.items())
            + f" points; the largest, {largest}'s, is {against}.", ""]


def budget_check(results: dict[str, dict], regime: dict) -> list[str]:
    """Whether LookupViT's standing against ViT (seed 0) holds when both train longer (the "budget-check" experiments)."""
    longer = {result["experiment"]["model"].split("_")[0]: result for result in results.values() if result["experiment"]["group"] == "budget-check"}
    if set(longer) != {"vit", "lookupvit"} or not {"vit-seed0", "lookupvit-seed0"} <= set(results):
        return []
    grid = regime["default_grid"]
    at_budget = top1(results["lookupvit-seed0"], grid) - top1(results["vit-seed0"], None)
    at_longer = top1(longer["lookupvit"], grid) - top1(longer["vit"], None)
    epochs, more = len(results["vit-seed0"]["epoch_top1"]), longer["vit"]["experiment"]["epochs"]
    noise, moved = seed_spread(results, regime), at_longer - at_budget
    if noise is None:
        judged = "no seed spread to judge it by"
    elif abs(moved) <= noise:
        judged = f"within the seed spread of {noise:.2f}: {epochs} epochs are long enough for this comparison"
    else:
        judged = f"beyond the seed spread of {noise:.2f}: {epochs} epochs are too short to settle it"
    return [f"Budget check (seed 0): LookupViT {grid}x{grid} − ViT is {at_budget:+.2f} points after {epochs} epochs and "
            f"{at_longer:+.2f} after {more} (ViT {top1(longer['vit'], None):.2f} %, LookupViT {top1(longer['lookupvit'], grid):.2f} %). "
            f"The gap moved {moved:+.2f} points, {judged}.", ""]


def claims(results: dict[str, dict], regime: dict) -> list[Claim]:
    """Every claim the results can test; claims whose experiments are missing are left out."""
    vits = [r for name, r in sorted(results.items()) if name.startswith("vit-seed")]
    lookups = [r for name, r in sorted(results.items()) if name.startswith("lookupvit-seed")]
    if not vits or not lookups:
        return []
    grid = regime["default_grid"]
    accuracy_noise = seed_spread(results, regime)
    vit_top1 = statistics.mean(top1(r, None) for r in vits)
    lookup_top1 = statistics.mean(top1(r, grid) for r in lookups)
    flops = eval_row(lookups[0], grid)["gflops"] / eval_row(vits[0], None)["gflops"]
    found = [Claim("Table 1", f"LookupViT {grid}x{grid} is as accurate as ViT, or more, at {flops:.2f}x its FLOPs", lookup_top1 - vit_top1, accuracy_noise,
                   parity=True, across_regimes="LookupViT at the default grid is as accurate as ViT, or more")]
    for name, label in (("tokenlearner-half", "TokenLearner 1/2"), ("tokenlearner-3quarter", "TokenLearner 3/4"), ("perceiver", "Perceiver")):
        if name in results:
            found.append(Claim("Table 1", f"LookupViT {grid}x{grid} is more accurate than {label}", lookup_top1 - top1(results[name], None), accuracy_noise,
                               across_regimes=f"LookupViT at the default grid is more accurate than {label}"))
    found += _ablation_claims(results, regime, accuracy_noise)
    found += _multires_claims(results, lookups, regime, accuracy_noise)
    found += _robustness_claims(vits, lookups)
    found += _few_shot_claims(vits, lookups)
    return found


def _ablation_claims(results, regime, noise) -> list[Claim]:
    grid = regime["ablation_grid"]
    full = results.get(f"single-grid-{grid}")
    if full is None:
        return []
    return [Claim("Table 5", f"the {grid}x{grid} model is less accurate {label}", top1(full, grid) - top1(results[name], grid), noise,
                  across_regimes=f"the ablation grid's model is less accurate {label}")
            for name, label in ABLATIONS.items() if name in results]  # fmt: skip


def _multires_claims(results, lookups, regime, noise) -> list[Claim]:
    """Fig. 5b: the one multi-resolution model keeps up with each single-grid model at that model's own grid."""
    found = []
    for trained in regime["single_grids"]:
        single = results.get(f"single-grid-{trained}")
        if single is not None:
            effect = statistics.mean(top1(r, trained) for r in lookups) - top1(single, trained)
            found.append(Claim("Fig. 5b", f"the multi-resolution model is as accurate at {trained}x{trained} as the model trained only there", effect, noise, parity=True))
    return found


def _robustness_claims(vits, lookups) -> list[Claim]:
    """Tables 2/6 and Fig. 4 on the same corrupted sets, per LookupViT grid."""
    if "robustness" not in vits[0] or "robustness" not in lookups[0]:
        return []
    vit_blocks = [r["robustness"]["None"] for r in vits if "robustness" in r]
    measures = (  # (source, claim at a grid, measure of a robustness block, sign making the paper's direction positive)
        ("Tables 2/6", "LookupViT {0}x{0} is more accurate than ViT under corruption (mean over 15 x 5)", _corrupted_accuracy, 1),
        ("Fig. 4", "LookupViT {0}x{0}'s features deviate less than ViT's at the highest severity", _deviation, -1),
    )
    found = []
    for source, claim, measure, sign in measures:
        vit = [measure(block) for block in vit_blocks]
        for grid in lookups[0]["robustness"]:
            lookup = [measure(r["robustness"][grid]) for r in lookups if grid in r.get("robustness", {})]
            effect = sign * (statistics.mean(lookup) - statistics.mean(vit))
            found.append(Claim(source, claim.format(grid), effect, _largest(spread(vit), spread(lookup))))
    return found


def _few_shot_claims(vits, lookups) -> list[Claim]:
    """Table 9 compares LookupViT 10x10 with ViT; here the largest grid the suite probed."""
    if "few_shot" not in vits[0] or "few_shot" not in lookups[0]:
        return []
    grid = max(lookups[0]["few_shot"], key=int)
    found = []
    for shots in sorted(vits[0]["few_shot"]["None"], key=int):
        vit = [100 * r["few_shot"]["None"][shots]["mean"] for r in vits]
        lookup = [100 * r["few_shot"][grid][shots]["mean"] for r in lookups if grid in r.get("few_shot", {})]
        effect = statistics.mean(lookup) - statistics.mean(vit)
        noise = _largest(spread(vit), spread(lookup))
        if noise is not None:  # one seed stays without a verdict
            noise = _largest(noise, _paired_draw_noise(vits, lookups, grid, shots))
        found.append(Claim("Table 9", f"LookupViT {grid}x{grid} transfers better than ViT at {shots}-shot", effect, noise,
                           across_regimes=f"LookupViT at its largest probed grid transfers better than ViT at {shots}-shot"))
    return found


def _paired_draw_noise(vits, lookups, grid: str, shots: str) -> float | None:
    """Two standard errors of LookupViT − ViT over the draws of shots; every model is probed on the same draws."""
    lookup_by_seed = {r["experiment"].get("seed"): r for r in lookups}
    differences = []
    for vit in vits:
        lookup = lookup_by_seed.get(vit["experiment"].get("seed"), {}).get("few_shot", {}).get(grid, {}).get(shots, {})
        pairs = zip(lookup.get("accuracies", []), vit["few_shot"]["None"][shots].get("accuracies", []))
        differences += [100 * (lookup_draw - vit_draw) for lookup_draw, vit_draw in pairs]
    if len(differences) < 2:
        return None
    return 2 * statistics.stdev(differences) / len(differences) ** 0.5


def _noise_text(claim: Claim) -> str:
    return "-" if claim.noise is None else f"{claim.noise:.2f}"


def regimes_section(regimes: dict[str, tuple[dict[str, dict], dict]]) -> list[str]:
    """The claims of several token regimes side by side: {label: (results, regime)}.

    A claim is lined up by its wording without the regime's own grid (the default grid is 3x3 at 7x7 lookup tokens
    and 5x5 at 14x14); a claim one regime cannot test shows "-" there.
    """
    ordered = sorted(regimes.items(), key=lambda item: item[1][1]["lookup_side"])  # fewest lookup tokens first
    found = {label: {claim.key: claim for claim in claims(results, regime)} for label, (results, regime) in ordered}
    source_of = {claim.key: claim.source for by_key in found.values() for claim in by_key.values()}
    if not source_of:
        return []
    keys = sorted(source_of, key=lambda key: SOURCES.index(source_of[key]))  # stable: each source keeps its claims' order

    def cell(claim: Claim | None) -> str:
        return "-" if claim is None else f"{claim.effect:+.2f} (noise {_noise_text(claim)}): {claim.verdict}"

    lines = ["## Claim by claim at both token regimes", "",
             "Each cell: effect in points (noise in points): verdict, as in the table above.", "",
             "| paper | claim | " + " | ".join(found) + " |", "|---|---|" + "---|" * len(found)]
    for key in keys:
        lines.append(f"| {source_of[key]} | {key} | " + " | ".join(cell(by_key.get(key)) for by_key in found.values()) + " |")
    return lines + [""]


def claims_section(results: dict[str, dict], regime: dict) -> list[str]:
    """The report's claim-by-claim table (markdown lines)."""
    found = claims(results, regime)
    if not found:
        return []
    lines = ["## Claim by claim", "",
             "Effect in points, positive in the direction the paper reports; noise is the seed-to-seed spread of the same "
             "quantity (ViT's and the multi-resolution LookupViT's, the larger; for few-shot probes, at least two standard "
             "errors of the paired difference over the draws of shots). Reproduced: effect > noise; not reproduced: "
             "effect < −noise; otherwise within noise.", "",
             "| paper | claim | effect (points) | noise (points) | verdict |", "|---|---|---|---|---|"]
    for claim in found:
        lines.append(f"| {claim.source} | {claim.claim} | {claim.effect:+.2f} | {_noise_text(claim)} | {claim.verdict} |")
    return lines + [""]
