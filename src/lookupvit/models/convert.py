"""Weights from elsewhere: transformers' ViViT checkpoints, and image models inflated into video models.

transformers' ViViT (`VivitForVideoClassification`, e.g. google/vivit-b-16x2-kinetics400)
-----------------------------------------------------------------------------------------
It is our ViViT with a class token and, for that checkpoint, the tanh GELU ("gelu_fast"), so the
conversion is a renaming, plus one concatenation: its separate query/key/value projections become
our fused qkv projection (rows in q, k, v order, as SelfAttention splits them). Its Conv3d kernel
is already (D, C, t, p, p); it only transposes its (B, T, C, H, W) input first, so our clips are
its `pixel_values.transpose(1, 2)`, scaled as its image processor scales them. The LayerNorm eps
must be 1e-6 because ours are fixed at that (big_vision's). Dropout settings are not carried: they
act only in training, and our models have stochastic depth instead. Two key layouts exist: checkpoint
files (the hub's and `save_pretrained`'s: `vivit.encoder.layer.{i}.attention.attention.query`, ...)
and the in-memory state dict of transformers >= 5, which renames on load (`vivit.layers.{i}.attention.q_proj`, ...).
Both are read.

Image model -> video model ("inflation", ViViT paper Sec. 3.4)
--------------------------------------------------------------
The aim is a video model that starts as the image model applied to the clip: on a clip of
identical frames each tubelet's token must equal the image's patch token at that place.
- The 2-D patch kernel becomes the 3-D tubelet kernel by one of ViViT's two rules. "central"
  puts it at the tubelet's central frame (index t // 2 of the time axis; scenic's random
  central-frame initialiser takes that index from the time axis but zeroes slices of the
  input-channel axis, which is why the axis is named here) and zeros at the others: each token
  starts as the image token of one frame, and fine-tuning learns what the other frames add; ViViT
  found this the better start for its spatio-temporal model. "average" repeats the kernel over the
  t frames and divides by t (I3D's filter inflation): every frame contributes from the start, so
  motion blurs the token instead of being ignored.
- The position embedding is resampled to the video's spatial grid (the models' own antialiased
  resize, so it is what the image model would use at that size) and the same rows are repeated at
  every time step: no order in time is known yet, and fine-tuning learns it.
- The class token, every block, norm and head are copied: they act on tokens, not on pixels.
  Learned compressed tokens (LookupViT's ablation (d)) are resampled and repeated like positions.
What then holds exactly, on a clip of identical frames that makes t' tubelet steps: an average-pool
ViViT gives the image ViT's logits (each token appears t' times, which splits every attention
weight evenly between equal copies and leaves means unchanged). With a class token it does only at
t' = 1: the class token appears once among t' copies of every patch token, so in every softmax its
weight against the patches drops t'-fold (the image model with log(1/t') added to its scores).
LookupViViT gives the image LookupViT's logits only at a compressed grid that keeps all t' time
steps (tp = t'): each lookup token receives A^T v summed over the tp copies of every compressed
token, while A spreads over the t' copies of every lookup token, so the p->l updates are scaled
by tp / t'. These are starting points for fine-tuning, as in ViViT, not drop-in equivalents.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path

import torch
from torch import Tensor, nn

from ..layers import resize_tokens
from .common import ViTConfig
from .lookupvit import LookupViT, LookupViTConfig
from .registry import VARIANTS, model_config
from .video import LookupViViT, LookupViViTConfig, ViViT, ViViTConfig
from .vit import ViT

# --------------------------------------------------------------------------------------------
# transformers' ViViT -> ViViT
# --------------------------------------------------------------------------------------------

# transformers' VivitConfig defaults, which a config.json written by save_pretrained leaves out.
# They describe google/vivit-b-16x2-kinetics400 but for its 400 labels (transformers' default is 2).
VIVIT_DEFAULTS = {
    "image_size": 224,
    "num_frames": 32,
    "tubelet_size": [2, 16, 16],
    "num_channels": 3,
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "hidden_act": "gelu_fast",
    "layer_norm_eps": 1e-6,
    "qkv_bias": True,
    "num_labels": 2,
}
# transformers' activation names -> ours. gelu_fast, gelu_new and gelu_pytorch_tanh are the same
# tanh approximation written three ways (their values differ by float rounding only).
HIDDEN_ACTIVATIONS = {
    "gelu": "gelu",
    "gelu_python": "gelu",
    "gelu_fast": "gelu_tanh",
    "gelu_new": "gelu_tanh",
    "gelu_pytorch_tanh": "gelu_tanh",
    "gelu_python_tanh": "gelu_tanh",
}

# Module names of one encoder layer in each key layout, by what the module does.
CHECKPOINT_LAYOUT = {
    "layers": "vivit.encoder.layer",
    "query": "attention.attention.query",
    "key": "attention.attention.key",
    "value": "attention.attention.value",
    "attention_out": "attention.output.dense",
    "mlp_in": "intermediate.dense",
    "mlp_out": "output.dense",
}
TRANSFORMERS_5_LAYOUT = {
    "layers": "vivit.layers",
    "query": "attention.q_proj",
    "key": "attention.k_proj",
    "value": "attention.v_proj",
    "attention_out": "attention.o_proj",
    "mlp_in": "mlp.fc1",
    "mlp_out": "mlp.fc2",
}


def _transformers_settings(hf_config) -> dict:
    """A VivitConfig or its dict (config.json) as a dict, with transformers' defaults for what it leaves out."""
    given = hf_config.to_dict() if hasattr(hf_config, "to_dict") else dict(hf_config)
    if given.get("model_type", "vivit") != "vivit":
        raise ValueError(f"expected a transformers ViViT config (model_type 'vivit'), got model_type {given['model_type']!r}")
    settings = {**VIVIT_DEFAULTS, **given}
    if given.get("id2label"):  # config.json and to_dict() carry the labels, not num_labels
        settings["num_labels"] = len(given["id2label"])
    return settings


