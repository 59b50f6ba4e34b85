"""Accuracy of every head at every compressed grid, with the FLOPs each grid costs."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn

from ..models import LookupViT
from ..models.flops import analytic_flops

HEADS = ("compressed", "lookup", "average")


def _topk_correct(logits: Tensor, labels: Tensor, k: int) -> int:
    k = min(k, logits.shape[-1])
    return (logits.topk(k, dim=-1).indices == labels[:, None]).any(dim=-1).sum().item()


def logits_and_features(model: nn.Module, images: Tensor, grid: int | tuple[int, int] | None) -> tuple[dict[str, Tensor], Tensor]:
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


@torch.no_grad()
def evaluate(model: nn.Module, batches: Iterable[tuple[Tensor, Tensor]], grids: list, device: torch.device, amp: bool = False) -> list[dict]:
    """One row per grid: {"grid", "gflops", "<head>": {"top1", "top5"}} for each head (ViT: "average" only).

    `batches` yields (normalised images, labels), e.g. data.loader.dataset_batches for a dataset in
    memory or data.loader.EvalBatches for a streamed one; it is read once, every grid per batch.
    """
    model.eval()
    is_lookup = isinstance(model, LookupViT)
    grids = grids if is_lookup else [None]
    correct: list[dict[str, list[int]]] = [{} for _ in grids]
    count, image_size = 0, None
    for images, labels in batches:
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        count, image_size = count + len(labels), tuple(images.shape[-2:])
        for grid, grid_correct in zip(grids, correct):
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                logits, _ = logits_and_features(model, images, grid)
            for head, values in logits.items():
                counts = grid_correct.setdefault(head, [0, 0])
                counts[0] += _topk_correct(values.float(), labels, 1)
                counts[1] += _topk_correct(values.float(), labels, 5)
    if count == 0:
        raise ValueError("nothing to evaluate: the evaluation data is empty")
    rows = []
    for grid, grid_correct in zip(grids, correct):
        lookup_grid = (image_size[0] // model.config.patch_size, image_size[1] // model.config.patch_size)
        resolved = model.resolve_grid(grid, lookup_grid) if is_lookup else None
        row = {"grid": list(resolved) if resolved else None, "gflops": analytic_flops(model.config, image_size, resolved) / 1e9}
        row.update({head: {"top1": c1 / count, "top5": c5 / count} for head, (c1, c5) in grid_correct.items()})
        rows.append(row)
    return rows


def grid_label(grid: tuple[int, ...] | list[int] | None) -> str:
    """An evaluation row's grid as "3x3", or "-" for models without one (ViT)."""
    return "x".join(map(str, grid)) if grid else "-"


def format_table(rows: list[dict]) -> str:
    """Markdown table: grid, GFLOPs, top-1/top-5 per head."""
    heads = [head for head in HEADS if head in rows[0]]
    header = "| grid | GFLOPs | " + " | ".join(f"{h} top-1 | {h} top-5" for h in heads) + " |"
    lines = [header, "|" + "---|" * (2 + 2 * len(heads))]
    for row in rows:
        cells = " | ".join(f"{100 * row[h]['top1']:.2f} | {100 * row[h]['top5']:.2f}" for h in heads)
        lines.append(f"| {grid_label(row['grid'])} | {row['gflops']:.3f} | {cells} |")
    return "\n".join(lines)
