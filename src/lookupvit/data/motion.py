"""A video task that needs time: which way a Fashion-MNIST item moves, written as real H.264 mp4 files.

Every video shows one item sliding left, right, up or down at constant speed over a canvas that
wraps around its edges (a torus). With `distractors` > 0 the moving item is a shoe (sandal, sneaker or
ankle boot) and that many clothing items move too, each its own way, so the label is "which way does
the shoe move": a model has to bind what an item is to how it moves. Nothing in a single frame tells
the direction:

- the item's position in a frame is uniform on the torus whatever the class (the start is uniform,
  and a uniform start shifted by any motion is uniform again, also after rounding to the render grid);
- the item (any Fashion-MNIST image of the split), its size and its speed are drawn the same way
  for every class, so what a frame shows and how large it is are the same too;
- the motion is rendered at the item's true sub-pixel position (on a canvas `upsample` times finer,
  then box-filtered down), so no blur or stepping pattern differs between directions;
- the luma is encoded losslessly (x264 at qp 0), so no encoder artefact can depend on the motion.

A model must compare at least two frames. The train videos take their items from Fashion-MNIST's
train split, the val videos from its test split, so no item is in both.

`write_motion_videos(root)` writes root/{train,val}/<direction>/<n>.mp4 and root/manifest.json (the
settings, the software, every file's SHA-256). The output is a function of the settings: each
video has its own seed from (seed, split, class, n), and x264 runs on one thread. Calling it again
with the same settings only verifies the files against the manifest; other settings are refused
unless overwrite=True. Videos are written one at a time (memory stays flat) into a temporary
folder that takes root's name when complete, so an interrupted run leaves no half-written tree.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .fashion_mnist import load_fashion_mnist
from .generated import (
    MANIFEST,  # noqa: F401 (re-exported: callers and tests find the manifest's name here)
    SPLITS,
    FolderKind,
    check_positive_whole_numbers,
    check_seed,
    existing_manifest,
    progress_bar,
    settings_json,
    sha256_file,
    write_staged,
)

MOTION_CLASSES = ("down", "left", "right", "up")  # sorted: the labels the class folders get
DIRECTIONS = {"down": (1.0, 0.0), "left": (0.0, -1.0), "right": (0.0, 1.0), "up": (-1.0, 0.0)}  # (rows, columns) per frame
# With distractors: the target is footwear, the distractors are the other Fashion-MNIST classes.
TARGET_CLASSES = (5, 7, 9)  # sandal, sneaker, ankle boot
FORMAT = "lookupvit-motion/1"


@dataclass(frozen=True)
class MotionSettings:
    """Everything the videos depend on; the manifest records it and a rerun must match it."""

    train_per_class: int
    val_per_class: int
    seed: int
    frames: int
    canvas: int  # frame side in pixels
    scale: tuple[float, float]  # the item's side in pixels, uniform in [low, high], fixed over a clip
    speed: tuple[float, float]  # pixels per frame, uniform in [low, high]
    upsample: int  # render grid steps per pixel: positions are exact to 1/upsample pixel
    fps: int
    distractors: int = 0  # other items moving each its own way; > 0 makes the moving shoe the target

    def check(self) -> None:
        check_positive_whole_numbers(self, ("train_per_class", "val_per_class", "frames", "canvas", "upsample", "fps"))
        if not isinstance(self.distractors, int) or isinstance(self.distractors, bool) or self.distractors < 0:
            raise ValueError(f"distractors must be a whole number >= 0, got {self.distractors!r}")
        check_seed(self.seed)
        if self.frames < 2:
            raise ValueError(f"frames must be at least 2: a direction of motion needs two frames, got {self.frames}")
        if self.canvas % 2:
            raise ValueError(f"canvas must be even (H.264 in yuv420p halves the frame for colour), got {self.canvas}")
        if not 0 < self.scale[0] <= self.scale[1] <= self.canvas:
            raise ValueError(f"scale must be (low, high) with 0 < low <= high <= canvas {self.canvas}, got {self.scale}")
        if not 0 < self.speed[0] <= self.speed[1] < self.canvas / 2:
            # On a torus a step of more than half the canvas looks like a shorter step the other way.
            raise ValueError(f"speed must be (low, high) with 0 < low <= high < canvas / 2 = {self.canvas / 2}, got {self.speed}")

    def to_json(self) -> dict:
        return settings_json(self)

    @classmethod
    def from_json(cls, value: dict) -> MotionSettings:
        """The settings a manifest records (its "settings")."""
        return cls(**{key: tuple(item) if isinstance(item, list) else item for key, item in value.items()})


@dataclass(frozen=True)
class ClipParameters:
    """What one video shows: which item, how large, where it starts and how it moves."""

    item: int  # index into the Fashion-MNIST split
    side: float  # pixels
    start: tuple[float, float]  # (row, column) of the item's top-left corner in frame 0, on the torus
    velocity: tuple[float, float]  # (rows, columns) per frame


def draw_item(rng: np.random.Generator, direction: str, pool: Tensor, settings: MotionSettings) -> ClipParameters:
    """One item's random parameters; every draw but the direction has the same distribution for every class."""
    item = int(pool[int(rng.integers(len(pool)))])
    side = float(rng.uniform(*settings.scale))
    start = (float(rng.uniform(0, settings.canvas)), float(rng.uniform(0, settings.canvas)))
    speed = float(rng.uniform(*settings.speed))
    rows, columns = DIRECTIONS[direction]
    return ClipParameters(item, side, start, (rows * speed, columns * speed))


