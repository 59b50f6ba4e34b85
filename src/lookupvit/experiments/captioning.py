"""`lookupvit caption run`: paper Table 3 at small scale, captioning CIDEr vs GFLOPs on frozen encoders.

No caption set is offline, so the task is the layout task of data/captions.py: Fashion-MNIST items
(16-28 px, the scale of its 28 px images) on 56 px grey canvases, captioned by class and position.
The encoders are trained by this project on Fashion-MNIST classification at 28 px: a multi-resolution
`lookupvit_nano4` and a `vit_nano4`. On a 56 px canvas their position embeddings are resampled and a
patch-4 encoder sees the paper's 14x14 lookup grid. Both stay frozen; one nano decoder per setting
(LookupViT read at grids 3, 5, 7 and 10, ViT on all 196 patch tokens) trains on the same budget, and
the report gives CIDEr-D, BLEU-4, ROUGE-L and GFLOPs per caption on the val canvases.

Each training run is resumable under out/runs/, each result is written to out/results/ as soon as it
is known, and a rerun skips what is done.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..data.captions import layout_caption_paths, read_coco_captions, write_layout_captions
from ..runtime import pick_device
from ..training.captioning import CaptionTrainConfig, evaluate_captioner, load_captioner, train_captioner
from ..training.config import TrainConfig
from ..training.engine import train
from .results import main_job_recipe, open_suite, run_each, written_by

CANVAS = 56
LOOKUP_MODEL, VIT_MODEL = "lookupvit_nano4", "vit_nano4"
GRIDS = (3, 5, 7, 10)
# Paper Table 3 (COCO, B/16 encoders, 224 px): CIDEr and GFLOPs per setting.
PAPER = {"vit": (112.6, 59.5), "lookupvit-3x3": (104.3, 31.9), "lookupvit-5x5": (108.4, 35.9), "lookupvit-7x7": (111.3, 42.1), "lookupvit-10x10": (111.7, 55.3)}


@dataclass(frozen=True)
class CaptionBudget:
    train_canvases: int
    val_canvases: int
    encoder_epochs: int
    encoder_subset: int | None  # Fashion-MNIST training images for the encoders (None: all 60,000)
    decoder_epochs: int
    decoder: str = "nano"


BUDGETS = {
    "quick": CaptionBudget(train_canvases=64, val_canvases=32, encoder_epochs=1, encoder_subset=256, decoder_epochs=2),  # checks the pipeline (a test)
    "full": CaptionBudget(train_canvases=4000, val_canvases=500, encoder_epochs=5, encoder_subset=None, decoder_epochs=30),
}


@dataclass(frozen=True)
class EncoderRun:
    name: str
    model: str


@dataclass(frozen=True)
class CaptionSetting:
    name: str
    encoder: str  # an EncoderRun name
    grid: int | None


ENCODERS = (EncoderRun("encoder-lookupvit", LOOKUP_MODEL), EncoderRun("encoder-vit", VIT_MODEL))
SETTINGS = tuple(CaptionSetting(f"lookupvit-{g}x{g}", "encoder-lookupvit", g) for g in GRIDS) + (CaptionSetting("vit", "encoder-vit", None),)


def encoder_recipe(run: EncoderRun, budget: CaptionBudget, out: Path, threads: int) -> TrainConfig:
    """The main job's recipe (configs/fashion-mnist.toml); the LookupViT trains at every grid of its 7x7 lookup grid but 1."""
    lookup = run.model == LOOKUP_MODEL
    return main_job_recipe(
        model=run.model,
        model_args={"compressed_grid": [3, 3]} if lookup else {},
        train_subset=budget.encoder_subset,
        test_subset=None if budget.encoder_subset is None else 256,
        epochs=budget.encoder_epochs,
        grids=[2, 3, 4, 5, 6, 7],
        eval_grids=[3, 5, 7],
        out=str(out / "runs" / run.name),
        threads=threads,
    )


def train_encoder(run: EncoderRun, budget: CaptionBudget, out: Path, threads: int) -> dict:
    folder = train(encoder_recipe(run, budget, out, threads))
    records = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    last_eval = [record for record in records if "eval" in record][-1]["eval"]
    return {"model_file": str(folder / "model.safetensors"), "test_top1": {str(row["grid"]): row["average"]["top1"] for row in last_eval}}


