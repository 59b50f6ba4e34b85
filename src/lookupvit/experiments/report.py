"""report.md and its plots for `lookupvit reproduce`, built only from the per-experiment JSON files."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from ..data.fashion_mnist import FASHION_MNIST_CLASSES
from ..evaluation.robustness import DEVIATION_BINS, mean_accuracy_per_severity, mean_corruption_error
from ..evaluation.visualize import _pyplot, save_figure
from .claims import ABLATIONS, budget_check, claims_section, ranking_movement, regimes_section, seed_spread, spread
from .results import eval_row, top1

# The paper's numbers, for orientation only (ImageNet-1k, B/16, 224 px; GFLOPs = 2 x MACs).
PAPER_TABLE_1 = {"ViT": (78.6, 35.1), "TokenLearner 1/2": (75.7, 19.1), "TokenLearner 3/4": (77.5, 27.1), "Perceiver": (78.0, None),
                 "LookupViT 3x3": (77.1, 12.9), "LookupViT 5x5": (79.1, 16.5), "LookupViT 7x7": (79.7, 21.9), "LookupViT 10x10": (80.2, 33.6)}
PAPER_TABLE_5 = {"full model": 79.1, "no-lookup-tokens": 69.2, "no-mhbc-p2l": 69.7, "compressed-loss-only": 78.2,
                 "lookup-loss-only": 78.4, "learned-compressed-tokens": 77.9}
PAPER_TABLE_6 = {"ViT": [70.3, 64.1, 59.0, 49.9, 38.9], "TokenLearner 3/4": [69.0, 62.8, 57.9, 49.5, 39.5],
                 "LookupViT 5x5": [70.6, 64.2, 58.6, 49.7, 38.8], "LookupViT 7x7": [72.0, 65.8, 60.7, 52.0, 41.6],
                 "LookupViT 10x10": [72.9, 67.1, 62.2, 53.9, 43.6]}
PAPER_TABLE_9_MEAN = {"ViT": {1: 63.4, 5: 80.0, 25: 86.2}, "LookupViT 10x10": {1: 69.8, 5: 82.2, 25: 86.8}}  # mean of 5 datasets

LABELS = {"vit": "ViT", "lookupvit": "LookupViT", "tokenlearner-half": "TokenLearner 1/2", "tokenlearner-3quarter": "TokenLearner 3/4", "perceiver": "Perceiver"}


# The 7x7 regime's settings, for budget.json files written before the regime was recorded.
SMALL_REGIME = {"size": "nano4", "lookup_side": 7, "grids": [2, 3, 4, 5], "default_grid": 3, "single_grids": [2, 3, 4, 5], "ablation_grid": 3}
PATCH = {"nano4": 4, "nano2": 2}


def _regime(budget: dict) -> dict:
    return budget.get("regime", SMALL_REGIME)


def _classes(budget: dict) -> str:
    """What the backbones learned (budget.json files written before `classes` was recorded: the first five classes)."""
    classes = budget.get("classes", [0, 1, 2, 3, 4])
    return "all ten classes" if classes is None else "the classes " + ", ".join(FASHION_MNIST_CLASSES[i].lower() for i in classes)


def _transfer(budget: dict) -> tuple[str, str]:
    """The few-shot section's title and its sentence on what the backbones never saw."""
    if budget.get("transfer", "held-out-classes") == "digits":
        return ("handwritten digits", "The target is scikit-learn's 1,797 UCI handwritten digits (8x8, upsampled to 28 px), "
                f"{budget['probe_pool_images']} of them as the pool the shots are drawn from and {budget['probe_test_images'] or 'all'} "
                "of the others as the test set: "
                "a dataset the backbones never saw, as the paper transfers to datasets other than its pre-training one.")
    return "the 5 held-out classes", "The backbones never saw sandal, shirt, sneaker, bag, ankle boot."


