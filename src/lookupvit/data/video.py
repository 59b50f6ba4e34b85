"""Video clips for the video models: decoding, frame sampling, a class-folder source and a clip transform.

Decoding goes through a one-method `VideoReader` interface, implemented here with PyAV (FFmpeg's
libraries, bundled in PyAV's wheels). torchvision.io.read_video is deprecated in favour of
TorchCodec; TorchCodec needs a system FFmpeg of a matching version and is young, so PyAV does the
work today and a TorchCodec reader can replace it later without touching the source or the tests.

A clip is sampled from a video in two ways: training takes `num_frames` frames `stride` apart from
a random start (torch's global RNG, which the loader seeds per sample, so a run is reproducible);
evaluation takes `num_frames` frames spread evenly over the whole video (deterministic).

`VideoFolderSource` is a streamed source like `ImageTreeSource` (root/<split>/<class>/<video>), so
`TransformedImages`, `make_loader` and the corrupt-file replacement work on it unchanged; its
`read` returns a uint8 clip (C, T, H, W), channels first as the video models take them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch import Tensor

from .datasets import check_class_names
from .sources import CorruptImage, file_list_digest, list_class_tree

VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".mkv", ".webm", ".mov"})


class CorruptVideo(CorruptImage):
    """A video that does not decode or has no frames; the loader counts it and reads a replacement."""


class VideoReader(Protocol):
    def read_frames(self, path: str | os.PathLike, channels: int) -> Tensor:
        """Every frame of the video at `path` as uint8 (T, H, W, channels); CorruptVideo if it does not decode."""
        ...


class PyAVReader:
    """Decodes the first video stream of a file with PyAV, frame by frame, to RGB or grey."""

    def read_frames(self, path: str | os.PathLike, channels: int) -> Tensor:
        import av

        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 (grey) or 3 (RGB), got {channels}")
        pixel_format = "gray" if channels == 1 else "rgb24"
        try:
            with av.open(str(path)) as container:
                if not container.streams.video:
                    raise CorruptVideo(f"{path} has no video stream")
                frames = [frame.to_ndarray(format=pixel_format) for frame in container.decode(video=0)]
        except FileNotFoundError:
            raise  # a missing file is a broken file list, not a damaged video: do not replace it silently
        except (av.error.FFmpegError, ValueError, OSError) as error:
            if isinstance(error, CorruptVideo):
                raise
            raise CorruptVideo(f"{path} does not decode as a video ({str(error).splitlines()[0][:120]})") from None
        if not frames:
            raise CorruptVideo(f"{path} decodes to no frames")
        clip = torch.from_numpy(np.stack(frames))
        return clip.unsqueeze(-1) if channels == 1 else clip


def check_clip_length(num_frames: int, stride: int = 1) -> None:
    if not (isinstance(num_frames, int) and num_frames >= 1 and isinstance(stride, int) and stride >= 1):
        raise ValueError(f"num_frames and stride must be positive integers, got num_frames={num_frames!r}, stride={stride!r}")


def training_frame_indices(available: int, num_frames: int, stride: int) -> Tensor:
    """`num_frames` indices `stride` apart from a random start (torch's global RNG).

    A video shorter than the clip's span, (num_frames - 1) x stride + 1 frames, starts at frame 0
    and is padded by repeating its last frame (not looped: looping would jump back in time).
    """
    check_clip_length(num_frames, stride)
    if available < 1:
        raise CorruptVideo(f"a video with {available} frames has nothing to sample")
    span = (num_frames - 1) * stride + 1
    start = int(torch.randint(0, available - span + 1, ())) if available >= span else 0
    return (start + stride * torch.arange(num_frames)).clamp(max=available - 1)


def evaluation_frame_indices(available: int, num_frames: int) -> Tensor:
    """`num_frames` indices spread evenly from the first to the last frame (repeating frames of a short video)."""
    check_clip_length(num_frames)
    if available < 1:
        raise CorruptVideo(f"a video with {available} frames has nothing to sample")
    return torch.linspace(0, available - 1, num_frames).round().long()


class VideoFolderSource:
    """root/<split>/<class>/<video>: `read(i)` decodes video i and samples a uint8 clip (channels, num_frames, H, W)."""

    streamed = True

    def __init__(
        self,
        root: str | os.PathLike,
        split: str,
        num_frames: int,
        stride: int = 1,
        channels: int = 3,
        training: bool = True,
        reader: VideoReader | None = None,
    ):
        check_clip_length(num_frames, stride)
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 (grey) or 3 (RGB), got {channels}")
        self.root, self.split = Path(root), split
        self.num_frames, self.stride, self.channels, self.training = num_frames, stride, channels, training
        self.reader = reader if reader is not None else PyAVReader()
        split_dir = self.root / split
        if not split_dir.is_dir():
            raise FileNotFoundError(
                f"{self.root} has no {split}/ folder; a video tree is {self.root}/train/<class>/<video> and {self.root}/val/<class>/<video>"
            )
        self.classes, self.paths, self.labels = list_class_tree(split_dir, VIDEO_SUFFIXES, "video")

    def __len__(self) -> int:
        return len(self.paths)

    def frame_indices(self, available: int) -> Tensor:
        if self.training:
            return training_frame_indices(available, self.num_frames, self.stride)
        return evaluation_frame_indices(available, self.num_frames)

    def read(self, index: int) -> Tensor:
        path = self.root / self.split / self.paths[index].decode()
        frames = self.reader.read_frames(path, self.channels)  # (T, H, W, C)
        clip = frames[self.frame_indices(len(frames))]
        return clip.permute(3, 0, 1, 2).contiguous()  # (C, num_frames, H, W)

    def fingerprint(self) -> dict:
        """Class names, size, sampling and a hash of the file list with sizes (the files are not read)."""
        sampling = {"num_frames": self.num_frames, "stride": self.stride, "training": self.training}
        digest = file_list_digest(self.root / self.split, self.paths)
        return {"classes": list(self.classes), "images": len(self), "clips": sampling, "sha256": digest}


def open_video_tree(
    root: str | os.PathLike, num_frames: int, stride: int = 1, channels: int = 3
) -> tuple[VideoFolderSource, VideoFolderSource]:
    """The train split with training sampling and the val split with evaluation sampling; class lists must match."""
    train = VideoFolderSource(root, "train", num_frames, stride, channels, training=True)
    val = VideoFolderSource(root, "val", num_frames, stride, channels, training=False)
    check_class_names(train.classes, val.classes, f"{root}/train", f"{root}/val")
    return train, val


class ClipTransform:
    """uint8 clip (C, T, H, W) -> normalised float (C, T, size, size), one spatial crop/flip for all frames.

    The clip is handed to torchvision.transforms.v2 as (T, C, H, W): v2 treats the leading dimension
    as a batch and draws one set of random parameters per call, so every frame gets the same crop.
    """

    def __init__(
        self,
        size: int,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        training: bool,
        flip: bool = True,
        resize: int | None = None,
    ):
        from torchvision.transforms import v2

        # The short side goes to `resize` (default: size); training then crops at random, evaluation at the centre.
        steps = [v2.Resize(resize or size, antialias=True), v2.RandomCrop(size) if training else v2.CenterCrop(size)]
        if training and flip:
            steps.append(v2.RandomHorizontalFlip())
        steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]
        self.frames_transform = v2.Compose(steps)

    def __call__(self, clip: Tensor) -> Tensor:
        frames = self.frames_transform(clip.permute(1, 0, 2, 3))  # (T, C, size, size)
        return frames.permute(1, 0, 2, 3).contiguous()


def clip_transform(
    size: int, mean: tuple[float, ...], std: tuple[float, ...], training: bool, flip: bool = True, resize: int | None = None
) -> ClipTransform:
    """The training (random crop, flip) or evaluation (centre crop) transform of uint8 clips (C, T, H, W).

    The short side is resized to `resize` (default `size`) first; with the default a square video's
    random crop is the whole frame, so pass resize > size for random spatial crops of square videos.
    """
    return ClipTransform(size, mean, std, training, flip, resize)
