"""Video clips for the video models: decoding, frame sampling, a class-folder source and clip transforms.

Decoding goes through a one-method `VideoReader` interface, implemented here with PyAV (FFmpeg's
libraries, bundled in PyAV's wheels). torchvision.io.read_video is deprecated in favour of
TorchCodec; TorchCodec needs a system FFmpeg of a matching version and is young, so PyAV does the
work today and a TorchCodec reader can replace it later without touching the source or the tests.

A clip is always `num_frames` frames `stride` apart, in training and in evaluation alike: a model
of motion would otherwise see another speed at test time. Training starts the clip at random
(torch's global RNG, which the loader seeds per sample, so a run is reproducible); evaluation
follows ViViT (scenic/DMVR): one view is the centred clip, T temporal views start at T evenly
spaced points from the first possible start to the last.

ViViT evaluates on 4 temporal x 3 spatial = 12 views per video and averages the logits. Here
a video source with temporal_views=T reads the T clips of a video as (T, C, num_frames, H, W) and
`MultiViewClipTransform` cuts S = 1 or 3 spatial crops of each: (T*S, C, num_frames, size, size)
per video, which evaluation.accuracy.evaluate folds into the batch and averages per video.

Where the bytes of a video come from and how clips are taken from its frames are separate:
`ClipSampler` samples decoded frames, and two streamed sources feed it, `VideoFolderSource`
(root/<split>/<class>/<video>, here) and `VideoShardSource` (tar shards, data/shards.py). Both have
the interface of `ImageTreeSource`, so `TransformedImages`, `make_loader` and the corrupt-file
replacement work on them unchanged; a one-view `read` returns a uint8 clip (C, T, H, W), channels
first as the video models take them.
"""

from __future__ import annotations

import io
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
    def decode_frames(self, data: bytes, channels: int, where: str) -> Tensor:
        """Every frame of the encoded video `data` as uint8 (T, H, W, channels); CorruptVideo naming `where` if it won't decode."""
        ...


class PyAVReader:
    """Decodes the first video stream of an encoded file (its bytes, from a tree or a shard) with PyAV, to RGB or grey."""

    def read_frames(self, path: str | os.PathLike, channels: int) -> Tensor:
        """The frames of the video file at `path`; FileNotFoundError if it is missing (a broken file list, not a bad video)."""
        return self.decode_frames(Path(path).read_bytes(), channels, str(path))

    def decode_frames(self, data: bytes, channels: int, where: str) -> Tensor:
        import av
        from av.video.reformatter import VideoReformatter

        check_channels(channels)
        pixel_format = "gray" if channels == 1 else "rgb24"
        try:
            # From memory: a shard member has no file of its own, and FFmpeg probes and seeks a BytesIO like a file.
            with av.open(io.BytesIO(data)) as container:
                if not container.streams.video:
                    raise CorruptVideo(f"{where} has no video stream")
                # One reformatter for all frames keeps FFmpeg's colour converter instead of building one per
                # frame, which costs more than decoding a small video; the pixels are the same.
                reformatter = VideoReformatter()
                frames = [reformatter.reformat(frame, format=pixel_format).to_ndarray() for frame in container.decode(video=0)]
        except CorruptVideo:
            raise
        except (av.error.FFmpegError, ValueError, OSError) as error:
            raise CorruptVideo(f"{where} does not decode as a video ({str(error).splitlines()[0][:120]})") from None
        if not frames:
            raise CorruptVideo(f"{where} decodes to no frames")
        clip = torch.from_numpy(np.stack(frames))
        return clip.unsqueeze(-1) if channels == 1 else clip


def check_channels(channels: int) -> None:
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 (grey) or 3 (RGB), got {channels}")


def check_clip_length(num_frames: int, stride: int = 1) -> None:
    if not (isinstance(num_frames, int) and num_frames >= 1 and isinstance(stride, int) and stride >= 1):
        raise ValueError(f"num_frames and stride must be positive integers, got num_frames={num_frames!r}, stride={stride!r}")