def draw_clip(rng: np.random.Generator, direction: str, item_labels: Tensor, settings: MotionSettings) -> list[ClipParameters]:
    """The items of one video, the one whose motion is the label first; `item_labels` are the split's Fashion-MNIST labels."""
    if settings.distractors == 0:
        return [draw_item(rng, direction, torch.arange(len(item_labels)), settings)]
    is_target = torch.isin(item_labels, torch.tensor(TARGET_CLASSES))
    target = draw_item(rng, direction, is_target.nonzero()[:, 0], settings)
    others = (~is_target).nonzero()[:, 0]
    return [target] + [draw_item(rng, MOTION_CLASSES[int(rng.integers(len(MOTION_CLASSES)))], others, settings) for _ in range(settings.distractors)]


def render_clip(item: Tensor, clip: ClipParameters, frames: int, canvas: int, upsample: int) -> Tensor:
    """uint8 (frames, canvas, canvas): the item (28, 28) scaled to clip.side pixels, at its exact position in each frame.

    The item is drawn on a canvas `upsample` times finer, rolled around the torus to the position
    rounded to that grid, then averaged back to canvas pixels (a box filter: anti-aliased, and the
    same for every direction).
    """
    fine = canvas * upsample
    pixels = max(1, round(clip.side * upsample))
    sprite = F.interpolate(item.float()[None, None], size=(pixels, pixels), mode="bilinear", align_corners=False)[0, 0]
    layer = torch.zeros(fine, fine)
    layer[:pixels, :pixels] = sprite.clamp(0, 255)
    shifted = []
    for k in range(frames):
        row = round((clip.start[0] + k * clip.velocity[0]) * upsample) % fine
        column = round((clip.start[1] + k * clip.velocity[1]) * upsample) % fine
        shifted.append(layer.roll((row, column), dims=(0, 1)))
    video = F.avg_pool2d(torch.stack(shifted)[:, None], upsample)[:, 0]
    return video.round().clamp(0, 255).to(torch.uint8)


def encode_gray_video(path: Path, frames: Tensor, fps: int) -> None:
    """uint8 (T, H, W) grey frames as an H.264 mp4 (yuv420p), luma lossless, x264 on one thread (same bytes every run)."""
    import av

    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.codec_context.thread_count = 1  # several threads split the work differently from run to run
        stream.options = {"qp": "0", "threads": "1"}
        for array in frames.numpy():
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(array), format="gray")):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


def video_rng(seed: int, split: str, label: int, index: int) -> np.random.Generator:
    """Video `index` of class `label` in `split` has its own stream: changing a count leaves the other videos alone."""
    return np.random.default_rng([seed, list(SPLITS).index(split), label, index])


