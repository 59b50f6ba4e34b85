"""`lookupvit reproduce`: every claim of the paper that can be tested at small scale, on real Fashion-MNIST.

All models share one recipe (the main job's) and one budget. In the small regime the backbones learn the first
five Fashion-MNIST classes and the other five are held out for few-shot transfer; in the paper's regime they learn
all ten, and few-shot transfer goes to another real dataset (handwritten digits). Each experiment writes its
own JSON under `out/results/` as soon as it is done, so an interrupted run loses at most the
experiment in flight (and training itself resumes from its last checkpoint); a rerun skips what exists.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..data.datasets import ImageDataset
from ..data.digits import load_digits, split_digits
from ..data.loader import dataset_batches
from ..evaluation.accuracy import evaluate
from ..evaluation.corruptions import corrupted_test_set, plot_corruption_grid
from ..evaluation.fewshot import extract_features, few_shot_accuracy
from ..evaluation.robustness import corruption_results
from ..training.config import TrainConfig
from ..training.data import load_datasets
from ..training.engine import train
from ..training.report import load_trained
from .results import main_job_recipe, open_suite, run_each

FIVE_CLASSES = (0, 1, 2, 3, 4)  # t-shirt/top, trouser, pullover, dress, coat
HELD_OUT_CLASSES = (5, 6, 7, 8, 9)  # sandal, shirt, sneaker, bag, ankle boot: never seen by five-class backbones


@dataclass(frozen=True)
class Regime:
    """The token regime: the model size and the grids every experiment of the suite uses."""

    size: str  # "nano4": patch 4, a 7x7 lookup grid at 28 px; "nano2": patch 2, the paper's 14x14
    lookup_side: int
    grids: tuple[int, ...]  # the multi-resolution LookupViT's training grids
    default_grid: int  # the multi-resolution model's default grid (the one its epoch-end evaluation reports)
    single_grids: tuple[int, ...]  # single-grid LookupViTs (Fig. 5b)
    ablation_grid: int  # the Table 5 ablations are switches of the single-grid model at this grid
    robustness_grids: tuple[int, ...]
    perceiver_latents: int

    @property
    def eval_grids(self) -> list[int]:
        return list(range(1, self.lookup_side + 1))  # every grid of the lookup grid


SMALL_REGIME = Regime("nano4", 7, (2, 3, 4, 5), 3, (2, 3, 4, 5), 3, (3, 5, 7), 9)
# The paper's: 14x14 lookup tokens, Multi-Res over grids 3..10, Table 5 at 5x5, Table 6 at 5x5 / 7x7 / 10x10.
PAPER_REGIME = Regime("nano2", 14, (3, 4, 5, 6, 7, 8, 9, 10), 5, (3, 5, 7, 10), 5, (5, 7, 10), 25)


@dataclass(frozen=True)
class Budget:
    epochs: int
    train_subset: int | None  # None: all training images of the backbone classes
    test_subset: int | None
    robustness_images: int  # clean test images behind the 15 x 5 corrupted sets
    seeds: tuple[int, ...]  # seeds of ViT and of the multi-resolution LookupViT (run-to-run spread)
    shots: tuple[int, ...]
    draws: int
    probe_pool_images: int  # random images of the transfer set to draw shots from
    probe_test_images: int | None
    regime: Regime = SMALL_REGIME
    classes: tuple[int, ...] | None = FIVE_CLASSES  # the backbones' Fashion-MNIST classes (None: all ten)
    # few-shot target: "held-out-classes" (the Fashion-MNIST classes the backbones never saw) or "digits"
    transfer: str = "held-out-classes"
    # ViT and LookupViT (seed 0) once more with this many epochs: does their ranking hold with a longer budget?
    check_epochs: int | None = None

    @property
    def train_classes(self) -> list[int] | None:
        """TrainConfig's `classes`: a list, or None for all ten."""
        return None if self.classes is None else list(self.classes)


BUDGETS = {
    "quick": Budget(epochs=1, train_subset=512, test_subset=256, robustness_images=32, seeds=(0,), shots=(1, 5), draws=2, probe_pool_images=200, probe_test_images=200),
    "full": Budget(epochs=3, train_subset=None, test_subset=None, robustness_images=2000, seeds=(0, 1), shots=(1, 5, 25), draws=5, probe_pool_images=2000, probe_test_images=None),
    # The paper's token regime on all ten classes; hours of CPU, meant to be run as several invocations (each result is
    # kept as it finishes). The digits pool holds 1,000 of the 1,797 digits (about 100 per class, enough for 25 shots).
    "paper": Budget(epochs=6, train_subset=None, test_subset=None, robustness_images=2000, seeds=(0, 1), shots=(1, 5, 25), draws=5,
                    probe_pool_images=1000, probe_test_images=None, regime=PAPER_REGIME, classes=None, transfer="digits", check_epochs=12),
    "paper-quick": Budget(epochs=1, train_subset=256, test_subset=128, robustness_images=16, seeds=(0,), shots=(1,), draws=1,
                          probe_pool_images=100, probe_test_images=100, regime=PAPER_REGIME, classes=None, transfer="digits", check_epochs=2),
}