def vivit_config_from_transformers(hf_config) -> ViViTConfig:
    """Our ViViTConfig for a transformers VivitConfig (or its dict, e.g. a parsed config.json); refuses what we cannot run."""
    settings = _transformers_settings(hf_config)
    frames_per_tubelet, patch_height, patch_width = settings["tubelet_size"]
    if patch_height != patch_width:
        raise ValueError(
            f"tubelet_size {settings['tubelet_size']} has non-square patches; this package's models cut square patches"
        )
    activation = settings["hidden_act"]
    if activation not in HIDDEN_ACTIVATIONS:
        raise ValueError(
            f"hidden_act {activation!r} is not supported; supported: {sorted(HIDDEN_ACTIVATIONS)} (all GELU variants)"
        )
    if settings["layer_norm_eps"] != 1e-6:
        raise ValueError(
            f"layer_norm_eps {settings['layer_norm_eps']} is not supported: this package's LayerNorms use eps 1e-6, "
            "and another eps changes the outputs. Only checkpoints with layer_norm_eps 1e-6 convert exactly"
        )
    dim, hidden = settings["hidden_size"], settings["intermediate_size"]
    mlp_ratio = hidden / dim
    if int(dim * mlp_ratio) != hidden:
        raise ValueError(
            f"intermediate_size {hidden} cannot be written as hidden_size {dim} x an mlp_ratio this package rounds back to it"
        )
    head_dim = settings.get("head_dim") or dim // settings["num_attention_heads"]
    if head_dim * settings["num_attention_heads"] != dim:
        raise ValueError(
            f"head_dim {head_dim} x num_attention_heads {settings['num_attention_heads']} must equal hidden_size {dim}"
        )
    return ViViTConfig(
        img_size=settings["image_size"],
        patch_size=patch_height,
        in_chans=settings["num_channels"],
        num_classes=settings["num_labels"],
        embed_dim=dim,
        depth=settings["num_hidden_layers"],
        num_heads=settings["num_attention_heads"],
        mlp_ratio=mlp_ratio,
        qkv_bias=settings["qkv_bias"],
        num_frames=settings["num_frames"],
        tubelet_frames=frames_per_tubelet,
        class_token=True,
        mlp_activation=HIDDEN_ACTIVATIONS[activation],
    )


def _layout(state_dict: dict[str, Tensor]) -> dict[str, str]:
    if any(key.startswith(TRANSFORMERS_5_LAYOUT["layers"] + ".") for key in state_dict):
        return TRANSFORMERS_5_LAYOUT
    return CHECKPOINT_LAYOUT


