"""Training a caption decoder on a frozen classifier's tokens (paper Sec. 4, Table 3), resumably.

The encoder is a classification model file written by `lookupvit train` (it carries its input
normalisation and channel count). It never trains, so each image's tokens are a fixed function of
its pixels: they are computed once, before the first step, and kept in out/tokens.pt, so that
every epoch (and a resumed run) trains the decoder on stored tensors alone. The one random choice
per epoch, the image order and which reference caption each image is trained on, is drawn from
(seed, epoch), and a checkpoint is written after every epoch, so a killed run resumes to the
weights an uninterrupted run reaches.

The result is one self-contained .safetensors captioner file (see `save_captioner`), and
`evaluate_captioner` scores its captions with the COCO metrics beside its FLOPs per caption.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import os
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from torch import Tensor, nn
from tqdm import tqdm

from ..data import Normalization
from ..data.captions import CaptionSet, layout_caption_paths, read_coco_captions
from ..data.folders import read_image
from ..data.text import WordTokenizer, split_words
from ..evaluation.captions import caption_scores
from ..files import atomic_write
from ..models.captioner import (
    DECODER_SIZES,
    CaptionDecoder,
    CaptionDecoderConfig,
    Captioner,
    FrozenEncoder,
    caption_decoder_config,
)
from ..models.common import as_grid
from ..models.flops import analytic_flops
from ..models.lookupvit import LookupViT, grid_fits
from ..models.registry import ARCHITECTURES, arch_name, build_model
from ..models.serialization import CHECKSUM_KEY, model_file_digest, read_metadata, read_model_file
from ..models.video import VideoInput
from ..models.vit import ViT
from ..runtime import configure_threads, pick_device
from .checkpoint import has_checkpoint, load_checkpoint, save_checkpoint
from .config import NON_NEGATIVE, POSITIVE, PROBABILITY, check_value, optional_whole_number, whole_number
from .engine import lr_factor
from .report import load_trained

CHECKPOINT = "checkpoint.pt"
TOKEN_CACHE = "tokens.pt"
CAPTIONER_FILE = "captioner.safetensors"
CAPTIONER_FORMAT = "lookupvit-captioner/1"
ENCODE_BATCH = 64  # images per encoder forward pass when the token cache is filled

# Where a run and its files live and how it executes, not which run it is: a resumed run may change these.
# The files' contents are compared instead (the encoder by its checksum, the captions by captions_digest).
EXECUTION_SETTINGS = ("out", "device", "threads", "encoder", "data", "train_captions", "train_images", "val_captions", "val_images")


# --------------------------------------------------------------------------------------------
# The config
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CaptionTrainConfig:
    """One captioning run. Caption data is either `data` (a layout-task root, see data/captions.py:
    its train and val splits) or the four COCO-format paths: train/val annotation JSONs and image folders."""

    encoder: str = ""  # a classification model file written by `lookupvit train` (LookupViT or ViT)
    data: str | None = None
    train_captions: str | None = None
    train_images: str | None = None
    val_captions: str | None = None
    val_images: str | None = None
    grid: int | tuple[int, ...] | None = None  # LookupViT: the compressed grid read (None: its default); ViT: None
    image_size: int | None = None  # side the images are resized to (None: the encoder's own image size)
    decoder: str = "nano"  # a size of models.captioner.DECODER_SIZES
    max_length: int = 32  # tokens per caption, bos and eos included
    min_word_count: int = 1  # rarer training words become <unk>
    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_epochs: float = 0.5
    min_lr_ratio: float = 0.0
    clip_grad_norm: float = 1.0  # 0: no clipping
    seed: int = 0
    out: str = "runs/caption"
    device: str = "auto"
    threads: int = 0  # torch CPU threads (0: automatic)

    def __post_init__(self) -> None:
        if isinstance(self.grid, list):
            object.__setattr__(self, "grid", tuple(self.grid))
        self.check_paths()
        self.check_numbers()
        if self.decoder not in DECODER_SIZES:
            raise ValueError(f"decoder must be one of {sorted(DECODER_SIZES)}, got {self.decoder!r}")
        if self.grid is not None:
            as_grid(self.grid, "grid")

    def check_paths(self) -> None:
        if not isinstance(self.encoder, str) or not self.encoder:
            raise ValueError("encoder must name a classification model file written by `lookupvit train`")
        coco = (self.train_captions, self.train_images, self.val_captions, self.val_images)
        if self.data is not None and any(path is not None for path in coco):
            raise ValueError("give either data (a layout-task root) or train_captions/train_images/val_captions/val_images, not both")
        if self.data is None and any(path is None for path in coco):
            raise ValueError("caption data missing: set data=ROOT (a layout-task root) or all of train_captions, train_images, val_captions, val_images")

    def check_numbers(self) -> None:
        """Each number against the same checks (and messages) as TrainConfig's fields."""
        checks = {
            "max_length": whole_number(2), "min_word_count": whole_number(1), "epochs": whole_number(1), "batch_size": whole_number(1),
            "seed": whole_number(0), "threads": whole_number(0), "image_size": optional_whole_number(1),
            "lr": POSITIVE, "weight_decay": NON_NEGATIVE, "warmup_epochs": NON_NEGATIVE, "clip_grad_norm": NON_NEGATIVE, "min_lr_ratio": PROBABILITY,
        }  # fmt: skip
        for name, check in checks.items():
            check_value(name, getattr(self, name), check)

    def to_dict(self) -> dict:
        return json.loads(json.dumps(dataclasses.asdict(self)))  # tuples as lists, as a checkpoint holds them

    @classmethod
    def from_dict(cls, values: dict) -> CaptionTrainConfig:
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown caption config key(s) {unknown}; valid keys: {sorted(known)}")
        return cls(**values)