def _span(grids: list[int]) -> str:
    return f"{grids[0]}-{grids[-1]}"


def _load(out: Path) -> dict[str, dict]:
    return {path.stem: json.loads(path.read_text()) for path in sorted((out / "results").glob("*.json"))}


def _mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def _seeded(results: dict[str, dict], prefix: str) -> list[dict]:
    return [r for name, r in results.items() if name.startswith(prefix + "-seed")]


def write_reproduction_report(out: str | Path, planned: list[str] | None = None, beside: str | Path | None = None) -> Path:
    """out/report.md from out/results/*.json.

    `planned`: the budget's experiment names, to list those not finished yet. `beside`: the results folder of
    another token regime, whose claims are set beside these.
    """
    out = Path(out)
    results = _load(out)
    budget = json.loads((out / "budget.json").read_text())
    others = regime_beside(beside, out) if beside else {}
    vits, lookups = _seeded(results, "vit"), _seeded(results, "lookupvit")
    if not vits or not lookups:
        raise FileNotFoundError(f"{out}/results has no ViT or LookupViT result yet; run `lookupvit reproduce` first")
    hardware = next(iter(results.values()))["hardware"]
    regime = _regime(budget)
    side, size = regime["lookup_side"], regime["size"]
    lines = [
        "# LookupViT's claims at small scale: Fashion-MNIST, every model on one recipe",
        "",
        f"Budget `{budget['budget']}`: {budget['epochs']} epochs per model, training images "
        f"{budget['train_subset'] or 'all'} of {_classes(budget)}; "
        f"test images {budget['test_subset'] or 'all'} of those classes. Seeds of ViT and LookupViT: {budget['seeds']}; "
        f"the other models ran once (seed 0). Hardware: {hardware['cpu_count']} CPU cores ({hardware['machine']}), "
        f"torch {hardware['torch']}, device {hardware['device']}. Models are the `{size}` size (D=96, 4 blocks, "
        f"3 heads, patch {PATCH[size]}: a {side}x{side} lookup grid at 28 px{'' if side == 14 else '; the paper has 14x14'}); "
        "recipe of `configs/fashion-mnist.toml` (AdamW, batch 64, lr 1.5e-3, bf16 autocast, flips). "
        "Accuracies are of the last epoch's weights (no model selection on test data), top-1 in %, of the trained head "
        "(averaged heads unless a loss was switched off). GFLOPs are per image, 2 x multiply-accumulates.",
        "",
        "The paper's numbers (ImageNet-1k, B/16) are beside ours for orientation only: the scale differs by orders of magnitude.",
        "",
    ]
    lines += _unfinished(results, planned or [])
    lines += claims_section(results, regime)
    if others:
        lines += regimes_section({**others, _regime_label(regime): (results, regime)})
    lines += _comparison_section(results, vits, lookups, out, regime)
    lines += _epochs_section(results, regime)
    lines += _ablation_section(results, regime)
    lines += _multires_section(results, lookups, out, regime)
    lines += _robustness_section(results, vits, lookups, out)
    lines += _few_shot_section(results, vits, lookups, budget)
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def _regime_label(regime: dict) -> str:
    return f"{regime['lookup_side']}x{regime['lookup_side']} lookup tokens ({regime['size']})"


def regime_beside(folder: str | Path, out: str | Path) -> dict[str, tuple[dict, dict]]:
    """{label: (results, regime)} of the finished run in `folder`, refused unless it ran another token regime than `out`."""
    folder, out = Path(folder), Path(out)
    if not (folder / "budget.json").exists() or not _load(folder):
        raise FileNotFoundError(f"{folder} holds no results of `lookupvit reproduce` (no budget.json or results/*.json); "
                                "pass --beside the --out folder of a finished run")
    regime = _regime(json.loads((folder / "budget.json").read_text()))
    if regime == _regime(json.loads((out / "budget.json").read_text())):
        raise ValueError(f"{folder} ran the same token regime as {out}; --beside takes a run of the other regime")
    return {_regime_label(regime): (_load(folder), regime)}


