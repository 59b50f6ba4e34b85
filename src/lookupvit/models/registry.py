"""Named variants: `create_model("lookupvit_b16")`, `list_models("vit_*")`.

Names are `{arch}_{size}{patch}`, arch one of lookupvit, vit and the baselines tokenlearner and
perceiver. Widths and depths follow the ViT papers (Ti/S/B/L/H); `nano` and `micro` are sized for
28-64 px inputs and default to 1 channel and 10 classes (Fashion-MNIST with patch 2 gives the
paper's 14x14 lookup grid); override `in_chans`/`num_classes` for other data.

The video models lookupvivit and vivit come in two sizes: `b16`, the paper's Table 4 setup (32 frames
of 224 px, tubelets 2x16x16, Kinetics-400's 400 classes), and `nano4` for CPU tests (16 frames of
28 px, tubelets 2x4x4, 1 channel, 10 classes). They average-pool, as the paper's models do; the ViT
family also takes `class_token=True` and `mlp_activation="gelu_tanh"`, which is how transformers' ViViT
checkpoints load (`models.convert`).
"""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch

from torch import nn

from .common import ViTConfig
from .lookupvit import LookupViT, LookupViTConfig
from .perceiver import Perceiver, PerceiverConfig
from .tokenlearner import TokenLearnerConfig, TokenLearnerViT
from .video import LookupViViT, LookupViViTConfig, ViViT, ViViTConfig
from .vit import ViT

ARCHITECTURES: dict[str, tuple[type[nn.Module], type[ViTConfig]]] = {
    "lookupvit": (LookupViT, LookupViTConfig),
    "vit": (ViT, ViTConfig),
    # baselines that also spend their compute on a few tokens
    "tokenlearner": (TokenLearnerViT, TokenLearnerConfig),
    "perceiver": (Perceiver, PerceiverConfig),
    # video: the two above on Conv3d tubelets
    "lookupvivit": (LookupViViT, LookupViViTConfig),
    "vivit": (ViViT, ViViTConfig),
}
VIDEO_ARCHITECTURES = ("lookupvivit", "vivit")

# size -> (embed_dim, depth, num_heads, default image size, patch sizes)
SIZES: dict[str, tuple[int, int, int, int, tuple[int, ...]]] = {
    "nano": (96, 4, 3, 28, (2, 4)),
    "micro": (192, 8, 6, 32, (2, 4)),
    "ti": (192, 12, 3, 224, (8, 14, 16, 32)),
    "s": (384, 12, 6, 224, (8, 14, 16, 32)),
    "b": (768, 12, 12, 224, (8, 14, 16, 32)),
    "l": (1024, 24, 16, 224, (8, 14, 16, 32)),
    "h": (1280, 32, 16, 224, (8, 14, 16, 32)),
}

# video variant suffix -> (size, settings beyond SIZES'); the lookupvivit ones also set compressed_grid
VIDEO_VARIANTS: dict[str, tuple[str, dict]] = {
    "b16": ("b", {"img_size": 224, "patch_size": 16, "num_frames": 32, "tubelet_frames": 2, "in_chans": 3, "num_classes": 400}),
    "nano4": ("nano", {"img_size": 28, "patch_size": 4, "num_frames": 16, "tubelet_frames": 2, "in_chans": 1, "num_classes": 10}),
}
VIDEO_COMPRESSED_GRIDS = {"b16": (8, 9, 9), "nano4": (4, 4, 4)}  # (tp, hp, wp); lookup grids (16, 14, 14), (8, 7, 7)


def _variants() -> dict[str, tuple[str, dict]]:
    variants = {}
    for arch in ARCHITECTURES:
        if arch in VIDEO_ARCHITECTURES:
            continue
        for size, (dim, depth, heads, img_size, patches) in SIZES.items():
            for patch in patches:
                fields = dict(img_size=img_size, patch_size=patch, embed_dim=dim, depth=depth, num_heads=heads)
                if img_size < 224:  # small-image presets default to Fashion-MNIST: 1 channel, 10 classes
                    fields.update(in_chans=1, num_classes=10)
                variants[f"{arch}_{size}{patch}"] = (arch, fields)
    for arch in VIDEO_ARCHITECTURES:
        for suffix, (size, settings) in VIDEO_VARIANTS.items():
            dim, depth, heads, *_ = SIZES[size]
            fields = {"embed_dim": dim, "depth": depth, "num_heads": heads, **settings}
            if arch == "lookupvivit":
                fields["compressed_grid"] = VIDEO_COMPRESSED_GRIDS[suffix]
            variants[f"{arch}_{suffix}"] = (arch, fields)
    return variants


VARIANTS = _variants()


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching a shell-style pattern, e.g. "lookupvit_*"."""
    return sorted(name for name in VARIANTS if fnmatch.fnmatch(name, pattern))


def model_config(name: str, **overrides) -> ViTConfig:
    """The config a registered name stands for, with keyword overrides applied."""
    if name not in VARIANTS:
        close = difflib.get_close_matches(name, VARIANTS, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"unknown model {name!r}.{hint} See lookupvit.list_models() for all names.")
    arch, fields = VARIANTS[name]
    config_cls = ARCHITECTURES[arch][1]
    known = {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise TypeError(f"{name} has no setting(s) {unknown}; valid settings: {sorted(known)}")
    return config_cls(**{**fields, **overrides})


def is_video_model(name: str) -> bool:
    """Whether a registered name is a video model (it takes clips (B, C, T, H, W)); False for unknown names."""
    return name in VARIANTS and VARIANTS[name][0] in VIDEO_ARCHITECTURES


def build_model(config: ViTConfig) -> nn.Module:
    """The model a config describes (LookupViTConfig -> LookupViT, ViTConfig -> ViT, ...), by exact config type."""
    for model_cls, config_cls in ARCHITECTURES.values():
        if type(config) is config_cls:
            return model_cls(config)
    raise TypeError(f"no architecture is registered for config type {type(config).__name__}")


def arch_name(config: ViTConfig) -> str:
    for arch, (_, config_cls) in ARCHITECTURES.items():
        if type(config) is config_cls:
            return arch
    raise TypeError(f"no architecture is registered for config type {type(config).__name__}")


def create_model(name: str, **overrides) -> nn.Module:
    """Build a registered variant with freshly initialised weights, e.g. create_model("lookupvit_b16", num_classes=10)."""
    return build_model(model_config(name, **overrides))
