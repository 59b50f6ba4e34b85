"""Accuracy of every head at every compressed grid, with the FLOPs each grid costs.

Images and video clips alike; a batch of several views per sample (ViViT's 4 temporal x 3 spatial
clips per video, (B, V, C, T, H, W)) is scored per sample on its logits averaged over the views.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn

from ..models import LookupViT
from ..models.flops import analytic_flops
from ..models.video import VideoInput

HEADS = ("compressed", "lookup", "average")


def _topk_correct(logits: Tensor, labels: Tensor, k: int) -> int:
    k = min(k, logits.shape[-1])
    return (logits.topk(k, dim=-1).indices == labels[:, None]).any(dim=-1).sum().item()


def logits_and_features(model: nn.Module, images: Tensor, grid: int | tuple[int, ...] | None) -> tuple[dict[str, Tensor], Tensor]:
    """Logits of every head ({"compressed", "lookup", "average"}; ViT-like models: {"average"}) and the pooled features.

    LookupViT's features are its pooled compressed and lookup tokens concatenated (B, 2D): both
    heads are trained on them, so a probe or a distance sees everything the heads see.
    """
    if isinstance(model, LookupViT):
        output = model.forward_features(images, grid=grid)
        logits = {"compressed": output.compressed_logits, "lookup": output.lookup_logits, "average": output.logits}
        return logits, torch.cat([output.compressed_pooled, output.lookup_pooled], dim=1)
    output = model.forward_features(images)
    return {"average": output.logits}, output.pooled


def fold_views(model: nn.Module, inputs: Tensor) -> tuple[Tensor, int]:
    """(inputs with any views folded into the batch, views per sample): (B, V, ...) -> (B*V, ...), V."""
    sample_ndim = 5 if isinstance(model, VideoInput) else 4  # (B, C, T, H, W) clips or (B, C, H, W) images
    if inputs.ndim == sample_ndim + 1:
        return inputs.flatten(0, 1), inputs.shape[1]
    return inputs, 1


def view_averaged_logits(model: nn.Module, inputs: Tensor, grid, views: int) -> dict[str, Tensor]:
    """Every head's logits (float32) per sample: the mean over the sample's `views` consecutive rows of `inputs`."""
    logits, _ = logits_and_features(model, inputs, grid)
    return {head: values.float().unflatten(0, (-1, views)).mean(dim=1) for head, values in logits.items()}


def input_cost(model: nn.Module, view_shape: tuple[int, ...]) -> tuple[tuple[int, ...], tuple[int, int], int | None]:
    """(lookup grid, image size, frames or None) of one view (C, H, W) or (C, T, H, W): what grids and FLOPs depend on."""
    pixels = view_shape[1:]  # (H, W) or (T, H, W)
    lookup_grid = tuple(size // kernel for size, kernel in zip(pixels, model.config.patch_kernel))
    return lookup_grid, tuple(pixels[-2:]), pixels[0] if len(pixels) == 3 else None


@torch.no_grad()
def evaluate(model: nn.Module, batches: Iterable[tuple[Tensor, Tensor]], grids: list, device: torch.device, amp: bool = False) -> list[dict]:
    """One row per grid: {"grid", "gflops", "views", "<head>": {"top1", "top5"}} for each head (ViT: "average" only).

    `batches` yields (normalised inputs, labels), e.g. data.loader.dataset_batches for a dataset in
    memory or data.loader.EvalBatches for a streamed one; it is read once, every grid per batch.
    Inputs are images (B, C, H, W), clips (B, C, T, H, W) for the video models, or V views of each
    sample (B, V, C, ...): those run as one batch of B*V and each sample scores its logits averaged
    over its views. "gflops" is the cost of one view (ViViT's GFLOPs/view); a sample costs views x that.
    """
    model.eval()
    is_lookup = isinstance(model, LookupViT)
    grids = grids if is_lookup else [None]
    correct: list[dict[str, list[int]]] = [{} for _ in grids]
    count, view_shape, views = 0, None, None
    for inputs, labels in batches:
        inputs, labels = inputs.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        inputs, views = fold_views(model, inputs)
        count, view_shape = count + len(labels), tuple(inputs.shape[1:])
        for grid, grid_correct in zip(grids, correct):
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                logits = view_averaged_logits(model, inputs, grid, views)
            for head, values in logits.items():
                counts = grid_correct.setdefault(head, [0, 0])
                counts[0] += _topk_correct(values, labels, 1)
                counts[1] += _topk_correct(values, labels, 5)
    if count == 0:
        raise ValueError("nothing to evaluate: the evaluation data is empty")
    lookup_grid, image_size, num_frames = input_cost(model, view_shape)
    rows = []
    for grid, grid_correct in zip(grids, correct):
        resolved = model.resolve_grid(grid, lookup_grid) if is_lookup else None
        flops = analytic_flops(model.config, image_size, resolved, num_frames=num_frames)
        row = {"grid": list(resolved) if resolved else None, "gflops": flops / 1e9, "views": views}
        row.update({head: {"top1": c1 / count, "top5": c5 / count} for head, (c1, c5) in grid_correct.items()})
        rows.append(row)
    return rows


def grid_label(grid: tuple[int, ...] | list[int] | None) -> str:
    """An evaluation row's grid as "3x3" (images) or "4x4x4" (video, t x h x w), or "-" for models without one (ViT)."""
    return "x".join(map(str, grid)) if grid else "-"


def format_table(rows: list[dict]) -> str:
    """Markdown table: grid, GFLOPs, top-1/top-5 per head; with several views per sample, GFLOPs per view and the views."""
    heads = [head for head in HEADS if head in rows[0]]
    multi_view = any(row.get("views", 1) != 1 for row in rows)
    cost = "GFLOPs/view | views" if multi_view else "GFLOPs"
    header = f"| grid | {cost} | " + " | ".join(f"{h} top-1 | {h} top-5" for h in heads) + " |"
    lines = [header, "|" + "---|" * (2 + multi_view + 2 * len(heads))]
    for row in rows:
        cells = " | ".join(f"{100 * row[h]['top1']:.2f} | {100 * row[h]['top5']:.2f}" for h in heads)
        flops = f"{row['gflops']:.3f} | {row.get('views', 1)}" if multi_view else f"{row['gflops']:.3f}"
        lines.append(f"| {grid_label(row['grid'])} | {flops} | {cells} |")
    return "\n".join(lines)