def _unfinished(results: dict[str, dict], planned: list[str]) -> list[str]:
    missing = [name for name in planned if name not in results]
    if not missing:
        return []
    return [f"**Interim report: {len(planned) - len(missing)} of {len(planned)} experiments have finished.** "
            f"Not run yet: {', '.join(missing)}. Sections and claims that need them are left out until they finish.", ""]


def _speed(result: dict) -> str:
    return f"{result['images_per_s']:.0f}" if result.get("images_per_s") else "-"


def _comparison_section(results, vits, lookups, out, regime) -> list[str]:
    vit_acc = [top1(r, None) for r in vits]
    lines = ["## 1. Accuracy against compute: ViT, TokenLearner, Perceiver, LookupViT", "",
             "| model | GFLOPs | top-1 (ours) | paper top-1 | paper GFLOPs | training images/s (seed 0) |", "|---|---|---|---|---|---|"]
    lines.append(f"| ViT | {eval_row(vits[0], None)['gflops']:.3f} | {_mean_std(vit_acc)} | {PAPER_TABLE_1['ViT'][0]} | {PAPER_TABLE_1['ViT'][1]} | {_speed(vits[0])} |")
    for name in ("tokenlearner-half", "tokenlearner-3quarter", "perceiver"):
        if name in results:
            paper = PAPER_TABLE_1[LABELS[name]]
            lines.append(f"| {LABELS[name]} | {eval_row(results[name], None)['gflops']:.3f} | {top1(results[name], None):.2f} | {paper[0]} | {paper[1] or '-'} | {_speed(results[name])} |")
    for grid in _eval_grids(lookups[0]):
        accuracies = [top1(r, grid) for r in lookups]
        paper = PAPER_TABLE_1.get(f"LookupViT {grid}x{grid}", ("-", "-"))
        speed = _speed(lookups[0]) if grid == regime["default_grid"] else ""
        lines.append(f"| LookupViT {grid}x{grid} | {eval_row(lookups[0], grid)['gflops']:.3f} | {_mean_std(accuracies)} | {paper[0]} | {paper[1]} | {speed} |")
    lines += ["", f"LookupViT here is one multi-resolution model (trained on grids {_span(regime['grids'])}, sampled per batch) evaluated at every grid; "
              "± is the standard deviation over seeds. Its training images/s are over the mix of grids.", ""]
    grid = regime["default_grid"]
    spreads = {"ViT": spread(vit_acc), f"LookupViT {grid}x{grid}": spread([top1(r, grid) for r in lookups])}
    known = [f"{label} {value:.2f} points" for label, value in spreads.items() if value is not None]
    if known:  # a suite still running may have two seeds of one model and one of the other
        lines += [f"Run-to-run spread (largest − smallest over seeds): {', '.join(known)}.", ""]
    _plot_accuracy_vs_flops(results, vits, lookups, out / "accuracy_vs_flops.png")
    return lines + ["![accuracy vs GFLOPs](accuracy_vs_flops.png)", ""]


def _eval_grids(result: dict) -> list[int]:
    return [row["grid"][0] for row in result["eval"]]


def _epochs_section(results, regime) -> list[str]:
    """Test top-1 after each epoch at the default grid: whether the ranking still moves at the end of the budget."""
    rows = [(name, result["epoch_top1"]) for name, result in results.items() if result.get("epoch_top1") and result["experiment"]["group"] in ("compare", "budget-check")]
    if not rows:
        return []
    epochs = max(len(values) for _, values in rows)
    lines = ["### Test top-1 after each epoch (default grid): is the ranking still moving?", "",
             "| model | " + " | ".join(f"epoch {e}" for e in range(1, epochs + 1)) + " |", "|" + "---|" * (epochs + 1)]
    for name, values in rows:
        cells = [f"{100 * value:.2f}" for value in values] + [""] * (epochs - len(values))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    at_budget = {name: values for name, values in rows if results[name]["experiment"]["group"] == "compare"}
    lines += [""] + ranking_movement(at_budget, seed_spread(results, regime)) + budget_check(results, regime)
    return lines + [""]


