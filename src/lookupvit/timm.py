"""timm drop-in: `import lookupvit.timm`, then `timm.create_model("lookupvit_base_patch16_224", num_classes=10)`.

Importing this module registers the image variants of our registry with timm under timm-style
names, `lookupvit_{size}_patch{P}_{SIZE}` (TIMM_NAMES maps each to our `create_model` name). The
models are plain `LookupViT`s built by timm's `build_model_with_cfg`, so timm's training script,
`features_only=True` (the lookup tokens of the last blocks, see `LookupViT.forward_intermediates`),
`checkpoint_path=` and `reset_classifier(0)` work; the compressed grid stays a per-call argument,
`model(x, grid=3)`, with `model.compressed_grid` as the default. Keyword arguments are our config's
fields (`drop_path_rate`, `compressed_grid`, `img_size`, ...). No LookupViT weights exist, so
`pretrained=True` raises instead of timm's silent random initialisation.

Inputs are normalised as in big_vision's ViT ("inception" mean = std = 0.5, pixels in [-1, 1]).
Needs the optional extra: pip install 'lookupvit[timm]'.
"""

from __future__ import annotations

from functools import partial

try:
    from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
except ImportError as error:  # timm is an optional extra
    raise ImportError("lookupvit.timm needs timm: pip install 'lookupvit[timm]'") from error

from .models.lookupvit import LookupViT
from .models.registry import model_config

# timm name -> (our registry name, image size); sizes without `img_size` use the registry's default
TIMM_NAMES: dict[str, tuple[str, int]] = {
    "lookupvit_nano_patch2_28": ("lookupvit_nano2", 28),
    "lookupvit_nano_patch4_28": ("lookupvit_nano4", 28),
    "lookupvit_micro_patch4_32": ("lookupvit_micro4", 32),
    "lookupvit_tiny_patch16_224": ("lookupvit_ti16", 224),
    "lookupvit_small_patch16_224": ("lookupvit_s16", 224),
    "lookupvit_small_patch32_224": ("lookupvit_s32", 224),
    "lookupvit_base_patch16_224": ("lookupvit_b16", 224),
    "lookupvit_base_patch32_224": ("lookupvit_b32", 224),
    "lookupvit_base_patch16_384": ("lookupvit_b16", 384),
    "lookupvit_large_patch16_224": ("lookupvit_l16", 224),
    "lookupvit_large_patch16_384": ("lookupvit_l16", 384),
    "lookupvit_huge_patch14_224": ("lookupvit_h14", 224),
}


def _cfg(ours: str, size: int) -> dict:
    config = model_config(ours, img_size=size)
    inception = (0.5,) * config.in_chans
    return {
        "url": "",  # no weights exist
        "num_classes": config.num_classes,
        "input_size": (config.in_chans, size, size),
        "pool_size": None,  # the features are token sequences, not a feature map
        "crop_pct": 0.9 if size == 224 else 1.0,
        "interpolation": "bicubic",
        "fixed_input_size": False,  # any multiple of the patch size: the position embedding is resampled
        "mean": inception,
        "std": inception,
        "first_conv": "patch_embed.proj",
        "classifier": ("head_compressed", "head_lookup"),  # two heads, averaged
        "license": "apache-2.0",
        "paper_name": "LookupViT: Compressing visual information to a limited number of tokens",
    }


default_cfgs = generate_default_cfgs({name: _cfg(ours, size) for name, (ours, size) in TIMM_NAMES.items()})


def _build(ours: str, num_classes: int, drop_rate: float = 0.0, global_pool: str | None = None, **overrides) -> LookupViT:
    if drop_rate:
        raise ValueError(f"LookupViT has no dropout, got drop_rate={drop_rate}; use drop_path_rate (stochastic depth)")
    if global_pool not in (None, "avg"):
        raise ValueError(f"LookupViT's heads average-pool their tokens: global_pool must be 'avg' or None, got {global_pool!r}")
    return LookupViT(model_config(ours, num_classes=num_classes, **overrides))  # num_classes=0: Identity heads, pooled features


def _create(name: str, pretrained: bool = False, **kwargs) -> LookupViT:
    if pretrained:
        raise ValueError(
            f"no pretrained weights exist for {name} (nor any LookupViT); create it with pretrained=False "
            "and load your own weights with lookupvit.load_weights or timm's checkpoint_path="
        )
    ours, size = TIMM_NAMES[name]
    kwargs.setdefault("img_size", size)
    # features_only=True: timm's FeatureGetterNet over forward_intermediates, the last 3 blocks by default (as timm's ViT)
    feature_cfg = {"out_indices": 3, "feature_cls": "getter"}
    return build_model_with_cfg(partial(_build, ours), name, pretrained=False, feature_cfg=feature_cfg, **kwargs)


def _entrypoint(name: str):
    def entrypoint(pretrained: bool = False, **kwargs) -> LookupViT:
        return _create(name, pretrained, **kwargs)

    entrypoint.__name__ = entrypoint.__qualname__ = name  # timm registers an entrypoint under its __name__
    entrypoint.__doc__ = f"LookupViT {TIMM_NAMES[name][0]} at {TIMM_NAMES[name][1]} px (timm name {name})."
    return entrypoint


for _name in TIMM_NAMES:
    globals()[_name] = register_model(_entrypoint(_name))
del _name