def _linear_shapes(name: str, rows: int, columns: int, bias: bool = True) -> dict[str, tuple[int, ...]]:
    return {f"{name}.weight": (rows, columns), **({f"{name}.bias": (rows,)} if bias else {})}


def _norm_shapes(name: str, dim: int) -> dict[str, tuple[int, ...]]:
    return {f"{name}.weight": (dim,), f"{name}.bias": (dim,)}


def _expected_shapes(config: ViViTConfig, layout: dict[str, str]) -> dict[str, tuple[int, ...]]:
    """Every key of transformers' VivitForVideoClassification for `config`, with its shape."""
    dim, hidden = config.embed_dim, int(config.embed_dim * config.mlp_ratio)
    shapes = {
        "vivit.embeddings.cls_token": (1, 1, dim),
        "vivit.embeddings.position_embeddings": (1, 1 + math.prod(config.patch_grid), dim),
        "vivit.embeddings.patch_embeddings.projection.weight": (dim, config.in_chans, *config.tubelet_size),
        "vivit.embeddings.patch_embeddings.projection.bias": (dim,),
        **_norm_shapes("vivit.layernorm", dim),
        **_linear_shapes("classifier", config.num_classes, dim),
    }
    for index in range(config.depth):
        layer = f"{layout['layers']}.{index}"
        for projection in ("query", "key", "value"):
            shapes.update(_linear_shapes(f"{layer}.{layout[projection]}", dim, dim, config.qkv_bias))
        shapes.update(_linear_shapes(f"{layer}.{layout['attention_out']}", dim, dim))
        shapes.update(_linear_shapes(f"{layer}.{layout['mlp_in']}", hidden, dim))
        shapes.update(_linear_shapes(f"{layer}.{layout['mlp_out']}", dim, hidden))
        shapes.update({**_norm_shapes(f"{layer}.layernorm_before", dim), **_norm_shapes(f"{layer}.layernorm_after", dim)})
    return shapes


def _check_keys(state_dict: dict[str, Tensor], expected: dict[str, tuple[int, ...]], config: ViViTConfig) -> None:
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    mismatched = sorted(
        f"{key}: got {tuple(state_dict[key].shape)}, expected {expected[key]}"
        for key in set(state_dict) & set(expected)
        if tuple(state_dict[key].shape) != expected[key]
    )
    if not (missing or unexpected or mismatched):
        return
    problems = []
    for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched)):
        if keys:
            problems.append(f"{label}: " + ", ".join(keys[:8]) + (f", ... ({len(keys)} in all)" if len(keys) > 8 else ""))
    hint = "Pass the checkpoint's config (config.json) as `config` if it is another size."
    if not any(key.startswith("vivit.") for key in state_dict):
        hint = "No key starts with 'vivit.': this reads VivitForVideoClassification state dicts, not VivitModel ones (no classifier)."
    summary = f"{config.depth} layers, width {config.embed_dim}, {config.num_classes} classes, {config.input_description()}"
    raise ValueError(
        f"the state dict is not a transformers VivitForVideoClassification of {summary}: " + "; ".join(problems) + f". {hint}"
    )


def _our_state(state_dict: dict[str, Tensor], config: ViViTConfig, layout: dict[str, str]) -> dict[str, Tensor]:
    """Their tensors under our names; q, k and v stacked into our fused qkv projection."""
    state = {
        "cls_token": state_dict["vivit.embeddings.cls_token"],
        "pos_embed": state_dict["vivit.embeddings.position_embeddings"],
        "patch_embed.proj.weight": state_dict["vivit.embeddings.patch_embeddings.projection.weight"],
        "patch_embed.proj.bias": state_dict["vivit.embeddings.patch_embeddings.projection.bias"],
        "norm.weight": state_dict["vivit.layernorm.weight"],
        "norm.bias": state_dict["vivit.layernorm.bias"],
        "head.weight": state_dict["classifier.weight"],
        "head.bias": state_dict["classifier.bias"],
    }
    parameters = ("weight", "bias") if config.qkv_bias else ("weight",)
    for index in range(config.depth):
        theirs, ours = f"{layout['layers']}.{index}", f"blocks.{index}"
        for parameter in parameters:
            state[f"{ours}.attn.qkv.{parameter}"] = torch.cat(
                [state_dict[f"{theirs}.{layout[projection]}.{parameter}"] for projection in ("query", "key", "value")]
            )
        for our_name, their_name in (
            ("attn.proj", layout["attention_out"]),
            ("mlp.fc1", layout["mlp_in"]),
            ("mlp.fc2", layout["mlp_out"]),
            ("norm1", "layernorm_before"),
            ("norm2", "layernorm_after"),
        ):
            for parameter in ("weight", "bias"):
                state[f"{ours}.{our_name}.{parameter}"] = state_dict[f"{theirs}.{their_name}.{parameter}"]
    return state