def _ablation_section(results, regime) -> list[str]:
    grid = regime["ablation_grid"]
    reference = results.get(f"single-grid-{grid}")
    if reference is None:
        return []
    lines = [f"## 2. Ablations (paper Table 5), each a config switch of the {grid}x{grid} single-grid model", "",
             "| model | GFLOPs | top-1 (ours) | change | paper top-1 (5x5) | training images/s |", "|---|---|---|---|---|---|"]
    base = top1(reference, grid)
    lines.append(f"| full model (single grid {grid}x{grid}) | {eval_row(reference, grid)['gflops']:.3f} | {base:.2f} | - | {PAPER_TABLE_5['full model']} | {_speed(reference)} |")
    for name in ABLATIONS:
        if name in results:
            result = results[name]
            accuracy = top1(result, grid)
            lines.append(f"| {name} ({result['head']} head) | {eval_row(result, grid)['gflops']:.3f} | {accuracy:.2f} | {accuracy - base:+.2f} | {PAPER_TABLE_5[name]} | {_speed(result)} |")
    return lines + ["", "Without lookup tokens and without p->l the loss is on the compressed head only, as in the paper's chain of ablations.", ""]


def _multires_section(results, lookups, out, regime) -> list[str]:
    singles = {int(name.rsplit("-", 1)[1]): r for name, r in results.items() if name.startswith("single-grid-")}
    if not singles:
        return []
    grids = _eval_grids(lookups[0])
    header = "| trained on | " + " | ".join(f"eval {g}x{g}" for g in grids) + " | training images/s |"
    lines = ["## 3. Multi-resolution training (paper Fig. 5b)", "", header, "|" + "---|" * (len(grids) + 2)]
    span = _span(regime["grids"])
    lines.append(f"| grids {span}, sampled per batch (seed 0) | " + " | ".join(f"{top1(lookups[0], g):.2f}" for g in grids) + f" | {_speed(lookups[0])} |")
    for trained, result in sorted(singles.items()):
        lines.append(f"| grid {trained}x{trained} only | " + " | ".join(f"{top1(result, g):.2f}" for g in grids) + f" | {_speed(result)} |")
    _plot_multires(lookups[0], singles, grids, out / "multires.png", span)
    return lines + ["", "![multi-resolution](multires.png)", ""]


def _robustness_models(results, vits, lookups) -> dict[str, dict]:
    """label -> robustness block; LookupViT at each evaluated grid, seed 0."""
    models = {"ViT": vits[0]["robustness"]["None"]}
    if "tokenlearner-3quarter" in results:
        models["TokenLearner 3/4"] = results["tokenlearner-3quarter"]["robustness"]["None"]
    if "perceiver" in results:
        models["Perceiver"] = results["perceiver"]["robustness"]["None"]
    for grid, block in lookups[0]["robustness"].items():
        models[f"LookupViT {grid}x{grid}"] = block
    return models