def clip_span(num_frames: int, stride: int) -> int:
    """Frames from a clip's first to its last: (num_frames - 1) x stride + 1."""
    return (num_frames - 1) * stride + 1


def training_frame_indices(available: int, num_frames: int, stride: int) -> Tensor:
    """`num_frames` indices `stride` apart from a random start (torch's global RNG).

    A video shorter than the clip's span, (num_frames - 1) x stride + 1 frames, starts at frame 0
    and is padded by repeating its last frame (not looped: looping would jump back in time).
    """
    check_clip_length(num_frames, stride)
    if available < 1:
        raise CorruptVideo(f"a video with {available} frames has nothing to sample")
    span = clip_span(num_frames, stride)
    start = int(torch.randint(0, available - span + 1, ())) if available >= span else 0
    return (start + stride * torch.arange(num_frames)).clamp(max=available - 1)


def evaluation_view_indices(available: int, num_frames: int, stride: int = 1, temporal_views: int = 1) -> Tensor:
    """(temporal_views, num_frames) frame indices: clips of `num_frames` frames `stride` apart, as in training.

    ViViT's (scenic/DMVR's) test sampling: one view is the clip centred in the video; T views start
    at T points spaced evenly (rounded down) from the first possible start to the last. A video
    shorter than the span starts at 0 and repeats its last frame, as training does, so its views coincide.
    """
    check_clip_length(num_frames, stride)
    if not (isinstance(temporal_views, int) and temporal_views >= 1):
        raise ValueError(f"temporal_views must be a positive integer, got {temporal_views!r}")
    if available < 1:
        raise CorruptVideo(f"a video with {available} frames has nothing to sample")
    last_start = max(available - clip_span(num_frames, stride), 0)
    if temporal_views == 1:
        starts = torch.tensor([last_start // 2])
    else:
        # floor(linspace(0, last_start, T)) in integers: float rounding cannot move a start down a frame.
        starts = torch.arange(temporal_views) * last_start // (temporal_views - 1)
    return (starts[:, None] + stride * torch.arange(num_frames)).clamp(max=available - 1)


def evaluation_frame_indices(available: int, num_frames: int, stride: int = 1) -> Tensor:
    """`num_frames` indices `stride` apart, the clip centred in the video: the one-view evaluation clip."""
    return evaluation_view_indices(available, num_frames, stride, temporal_views=1)[0]


class ClipSampler:
    """How clips are taken from a decoded video, wherever its bytes came from (a tree or shards).

    One view (temporal_views=None): a clip (C, num_frames, H, W), at random in training, the centred
    clip in evaluation. temporal_views=T (evaluation only): T clips (T, C, num_frames, H, W).
    """

    def __init__(self, num_frames: int, stride: int = 1, training: bool = True, temporal_views: int | None = None):
        check_clip_length(num_frames, stride)
        if temporal_views is not None and (training or not isinstance(temporal_views, int) or temporal_views < 1):
            raise ValueError(
                f"temporal_views={temporal_views!r} with training={training}: several views are for evaluation; "
                "pass training=False and a positive number of views, or temporal_views=None for one clip"
            )
        self.num_frames, self.stride, self.training, self.temporal_views = num_frames, stride, training, temporal_views

    def frame_indices(self, available: int) -> Tensor:
        """(num_frames,) indices of the one-view clip, or (temporal_views, num_frames) for several views."""
        if self.training:
            return training_frame_indices(available, self.num_frames, self.stride)
        if self.temporal_views is None:
            return evaluation_frame_indices(available, self.num_frames, self.stride)
        return evaluation_view_indices(available, self.num_frames, self.stride, self.temporal_views)

    def clip(self, frames: Tensor) -> Tensor:
        """Decoded frames (T, H, W, C) -> the clip (C, num_frames, H, W) or clips (views, C, num_frames, H, W)."""
        clips = frames[self.frame_indices(len(frames))]  # (num_frames, H, W, C) or (views, num_frames, H, W, C)
        return clips.movedim(-1, -4).contiguous()

    def settings(self) -> dict:
        """The sampling as a source's fingerprint records it."""
        sampling = {"num_frames": self.num_frames, "stride": self.stride, "training": self.training}
        if self.temporal_views is not None:
            sampling["temporal_views"] = self.temporal_views
        return sampling


class ClipReading:
    """What every video source shares, wherever its bytes come from (a folder, shards): sampling and decoding."""

    def init_clip_reading(
        self, num_frames: int, stride: int, channels: int, training: bool, reader: VideoReader | None, temporal_views: int | None
    ) -> None:
        self.sampler = ClipSampler(num_frames, stride, training, temporal_views)
        check_channels(channels)
        self.num_frames, self.channels = num_frames, channels
        self.reader = reader if reader is not None else PyAVReader()

    def clip(self, data: bytes, where: str) -> Tensor:
        """An encoded video's uint8 clip (C, F, H, W), or its views (T, C, F, H, W)."""
        return self.sampler.clip(self.reader.decode_frames(data, self.channels, where))


class VideoFolderSource(ClipReading):
    """root/<split>/<class>/<video>: `read(i)` decodes video i and samples uint8 clips from it (see ClipSampler)."""

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
        temporal_views: int | None = None,
    ):
        self.init_clip_reading(num_frames, stride, channels, training, reader, temporal_views)
        self.root, self.split = Path(root), split
        split_dir = self.root / split
        if not split_dir.is_dir():
            raise FileNotFoundError(
                f"{self.root} has no {split}/ folder; a video tree is {self.root}/train/<class>/<video> and {self.root}/val/<class>/<video>"
            )
        self.classes, self.paths, self.labels = list_class_tree(split_dir, VIDEO_SUFFIXES, "video")

    def __len__(self) -> int:
        return len(self.paths)

    def read(self, index: int) -> Tensor:
        path = self.root / self.split / self.paths[index].decode()
        return self.clip(path.read_bytes(), str(path))

    def fingerprint(self) -> dict:
        """Class names, size, sampling and a hash of the file list with sizes (the files are not read)."""
        digest = file_list_digest(self.root / self.split, self.paths)
        return {"classes": list(self.classes), "images": len(self), "clips": self.sampler.settings(), "sha256": digest}


def open_video_tree(
    root: str | os.PathLike, num_frames: int, stride: int = 1, channels: int = 3, temporal_views: int | None = None
) -> tuple[VideoFolderSource, VideoFolderSource]:
    """The train split with training sampling and the val split with evaluation sampling (one clip, or
    `temporal_views` clips per video); both `stride` apart, and the class lists must match."""
    train = VideoFolderSource(root, "train", num_frames, stride, channels, training=True)
    val = VideoFolderSource(root, "val", num_frames, stride, channels, training=False, temporal_views=temporal_views)
    check_class_names(train.classes, val.classes, f"{root}/train", f"{root}/val")
    return train, val


def per_channel(value: float | tuple[float, ...]) -> list[float]:
    """A normalisation mean or std as v2.Normalize takes it; one number (data.Normalization allows it) serves every channel."""
    return list(value) if isinstance(value, (tuple, list)) else [float(value)]


class ClipTransform:
    """uint8 clip (C, T, H, W) -> normalised float (C, T, size, size), one spatial crop/flip for all frames.

    The clip is handed to torchvision.transforms.v2 as (T, C, H, W): v2 treats the leading dimension
    as a batch and draws one set of random parameters per call, so every frame gets the same crop.
    """

    def __init__(
        self,
        size: int,
        mean: float | tuple[float, ...],
        std: float | tuple[float, ...],
        training: bool,
        flip: bool = True,
        resize: int | None = None,
    ):
        from torchvision.transforms import v2

        # The short side goes to `resize` (default: size); training then crops at random, evaluation at the centre.
        steps = [v2.Resize(resize or size, antialias=True), v2.RandomCrop(size) if training else v2.CenterCrop(size)]
        if training and flip:
            steps.append(v2.RandomHorizontalFlip())
        steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(per_channel(mean), per_channel(std))]
        self.frames_transform = v2.Compose(steps)

    def __call__(self, clip: Tensor) -> Tensor:
        frames = self.frames_transform(clip.permute(1, 0, 2, 3))  # (T, C, size, size)
        return frames.permute(1, 0, 2, 3).contiguous()