def vivit_from_transformers(state_dict: dict[str, Tensor], config=None) -> ViViT:
    """Our ViViT with the weights of a transformers `VivitForVideoClassification` state dict, in float32.

    `config`: its VivitConfig or config.json dict; None means transformers' defaults (the
    architecture of google/vivit-b-16x2-kinetics400) with the class count read from the classifier.
    The model takes clips (B, C, T, H, W): transformers' `pixel_values.transpose(1, 2)`.
    """
    if config is None:
        classifier = state_dict.get("classifier.weight")
        config = {} if classifier is None else {"num_labels": classifier.shape[0]}
    our_config = vivit_config_from_transformers(config)
    layout = _layout(state_dict)
    _check_keys(state_dict, _expected_shapes(our_config, layout), our_config)
    model = ViViT(our_config)
    model.load_state_dict(_our_state(state_dict, our_config, layout))
    return model.eval()


def load_transformers_vivit(folder: str | os.PathLike) -> tuple[ViViT, list[str]]:
    """A transformers ViViT checkpoint folder (config.json + model.safetensors, sharded or not, or pytorch_model.bin)
    as our ViViT, with its class names in label order."""
    folder = Path(folder)
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(
            f"{folder} has no config.json; expected a transformers checkpoint folder (save_pretrained or a hub snapshot)"
        )
    config = json.loads(config_path.read_text())
    model = vivit_from_transformers(_read_transformers_weights(folder), config)
    labels = config.get("id2label") or {}
    names = [labels.get(str(index), labels.get(index, str(index))) for index in range(model.config.num_classes)]
    return model, names


def _read_transformers_weights(folder: Path) -> dict[str, Tensor]:
    from safetensors.torch import load_file

    if (folder / "model.safetensors").is_file():
        return load_file(folder / "model.safetensors")
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        state = {}
        for shard in sorted(set(json.loads(index.read_text())["weight_map"].values())):
            state.update(load_file(folder / shard))
        return state
    if (folder / "pytorch_model.bin").is_file():
        # weights_only: a pickle from elsewhere may not run code while it is read
        return torch.load(folder / "pytorch_model.bin", map_location="cpu", weights_only=True)
    raise FileNotFoundError(f"{folder} has no model.safetensors, model.safetensors.index.json or pytorch_model.bin")


# --------------------------------------------------------------------------------------------
# Image model -> video model
# --------------------------------------------------------------------------------------------

INFLATION_RULES = ("central", "average")
# image model class -> (video model class, video config class, registry architecture)
VIDEO_VERSIONS: dict[type[nn.Module], tuple[type[nn.Module], type[ViTConfig], str]] = {
    ViT: (ViViT, ViViTConfig, "vivit"),
    LookupViT: (LookupViViT, LookupViViTConfig, "lookupvivit"),
}
# Settings the video model takes from its own config: the clip it is built for (the position
# embedding is resampled to it) and the training-only stochastic-depth rate.
VIDEO_OWN_SETTINGS = ("img_size", "compressed_grid", "drop_path_rate")


def _shared_settings(image_config: ViTConfig) -> dict:
    """The image config's settings that fix the weights' shapes and meaning; the video model must keep them."""
    return {
        field.name: getattr(image_config, field.name)
        for field in dataclasses.fields(image_config)
        if field.name not in VIDEO_OWN_SETTINGS
    }


