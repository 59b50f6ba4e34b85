"""`lookupvit convert`: recognise a checkpoint, read it, and turn it into the model asked for.

Sources: a transformers ViViT folder, a timm ViT (hub folder or weights file), a big_vision / AugReg
`.npz`, or a model file of ours. Targets, by `model`: nothing (the source as our model), a
`lookupvit_*` variant (warm start from a ViT, models.warmstart), or a `vivit_*` / `lookupvivit_*`
variant (an image model inflated into a video model, models.convert). The written file carries class
names and input normalisation, so `lookupvit eval`, `predict` and training's `init_weights` take it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from torch import nn

from ..data.transforms import NORMALIZATIONS
from .convert import inflate_image_model, inflated_config, load_transformers_vivit
from .registry import VARIANTS, is_video_model
from .serialization import FORMAT, read_metadata
from .vit import ViT
from .warmstart import lookupvit_from_vit, read_npz, read_timm_checkpoint, vit_from_big_vision, vit_from_timm, warm_start_config

SOURCE_KINDS = ("transformers-vivit", "timm", "big-vision", "ours")


def detect_source_kind(path: str | os.PathLike) -> str:
    """What a checkpoint path holds, from its layout: a folder's config.json, a file's suffix and header."""
    path = Path(path)
    if path.is_dir():
        config_path = path / "config.json"
        config = json.loads(config_path.read_text()) if config_path.is_file() else {}
        if config.get("model_type") == "vivit":
            return "transformers-vivit"
        if "architecture" in config or (path / "pytorch_model.bin").is_file() or (path / "model.safetensors").is_file():
            return "timm"
        raise ValueError(f"{path} is a folder without a transformers ViViT or timm checkpoint (config.json + weights)")
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    if path.suffix == ".npz":
        return "big-vision"
    if path.suffix == ".safetensors" and read_metadata(path).get("format") == FORMAT:
        return "ours"
    if path.suffix in (".safetensors", ".pth", ".pt", ".bin"):
        return "timm"
    raise ValueError(f"cannot tell what {path} is from its name: pass --from ({', '.join(SOURCE_KINDS)})")


def _normalization(chosen: str | None, facts: dict, kind: str, channels: int) -> list:
    """[mean, std] per channel: the --normalization preset, else what the source says, else big_vision's [-1, 1]."""
    if chosen is not None:
        mean, std = NORMALIZATIONS[chosen]
        return [list(mean[:channels]), list(std[:channels])]
    if "mean" in facts and "std" in facts:
        return [list(facts["mean"]), list(facts["std"])]
    if kind == "big-vision":  # big_vision and AugReg always train on pixels in [-1, 1]
        return [[0.5] * channels, [0.5] * channels]
    raise ValueError(
        "this checkpoint does not say how its images were normalised: pass --normalization inception "
        "(pixels in [-1, 1]: timm's AugReg ViTs) or imagenet (DeiT and timm's original ViTs)"
    )


def read_source(kind: str, path: str | os.PathLike, num_heads: int | None = None, num_classes: int | None = None, normalization: str | None = None) -> tuple[nn.Module, dict[str, str]]:
    """The source as our model, and the metadata its file will carry (class names, normalisation)."""
    if kind == "transformers-vivit":
        model, classes = load_transformers_vivit(path)
        # transformers' ViViT processor scales pixels to [-1, 1]: mean = std = 0.5 per channel.
        channels = model.config.in_chans
        return model, {"classes": json.dumps(classes), "normalization": json.dumps([[0.5] * channels, [0.5] * channels])}
    if kind == "ours":
        from .serialization import load_model

        return load_model(path), read_metadata(path)  # class names and normalisation carry over
    if kind == "timm":
        state, facts = read_timm_checkpoint(path)
        model = vit_from_timm(state, num_heads=num_heads, num_classes=num_classes)
    elif kind == "big-vision":
        facts = {}
        model = vit_from_big_vision(read_npz(path), num_classes=num_classes)
    else:
        raise ValueError(f"unknown source kind {kind!r}; one of {SOURCE_KINDS}")
    labels = facts.get("label_names") or [str(index) for index in range(model.config.num_classes)]
    if len(labels) != model.config.num_classes:
        labels = [str(index) for index in range(model.config.num_classes)]  # a new head: the old names do not apply
    metadata = {"classes": json.dumps(labels), "normalization": json.dumps(_normalization(normalization, facts, kind, model.config.in_chans))}
    return model, metadata


def convert_to(source: nn.Module, target: str | None, rule: str = "central", lookup_mlp: str = "largest", **overrides) -> nn.Module:
    """The source model as the registered variant `target`: a warm-started LookupViT, or an inflated video model."""
    if target is None:
        return source
    if is_video_model(target):
        return inflate_image_model(source, inflated_config(source.config, target), rule)
    if VARIANTS.get(target, ("",))[0] == "lookupvit":
        if type(source) is not ViT:
            raise ValueError(f"a lookupvit_* model warm-starts from a ViT; the source is a {type(source).__name__}")
        return lookupvit_from_vit(source, warm_start_config(source.config, target, **overrides), lookup_mlp)
    raise ValueError(f"--model must be a lookupvit_*, vivit_* or lookupvivit_* variant to convert into, got {target!r}")