@dataclass(frozen=True)
class Experiment:
    name: str
    group: str  # "compare" (ViT, LookupViT, baselines), "budget-check", "ablation" or "single-grid"
    model: str
    model_args: dict = field(default_factory=dict)
    grids: tuple[int, ...] = (2, 3, 4, 5)
    seed: int = 0
    compressed_loss_weight: float = 1.0
    lookup_loss_weight: float = 1.0
    epochs: int | None = None  # None: the budget's

    @property
    def head(self) -> str:
        """The head that was trained: a head without loss is not evaluated."""
        if self.lookup_loss_weight == 0:
            return "compressed"
        return "lookup" if self.compressed_loss_weight == 0 else "average"


def experiments(budget: Budget) -> list[Experiment]:
    regime = budget.regime
    lookup, size = f"lookupvit_{regime.size}", regime.size
    multires = {"compressed_grid": regime.default_grid}
    found = []
    for seed in budget.seeds:
        found.append(Experiment(f"vit-seed{seed}", "compare", f"vit_{size}", seed=seed))
        found.append(Experiment(f"lookupvit-seed{seed}", "compare", lookup, multires, grids=regime.grids, seed=seed))
    if budget.check_epochs:  # before the other models: if the ranking flips with a longer budget, the budget is too short
        epochs = budget.check_epochs
        found.append(Experiment(f"vit-{epochs}-epochs", "budget-check", f"vit_{size}", epochs=epochs))
        found.append(Experiment(f"lookupvit-{epochs}-epochs", "budget-check", lookup, multires, grids=regime.grids, epochs=epochs))
    found += [
        Experiment("tokenlearner-half", "compare", f"tokenlearner_{size}", {"tokenlearner_at": 0.5, "num_learned_tokens": 8}),
        Experiment("tokenlearner-3quarter", "compare", f"tokenlearner_{size}", {"tokenlearner_at": 0.75, "num_learned_tokens": 8}),
        Experiment("perceiver", "compare", f"perceiver_{size}", {"num_latents": regime.perceiver_latents}),
    ]
    # Table 5 is about one fixed-grid model: the single-grid model at the ablation grid, which also serves Fig. 5b.
    found += [Experiment(f"single-grid-{g}", "single-grid", lookup, {"compressed_grid": g}, grids=(g,)) for g in regime.single_grids]
    grid = regime.ablation_grid
    fixed = {"compressed_grid": grid}
    found += [
        Experiment("no-lookup-tokens", "ablation", lookup, {**fixed, "use_lookup_tokens": False}, grids=(grid,), lookup_loss_weight=0.0),
        # as in the paper's chain of ablations, without p->l the loss is on the compressed tokens only
        Experiment("no-mhbc-p2l", "ablation", lookup, {**fixed, "infuse": False}, grids=(grid,), lookup_loss_weight=0.0),
        Experiment("compressed-loss-only", "ablation", lookup, fixed, grids=(grid,), lookup_loss_weight=0.0),
        Experiment("lookup-loss-only", "ablation", lookup, fixed, grids=(grid,), compressed_loss_weight=0.0),
        Experiment("learned-compressed-tokens", "ablation", lookup, {**fixed, "compressed_init": "learned"}, grids=(grid,)),
    ]
    return found


def train_config(experiment: Experiment, budget: Budget, out: Path, threads: int = 0) -> TrainConfig:
    """The main job's recipe (configs/fashion-mnist.toml) on the budget's classes, at this budget."""
    return main_job_recipe(
        model=experiment.model,
        model_args=dict(experiment.model_args),
        classes=budget.train_classes,
        train_subset=budget.train_subset,
        test_subset=budget.test_subset,
        epochs=experiment.epochs or budget.epochs,
        grids=list(experiment.grids),
        eval_grids=budget.regime.eval_grids,
        compressed_loss_weight=experiment.compressed_loss_weight,
        lookup_loss_weight=experiment.lookup_loss_weight,
        seed=experiment.seed,
        out=str(out / "runs" / experiment.name),
        threads=threads,
    )


