"""Warm starts from the ViT checkpoints people already have: timm, big_vision / AugReg, and our own ViT.

No public LookupViT weights exist, and pretraining a ViT-B is out of reach for most users, so a
LookupViT has to start from a ViT. Two steps, each usable alone:

1. **A ViT checkpoint -> our ViT, exactly.** timm's `VisionTransformer` names its parameters as
   our ViT does (`patch_embed.proj`, `blocks.{i}.attn.qkv`, ...), so a timm state dict converts by
   checking it is a plain ViT and reading the architecture off its shapes. A big_vision / AugReg
   `.npz` (`Transformer/encoderblock_{i}/...`, `embedding`, `cls`, `head`) is first renamed to
   that layout. Heads cannot be read off a timm state dict (its qkv is D x 3D for any head count),
   so they come from the standard ViT widths (192: 3 heads, 384: 6, 768: 12, 1024 and 1280: 16) or
   from the caller. The JAX models were trained with the tanh GELU (flax's default); timm runs them
   with the exact one. `mlp_activation` picks: "gelu_tanh" is the JAX model, "gelu" is timm's.

2. **Our ViT -> LookupViT, by a documented rule** (`lookupvit_from_vit`). A LookupViT block is
   MHBC l->p, a ViT block on the compressed tokens, MHBC p->l and a narrow lookup MLP; layer i takes
   ViT layer i this way:
   - patch embedding copied; position embedding copied without the class token's row and
     resampled to the LookupViT's image size (the class token itself is dropped: LookupViT has none);
   - the compressed stream's ViT block is the ViT block (attention, MLP, both norms);
   - MHBC l->p is that layer's attention read across the two token sets: its query, key and value
     projections and its output projection, both input norms the block's first norm;
   - MHBC p->l takes the layer's value and output projections (it has no query or key: A is reused),
     its input norm the first norm;
   - the lookup MLP (D/q hidden units, q = 2 in the paper) takes the ViT MLP's hidden units of
     largest norm, ||fc1 row|| x ||fc2 column||, the size of each unit's contribution, in their
     original order; its norm is the block's second norm. `lookup_mlp="first"` takes the first
     units instead, "fresh" keeps the random initialisation;
   - final norm copied to both final norms and the classifier to both heads when the class counts
     agree (otherwise both heads start fresh, for fine-tuning on new classes). A class-token ViT's
     head read the class token, LookupViT's heads read average-pooled tokens: a start, not the same input.
   The result is not the ViT (the compressed tokens attend twice per layer and the lookup tokens
   are updated differently), but it starts with every projection trained; fine-tuning does the rest.
   The Table 5 ablation configs convert too: without lookup tokens the blocks are the ViT blocks,
   without p->l the infusion parts are skipped, learned compressed tokens start fresh.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from pathlib import Path

import torch
from torch import Tensor

from ..layers import resize_tokens
from .common import ViTConfig
from .lookupvit import LookupViT, LookupViTConfig
from .registry import VARIANTS, model_config
from .vit import ViT

STANDARD_HEADS = {192: 3, 384: 6, 768: 12, 1024: 16, 1280: 16}  # ViT-Ti/S/B/L/H widths
LOOKUP_MLP_RULES = ("largest", "first", "fresh")


def describe_key_problems(found: dict[str, tuple[int, ...]], expected: dict[str, tuple[int, ...]]) -> str | None:
    """Missing, unexpected and mis-shaped keys in a few readable lines, or None when the shapes agree."""
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    mismatched = sorted(f"{key}: got {found[key]}, expected {expected[key]}" for key in set(found) & set(expected) if found[key] != expected[key])
    problems = []
    for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched)):
        if keys:
            problems.append(f"{label}: " + ", ".join(keys[:8]) + (f", ... ({len(keys)} in all)" if len(keys) > 8 else ""))
    return "; ".join(problems) or None


# --------------------------------------------------------------------------------------------
# timm VisionTransformer state dict -> ViT
# --------------------------------------------------------------------------------------------

# Parameters a timm ViT has when it is not the plain pre-norm ViT this package runs, with why.
NOT_A_PLAIN_VIT = {
    "fc_norm": "it normalises after pooling (timm's average-pool ViTs); ours normalise before",
    "ls1": "layer scale", "ls2": "layer scale",
    "q_norm": "query/key normalisation", "k_norm": "query/key normalisation",
    "reg_token": "register tokens", "norm_pre": "a pre-norm before the blocks",
    "attn_pool": "an attention-pooling head", "norm1_post": "post-norm blocks",
}


def _shapes(state: dict[str, Tensor]) -> dict[str, tuple[int, ...]]:
    return {key: tuple(value.shape) for key, value in state.items()}


def _refuse_other_vits(state: dict[str, Tensor]) -> None:
    for key in state:
        for part in key.split("."):
            if part in NOT_A_PLAIN_VIT:
                raise ValueError(
                    f"the checkpoint is not a plain ViT: {key!r} means {NOT_A_PLAIN_VIT[part]}, which this package's ViT does not have. "
                    "Plain timm ViTs (vit_*_patch*_* with a class token, e.g. vit_base_patch16_224.augreg_in21k_ft_in1k) convert"
                )


def vit_config_from_timm(state: dict[str, Tensor], num_heads: int | None = None, num_classes: int | None = None, mlp_activation: str = "gelu") -> ViTConfig:
    """The ViTConfig a timm ViT state dict describes, read off its shapes; heads from the standard widths unless given."""
    _refuse_other_vits(state)
    if "patch_embed.proj.weight" not in state or "pos_embed" not in state:
        raise ValueError(
            "the state dict is not a timm VisionTransformer: no 'patch_embed.proj.weight' / 'pos_embed' "
            f"(it has {', '.join(sorted(state)[:6])}, ...). A checkpoint saved with a 'model.' or 'module.' prefix: strip it first"
        )
    dim, channels, patch, patch_width = state["patch_embed.proj.weight"].shape
    if patch != patch_width:
        raise ValueError(f"the checkpoint cuts {patch}x{patch_width} patches; this package's models cut square patches")
    depth = len({match.group(1) for key in state if (match := re.match(r"blocks\.(\d+)\.", key))})
    if depth == 0:
        raise ValueError("the state dict has no 'blocks.{i}.' keys: it is not a timm VisionTransformer")
    rows = state["pos_embed"].shape[1] - (1 if _embeds_class_position(state) else 0)
    side = math.isqrt(rows)
    if side * side != rows:
        raise ValueError(f"the position embedding has {rows} patch rows, not a square grid; only square images convert")
    if num_heads is None:
        if dim not in STANDARD_HEADS:
            raise ValueError(f"width {dim} is not a standard ViT width ({sorted(STANDARD_HEADS)}): pass num_heads (--num-heads)")
        num_heads = STANDARD_HEADS[dim]
    if num_classes is None:
        if "head.weight" not in state:
            raise ValueError("the checkpoint has no classifier (a timm model built with num_classes=0): pass num_classes for a new head")
        num_classes = state["head.weight"].shape[0]
    return ViTConfig(
        img_size=side * patch,
        patch_size=patch,
        in_chans=channels,
        num_classes=num_classes,
        embed_dim=dim,
        depth=depth,
        num_heads=num_heads,
        mlp_ratio=state["blocks.0.mlp.fc1.weight"].shape[0] / dim,
        qkv_bias="blocks.0.attn.qkv.bias" in state,
        class_token="cls_token" in state,
        mlp_activation=mlp_activation,
    )


def _embeds_class_position(state: dict[str, Tensor]) -> bool:
    """Whether the position embedding has a row for the class token (timm's default; not no_embed_class or big_vision)."""
    if "cls_token" not in state:
        return False
    rows = state["pos_embed"].shape[1]
    return math.isqrt(rows - 1) ** 2 == rows - 1 and math.isqrt(rows) ** 2 != rows


def vit_from_timm(state: dict[str, Tensor], num_heads: int | None = None, num_classes: int | None = None, mlp_activation: str = "gelu") -> ViT:
    """Our ViT with the weights of a timm VisionTransformer state dict (float32, eval mode): timm's logits to float rounding.

    A class token without a position row (timm's no_embed_class, big_vision) gets a zero row, which
    is the same function. `num_classes` different from the checkpoint's (or a checkpoint without a
    head) gives a new, randomly initialised head.
    """
    state = {key: value.float() for key, value in state.items()}
    config = vit_config_from_timm(state, num_heads, num_classes, mlp_activation)
    if "cls_token" in state and not _embeds_class_position(state):
        state["pos_embed"] = torch.cat([torch.zeros_like(state["pos_embed"][:, :1]), state["pos_embed"]], dim=1)
    model = ViT(config)
    expected = model.state_dict()
    keep_head = "head.weight" in state and state["head.weight"].shape[0] == config.num_classes
    if not keep_head:
        state = {key: value for key, value in state.items() if not key.startswith("head.")}
        state.update({key: expected[key] for key in ("head.weight", "head.bias")})
    problems = describe_key_problems(_shapes(state), _shapes(expected))
    if problems:
        raise ValueError(f"the state dict is not a timm ViT of {config.depth} layers, width {config.embed_dim}: {problems}")
    model.load_state_dict(state)
    return model.eval()


# --------------------------------------------------------------------------------------------
# big_vision / AugReg .npz -> ViT
# --------------------------------------------------------------------------------------------

NPZ_PREFIXES = ("", "opt/target/", "params/", "params/img/")  # where the model's arrays sit in the file


def _npz_prefix(arrays: dict[str, Tensor]) -> str:
    for prefix in NPZ_PREFIXES:
        if f"{prefix}embedding/kernel" in arrays:
            return prefix
    raise ValueError(
        "not a big_vision / AugReg ViT checkpoint: no 'embedding/kernel' under any of the prefixes "
        f"{[p or '(none)' for p in NPZ_PREFIXES]}; it has {', '.join(sorted(arrays)[:6])}, ..."
    )


# Sub-module names of one encoder block, and where the position embedding sits, in the two layouts.
BIG_VISION_NAMES = {"attention": "MultiHeadDotProductAttention_0", "mlp": "MlpBlock_0", "second_norm": "LayerNorm_1", "pos_embedding": "pos_embedding"}
AUGREG_NAMES = {"attention": "MultiHeadDotProductAttention_1", "mlp": "MlpBlock_3", "second_norm": "LayerNorm_2", "pos_embedding": "Transformer/posembed_input/pos_embedding"}


def _npz_layout(arrays: dict[str, Tensor]) -> tuple[str, dict[str, str]]:
    prefix = _npz_prefix(arrays)
    big_vision = prefix.startswith("params/") or f"{prefix}pos_embedding" in arrays or f"{prefix}Transformer/encoderblock/LayerNorm_0/scale" in arrays
    return prefix, BIG_VISION_NAMES if big_vision else AUGREG_NAMES


def _block_reader(arrays: dict[str, Tensor], prefix: str, index: int):
    """A function name -> array of encoder block `index`: per-block keys, or big_vision's scanned (stacked) layout."""
    scanned = f"{prefix}Transformer/encoderblock/LayerNorm_0/scale" in arrays
    if scanned:
        return lambda name: arrays[f"{prefix}Transformer/encoderblock/{name}"][index]
    return lambda name: arrays[f"{prefix}Transformer/encoderblock_{index}/{name}"]


def _npz_depth(arrays: dict[str, Tensor], prefix: str) -> int:
    scanned = arrays.get(f"{prefix}Transformer/encoderblock/LayerNorm_0/scale")
    if scanned is not None:
        return scanned.shape[0]
    return len({m.group(1) for key in arrays if (m := re.match(re.escape(prefix) + r"Transformer/encoderblock_(\d+)/", key))})


def _check_npz_names(arrays: dict[str, Tensor], prefix: str, names: dict[str, str]) -> None:
    """Every array the conversion reads must be there; a missing one is named (all of them), not a KeyError."""
    scanned = f"{prefix}Transformer/encoderblock/LayerNorm_0/scale" in arrays
    block_names = [f"{names['attention']}/{part}/{kind}" for part in ("query", "key", "value", "out") for kind in ("kernel", "bias")]
    block_names += [f"{norm}/{kind}" for norm in ("LayerNorm_0", names["second_norm"]) for kind in ("scale", "bias")]
    block_names += [f"{names['mlp']}/{dense}/{kind}" for dense in ("Dense_0", "Dense_1") for kind in ("kernel", "bias")]
    blocks = ["Transformer/encoderblock/"] if scanned else [f"Transformer/encoderblock_{i}/" for i in range(max(_npz_depth(arrays, prefix), 1))]
    required = ["embedding/bias", names["pos_embedding"], "Transformer/encoder_norm/scale", "Transformer/encoder_norm/bias"]
    required += [block + name for block in blocks for name in block_names]
    missing = [prefix + name for name in required if prefix + name not in arrays]
    if missing:
        shown = ", ".join(missing[:8]) + (f", ... ({len(missing)} in all)" if len(missing) > 8 else "")
        raise ValueError(f"the .npz is not a complete big_vision / AugReg ViT: missing {shown}")


def timm_state_from_big_vision(arrays: dict[str, Tensor]) -> dict[str, Tensor]:
    """The arrays of a big_vision / AugReg ViT `.npz` under timm's (and our ViT's) parameter names and layouts.

    Flax kernels are (in, out) and convolutions (p, p, C, D); attention projections keep heads apart,
    (D, h, d) for query/key/value and (h, d, D) for the output. big_vision names its sub-modules
    MultiHeadDotProductAttention_0 / MlpBlock_0 / LayerNorm_1 and keeps the position embedding
    outside the class token; the AugReg (vision_transformer) checkpoints use _1 / _3 / _2 and
    Transformer/posembed_input, with the class token's row first.
    """
    prefix, names = _npz_layout(arrays)
    if f"{prefix}pre_logits/kernel" in arrays:
        raise ValueError("the checkpoint has a pre-logits (representation) layer before its head, which this package's ViT does not have")
    if f"{prefix}MAPHead_0/probe" in arrays:
        raise ValueError("the checkpoint pools with an attention (MAP) head, which this package's ViT does not have")
    _check_npz_names(arrays, prefix, names)
    attention, mlp, second_norm = names["attention"], names["mlp"], names["second_norm"]
    kernel = arrays[f"{prefix}embedding/kernel"]
    state = {
        "patch_embed.proj.weight": kernel.permute(3, 2, 0, 1),
        "patch_embed.proj.bias": arrays[f"{prefix}embedding/bias"],
        "pos_embed": arrays[prefix + names["pos_embedding"]],
        "norm.weight": arrays[f"{prefix}Transformer/encoder_norm/scale"],
        "norm.bias": arrays[f"{prefix}Transformer/encoder_norm/bias"],
    }
    if f"{prefix}cls" in arrays:
        state["cls_token"] = arrays[f"{prefix}cls"]
    if f"{prefix}head/kernel" in arrays and arrays[f"{prefix}head/kernel"].shape[-1] > 0:
        state["head.weight"] = arrays[f"{prefix}head/kernel"].T
        state["head.bias"] = arrays[f"{prefix}head/bias"]
    for index in range(_npz_depth(arrays, prefix)):
        block = _block_reader(arrays, prefix, index)
        ours = f"blocks.{index}"
        state[f"{ours}.attn.qkv.weight"] = torch.cat([block(f"{attention}/{name}/kernel").flatten(1).T for name in ("query", "key", "value")])
        state[f"{ours}.attn.qkv.bias"] = torch.cat([block(f"{attention}/{name}/bias").reshape(-1) for name in ("query", "key", "value")])
        state[f"{ours}.attn.proj.weight"] = block(f"{attention}/out/kernel").flatten(0, 1).T
        state[f"{ours}.attn.proj.bias"] = block(f"{attention}/out/bias")
        for our_norm, their_norm in (("norm1", "LayerNorm_0"), ("norm2", second_norm)):
            state[f"{ours}.{our_norm}.weight"] = block(f"{their_norm}/scale")
            state[f"{ours}.{our_norm}.bias"] = block(f"{their_norm}/bias")
        for layer, dense in (("fc1", "Dense_0"), ("fc2", "Dense_1")):
            state[f"{ours}.mlp.{layer}.weight"] = block(f"{mlp}/{dense}/kernel").T
            state[f"{ours}.mlp.{layer}.bias"] = block(f"{mlp}/{dense}/bias")
    return {key: value.contiguous() for key, value in state.items()}


def read_npz(path: str | os.PathLike) -> dict[str, Tensor]:
    """A .npz file's arrays as float32 tensors; object arrays (pickles) are refused, never loaded."""
    import numpy as np

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no .npz file at {path}")
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {name: torch.from_numpy(np.asarray(archive[name], dtype=np.float32)) for name in archive.files}
    except (ValueError, OSError) as error:
        raise ValueError(f"{path} is not a readable .npz of arrays (truncated, or holding pickled objects?): {error}") from error


def vit_from_big_vision(source: str | os.PathLike | dict[str, Tensor], num_classes: int | None = None, mlp_activation: str = "gelu_tanh") -> ViT:
    """Our ViT from a big_vision / AugReg ViT checkpoint (.npz path or its arrays); heads read off the attention kernels.

    `mlp_activation="gelu_tanh"` (default) is the tanh GELU the JAX model was trained with; "gelu"
    gives what timm's npz loader builds.
    """
    arrays = read_npz(source) if isinstance(source, (str, os.PathLike)) else source
    prefix, names = _npz_layout(arrays)
    num_heads = _block_reader(arrays, prefix, 0)(f"{names['attention']}/query/kernel").shape[1]
    return vit_from_timm(timm_state_from_big_vision(arrays), num_heads=num_heads, num_classes=num_classes, mlp_activation=mlp_activation)


# --------------------------------------------------------------------------------------------
# ViT -> LookupViT
# --------------------------------------------------------------------------------------------

# Settings LookupViT takes from its own config: the image it is built for (the position embedding is
# resampled to it), its compressed-token settings, the class count (new heads when it differs) and
# training-only stochastic depth. Every other setting fixes the shapes or meaning of the ViT's weights.
LOOKUPVIT_OWN_SETTINGS = ("img_size", "num_classes", "drop_path_rate", "class_token") + tuple(
    item.name for item in dataclasses.fields(LookupViTConfig) if item.name not in {f.name for f in dataclasses.fields(ViTConfig)}
)


def _vit_settings(vit_config: ViTConfig) -> dict:
    return {item.name: getattr(vit_config, item.name) for item in dataclasses.fields(ViTConfig) if item.name not in LOOKUPVIT_OWN_SETTINGS}


# What a variant's name promises (lookupvit_b16: width 768, 12 blocks, 12 heads, patch 16): the ViT must have it.
NAMED_SETTINGS = ("embed_dim", "depth", "num_heads", "patch_size")


def warm_start_config(vit_config: ViTConfig, variant: str, **overrides) -> LookupViTConfig:
    """The registered LookupViT `variant` (e.g. "lookupvit_b16") for this ViT: the variant (or `overrides`) gives the
    image size and compressed grid, the ViT its MLP, channels, activation and by default its class count.

    A ViT of another size than the variant names (width, depth, heads, patch) is refused, naming the
    variant that fits; a patch cannot be resampled into another size without changing what every weight sees.
    """
    if VARIANTS.get(variant, ("",))[0] != "lookupvit":
        raise ValueError(f"a ViT warm-starts a lookupvit_* model, got {variant!r}")
    named = model_config(variant, **{key: value for key, value in overrides.items() if key in NAMED_SETTINGS})
    different = [f"{key}: ViT {getattr(vit_config, key)}, {variant} {getattr(named, key)}" for key in NAMED_SETTINGS if getattr(vit_config, key) != getattr(named, key)]
    if different:
        fitting = [name for name, (arch, fields) in VARIANTS.items() if arch == "lookupvit" and all(fields.get(key) == getattr(vit_config, key) for key in NAMED_SETTINGS)]
        hint = f"use {' or '.join(fitting)}" if fitting else "no registered LookupViT has this size; pass embed_dim/depth/num_heads/patch_size overrides to match it"
        raise ValueError(f"the ViT is not the size {variant} names ({'; '.join(different)}): {hint}")
    return model_config(variant, **{**_vit_settings(vit_config), "num_classes": vit_config.num_classes, **overrides})


def lookup_mlp_units(fc1_weight: Tensor, fc2_weight: Tensor, count: int, rule: str) -> Tensor:
    """Indices (ascending) of the `count` ViT MLP hidden units the lookup MLP keeps (module docstring)."""
    if rule == "first":
        return torch.arange(count)
    if rule == "largest":
        contribution = fc1_weight.norm(dim=1) * fc2_weight.norm(dim=0)
        return contribution.topk(count).indices.sort().values
    raise ValueError(f"lookup_mlp must be one of {LOOKUP_MLP_RULES}, got {rule!r}")


def _block_state(vit: dict[str, Tensor], i: int, dim: int, units: Tensor | None, infuse: bool) -> dict[str, Tensor]:
    """LookupViT block i's tensors from ViT block i's (names relative to the block)."""
    source = {key.removeprefix(f"blocks.{i}."): value for key, value in vit.items() if key.startswith(f"blocks.{i}.")}
    state = {f"compressed_block.{key}": value for key, value in source.items()}
    qkv_weight, qkv_bias = source["attn.qkv.weight"], source.get("attn.qkv.bias")
    linears = {  # our linear -> (ViT weight, ViT bias)
        "cross_attn.query": (qkv_weight[:dim], None if qkv_bias is None else qkv_bias[:dim]),
        "cross_attn.key_value": (qkv_weight[dim:], None if qkv_bias is None else qkv_bias[dim:]),
        "cross_attn.gather_proj": (source["attn.proj.weight"], source["attn.proj.bias"]),
    }
    norms = {"gather_norm_compressed": "norm1", "gather_norm_lookup": "norm1"}
    if infuse:
        linears["cross_attn.infuse_value"] = (qkv_weight[2 * dim :], None if qkv_bias is None else qkv_bias[2 * dim :])
        linears["cross_attn.infuse_proj"] = (source["attn.proj.weight"], source["attn.proj.bias"])
        norms.update(infuse_norm="norm1", lookup_mlp_norm="norm2")
        if units is not None:
            linears["lookup_mlp.fc1"] = (source["mlp.fc1.weight"][units], source["mlp.fc1.bias"][units])
            linears["lookup_mlp.fc2"] = (source["mlp.fc2.weight"][:, units], source["mlp.fc2.bias"])
    for name, (weight, bias) in linears.items():
        state[f"{name}.weight"] = weight
        if bias is not None:
            state[f"{name}.bias"] = bias
    for ours, theirs in norms.items():
        state[f"{ours}.weight"], state[f"{ours}.bias"] = source[f"{theirs}.weight"], source[f"{theirs}.bias"]
    return state


def lookupvit_from_vit(vit: ViT, config: LookupViTConfig, lookup_mlp: str = "largest") -> LookupViT:
    """A LookupViT whose every projection starts from `vit`'s, by the rule in the module docstring.

    `config` must keep the ViT's width, depth, heads, MLP ratio, qkv bias, patch, channels and activation
    (`warm_start_config(vit.config, "lookupvit_b16")` builds one); its image size, grid and classes are free.
    """
    if type(vit) is not ViT:
        raise TypeError(f"a LookupViT warm-starts from this package's ViT (vit_from_timm / vit_from_big_vision give one), got {type(vit).__name__}")
    if type(config) is not LookupViTConfig:
        raise TypeError(f"config must be a LookupViTConfig, got {type(config).__name__}")
    if lookup_mlp not in LOOKUP_MLP_RULES:
        raise ValueError(f"lookup_mlp must be one of {LOOKUP_MLP_RULES}, got {lookup_mlp!r}")
    different = [f"{name}: ViT {value!r}, LookupViT {getattr(config, name)!r}" for name, value in _vit_settings(vit.config).items() if getattr(config, name) != value]
    if different:
        raise ValueError(
            f"the LookupViT config does not match the ViT ({'; '.join(different)}); "
            "build it with warm_start_config(vit.config, 'lookupvit_...') to take the ViT's settings"
        )
    dim = config.embed_dim
    hidden = int(dim * config.lookup_mlp_ratio)
    if lookup_mlp != "fresh" and hidden > int(dim * vit.config.mlp_ratio):
        raise ValueError(
            f"the lookup MLP ({hidden} hidden units) is wider than the ViT's MLP ({int(dim * vit.config.mlp_ratio)}): "
            "there are not enough units to copy; lower lookup_mlp_ratio or use lookup_mlp='fresh'"
        )
    source = {key: value.detach().float() for key, value in vit.state_dict().items()}
    model = LookupViT(config)
    state = model.state_dict()
    class_rows = 1 if vit.config.class_token else 0
    state["pos_embed"] = resize_tokens(source["pos_embed"][:, class_rows:], vit.config.patch_grid, config.patch_grid)
    state["patch_embed.proj.weight"], state["patch_embed.proj.bias"] = source["patch_embed.proj.weight"], source["patch_embed.proj.bias"]
    norms_and_heads = {"norm_compressed": "norm", "norm_lookup": "norm"}
    if config.num_classes == vit.config.num_classes:
        norms_and_heads.update(head_compressed="head", head_lookup="head")
    for ours, theirs in norms_and_heads.items():
        if f"{ours}.weight" in state:  # no lookup norm and head without lookup tokens
            state[f"{ours}.weight"], state[f"{ours}.bias"] = source[f"{theirs}.weight"], source[f"{theirs}.bias"]
    for i in range(config.depth):
        if not config.use_lookup_tokens:  # ablation (a): the blocks are ViT blocks
            block = {key.removeprefix(f"blocks.{i}."): value for key, value in source.items() if key.startswith(f"blocks.{i}.")}
        else:
            units = None
            if lookup_mlp != "fresh" and config.infuse:
                units = lookup_mlp_units(source[f"blocks.{i}.mlp.fc1.weight"], source[f"blocks.{i}.mlp.fc2.weight"], hidden, lookup_mlp)
            block = _block_state(source, i, dim, units, config.infuse)
        state.update({f"blocks.{i}.{key}": value for key, value in block.items()})
    model.load_state_dict(state)
    return model.to(vit.pos_embed.dtype).train(vit.training)


# --------------------------------------------------------------------------------------------
# Reading timm checkpoints from disk
# --------------------------------------------------------------------------------------------


def _read_weights_file(path: Path) -> dict[str, Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(path)
    # weights_only: a pickle from elsewhere may not run code while it is read
    loaded = torch.load(path, map_location="cpu", weights_only=True)
    for wrapper in ("state_dict", "model", "state_dict_ema"):  # training scripts' checkpoint dicts
        if isinstance(loaded, dict) and isinstance(loaded.get(wrapper), dict):
            loaded = loaded[wrapper]
            break
    if not isinstance(loaded, dict) or not all(isinstance(value, Tensor) for value in loaded.values()):
        raise ValueError(f"{path} does not hold a state dict (a dict of tensors)")
    return loaded


def read_timm_checkpoint(path: str | os.PathLike) -> tuple[dict[str, Tensor], dict]:
    """A timm ViT's state dict, and what its hub folder's config.json says (num_classes, label_names, mean, std).

    `path`: a hub-style folder (config.json + model.safetensors or pytorch_model.bin, as timm's
    push_to_hub writes and hub snapshots hold) or a weights file (.safetensors, .pth, .pt, .bin).
    """
    import json

    path = Path(path)
    if path.is_dir():
        config_path = path / "config.json"
        config = json.loads(config_path.read_text()) if config_path.is_file() else {}
        for name in ("model.safetensors", "pytorch_model.bin"):
            if (path / name).is_file():
                pretrained = config.get("pretrained_cfg", {})
                facts = {key: value for key, value in {**config, **pretrained}.items() if key in ("num_classes", "label_names", "mean", "std")}
                return _read_weights_file(path / name), facts
        raise FileNotFoundError(f"{path} has no model.safetensors or pytorch_model.bin")
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    return _read_weights_file(path), {}