def caption_sets(config: CaptionTrainConfig) -> tuple[CaptionSet, CaptionSet]:
    """The (train, val) caption sets the config names; missing files and empty caption files are refused by the reader."""
    if config.data is not None:
        return read_coco_captions(*layout_caption_paths(config.data, "train")), read_coco_captions(*layout_caption_paths(config.data, "val"))
    return read_coco_captions(config.train_captions, config.train_images), read_coco_captions(config.val_captions, config.val_images)


# --------------------------------------------------------------------------------------------
# The encoder and its inputs
# --------------------------------------------------------------------------------------------


@dataclass
class ImageInputs:
    """How images reach the encoder: resized to `image_size`, converted to its channels, normalised as it was trained."""

    normalization: Normalization
    image_size: tuple[int, int]
    channels: int

    def read(self, paths: Sequence[Path | str]) -> Tensor:
        """Model inputs (B, C, H, W) for image files."""
        return self.normalization(torch.stack([read_image(path, self.image_size, self.channels) for path in paths]))


def load_encoder(path: str | os.PathLike, device: torch.device) -> tuple[nn.Module, Normalization]:
    """The image classifier in model file `path` and its normalisation; anything else is refused with what it is."""
    metadata = read_metadata(path)
    if metadata.get("format") == CAPTIONER_FORMAT:
        raise ValueError(f"{path} is a captioner file; the encoder must be the classification model file it was trained from")
    model, normalization, _ = load_trained(path, device)
    if isinstance(model, VideoInput) or not isinstance(model, (LookupViT, ViT)):
        raise ValueError(f"{path} holds a {type(model).__name__}; a caption encoder must be an image LookupViT or ViT")  # noqa: TRY004 (the file holds the wrong model; the argument is fine)
    return model.float(), normalization


