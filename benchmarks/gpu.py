"""One GPU, one command, under 5 minutes: loader, training and inference throughput as markdown tables.

    .venv/bin/python benchmarks/gpu.py [--out docs/gpu-DATE.md]   # on a CUDA machine (benchmarks/gpu.sh wraps it)
    .venv/bin/python benchmarks/gpu.py --quick                    # CPU smoke test: nano models at 28 px

It prints the GPU, torch and a bf16 / fp32 GEMM peak measured in this process, then
  (a) images/s of the streamed training pipeline (JPEG decode, RandomResizedCrop, flip, RandAugment
      medium2, normalise, as configs/imagenet1k-*.toml) per DataLoader worker count, on a
      synthetic ImageNet-style tree of JPEGs written to a temporary folder;
  (b) training-step images/s (forward + backward + AdamW, bf16 autocast) of ViT-B/16 and
      LookupViT-B/16 at grids 3, 5, 7, eager and torch.compile'd, with speedup over ViT, FLOPs
      ratio and MFU against the measured bf16 GEMM peak; and how many loader workers each needs;
  (c) inference images/s (bf16 autocast, batch 16 and 1, 224 and 384 px), eager and compiled,
      speedup next to FLOPs ratio.

Every timing is a median of a few calls after a few warm-up calls, the contenders interleaved call
by call (lookupvit.benchmark.median_times, CUDA synchronised around each call). Compiling is the
slow part: before each compile the script checks that the time it expects it to take is left in
--budget, and marks the cells it had to skip. A SIGTERM (benchmarks/gpu.sh's timeout) stops the
measuring and still prints, and writes, every table measured so far.
"""

from __future__ import annotations

import time

STARTED = time.monotonic()  # the time budget counts the imports below too (torch's takes seconds)

import argparse
import dataclasses
import datetime
import functools
import math
import platform
import shlex
import shutil
import signal
import sys
import tempfile
import traceback
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from lookupvit import benchmark
from lookupvit.benchmark import (
    Contender,
    Row,
    autocast,
    contenders,
    gemm_peak,
    inference_rows,
    median_times,
    synchronize,
    training_step,
)
from lookupvit.data.loader import BatchPlan, StreamedTrainingBatches
from lookupvit.data.sources import open_image_tree
from lookupvit.data.transforms import NORMALIZATIONS, train_transform
from lookupvit.runtime import available_cores, compile_model, pick_device
from lookupvit.training.config import load_config

REPO = Path(__file__).resolve().parents[1]
# The data pipeline measured in (a) is the one the ImageNet runs use: crop scale, RandAugment preset, normalisation.
TRAINING_CONFIG = REPO / "configs" / "imagenet1k-lookupvit-b16.toml"
DTYPE = torch.bfloat16
JPEG_SIZE = (375, 500)  # (height, width): a typical ImageNet photo
JPEG_QUALITY = 90
JPEG_CLASSES = 8
# Grain added to every synthetic image: smooth upscaled pictures compress (and decode) far more easily
# than photos; with this the Fashion-MNIST files come to about half ImageNet's mean size.
GRAIN_STD = 10
# ILSVRC-2012 train: 138 GB in 1,281,167 JPEGs, about 110 KB each; the synthetic files are compared with it.
IMAGENET_MEAN_JPEG_KB = 110
# What one compile is expected to cost before any has been timed: whole-model inductor compiles of a
# B/16 on a cold cache. Later estimates are the longest compile of the same kind seen so far.
FIRST_COMPILE_GUESS_S = {"train step": 60.0, "inference": 30.0}


@dataclasses.dataclass(frozen=True)
class Settings:
    size: str  # the registry size shared by vit_* and lookupvit_*: "b16", "nano4"
    train_px: int
    train_batch: int
    inference_px: tuple[int, ...]
    inference_batches: tuple[int, ...]
    grids: tuple[int, ...]
    workers: tuple[int, ...]  # loader worker counts, capped at the cores later
    loader_batch: int
    loader_rounds: int  # timed batches per worker, after one warm-up batch per worker
    jpegs: int
    warmup: int
    reps: int
    gemm_size: int