def _robustness_section(results, vits, lookups, out) -> list[str]:
    models = _robustness_models(results, vits, lookups)
    baseline = models["ViT"]["accuracy"]
    lines = ["## 4. Robustness to the 15 ImageNet-C corruptions x 5 severities (paper Tables 2/6, Fig. 4)", "",
             "The corrupted test sets are built offline from the real test images (`lookupvit.corruptions`, ImageNet-C's "
             "operations and severity ladders rescaled to 28 px, frost from procedural ice textures), one seeded draw per "
             "image, corruption and severity. mCE is normalised by ViT (seed 0) as in Hendrycks & Dietterich; the mean error is unnormalised.", "",
             "![corruptions](corruptions.png)", "",
             "| model | clean | sev 1 | sev 2 | sev 3 | sev 4 | sev 5 | avg | mCE (ViT = 100) | mean error | paper sev 1-5 / avg |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for label, block in models.items():
        per_severity = mean_accuracy_per_severity(block["accuracy"])
        values = [100 * per_severity[s] for s in sorted(per_severity, key=int)]
        paper = PAPER_TABLE_6.get(label)
        paper_text = " / ".join(f"{v}" for v in paper) + f" / {sum(paper) / len(paper):.1f}" if paper else "-"
        lines.append(
            f"| {label} | {100 * block['clean']:.2f} | " + " | ".join(f"{v:.2f}" for v in values)
            + f" | {sum(values) / len(values):.2f} | {100 * mean_corruption_error(block['accuracy'], baseline):.1f} "
            f"| {100 * mean_corruption_error(block['accuracy']):.2f} | {paper_text} |"
        )
    corruptions = list(baseline)
    lines += ["", "Accuracy averaged over severities, per corruption:", "",
              "| model | " + " | ".join(corruptions) + " |", "|" + "---|" * (len(corruptions) + 1)]
    for label, block in models.items():
        lines.append(f"| {label} | " + " | ".join(f"{100 * sum(block['accuracy'][c].values()) / len(block['accuracy'][c]):.1f}" for c in corruptions) + " |")
    lines += ["", "Normalised feature deviation ||F(x) − F(x_c)|| / ||F(x)|| (pooled features), mean per severity:", "",
              "| model | " + " | ".join(f"sev {s}" for s in sorted(models['ViT']['deviation'], key=int)) + " |", "|" + "---|" * 6]
    for label, block in models.items():
        lines.append(f"| {label} | " + " | ".join(f"{block['deviation'][s]['mean']:.3f}" for s in sorted(block["deviation"], key=int)) + " |")
    _plot_robustness(models, out / "robustness.png")
    _plot_deviation_density(models, out / "feature_deviation.png")
    return lines + ["", "Features are scaled differently in different models, so compare deviation between models with care; "
                    "the paper reads it as the gap widening with severity.", "",
                    "![robustness](robustness.png)", "", "![feature deviation](feature_deviation.png)", ""]


def _few_shot_section(results, vits, lookups, budget: dict) -> list[str]:
    shots = sorted(int(k) for k in vits[0]["few_shot"]["None"])
    target, unseen = _transfer(budget)
    lines = [f"## 5. Few-shot transfer to {target} (paper Table 9)", "",
             "Ridge probes on frozen pooled features as in big_vision (l2 = 2^10), mean ± std over draws of the shots; "
             f"the same draws for every model. {unseen}", "",
             "| model | " + " | ".join(f"{k}-shot" for k in shots) + " |", "|" + "---|" * (len(shots) + 1)]

    def cells(block):
        return " | ".join(f"{100 * block[str(k)]['mean']:.1f} ± {100 * block[str(k)]['std']:.1f}" for k in shots)

    for result in vits:
        lines.append(f"| ViT (seed {result['experiment']['seed']}) | {cells(result['few_shot']['None'])} |")
    for name in ("tokenlearner-half", "tokenlearner-3quarter", "perceiver"):
        if name in results:
            lines.append(f"| {LABELS[name]} | {cells(results[name]['few_shot']['None'])} |")
    for result in lookups:
        for grid, block in result["few_shot"].items():
            lines.append(f"| LookupViT {grid}x{grid} (seed {result['experiment']['seed']}) | {cells(block)} |")
    paper = " ; ".join(f"{name}: " + ", ".join(f"{k}-shot {v}" for k, v in values.items()) for name, values in PAPER_TABLE_9_MEAN.items())
    return lines + ["", f"Paper (IN-21k pre-training, mean over its 5 datasets): {paper}.", ""]


# --------------------------------------------------------------------------------------------
# Plots
# --------------------------------------------------------------------------------------------


def _plot_accuracy_vs_flops(results, vits, lookups, path: Path) -> None:
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    grids = [row["grid"][0] for row in lookups[0]["eval"]]
    for result in lookups:
        xs = [1e3 * eval_row(result, g)["gflops"] for g in grids]
        axis.plot(xs, [top1(result, g) for g in grids], "o-", color="C0", alpha=0.8, label=f"LookupViT, grids {_span(grids)} (seed {result['experiment']['seed']})")
    for result in vits:
        axis.plot(1e3 * eval_row(result, None)["gflops"], top1(result, None), "s", color="C1", label=f"ViT (seed {result['experiment']['seed']})")
    for marker, name in (("^", "tokenlearner-half"), ("v", "tokenlearner-3quarter"), ("D", "perceiver")):
        if name in results:
            axis.plot(1e3 * eval_row(results[name], None)["gflops"], top1(results[name], None), marker, label=LABELS[name])
    axis.set_xlabel("MFLOPs per image")
    axis.set_ylabel("test top-1 (%)")
    axis.set_title("Fashion-MNIST, same recipe and budget")
    save_figure(plt, figure, path, [axis], legend_size=7)


def _plot_multires(multires: dict, singles: dict[int, dict], grids: list[int], path: Path, span: str) -> None:
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    axis.plot(grids, [top1(multires, g) for g in grids], "o-", linewidth=2.5, color="black", label=f"multi-resolution (grids {span})")
    for trained, result in sorted(singles.items()):
        axis.plot(grids, [top1(result, g) for g in grids], "--", marker=".", label=f"trained on {trained}x{trained} only")
    axis.set_xticks(grids, [f"{g}x{g}" for g in grids])
    axis.set_xlabel("compressed grid at evaluation")
    axis.set_ylabel("test top-1 (%)")
    axis.set_title("One multi-resolution model vs single-grid models")
    save_figure(plt, figure, path, [axis], legend_size=7)


def _plot_robustness(models: dict[str, dict], path: Path) -> None:
    plt = _pyplot()
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4), dpi=120)
    for label, block in models.items():
        per_severity = mean_accuracy_per_severity(block["accuracy"])
        severities = sorted(per_severity, key=int)
        left.plot([0, *map(int, severities)], [100 * block["clean"], *(100 * per_severity[s] for s in severities)], "o-", label=label)
        deviation = block["deviation"]
        right.plot([int(s) for s in sorted(deviation, key=int)], [deviation[s]["mean"] for s in sorted(deviation, key=int)], "o-", label=label)
    left.set(xlabel="severity (0 = clean)", ylabel="top-1 (%), mean over 15 corruptions", title="Accuracy under corruption")
    right.set(xlabel="severity", ylabel="mean ||F(x) - F(x_c)|| / ||F(x)||", title="Feature deviation")
    save_figure(plt, figure, path, [left, right], legend_size=7)


def _plot_deviation_density(models: dict[str, dict], path: Path) -> None:
    plt = _pyplot()
    severities = sorted(models["ViT"]["deviation"], key=int)
    figure, axes = plt.subplots(1, len(severities), figsize=(3 * len(severities), 3), dpi=110, sharey=True)
    centers = ((DEVIATION_BINS[1:] + DEVIATION_BINS[:-1]) / 2).tolist()
    width = (DEVIATION_BINS[1] - DEVIATION_BINS[0]).item()
    for axis, severity in zip(axes, severities):
        for label, block in models.items():
            counts = block["deviation"][severity]["histogram"]
            total = sum(counts) or 1
            axis.plot(centers, [c / total / width for c in counts], label=label)
        axis.set_title(f"severity {severity}")
        axis.set_xlabel("normalised feature deviation")
    axes[0].set_ylabel("density")
    save_figure(plt, figure, path, list(axes), legend_size=7)
