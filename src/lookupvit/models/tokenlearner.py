"""TokenLearner v1.1 baseline (Ryoo et al., 2021): a ViT that learns S tokens from its N patch tokens part way up.

Shapes: B batch, N patch tokens, S learned tokens, D width. The first blocks run on N tokens,
the TokenLearner module pools them to S, and the remaining blocks run on S tokens only.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..layers import Linear, ViTBlock, drop_path_rates, init_weights
from .common import SingleHeadClassifier, ViTConfig, check_count, check_fraction, classifier_head
from .vit import ViTOutput


@dataclass
class TokenLearnerConfig(ViTConfig):
    """ViTConfig plus where the TokenLearner module sits and how many tokens it learns."""

    num_learned_tokens: int = 8
    tokenlearner_at: float = 0.5  # fraction of the depth after which the module sits; the paper uses 0.5 or 0.75

    def __post_init__(self) -> None:
        super().__post_init__()
        check_count("num_learned_tokens", self.num_learned_tokens)
        check_fraction("tokenlearner_at", self.tokenlearner_at, 0, 1, high_allowed=True)  # a fraction of the depth

    @property
    def blocks_before_tokenlearner(self) -> int:
        """ViT blocks on the N patch tokens; the fraction is rounded half up (0.5 of 12 -> 6, 0.75 of 12 -> 9)."""
        return int(self.depth * self.tokenlearner_at + 0.5)


class TokenLearner(nn.Module):
    """(B, N, D) -> (B, S, D): each learned token is a softmax-weighted average of the input tokens.

    v1.1: the weights come from an MLP on the layer-normed tokens (N x S logits, softmax over N) and
    mix the un-normed input tokens. The MLP's hidden width is D here for simplicity; at about N D^2
    multiply-accumulates it costs under a tenth of one ViT block at N tokens.
    """

    def __init__(self, dim: int, num_tokens: int, hidden_dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.fc1 = Linear(dim, hidden_dim)
        self.fc2 = Linear(hidden_dim, num_tokens)

    def attention(self, tokens: Tensor) -> Tensor:
        """Pooling weights (B, S, N); each row sums to 1 over the N input tokens."""
        logits = self.fc2(F.gelu(self.fc1(self.norm(tokens))))  # (B, N, S)
        return torch.softmax(logits.transpose(1, 2), dim=-1)

    def forward(self, tokens: Tensor) -> Tensor:
        return self.attention(tokens) @ tokens


class TokenLearnerViT(SingleHeadClassifier):
    """Patch embedding, ViT blocks on N tokens, TokenLearner to S tokens, ViT blocks on S tokens, average-pool head.

    The output's `tokens` are the S learned tokens after the final norm and its `grid` is the patch
    grid they were learned from (the S tokens have no spatial layout).
    """

    def __init__(self, config: TokenLearnerConfig):
        super().__init__()
        self.config = config
        dim = config.embed_dim
        self.init_patch_stem(config)
        # One list, as in ViT, so that stochastic depth grows over the whole depth; the module sits inside it.
        self.blocks = nn.ModuleList(
            ViTBlock(dim, config.num_heads, config.mlp_ratio, config.qkv_bias, rate)
            for rate in drop_path_rates(config.drop_path_rate, config.depth)
        )
        self.token_learner = TokenLearner(dim, config.num_learned_tokens, hidden_dim=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = classifier_head(dim, config.num_classes)
        self.apply(init_weights)

    def forward_features(self, images: Tensor) -> ViTOutput:
        tokens, grid = self.embed_patches(images)
        split = self.config.blocks_before_tokenlearner
        for block in self.blocks[:split]:
            tokens = self.run_block(block, tokens)
        tokens = self.token_learner(tokens)
        for block in self.blocks[split:]:
            tokens = self.run_block(block, tokens)
        tokens = self.norm(tokens)
        pooled = tokens.mean(dim=1)
        return ViTOutput(logits=self.head(pooled), pooled=pooled, tokens=tokens, grid=grid)
