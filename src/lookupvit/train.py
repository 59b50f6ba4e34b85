"""Training engine: seeded multi-resolution training with a dual-head loss, exact resume and DDP.

Everything random in a step (sample order, augmentation, compressed grid, stochastic depth) is
derived from (seed, step), so a run resumed from a checkpoint - or run on several processes with
the same global batch - follows the same trajectory as an uninterrupted single-process run.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import json
import math
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from .augment import augment, mix
from .checkpoint import load_checkpoint, save_checkpoint, save_model
from .config import TrainConfig, config_json
from .data import ImageDataset, load_fashion_mnist, load_image_folder
from .evaluate import evaluate, grid_label
from .models import LookupViT
from .registry import create_model
from .runtime import compile_model, pick_device

CHECKPOINT = "checkpoint.pt"


# --------------------------------------------------------------------------------------------
# Data and model
# --------------------------------------------------------------------------------------------


@dataclass
class Normalization:
    mean: float
    std: float

    def __call__(self, images_uint8: Tensor) -> Tensor:
        return self.normalize(images_uint8.float() / 255)

    def normalize(self, images_unit: Tensor) -> Tensor:
        """Images in [0, 1] to model inputs."""
        return (images_unit - self.mean) / self.std


def load_datasets(config: TrainConfig) -> tuple[ImageDataset, ImageDataset]:
    if config.dataset == "fashion-mnist":
        train_set = load_fashion_mnist("train", config.data_root, config.download)
        test_set = load_fashion_mnist("test", config.data_root, config.download)
    else:
        size = (config.image_size, config.image_size)
        train_set = load_image_folder(config.dataset, size)
        if config.val_dataset is None:
            raise ValueError("an image-folder dataset needs val_dataset=<folder> for evaluation")
        test_set = load_image_folder(config.val_dataset, size)
    train_set, test_set = train_set.select_classes(config.classes), test_set.select_classes(config.classes)
    return train_set.subset(config.train_subset, config.seed), test_set.subset(config.test_subset, config.seed)


def dataset_normalization(dataset: ImageDataset) -> Normalization:
    pixels = dataset.images[:10000].float() / 255
    return Normalization(mean=round(pixels.mean().item(), 4), std=round(pixels.std().item(), 4))


def build_model_for(config: TrainConfig, dataset: ImageDataset) -> nn.Module:
    channels, height, width = dataset.image_shape
    args = {"img_size": (height, width), "in_chans": channels, "num_classes": len(dataset.classes), **config.model_args}
    return create_model(config.model, **args)


def model_metadata(config: TrainConfig, dataset: ImageDataset, normalization: Normalization) -> dict[str, str]:
    """What `predict` needs besides the weights: class names and input preprocessing."""
    return {"classes": json.dumps(list(dataset.classes)), "normalization": json.dumps([normalization.mean, normalization.std])}


# --------------------------------------------------------------------------------------------
# Loss, optimiser, schedule
# --------------------------------------------------------------------------------------------


class ClassificationLoss(nn.Module):
    """Wraps a model so that DDP sees one forward returning the training loss.

    LookupViT: w_c CE(compressed head) + w_l CE(lookup head); ViT: CE(head).
    """

    def __init__(self, model: nn.Module, compressed_weight: float, lookup_weight: float, label_smoothing: float):
        super().__init__()
        self.model = model
        self.compressed_weight = compressed_weight
        self.lookup_weight = lookup_weight
        self.label_smoothing = label_smoothing

    def forward(self, images: Tensor, targets: Tensor, grid: tuple[int, int] | None) -> tuple[Tensor, Tensor]:
        if isinstance(self.model, LookupViT):
            output = self.model.forward_features(images, grid=grid)
            # A head with weight 0 is left out of the graph, so it gets no gradient and no weight decay.
            losses = [
                weight * self.cross_entropy(logits, targets)
                for weight, logits in ((self.compressed_weight, output.compressed_logits), (self.lookup_weight, output.lookup_logits))
                if weight > 0
            ]
            return sum(losses), output.logits
        logits = self.model(images)
        return self.cross_entropy(logits, targets), logits

    def cross_entropy(self, logits: Tensor, targets: Tensor) -> Tensor:
        return F.cross_entropy(logits.float(), targets, label_smoothing=self.label_smoothing)


def build_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW with decoupled weight decay on weight matrices only (no decay on norms, biases, position embeddings)."""
    skip = model.no_weight_decay()
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        (no_decay if param.ndim <= 1 or name in skip else decay).append(param)
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    # The fused kernel updates each tensor in one pass, where the default takes several (CPU's
    # per-tensor loop) or allocates parameter-sized temporaries (CUDA's multi-tensor path). Devices
    # are limited to the two this project runs on. A resumed run keeps the setting its checkpoint
    # was written with (load_state_dict restores it), which keeps the resume bit-identical.
    fused = all(param.device.type in ("cpu", "cuda") for param in model.parameters())
    return torch.optim.AdamW(groups, lr=config.lr, betas=config.betas, fused=fused)