def clip_transform(
    size: int,
    mean: float | tuple[float, ...],
    std: float | tuple[float, ...],
    training: bool,
    flip: bool = True,
    resize: int | None = None,
) -> ClipTransform:
    """The training (random crop, flip) or evaluation (centre crop) transform of uint8 clips (C, T, H, W).

    The short side is resized to `resize` (default `size`) first; with the default a square video's
    random crop is the whole frame, so pass resize > size for random spatial crops of square videos.
    """
    return ClipTransform(size, mean, std, training, flip, resize)


def spatial_crop_offsets(height: int, width: int, size: int, spatial_views: int) -> list[tuple[int, int]]:
    """(top, left) of the evaluation crops of `size` x `size` in a height x width frame.

    One view: the centre crop (torchvision's CenterCrop offsets, so it equals ClipTransform's).
    Three views (ViViT/DMVR's test crops): start, centre and end of the long side, centred on the
    short side; a square frame counts its width as the long side. When the frame's long side equals
    `size` (a square frame resized to the crop size) the three crops coincide: three equal views,
    which average to the one-view result.
    """
    if spatial_views not in (1, 3):
        raise ValueError(f"spatial_views must be 1 (centre crop) or 3 (start, centre, end of the long side), got {spatial_views!r}")
    if height < size or width < size:
        raise ValueError(f"a {height}x{width} frame is smaller than the {size}x{size} crop; resize it to at least {size} first")
    top, left = round((height - size) / 2), round((width - size) / 2)
    if spatial_views == 1:
        return [(top, left)]
    if height > width:
        return [(0, left), (top, left), (height - size, left)]
    return [(top, 0), (top, left), (top, width - size)]