def transfer_sets(budget: Budget) -> tuple[ImageDataset, ImageDataset]:
    """The few-shot pool (shots are drawn from it) and test set: images the backbones never saw.

    "held-out-classes": training and test images of the Fashion-MNIST classes the five-class backbones did not learn.
    "digits": disjoint pool and test digits, at Fashion-MNIST's 28 px.
    """
    if budget.transfer == "digits":
        return split_digits(load_digits(28), budget.probe_pool_images, budget.probe_test_images)
    if budget.transfer != "held-out-classes":
        raise ValueError(f"unknown transfer set {budget.transfer!r}; use 'held-out-classes' or 'digits'")
    if budget.classes is None or set(budget.classes) & set(HELD_OUT_CLASSES):
        raise ValueError(f"held-out-class transfer needs backbones that never saw classes {HELD_OUT_CLASSES}; got classes {budget.classes}")
    config = TrainConfig(classes=list(HELD_OUT_CLASSES), train_subset=budget.probe_pool_images, test_subset=budget.probe_test_images)
    return load_datasets(config)


def training_record(run: Path) -> dict:
    """From the run's metrics: test top-1 at the default grid after each epoch (is the ranking still moving?) and training images/s.

    Images/s is the median over the logged windows: a window in which the machine was busy with other work, or
    the run was paused or resumed, moves a mean but not the median.
    """
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    by_epoch = {record["epoch"]: record["eval"][0]["average"]["top1"] for record in records if "eval" in record}
    speeds = [record["images_per_s"] for record in records if "images_per_s" in record]
    return {"epoch_top1": [by_epoch[epoch] for epoch in sorted(by_epoch)], "images_per_s": statistics.median(speeds) if speeds else None}


def run_experiment(experiment: Experiment, budget: Budget, out: Path, device: torch.device, corrupted: dict, clean, transfer, threads: int = 0) -> dict:
    config = train_config(experiment, budget, out, threads)
    start = time.perf_counter()
    run = train(config)
    train_seconds = time.perf_counter() - start
    model, normalization, _ = load_trained(run / "model.safetensors", device)  # the last epoch: no model selection on test data
    _, test_set = load_datasets(config)
    result = {
        "experiment": dataclasses.asdict(experiment),
        "head": experiment.head,
        "train_seconds_this_call": round(train_seconds, 1),
        "parameters": sum(p.numel() for p in model.parameters()),
        "eval": evaluate(model, dataset_batches(test_set, normalization, 500), budget.regime.eval_grids, device),
        **training_record(run),
    }
    if experiment.group == "compare":
        is_lookup = experiment.model.startswith("lookupvit")
        grids = list(budget.regime.robustness_grids) if is_lookup else [None]
        result["robustness"] = {
            str(grid): corruption_results(model, clean.images, clean.labels, corrupted, normalization, device, grid, experiment.head) for grid in grids
        }
        pool, probe_test = transfer
        result["few_shot"] = {}
        for grid in grids:
            pool_features = extract_features(model, pool.images, normalization, 500, device, grid)
            test_features = extract_features(model, probe_test.images, normalization, 500, device, grid)
            # the same draws for every model (seed 0), so the models are compared on identical shots
            shots = few_shot_accuracy(pool_features, pool.labels, test_features, probe_test.labels, budget.shots, budget.draws, seed=0)
            result["few_shot"][str(grid)] = {str(k): v for k, v in shots.items()}
    return result


def reproduce(budget_name: str, out: str | Path, device_name: str = "auto", threads: int = 0, report_only: bool = False,
              beside: str | Path | None = None) -> Path:
    """Run (or finish) every experiment of the budget and write out/report.md; returns its path.

    `threads` is each training run's TrainConfig.threads (0: automatic). `report_only`: write the report from the
    experiments finished so far and run nothing (a long budget's interim report). `beside`: the --out folder of
    a run of the other token regime, whose claims the report sets beside this one's.
    """
    from .report import regime_beside, write_reproduction_report

    budget, out, device = open_suite(BUDGETS, budget_name, out, device_name)
    if beside:
        regime_beside(beside, out)  # a wrong folder is refused now, not after hours of training
    suite = experiments(budget)
    planned = [experiment.name for experiment in suite]
    base = TrainConfig(classes=budget.train_classes, test_subset=budget.test_subset)
    _, test_set = load_datasets(base)
    clean = test_set.subset(budget.robustness_images, seed=0)
    plot_corruption_grid(clean.images[0], out / "corruptions.png")
    if report_only:
        return write_reproduction_report(out, planned, beside)

    transfer = transfer_sets(budget)  # before the corrupted sets: a missing package fails before minutes of work
    corrupted = corrupted_test_set(clean.images, out / "corrupted", seed=0)

    run_each(
        suite,
        out / "results",
        describe=lambda experiment: f"{experiment.model} {experiment.model_args or ''}",
        run=lambda experiment: run_experiment(experiment, budget, out, device, corrupted, clean, transfer, threads),
        device=device,
    )

    return write_reproduction_report(out, planned, beside)
