"""Throughput of LookupViT against ViT, measured in one process so the ratios survive a noisy machine.

Each timed call alternates the two models (ViT, then every LookupViT grid) inside one loop, and
reports the median, so a burst of load elsewhere hits both sides alike.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from .flops import analytic_flops
from .models import LookupViT
from .registry import create_model


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def autocast(device: torch.device, dtype: torch.dtype) -> contextlib.AbstractContextManager:
    """bf16/fp16 autocast on the device, or nothing for fp32."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def gemm_peak(device: torch.device, dtype: torch.dtype, size: int = 2048, reps: int = 5) -> float:
    """Best FLOP/s of a square matmul: the ceiling a transformer made of GEMMs can approach."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    best = float("inf")
    for _ in range(reps + 1):
        synchronize(device)
        start = time.perf_counter()
        torch.mm(a, b)
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def median_times(calls: dict[str, Callable[[], object]], device: torch.device, reps: int, warmup: int = 1) -> dict[str, float]:
    """Median seconds per call for each named callable, the callables interleaved rep by rep."""
    samples: dict[str, list[float]] = {name: [] for name in calls}
    for rep in range(warmup + reps):
        for name, call in calls.items():
            synchronize(device)
            start = time.perf_counter()
            call()
            synchronize(device)
            if rep >= warmup:
                samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in samples.items()}


@dataclass
class Row:
    image_size: int
    dtype: str
    batch: int
    model: str
    grid: str
    images_per_s: float
    gflops: float  # per image, FLOPs = 2 x MACs
    speedup: float  # images/s relative to ViT in the same loop
    flops_ratio: float  # ViT FLOPs / this model's FLOPs
    mfu: float  # achieved FLOP/s / GEMM peak of the same dtype


def inference_rows(
    size: str,
    image_sizes: list[int],
    grids: list[int],
    dtypes: list[torch.dtype],
    batch: int,
    reps: int,
    device: torch.device,
    peaks: dict[torch.dtype, float],
) -> Iterator[Row]:
    """Rows of the inference table, one image size and dtype at a time (models rebuilt per size)."""
    for image_size in image_sizes:
        torch.manual_seed(0)
        vit = create_model(f"vit_{size}", img_size=image_size).to(device).eval()
        lookup = create_model(f"lookupvit_{size}", img_size=image_size).to(device).eval()
        assert isinstance(lookup, LookupViT)
        images = torch.randn(batch, 3, image_size, image_size, device=device)
        flops = {"ViT": analytic_flops(vit.config)}
        flops.update({f"{g}x{g}": analytic_flops(lookup.config, grid=g) for g in grids})
        for dtype in dtypes:

            def run(model, **kwargs):
                def call():
                    with torch.inference_mode(), autocast(device, dtype):
                        model(images, **kwargs)

                return call

            calls = {"ViT": run(vit)}
            calls.update({f"{g}x{g}": run(lookup, grid=g) for g in grids})
            times = median_times(calls, device, reps)
            for name, seconds in times.items():
                throughput = batch / seconds
                yield Row(
                    image_size=image_size,
                    dtype=str(dtype).removeprefix("torch."),
                    batch=batch,
                    model="ViT" if name == "ViT" else "LookupViT",
                    grid="-" if name == "ViT" else name,
                    images_per_s=throughput,
                    gflops=flops[name] / 1e9,
                    speedup=times["ViT"] / seconds,
                    flops_ratio=flops["ViT"] / flops[name],
                    mfu=throughput * flops[name] / peaks[dtype],
                )


def format_row(row: Row) -> str:
    return (
        f"| {row.image_size} | {row.dtype} | {row.batch} | {row.model} | {row.grid} | {row.images_per_s:8.2f} | "
        f"{row.gflops:6.1f} | {row.speedup:5.2f}x | {row.flops_ratio:5.2f}x | {100 * row.mfu:4.0f}% |"
    )


TABLE_HEADER = (
    "| px | dtype | batch | model | grid | images/s | GFLOPs | speedup vs ViT | FLOPs ratio | MFU |\n"
    "|---|---|---|---|---|---|---|---|---|---|"
)