def caption_recipe(setting: CaptionSetting, budget: CaptionBudget, out: Path, device_name: str, threads: int) -> CaptionTrainConfig:
    """The same decoder and budget for every setting; only the encoder and its grid differ."""
    return CaptionTrainConfig(
        encoder=str(out / "runs" / setting.encoder / "model.safetensors"),
        data=str(out / "layout"),
        grid=setting.grid,
        image_size=CANVAS,
        decoder=budget.decoder,
        max_length=24,
        epochs=budget.decoder_epochs,
        batch_size=64,
        lr=2e-3,
        warmup_epochs=1.0,
        out=str(out / "runs" / setting.name),
        device=device_name,
        threads=threads,
    )


def train_and_score(setting: CaptionSetting, budget: CaptionBudget, out: Path, device_name: str, threads: int) -> dict:
    config = caption_recipe(setting, budget, out, device_name, threads)
    captioner = load_captioner(train_captioner(config), pick_device(device_name))
    val = read_coco_captions(*layout_caption_paths(out / "layout", "val"))
    result = evaluate_captioner(captioner, val, num_examples=4)
    records = [json.loads(line) for line in (Path(config.out) / "metrics.jsonl").read_text().splitlines()]
    result["losses"] = list({record["epoch"]: [record["epoch"], record["loss"], record["val_loss"]] for record in records}.values())
    result["memory_tokens"] = result["grid"][0] * result["grid"][1] if result["grid"] else (CANVAS // 4) ** 2
    return result


def run_captioning(budget_name: str, out: str | Path, device_name: str = "auto", threads: int = 0) -> Path:
    """Write the layout task, train the two encoders and one decoder per setting (resumably); write out/report.md."""
    budget, out, device = open_suite(BUDGETS, budget_name, out, device_name)
    write_layout_captions(out / "layout", train_images=budget.train_canvases, val_images=budget.val_canvases, seed=0, canvas_size=CANVAS)
    run_each(ENCODERS, out / "results", describe=lambda run: f"{run.model} on Fashion-MNIST, {budget.encoder_epochs} epochs",
             run=lambda run: train_encoder(run, budget, out, threads), device=device)  # fmt: skip
    run_each(SETTINGS, out / "results", describe=lambda setting: f"nano decoder on {setting.encoder}, grid {setting.grid or 'all tokens'}",
             run=lambda setting: train_and_score(setting, budget, out, device_name, threads), device=device)  # fmt: skip
    return write_captioning_report(out, budget)


# --------------------------------------------------------------------------------------------
# The report
# --------------------------------------------------------------------------------------------


def plot_cider_vs_gflops(results: dict[str, dict], path: Path) -> None:
    from ..evaluation.visualize import _pyplot, save_figure

    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(6, 4.2), dpi=110)
    lookup = [(name, results[name]) for name in (setting.name for setting in SETTINGS if setting.grid) if name in results]
    axis.plot([r["gflops"]["total"] for _, r in lookup], [100 * r["scores"]["cider"] for _, r in lookup], "o-", label="LookupViT (one model, grid at inference)")
    for name, result in lookup:
        axis.annotate(name.removeprefix("lookupvit-"), (result["gflops"]["total"], 100 * result["scores"]["cider"]), textcoords="offset points", xytext=(5, -10), fontsize=8)
    if "vit" in results:
        axis.plot([results["vit"]["gflops"]["total"]], [100 * results["vit"]["scores"]["cider"]], "*", markersize=12, label="ViT (all 196 tokens)")
    axis.set_xlabel("GFLOPs per caption (encoder + decoder)")
    axis.set_ylabel("val CIDEr-D")
    axis.set_title("Captioning on frozen encoders (layout task, 56 px)")
    save_figure(plt, figure, path, [axis])


