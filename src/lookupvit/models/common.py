"""Configuration and input checks shared by every image model in the package."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.utils.checkpoint
from torch import Tensor

from ..layers import MLP_ACTIVATIONS, Linear, PatchEmbed, init_weights, resize_tokens


def as_grid(value: int | tuple[int, ...] | list[int], name: str = "grid", dims: int = 2) -> tuple[int, ...]:
    """An int or a sequence of `dims` positive ints as a tuple, or a ValueError/TypeError saying why not."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value,) * dims
    if not isinstance(value, (tuple, list)) or len(value) != dims:
        raise TypeError(f"{name} must be an int or a sequence of {dims} ints, got {value!r}")
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise TypeError(f"{name} must contain ints, got {value!r}")
    if min(value) < 1:
        raise ValueError(f"{name} must be at least 1 in every dimension, got {tuple(value)}")
    return tuple(value)


def check_count(name: str, value: object, minimum: int = 1) -> None:
    """A whole number (not a bool, not 2.0) of at least `minimum`, or a TypeError/ValueError naming `name`."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be a whole number, at least {minimum}, got {value!r} ({type(value).__name__})")
    if value < minimum:
        raise ValueError(f"{name} must be a whole number, at least {minimum}, got {value}")


def check_fraction(name: str, value: object, low: float, high: float, high_allowed: bool) -> None:
    """A number in [low, high] (or [low, high) when `high_allowed` is False), or an error naming `name`."""
    interval = f"[{low}, {high}]" if high_allowed else f"[{low}, {high})"
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise TypeError(f"{name} must be a number in {interval}, got {value!r} ({type(value).__name__})")
    if not (low <= value <= high if high_allowed else low <= value < high):
        raise ValueError(f"{name} must be a number in {interval}, got {value}")


def check_positive_number(name: str, value: object) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise TypeError(f"{name} must be a number > 0, got {value!r} ({type(value).__name__})")
    if not value > 0 or value == float("inf"):  # `not >` also refuses nan
        raise ValueError(f"{name} must be a number > 0, got {value}")


def check_switch(name: str, value: object) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r} ({type(value).__name__})")


@dataclass
class ViTConfig:
    """Hyper-parameters of the ViT baseline; LookupViTConfig adds the compressed-token settings."""

    img_size: tuple[int, int] = (224, 224)
    patch_size: int = 16
    in_chans: int = 3
    num_classes: int = 1000
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    drop_path_rate: float = 0.0
    # True: a learned class token is prepended and the head reads it (transformers' ViViT, the
    # original ViT) instead of the token mean; the position embedding then has one row more, first.
    class_token: bool = False
    mlp_activation: str = "gelu"  # "gelu_tanh": the tanh approximation, for converted weights trained with it

    def __post_init__(self) -> None:
        self.img_size = as_grid(self.img_size, "img_size")
        for name in ("patch_size", "in_chans", "embed_dim", "depth", "num_heads"):
            check_count(name, getattr(self, name))
        check_count("num_classes", self.num_classes, minimum=0)  # 0: no classifier, forward returns pooled features (timm's convention)
        check_positive_number("mlp_ratio", self.mlp_ratio)
        check_switch("qkv_bias", self.qkv_bias)
        check_switch("class_token", self.class_token)
        if self.mlp_activation not in MLP_ACTIVATIONS:
            raise ValueError(
                f"mlp_activation must be one of {tuple(MLP_ACTIVATIONS)}, got {self.mlp_activation!r}; "
                "transformers' gelu_fast, gelu_new and gelu_pytorch_tanh are all 'gelu_tanh'"
            )
        check_fraction("drop_path_rate", self.drop_path_rate, 0, 1, high_allowed=False)  # 1 would drop every block
        if self.embed_dim % self.num_heads:
            raise ValueError(f"embed_dim {self.embed_dim} must be divisible by num_heads {self.num_heads}")
        for side in self.img_size:
            if side % self.patch_size:
                raise ValueError(f"img_size {self.img_size} must be divisible by patch_size {self.patch_size}")

    @property
    def patch_grid(self) -> tuple[int, ...]:
        """The lookup-token grid: (h, w) for images, (t, h, w) for video configs."""
        return (self.img_size[0] // self.patch_size, self.img_size[1] // self.patch_size)

    @property
    def patch_kernel(self) -> tuple[int, ...]:
        """Kernel (and stride) of the patch embedding: (p, p) here, the (t, p, p) tubelet for video."""
        return (self.patch_size, self.patch_size)

    def input_description(self) -> str:
        """What the model is built for, for error messages."""
        height, width = self.img_size
        return f"{height}x{width} images at patch size {self.patch_size}"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def check_images(images: object, in_chans: int, patch_size: int) -> None:
    """Refuse inputs the model would otherwise turn into a deep torch error or silent garbage."""
    if not isinstance(images, Tensor):
        raise TypeError(f"images must be a torch.Tensor of shape (batch, {in_chans}, height, width), got {type(images).__name__}")
    if images.ndim != 4:
        hint = {
            3: " Add a batch dimension with images.unsqueeze(0).",
            5: " That looks like a batch of video clips (batch, channels, frames, height, width): "
            "use a video model (LookupViViT, ViViT; e.g. create_model('lookupvivit_b16')) or fold the frames into the batch.",
        }.get(images.ndim, "")
        raise ValueError(f"images must have shape (batch, {in_chans}, height, width), got shape {tuple(images.shape)}.{hint}")
    if not images.is_floating_point():
        raise TypeError(
            f"images must be floating point, got {images.dtype}; convert with images.float() "
            "and normalise them the way the model was trained"
        )
    channels, height, width = images.shape[1:]
    if channels != in_chans:
        hint = " Channels-last input? Use images.permute(0, 3, 1, 2)." if images.shape[-1] == in_chans else ""
        raise ValueError(f"the model expects {in_chans} input channels, got {channels} (shape {tuple(images.shape)}).{hint}")
    check_spatial_size(height, width, patch_size, "image")


def check_spatial_size(height: int, width: int, patch_size: int, what: str) -> None:
    """Height and width must be positive multiples of the patch size; `what` names the input ("image", "frame")."""
    if height % patch_size or width % patch_size or height == 0 or width == 0:
        fit = (max(height // patch_size, 1) * patch_size, max(width // patch_size, 1) * patch_size)
        raise ValueError(
            f"{what} size {height}x{width} is not a positive multiple of the patch size {patch_size}; "
            f"resize or crop to a multiple of {patch_size}, e.g. {fit[0]}x{fit[1]}"
        )


def init_position_embedding(num_tokens: int, dim: int) -> torch.nn.Parameter:
    """Learned position embedding, normal with std 1/sqrt(dim) as in big_vision."""
    return torch.nn.Parameter(torch.randn(1, num_tokens, dim) * dim**-0.5)


def classifier_head(dim: int, num_classes: int) -> torch.nn.Module:
    """A linear classifier (the model's init_weights initialises it), or Identity for num_classes=0: the pooled features are the output."""
    if num_classes == 0:
        return torch.nn.Identity()
    return Linear(dim, num_classes)


OPTION_DEFAULTS = {"class_token": False, "mlp_activation": "gelu"}  # ViTConfig options not every architecture implements


class PatchModel(torch.nn.Module):
    """The patch stem every model here shares: patch embedding plus a learned position embedding."""

    config: ViTConfig
    grad_checkpointing: bool = False
    input_name = "image"  # what one input is called in error messages; video models say "clip"
    # Config options beyond the plain model that this architecture implements; the others must keep
    # their defaults (OPTION_DEFAULTS), or the config would promise what the forward pass silently ignores.
    supported_options: frozenset[str] = frozenset()

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each block in the backward pass instead of keeping its activations (timm's API).

        Training memory then holds one block's activations plus each block's inputs, for about one
        extra forward pass of compute; outputs and gradients are unchanged (dropout and stochastic
        depth replay the same random draws).
        """
        self.grad_checkpointing = enable

    def save_pretrained(self, folder, extra: dict[str, str] | None = None):
        """A hub-style folder, config.json + model.safetensors (models.serialization.save_pretrained)."""
        from .serialization import save_pretrained  # serialization builds models from the registry, which imports this module

        return save_pretrained(self, folder, extra)

    @classmethod
    def from_pretrained(cls, path, map_location: str | torch.device = "cpu"):
        """The model in a save_pretrained folder (or a model file), which must hold this class; lookupvit.from_pretrained takes any."""
        from .serialization import from_pretrained

        model = from_pretrained(path, map_location)
        if not isinstance(model, cls):
            raise TypeError(f"{path} holds a {type(model).__name__}, not a {cls.__name__}; lookupvit.from_pretrained(path) loads any model")
        return model

    def run_block(self, block: torch.nn.Module, *inputs: Tensor):
        """`block(*inputs)`, recomputed in backward when grad checkpointing is on and a backward can follow."""
        if self.grad_checkpointing and torch.is_grad_enabled():
            return torch.utils.checkpoint.checkpoint(block, *inputs, use_reentrant=False)
        return block(*inputs)

    def init_patch_stem(self, config: ViTConfig) -> None:
        """Conv2d patches for images, Conv3d tubelets for video: the config's `patch_kernel` decides.

        With `config.class_token` the class token is a parameter of its own and the position
        embedding's first row is its position, as in transformers' ViT and ViViT.
        """
        self.refuse_unsupported_options(config)
        self.patch_embed = PatchEmbed(config.patch_kernel, config.in_chans, config.embed_dim)
        class_rows = 1 if config.class_token else 0
        self.pos_embed = init_position_embedding(class_rows + math.prod(config.patch_grid), config.embed_dim)
        # Zeros as in big_vision and transformers: its position row gives the class token its first value.
        self.cls_token = torch.nn.Parameter(torch.zeros(1, 1, config.embed_dim)) if config.class_token else None

    def refuse_unsupported_options(self, config: ViTConfig) -> None:
        for name, default in OPTION_DEFAULTS.items():
            if name not in self.supported_options and getattr(config, name) != default:
                raise ValueError(
                    f"{type(self).__name__} does not implement {name}={getattr(config, name)!r} (only ViT and ViViT have a "
                    f"class token; ViT, LookupViT and their video models take mlp_activation); set {name}={default!r}"
                )

    def check_input(self, images: object) -> None:
        check_images(images, self.config.in_chans, self.config.patch_size)

    def embed_patches(self, images: Tensor) -> tuple[Tensor, tuple[int, ...]]:
        """Checked images (B, C, H, W) or clips (B, C, T, H, W) -> tokens with position embedding (B, N, D) and their grid.

        At another image size (or clip length) than the config's, the patch rows of the position
        embedding are resampled to the grid, separably over its 2 (or 3) dimensions. With a class
        token the tokens are (B, 1 + N, D), class token first; its position row is never resampled,
        since it belongs to no place in the grid.
        """
        self.check_input(images)
        tokens, grid = self.patch_embed(images)
        class_rows = 1 if self.cls_token is not None else 0
        patch_positions = self.pos_embed[:, class_rows:]
        tokens = tokens + resize_tokens(patch_positions, self.config.patch_grid, grid)
        if self.cls_token is not None:
            # shape[0], not len(): torch.export keeps a size read from .shape symbolic (a dynamic batch in ONNX)
            class_token = (self.cls_token + self.pos_embed[:, :1]).to(tokens.dtype).expand(tokens.shape[0], -1, -1)
            tokens = torch.cat([class_token, tokens], dim=1)
        return tokens, grid


class SingleHeadClassifier(PatchModel):
    """The timm-style API of the one-head models (ViT and the baselines); subclasses set `config` and `head`."""

    config: ViTConfig
    head: Linear

    @property
    def num_features(self) -> int:
        return self.config.embed_dim

    def no_weight_decay(self) -> set[str]:
        return {"pos_embed", "cls_token"} if self.cls_token is not None else {"pos_embed"}

    def reset_classifier(self, num_classes: int) -> None:
        """A new head for `num_classes`; 0 makes it Identity, so forward returns the pooled features (B, D)."""
        check_count("num_classes", num_classes, minimum=0)
        self.config.num_classes = num_classes
        self.head = classifier_head(self.num_features, num_classes).apply(init_weights)

    def forward(self, images: Tensor) -> Tensor:
        return self.forward_features(images).logits
