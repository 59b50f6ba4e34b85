"""`lookupvit warmstart`: does starting a LookupViT from a trained ViT pay? Measured on real Fashion-MNIST.

The source is a ViT the project trains itself (no pretrained ViT is offline): `vit_nano4` on the 10
Fashion-MNIST classes. It is converted into `lookupvit_nano4` by models.warmstart's rule and
fine-tuned for a short budget, against the same LookupViT trained from scratch on the same budget
and recipe (the main job's, multi-resolution over grids 2..5), two seeds each. The report gives
top-1 of the last epoch's model at every compressed grid, the seed spread, the training-loss curves,
and what the warm start cost: the source ViT's own training is compute the scratch model never spent.

Each run is a resumable training run under out/runs/ and each result is written to out/results/ as
soon as it is known; a rerun skips what is done.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from pathlib import Path

import torch

from ..data.loader import dataset_batches
from ..evaluation.accuracy import evaluate, grid_label
from ..models.serialization import read_metadata, save_model
from ..models.warmstart import lookupvit_from_vit, warm_start_config
from ..training.config import TrainConfig
from ..training.data import load_datasets
from ..training.engine import train
from ..training.report import load_trained
from .results import main_job_recipe, open_suite, run_each, written_by

SOURCE_MODEL, TARGET_MODEL = "vit_nano4", "lookupvit_nano4"
EVAL_GRIDS = [1, 2, 3, 4, 5, 6, 7]
SHOWN_GRIDS = [(3, 3), (5, 5), (7, 7)]


@dataclass(frozen=True)
class WarmStartBudget:
    source_epochs: int
    finetune_epochs: int
    train_subset: int | None  # None: all 60,000 training images
    test_subset: int | None
    log_every: int  # optimizer steps between the loss records the report's curves are drawn from
    seeds: tuple[int, ...] = (0, 1)


BUDGETS = {
    "quick": WarmStartBudget(source_epochs=1, finetune_epochs=1, train_subset=512, test_subset=256, log_every=1),  # checks the pipeline (a test)
    "full": WarmStartBudget(source_epochs=4, finetune_epochs=1, train_subset=None, test_subset=None, log_every=50),
}


@dataclass(frozen=True)
class WarmStartRun:
    name: str
    model: str
    epochs: int
    seed: int = 0
    warm: bool = False  # starts from the converted source ViT


def warm_start_runs(budget: WarmStartBudget) -> list[WarmStartRun]:
    runs = []
    for seed in budget.seeds:
        runs.append(WarmStartRun(f"warm-seed{seed}", TARGET_MODEL, budget.finetune_epochs, seed, warm=True))
        runs.append(WarmStartRun(f"scratch-seed{seed}", TARGET_MODEL, budget.finetune_epochs, seed))
    return runs


def recipe(model: str, epochs: int, seed: int, budget: WarmStartBudget, out: Path, threads: int, init_weights: Path | None = None) -> TrainConfig:
    """The main job's recipe (configs/fashion-mnist.toml) at this budget, for every run."""
    return main_job_recipe(
        model=model,
        model_args={"compressed_grid": [3, 3]} if model.startswith("lookupvit") else {},
        init_weights=None if init_weights is None else str(init_weights),
        train_subset=budget.train_subset,
        test_subset=budget.test_subset,
        epochs=epochs,
        grids=[2, 3, 4, 5],
        eval_grids=EVAL_GRIDS,
        seed=seed,
        log_every=budget.log_every,
        out=str(out),
        threads=threads,
    )


def train_and_evaluate(config: TrainConfig, device: torch.device) -> dict:
    folder = train(config)
    model, normalization, _ = load_trained(folder / "model.safetensors", device)  # the last epoch: no selection on test data
    _, test_set = load_datasets(config)
    grids = EVAL_GRIDS if config.model.startswith("lookupvit") else [None]
    records = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    return {
        "config": {"model": config.model, "epochs": config.epochs, "seed": config.seed, "init_weights": config.init_weights},
        "eval": evaluate(model, dataset_batches(test_set, normalization, 500), grids, device),
        "losses": [[record["step"], record["loss"]] for record in records if "loss" in record],
        "images_per_s": statistics.mean(record["images_per_s"] for record in records if "images_per_s" in record),
    }


def convert_source(source_file: Path, warm_file: Path) -> None:
    """The source ViT as lookupvit_nano4 (3x3 default grid), with its class names and normalisation."""
    vit, _, _ = load_trained(source_file, torch.device("cpu"))
    lookup = lookupvit_from_vit(vit.float(), warm_start_config(vit.config, TARGET_MODEL, compressed_grid=(3, 3)))
    save_model(lookup, warm_file, extra={key: value for key, value in read_metadata(source_file).items() if key in ("classes", "normalization")})


def run_warmstart(budget_name: str, out: str | Path, device_name: str = "auto", threads: int = 0) -> Path:
    """Train the source ViT, convert it, fine-tune it and the scratch LookupViTs (resumably); write out/report.md."""
    budget, out, device = open_suite(BUDGETS, budget_name, out, device_name)
    source = WarmStartRun("source-vit", SOURCE_MODEL, budget.source_epochs)
    warm_file = out / "warm-start.safetensors"

    def run(item: WarmStartRun) -> dict:
        config = recipe(item.model, item.epochs, item.seed, budget, out / "runs" / item.name, threads, warm_file if item.warm else None)
        return train_and_evaluate(config, device)

    run_each([source], out / "results", describe=lambda item: f"{item.model}, {item.epochs} epochs", run=run, device=device)
    if not warm_file.exists():
        convert_source(out / "runs" / source.name / "model.safetensors", warm_file)
    runs = warm_start_runs(budget)
    run_each(runs, out / "results", describe=lambda item: f"{item.model}, {item.epochs} epochs, seed {item.seed}" + (", warm start" if item.warm else ""), run=run, device=device)
    return write_warmstart_report(out, budget, [source, *runs])


