"""LookupViT (Koner et al., ECCV 2024): heavy compute on M compressed tokens, light on N lookup tokens.

Read top to bottom: the block, then the model. Shapes: B batch, N lookup tokens, M compressed
tokens, D width, h heads.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from torch import Tensor, nn

from ..layers import (
    BidirectionalCrossAttention,
    DropPath,
    Mlp,
    ViTBlock,
    drop_path_rates,
    init_weights,
    resize_tokens,
)
from .common import PatchModel, ViTConfig, as_grid, check_count, check_positive_number, check_switch, classifier_head, init_position_embedding
from .intermediates import LookupIntermediates

HEAD_CHOICES = ("average", "compressed", "lookup")
Grid = tuple[int, ...]
COMPRESSED_INITS = ("resize", "learned")


@dataclass
class LookupViTConfig(ViTConfig):
    """ViTConfig plus LookupViT's own settings: the default compressed grid, the lookup MLP's width and the Table 5 ablation switches."""

    compressed_grid: tuple[int, ...] = (5, 5)  # default grid, as many dims as patch_grid; any grid can be chosen per call
    lookup_mlp_ratio: float = 0.5  # lookup-token MLP hidden width D/q with q = 2
    # The paper's Table 5 ablations; the defaults are the full model.
    use_lookup_tokens: bool = True  # False: (a) no lookup tokens, ViT blocks on the resized patch grid only
    infuse: bool = True  # False: (b) no MHBC p->l, the lookup tokens are never updated
    compressed_init: str = "resize"  # "learned": (d) learnable random compressed tokens instead of the resize

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.class_token:
            # One token would have to be both compressed (refined by the heavy block) and lookup
            # (updated through A^T); the paper's two heads average-pool their own tokens instead.
            raise ValueError(
                "LookupViT has no class token: its two heads average-pool the compressed and the lookup tokens; "
                "set class_token=False (a class-token model is ViT / ViViT)"
            )
        lookup_grid = self.patch_grid
        self.compressed_grid = as_grid(self.compressed_grid, "compressed_grid", len(lookup_grid))
        if not grid_fits(self.compressed_grid, lookup_grid):
            # The compressed tokens are a downsampled copy of the lookup tokens, so the default grid must fit.
            raise ValueError(
                f"compressed_grid {self.compressed_grid} is larger than the lookup grid {lookup_grid} of {self.input_description()}; "
                f"choose a grid between {(1,) * len(lookup_grid)} and {lookup_grid}"
            )
        check_positive_number("lookup_mlp_ratio", self.lookup_mlp_ratio)
        check_switch("use_lookup_tokens", self.use_lookup_tokens)
        check_switch("infuse", self.infuse)
        if self.compressed_init not in COMPRESSED_INITS:
            raise ValueError(f"compressed_init must be one of {COMPRESSED_INITS}, got {self.compressed_init!r}")


def grid_fits(compressed_grid: tuple[int, ...], lookup_grid: tuple[int, ...]) -> bool:
    return all(compressed <= lookup for compressed, lookup in zip(compressed_grid, lookup_grid))


class LookupViTBlock(nn.Module):
    """MHBC l->p, a ViT block on the compressed tokens, MHBC p->l reusing A, a narrow lookup MLP.

    `infuse=False` is ablation (b): the block ends after the compressed ViT block and the lookup
    tokens pass through unchanged.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float,
        lookup_mlp_ratio: float,
        qkv_bias: bool,
        drop_path: float,
        infuse: bool = True,
        mlp_activation: str = "gelu",
    ):
        super().__init__()
        self.infuse = infuse
        self.gather_norm_compressed = nn.LayerNorm(dim, eps=1e-6)
        self.gather_norm_lookup = nn.LayerNorm(dim, eps=1e-6)
        self.cross_attn = BidirectionalCrossAttention(dim, num_heads, qkv_bias, infuse)
        self.compressed_block = ViTBlock(dim, num_heads, mlp_ratio, qkv_bias, drop_path, mlp_activation)
        if infuse:
            self.infuse_norm = nn.LayerNorm(dim, eps=1e-6)
            self.lookup_mlp_norm = nn.LayerNorm(dim, eps=1e-6)
            self.lookup_mlp = Mlp(dim, int(dim * lookup_mlp_ratio), mlp_activation)
        self.drop_path = DropPath(drop_path)

    def forward(self, compressed: Tensor, lookup: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(B, M, D), (B, N, D) -> updated compressed, updated lookup, attention A (B, h, M, N)."""
        # Information gathering: compressed tokens look up the high-resolution tokens.
        gathered, attention = self.cross_attn.gather(self.gather_norm_compressed(compressed), self.gather_norm_lookup(lookup))
        compressed = compressed + self.drop_path(gathered)
        # Representation refinement: all the heavy compute, on M tokens only.
        compressed = self.compressed_block(compressed)
        if not self.infuse:
            return compressed, lookup, attention
        # Global context infusion: the refined compressed tokens flow back through A^T.
        lookup = lookup + self.drop_path(self.cross_attn.infuse(self.infuse_norm(compressed), attention))
        lookup = lookup + self.drop_path(self.lookup_mlp(self.lookup_mlp_norm(lookup)))
        return compressed, lookup, attention


@dataclass
class LookupViTOutput:
    """Everything forward_features computes: both heads, their pooled vectors, the final-norm tokens of both sets and (when asked) each layer's attention."""

    logits: Tensor  # (B, classes): mean of the two heads
    compressed_logits: Tensor  # (B, classes)
    lookup_logits: Tensor  # (B, classes)
    compressed_pooled: Tensor  # (B, D): final-norm, average-pooled compressed tokens
    lookup_pooled: Tensor  # (B, D)
    compressed_tokens: Tensor  # (B, M, D) after the final norm
    lookup_tokens: Tensor  # (B, N, D) after the final norm
    compressed_grid: tuple[int, ...]  # (h, w) for images, (t, h, w) for video
    lookup_grid: tuple[int, ...]
    attention: list[Tensor] = field(default_factory=list)  # per layer (B, h, M, N) when asked for


class LookupViT(LookupIntermediates, PatchModel):
    """Patch embedding -> lookup tokens; their resize -> compressed tokens; LookupViT blocks; two heads.

    With `config.use_lookup_tokens=False` (ablation (a)) the model is a ViT on the resized patch grid:
    the blocks are plain ViT blocks, there is one head, and the output's lookup fields repeat the
    compressed ones.
    """

    supported_options = frozenset({"mlp_activation"})

    def __init__(self, config: LookupViTConfig):
        super().__init__()
        self.config = config
        self.compressed_grid = config.compressed_grid
        self.head_mode = "average"
        dim = config.embed_dim
        self.init_patch_stem(config)
        # Ablation (d): compressed tokens of the first layer are parameters, resized to the call's grid.
        self.learned_compressed_tokens = (
            init_position_embedding(math.prod(config.compressed_grid), dim) if config.compressed_init == "learned" else None
        )
        rates = drop_path_rates(config.drop_path_rate, config.depth)
        if config.use_lookup_tokens:
            blocks = [
                LookupViTBlock(dim, config.num_heads, config.mlp_ratio, config.lookup_mlp_ratio, config.qkv_bias, rate, config.infuse, config.mlp_activation)
                for rate in rates
            ]
        else:
            blocks = [ViTBlock(dim, config.num_heads, config.mlp_ratio, config.qkv_bias, rate, config.mlp_activation) for rate in rates]
        self.blocks = nn.ModuleList(blocks)
        self.norm_compressed = nn.LayerNorm(dim, eps=1e-6)
        self.head_compressed = classifier_head(dim, config.num_classes)
        if config.use_lookup_tokens:
            self.norm_lookup = nn.LayerNorm(dim, eps=1e-6)
            self.head_lookup = classifier_head(dim, config.num_classes)
        self.apply(init_weights)

    # timm's model API (lookupvit.timm registers the variants with timm)
    @property
    def num_features(self) -> int:
        return self.config.embed_dim

    @property
    def head_hidden_size(self) -> int:
        """Width of forward_head(..., pre_logits=True): each head reads a D-wide pooled vector."""
        return self.config.embed_dim

    @property
    def num_classes(self) -> int:
        return self.config.num_classes

    def no_weight_decay(self) -> set[str]:
        return {"pos_embed", "learned_compressed_tokens"}

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """New heads for `num_classes`; 0 makes both Identity, so forward returns the pooled features (B, D)."""
        check_count("num_classes", num_classes, minimum=0)
        if global_pool not in (None, "avg"):
            raise ValueError(f"LookupViT's heads average-pool: global_pool must be 'avg' or None, not {global_pool!r}")
        self.config.num_classes = num_classes
        self.head_compressed = classifier_head(self.num_features, num_classes).apply(init_weights)
        if self.config.use_lookup_tokens:
            self.head_lookup = classifier_head(self.num_features, num_classes).apply(init_weights)

    def grid_for_budget(self, gflops: float, image_size: tuple[int, int] | None = None) -> tuple[int, ...]:
        """The largest square compressed grid costing at most `gflops` per image: the dial for compute.

        For a budget in milliseconds on this device, see models.budget.grid_for_milliseconds.
        """
        from .budget import grid_for_gflops  # budget.py counts FLOPs, which imports this module

        return grid_for_gflops(self.config, gflops, image_size)

    def resolve_grid(self, grid: int | tuple[int, ...] | None, lookup_grid: tuple[int, ...]) -> tuple[int, ...]:
        """The compressed grid for a call; it must fit inside the lookup grid (it is a downsampled copy)."""
        compressed_grid = self.compressed_grid if grid is None else as_grid(grid, "grid", len(lookup_grid))
        if not grid_fits(compressed_grid, lookup_grid):
            raise ValueError(
                f"compressed grid {compressed_grid} is larger than the lookup grid {lookup_grid} of this {self.input_name} size; "
                f"choose a grid between {(1,) * len(lookup_grid)} and {lookup_grid}"
            )
        return compressed_grid

    def forward_features(self, images: Tensor, grid: int | tuple[int, ...] | None = None, return_attention: bool = False) -> LookupViTOutput:
        """Everything the model computes for `images` (B, C, H, W), or clips (B, C, T, H, W) in LookupViViT, at the compressed `grid`."""
        compressed, lookup, compressed_grid, lookup_grid = self.embed_tokens(images, grid)
        attention_maps = []
        for block in self.blocks:
            compressed, lookup, attention = self.run_lookupvit_block(block, compressed, lookup)
            if return_attention and attention is not None:
                attention_maps.append(attention)
        return self.finish(compressed, lookup, compressed_grid, lookup_grid, attention_maps)

    def embed_tokens(self, images: Tensor, grid: int | tuple[int, ...] | None) -> tuple[Tensor, Tensor, Grid, Grid]:
        """The first layer's compressed (B, M, D) and lookup (B, N, D) tokens and their grids."""
        lookup, lookup_grid = self.embed_patches(images)
        compressed_grid = self.resolve_grid(grid, lookup_grid)
        if self.learned_compressed_tokens is None:
            compressed = resize_tokens(lookup, lookup_grid, compressed_grid)
        else:
            compressed = resize_tokens(self.learned_compressed_tokens, self.config.compressed_grid, compressed_grid).expand(len(images), -1, -1)
        return compressed, lookup, compressed_grid, lookup_grid

    def run_lookupvit_block(self, block: nn.Module, compressed: Tensor, lookup: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        if not self.config.use_lookup_tokens:
            return self.run_block(block, compressed), lookup, None
        return self.run_block(block, compressed, lookup)

    def finish(self, compressed: Tensor, lookup: Tensor, compressed_grid: Grid, lookup_grid: Grid, attention: list) -> LookupViTOutput:
        """Final norms, average pools and both heads on the last block's tokens."""
        compressed = self.norm_compressed(compressed)
        compressed_pooled = compressed.mean(dim=1)
        compressed_logits = self.head_compressed(compressed_pooled)
        if self.config.use_lookup_tokens:
            lookup = self.norm_lookup(lookup)
            lookup_pooled = lookup.mean(dim=1)
            lookup_logits = self.head_lookup(lookup_pooled)
        else:
            lookup, lookup_pooled, lookup_logits = compressed, compressed_pooled, compressed_logits
        return LookupViTOutput(
            logits=(compressed_logits + lookup_logits) / 2,
            compressed_logits=compressed_logits,
            lookup_logits=lookup_logits,
            compressed_pooled=compressed_pooled,
            lookup_pooled=lookup_pooled,
            compressed_tokens=compressed,
            lookup_tokens=lookup,
            compressed_grid=compressed_grid,
            lookup_grid=lookup_grid,
            attention=attention,
        )

    def forward_head(self, features: LookupViTOutput, pre_logits: bool = False, head: str | None = None) -> Tensor:
        """forward_features' output -> the chosen head's logits, or with `pre_logits` the (B, D) vector it reads.

        The average head reads the mean of the two pooled vectors: what forward returns after reset_classifier(0).
        """
        head = self.head_mode if head is None else head
        if head not in HEAD_CHOICES:
            raise ValueError(f"head must be one of {HEAD_CHOICES}, got {head!r}")
        if pre_logits:
            average = (features.compressed_pooled + features.lookup_pooled) / 2
            return {"average": average, "compressed": features.compressed_pooled, "lookup": features.lookup_pooled}[head]
        return {"average": features.logits, "compressed": features.compressed_logits, "lookup": features.lookup_logits}[head]

    def forward(self, images: Tensor, grid: int | tuple[int, ...] | None = None, head: str | None = None) -> Tensor:
        """Logits (B, classes) of the chosen head: "average" (default), "compressed" or "lookup"."""
        return self.forward_head(self.forward_features(images, grid), head=head)