def encoder_grid(model: nn.Module, grid: int | Sequence[int] | None, image_size: tuple[int, int]) -> tuple[int, ...] | None:
    """The grid the encoder's memory is read at, checked against its lookup grid at `image_size` (None for ViT)."""
    is_lookup = isinstance(model, LookupViT)
    if grid is not None and not is_lookup:
        raise ValueError(f"the encoder is a {type(model).__name__}: its memory is all its patch tokens, it has no compressed grid; leave grid out")
    if not is_lookup:
        return None
    grid = model.compressed_grid if grid is None else as_grid(grid, "grid")
    lookup_grid = tuple(side // patch for side, patch in zip(image_size, model.config.patch_kernel))
    if not grid_fits(grid, lookup_grid):
        raise ValueError(f"grid {grid} is larger than the encoder's lookup grid {lookup_grid} at {image_size[0]}x{image_size[1]} px; choose a grid up to {lookup_grid}")
    return grid


def image_size_of(model: nn.Module, image_size: int | None) -> tuple[int, int]:
    """(H, W) the encoder reads: the config's size, else the size it was built for (its position embedding is resampled)."""
    return tuple(model.config.img_size) if image_size is None else (image_size, image_size)


def encode_all(encoder: FrozenEncoder, inputs: ImageInputs, caption_set: CaptionSet, grid, device: torch.device, label: str) -> Tensor:
    """Memory tokens (N, M, D) of every image of `caption_set`, on the CPU, in batches under no_grad."""
    chunks = []
    paths = [image.path for image in caption_set]
    for start in tqdm(range(0, len(paths), ENCODE_BATCH), desc=f"encode {label}", unit="batch", dynamic_ncols=True):
        chunks.append(encoder(inputs.read(paths[start : start + ENCODE_BATCH]).to(device), grid).float().cpu())
    return torch.cat(chunks)


def file_digest(path: str | os.PathLike) -> str:
    """The SHA-256 a model file records in its header, or that of its bytes when it records none."""
    recorded = read_metadata(path).get(CHECKSUM_KEY)
    if recorded:
        return recorded
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def image_files(caption_set: CaptionSet) -> list[list]:
    """[path, size, modification time] of every image: what tells a token cache that its images changed."""
    return [[str(image.path), image.path.stat().st_size, image.path.stat().st_mtime_ns] for image in caption_set]


def token_cache_source(config: CaptionTrainConfig, grid, image_size, train: CaptionSet, val: CaptionSet) -> dict:
    """What the cached tokens are a function of: a cache with another source is stale and recomputed."""
    return {"encoder": file_digest(config.encoder), "grid": None if grid is None else list(grid), "image_size": list(image_size),
            "train": image_files(train), "val": image_files(val)}  # fmt: skip


def captions_digest(train: CaptionSet, val: CaptionSet) -> str:
    """SHA-256 of every image key and its captions: a checkpoint of other captions is another run."""
    entries = [[split, str(image.key), list(image.captions)] for split, caption_set in (("train", train), ("val", val)) for image in caption_set]
    return hashlib.sha256(json.dumps(entries).encode()).hexdigest()


def cached_tokens(config, encoder: FrozenEncoder, inputs: ImageInputs, grid, train: CaptionSet, val: CaptionSet, device) -> dict[str, Tensor]:
    """{"train", "val"} memory tokens, read from out/tokens.pt when it was computed from the same source, else computed and stored."""
    path = Path(config.out) / TOKEN_CACHE
    source = token_cache_source(config, grid, inputs.image_size, train, val)
    if path.is_file():
        stored = torch.load(path, map_location="cpu", weights_only=True)
        if stored.get("source") == source:
            return {"train": stored["train"], "val": stored["val"]}
    tokens = {"train": encode_all(encoder, inputs, train, grid, device, "train"), "val": encode_all(encoder, inputs, val, grid, device, "val")}
    atomic_write(path, lambda tmp: torch.save({"source": source, **tokens}, tmp))
    return tokens


# --------------------------------------------------------------------------------------------
# Optimiser and epochs
# --------------------------------------------------------------------------------------------


def decoder_optimizer(decoder: CaptionDecoder, config: CaptionTrainConfig) -> torch.optim.AdamW:
    """AdamW over the decoder's parameters only, with weight decay on its matrices (not norms, biases, position embedding)."""
    decay, no_decay = [], []
    for name, param in decoder.named_parameters():
        (no_decay if param.ndim <= 1 or name == "pos_embed" else decay).append(param)
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=config.lr)


