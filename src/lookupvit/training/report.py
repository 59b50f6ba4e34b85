"""The run report: accuracy/FLOPs table at every grid, the accuracy-vs-compute plot and attention maps."""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from torch import nn

from ..data import Normalization, check_class_names
from ..data.transforms import unnormalized_eval_transform
from ..data.video import clip_transform
from ..evaluation.accuracy import evaluate, format_table
from ..evaluation.visualize import plot_accuracy_vs_flops, plot_attention_maps, plot_video_attention
from ..models import LookupViT
from ..models.serialization import load_model, read_metadata
from .config import TrainConfig
from .data import RunData, open_run_data
from .engine import evaluation_grids


def load_trained(path: str | Path, device: torch.device) -> tuple[nn.Module, Normalization, list[str]]:
    """A model file written by training, with its input normalisation and class names."""
    metadata = read_metadata(path)
    if "normalization" not in metadata or "classes" not in metadata:
        raise ValueError(f"{path} has no normalisation/class metadata; it was not written by `lookupvit train`")
    normalization = Normalization.from_json(json.loads(metadata["normalization"]))
    return load_model(path, map_location=device).eval(), normalization, json.loads(metadata["classes"])


def display_image(data: RunData, index: int) -> torch.Tensor:
    """Test image (or clip) `index` in [0, 1] as the model sees it before normalisation."""
    if not data.streamed:
        return data.test.read(index).float() / 255
    if data.layout == "videos":
        channels, config = data.image_shape[0], data.config
        return clip_transform(config.image_size, (0.0,) * channels, (1.0,) * channels, training=False, resize=config.clip_resize)(data.test.read(index))
    return unnormalized_eval_transform(data.config.image_size, data.config.crop_pct)(data.test.read(index))


def one_per_class(labels: torch.Tensor, count: int) -> list[int]:
    picked: dict[int, int] = {}
    for index, label in enumerate(labels.tolist()):
        picked.setdefault(label, index)
        if len(picked) == count:
            break
    return list(picked.values())


def write_report(run: str | Path, device: torch.device, attention_grids: list | None = None) -> Path:
    """Evaluate the run's best model at every grid and write report.md, eval.json and PNGs into the run folder."""
    run = Path(run)
    if not (run / "config.json").is_file() or not (run / "best.safetensors").is_file():
        raise FileNotFoundError(f"{run} is not a finished training run (needs config.json and best.safetensors); train first")
    config = TrainConfig(**json.loads((run / "config.json").read_text()))
    model, normalization, classes = load_trained(run / "best.safetensors", device)
    data = open_run_data(config, normalization)  # the model file's: no statistics to recompute
    check_class_names(classes, data.test.classes, f"the model file {run / 'best.safetensors'}", f"the run's test data ({config.val_dataset or config.dataset})")
    grids = evaluation_grids(config, model)

    start = time.perf_counter()
    rows = evaluate(model, data.evaluation_batches(device), grids, device)
    eval_seconds = time.perf_counter() - start
    (run / "eval.json").write_text(json.dumps({"test_images": len(data.test), "rows": rows}, indent=2))
    title = f"{config.model} on {config.dataset}: one model, every compressed grid"
    plot_accuracy_vs_flops(rows, run / "accuracy_vs_flops.png", title)

    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    # A resumed run logs the steps after its last checkpoint again: keep each step's last record.
    train_records = list({r["step"]: r for r in records if "loss" in r}.values())
    speed = sum(r["images_per_s"] for r in train_records) / max(len(train_records), 1)

    lines = [
        f"# {config.model} on {config.dataset}",
        "",
        f"Trained {config.epochs} epochs, global batch {config.batch_size}, lr {config.lr}, {config.amp}, "
        f"compressed grid sampled per batch from {config.grids}; mean training throughput {speed:.0f} images/s "
        f"on {device}. Test set: {len(data.test)} images (evaluated in {eval_seconds:.0f} s).",
        "",
    ]
    if isinstance(model, LookupViT):
        default = next(r for r in rows if tuple(r["grid"]) == model.compressed_grid)
        lines += [
            f"**Test top-1 at the default grid {'x'.join(map(str, model.compressed_grid))} (averaged heads): "
            f"{100 * default['average']['top1']:.2f} %**",
            "",
        ]
    lines += [format_table(rows), "", "FLOPs are per image (per clip for video models), 2 x multiply-accumulates.", "", "![accuracy vs FLOPs](accuracy_vs_flops.png)", ""]
    if isinstance(model, LookupViT) and data.layout == "videos":
        picks = one_per_class(data.test.labels, 4)
        display = torch.stack([display_image(data, i) for i in picks])
        grid = model.compressed_grid
        plot_video_attention(model, normalization.normalize_clips(display).to(device), display, grid, run / "attention.png", [classes[data.test.labels[i]] for i in picks])
        lines += [
            "## Where the compressed tokens look, over time",
            "",
            f"The last layer's l->p attention at the default grid {'x'.join(map(str, grid))}, averaged over heads and compressed tokens, "
            "per tubelet over its first frame.",
            "",
            "![attention strips](attention.png)",
            "",
        ]
    elif isinstance(model, LookupViT):
        picks = one_per_class(data.test.labels, 3)
        display = torch.stack([display_image(data, i) for i in picks])
        shown = attention_grids or [g for g in grids if g in (2, 3, 5)] or grids[:3]
        inputs = normalization.normalize(display).to(device)
        plot_attention_maps(model, inputs, display, shown, run / "attention.png", [classes[data.test.labels[i]] for i in picks])
        lines += [
            "## Where the compressed tokens look",
            "",
            "Per layer, the information-gathering (l->p) attention averaged over heads and compressed tokens, over test images.",
            "",
            "![attention maps](attention.png)",
            "",
        ]
    (run / "report.md").write_text("\n".join(lines))
    return run / "report.md"