def lr_factor(step: int, total_steps: int, warmup_steps: int, min_ratio: float) -> float:
    """Linear warmup from 0, then cosine decay to `min_ratio` of the peak."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(total_steps - warmup_steps, 1)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


# --------------------------------------------------------------------------------------------
# Distributed
# --------------------------------------------------------------------------------------------


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device_name: str) -> tuple[DistInfo, torch.device]:
    """torchrun sets WORLD_SIZE/RANK/LOCAL_RANK; without them this is a single process."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return DistInfo(), pick_device(device_name)
    info = DistInfo(int(os.environ["RANK"]), world_size, int(os.environ.get("LOCAL_RANK", "0")))
    device = pick_device(device_name)
    if device.type == "cuda":
        device = torch.device("cuda", info.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return info, device


# --------------------------------------------------------------------------------------------
# Seeds
# --------------------------------------------------------------------------------------------


def step_seed(seed: int, step: int, stream: int) -> int:
    return (seed * 1_000_003 + step * 7919 + stream) % (2**63)


@functools.lru_cache(maxsize=2)
def epoch_order(seed: int, epoch: int, size: int) -> Tensor:
    return torch.randperm(size, generator=torch.Generator().manual_seed(step_seed(seed, epoch, 999_983)))


def grid_for_step(grids: list, seed: int, step: int) -> tuple[int, int]:
    choice = grids[random.Random(step_seed(seed, step, 1)).randrange(len(grids))]
    return (choice, choice) if isinstance(choice, int) else tuple(choice)


# --------------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------------


def train(config: TrainConfig, stop_after_steps: int | None = None, quiet: bool = False) -> Path:
    """Train (or resume) the run in `config.out`; returns the run folder.

    `stop_after_steps` ends this invocation early after that many optimizer steps, as a kill would
    (used by the resume tests); the next call resumes from the last checkpoint.
    """
    info, device = init_distributed(config.device)
    out = Path(config.out)
    train_set, test_set = load_datasets(config)
    normalization = dataset_normalization(train_set)
    torch.manual_seed(config.seed)
    model = build_model_for(config, train_set).to(device)
    model.set_grad_checkpointing(config.grad_checkpointing)
    is_lookup = isinstance(model, LookupViT)
    ema = copy.deepcopy(model).eval().requires_grad_(False) if config.ema_decay > 0 else None
    optimizer = build_optimizer(model, config)

    local_batch, remainder = divmod(config.batch_size, info.world_size * config.accum_steps)
    if remainder or local_batch == 0:
        raise ValueError(f"batch_size {config.batch_size} must be a positive multiple of world_size x accum_steps = {info.world_size * config.accum_steps}")
    steps_per_epoch = len(train_set) // config.batch_size
    if steps_per_epoch == 0:
        raise ValueError(f"the training set ({len(train_set)} images) is smaller than one batch ({config.batch_size})")
    total_steps = config.epochs * steps_per_epoch
    warmup_steps = max(1, round(config.warmup_epochs * steps_per_epoch))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, total_steps, warmup_steps, config.min_lr_ratio))

    start_step, best_accuracy = 0, -1.0
    checkpoint_path = out / CHECKPOINT
    if checkpoint_path.exists():
        state = load_checkpoint(checkpoint_path)
        changed = config_changes(state["config"], config)
        if changed:
            raise ValueError(f"{out} holds a run with a different config (changed: {changed}); use another out folder or the same config")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if ema is not None:
            ema.load_state_dict(state["ema"])
        start_step, best_accuracy = state["step"], state["best_accuracy"]
    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(config_json(config))

    wrapped = ClassificationLoss(model, config.compressed_loss_weight, config.lookup_loss_weight, config.label_smoothing).to(device)
    if info.world_size > 1:
        unused = is_lookup and 0 in (config.compressed_loss_weight, config.lookup_loss_weight)
        wrapped = DistributedDataParallel(wrapped, find_unused_parameters=unused)
    if config.compile:
        wrapped = compile_model(wrapped, num_grids=len(config.grids))
    augment_config = config.augment_config()
    metrics = MetricsLog(out, config.tensorboard, start_step) if info.is_main else None
    eval_model = ema if ema is not None else model
    progress = _progress(total_steps, start_step, quiet or not info.is_main)

    def write_checkpoint(step: int) -> None:
        if info.is_main:
            state = {
                "config": config.to_dict(),
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "ema": ema.state_dict() if ema is not None else None,
                "step": step,
                "best_accuracy": best_accuracy,
            }
            save_checkpoint(checkpoint_path, state)

    seen_this_call, window_start, window_images = 0, time.perf_counter(), 0
    for step in range(start_step, total_steps):
        epoch, position = divmod(step, steps_per_epoch)
        model.train()
        indices = epoch_order(config.seed, epoch, len(train_set))[position * config.batch_size : (position + 1) * config.batch_size]
        grid = grid_for_step(config.grids, config.seed, step) if is_lookup else None
        torch.manual_seed(step_seed(config.seed, step, 2 + info.rank))  # stochastic depth
        optimizer.zero_grad(set_to_none=True)
        loss_sum = 0.0
        for micro in range(config.accum_steps):
            offset = (micro * info.world_size + info.rank) * local_batch
            batch = indices[offset : offset + local_batch]
            # Re-seeded per micro-batch: augmentation draws for the whole global batch and takes rows
            # offset.., so accumulation and DDP see exactly the draws of one full batch.
            generator = torch.Generator().manual_seed(step_seed(config.seed, step, 0))
            images = augment(train_set.images[batch].to(device).float() / 255, augment_config, generator, config.batch_size, offset)
            images = normalization.normalize(images)
            targets = F.one_hot(train_set.labels[batch], len(train_set.classes)).float().to(device)
            targets = mix(images, targets, augment_config, generator)
            last_micro = micro == config.accum_steps - 1
            sync = wrapped.no_sync() if info.world_size > 1 and not last_micro else contextlib.nullcontext()
            with sync, torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.amp == "bf16"):
                loss, _ = wrapped(images, targets, grid)
            (loss / config.accum_steps).backward()
            loss_sum += loss.item() / config.accum_steps
        if not math.isfinite(loss_sum):
            raise FloatingPointError(f"loss became {loss_sum} at step {step}; lower lr (now {config.lr}) or check the data")
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.clip_grad_norm) if config.clip_grad_norm > 0 else None
        optimizer.step()
        scheduler.step()
        if ema is not None:
            with torch.no_grad():
                torch._foreach_lerp_(list(ema.parameters()), list(model.parameters()), 1 - config.ema_decay)
        window_images += config.batch_size
        progress.update(1)
        done = step + 1
        if info.is_main and (done % config.log_every == 0 or done == total_steps):
            elapsed = time.perf_counter() - window_start
            record = {
                "step": done,
                "epoch": done / steps_per_epoch,
                "loss": round(loss_sum, 5),
                "lr": scheduler.get_last_lr()[0],
                "grid": list(grid) if grid else None,
                "grad_norm": round(float(grad_norm), 4) if grad_norm is not None else None,
                "images_per_s": round(window_images / elapsed, 1),
            }
            metrics.write(record)
            progress.set_postfix(loss=f"{loss_sum:.3f}", lr=f"{record['lr']:.2e}", img_s=f"{record['images_per_s']:.0f}")
            window_start, window_images = time.perf_counter(), 0
        epoch_end = done % steps_per_epoch == 0
        if epoch_end and info.is_main:
            # Only the default grid here (it picks the best checkpoint); the report evaluates every grid.
            default_grid = [eval_model.compressed_grid] if is_lookup else [None]
            rows = evaluate(eval_model, test_set, normalization, default_grid, config.eval_batch_size, device, amp=config.amp == "bf16")
            default = rows[0]
            accuracy = default["average"]["top1"]
            metrics.write({"step": done, "epoch": done // steps_per_epoch, "eval": rows})
            progress.write(f"epoch {done // steps_per_epoch}/{config.epochs}: test top-1 {100 * accuracy:.2f}% at grid {default['grid']}")
            metadata = model_metadata(config, train_set, normalization)
            save_model(eval_model, out / "model.safetensors", metadata)
            if accuracy > best_accuracy:
                best_accuracy = accuracy
                save_model(eval_model, out / "best.safetensors", metadata)
        if epoch_end or done % config.checkpoint_every == 0 or done == total_steps:
            write_checkpoint(done)
        seen_this_call += 1
        if stop_after_steps is not None and seen_this_call >= stop_after_steps and done < total_steps:
            write_checkpoint(done)
            break
    progress.close()
    if metrics is not None:
        metrics.close()  # every record was flushed as written, so a crash before this loses nothing
    if info.world_size > 1:
        dist.barrier()
    return out


def evaluation_grids(config: TrainConfig, model: nn.Module) -> list:
    """config.eval_grids that fit the model's lookup grid, plus its default grid (ViT: [None])."""
    if not isinstance(model, LookupViT):
        return [None]
    lookup_grid = model.config.patch_grid
    grids = [g if isinstance(g, int) else tuple(g) for g in config.eval_grids]
    grids = [g for g in grids if max((g, g) if isinstance(g, int) else g) <= min(lookup_grid)]
    default = model.compressed_grid[0] if model.compressed_grid[0] == model.compressed_grid[1] else model.compressed_grid
    return sorted(set(grids) | {default}, key=lambda g: (g, g) if isinstance(g, int) else g)


# How a run executes or logs rather than which run it is: a resumed run may change these (e.g. turn
# on grad checkpointing after running out of memory, or continue on another device).
EXECUTION_SETTINGS = {"grad_checkpointing", "tensorboard", "log_every", "checkpoint_every", "device"}


def config_changes(saved: dict, config: TrainConfig) -> list[str]:
    """Fields of `config` that differ from a checkpoint's, ignoring execution settings.

    A field the checkpoint predates counts as its default, so adding a field never orphans old runs.
    """
    current, defaults = config.to_dict(), TrainConfig().to_dict()
    return sorted(key for key, value in current.items() if key not in EXECUTION_SETTINGS and saved.get(key, defaults[key]) != value)


class MetricsLog:
    """Appends each record to `out/metrics.jsonl`; with `tensorboard`, also writes its numbers as scalars.

    Training records become train/<field>; evaluation rows become eval/<grid>/<head>_top1|top5.
    """

    def __init__(self, out: Path, tensorboard: bool, start_step: int):
        self.path = out / "metrics.jsonl"
        self.writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as error:
                raise ImportError("tensorboard=true needs the tensorboard package: pip install 'lookupvit[tensorboard]'") from error
            # A resumed run repeats the steps after its last checkpoint: drop their old points.
            self.writer = SummaryWriter(str(out / "tensorboard"), purge_step=start_step)

    def write(self, record: dict) -> None:
        with open(self.path, "a") as handle:
            handle.write(json.dumps(record) + "\n")
        if self.writer is None:
            return
        step = record["step"]
        for row in record.get("eval", []):
            grid = grid_label(row["grid"])
            for head in ("compressed", "lookup", "average"):
                if head in row:
                    for metric in ("top1", "top5"):
                        self.writer.add_scalar(f"eval/{grid}/{head}_{metric}", row[head][metric], step)
        if "eval" not in record:
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)):
                    self.writer.add_scalar(f"train/{key}", value, step)
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _progress(total: int, initial: int, disable: bool) -> tqdm:
    return tqdm(total=total, initial=initial, disable=disable, desc="train", unit="step", dynamic_ncols=True)

