"""ViT baseline (global-average-pool head) built from the same layers as LookupViT."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from ..layers import PatchEmbed, ViTBlock, drop_path_rates, init_weights, resize_tokens
from .common import SingleHeadClassifier, ViTConfig, check_images, init_position_embedding


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
        self.patch_embed = PatchEmbed((config.patch_size, config.patch_size), config.in_chans, dim)
        self.pos_embed = init_position_embedding(config.patch_grid[0] * config.patch_grid[1], dim)
        self.blocks = nn.ModuleList(
            ViTBlock(dim, config.num_heads, config.mlp_ratio, config.qkv_bias, rate)
            for rate in drop_path_rates(config.drop_path_rate, config.depth)
        )
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, config.num_classes)
        self.apply(init_weights)

    def forward_features(self, images: Tensor) -> ViTOutput:
        check_images(images, self.config.in_chans, self.config.patch_size)
        tokens, grid = self.patch_embed(images)
        tokens = tokens + resize_tokens(self.pos_embed, self.config.patch_grid, grid)
        for block in self.blocks:
            tokens = block(tokens)
        tokens = self.norm(tokens)
        pooled = tokens.mean(dim=1)
        return ViTOutput(logits=self.head(pooled), pooled=pooled, tokens=tokens, grid=grid)
