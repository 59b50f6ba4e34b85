from .common import ViTConfig
from .lookupvit import LookupViT, LookupViTBlock, LookupViTConfig, LookupViTOutput
from .perceiver import Perceiver, PerceiverBlock, PerceiverConfig
from .tokenlearner import TokenLearner, TokenLearnerConfig, TokenLearnerViT
from .video import LookupViViT, LookupViViTConfig, ViViT, ViViTConfig
from .vit import ViT, ViTOutput

__all__ = [
    "LookupViT",
    "LookupViTBlock",
    "LookupViTConfig",
    "LookupViTOutput",
    "LookupViViT",
    "LookupViViTConfig",
    "Perceiver",
    "PerceiverBlock",
    "PerceiverConfig",
    "TokenLearner",
    "TokenLearnerConfig",
    "TokenLearnerViT",
    "ViT",
    "ViTConfig",
    "ViTOutput",
    "ViViT",
    "ViViTConfig",
]
