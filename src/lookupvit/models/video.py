"""LookupViViT and the ViViT baseline (paper Sec. 4, Table 4): the image models on video tubelets.

Following ViViT's spatio-temporal ("unfactorised") encoder, a Conv3d cuts a clip (B, C, T, H, W)
into tubelets of t x p x p pixels; the (T/t) x (H/p) x (W/p) tokens get a learned position
embedding and are the lookup tokens. Everything after that is the image model unchanged: the same
LookupViTBlock / ViTBlock classes, the same heads and pooling, the same parameter-free separable
antialiased resize, now over three dimensions, from the lookup grid (t, h, w) to the compressed
grid (tp, hp, wp). So the model classes below only change the config (3-D grids, Conv3d kernel)
and the input check; forward_features is inherited.

Real checkpoints: transformers' ViViT (google/vivit-b-16x2-kinetics400) classifies from a class
token with the tanh GELU; `ViViTConfig(class_token=True, mlp_activation="gelu_tanh")` is that
model, and `models.convert.vivit_from_transformers` loads its weights (`lookupvit convert` on the
command line). `models.convert.inflate_image_model` starts a video model from a trained image model
(ViViT's central-frame or averaged kernel inflation).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from .common import ViTConfig, check_count, check_spatial_size
from .lookupvit import LookupViT, LookupViTConfig
from .vit import ViT


@dataclass
class ViViTConfig(ViTConfig):
    """A ViTConfig for clips of `num_frames` frames cut into tubelets of `tubelet_frames` x patch_size x patch_size."""

    num_frames: int = 32
    tubelet_frames: int = 2

    def __post_init__(self) -> None:
        # Checked before the parent's checks, which read patch_grid (and so these two fields).
        check_count("num_frames", self.num_frames)
        check_count("tubelet_frames", self.tubelet_frames)
        if self.num_frames % self.tubelet_frames:
            raise ValueError(f"num_frames {self.num_frames} must be divisible by tubelet_frames {self.tubelet_frames}")
        super().__post_init__()

    @property
    def tubelet_size(self) -> tuple[int, int, int]:
        """(t, p, p): frames and pixels per tubelet, the Conv3d kernel and stride."""
        return (self.tubelet_frames, self.patch_size, self.patch_size)

    @property
    def patch_kernel(self) -> tuple[int, ...]:
        return self.tubelet_size

    @property
    def patch_grid(self) -> tuple[int, ...]:
        """The lookup-token grid (t, h, w) of a clip of the configured size."""
        return (self.num_frames // self.tubelet_frames, self.img_size[0] // self.patch_size, self.img_size[1] // self.patch_size)

    def input_description(self) -> str:
        height, width = self.img_size
        t, p, _ = self.tubelet_size
        return f"{self.num_frames}-frame {height}x{width} clips at tubelet size {t}x{p}x{p}"


@dataclass
class LookupViViTConfig(ViViTConfig, LookupViTConfig):
    """LookupViTConfig with ViViT's tubelets; compressed_grid is (tp, hp, wp)."""

    # The paper's "9x9x8" (Table 4 writes h x w x t): 8 temporal by 9 x 9 spatial compressed tokens.
    compressed_grid: tuple[int, ...] = (8, 9, 9)


def check_clips(clips: object, in_chans: int, tubelet_size: tuple[int, int, int]) -> None:
    """Refuse inputs a video model would otherwise turn into a deep torch error or silent garbage."""
    frames_per_tubelet, patch_size, _ = tubelet_size
    layout = f"(batch, {in_chans}, frames, height, width)"
    if not isinstance(clips, Tensor):
        raise TypeError(f"clips must be a torch.Tensor of shape {layout}, got {type(clips).__name__}")
    if clips.ndim != 5:
        hint = ""
        if clips.ndim == 4:
            hint = (
                " A batch of images (batch, channels, height, width)? Add a time axis, e.g. "
                f"images.unsqueeze(2).repeat(1, 1, {frames_per_tubelet}, 1, 1), or use the image model (LookupViT, ViT). "
                "One clip (channels, frames, height, width)? Add a batch dimension with clips.unsqueeze(0)."
            )
        raise ValueError(f"clips must have shape {layout}, got shape {tuple(clips.shape)}.{hint}")
    if not clips.is_floating_point():
        raise TypeError(
            f"clips must be floating point, got {clips.dtype}; convert with clips.float() and normalise them the way the model was trained"
        )
    channels, frames, height, width = clips.shape[1:]
    if channels != in_chans:
        hint = ""
        if clips.shape[-1] == in_chans:
            hint = " Channels-last input (batch, frames, height, width, channels)? Use clips.permute(0, 4, 1, 2, 3)."
        elif clips.shape[2] == in_chans:
            hint = " Frames before channels (batch, frames, channels, height, width)? Use clips.permute(0, 2, 1, 3, 4)."
        raise ValueError(f"the model expects {in_chans} input channels, got {channels} (shape {tuple(clips.shape)}).{hint}")
    if frames % frames_per_tubelet or frames == 0:
        fit = max(frames // frames_per_tubelet, 1) * frames_per_tubelet
        raise ValueError(
            f"a clip of {frames} frames is not a positive multiple of the tubelet's {frames_per_tubelet} frames; "
            f"sample or trim the clip to a multiple of {frames_per_tubelet}, e.g. {fit} frames"
        )
    check_spatial_size(height, width, patch_size, "frame")


class VideoInput:
    """Mixin for the video models: clips (B, C, T, H, W) instead of images; the rest is the image model's."""

    config: ViViTConfig
    input_name = "clip"

    def check_input(self, clips: object) -> None:
        check_clips(clips, self.config.in_chans, self.config.tubelet_size)


class LookupViViT(VideoInput, LookupViT):
    """LookupViT on tubelet tokens: `model(clips, grid=(tp, hp, wp))`; lookup_grid and compressed_grid are (t, h, w)."""

    def __init__(self, config: LookupViViTConfig):
        super().__init__(config)


class ViViT(VideoInput, ViT):
    """ViViT's spatio-temporal encoder: ViT blocks on all t x h x w tubelet tokens, global-average-pool or class-token head."""

    def __init__(self, config: ViViTConfig):
        super().__init__(config)
