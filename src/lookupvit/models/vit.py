"""ViT baseline (global-average-pool head) built from the same layers as LookupViT."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from ..layers import Linear, ViTBlock, drop_path_rates, init_weights
from .common import SingleHeadClassifier, ViTConfig


@dataclass
class ViTOutput:
    logits: Tensor  # (B, classes)
    pooled: Tensor  # (B, D)
    tokens: Tensor  # (B, N, D) after the final norm
    grid: tuple[int, int]


class ViT(SingleHeadClassifier):
    def __init__(self, config: ViTConfig):
        super().__init__()
        self.config = config
        dim = config.embed_dim
        self.init_patch_stem(config)
        self.blocks = nn.ModuleList(
            ViTBlock(dim, config.num_heads, config.mlp_ratio, config.qkv_bias, rate)
            for rate in drop_path_rates(config.drop_path_rate, config.depth)
        )
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = Linear(dim, config.num_classes)
        self.apply(init_weights)

    def forward_features(self, images: Tensor) -> ViTOutput:
        tokens, grid = self.embed_patches(images)
        for block in self.blocks:
            tokens = self.run_block(block, tokens)
        tokens = self.norm(tokens)
        pooled = tokens.mean(dim=1)
        return ViTOutput(logits=self.head(pooled), pooled=pooled, tokens=tokens, grid=grid)