def _video_version(image_model: nn.Module) -> tuple[type[nn.Module], type[ViTConfig], str]:
    if type(image_model) not in VIDEO_VERSIONS:  # exact type: ViViT is a ViT subclass, and already a video model
        raise TypeError(f"only ViT and LookupViT image models can be inflated, got {type(image_model).__name__}")
    return VIDEO_VERSIONS[type(image_model)]


def inflated_config(image_config: ViTConfig, video_model: str) -> ViTConfig:
    """The registered video variant `video_model` (e.g. "lookupvivit_nano4") with the image model's settings:
    the variant gives the clip (frames, tubelet, frame size, compressed grid), the image model everything else."""
    image_arch = {ViTConfig: "vivit", LookupViTConfig: "lookupvivit"}.get(type(image_config))
    if image_arch is None:
        raise TypeError(f"only ViT and LookupViT image models can be inflated, got a {type(image_config).__name__}")
    if VARIANTS.get(video_model, ("",))[0] != image_arch:
        raise ValueError(
            f"a {type(image_config).__name__.removesuffix('Config')} inflates into a {image_arch}_* model, got {video_model!r}"
        )
    return model_config(video_model, **_shared_settings(image_config))


def inflate_kernel(kernel: Tensor, frames: int, rule: str) -> Tensor:
    """(D, C, p, p) patch kernel -> (D, C, frames, p, p) tubelet kernel: the module docstring gives the rules."""
    if rule == "central":
        tubelet = kernel.new_zeros(kernel.shape[0], kernel.shape[1], frames, *kernel.shape[2:])
        tubelet[:, :, frames // 2] = kernel  # axis 2 is time in torch's Conv3d kernels
        return tubelet
    if rule == "average":
        return kernel.unsqueeze(2).repeat(1, 1, frames, 1, 1) / frames
    raise ValueError(f"rule must be one of {INFLATION_RULES}, got {rule!r}")


def tile_over_time(rows: Tensor, grid: tuple[int, int], video_grid: tuple[int, int, int], class_rows: int = 0) -> Tensor:
    """(1, class_rows + h w, D) image rows -> (1, class_rows + t h' w', D): resampled to (h', w'), repeated at every time step.

    Tokens are flattened time-major, (t, h, w), so repeating the h' w' rows t times is the tiling.
    """
    frames, *frame_grid = video_grid
    spatial = resize_tokens(rows[:, class_rows:], grid, tuple(frame_grid))
    return torch.cat([rows[:, :class_rows], spatial.repeat(1, frames, 1)], dim=1)


def inflate_image_model(image_model: nn.Module, video_config: ViTConfig, rule: str = "central") -> nn.Module:
    """A video model (ViT -> ViViT, LookupViT -> LookupViViT) started from a trained image model; see the module docstring."""
    video_cls, video_config_cls, arch = _video_version(image_model)
    if type(video_config) is not video_config_cls:
        raise TypeError(
            f"a {type(image_model).__name__} inflates with a {video_config_cls.__name__}, got {type(video_config).__name__}"
        )
    if rule not in INFLATION_RULES:
        raise ValueError(f"rule must be one of {INFLATION_RULES}, got {rule!r}")
    image_config = image_model.config
    different = [
        f"{name}: image {value!r}, video {getattr(video_config, name)!r}"
        for name, value in _shared_settings(image_config).items()
        if getattr(video_config, name) != value
    ]
    if different:
        raise ValueError(
            f"the video config does not match the image model ({'; '.join(different)}); build it with "
            f"inflated_config(image_model.config, '{arch}_...') to take the image model's settings"
        )
    state = {name: tensor.detach().clone() for name, tensor in image_model.state_dict().items()}
    state["patch_embed.proj.weight"] = inflate_kernel(state["patch_embed.proj.weight"], video_config.tubelet_frames, rule)
    class_rows = 1 if image_config.class_token else 0
    state["pos_embed"] = tile_over_time(state["pos_embed"], image_config.patch_grid, video_config.patch_grid, class_rows)
    if "learned_compressed_tokens" in state:
        state["learned_compressed_tokens"] = tile_over_time(
            state["learned_compressed_tokens"], image_config.compressed_grid, video_config.compressed_grid
        )
    video_model = video_cls(video_config)
    video_model.load_state_dict(state)
    return video_model.to(image_model.pos_embed).train(image_model.training)
