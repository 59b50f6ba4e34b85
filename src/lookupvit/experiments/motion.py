"""`lookupvit motion`: the video main job - a motion task that needs time, LookupViViT against ViViT.

No labelled video set is offline, so the task is built from real pixels (data/motion.py): which way
a shoe (a Fashion-MNIST sandal, sneaker or ankle boot) moves - left, right, up or down - while two
clothing items move each its own way, over a canvas that wraps around; written as real mp4 files
and decoded by PyAV in training. (With a single item alone on the canvas LookupViViT reached 100 %
validation top-1 by its fifth epoch: a task every model solves compares nothing.) Any single frame has the same distribution for
every class, so a model that sees one frame must stay at chance (25 %): that model is trained too,
as the task's sanity check. LookupViViT (multi-resolution over (tp, hp, wp) grids) and ViViT train with
the same recipe and number of epochs; the report gives top-1 at one view and at several temporal
views, GFLOPs per view, training clips/s, a plot of accuracy against GFLOPs and attention strips.

Every model is a resumable training run under out/runs/, and each result is written to
out/results/ as soon as it is known, so a killed job loses at most the run in flight and a rerun
skips what is done.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..data.loader import EvalBatches
from ..data.motion import MOTION_CLASSES, write_motion_videos
from ..data.video import MultiViewClipTransform, VideoFolderSource
from ..evaluation.accuracy import evaluate, grid_label
from ..models import LookupViT
from ..training.config import TrainConfig
from ..training.engine import train
from ..training.report import load_trained
from .results import open_suite, run_each

CANVAS = 32  # frame side in pixels; nano4's 4x4 patches give an 8x8 spatial lookup grid
CLIP_FRAMES = 8  # frames per clip (tubelets of 2 frames: 4 lookup steps in time)
VIDEO_FRAMES = 16  # frames per video: training clips start anywhere in the first 9
TEMPORAL_VIEWS = 4  # evaluation views along time (ViViT's 4 x 3; the square canvas needs one spatial view)
GRIDS = [[2, 2, 2], [2, 4, 4], [4, 4, 4], [4, 6, 6]]  # (tp, hp, wp) inside the (4, 8, 8) lookup grid
DISTRACTORS = 2  # clothing items moving at random beside the shoe
ITEM_SIDE = (10.0, 16.0)  # pixels: three items share the 32 px canvas


@dataclass(frozen=True)
class MotionBudget:
    train_per_class: int
    val_per_class: int
    epochs: int
    batch_size: int


BUDGETS = {
    "quick": MotionBudget(train_per_class=8, val_per_class=4, epochs=1, batch_size=16),  # checks the pipeline (a test)
    "full": MotionBudget(train_per_class=1000, val_per_class=250, epochs=6, batch_size=64),
}


@dataclass(frozen=True)
class MotionRun:
    name: str
    label: str  # how the report names it
    model: str
    model_args: dict = field(default_factory=dict)
    grids: tuple = ((4, 4, 4),)


def motion_runs() -> list[MotionRun]:
    clip = {"num_frames": CLIP_FRAMES}
    return [
        MotionRun("lookupvivit", "LookupViViT (multi-res)", "lookupvivit_nano4", {**clip, "compressed_grid": (4, 4, 4)}, tuple(map(tuple, GRIDS))),
        MotionRun("vivit", "ViViT", "vivit_nano4", clip),
        # The sanity check: one frame per clip (tubelets of one frame) cannot tell the direction.
        MotionRun("vivit-one-frame", "ViViT on one frame", "vivit_nano4", {"num_frames": 1, "tubelet_frames": 1}),
    ]


def run_config(run: MotionRun, budget: MotionBudget, videos: Path, out: Path, threads: int) -> TrainConfig:
    """One recipe for every model: the same data, epochs, batch, optimiser and augmentation."""
    return TrainConfig(
        model=run.model,
        model_args=dict(run.model_args),
        dataset=str(videos),
        image_size=CANVAS,
        crop_pct=1.0,  # the whole canvas: a crop would cut the wrapping item at random
        video_channels=1,
        frame_stride=1,
        epochs=budget.epochs,
        batch_size=budget.batch_size,
        lr=1e-3,
        warmup_epochs=0.5,
        weight_decay=0.05,
        label_smoothing=0.0,
        grids=[list(grid) for grid in run.grids],
        eval_grids=GRIDS,
        eval_batch_size=100,
        workers=1,  # decodes the next batch while the model trains on this one
        out=str(out / "runs" / run.name),
        threads=threads,
    )


def evaluate_views(model, config: TrainConfig, normalization, grids: list, device: torch.device, views: int) -> list[dict]:
    """Top-1 on the validation videos with `views` temporal clips per video, logits averaged."""
    source = VideoFolderSource(
        config.dataset, "val", model.config.num_frames, config.frame_stride, config.video_channels, training=False, temporal_views=views
    )
    transform = MultiViewClipTransform(config.image_size, normalization.mean, normalization.std, spatial_views=1, resize=config.clip_resize)
    return evaluate(model, EvalBatches(source, transform, config.eval_batch_size, workers=0), grids, device)


def run_and_evaluate(run: MotionRun, budget: MotionBudget, videos: Path, out: Path, device: torch.device, threads: int) -> dict:
    config = run_config(run, budget, videos, out, threads)
    folder = train(config)
    model, normalization, _ = load_trained(folder / "model.safetensors", device)  # the last epoch: no selection on validation data
    grids = [tuple(grid) for grid in GRIDS] if isinstance(model, LookupViT) else [None]
    one_view = evaluate_views(model, config, normalization, grids, device, views=1)
    multi_view = evaluate_views(model, config, normalization, grids, device, views=TEMPORAL_VIEWS)
    records = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    speeds = list({r["step"]: r["images_per_s"] for r in records if "images_per_s" in r}.values())
    return {
        "run": dataclasses.asdict(run),
        "parameters": sum(p.numel() for p in model.parameters()),
        "clips_per_s": sum(speeds) / max(len(speeds), 1),
        "one_view": one_view,
        "multi_view": multi_view,
    }


def run_motion(budget_name: str, out: str | Path, device_name: str = "auto", threads: int = 0, seed: int = 0, download: bool = False) -> Path:
    """Write the motion videos (once), train and evaluate every model (resumably), write out/report.md."""
    budget, out, device = open_suite(BUDGETS, budget_name, out, device_name, seed=seed)
    videos = out / "videos"
    write_motion_videos(
        videos, train_per_class=budget.train_per_class, val_per_class=budget.val_per_class, seed=seed,
        frames=VIDEO_FRAMES, canvas=CANVAS, scale=ITEM_SIDE, distractors=DISTRACTORS, download=download,
    )  # fmt: skip
    run_each(
        motion_runs(),
        out / "results",
        describe=lambda run: f"{run.model} {run.model_args}",
        run=lambda run: run_and_evaluate(run, budget, videos, out, device, threads),
        device=device,
    )
    return write_motion_report(out, device)


# --------------------------------------------------------------------------------------------
# The report
# --------------------------------------------------------------------------------------------


def chance_interval(classes: int, videos: int) -> tuple[float, float]:
    """Where a model that guesses lands with 99.7 % probability: chance +- 3 binomial standard deviations."""
    chance = 1 / classes
    spread = 3 * math.sqrt(chance * (1 - chance) / videos)
    return chance - spread, chance + spread


def result_rows(results: dict[str, dict]) -> list[dict]:
    rows = []
    for name, result in results.items():
        for single, multi in zip(result["one_view"], result["multi_view"]):
            rows.append(
                {
                    "run": name,
                    "label": result["run"]["label"],
                    "grid": single["grid"],
                    "gflops": single["gflops"],
                    "top1": single["average"]["top1"],
                    "top1_views": multi["average"]["top1"],
                    "clips_per_s": result["clips_per_s"],
                }
            )
    return rows


def plot_motion(rows: list[dict], path: Path, chance: float) -> None:
    from ..evaluation.visualize import _pyplot, save_figure

    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    lookup = [row for row in rows if row["grid"] is not None]
    axis.plot([r["gflops"] for r in lookup], [100 * r["top1_views"] for r in lookup], "o-", label=f"LookupViViT, {TEMPORAL_VIEWS} views")
    axis.plot([r["gflops"] for r in lookup], [100 * r["top1"] for r in lookup], "o:", label="LookupViViT, 1 view")
    for row in lookup:
        axis.annotate(grid_label(row["grid"]), (row["gflops"], 100 * row["top1_views"]), textcoords="offset points", xytext=(4, -10), fontsize=8)
    for row, marker in zip([r for r in rows if r["grid"] is None], ("k*", "rX")):
        axis.plot([row["gflops"]], [100 * row["top1_views"]], marker, markersize=10, label=f"{row['label']}, {TEMPORAL_VIEWS} views")
    axis.axhline(100 * chance, color="grey", linestyle="--", linewidth=1, label="chance")
    axis.set_xlabel("GFLOPs per view (2 x multiply-accumulates)")
    axis.set_ylabel("validation top-1 (%)")
    axis.set_title("Which way does the shoe move? One LookupViViT at every grid vs ViViT")
    save_figure(plt, figure, path, [axis])


def plot_example_clips(videos: Path, path: Path, frames_shown: int = 8) -> None:
    """The first validation video of each class, every other frame: what the models see."""
    from ..evaluation.visualize import _pyplot

    plt = _pyplot()
    source = VideoFolderSource(videos, "val", num_frames=VIDEO_FRAMES, channels=1, training=False)
    figure, axes = plt.subplots(len(source.classes), frames_shown, figsize=(1.1 * frames_shown, 1.25 * len(source.classes)), dpi=110, squeeze=False)
    for label, name in enumerate(source.classes):
        clip = source.read(int((source.labels == label).nonzero()[0]))[0]  # (T, H, W)
        for column in range(frames_shown):
            frame = column * VIDEO_FRAMES // frames_shown
            axes[label, column].imshow(clip[frame].numpy(), cmap="gray", vmin=0, vmax=255)
            axes[label, column].axis("off")
            axes[label, column].set_title(f"{name}: frame {frame}" if column == 0 else f"frame {frame}", fontsize=7)
    figure.suptitle("Validation clips: the shoe moves the labelled way, the clothes at random", fontsize=9)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def write_motion_report(out: Path, device: torch.device) -> Path:
    order = [run.name for run in motion_runs()]
    found = {path.stem: json.loads(path.read_text()) for path in (out / "results").glob("*.json")}
    results = {name: found[name] for name in sorted(found, key=lambda name: order.index(name) if name in order else len(order))}
    budget = json.loads((out / "budget.json").read_text())
    rows = result_rows(results)
    videos = budget["val_per_class"] * len(MOTION_CLASSES)
    low, high = chance_interval(len(MOTION_CLASSES), videos)
    plot_motion(rows, out / "accuracy_vs_flops.png", 1 / len(MOTION_CLASSES))
    plot_example_clips(out / "videos", out / "clips.png")
    lines = [
        "# Which way does the shoe move? LookupViViT vs ViViT on real mp4 clips",
        "",
        f"A Fashion-MNIST shoe moves {', '.join(MOTION_CLASSES)} among {DISTRACTORS} clothing items that move each its own way "
        "([example clips](clips.png)). "
        f"{budget['train_per_class']} training and {budget['val_per_class']} validation videos per class ({', '.join(MOTION_CLASSES)}), "
        f"{VIDEO_FRAMES} frames of {CANVAS}x{CANVAS} px; clips of {CLIP_FRAMES} frames; {budget['epochs']} epochs, batch {budget['batch_size']}, "
        "the same recipe for every model. Top-1 of the last epoch's model on the validation videos.",
        "",
        f"| model | grid (t, h, w) | GFLOPs / view | top-1, 1 view | top-1, {TEMPORAL_VIEWS} views | training clips/s |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['label']} | {grid_label(row['grid'])} | {row['gflops']:.3f} | {100 * row['top1']:.2f} | {100 * row['top1_views']:.2f} | {row['clips_per_s']:.0f} |"
        )
    lines += ["", "![accuracy vs GFLOPs](accuracy_vs_flops.png)", ""]
    if "vivit-one-frame" in results:
        frame_only = next(row for row in rows if row["run"] == "vivit-one-frame")
        verdict = "passes: it stays at chance" if frame_only["top1_views"] <= high else "FAILS: one frame gives the answer away"
        lines += [
            "## Sanity check: one frame is not enough",
            "",
            f"ViViT on a single frame per clip: {100 * frame_only['top1_views']:.2f} % ({TEMPORAL_VIEWS} views), chance {100 / len(MOTION_CLASSES):.0f} % "
            f"(guessing lands in {100 * low:.1f}-{100 * high:.1f} % on {videos} videos). The task's check {verdict}.",
            "",
        ]
    if "lookupvivit" in results:
        grid, on_item, item_area = draw_attention_strips(out, device)
        lines += [
            "## Where the compressed tokens look, over time",
            "",
            f"LookupViViT at grid {grid_label(grid)}: per tubelet (two frames), the last layer's l->p attention averaged over heads and "
            f"compressed tokens, drawn over the tubelet's first frame. On these clips {100 * on_item:.0f} % of the attention falls on the "
            f"items' pixels (shoe and clothes), which cover {100 * item_area:.0f} % of the frames ({on_item / item_area:.1f}x uniform attention).",
            "",
            "![attention strips](attention_strips.png)",
            "",
        ]
    hardware = next(iter(results.values()))["hardware"] if results else {}
    lines += [f"Host: {hardware.get('cpu_count')} CPUs ({hardware.get('processor') or hardware.get('machine')}), torch {hardware.get('torch')}.", ""]
    (out / "report.md").write_text("\n".join(lines))
    return out / "report.md"


def draw_attention_strips(out: Path, device: torch.device, grid: tuple[int, int, int] = (4, 4, 4)) -> tuple[tuple, float, float]:
    """attention_strips.png for one validation video per class -> (grid, attention mass on the item, item area fraction)."""
    from ..evaluation.visualize import lookup_attention_maps, plot_video_attention

    folder = out / "runs" / "lookupvivit"
    config = TrainConfig(**json.loads((folder / "config.json").read_text()))
    model, normalization, classes = load_trained(folder / "model.safetensors", device)
    source = VideoFolderSource(config.dataset, "val", model.config.num_frames, config.frame_stride, config.video_channels, training=False)
    picks = [int((source.labels == label).nonzero()[0]) for label in range(len(classes))]
    clips = torch.stack([source.read(index) for index in picks]).float() / 255  # (B, C, T, H, W) in [0, 1]
    inputs = normalization.normalize_clips(clips).to(device)
    plot_video_attention(model, inputs, clips, grid, out / "attention_strips.png", [classes[source.labels[i]] for i in picks])
    # How much of the attention lands on the item: each lookup token's share against the item pixels it covers.
    maps, _ = lookup_attention_maps(model, inputs, grid)  # (layers, B, t, h, w), each map sums to 1 over (t, h, w)
    tubelet, patch = model.config.tubelet_frames, model.config.patch_size
    item = (clips[:, 0] > 0.1).float()  # (B, T, H, W): the items on the black canvas
    item_share = torch.nn.functional.avg_pool3d(item[:, None], (tubelet, patch, patch))[:, 0]  # (B, t, h, w)
    on_item = (maps[-1].cpu() * item_share).sum() / len(clips)
    return grid, float(on_item), float(item.mean())