FULL = Settings(
    size="b16",
    train_px=224,
    train_batch=128,  # the per-GPU micro-batch of configs/imagenet1k-*.toml (8 GPUs x 128 x 4 accumulation steps)
    inference_px=(224, 384),
    inference_batches=(16, 1),
    grids=(3, 5, 7),
    workers=(1, 2, 4, 8, 16),
    loader_batch=64,  # images/s hardly depends on it; 128 would put 4 GB of prefetched batches in shared memory at 16 workers
    loader_rounds=4,
    jpegs=512,
    warmup=3,
    reps=5,
    gemm_size=8192,
)
QUICK = Settings(
    size="nano4",
    train_px=28,
    train_batch=4,
    inference_px=(28,),
    inference_batches=(4, 1),
    grids=(3, 5, 7),
    workers=(1,),
    loader_batch=4,
    loader_rounds=2,
    jpegs=16,
    warmup=1,
    reps=2,
    gemm_size=256,
)


class TimeUp(Exception):
    """SIGTERM arrived (the wrapper's timeout): stop measuring, report what was measured."""


TERMINATED = []  # when SIGTERM arrived, for the report: the exception it raises may surface as another (a dead worker)


def raise_time_up(signum, frame) -> None:
    TERMINATED.append(time.monotonic() - STARTED)
    raise TimeUp()


# --------------------------------------------------------------------------------------------
# Time budget
# --------------------------------------------------------------------------------------------


class CompileBudget:
    """Whether one more torch.compile fits in what is left of the run's time budget."""

    def __init__(self, seconds: float):
        self.deadline = STARTED + seconds
        self.longest: dict[str, float] = {}

    def seconds_left(self) -> float:
        return self.deadline - time.monotonic()

    def fits(self, kind: str) -> bool:
        return self.seconds_left() > self.longest.get(kind, FIRST_COMPILE_GUESS_S[kind])

    def record(self, kind: str, seconds: float) -> None:
        self.longest[kind] = max(seconds, self.longest.get(kind, 0.0))


