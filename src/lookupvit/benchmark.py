"""Speed and memory of LookupViT against ViT, measured in one process so the ratios survive a noisy machine.

Each timed call alternates the contenders (ViT, then every LookupViT grid) inside one loop and
reports the median, so a burst of load elsewhere hits every side alike. Peak training memory is
measured in a fresh child process per model, so one model's allocations never count against
another's, in two ways: what the process holds (peak RSS on CPU, the caching allocator's reserved
peak on CUDA) and what the tensors occupy (freed memory returned at once on CPU, the allocator's
allocated peak on CUDA).
"""

from __future__ import annotations

import contextlib
import copy
import ctypes
import ctypes.util
import multiprocessing
import statistics
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from .layers import Linear, _onednn_linear_applies, pack_for_inference
from .models.flops import analytic_flops
from .models.registry import create_model
from .runtime import compile_model
from .training.config import TrainConfig
from .training.engine import ClassificationLoss, build_optimizer


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def autocast(device: torch.device, dtype: torch.dtype) -> contextlib.AbstractContextManager:
    """bf16/fp16 autocast on the device, or nothing for fp32."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def gemm_peak(device: torch.device, dtype: torch.dtype, size: int = 2048, reps: int = 5) -> float:
    """Best FLOP/s of a square GEMM: the ceiling a transformer made of GEMMs can approach.

    Timed both through torch.mm and through the library's Linear, whose fp32 CPU inference runs on
    oneDNN rather than torch's default BLAS: the faster of the two is what the machine can do.
    """
    layer = Linear(size, size, bias=False, device=device, dtype=dtype)
    inputs = torch.randn(size, size, device=device, dtype=dtype)
    best = float("inf")
    with torch.inference_mode():
        gemms = [lambda: torch.mm(inputs, layer.weight)]
        if _onednn_linear_applies(inputs, layer.weight):  # elsewhere the layer runs that same torch GEMM
            gemms.append(lambda: layer(inputs))
        for gemm in gemms:
            for _ in range(reps + 1):
                synchronize(device)
                start = time.perf_counter()
                gemm()
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


# --------------------------------------------------------------------------------------------
# Contenders: ViT, LookupViT at each grid, timm's ViT when it can be imported
# --------------------------------------------------------------------------------------------


@dataclass
class Contender:
    label: str  # "ViT", "timm ViT", or the LookupViT grid "5x5"
    model: nn.Module
    grid: int | None  # LookupViT's compressed grid; None for the ViTs
    flops: int  # forward FLOPs of one image (2 x MACs) in the paper's evaluation order
    executed_flops: int  # what the model actually runs in fp32 (MHBC may take the cheaper, reassociated order)
    executed_flops_16bit: int | None = None  # the same with bf16/fp16 products, whose order can differ (None: as fp32)

    def executed(self, dtype: str) -> int:
        """Executed FLOPs for a row's dtype column ("float32", "bfloat16", "bfloat16 weights", ...)."""
        if dtype.startswith(("float32", "float64")) or self.executed_flops_16bit is None:
            return self.executed_flops
        return self.executed_flops_16bit


def lookupvit_contender(label: str, model: nn.Module, grid: int | tuple[int, ...]) -> Contender:
    """LookupViT at `grid`, with its FLOPs in the paper's order and as executed in fp32 and in 16-bit."""
    def count(**order) -> int:
        return analytic_flops(model.config, grid=grid, **order)

    return Contender(label, model, grid, count(), count(reassociated=None), count(reassociated=None, dtype=torch.bfloat16))


def timm_vit(size: str, image_size: int) -> nn.Module | None:
    """timm's ViT of the same size with a GAP head, or None when timm (an optional extra) cannot be imported; the bench says so."""
    try:
        import timm
    except Exception:  # ImportError, or torchvision failing inside timm's import
        return None
    names = {"ti16": "vit_tiny_patch16_224", "s16": "vit_small_patch16_224", "b16": "vit_base_patch16_224", "l16": "vit_large_patch16_224"}
    if size not in names:
        return None
    return timm.create_model(names[size], pretrained=False, img_size=image_size, global_pool="avg", class_token=False, fc_norm=False)


def contenders(size: str, image_size: int, grids: list[int], device: torch.device, with_timm: bool = True) -> list[Contender]:
    torch.manual_seed(0)
    vit = create_model(f"vit_{size}", img_size=image_size).to(device)
    # Every call names its grid; the default grid only has to fit small images' lookup grids.
    lookup = create_model(f"lookupvit_{size}", img_size=image_size, compressed_grid=min(grids)).to(device)
    vit_flops = analytic_flops(vit.config)
    found = [Contender("ViT", vit, None, vit_flops, vit_flops)]
    reference = timm_vit(size, image_size) if with_timm else None
    if reference is not None:
        found.append(Contender("timm ViT", reference.to(device), None, vit_flops, vit_flops))
    found += [lookupvit_contender(f"{g}x{g}", lookup, g) for g in grids]
    return found


# --------------------------------------------------------------------------------------------
# Rows
# --------------------------------------------------------------------------------------------


