"""LookupViT: compressing visual information to a limited number of tokens (Koner et al., ECCV 2024)."""

from .models import (
    LookupViT,
    LookupViTConfig,
    LookupViTOutput,
    LookupViViT,
    LookupViViTConfig,
    Perceiver,
    PerceiverConfig,
    TokenLearnerConfig,
    TokenLearnerViT,
    ViT,
    ViTConfig,
    ViTOutput,
    ViViT,
    ViViTConfig,
)
from .layers import pack_for_inference
from .models.budget import grid_for_gflops, grid_for_milliseconds
from .models.flops import analytic_flops, measured_flops
from .models.registry import build_model, create_model, list_models, model_config
from .models.serialization import from_pretrained, load_model, load_weights, save_model, save_pretrained

__version__ = "0.2.0"

__all__ = [
    "LookupViT",
    "LookupViTConfig",
    "LookupViTOutput",
    "LookupViViT",
    "LookupViViTConfig",
    "Perceiver",
    "PerceiverConfig",
    "TokenLearnerConfig",
    "TokenLearnerViT",
    "ViT",
    "ViTConfig",
    "ViTOutput",
    "ViViT",
    "ViViTConfig",
    "analytic_flops",
    "build_model",
    "create_model",
    "from_pretrained",
    "grid_for_gflops",
    "grid_for_milliseconds",
    "list_models",
    "load_model",
    "load_weights",
    "measured_flops",
    "model_config",
    "pack_for_inference",
    "save_model",
    "save_pretrained",
]
