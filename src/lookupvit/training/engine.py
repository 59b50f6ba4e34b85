"""Training engine: seeded multi-resolution training with a dual-head loss, exact resume and DDP.

Everything random in a step (sample order, augmentation, mixup/cutmix, compressed grid, stochastic
depth) is a function of (seed, step, row of the global batch), so a run resumed from a checkpoint -
or run with gradient accumulation, or on several processes with the same global batch - follows the
same trajectory as an uninterrupted single-process run.
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
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from ..data.augment import mix
from ..data.loader import BatchPlan, check_workers, step_seed
from ..evaluation.accuracy import evaluate, grid_label
from ..files import atomic_write
from ..layers import global_batch_rows
from ..models import LookupViT
from ..models.common import as_grid
from ..models.registry import arch_name, create_model
from ..models.serialization import load_weights, read_metadata, save_model
from ..runtime import available_cores, compile_model, configure_threads, pick_device
from .checkpoint import has_checkpoint, load_checkpoint, save_checkpoint
from .config import TrainConfig, check_model_settings, config_json
from .data import RunData, open_run_data

CHECKPOINT = "checkpoint.pt"


# --------------------------------------------------------------------------------------------
# Data and model
# --------------------------------------------------------------------------------------------


def build_model_for(config: TrainConfig, data: RunData) -> nn.Module:
    model = create_model(config.model, **{**data.model_args(), **config.model_args})
    if config.init_weights is not None:
        load_initial_weights(model, config.init_weights, data)
    return model


# Settings a starting file may differ in from the run's model: they change no weight's meaning.
FREE_SETTINGS = ("drop_path_rate", "compressed_grid")


def load_initial_weights(model: nn.Module, path: str, data: RunData) -> None:
    """The weights of model file `path`, which must describe the run's model, as the run's starting point.

    Refused when the file holds another architecture or other settings (naming them and how to convert);
    a warning when it was trained on inputs normalised otherwise than this run normalises them.
    """
    metadata = read_metadata(path)
    saved = json.loads(metadata.get("config", "{}"))
    wanted = model.config.to_dict()
    different = [f"{key}: file {saved.get(key)!r}, run {value!r}" for key, value in wanted.items() if key not in FREE_SETTINGS and _normalized(saved.get(key)) != _normalized(value)]
    if metadata.get("arch") != arch_name(model.config) or different:
        raise ValueError(
            f"init_weights {path} holds a {metadata.get('arch', 'non-lookupvit')} model that is not this run's {config_name(model)}: "
            f"{'; '.join(different) or 'another architecture'}. Convert it first, e.g. `lookupvit convert SRC --model {arch_name(model.config)}_... "
            "--num-classes K --image-size S --out FILE`, or set model_args to match it"
        )
    load_weights(model, path)
    if "normalization" in metadata and _normalized(json.loads(metadata["normalization"])) != _normalized(data.normalization.to_json()):
        warnings.warn(
            f"init_weights {path} was trained on inputs normalised with {metadata['normalization']}, this run uses "
            f"{json.dumps(data.normalization.to_json())}; set normalization='inception' or 'imagenet' to match it",
            stacklevel=2,
        )


def config_name(model: nn.Module) -> str:
    config = model.config
    return f"{type(model).__name__} ({config.input_description()}, width {config.embed_dim}, {config.num_classes} classes)"


def model_metadata(data: RunData) -> dict[str, str]:
    """What `predict` and `eval` need besides the weights: class names and input preprocessing (for video, the frame stride)."""
    metadata = {"classes": json.dumps(list(data.classes)), "normalization": json.dumps(data.normalization.to_json())}
    if data.layout == "videos":
        metadata["frame_stride"] = str(data.config.frame_stride)
        metadata["clip_resize"] = str(data.config.clip_resize)
    return metadata


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


def grid_for_step(grids: list, seed: int, step: int, dims: int = 2) -> tuple[int, ...]:
    """The compressed grid of `step`, drawn uniformly from `grids`; a whole number g is g in each of the `dims` dimensions."""
    choice = grids[random.Random(step_seed(seed, step, 1)).randrange(len(grids))]
    return as_grid(choice, "grid", dims)


# --------------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------------


def train(config: TrainConfig, stop_after_steps: int | None = None, quiet: bool = False) -> Path:
    """Train (or resume) the run in `config.out`; returns the run folder.

    `stop_after_steps` ends this invocation early after that many optimizer steps, with a
    checkpoint at the stop (used by tests of resuming under changed execution settings).
    """
    configure_threads(config.threads)
    check_model_settings(config)
    trainer = Trainer(config, quiet)
    trainer.run(stop_after_steps)
    return trainer.out


def local_batch_size(config: TrainConfig, world_size: int) -> int:
    """Rows of one micro-batch on one process: batch_size / (world_size x accum_steps)."""
    local_batch, remainder = divmod(config.batch_size, world_size * config.accum_steps)
    if remainder or local_batch == 0:
        raise ValueError(
            f"batch_size {config.batch_size} must be a positive multiple of world_size x accum_steps = {world_size} x {config.accum_steps}"
        )
    augment_config = config.augment_config()
    if (augment_config.mixup_alpha > 0 or augment_config.cutmix_alpha > 0) and local_batch % 2:
        raise ValueError(
            f"mixup/cutmix mix pairs of neighbouring rows, so each micro-batch must have an even number of rows; batch_size "
            f"{config.batch_size} / (world_size {world_size} x accum_steps {config.accum_steps}) = {local_batch}. Choose a batch_size "
            f"that is a multiple of {2 * world_size * config.accum_steps}"
        )
    return local_batch


class Trainer:
    """One invocation of a training run: its data, model, optimiser and position, and the step loop."""

    def __init__(self, config: TrainConfig, quiet: bool):
        self.config = config
        self.info, self.device = init_distributed(config.device)
        self.out = Path(config.out)
        self.data = open_run_data(config)
        self.fingerprint = self.data.train.fingerprint()
        torch.manual_seed(config.seed)
        self.model = build_model_for(config, self.data).to(self.device)
        self.model.set_grad_checkpointing(config.grad_checkpointing)
        self.is_lookup = isinstance(self.model, LookupViT)
        self.ema = copy.deepcopy(self.model).eval().requires_grad_(False) if config.ema_decay > 0 else None
        self.optimizer = build_optimizer(self.model, config)
        if self.data.streamed:
            check_workers(config.workers, available_cores())
        local_batch = local_batch_size(config, self.info.world_size)
        self.plan = BatchPlan(len(self.data.train), config.batch_size, local_batch, config.accum_steps, self.info.world_size, self.info.rank, config.seed)
        self.steps_per_epoch = self.plan.steps_per_epoch
        if self.steps_per_epoch == 0:
            raise ValueError(f"the training set ({len(self.data.train)} images) is smaller than one batch ({config.batch_size})")
        self.total_steps = config.epochs * self.steps_per_epoch
        warmup_steps = max(1, round(config.warmup_epochs * self.steps_per_epoch))
        schedule = functools.partial(lr_factor, total_steps=self.total_steps, warmup_steps=warmup_steps, min_ratio=config.min_lr_ratio)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, schedule)
        self.start_step, self.best_accuracy = 0, -1.0
        self.resume()
        if self.info.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            atomic_write(self.out / "config.json", lambda tmp: Path(tmp).write_text(config_json(config)))
        self.wrapped = self.wrap_model()
        self.augment_config = config.augment_config()
        self.replaced_images = 0  # corrupt images replaced by the loader in this invocation
        self.metrics = MetricsLog(self.out, config.tensorboard, self.start_step) if self.info.is_main else None
        self.progress = _progress(self.total_steps, self.start_step, quiet or not self.info.is_main)

    def resume(self) -> None:
        """Continue from the run's checkpoint, if it has one and it is the same run."""
        checkpoint = self.out / CHECKPOINT
        if not has_checkpoint(checkpoint):
            return
        state = load_checkpoint(checkpoint)
        check_same_run(state, self.config, self.fingerprint, self.out)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])
        self.start_step, self.best_accuracy = state["step"], state["best_accuracy"]

    def wrap_model(self) -> nn.Module:
        config = self.config
        wrapped = ClassificationLoss(self.model, config.compressed_loss_weight, config.lookup_loss_weight, config.label_smoothing).to(self.device)
        if self.info.world_size > 1:
            unused = self.is_lookup and 0 in (config.compressed_loss_weight, config.lookup_loss_weight)
            wrapped = DistributedDataParallel(wrapped, find_unused_parameters=unused)
        if config.compile:
            # One graph per (grid, micro-batch row offset): stochastic depth slices its masks by the offset.
            wrapped = compile_model(wrapped, num_grids=len(config.grids) * config.accum_steps)
        return wrapped

    def run(self, stop_after_steps: int | None) -> None:
        window = ThroughputWindow()
        batches = iter(self.data.training_batches(self.plan, self.start_step, self.total_steps, self.device))
        for step in range(self.start_step, self.total_steps):
            loss, grad_norm, grid = self.train_step(step, batches)
            window.add(self.config.batch_size)
            self.progress.update(1)
            done = step + 1
            if self.info.is_main and (done % self.config.log_every == 0 or done == self.total_steps):
                self.log_step(done, loss, grad_norm, grid, window.images_per_s())
            epoch_end = done % self.steps_per_epoch == 0
            if epoch_end and self.info.is_main:
                self.evaluate_and_save(done)
            stopping = stop_after_steps is not None and done - self.start_step >= stop_after_steps
            if epoch_end or done % self.config.checkpoint_every == 0 or done == self.total_steps or stopping:
                self.write_checkpoint(done)
            if stopping:
                break
        self.progress.close()
        if self.replaced_images:
            self.progress.write(f"warning: {self.replaced_images} corrupt image(s) did not decode and were replaced by the next readable image")
        if self.metrics is not None:
            self.metrics.close()  # every record was flushed as written, so a crash before this loses nothing
        if self.info.world_size > 1:
            dist.barrier()

    def train_step(self, step: int, batches) -> tuple[float, Tensor | None, tuple[int, int] | None]:
        """One optimizer step over the global batch of `step` -> (loss, gradient norm, grid)."""
        config = self.config
        self.model.train()
        grid = grid_for_step(config.grids, config.seed, step, len(self.model.config.patch_grid)) if self.is_lookup else None
        self.optimizer.zero_grad(set_to_none=True)
        loss = 0.0
        for micro in range(config.accum_steps):
            batch_step, batch_micro, images, labels, replaced = next(batches)
            if (batch_step, batch_micro) != (step, micro):
                raise RuntimeError(f"the training batches reached step {batch_step}.{batch_micro} while training step {step}.{micro}")
            self.replaced_images += replaced
            loss += self.micro_batch_loss(step, micro, images, labels, grid) / config.accum_steps
        loss = self.mean_over_processes(loss)
        # The norm of the all-reduced gradients is the same on every process, so all of them stop
        # together, before a non-finite update reaches the weights or a checkpoint.
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), config.clip_grad_norm if config.clip_grad_norm > 0 else math.inf)
        if not (math.isfinite(loss) and math.isfinite(grad_norm)):
            raise FloatingPointError(
                f"loss {loss}, gradient norm {float(grad_norm)} at step {step}; lower lr (now {config.lr}) or check the data. "
                "The last checkpoint was written before this step"
            )
        self.optimizer.step()
        self.scheduler.step()
        if self.ema is not None:
            with torch.no_grad():
                torch._foreach_lerp_(list(self.ema.parameters()), list(self.model.parameters()), 1 - config.ema_decay)
        return loss, grad_norm, grid

    def mean_over_processes(self, value: float) -> float:
        """The global batch's loss (each process holds its own rows' mean)."""
        if self.info.world_size == 1:
            return value
        total = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.all_reduce(total)
        return total.item() / self.info.world_size

    def micro_batch_loss(self, step: int, micro: int, images: Tensor, labels: Tensor, grid: tuple[int, int] | None) -> float:
        """Forward and backward of one micro-batch (normalised images, labels) of `step`; returns its loss.

        Every draw is made for the whole global batch from seeds that depend on (seed, step) only,
        and this micro-batch keeps its rows: the mixup/cutmix choice, lambda and box (pairs never
        cross micro-batches) and stochastic-depth masks here, the augmentation in the batch
        iterator. So accumulation and K processes follow the single-process trajectory.
        """
        config = self.config
        first_row = self.plan.first_row(micro)
        images = images.to(self.device, non_blocking=True)
        targets = F.one_hot(labels.to(self.device, non_blocking=True), len(self.data.classes)).float()
        targets = mix(images, targets, self.augment_config, torch.Generator().manual_seed(step_seed(config.seed, step, 3)))
        torch.manual_seed(step_seed(config.seed, step, 2))  # stochastic depth
        no_sync = self.wrapped.no_sync() if self.info.world_size > 1 and micro < config.accum_steps - 1 else contextlib.nullcontext()
        with no_sync, global_batch_rows(config.batch_size, first_row):
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=config.amp == "bf16"):
                loss, _ = self.wrapped(images, targets, grid)
            (loss / config.accum_steps).backward()
        return loss.item()

    def log_step(self, done: int, loss: float, grad_norm: Tensor | None, grid: tuple[int, int] | None, images_per_s: float) -> None:
        record = {
            "step": done,
            "epoch": done / self.steps_per_epoch,
            "loss": round(loss, 5),
            "lr": self.scheduler.get_last_lr()[0],
            "grid": list(grid) if grid else None,
            "grad_norm": round(float(grad_norm), 4) if grad_norm is not None else None,
            "images_per_s": round(images_per_s, 1),
            "replaced_images": self.replaced_images,  # corrupt images replaced since this invocation started
        }
        self.metrics.write(record)
        self.progress.set_postfix(loss=f"{loss:.3f}", lr=f"{record['lr']:.2e}", img_s=f"{images_per_s:.0f}")

    def evaluate_and_save(self, done: int) -> None:
        """End of an epoch: accuracy at the default grid (it picks the best model file; the report evaluates every grid)."""
        eval_model = self.ema if self.ema is not None else self.model
        default_grid = [eval_model.compressed_grid] if self.is_lookup else [None]
        rows = evaluate(eval_model, self.data.evaluation_batches(self.device), default_grid, self.device, amp=self.config.amp == "bf16")
        accuracy = rows[0]["average"]["top1"]
        epoch = done // self.steps_per_epoch
        self.metrics.write({"step": done, "epoch": epoch, "eval": rows})
        self.progress.write(f"epoch {epoch}/{self.config.epochs}: test top-1 {100 * accuracy:.2f}% at grid {rows[0]['grid']}")
        metadata = model_metadata(self.data)
        save_model(eval_model, self.out / "model.safetensors", metadata)
        if accuracy > self.best_accuracy:
            self.best_accuracy = accuracy
            save_model(eval_model, self.out / "best.safetensors", metadata)

    def write_checkpoint(self, step: int) -> None:
        if not self.info.is_main:
            return
        state = {
            "config": self.config.to_dict(),
            "data": self.fingerprint,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "step": step,
            "best_accuracy": self.best_accuracy,
        }
        save_checkpoint(self.out / CHECKPOINT, state)