@dataclass
class Row:
    mode: str  # "inference" or "train step"
    image_size: int
    dtype: str
    batch: int
    model: str
    grid: str
    images_per_s: float
    ms_per_batch: float
    gflops: float  # per image and pass, paper order: forward FLOPs, x3 for a training step (backward ~ 2x forward)
    executed_gflops: float  # the same for the FLOPs the model executes
    speedup: float  # images/s relative to ViT in the same loop
    flops_ratio: float  # ViT FLOPs / this model's FLOPs (paper order, as in the paper's tables)
    mfu: float  # executed FLOP/s / GEMM peak of the same dtype


def dtype_label(dtype: torch.dtype, cast_weights: bool = False) -> str:
    """A row's dtype column: "float32", "bfloat16" (autocast) or "bfloat16 weights" (model cast)."""
    return str(dtype).removeprefix("torch.") + (" weights" if cast_weights else "")


def timing_rows(mode: str, image_size: int, dtype: str, batch: int, found: list[Contender], times: dict[str, float], peak: float, passes: int) -> Iterator[Row]:
    vit = found[0]
    for contender in found:
        seconds = times[contender.label]
        throughput = batch / seconds
        yield Row(
            mode=mode,
            image_size=image_size,
            dtype=dtype,
            batch=batch,
            model="LookupViT" if contender.grid else contender.label,
            grid=contender.label if contender.grid else "-",
            images_per_s=throughput,
            ms_per_batch=1000 * seconds,
            gflops=passes * contender.flops / 1e9,
            executed_gflops=passes * contender.executed(dtype) / 1e9,
            speedup=times[vit.label] / seconds,
            flops_ratio=vit.flops / contender.flops,
            mfu=throughput * passes * contender.executed(dtype) / peak,
        )


def cast_contenders(found: list[Contender], dtype: torch.dtype) -> list[Contender]:
    """The contenders with copies of their models cast to `dtype`; LookupViT's grids share one copy."""
    copies: dict[int, nn.Module] = {}
    for contender in found:
        if id(contender.model) not in copies:
            copies[id(contender.model)] = copy.deepcopy(contender.model).to(dtype)
    return [replace(contender, model=copies[id(contender.model)]) for contender in found]