def epoch_batches(caption_set: CaptionSet, batch_size: int, seed: int, epoch: int) -> Iterator[tuple[list[int], list[str]]]:
    """(image indices, one reference caption each) per step: a random order and a random reference per image, drawn from (seed, epoch)."""
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(caption_set))
    choices = [int(rng.integers(len(caption_set[int(index)].captions))) for index in order]
    for start in range(0, len(order), batch_size):
        rows = [int(index) for index in order[start : start + batch_size]]
        yield rows, [caption_set[row].captions[choice] for row, choice in zip(rows, choices[start : start + batch_size])]


def validation_loss(decoder: CaptionDecoder, tokenizer: WordTokenizer, memory: Tensor, caption_set: CaptionSet, batch_size: int) -> float:
    """Teacher-forced loss on each validation image's first reference, averaged over images."""
    decoder.eval()
    total = 0.0
    with torch.no_grad():
        for start in range(0, len(caption_set), batch_size):
            captions = [image.captions[0] for image in caption_set.images[start : start + batch_size]]
            tokens = tokenizer.encode_batch(captions, decoder.config.max_length).to(memory.device)
            total += decoder.loss(memory[start : start + batch_size], tokens).item() * len(captions)
    return total / len(caption_set)


# --------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------


def warn_truncated(caption_set: CaptionSet, max_length: int) -> int:
    """How many training captions are longer than max_length tokens (bos and eos included); they lose their last words."""
    long = [caption for image in caption_set for caption in image.captions if len(split_words(caption)) + 2 > max_length]
    if long:
        warnings.warn(
            f"{len(long)} of the training captions are longer than max_length={max_length} tokens and are cut short "
            f"(e.g. {long[0]!r}); raise max_length to keep them whole",
            stacklevel=3,
        )
    return len(long)


