"""A compute-budget dial: the largest compressed grid whose cost fits a budget in GFLOPs or milliseconds.

One trained LookupViT serves every grid, so the grid is chosen at inference. Candidates are the
square grids 1x1 ... kxk that fit the lookup grid (video: the default grid's frame count with
square hp = wp), cheapest first; cost grows with the grid, so the largest candidate under the budget
is the most accurate one the budget buys (accuracy per grid of a trained model: docs/budget.md).
"""

from __future__ import annotations

import statistics
import time

import torch
from torch import Tensor

from .flops import analytic_flops
from .lookupvit import LookupViT, LookupViTConfig


def candidate_grids(config: LookupViTConfig, image_size: tuple[int, int] | None = None) -> list[tuple[int, ...]]:
    """Square grids that fit the lookup grid of `image_size` (default: the config's), smallest first."""
    height, width = config.img_size if image_size is None else image_size
    side = min(height, width) // config.patch_size
    frames = config.compressed_grid[:-2]  # () for images, (tp,) for video
    return [(*frames, k, k) for k in range(1, side + 1)]


def grid_for_gflops(config: LookupViTConfig, gflops: float, image_size: tuple[int, int] | None = None) -> tuple[int, ...]:
    """The largest candidate grid whose analytic cost (GFLOPs per image, 2 x MACs) is at most `gflops`."""
    costs = [(grid, analytic_flops(config, image_size, grid) / 1e9) for grid in candidate_grids(config, image_size)]
    return _largest_within(costs, gflops, "GFLOPs per image")


@torch.no_grad()
def grid_for_milliseconds(model: LookupViT, images: Tensor, milliseconds: float, reps: int = 5) -> tuple[tuple[int, ...], dict]:
    """The largest candidate grid whose median forward time on `images` (this device, this batch) is at most `milliseconds`.

    Returns the grid and every candidate's measured milliseconds, timed cheapest first and stopped
    at the first grid over the budget (cost grows with the grid).
    """
    model.eval()
    image_size = tuple(images.shape[-2:])
    timings: dict[tuple[int, ...], float] = {}
    for grid in candidate_grids(model.config, image_size):
        timings[grid] = _median_milliseconds(model, images, grid, reps)
        if timings[grid] > milliseconds:
            break
    return _largest_within(list(timings.items()), milliseconds, f"ms per batch of {len(images)}"), timings


def _median_milliseconds(model: LookupViT, images: Tensor, grid: tuple[int, ...], reps: int) -> float:
    model(images, grid=grid)  # warm-up: caches the resize matrix, wakes the allocator
    times = []
    for _ in range(reps):
        if images.device.type == "cuda":
            torch.cuda.synchronize(images.device)
        start = time.perf_counter()
        model(images, grid=grid)
        if images.device.type == "cuda":
            torch.cuda.synchronize(images.device)
        times.append(1000 * (time.perf_counter() - start))
    return statistics.median(times)


def _largest_within(costs: list[tuple[tuple[int, ...], float]], budget: float, unit: str) -> tuple[int, ...]:
    if budget <= 0:
        raise ValueError(f"the budget must be positive, got {budget} {unit}")
    fitting = [grid for grid, cost in costs if cost <= budget]
    if not fitting:
        cheapest_grid, cheapest = costs[0]
        label = "x".join(map(str, cheapest_grid))
        raise ValueError(f"no compressed grid fits {budget:g} {unit}: the cheapest, {label}, costs {cheapest:.3g}; raise the budget")
    return fitting[-1]