def inference_rows(
    found: list[Contender], image_size: int, dtype: torch.dtype, batch: int, reps: int, device: torch.device, peak: float, cast_weights: bool = False
) -> Iterator[Row]:
    """Inference rows under autocast to `dtype`, or with `cast_weights` on copies of the models cast
    to it (`model.to(dtype)`), which spares autocast's per-call casts of weights and activations."""
    if cast_weights:
        found = cast_contenders(found, dtype)
    images = torch.randn(batch, found[0].model.config.in_chans, image_size, image_size, device=device, dtype=dtype if cast_weights else torch.float32)
    autocast_dtype = torch.float32 if cast_weights else dtype

    def forward(contender: Contender) -> Callable[[], object]:
        kwargs = {"grid": contender.grid} if contender.grid else {}

        def call():
            with torch.inference_mode(), autocast(device, autocast_dtype):
                contender.model(images, **kwargs)

        return call

    for model in {id(contender.model): contender.model for contender in found}.values():
        pack_for_inference(model.eval())  # weights laid out once, as a deployment would run them
    # Small batches give short calls, whose medians swing most with load elsewhere on a shared
    # machine: up to 5x the calls, which still costs less time than batch 16's.
    calls = reps * min(5, max(1, 16 // batch))
    times = median_times({c.label: forward(c) for c in found}, device, calls)
    yield from timing_rows("inference", image_size, dtype_label(dtype, cast_weights), batch, found, times, peak, passes=1)


def training_step(
    model: nn.Module, grid: int | None, device: torch.device, dtype: torch.dtype, compile_backend: str | None = None, graphs: int = 1
) -> Callable[[torch.Tensor, torch.Tensor], None]:
    """One optimizer step as training does it: both heads' CE for LookupViT, backward, AdamW.

    Blocks are recomputed in backward when the model's grad checkpointing is on. With
    `compile_backend`, the loss wrapper is compiled as `compile=true` training compiles it, with room
    for `graphs` graphs.
    """
    loss_fn = ClassificationLoss(model, 1.0, 1.0, label_smoothing=0.0)
    if compile_backend is not None:
        loss_fn = compile_model(loss_fn, num_grids=graphs, backend=compile_backend)
    optimizer = build_optimizer(model, TrainConfig(lr=1e-4))
    grid_arg = (grid, grid) if grid else None

    def step(images: torch.Tensor, targets: torch.Tensor) -> None:
        optimizer.zero_grad(set_to_none=True)
        with autocast(device, dtype):
            loss, _ = loss_fn(images, targets, grid_arg)
        loss.backward()
        optimizer.step()

    return step


def random_batch(batch: int, image_size: int, model: nn.Module, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    images = torch.randn(batch, model.config.in_chans, image_size, image_size, device=device)
    num_classes = model.config.num_classes
    return images, F.one_hot(torch.arange(batch, device=device) % num_classes, num_classes).float()


def training_rows(
    found: list[Contender], image_size: int, dtype: torch.dtype, batch: int, reps: int, device: torch.device, peak: float, grad_checkpointing: bool = False
) -> Iterator[Row]:
    """Training-step rows; with `grad_checkpointing`, every model (ViT too) recomputes its blocks in backward.

    FLOPs and MFU count the useful 3x forward, not the recomputed forward, so MFU shows the cost.
    """
    images, targets = random_batch(batch, image_size, found[0].model, device)
    calls = {}
    for contender in found:
        step = training_step(contender.model.train(), contender.grid, device, dtype)
        calls[contender.label] = lambda step=step: step(images, targets)
    for contender in found:
        contender.model.set_grad_checkpointing(grad_checkpointing)
    try:
        times = median_times(calls, device, reps)
    finally:
        for contender in found:
            contender.model.set_grad_checkpointing(False)
    yield from timing_rows("train step, grad ckpt" if grad_checkpointing else "train step", image_size, dtype_label(dtype), batch, found, times, peak, passes=3)


# --------------------------------------------------------------------------------------------
# Peak memory of a training step, one fresh process per model
# --------------------------------------------------------------------------------------------


def _status_bytes(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024  # reported in kB
    raise RuntimeError(f"/proc/self/status has no {field}; peak memory needs Linux on CPU")


def map_freed_memory_back() -> bool:
    """Make glibc give every block of 64 KiB or more its own mapping, unmapped when freed.

    By default glibc keeps freed tensor memory in its heap for reuse, where it still counts in the
    RSS; fragmentation from recomputation (grad checkpointing) made that 1.2 GB of LookupViT-B/16's
    3.7 GB peak at 384 px. With this the RSS follows the bytes the tensors occupy, which is what
    CUDA's allocated peak reports. Process-wide and slower (every large tensor is page-faulted in
    afresh), so only the benchmark's child processes call it. False where the C library is not glibc.
    """
    libc_name = ctypes.util.find_library("c")
    mallopt = getattr(ctypes.CDLL(libc_name), "mallopt", None) if libc_name else None
    m_mmap_threshold = -3  # glibc's <malloc.h>
    return mallopt is not None and mallopt(m_mmap_threshold, 64 * 1024) == 1


def _peak_training_memory_child(
    name: str, image_size: int, grid: int | None, batch: int, dtype_name: str, device_name: str, grad_checkpointing: bool, tensors_only: bool
) -> int | None:
    device, dtype = torch.device(device_name), getattr(torch, dtype_name)
    if device.type == "cpu":
        if tensors_only and not map_freed_memory_back():
            return None
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")  # reset the peak-RSS mark, so importing torch does not count
    baseline = _status_bytes("VmRSS") if device.type == "cpu" else 0
    grid_setting = {"compressed_grid": grid} if grid else {}  # the default grid may not fit a small image
    model = create_model(name, img_size=image_size, **grid_setting).to(device).train()
    model.set_grad_checkpointing(grad_checkpointing)
    step = training_step(model, grid, device, dtype)
    # A batch of one first creates AdamW's state cheaply, so the measured step holds weights,
    # gradients, optimizer state and activations at once, as every later step of a run does.
    step(*random_batch(1, image_size, model, device))
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    step(*random_batch(batch, image_size, model, device))
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) if tensors_only else torch.cuda.max_memory_reserved(device)
    return _status_bytes("VmHWM") - baseline


def peak_training_memory(
    name: str, image_size: int, grid: int | None, batch: int, dtype: torch.dtype, device: torch.device, grad_checkpointing: bool = False, tensors_only: bool = False
) -> int | None:
    """Peak bytes of one training step of a registered model (weights, grads, AdamW state, activations).

    `grad_checkpointing`: each block recomputed in backward instead of keeping its activations.
    `tensors_only=False`: what the process holds at its peak, freed memory the allocator keeps
    included (CPU: peak RSS above what the process held after importing torch; CUDA: the caching
    allocator's reserved peak). `tensors_only=True`: the bytes the tensors occupy at the peak (CPU:
    the same RSS with freed memory returned at once, see `map_freed_memory_back`, None where that
    is not possible; CUDA: the allocated peak).
    """
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        job = pool.submit(
            _peak_training_memory_child, name, image_size, grid, batch, str(dtype).removeprefix("torch."), str(device), grad_checkpointing, tensors_only
        )
        return job.result()


def format_row(row: Row) -> str:
    return (
        f"| {row.mode} | {row.image_size} | {row.dtype} | {row.batch} | {row.model} | {row.grid} | {row.images_per_s:8.2f} | "
        f"{row.ms_per_batch:8.1f} | {row.gflops:7.3g} | {row.executed_gflops:7.3g} | {row.speedup:5.2f}x | {row.flops_ratio:5.2f}x | {100 * row.mfu:4.0f}% |"
    )


TABLE_HEADER = (
    "| pass | px | dtype | batch | model | grid | images/s | ms/batch | GFLOPs (paper) | GFLOPs (executed) | speedup vs ViT | FLOPs ratio | MFU |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
)
