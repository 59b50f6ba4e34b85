"""The streamed input pipeline measured on this machine: loader images/s per worker, and memory against dataset size.

1. Loader: images/s of the training transforms (Inception crop, flip, RandAugment medium2,
   normalise) at 224 px on JPEGs of ImageNet's typical size (500x375), per worker count, beside
   LookupViT-B/16's and ViT-B/16's training images/s here, and how many workers a GPU would need.
2. Memory: peak memory (training process plus its loader workers) of the same streamed training run
   on a tree of 10,000 and of 70,000 images (Fashion-MNIST's 60k + 10k as JPEG files); it must not
   grow with the dataset.

    python benchmarks/streaming.py                 # both, about 10 minutes on 2 cores
    python benchmarks/streaming.py --skip-memory   # the loader part only
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

from lookupvit.data import load_fashion_mnist
from lookupvit.data.loader import BatchPlan, StreamedTrainingBatches
from lookupvit.data.sources import ImageTreeSource
from lookupvit.data.transforms import NORMALIZATIONS, train_transform
from lookupvit.runtime import cpu_model


def write_tree(root: Path, images: torch.Tensor, labels: torch.Tensor, size: tuple[int, int] | None, split: str = "train") -> Path:
    """Fashion-MNIST images as JPEG files root/<split>/<label>/<n>.JPEG (RGB, resized to `size` if given)."""
    from PIL import Image

    for label in labels.unique().tolist():
        (root / split / f"class{label}").mkdir(parents=True, exist_ok=True)
    for n, (image, label) in enumerate(zip(images, labels.tolist())):
        picture = Image.fromarray(image[0].numpy()).convert("RGB")
        if size is not None:
            picture = picture.resize(size, Image.BICUBIC)
        picture.save(root / split / f"class{label}" / f"{n}.JPEG", quality=90)
    return root


def loader_images_per_s(tree: Path, workers: int, batches: int, batch_size: int = 32) -> float:
    source = ImageTreeSource(tree, "train")
    mean, std = NORMALIZATIONS["inception"]
    transform = train_transform(224, mean, std, (0.05, 1.0), "medium2")
    plan = BatchPlan(len(source), batch_size, batch_size, 1, 1, 0, seed=0)
    total_steps = plan.steps_per_epoch * 4
    iterator = iter(StreamedTrainingBatches(source, transform, plan, 0, total_steps, workers, pin_memory=False))
    next(iterator)  # workers started, first batch out: what remains is steady-state throughput
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    return batches * batch_size / (time.perf_counter() - start)


def training_images_per_s(name: str, grid: int | None, dtype: torch.dtype, batch: int, reps: int) -> float:
    from lookupvit.benchmark import median_times, training_step
    from lookupvit.models.registry import create_model

    torch.manual_seed(0)
    model = create_model(name, **({"compressed_grid": grid} if grid else {})).train()
    step = training_step(model, grid, torch.device("cpu"), dtype)
    images = torch.randn(batch, 3, 224, 224)
    labels = torch.randint(0, 1000, (batch,))
    seconds = median_times({"step": lambda: step(images, labels)}, torch.device("cpu"), reps, warmup=1)["step"]
    return batch / seconds


def measure_loader(args: argparse.Namespace) -> None:
    test = load_fashion_mnist("test")
    with tempfile.TemporaryDirectory() as folder:
        tree = write_tree(Path(folder), test.images[:512], test.labels[:512], size=(500, 375))
        print(f"\n## Loader: train transforms at 224 px (RandAugment medium2) on 500x375 JPEGs, {cpu_model()}, torch {torch.__version__}\n")
        print("| workers | images/s | images/s per worker |")
        print("|---|---|---|")
        per_worker = []
        for workers in args.workers:
            rate = loader_images_per_s(tree, workers, args.batches)
            per_worker.append(rate / max(workers, 1))
            print(f"| {workers} | {rate:.0f} | {rate / max(workers, 1):.0f} |", flush=True)
    print(f"\n## Training images/s here (batch {args.train_batch}, 224 px, forward + backward + AdamW), {cpu_model()}\n")
    print("| model | dtype | images/s | loader workers to feed it |")
    print("|---|---|---|---|")
    best_per_worker = max(per_worker)
    for name, grid in (("vit_b16", None), ("lookupvit_b16", 5)):
        for dtype in (torch.float32, torch.bfloat16):
            rate = training_images_per_s(name, grid, dtype, args.train_batch, args.reps)
            label = "LookupViT-B/16 5x5" if grid else "ViT-B/16"
            print(f"| {label} | {str(dtype).removeprefix('torch.')} | {rate:.1f} | {rate / best_per_worker:.2f} |", flush=True)
    print(
        f"\nA GPU training at R images/s needs about R / {best_per_worker:.0f} workers of this machine's cores "
        "(e.g. 3,000 images/s: " + f"{3000 / best_per_worker:.0f} workers)."
    )


def process_tree_rss(pid: int) -> int:
    """Resident bytes of a process and all its descendants (Linux /proc)."""
    total, pending = 0, [pid]
    while pending:
        current = pending.pop()
        try:
            for line in Path(f"/proc/{current}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
            for task in Path(f"/proc/{current}/task").iterdir():
                pending += [int(child) for child in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


def peak_training_memory(tree: Path, out: Path, steps: int, workers: int) -> tuple[int, float]:
    """Peak RSS of a streamed training run (process + workers), sampled every 50 ms, and its wall time."""
    settings = [
        "model=lookupvit_nano4", "image_size=28", f"dataset='{tree}'", "layout='imagenet'", f"out='{out}'",
        "batch_size=64", "epochs=1", f"workers={workers}", "threads=1", "normalization='inception'", "randaugment='medium2'",
        "eval_batch_size=500", "test_subset=500", "checkpoint_every=1000000", "log_every=1000000",
    ]  # fmt: skip
    code = (
        "import sys; from lookupvit.training.config import load_config; from lookupvit.training.engine import train; "
        f"train(load_config(None, sys.argv[1:]), stop_after_steps={steps}, quiet=True)"
    )
    start = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-c", code, *settings], env={**os.environ, "OMP_NUM_THREADS": "1"})
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, process_tree_rss(process.pid))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample)
    sampler.start()
    process.wait()
    done.set()
    sampler.join()
    if process.returncode:
        raise RuntimeError(f"the training run failed (exit {process.returncode})")
    return peak, time.perf_counter() - start


def measure_memory(args: argparse.Namespace) -> None:
    train, test = load_fashion_mnist("train"), load_fashion_mnist("test")
    images, labels = torch.cat([train.images, test.images]), torch.cat([train.labels, test.labels])
    print(f"\n## Peak memory of a streamed training run (lookupvit_nano4, {args.memory_steps} steps of 64, {args.memory_workers} workers), {cpu_model()}\n")
    print("| training images | peak RSS, process + workers (MiB) | vs 10,000 | wall s |")
    print("|---|---|---|---|")
    baseline = None
    with tempfile.TemporaryDirectory() as folder:
        for count in (10_000, 70_000):
            tree = write_tree(Path(folder) / f"tree{count}", images[:count], labels[:count], size=None)
            write_tree(tree, test.images[:500], test.labels[:500], size=None, split="val")
            peak, seconds = peak_training_memory(tree, Path(folder) / f"run{count}", args.memory_steps, args.memory_workers)
            baseline = baseline or peak
            print(f"| {count:,} | {peak / 2**20:.0f} | {peak / baseline:.3f}x | {seconds:.0f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--batches", type=int, default=8, help="timed loader batches of 32 per worker count")
    parser.add_argument("--train-batch", type=int, default=16)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--memory-steps", type=int, default=100)
    parser.add_argument("--memory-workers", type=int, default=2)
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--skip-loader", action="store_true")
    args = parser.parse_args()
    if not args.skip_loader:
        measure_loader(args)
    if not args.skip_memory:
        measure_memory(args)


if __name__ == "__main__":
    main()
