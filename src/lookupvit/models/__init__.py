from .common import ViTConfig
from .lookupvit import LookupViT, LookupViTBlock, LookupViTConfig, LookupViTOutput
from .perceiver import Perceiver, PerceiverBlock, PerceiverConfig
from .tokenlearner import TokenLearner, TokenLearnerConfig, TokenLearnerViT
from .vit import ViT, ViTOutput

__all__ = [
    "LookupViT",
    "LookupViTBlock",
    "LookupViTConfig",
    "LookupViTOutput",
    "Perceiver",
    "PerceiverBlock",
    "PerceiverConfig",
    "TokenLearner",
    "TokenLearnerConfig",
    "TokenLearnerViT",
    "ViT",
    "ViTConfig",
    "ViTOutput",
]