class CaptionRun:
    """One invocation of a captioning run: its data, frozen encoder, decoder, optimiser and position."""

    def __init__(self, config: CaptionTrainConfig):
        self.config, self.out = config, Path(config.out)
        self.device = pick_device(config.device)
        self.train_set, self.val_set = caption_sets(config)
        model, normalization = load_encoder(config.encoder, self.device)
        image_size = image_size_of(model, config.image_size)
        self.grid = encoder_grid(model, config.grid, image_size)
        self.inputs = ImageInputs(normalization, image_size, model.config.in_chans)
        self.tokenizer = WordTokenizer.fit([caption for image in self.train_set for caption in image.captions], min_count=config.min_word_count)
        self.truncated = warn_truncated(self.train_set, config.max_length)
        torch.manual_seed(config.seed)
        decoder_config = caption_decoder_config(config.decoder, len(self.tokenizer), model.config.embed_dim, max_length=config.max_length)
        self.captioner = Captioner(FrozenEncoder(model, self.grid), CaptionDecoder(decoder_config), self.tokenizer).to(self.device)
        self.optimizer = decoder_optimizer(self.captioner.decoder, config)
        self.steps_per_epoch = math.ceil(len(self.train_set) / config.batch_size)
        total, warmup = config.epochs * self.steps_per_epoch, max(1, round(config.warmup_epochs * self.steps_per_epoch))
        schedule = functools.partial(lr_factor, total_steps=total, warmup_steps=warmup, min_ratio=config.min_lr_ratio)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, schedule)
        self.start_epoch = 0
        self.resume()
        self.out.mkdir(parents=True, exist_ok=True)
        atomic_write(self.out / "config.json", lambda tmp: Path(tmp).write_text(json.dumps(config.to_dict(), indent=2)))
        self.tokens = cached_tokens(config, self.captioner.encoder, self.inputs, self.grid, self.train_set, self.val_set, self.device)

    def resume(self) -> None:
        """Continue from out/checkpoint.pt when it holds this run (the same config, execution settings aside)."""
        path = self.out / CHECKPOINT
        if not has_checkpoint(path):
            return
        state = load_checkpoint(path)
        saved, current = state["config"], self.config.to_dict()
        changed = sorted(key for key in current if key not in EXECUTION_SETTINGS and saved.get(key) != current[key])
        if changed:
            details = "; ".join(f"{key}: {saved.get(key)!r} -> {current[key]!r}" for key in changed)
            raise ValueError(f"{self.out} holds a captioning run with another config ({details}); use another out folder or set them back")
        if state["encoder"] != file_digest(self.config.encoder):
            raise ValueError(f"{self.out} holds a run on another encoder than {self.config.encoder}; use another out folder")
        if state["captions"] != captions_digest(self.train_set, self.val_set):
            raise ValueError(f"{self.out} holds a run trained on other images or captions; point the config at its data or use another out folder")
        self.captioner.decoder.load_state_dict(state["decoder"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"])
        self.start_epoch = state["epoch"]

    def run(self, stop_after_epochs: int | None) -> None:
        config = self.config
        memory = {split: tokens.to(self.device) for split, tokens in self.tokens.items()}
        progress = tqdm(total=config.epochs * self.steps_per_epoch, initial=self.start_epoch * self.steps_per_epoch, desc="caption", unit="step", dynamic_ncols=True)
        for epoch in range(self.start_epoch, config.epochs):
            loss = self.train_epoch(epoch, memory["train"], progress)
            val_loss = validation_loss(self.captioner.decoder, self.tokenizer, memory["val"], self.val_set, config.batch_size)
            progress.write(f"epoch {epoch + 1}/{config.epochs}: train loss {loss:.3f}, val loss {val_loss:.3f}")
            self.log({"epoch": epoch + 1, "loss": round(loss, 5), "val_loss": round(val_loss, 5), "lr": self.scheduler.get_last_lr()[0], "truncated_captions": self.truncated})
            self.write_checkpoint(epoch + 1)
            if stop_after_epochs is not None and epoch + 1 - self.start_epoch >= stop_after_epochs:
                break
        progress.close()

    def train_epoch(self, epoch: int, memory: Tensor, progress: tqdm) -> float:
        """One pass over the training images, teacher-forced; returns the mean step loss."""
        decoder, losses = self.captioner.decoder.train(), []
        for rows, captions in epoch_batches(self.train_set, self.config.batch_size, self.config.seed, epoch):
            tokens = self.tokenizer.encode_batch(captions, self.config.max_length).to(self.device)
            loss = decoder.loss(memory[rows], tokens)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if self.config.clip_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(decoder.parameters(), self.config.clip_grad_norm)
            self.optimizer.step()
            self.scheduler.step()
            losses.append(loss.item())
            progress.update(1)
            progress.set_postfix(loss=f"{loss.item():.3f}")
        if not all(math.isfinite(value) for value in losses):
            raise FloatingPointError(f"non-finite loss in epoch {epoch + 1}; lower lr (now {self.config.lr}). The last checkpoint was written before it")
        return sum(losses) / len(losses)

    def log(self, record: dict) -> None:
        with open(self.out / "metrics.jsonl", "a") as handle:
            handle.write(json.dumps(record) + "\n")

    def write_checkpoint(self, epoch: int) -> None:
        state = {
            "config": self.config.to_dict(),
            "captions": captions_digest(self.train_set, self.val_set),
            "encoder": file_digest(self.config.encoder),
            "decoder": self.captioner.decoder.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": torch.get_rng_state(),
            "epoch": epoch,
        }
        save_checkpoint(self.out / CHECKPOINT, state)

    @property
    def finished(self) -> bool:
        return has_checkpoint(self.out / CHECKPOINT) and load_checkpoint(self.out / CHECKPOINT)["epoch"] >= self.config.epochs


def train_captioner(config: CaptionTrainConfig, stop_after_epochs: int | None = None) -> Path:
    """Train (or resume) the captioning run in config.out; returns the captioner file written when it finishes.

    `stop_after_epochs` ends this invocation after that many epochs (with its checkpoint), as a kill would;
    the captioner file is written only once every epoch is trained.
    """
    configure_threads(config.threads)
    run = CaptionRun(config)
    run.run(stop_after_epochs)
    path = Path(config.out) / CAPTIONER_FILE
    if run.finished:
        save_captioner(run.captioner, path, run.inputs.normalization, run.inputs.image_size)
    return path


# --------------------------------------------------------------------------------------------
# The captioner file
# --------------------------------------------------------------------------------------------


@dataclass
class TrainedCaptioner:
    """A captioner with what its inputs need: the encoder's normalisation, the image size and the grid it was trained at."""

    captioner: Captioner
    normalization: Normalization
    image_size: tuple[int, int]
    grid: tuple[int, ...] | None

    @property
    def inputs(self) -> ImageInputs:
        return ImageInputs(self.normalization, self.image_size, self.captioner.encoder.model.config.in_chans)


def save_captioner(captioner: Captioner, path: str | os.PathLike, normalization: Normalization, image_size: tuple[int, int]) -> None:
    """One .safetensors file: decoder weights under "decoder.", the encoder's under "encoder.", and in the header the
    decoder config, tokenizer, grid, image size, the encoder's architecture, config and normalisation, and a SHA-256."""
    encoder = captioner.encoder.model
    tensors = {f"decoder.{name}": tensor for name, tensor in captioner.decoder.state_dict().items()}
    tensors |= {f"encoder.{name}": tensor for name, tensor in encoder.state_dict().items()}
    tensors = {name: tensor.detach().cpu().contiguous() for name, tensor in tensors.items()}
    grid = captioner.encoder.grid
    metadata = {
        "format": CAPTIONER_FORMAT,
        "decoder_config": json.dumps(captioner.decoder.config.to_dict()),
        "tokenizer": json.dumps(captioner.tokenizer.to_dict()),
        "grid": json.dumps(None if grid is None else list(grid)),
        "image_size": json.dumps(list(image_size)),
        "encoder_arch": arch_name(encoder.config),
        "encoder_config": json.dumps(encoder.config.to_dict()),
        "normalization": json.dumps(normalization.to_json()),
    }
    metadata[CHECKSUM_KEY] = model_file_digest(tensors, metadata)
    atomic_write(Path(path), lambda tmp: save_file(tensors, tmp, metadata=metadata))


def load_captioner(path: str | os.PathLike, device: str | torch.device = "cpu") -> TrainedCaptioner:
    """Rebuild the captioner a save_captioner file holds, from that file alone (its checksum verified)."""
    metadata, tensors = read_model_file(path)
    if metadata.get("format") != CAPTIONER_FORMAT:
        raise ValueError(f"{path} is not a lookupvit captioner file (written by `lookupvit caption train`)")
    arch = metadata["encoder_arch"]
    encoder = build_model(ARCHITECTURES[arch][1](**json.loads(metadata["encoder_config"])))
    load_part(encoder, tensors, "encoder.", path)
    decoder = CaptionDecoder(CaptionDecoderConfig(**json.loads(metadata["decoder_config"])))
    load_part(decoder, tensors, "decoder.", path)
    grid = json.loads(metadata["grid"])
    grid = None if grid is None else tuple(grid)
    captioner = Captioner(FrozenEncoder(encoder, grid), decoder, WordTokenizer.from_dict(json.loads(metadata["tokenizer"])))
    normalization = Normalization.from_json(json.loads(metadata["normalization"]))
    return TrainedCaptioner(captioner.to(device).eval(), normalization, tuple(json.loads(metadata["image_size"])), grid)


def load_part(module: nn.Module, tensors: dict[str, Tensor], prefix: str, path) -> None:
    """Load the file's tensors under `prefix` into `module`, every key present and no other (a mismatch is a ValueError)."""
    state = {name.removeprefix(prefix): tensor for name, tensor in tensors.items() if name.startswith(prefix)}
    try:
        module.load_state_dict(state)
    except RuntimeError as error:
        raise ValueError(f"{path}: its {prefix.rstrip('.')} weights do not match the config it records: {str(error).splitlines()[0]}") from None


# --------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------


def decoder_flops(config: CaptionDecoderConfig, read_tokens: int, memory_tokens: int) -> int:
    """FLOPs (2 x multiply-accumulates) of a decoder that reads `read_tokens` tokens once each, as a KV-cached
    decoder does while it generates them: every matrix product of CaptionDecoder.forward on that many tokens."""
    dim, hidden = config.embed_dim, int(config.embed_dim * config.mlp_ratio)
    length, memory = read_tokens, memory_tokens
    macs = memory * config.encoder_dim * dim if config.encoder_dim != dim else 0  # memory projection
    self_attention = 4 * length * dim**2 + 2 * length**2 * dim
    cross_attention = 2 * length * dim**2 + 2 * memory * dim**2 + 2 * length * memory * dim
    macs += config.depth * (self_attention + cross_attention + 2 * length * dim * hidden)
    macs += length * dim * config.vocab_size  # tied output projection
    return 2 * macs


def generated_ids(captioner: Captioner, images: Tensor, grid, beam_size: int, length_penalty: float) -> tuple[Tensor, int]:
    """Token ids (B, T) of one caption per image, and how many memory tokens the decoder read."""
    memory = captioner.encoder(images, grid)
    if beam_size == 1:
        return captioner.decoder.greedy(memory), memory.shape[1]
    return captioner.decoder.beam_search(memory, beam_size, length_penalty), memory.shape[1]


@torch.no_grad()
def evaluate_captioner(
    captioner: TrainedCaptioner,
    caption_set: CaptionSet,
    grid: int | Sequence[int] | None = None,
    beam_size: int = 1,
    length_penalty: float = 0.6,
    batch_size: int = 64,
    num_examples: int = 5,
    metric_tokenizer: str = "auto",
) -> dict:
    """Caption every image of `caption_set` and score against its references (CIDEr-D, BLEU-4, ROUGE-L...).

    grid: where a LookupViT encoder is read (None: the grid it was trained at); metric_tokenizer: caption_scores
    tokenizer ("auto", "ptb" or "simple"). GFLOPs per caption =
    the encoder's analytic FLOPs at that grid and image size + the decoder's (decoder_flops, over each
    generated caption's length, times beam_size for beam search: every hypothesis reads its tokens).
    """
    model = captioner.captioner.encoder.model
    grid = encoder_grid(model, captioner.grid if grid is None else grid, captioner.image_size)
    device = next(model.parameters()).device
    inputs, decoder, vocabulary = captioner.inputs, captioner.captioner.decoder, captioner.captioner.tokenizer
    candidates, decoder_total = {}, 0
    for start in range(0, len(caption_set), batch_size):
        entries = caption_set.images[start : start + batch_size]
        ids, memory_tokens = generated_ids(captioner.captioner, inputs.read([entry.path for entry in entries]).to(device), grid, beam_size, length_penalty)
        for entry, sequence in zip(entries, ids):
            candidates[entry.key] = vocabulary.decode(sequence)
            read_tokens = int((sequence != decoder.config.pad_id).sum()) - 1  # bos .. the token before eos
            decoder_total += beam_size * decoder_flops(decoder.config, max(read_tokens, 1), memory_tokens)
    references = caption_set.references()
    scores = caption_scores(references, candidates, metric_tokenizer)
    encoder_gflops = analytic_flops(model.config, captioner.image_size, grid) / 1e9
    decoder_gflops = decoder_total / len(caption_set) / 1e9
    examples = [{"key": key, "generated": candidates[key], "references": references[key]} for key in list(candidates)[:num_examples]]
    return {
        "grid": None if grid is None else list(grid),
        "beam_size": beam_size,
        "num_images": len(caption_set),
        "scores": scores.as_dict(),
        "gflops": {"encoder": encoder_gflops, "decoder": decoder_gflops, "total": encoder_gflops + decoder_gflops},
        "examples": examples,
    }


@torch.no_grad()
def caption_images(captioner: TrainedCaptioner, paths: Sequence[str | os.PathLike], grid=None, beam_size: int = 1) -> list[str]:
    """One caption per image file, at `grid` (None: the grid the captioner was trained at)."""
    model = captioner.captioner.encoder.model
    grid = encoder_grid(model, captioner.grid if grid is None else grid, captioner.image_size)
    images = captioner.inputs.read(paths).to(next(model.parameters()).device)
    return captioner.captioner.generate(images, grid, beam_size)