def plot_example_canvases(out: Path, keys: list, path: Path) -> None:
    from PIL import Image

    from ..evaluation.visualize import _pyplot

    plt = _pyplot()
    images = {image.key: image.path for image in read_coco_captions(*layout_caption_paths(out / "layout", "val"))}
    figure, axes = plt.subplots(1, len(keys), figsize=(2.2 * len(keys), 2.4), dpi=110, squeeze=False)
    for number, (axis, key) in enumerate(zip(axes[0], keys), 1):
        axis.imshow(Image.open(images[key]), cmap="gray", vmin=0, vmax=255)
        axis.set_title(f"canvas {number}", fontsize=9)
        axis.axis("off")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def score_table(results: dict[str, dict]) -> list[str]:
    lines = ["| setting | memory tokens | CIDEr | BLEU-4 | ROUGE-L | GFLOPs (encoder + decoder) | paper CIDEr | paper GFLOPs |", "|---|---|---|---|---|---|---|---|"]
    for setting in SETTINGS:
        if setting.name in results:
            result, (paper_cider, paper_gflops) = results[setting.name], PAPER[setting.name]
            scores, gflops = result["scores"], result["gflops"]
            lines.append(
                f"| {setting.name} | {result['memory_tokens']} | {100 * scores['cider']:.1f} | {100 * scores['bleu4']:.1f} | {100 * scores['rouge_l']:.1f} "
                f"| {gflops['total']:.3f} ({gflops['encoder']:.3f} + {gflops['decoder']:.4f}) | {paper_cider} | {paper_gflops} |"
            )
    return lines


def example_table(results: dict[str, dict]) -> list[str]:
    first = next(iter(results.values()))["examples"]
    lines = ["| canvas | " + " | ".join(results) + " | references |", "|---|" + "---|" * (len(results) + 1)]
    for number, example in enumerate(first, 1):
        generated = [next(e["generated"] for e in result["examples"] if e["key"] == example["key"]) for result in results.values()]
        lines.append(f"| {number} | " + " | ".join(generated) + " | " + "; ".join(example["references"]) + " |")
    return lines


def read_results(out: Path, names: list[str]) -> dict[str, dict]:
    """The results written so far, by name, in the order given."""
    paths = {name: out / "results" / f"{name}.json" for name in names}
    return {name: json.loads(path.read_text()) for name, path in paths.items() if path.exists()}


def write_captioning_report(out: Path, budget: CaptionBudget) -> Path:
    results = read_results(out, [setting.name for setting in SETTINGS])
    encoders = read_results(out, [run.name for run in ENCODERS])
    plot_cider_vs_gflops(results, out / "cider_vs_gflops.png")
    keys = [example["key"] for example in next(iter(results.values()))["examples"]]
    plot_example_canvases(out, keys, out / "examples.png")
    tokenizer = next(iter(results.values()))["scores"]["tokenizer"]
    top1 = {name: max(encoder["test_top1"].values()) for name, encoder in encoders.items()}
    images = "all 60,000" if budget.encoder_subset is None else str(budget.encoder_subset)
    lines = [
        "# Captioning on frozen encoders: CIDEr vs GFLOPs (paper Table 3, small scale)",
        "",
        (
            f"Layout task: {budget.train_canvases} train / {budget.val_canvases} val canvases of {CANVAS} px (Fashion-MNIST items, captions by class and position). "
            f"Encoders: `{LOOKUP_MODEL}` and `{VIT_MODEL}` trained {budget.encoder_epochs} epoch(s) on {images} Fashion-MNIST images at 28 px "
            f"(test top-1 {100 * top1['encoder-lookupvit']:.1f} % / {100 * top1['encoder-vit']:.1f} %), then frozen and applied at {CANVAS} px (14x14 lookup grid). "
            f"One `{budget.decoder}` decoder per setting, {budget.decoder_epochs} epochs, greedy decoding. Scores x 100 on the val canvases, tokenizer {tokenizer}."
        ),
        "",
        *score_table(results),
        "",
        (
            "GFLOPs are per caption, 2 x multiply-accumulates: the encoder's analytic FLOPs at the grid, plus the decoder's over each generated caption "
            "(every token read once, as a KV-cached decoder does). The paper's columns are COCO with B/16 encoders at 224 px: compare shapes, not values."
        ),
        "",
        "![CIDEr vs GFLOPs](cider_vs_gflops.png)",
        "",
        "## Examples (val canvases)",
        "",
        "![example canvases](examples.png)",
        "",
        *example_table(results),
        "",
        written_by(out, "lookupvit caption run", next(iter(results.values()))["hardware"]),
        "",
    ]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path
