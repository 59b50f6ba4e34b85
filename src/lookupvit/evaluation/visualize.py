"""Pictures: accuracy against compute, and where the compressed tokens look (paper Fig. 1a / 6)."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from ..models import LookupViT
from .accuracy import grid_label


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise RuntimeError("plots need matplotlib: pip install 'lookupvit[train]'") from None

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(plt, figure, path: str | Path, legend_axes=(), legend_size: int = 8) -> None:
    """Grid and legend on `legend_axes`, then a tight layout written to `path`; the figure is closed (no pyplot state leaks)."""
    for axis in legend_axes:
        axis.grid(alpha=0.3)
        axis.legend(fontsize=legend_size)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def plot_accuracy_vs_flops(rows: list[dict], path: str | Path, title: str, baselines: dict[str, list[dict]] | None = None) -> None:
    """Top-1 of each head against the FLOPs of each compressed grid: one model, many compute budgets."""
    plt = _pyplot()
    scale, unit = (1e3, "MFLOPs") if max(row["gflops"] for row in rows) < 1 else (1.0, "GFLOPs")
    figure, axis = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    for head, style in (("average", "o-"), ("compressed", "s--"), ("lookup", "^:")):
        if head not in rows[0]:
            continue
        xs = [row["gflops"] * scale for row in rows]
        ys = [100 * row[head]["top1"] for row in rows]
        axis.plot(xs, ys, style, label=f"LookupViT, {head} head" if head != "average" else "LookupViT, averaged heads")
        if head == "average":
            for x, y, row in zip(xs, ys, rows):
                axis.annotate(grid_label(row["grid"]), (x, y), textcoords="offset points", xytext=(4, -10), fontsize=8)
    for name, baseline_rows in (baselines or {}).items():
        axis.plot([r["gflops"] * scale for r in baseline_rows], [100 * r["average"]["top1"] for r in baseline_rows], "k*", markersize=10, label=name)
    axis.set_xlabel(f"{unit} per image (2 x multiply-accumulates)")
    axis.set_ylabel("test top-1 accuracy (%)")
    axis.set_title(title)
    save_figure(plt, figure, path, [axis])


@torch.no_grad()
def lookup_attention_maps(model: LookupViT, images: Tensor, grid) -> tuple[Tensor, tuple[int, int]]:
    """Per layer, the l->p attention averaged over heads and compressed tokens: (layers, B, *lookup_grid), (t, h, w) for video.

    Each compressed token's attention row is a distribution over lookup tokens, so the average says
    which parts of the image the compressed tokens gather from.
    """
    model.eval()
    output = model.forward_features(images, grid=grid, return_attention=True)
    maps = torch.stack([attention.float().mean(dim=(1, 2)) for attention in output.attention])  # (L, B, N)
    return maps.view(len(output.attention), images.shape[0], *output.lookup_grid), output.compressed_grid


def plot_attention_maps(model: LookupViT, images: Tensor, display: Tensor, grids: list, path: str | Path, labels: list[str] | None = None) -> None:
    """A PNG grid: a row per (image, compressed grid), the image then each layer's map drawn over it.

    `images` are the normalised model inputs (B, C, H, W); `display` the same images in [0, 1] for drawing.
    """
    plt = _pyplot()
    depth = len(model.blocks)
    rows = [(index, grid) for index in range(images.shape[0]) for grid in grids]
    figure, axes = plt.subplots(len(rows), depth + 1, figsize=(1.6 * (depth + 1), 1.6 * len(rows)), dpi=110, squeeze=False)
    per_grid = {grid: lookup_attention_maps(model, images, grid) for grid in grids}
    for row, (index, grid) in enumerate(rows):
        picture = display[index].permute(1, 2, 0).cpu()
        picture = (picture.squeeze(-1) if picture.shape[-1] == 1 else picture).numpy()
        maps, resolved = per_grid[grid]
        axes[row, 0].imshow(picture, cmap="gray" if picture.ndim == 2 else None)
        caption = f"{labels[index]}\n" if labels else ""
        axes[row, 0].set_title(f"{caption}grid {resolved[0]}x{resolved[1]}", fontsize=7)
        for layer in range(depth):
            heat = F.interpolate(maps[layer, index][None, None], size=picture.shape[:2], mode="bilinear", align_corners=False)[0, 0]
            axes[row, layer + 1].imshow(picture, cmap="gray" if picture.ndim == 2 else None)
            axes[row, layer + 1].imshow(heat.cpu().numpy(), cmap="jet", alpha=0.5)
            if row == 0:
                axes[row, layer + 1].set_title(f"layer {layer + 1}", fontsize=7)
        for axis in axes[row]:
            axis.axis("off")
    figure.suptitle("LookupViT l->p attention, averaged over heads and compressed tokens", fontsize=9)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def plot_video_attention(model: LookupViT, clips: Tensor, display: Tensor, grid, path: str | Path, labels: list[str] | None = None) -> None:
    """Attention strips: a row per clip, a column per lookup time step, the last layer's l->p map over that step's first frame.

    `clips` are the normalised inputs (B, C, T, H, W) of a LookupViViT; `display` the same clips in [0, 1].
    """
    plt = _pyplot()
    maps, resolved = lookup_attention_maps(model, clips, grid)  # (layers, B, t, h, w)
    last = maps[-1]
    steps, frames_per_step = last.shape[1], clips.shape[2] // last.shape[1]
    figure, axes = plt.subplots(len(clips), steps, figsize=(1.5 * steps, 1.6 * len(clips)), dpi=110, squeeze=False)
    for row in range(len(clips)):
        for step in range(steps):
            frame = display[row, :, step * frames_per_step].permute(1, 2, 0).cpu()
            frame = (frame.squeeze(-1) if frame.shape[-1] == 1 else frame).numpy()
            heat = F.interpolate(last[row, step][None, None], size=frame.shape[:2], mode="bilinear", align_corners=False)[0, 0]
            axes[row, step].imshow(frame, cmap="gray" if frame.ndim == 2 else None)
            axes[row, step].imshow(heat.cpu().numpy(), cmap="jet", alpha=0.45)
            axes[row, step].axis("off")
            title = f"frames {step * frames_per_step}-{(step + 1) * frames_per_step - 1}"
            axes[row, step].set_title(f"{labels[row]}: {title}" if labels and step == 0 else title, fontsize=7)
    figure.suptitle(f"LookupViViT l->p attention at grid {grid_label(resolved)}, last layer, over time", fontsize=9)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