class ThroughputWindow:
    """Images per second since the last reading."""

    def __init__(self):
        self.start, self.images = time.perf_counter(), 0

    def add(self, images: int) -> None:
        self.images += images

    def images_per_s(self) -> float:
        rate = self.images / (time.perf_counter() - self.start)
        self.start, self.images = time.perf_counter(), 0
        return rate


def evaluation_grids(config: TrainConfig, model: nn.Module) -> list:
    """config.eval_grids that fit the model's lookup grid, plus its default grid (ViT: [None])."""
    if not isinstance(model, LookupViT):
        return [None]
    lookup_grid = model.config.patch_grid
    dims = len(lookup_grid)

    def sides(grid) -> tuple[int, ...]:
        return (grid,) * dims if isinstance(grid, int) else tuple(grid)  # as_grid, without refusing another length

    grids = [g if isinstance(g, int) else tuple(g) for g in config.eval_grids]
    grids = [g for g in grids if len(sides(g)) == dims and all(s <= limit for s, limit in zip(sides(g), lookup_grid))]
    default = model.compressed_grid
    default = default[0] if len(set(default)) == 1 else default  # a square grid as its side, so 5 and (5, 5) are one entry
    return sorted(set(grids) | {default}, key=sides)


# Where a run lives and how it is executed, evaluated or logged rather than which run it is: a
# resumed run may change these (move the folder, turn on grad checkpointing after running out of
# memory, split the batch into more accumulation steps, continue on another device). `dataset` names
# where the training data lives; the data itself is compared by its fingerprint.
EXECUTION_SETTINGS = {
    "out", "dataset", "data_root", "download", "val_dataset", "test_subset", "eval_grids", "eval_batch_size",
    "grad_checkpointing", "compile", "accum_steps", "threads", "workers", "device", "tensorboard", "log_every", "checkpoint_every",
}  # fmt: skip


