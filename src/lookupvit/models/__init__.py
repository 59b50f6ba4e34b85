from .common import ViTConfig
from .lookupvit import LookupViT, LookupViTBlock, LookupViTConfig, LookupViTOutput
from .vit import ViT, ViTOutput

__all__ = ["LookupViT", "LookupViTBlock", "LookupViTConfig", "LookupViTOutput", "ViT", "ViTConfig", "ViTOutput"]