def make_clip(settings: MotionSettings, split: str, label: int, index: int, items: Tensor, item_labels: Tensor) -> tuple[list[ClipParameters], Tensor]:
    """Video `index` of class `label` in `split`: its items' parameters and its uint8 frames (frames, canvas, canvas).

    `items` are the Fashion-MNIST images (N, 1, 28, 28) of the split's source (SPLITS), `item_labels` their classes.
    Overlapping items are drawn with the brighter pixel on top, so none hides another entirely.
    """
    clips = draw_clip(video_rng(settings.seed, split, label, index), MOTION_CLASSES[label], item_labels, settings)
    layers = [render_clip(items[clip.item, 0], clip, settings.frames, settings.canvas, settings.upsample) for clip in clips]
    return clips, torch.stack(layers).amax(dim=0)


def software_versions() -> dict:
    import av

    libavcodec = ".".join(map(str, av.library_versions.get("libavcodec", ())))
    return {"av": av.__version__, "libavcodec": libavcodec, "torch": torch.__version__}


def write_split(folder: Path, split: str, count: int, settings: MotionSettings, items, progress) -> dict[str, str]:
    """`count` videos per class into folder/<split>/<class>/; {relative path: sha256}."""
    files = {}
    digits = max(4, len(str(count - 1)))
    for label, direction in enumerate(MOTION_CLASSES):
        (folder / split / direction).mkdir(parents=True)
        for index in range(count):
            _, frames = make_clip(settings, split, label, index, items.images, items.labels)
            relative = f"{split}/{direction}/{index:0{digits}d}.mp4"
            encode_gray_video(folder / relative, frames, settings.fps)
            files[relative] = sha256_file(folder / relative)
            progress.update()
    return files


def split_videos(root: Path) -> Iterable[Path]:
    """The videos under root/<split>/: what a manifest must list (other files in root are left alone)."""
    return (path for split in SPLITS for path in (root / split).rglob("*.mp4"))


MOTION_VIDEOS = FolderKind(FORMAT, what="motion videos", folder="motion-video folder", items="videos", listed_files=split_videos)


def write_motion_videos(
    root: str | os.PathLike,
    fashion_mnist_root: str | os.PathLike | None = None,
    train_per_class: int = 1000,
    val_per_class: int = 250,
    seed: int = 0,
    frames: int = 16,
    canvas: int = 32,
    scale: tuple[float, float] = (12.0, 20.0),
    speed: tuple[float, float] = (1.0, 2.5),
    upsample: int = 8,
    fps: int = 16,
    distractors: int = 0,
    download: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> dict:
    """Write (or verify) root/{train,val}/<direction>/<n>.mp4 and root/manifest.json; returns the manifest.

    Fashion-MNIST is read from `fashion_mnist_root` or where load_fashion_mnist finds it (the Debian
    package's /usr/share/datasets/fashion-mnist, $LOOKUPVIT_FASHION_MNIST); downloaded (checksums
    verified) only with download=True.
    """
    root = Path(root)
    settings = MotionSettings(
        train_per_class, val_per_class, seed, frames, canvas, tuple(map(float, scale)), tuple(map(float, speed)), upsample, fps, distractors
    )
    settings.check()
    manifest = existing_manifest(root, settings.to_json(), overwrite, MOTION_VIDEOS)
    if manifest is not None:
        return manifest

    def write_contents(folder: Path) -> dict:
        files = {}
        total = len(MOTION_CLASSES) * (train_per_class + val_per_class)
        with progress_bar(MOTION_VIDEOS, root, total, "video", progress) as bar:
            for split, count in (("train", train_per_class), ("val", val_per_class)):
                items = load_fashion_mnist(SPLITS[split], fashion_mnist_root, download=download)
                files.update(write_split(folder, split, count, settings, items, bar))
        return {
            "format": FORMAT,
            "classes": list(MOTION_CLASSES),
            "settings": settings.to_json(),
            "software": software_versions(),
            "files": files,
        }

    return write_staged(root, write_contents)