def config_changes(saved: dict, config: TrainConfig, compare_dataset: bool = False) -> list[str]:
    """Fields of `config` that differ from a checkpoint's and change the run's trajectory.

    A field the checkpoint predates counts as its default, so adding a field never orphans old runs.
    `compare_dataset`: for checkpoints written before the data fingerprint, compare the dataset name.
    """
    current, defaults = config.to_dict(), TrainConfig().to_dict()
    ignored = EXECUTION_SETTINGS - ({"dataset"} if compare_dataset else set())
    return sorted(key for key, value in current.items() if key not in ignored and _normalized(saved.get(key, defaults[key])) != _normalized(value))


def _normalized(value):
    """Tuples (from the dataclass) and lists (from a checkpoint) compare equal."""
    if isinstance(value, (list, tuple)):
        return [_normalized(v) for v in value]
    if isinstance(value, dict):
        return {k: _normalized(v) for k, v in value.items()}
    return value


def check_same_run(state: dict, config: TrainConfig, data: dict, out: Path) -> None:
    """Refuse to resume a checkpoint whose trajectory `config` or the data would change."""
    saved, defaults = state["config"], TrainConfig().to_dict()
    changed = config_changes(saved, config, compare_dataset="data" not in state)
    if changed:
        details = "; ".join(f"{key}: {saved.get(key, defaults[key])!r} -> {getattr(config, key)!r}" for key in changed)
        raise ValueError(
            f"{out} holds a run with a different config (changed: {changed}: {details}). These settings change the training "
            f"trajectory: use another out folder, or set them back. Settings a resumed run may change: {sorted(EXECUTION_SETTINGS)}"
        )
    saved_data = state.get("data")
    if saved_data is not None and saved_data != data:
        if saved_data["classes"] != data["classes"]:
            difference = f"classes {saved_data['classes'][:10]} then, {data['classes'][:10]} now"
        else:
            difference = f"{saved_data['images']} images then, {data['images']} now" if saved_data["images"] != data["images"] else "other images or labels"
        raise ValueError(f"{out} holds a run trained on other data ({difference}); point dataset at the run's data, or use another out folder")


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

