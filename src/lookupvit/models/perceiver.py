"""Perceiver-style baseline: a small learned latent array reads the patch tokens by cross-attention.

Shapes: B batch, N patch tokens, L latents, D width. The patch tokens are computed once and never
updated; all the self-attention and MLP compute runs on the L latents.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..layers import CrossAttention, DropPath, ViTBlock, drop_path_rates, init_weights
from .common import SingleHeadClassifier, ViTConfig, check_count, classifier_head
from .vit import ViTOutput


@dataclass
class PerceiverConfig(ViTConfig):
    """ViTConfig plus the number of learned latents that cross-attend to the patch tokens."""

    num_latents: int = 25  # as many as LookupViT's default 5x5 compressed tokens

    def __post_init__(self) -> None:
        super().__post_init__()
        check_count("num_latents", self.num_latents)


class PerceiverBlock(nn.Module):
    """Latents cross-attend to the (layer-normed) patch tokens, then a ViT block on the latents."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, qkv_bias: bool, drop_path: float):
        super().__init__()
        self.norm_latents = nn.LayerNorm(dim, eps=1e-6)
        self.norm_patches = nn.LayerNorm(dim, eps=1e-6)
        self.cross_attn = CrossAttention(dim, num_heads, qkv_bias)
        self.latent_block = ViTBlock(dim, num_heads, mlp_ratio, qkv_bias, drop_path)
        self.drop_path = DropPath(drop_path)

    def forward(self, latents: Tensor, patches: Tensor) -> Tensor:
        """(B, L, D), (B, N, D) -> updated latents (B, L, D); the patch tokens are only read."""
        latents = latents + self.drop_path(self.cross_attn(self.norm_latents(latents), self.norm_patches(patches)))
        return self.latent_block(latents)


class Perceiver(SingleHeadClassifier):
    """Patch embedding, a learned latent array, `depth` Perceiver blocks, average-pool head.

    Every block has its own cross-attention to the patch tokens (the original Perceiver has a few,
    weight-shared ones between deeper latent stacks); this mirrors LookupViT's per-block information
    gathering, so the two compare at matching FLOPs. The output's `tokens` are the L latents after the final norm and its
    `grid` is the patch grid they read.
    """

    def __init__(self, config: PerceiverConfig):
        super().__init__()
        self.config = config
        dim = config.embed_dim
        self.init_patch_stem(config)
        self.blocks = nn.ModuleList(
            PerceiverBlock(dim, config.num_heads, config.mlp_ratio, config.qkv_bias, rate)
            for rate in drop_path_rates(config.drop_path_rate, config.depth)
        )
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = classifier_head(dim, config.num_classes)
        self.apply(init_weights)
        # Normal with std 0.02; init_weights touches only linears, convolutions and norms.
        self.latents = nn.Parameter(torch.randn(config.num_latents, dim) * 0.02)

    def no_weight_decay(self) -> set[str]:
        # The latents are learned input tokens, treated like LookupViT's learned compressed tokens.
        return {"pos_embed", "latents"}

    def forward_features(self, images: Tensor) -> ViTOutput:
        patches, grid = self.embed_patches(images)
        latents = self.latents.expand(len(images), -1, -1)
        for block in self.blocks:
            latents = self.run_block(block, latents, patches)
        latents = self.norm(latents)
        pooled = latents.mean(dim=1)
        return ViTOutput(logits=self.head(pooled), pooled=pooled, tokens=latents, grid=grid)
