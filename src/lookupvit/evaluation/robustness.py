"""Robustness to corruptions: accuracy per corruption and severity, mCE, and feature deviation.

Feature deviation is the paper's ||F(x) - F(x_c)|| / ||F(x)|| on the pooled features (LookupViT: both
pooled token sets, concatenated), per image, summarised per severity as a mean and a histogram.
Mean corruption error follows Hendrycks & Dietterich: per corruption, the errors summed over the
five severities divided by the same sum for a baseline model, then averaged over corruptions.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .accuracy import logits_and_features

DEVIATION_BINS = torch.linspace(0.0, 2.0, 81)  # fixed bins, so histograms of different models line up


@torch.no_grad()
def _predictions_and_features(model: nn.Module, images: Tensor, normalization, grid, head: str, batch_size: int, device: torch.device) -> tuple[Tensor, Tensor]:
    predictions, features = [], []
    for start in range(0, len(images), batch_size):
        batch = normalization(images[start : start + batch_size].to(device))
        logits, pooled = logits_and_features(model, batch, grid)
        predictions.append(logits[head].argmax(dim=-1).cpu())
        features.append(pooled.float().cpu())
    return torch.cat(predictions), torch.cat(features)


def corruption_results(
    model: nn.Module,
    clean_images: Tensor,
    labels: Tensor,
    corrupted: dict[tuple[str, int], Tensor],
    normalization,
    device: torch.device,
    grid: int | tuple[int, int] | None = None,
    head: str = "average",
    batch_size: int = 500,
) -> dict:
    """{"clean": top-1, "accuracy": {corruption: {severity: top-1}}, "deviation": {severity: {"mean", "histogram"}}}."""
    model.eval()
    clean_predictions, clean_features = _predictions_and_features(model, clean_images, normalization, grid, head, batch_size, device)
    accuracy: dict[str, dict[int, float]] = {}
    deviations: dict[int, list[Tensor]] = {}
    for (name, severity), images in corrupted.items():
        if images.shape != clean_images.shape:
            raise ValueError(f"corrupted set {name}/{severity} has shape {tuple(images.shape)}, the clean images {tuple(clean_images.shape)}")
        predictions, features = _predictions_and_features(model, images, normalization, grid, head, batch_size, device)
        accuracy.setdefault(name, {})[severity] = (predictions == labels).float().mean().item()
        deviation = (features - clean_features).norm(dim=1) / clean_features.norm(dim=1).clamp_min(1e-12)
        deviations.setdefault(severity, []).append(deviation)
    summary = {}
    for severity, parts in sorted(deviations.items()):
        values = torch.cat(parts)
        histogram = torch.histogram(values.clamp(max=DEVIATION_BINS[-1].item()), bins=DEVIATION_BINS).hist
        summary[severity] = {"mean": values.mean().item(), "median": values.median().item(), "histogram": histogram.tolist()}
    return {"clean": (clean_predictions == labels).float().mean().item(), "accuracy": accuracy, "deviation": summary}


def mean_accuracy_per_severity(accuracy: dict[str, dict[int, float]]) -> dict[int, float]:
    severities = sorted({severity for per_severity in accuracy.values() for severity in per_severity})
    return {s: sum(per_severity[s] for per_severity in accuracy.values()) / len(accuracy) for s in severities}


def mean_corruption_error(accuracy: dict[str, dict[int, float]], baseline: dict[str, dict[int, float]] | None = None) -> float:
    """mCE: errors summed over severities, divided by the baseline's (if given), averaged over corruptions."""
    errors = []
    for name, per_severity in accuracy.items():
        error = sum(1 - value for value in per_severity.values())
        if baseline is not None:
            error /= max(sum(1 - value for value in baseline[name].values()), 1e-12)
        else:
            error /= len(per_severity)
        errors.append(error)
    return sum(errors) / len(errors)