class MultiViewClipTransform:
    """uint8 clips (T, C, F, H, W) -> normalised float views (T*S, C, F, size, size), temporal-major.

    The short side is resized to `resize` (default: size), then each of the T clips gives S spatial
    crops (see spatial_crop_offsets); view t*S + s is clip t at crop s. With T = S = 1 the one view
    equals ClipTransform(training=False) on that clip.
    """

    def __init__(
        self, size: int, mean: float | tuple[float, ...], std: float | tuple[float, ...], spatial_views: int = 3, resize: int | None = None
    ):
        from torchvision.transforms import v2

        spatial_crop_offsets(size, size, size, spatial_views)  # refuses a bad spatial_views now, not at the first clip
        self.size, self.spatial_views = size, spatial_views
        self.resize = v2.Resize(resize or size, antialias=True)
        self.normalize = v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(per_channel(mean), per_channel(std))])

    def __call__(self, clips: Tensor) -> Tensor:
        if clips.ndim != 5:
            raise ValueError(
                f"MultiViewClipTransform takes clips (views, C, frames, H, W), got shape {tuple(clips.shape)}; "
                "read them with VideoFolderSource(..., training=False, temporal_views=T)"
            )
        frames = clips.transpose(1, 2)  # (T, F, C, H, W): v2 treats the leading dimensions as a batch, as in ClipTransform
        resized = self.resize(frames.reshape(-1, *frames.shape[2:]))
        resized = resized.reshape(*frames.shape[:3], *resized.shape[-2:])
        offsets = spatial_crop_offsets(*resized.shape[-2:], self.size, self.spatial_views)
        crops = [resized[..., top : top + self.size, left : left + self.size] for top, left in offsets]
        views = torch.stack(crops, dim=1).flatten(0, 1)  # (T*S, F, C, size, size)
        return self.normalize(views).transpose(1, 2).contiguous()  # (T*S, C, F, size, size)
