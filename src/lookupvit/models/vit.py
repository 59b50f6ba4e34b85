"""ViT baseline built from the same layers as LookupViT: global-average-pool head, or a class token's."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from ..layers import ViTBlock, drop_path_rates, init_weights
from .common import SingleHeadClassifier, ViTConfig, classifier_head


@dataclass
class ViTOutput:
    """What ViT.forward_features computes: logits, the pooled vector the head reads, the final-norm patch tokens and their grid."""

    logits: Tensor  # (B, classes)
    pooled: Tensor  # (B, D): what the head reads, the token mean or (with a class token) the class token
    tokens: Tensor  # (B, N, D) patch tokens after the final norm, the class token left out so they match `grid`
    grid: tuple[int, int]


class ViT(SingleHeadClassifier):
    supported_options = frozenset({"class_token", "mlp_activation"})

    def __init__(self, config: ViTConfig):
        super().__init__()
        self.config = config
        dim = config.embed_dim
        self.init_patch_stem(config)
        self.blocks = nn.ModuleList(
            ViTBlock(dim, config.num_heads, config.mlp_ratio, config.qkv_bias, rate, config.mlp_activation)
            for rate in drop_path_rates(config.drop_path_rate, config.depth)
        )
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = classifier_head(dim, config.num_classes)
        self.apply(init_weights)

    def forward_features(self, images: Tensor) -> ViTOutput:
        tokens, grid = self.embed_patches(images)
        for block in self.blocks:
            tokens = self.run_block(block, tokens)
        tokens = self.norm(tokens)
        if self.cls_token is not None:
            pooled, tokens = tokens[:, 0], tokens[:, 1:]
        else:
            pooled = tokens.mean(dim=1)
        return ViTOutput(logits=self.head(pooled), pooled=pooled, tokens=tokens, grid=grid)