# --------------------------------------------------------------------------------------------
# The report
# --------------------------------------------------------------------------------------------


def top1_by_grid(result: dict) -> dict[str, float]:
    return {grid_label(row["grid"]): 100 * row["average"]["top1"] for row in result["eval"]}


def arm_summary(results: dict[str, dict], arm: str) -> dict[str, list[float]]:
    """Grid label -> top-1 of each seed of the arm ("warm" or "scratch")."""
    summary: dict[str, list[float]] = {}
    for name, result in results.items():
        if name.startswith(f"{arm}-seed"):
            for label, top1 in top1_by_grid(result).items():
                summary.setdefault(label, []).append(top1)
    return summary


def plot_warmstart(results: dict[str, dict], path: Path) -> None:
    from ..evaluation.visualize import _pyplot, save_figure

    plt = _pyplot()
    figure, (losses, accuracy) = plt.subplots(1, 2, figsize=(11, 4.2), dpi=110)
    for name, result in results.items():
        if name == "source-vit":
            continue
        steps, values = zip(*result["losses"])
        losses.plot(steps, values, "-" if name.startswith("warm") else "--", label=name, linewidth=1.2)
    losses.set_xlabel("optimizer step")
    losses.set_ylabel("training loss")
    losses.set_title("Fine-tuning from the converted ViT vs from scratch")
    for arm, style in (("warm", "o-"), ("scratch", "s--")):
        summary = arm_summary(results, arm)
        grids = [label for label in summary]
        means = [statistics.mean(summary[label]) for label in grids]
        accuracy.plot(range(len(grids)), means, style, label=f"{arm} (mean of {len(next(iter(summary.values())))} seeds)")
        accuracy.set_xticks(range(len(grids)), grids)
    if "source-vit" in results:
        accuracy.axhline(top1_by_grid(results["source-vit"])["-"], color="grey", linestyle=":", label="source ViT")
    accuracy.set_xlabel("compressed grid at inference")
    accuracy.set_ylabel("test top-1 (%)")
    accuracy.set_title("One model at every grid")
    save_figure(plt, figure, path, [losses, accuracy])


def write_warmstart_report(out: Path, budget: WarmStartBudget, runs: list[WarmStartRun]) -> Path:
    results = {run.name: json.loads((out / "results" / f"{run.name}.json").read_text()) for run in runs if (out / "results" / f"{run.name}.json").exists()}
    plot_warmstart(results, out / "warmstart.png")
    images = "all 60,000" if budget.train_subset is None else f"{budget.train_subset}"
    source = results["source-vit"]
    lines = [
        "# Warm start: a LookupViT from a trained ViT vs from scratch",
        "",
        f"Source: `{SOURCE_MODEL}` trained by this project for {budget.source_epochs} epochs on {images} Fashion-MNIST training images "
        f"(test top-1 **{top1_by_grid(source)['-']:.2f} %**), converted into `{TARGET_MODEL}` by the documented rule "
        "(models/warmstart.py: compressed-stream blocks = ViT blocks, MHBC l->p = the layer's q/k/v/out, p->l = its v/out, "
        "lookup MLP = the ViT MLP's largest hidden units). Both arms then train with the same recipe "
        f"(the main job's: multi-resolution over grids 2..5, batch 64, lr 1.5e-3) for {budget.finetune_epochs} epoch(s), seeds {', '.join(map(str, budget.seeds))}. "
        "Test top-1 (%) of the last epoch's model, average head.",
        "",
        "| grid | " + " | ".join(f"warm, seed {s}" for s in budget.seeds) + " | " + " | ".join(f"scratch, seed {s}" for s in budget.seeds) + " | warm - scratch (mean) |",
        "|---|" + "---|" * (2 * len(budget.seeds) + 1),
    ]
    warm, scratch = arm_summary(results, "warm"), arm_summary(results, "scratch")
    for label in warm:
        gain = statistics.mean(warm[label]) - statistics.mean(scratch[label])
        cells = [f"{value:.2f}" for value in warm[label] + scratch[label]]
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {gain:+.2f} |")
    spread = max(max(values) - min(values) for values in [*warm.values(), *scratch.values()])
    lines += [
        "",
        f"Largest seed-to-seed spread in the table: {spread:.2f} points. (Training images/s are in results/*.json; "
        "they may be measured with other jobs sharing the cores, so they are no speed comparison: docs/bench-2026-11-25.md is.)",
        "",
        f"What the warm start cost: the source ViT's {budget.source_epochs} epochs, spent once and reusable for every grid and seed; "
        "the comparison asks what a user with a trained ViT gains, not whether the ViT's training was free.",
        "",
        "![loss curves and accuracy by grid](warmstart.png)",
        "",
        written_by(out, "lookupvit warmstart", source["hardware"]),
        "",
    ]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path