def progress(message: str) -> None:
    """Progress goes to stderr, so stdout (and --out) hold the tables only."""
    print(f"[{time.monotonic() - STARTED:6.1f} s] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# Results: filled in as measurements finish, rendered at the end (or when time is up)
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class LoaderResult:
    workers: int
    images_per_s: float
    batches: int
    seconds: float


@dataclasses.dataclass
class Measured:
    """One contender's eager and compiled rows of one table line; None where not measured."""

    label: str  # the contender's: "ViT" or the grid "5x5"
    model: str  # "ViT" or "LookupViT"
    grid: str  # "-" for ViT
    eager: Row | None = None
    compiled: Row | None = None
    compile_s: float | None = None  # the first compiled call, which compiles
    note: str = ""  # why the compiled cells are empty


@dataclasses.dataclass
class Results:
    header: list[str] = dataclasses.field(default_factory=list)
    loader_notes: list[str] = dataclasses.field(default_factory=list)
    loader: list[LoaderResult] = dataclasses.field(default_factory=list)
    training: dict[str, Measured] = dataclasses.field(default_factory=dict)  # by contender label
    inference: dict[tuple[int, int], dict[str, Measured]] = dataclasses.field(default_factory=dict)  # by (px, batch), then label
    stopped: str = ""  # why measuring ended early
    failures: list[str] = dataclasses.field(default_factory=list)  # sections that raised, with the error


# --------------------------------------------------------------------------------------------
# Header: machine and GEMM peak
# --------------------------------------------------------------------------------------------


def machine_lines(device: torch.device, backend: str) -> list[str]:
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        accelerator = f"{name}, CUDA {torch.version.cuda}"
    else:
        accelerator = f"CPU only ({platform.processor() or platform.machine()}), torch threads {torch.get_num_threads()}"
    return [
        f"device: {accelerator}",
        f"torch {torch.__version__}, {available_cores()} CPU cores for this process, compile backend {backend}",
    ]


def gemm_peaks(device: torch.device, size: int) -> dict[torch.dtype, float]:
    """bf16 and fp32 FLOP/s of a square GEMM, the ceiling MFU is measured against."""
    return {dtype: gemm_peak(device, dtype, size=size) for dtype in (torch.bfloat16, torch.float32)}


def gemm_line(peaks: dict[torch.dtype, float], size: int, device: torch.device) -> str:
    # torch's default keeps fp32 GEMMs in true fp32 on CUDA (no TF32): say which one was measured.
    fp32_kind = f"TF32 {'on' if torch.backends.cuda.matmul.allow_tf32 else 'off'}" if device.type == "cuda" else "fp32"
    return (
        f"GEMM peak (this process, torch.mm {size}^3): bfloat16 {peaks[torch.bfloat16] / 1e12:.3g} TFLOP/s, "
        f"float32 {peaks[torch.float32] / 1e12:.3g} TFLOP/s ({fp32_kind})"
    )


# --------------------------------------------------------------------------------------------
# (a) A synthetic ImageNet-style tree of JPEGs, and the loader's throughput on it
# --------------------------------------------------------------------------------------------


def resize_to_photo(image: torch.Tensor) -> torch.Tensor:
    """uint8 or float (C, h, w) -> float (3, 375, 500) in [0, 255]."""
    image = image.float()
    if image.shape[0] == 1:
        image = image.expand(3, -1, -1)
    return F.interpolate(image[None], size=JPEG_SIZE, mode="bilinear", antialias=True, align_corners=False)[0]


def random_crop(image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A random crop of 60-100% of each side, so the photos repeat less across the files."""
    _, height, width = image.shape
    scale = 0.6 + 0.4 * torch.rand((), generator=generator).item()
    crop_h, crop_w = max(1, int(height * scale)), max(1, int(width * scale))
    top = int(torch.randint(0, height - crop_h + 1, (), generator=generator))
    left = int(torch.randint(0, width - crop_w + 1, (), generator=generator))
    return image[:, top : top + crop_h, left : left + crop_w]


def skimage_photos() -> list[torch.Tensor]:
    """scikit-image's bundled colour sample photos as uint8 (3, H, W); empty without scikit-image."""
    try:
        from skimage import data
    except ImportError:
        return []
    photos = []
    for name in ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry"):
        try:
            array = getattr(data, name)()
        except (OSError, ImportError, ValueError):  # some samples are downloaded on first use, which fails offline
            continue
        if array.ndim == 3 and array.shape[2] == 3:
            photos.append(torch.from_numpy(array.copy()).permute(2, 0, 1))
    return photos


def fashion_mnist_images(count: int) -> torch.Tensor | None:
    """The first `count` Fashion-MNIST test images (1x28x28 uint8), or None where the dataset is not installed."""
    from lookupvit.data import load_fashion_mnist

    try:
        return load_fashion_mnist("test").images[:count]  # finds the Debian package or ~/.cache copy; never downloads
    except (FileNotFoundError, ValueError):
        return None


def smooth_noise(generator: torch.Generator) -> torch.Tensor:
    """Blobs of colour: coarse random noise upsampled, float (3, 375, 500) in [0, 255]."""
    coarse = torch.rand(3, 12, 16, generator=generator) * 255
    return F.interpolate(coarse[None], size=JPEG_SIZE, mode="bicubic", align_corners=False)[0]


def synthetic_photos(count: int, generator: torch.Generator) -> tuple[list[torch.Tensor], str]:
    """`count` float (3, 375, 500) images in [0, 255], and a line saying what they were made from."""
    photos = skimage_photos()
    if photos:
        images = [resize_to_photo(random_crop(photos[i % len(photos)], generator)) for i in range(count)]
        return images, f"random crops of {len(photos)} scikit-image sample photos"
    fashion = fashion_mnist_images(count)
    if fashion is not None:
        # A colour tint per image, so the JPEG's colour planes carry content as a photo's do.
        tints = 0.5 + 0.5 * torch.rand(len(fashion), 3, 1, 1, generator=generator)
        images = [resize_to_photo(image) * tint for image, tint in zip(fashion, tints)]
        return images, "Fashion-MNIST test images upscaled from 28x28 and tinted (scikit-image is not installed)"
    images = [smooth_noise(generator) for _ in range(count)]
    return images, "smooth random noise: neither scikit-image nor Fashion-MNIST is installed here, so these are not photos"


def write_jpeg_tree(root: Path, count: int) -> list[str]:
    """root/{train,val}/<class>/<n>.jpg: `count` training JPEGs of 500x375, one val JPEG per class.

    Returns lines describing the files for the report.
    """
    from torchvision.io import write_jpeg

    generator = torch.Generator().manual_seed(0)
    images, made_from = synthetic_photos(count + JPEG_CLASSES, generator)
    sizes = []
    for index, image in enumerate(images):
        split, number = ("train", index) if index < count else ("val", index - count)
        folder = root / split / f"class_{number % JPEG_CLASSES:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        grain = GRAIN_STD * torch.randn(image.shape, generator=generator)
        pixels = (image + grain).clamp(0, 255).round().to(torch.uint8)
        path = folder / f"{number:05d}.jpg"
        write_jpeg(pixels, str(path), quality=JPEG_QUALITY)
        if split == "train":
            sizes.append(path.stat().st_size)
    mean_kb = sum(sizes) / len(sizes) / 1024
    return [
        f"{count} training JPEGs of {JPEG_SIZE[1]}x{JPEG_SIZE[0]} (quality {JPEG_QUALITY}) in {JPEG_CLASSES} classes, made from {made_from}",
        f"mean JPEG size {mean_kb:.0f} KB (ImageNet's train JPEGs average about {IMAGENET_MEAN_JPEG_KB} KB; smaller files decode faster)",
    ]


def imagenet_transform(image_size: int):
    """The training transform of configs/imagenet1k-lookupvit-b16.toml at `image_size` px."""
    config = load_config(TRAINING_CONFIG)
    mean, std = NORMALIZATIONS[config.normalization]
    transform = train_transform(image_size, mean, std, tuple(config.crop_scale), config.randaugment, config.random_erasing)
    description = (
        f"RandomResizedCrop {image_size} (scale {config.crop_scale[0]}-{config.crop_scale[1]}) + flip + RandAugment {config.randaugment} "
        f"+ normalise ({config.normalization})" + (f" + random erasing {config.random_erasing}" if config.random_erasing else "")
    )
    return transform, description


def shared_memory_note() -> str:
    """Workers hand batches over through /dev/shm; a container's small default (64 MB) makes them fail."""
    try:
        free = shutil.disk_usage("/dev/shm").free
    except OSError:
        return "shared memory: /dev/shm not found"
    return f"shared memory: {free / 2**30:.1f} GiB free in /dev/shm (the workers hand their batches over through it)"


def loader_images_per_s(source, transform, workers: int, batch: int, rounds: int, pin_memory: bool) -> LoaderResult:
    """Images/s of StreamedTrainingBatches with `workers` processes, once each has delivered a batch.

    The first batch per worker is not timed: it includes starting the processes. The plan runs over
    several epochs of the small tree, so the files are re-read (from the page cache).
    """
    plan = BatchPlan(num_images=len(source), batch_size=batch, local_batch=batch, accum_steps=1, world_size=1, rank=0, seed=0)
    warmup_batches, timed_batches = workers, rounds * workers
    batches = StreamedTrainingBatches(
        source, transform, plan, start_step=0, total_steps=warmup_batches + timed_batches, workers=workers, pin_memory=pin_memory
    )
    stream = iter(batches)
    for _ in range(warmup_batches):
        next(stream)
    start = time.perf_counter()
    images = sum(len(batch_images) for _, _, batch_images, _, _ in stream)
    seconds = time.perf_counter() - start
    return LoaderResult(workers, images / seconds, timed_batches, seconds)


def measure_loader(settings: Settings, image_size: int, pin_memory: bool, results: Results) -> None:
    worker_counts = [w for w in settings.workers if w <= available_cores()] or [1]
    with tempfile.TemporaryDirectory(prefix="lookupvit-gpu-bench-") as folder:
        progress(f"writing {settings.jpegs} JPEGs to {folder}")
        results.loader_notes += write_jpeg_tree(Path(folder), settings.jpegs)
        source, _ = open_image_tree(folder)
        transform, description = imagenet_transform(image_size)
        results.loader_notes.append(shared_memory_note())
        results.loader_notes.append(
            f"transform: {description}, as {TRAINING_CONFIG.relative_to(REPO)}; batch {settings.loader_batch}, pin_memory {pin_memory}; "
            f"timed over {settings.loader_rounds} batches per worker after one warm-up batch per worker"
        )
        for workers in worker_counts:
            progress(f"(a) loader, {workers} worker(s)")
            results.loader.append(
                loader_images_per_s(source, transform, workers, settings.loader_batch, settings.loader_rounds, pin_memory)
            )


# --------------------------------------------------------------------------------------------
# (b) Training steps, eager and compiled
# --------------------------------------------------------------------------------------------


def first_call_seconds(call: Callable[[], object], device: torch.device) -> float:
    synchronize(device)
    start = time.perf_counter()
    call()
    synchronize(device)
    return time.perf_counter() - start


def compile_by_first_call(
    measured: Measured, call: Callable[[], object], kind: str, device: torch.device, budget: CompileBudget
) -> bool:
    """Make the first (compiling) call if the budget leaves time for it; False, with a note, if not or if it fails.

    A compiler error in one model leaves the others' cells measured.
    """
    if not budget.fits(kind):
        measured.note = "skipped: time budget"
        return False
    progress(f"compiling {kind} of {measured.label}")
    try:
        measured.compile_s = first_call_seconds(call, device)
    except Exception as error:
        if TERMINATED:
            raise TimeUp() from error
        measured.note = f"compile failed: {type(error).__name__}"
        traceback.print_exc()
        return False
    budget.record(kind, measured.compile_s)
    return True


def timed_training_rows(
    found: list[Contender], steps: dict[str, Callable], images, targets, settings: Settings, device, peak: float
) -> list[Row]:
    """Rows of the contenders that have a step, timed interleaved; the first of `found` (ViT) must be among them."""
    timed = [contender for contender in found if contender.label in steps]
    calls = {contender.label: (lambda step=steps[contender.label]: step(images, targets)) for contender in timed}
    times = median_times(calls, device, settings.reps, warmup=settings.warmup)
    return list(benchmark.timing_rows("train step", settings.train_px, "bfloat16", settings.train_batch, timed, times, peak, passes=3))


def training_contenders(settings: Settings, device: torch.device):
    """ViT and LookupViT in training mode, and one random batch for all of them."""
    found = contenders(settings.size, settings.train_px, list(settings.grids), device, with_timm=False)
    for contender in found:
        contender.model.train()
    images, targets = benchmark.random_batch(settings.train_batch, settings.train_px, found[0].model, device)
    return found, images, targets


def measure_training_eager(settings: Settings, device: torch.device, peak: float, results: Results) -> None:
    progress("(b) training steps, eager")
    found, images, targets = training_contenders(settings, device)
    results.training = measured_line(found)
    steps = {contender.label: training_step(contender.model, contender.grid, device, DTYPE) for contender in found}
    for row in timed_training_rows(found, steps, images, targets, settings, device, peak):
        results.training[row_label(row)].eager = row


def measure_training_compiled(
    settings: Settings, device: torch.device, peak: float, backend: str, budget: CompileBudget, results: Results
) -> None:
    # Fresh models (the same seeded weights), so the eager steps' models and AdamW states are freed by now.
    found, images, targets = training_contenders(settings, device)
    torch._dynamo.reset()
    steps = {}
    for contender in found:
        step = training_step(contender.model, contender.grid, device, DTYPE, compile_backend=backend, graphs=len(found))
        first_call = functools.partial(step, images, targets)
        if compile_by_first_call(results.training[contender.label], first_call, "train step", device, budget):
            steps[contender.label] = step
    if found[0].label in steps:  # speedups are against ViT, so ViT must have been compiled
        for row in timed_training_rows(found, steps, images, targets, settings, device, peak):
            results.training[row_label(row)].compiled = row


def measured_line(found: list[Contender]) -> dict[str, Measured]:
    """An empty table line per contender, named as benchmark's rows name them."""
    return {c.label: Measured(c.label, "LookupViT" if c.grid else c.label, c.label if c.grid else "-") for c in found}


def row_label(row: Row) -> str:
    """The contender label a Row came from: "ViT" or the grid "5x5"."""
    return row.grid if row.model == "LookupViT" else row.model


# --------------------------------------------------------------------------------------------
# (c) Inference, eager and compiled
# --------------------------------------------------------------------------------------------


def inference_call(contender: Contender, images: torch.Tensor, device: torch.device) -> Callable[[], None]:
    """One call as benchmark.inference_rows makes it (same mode, autocast and input), so a compiled
    model warmed up here does not recompile there."""
    kwargs = {"grid": contender.grid} if contender.grid else {}

    def call() -> None:
        with torch.inference_mode(), autocast(device, DTYPE):
            contender.model(images, **kwargs)

    return call


def warm_up_inference(found: list[Contender], px: int, batch: int, calls: int, device: torch.device) -> None:
    images = torch.randn(batch, found[0].model.config.in_chans, px, px, device=device)
    for contender in found:
        contender.model.eval()
        for _ in range(calls):
            inference_call(contender, images, device)()


def compiled_contenders(found: list[Contender], backend: str, graphs: int) -> list[Contender]:
    """The contenders with compiled models; LookupViT's grids share one compiled model (a graph per grid)."""
    compiled = {}
    for contender in found:
        if id(contender.model) not in compiled:
            compiled[id(contender.model)] = compile_model(contender.model, num_grids=graphs, backend=backend)
    return [dataclasses.replace(contender, model=compiled[id(contender.model)]) for contender in found]


def measure_inference_eager(found: list[Contender], px: int, settings: Settings, device, peak: float, results: Results) -> None:
    for batch in settings.inference_batches:
        progress(f"(c) inference {px} px batch {batch}, eager")
        line = results.inference.setdefault((px, batch), measured_line(found))
        warm_up_inference(found, px, batch, settings.warmup, device)
        for row in inference_rows(found, px, DTYPE, batch, settings.reps, device, peak):
            line[row_label(row)].eager = row


def measure_inference_compiled(
    found: list[Contender],
    px: int,
    settings: Settings,
    device,
    peak: float,
    backend: str,
    budget: CompileBudget,
    results: Results,
) -> None:
    torch._dynamo.reset()
    # Static shapes: every (grid, batch) is its own graph of the same forward, all kept in the cache.
    compiled = compiled_contenders(found, backend, graphs=len(settings.grids) * len(settings.inference_batches))
    for batch in settings.inference_batches:
        line = results.inference.setdefault((px, batch), measured_line(found))
        images = torch.randn(batch, found[0].model.config.in_chans, px, px, device=device)
        ready = []
        progress(f"(c) inference {px} px batch {batch}, compiled")
        for contender in compiled:
            contender.model.eval()
            if not compile_by_first_call(
                line[contender.label], inference_call(contender, images, device), "inference", device, budget
            ):
                continue
            for _ in range(settings.warmup - 1):
                inference_call(contender, images, device)()
            ready.append(contender)
        if ready and ready[0].label == found[0].label:  # speedups are against ViT, so ViT must be among them
            for row in inference_rows(ready, px, DTYPE, batch, settings.reps, device, peak):
                line[row_label(row)].compiled = row


def measure_inference(
    settings: Settings, device, peak: float, backend: str, budget: CompileBudget, results: Results, compiled: bool
) -> None:
    for px in settings.inference_px:
        found = contenders(settings.size, px, list(settings.grids), device, with_timm=False)
        if not compiled:
            measure_inference_eager(found, px, settings, device, peak, results)
        else:
            measure_inference_compiled(found, px, settings, device, peak, backend, budget, results)


# --------------------------------------------------------------------------------------------
# Markdown
# --------------------------------------------------------------------------------------------


def cell(value: float | None, form: str, missing: str = "-") -> str:
    return missing if value is None else format(value, form)


def compiled_cells(measured: Measured) -> list[str]:
    """compiled images/s, compiled over eager, as the table columns want them (a note where not measured)."""
    compiled, eager = measured.compiled, measured.eager
    if compiled is None:
        return [measured.note or "not measured", "-"]
    gain = f"{compiled.images_per_s / eager.images_per_s:.2f}x" if eager else "-"
    return [f"{compiled.images_per_s:.1f}", gain]


def speedup(row: Row | None) -> str:
    return "-" if row is None else f"{row.speedup:.2f}x"


def mfu(row: Row | None) -> str:
    return "-" if row is None else f"{100 * row.mfu:.0f}%"


def any_row(measured: Measured) -> Row | None:
    return measured.eager or measured.compiled


def loader_table(results: Results) -> list[str]:
    lines = ["| workers | images/s | images/s per worker | batches timed | seconds timed |", "|---|---|---|---|---|"]
    for r in results.loader:
        lines.append(f"| {r.workers} | {r.images_per_s:.0f} | {r.images_per_s / r.workers:.0f} | {r.batches} | {r.seconds:.1f} |")
    return lines


def training_table(results: Results) -> list[str]:
    header = (
        "| model | grid | GFLOPs/image (train step) | eager images/s | compiled images/s | compiled over eager | "
        "eager speedup vs ViT | compiled speedup vs ViT | FLOPs ratio | eager MFU | compiled MFU | compile s |"
    )
    lines = [header, "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for measured in results.training.values():
        row = any_row(measured)
        gflops, ratio = (f"{row.gflops:.3g}", f"{row.flops_ratio:.2f}x") if row else ("-", "-")
        eager = cell(measured.eager.images_per_s if measured.eager else None, ".1f", "not measured")
        compiled, gain = compiled_cells(measured)
        lines.append(
            f"| {measured.model} | {measured.grid} | {gflops} | {eager} | {compiled} | {gain} | {speedup(measured.eager)} | {speedup(measured.compiled)} | "
            f"{ratio} | {mfu(measured.eager)} | {mfu(measured.compiled)} | {cell(measured.compile_s, '.1f')} |"
        )
    return lines


def workers_needed_table(results: Results, cores: int) -> list[str]:
    """Loader workers to keep up with each training row, at the per-worker rate of the most workers measured."""
    if not results.loader or not results.training:
        return []
    busiest = results.loader[-1]
    per_worker = busiest.images_per_s / busiest.workers

    def needed(row: Row | None) -> str:
        if row is None:
            return "-"
        workers = math.ceil(row.images_per_s / per_worker)
        return f"{workers}" + (f" (more than the {cores} cores)" if workers > cores else "")

    rate = (
        f"At {per_worker:.0f} images/s per worker (measured with {busiest.workers} worker(s), the most measured: the rate per worker "
        "falls as workers share the cores and their memory bandwidth), not counting the CPU time the training process itself needs:"
    )
    lines = [
        rate,
        "",
        "| model | grid | eager images/s | workers needed | compiled images/s | workers needed |",
        "|---|---|---|---|---|---|",
    ]
    for measured in results.training.values():
        eager_ips = cell(measured.eager.images_per_s if measured.eager else None, ".1f")
        compiled_ips = cell(measured.compiled.images_per_s if measured.compiled else None, ".1f")
        lines.append(
            f"| {measured.model} | {measured.grid} | {eager_ips} | {needed(measured.eager)} | {compiled_ips} | {needed(measured.compiled)} |"
        )
    return lines


def inference_table(results: Results) -> list[str]:
    header = (
        "| px | batch | model | grid | eager images/s | compiled images/s | compiled over eager | "
        "eager speedup vs ViT | compiled speedup vs ViT | FLOPs ratio | GFLOPs/image | compile s |"
    )
    lines = [header, "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for (px, batch), line in results.inference.items():
        for measured in line.values():
            row = any_row(measured)
            ratio, gflops = (f"{row.flops_ratio:.2f}x", f"{row.gflops:.3g}") if row else ("-", "-")
            eager = cell(measured.eager.images_per_s if measured.eager else None, ".1f", "not measured")
            compiled, gain = compiled_cells(measured)
            lines.append(
                f"| {px} | {batch} | {measured.model} | {measured.grid} | {eager} | {compiled} | {gain} | {speedup(measured.eager)} | "
                f"{speedup(measured.compiled)} | {ratio} | {gflops} | {cell(measured.compile_s, '.1f')} |"
            )
    return lines


def render(results: Results, settings: Settings, backend: str) -> str:
    timing = (
        f"Each figure: the median of {settings.reps} timed calls (up to 5x as many at small inference batches, as `lookupvit.benchmark.inference_rows` does) "
        f"after at least {settings.warmup} warm-up call(s), the contenders interleaved call by call "
        "(`lookupvit.benchmark.median_times`, CUDA synchronised around each call); speedups are against ViT in the same loop, "
        "FLOPs ratio = ViT FLOPs / the model's (paper order, `lookupvit.analytic_flops`), MFU = executed FLOP/s over the bf16 GEMM peak above."
    )
    compiled = (
        f"compiled: `lookupvit.runtime.compile_model` (torch.compile, backend {backend}, default mode, static shapes: one graph per model, "
        'grid, batch and image size); compile s: the first compiled call, which compiles; cells marked "skipped: time budget" '
        "were left out to stay within --budget (a second run reuses inductor's on-disk cache and compiles much faster)."
    )
    out = [f"# GPU benchmark, {datetime.date.today().isoformat()}", ""]
    out += [line + "  " for line in results.header] + [""]
    if results.stopped:
        out += [f"**Stopped early: {results.stopped}.** Cells not measured say so.", ""]
    out += [f"**Failed: {failure}** (traceback on stderr)" + "  " for failure in results.failures] + (
        [""] if results.failures else []
    )
    out += [timing, "", compiled, ""]
    out += ["## (a) Data loader: the streamed training pipeline", ""]
    out += [line + "  " for line in results.loader_notes] + [""]
    out += loader_table(results) + [""]
    out += [
        f"## (b) Training step: forward + backward + AdamW, bf16 autocast, batch {settings.train_batch} at {settings.train_px} px",
        "",
    ]
    out += [f"vit_{settings.size} vs lookupvit_{settings.size}; GFLOPs of a step = 3x the forward's (backward ~ 2x forward).", ""]
    out += training_table(results) + [""]
    out += ["### Loader workers needed to feed one GPU's training steps", ""]
    out += workers_needed_table(results, available_cores()) + [""]
    px = " and ".join(str(p) for p in settings.inference_px)
    batches = " and ".join(str(b) for b in settings.inference_batches)
    out += [f"## (c) Inference, bf16 autocast, batch {batches} at {px} px", ""]
    out += inference_table(results) + [""]
    return "\n".join(out)


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


def positive_seconds(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text}")
    return value


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--quick", action="store_true", help="CPU smoke test: nano models at 28 px, batch 4, 1 worker, 2 timed iterations"
    )
    parser.add_argument("--out", type=Path, help="also write the tables to this markdown file")
    parser.add_argument(
        "--budget",
        type=positive_seconds,
        default=270.0,
        help="seconds from start within which every compile must be expected to finish (default 270)",
    )
    parser.add_argument(
        "--compile-backend",
        help="torch.compile backend (default: inductor on CUDA, aot_eager on CPU, where inductor takes minutes)",
    )
    return parser.parse_args(argv)


def attempt(section: str, measure: Callable[[], None], results: Results) -> None:
    """Run one section; if it fails, say so and go on, so that (say) a loader short of shared memory
    does not cost the GPU tables. After SIGTERM nothing goes on."""
    try:
        measure()
    except Exception as error:  # TimeUp included: it is re-raised below
        if TERMINATED:
            raise TimeUp() from error
        results.failures.append(f"{section}: {type(error).__name__}: {(str(error).splitlines() or [''])[0]}")
        traceback.print_exc()


def run(settings: Settings, device: torch.device, backend: str, budget: CompileBudget, results: Results) -> None:
    """Every measurement, the cheap and sure ones first. The compiles, which may not all fit the
    budget, come last: inference's (the table the performance issue asks for) before training's."""
    progress("GEMM peak")
    peaks = gemm_peaks(device, settings.gemm_size)
    results.header.append(gemm_line(peaks, settings.gemm_size, device))
    peak = peaks[DTYPE]
    sections = [
        (
            "(a) data loader",
            lambda: measure_loader(settings, settings.train_px, pin_memory=device.type == "cuda", results=results),
        ),
        ("(b) eager training", lambda: measure_training_eager(settings, device, peak, results)),
        ("(c) eager inference", lambda: measure_inference(settings, device, peak, backend, budget, results, compiled=False)),
        ("(c) compiled inference", lambda: measure_inference(settings, device, peak, backend, budget, results, compiled=True)),
        ("(b) compiled training", lambda: measure_training_compiled(settings, device, peak, backend, budget, results)),
    ]
    for section, measure in sections:
        attempt(section, measure, results)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = pick_device()
    if not args.quick and device.type != "cuda":
        print(
            "benchmarks/gpu.py: CUDA is not available here; on CPU pass --quick (a smoke test with nano models)", file=sys.stderr
        )
        return 2
    settings = QUICK if args.quick else FULL
    backend = args.compile_backend or ("inductor" if device.type == "cuda" else "aot_eager")
    # Static graphs: without this, dynamo would recompile a changed batch or image size as one dynamic graph, which runs slower.
    torch._dynamo.config.automatic_dynamic_shapes = False
    signal.signal(signal.SIGTERM, raise_time_up)
    results = Results()
    results.header += [f"command: `{shlex.join(['python', 'benchmarks/gpu.py', *(argv if argv is not None else sys.argv[1:])])}`"]
    results.header += machine_lines(device, backend)
    budget = CompileBudget(args.budget)
    try:
        run(settings, device, backend, budget, results)
    except Exception as error:  # noqa: BLE001 (TimeUp, or the GEMM failing: still report what was measured before it)
        if TERMINATED:
            results.stopped = f"SIGTERM after {TERMINATED[0]:.0f} s (the wrapper's timeout)"
        else:
            results.stopped = f"{type(error).__name__}: {(str(error).splitlines() or [''])[0]}"
            traceback.print_exc()
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    results.header.append(f"wall time: {time.monotonic() - STARTED:.0f} s")
    report = render(results, settings, backend)
    print(report)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(report + "\n")
        progress(f"wrote {args.out}")
    return 1 if results.stopped or results.failures else 0


if __name__ == "__main__":
    sys.exit(main())
