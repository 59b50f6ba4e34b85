"""FLOPs of LookupViT, ViT, the baselines and the video models: analytic (paper eq. 5-6 plus the small terms) and measured.

All counts are FLOPs = 2 x multiply-accumulates, the unit of the paper's Table 1. The video Table 4
follows ViViT and prints multiply-accumulates; `table_4_rows` compares in that unit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from ..layers import BidirectionalCrossAttention, reassociation_is_cheaper
from .common import ViTConfig, as_grid
from .lookupvit import LookupViT, LookupViTConfig
from .perceiver import PerceiverConfig
from .registry import build_model, model_config
from .tokenlearner import TokenLearnerConfig
from .video import ViViTConfig


def _input_shape(config: ViTConfig, image_size: int | tuple[int, int] | None, num_frames: int | None) -> tuple[int, ...]:
    """(C, H, W) of one image, or (C, T, H, W) of one clip for the video configs."""
    height, width = config.img_size if image_size is None else as_grid(image_size, "image_size")
    if not isinstance(config, ViViTConfig):
        if num_frames is not None:
            raise ValueError(f"num_frames is for the video models; {type(config).__name__} takes images")
        return (config.in_chans, height, width)
    return (config.in_chans, config.num_frames if num_frames is None else num_frames, height, width)


def _lookup_grid(config: ViTConfig, image_size: int | tuple[int, int] | None, num_frames: int | None) -> tuple[int, ...]:
    """The patch (or tubelet) token grid of the input: (h, w), or (t, h, w) for the video configs."""
    pixels = _input_shape(config, image_size, num_frames)[1:]
    return tuple(size // kernel for size, kernel in zip(pixels, config.patch_kernel))


def _vit_block_macs(tokens: int, dim: int, mlp_hidden: int) -> int:
    """qkv + output projections, QK^T and AV, the MLP: eq. 5's 2T^2 D + 12 T D^2 at mlp_ratio 4."""
    return 4 * tokens * dim**2 + 2 * tokens**2 * dim + 2 * tokens * dim * mlp_hidden


def _cross_attention_macs(queries: int, context: int, dim: int) -> int:
    """q and output projections on the queries, k/v on the context, QK^T and AV."""
    return (2 * queries + 2 * context) * dim**2 + 2 * queries * context * dim


def analytic_flops(
    config: ViTConfig,
    image_size: int | tuple[int, int] | None = None,
    grid: int | tuple[int, ...] | None = None,
    reassociated: bool | None = False,
    num_frames: int | None = None,
    dtype: torch.dtype = torch.float32,
) -> int:
    """Every matrix product of one forward pass of one image (or one clip of `num_frames`), counted by hand.

    By default LookupViT is counted in the paper's evaluation order (eq. 6, Table 1). The model
    itself runs MHBC in whichever order is cheaper for the call; `reassociated=None` counts what it
    executes with its products in `dtype` (the order depends on it), True/False force an order.

    The block terms reduce to the paper's eq. 5 (ViT: 2N^2 D + 12 N D^2) and eq. 6 (LookupViT:
    (3NM + 2M^2) D + (4N + 15M) D^2) for mlp_ratio 4 and lookup_mlp_ratio 1/2; on top come the patch
    embedding, the classifier head(s), the token resize and, at a non-native image size, the
    position-embedding resample. The baselines reuse the same terms: TokenLearner's blocks run on N
    tokens, then on S; the Perceiver's L latents gather from the N patch tokens in every block.
    The video models are the same sums over N = t h w tubelet tokens, with a Conv3d embedding.
    A ViT (or ViViT) with a class token runs its blocks on N + 1 tokens.
    """
    dim, depth = config.embed_dim, config.depth
    lookup_grid = _lookup_grid(config, image_size, num_frames)
    num_lookup = math.prod(lookup_grid)
    mlp_hidden = int(dim * config.mlp_ratio)
    macs = num_lookup * config.in_chans * math.prod(config.patch_kernel) * dim  # patch (or tubelet) embedding
    if lookup_grid != config.patch_grid:
        macs += num_lookup * math.prod(config.patch_grid) * dim  # position-embedding resample
    if isinstance(config, LookupViTConfig):
        grid = None if grid is None else as_grid(grid, "grid", len(config.patch_grid))
        compressed_grid = config.compressed_grid if grid is None else grid
        num_compressed = math.prod(compressed_grid)
        lookup_hidden = int(dim * config.lookup_mlp_ratio)
        compressed_vit = _vit_block_macs(num_compressed, dim, mlp_hidden)
        if config.use_lookup_tokens:
            if reassociated is None:
                reassociated = reassociation_is_cheaper(num_compressed, num_lookup, dim, config.num_heads, dtype)
            if reassociated:  # projections moved to the M side, see BidirectionalCrossAttention
                gather = 4 * num_compressed * dim**2 + 2 * config.num_heads * num_compressed * num_lookup * dim
                infuse = 2 * num_compressed * dim**2 + config.num_heads * num_compressed * num_lookup * dim
            else:
                gather = _cross_attention_macs(num_compressed, num_lookup, dim)
                infuse = (num_compressed + num_lookup) * dim**2 + num_compressed * num_lookup * dim
            lookup_mlp = 2 * num_lookup * dim * lookup_hidden
            macs += depth * (gather + compressed_vit + (infuse + lookup_mlp if config.infuse else 0))
            macs += 2 * dim * config.num_classes  # two heads
        else:  # ablation (a): ViT blocks on the compressed tokens, one head
            macs += depth * compressed_vit + dim * config.num_classes
        if config.compressed_init == "resize":
            if compressed_grid != lookup_grid:  # resize_tokens passes a grid of the same size through
                macs += num_compressed * num_lookup * dim  # resize to the compressed grid
        elif compressed_grid != config.compressed_grid:
            macs += num_compressed * math.prod(config.compressed_grid) * dim  # resize of the learned tokens
    elif isinstance(config, TokenLearnerConfig):
        before, learned = config.blocks_before_tokenlearner, config.num_learned_tokens
        macs += before * _vit_block_macs(num_lookup, dim, mlp_hidden)
        macs += num_lookup * dim * dim + num_lookup * dim * learned  # logit MLP, hidden width D
        macs += learned * num_lookup * dim  # weighted sums of the N tokens
        macs += (depth - before) * _vit_block_macs(learned, dim, mlp_hidden)
        macs += dim * config.num_classes
    elif isinstance(config, PerceiverConfig):
        latents = config.num_latents
        macs += depth * (_cross_attention_macs(latents, num_lookup, dim) + _vit_block_macs(latents, dim, mlp_hidden))
        macs += dim * config.num_classes
    else:  # ViT: a class token is one more token in every block (its position row is not resampled)
        macs += depth * _vit_block_macs(num_lookup + (1 if config.class_token else 0), dim, mlp_hidden)
        macs += dim * config.num_classes
    return 2 * macs


def measured_flops(
    config: ViTConfig,
    image_size: int | tuple[int, int] | None = None,
    grid: int | tuple[int, ...] | None = None,
    reassociated: bool | None = False,
    num_frames: int | None = None,
    dtype: torch.dtype = torch.float32,
) -> int:
    """FLOPs counted by torch's FlopCounterMode over a real forward pass of one image (or one clip).

    `reassociated` sets LookupViT's MHBC evaluation order as in `analytic_flops` (default: the paper's);
    with None the model picks it as it runs, for its weights and images in `dtype`.

    The model runs on the meta device (shapes only, no arithmetic), so even L/16 at 384 px costs
    milliseconds. FlopCounterMode has no formula for the fused CPU attention kernel, so attention
    runs through the math backend, whose matmuls it does count.
    """
    input_shape = _input_shape(config, image_size, num_frames)
    with torch.device("meta"):
        # No parameter may require grad: FlopCounterMode's module tracker hooks the autograd graph of
        # every module input that does, and under no_grad a view of a parameter (learned latents or
        # compressed tokens expanded over the batch) has none, which it refuses.
        model = build_model(config).eval().requires_grad_(False).to(dtype)
    for module in model.modules():
        if isinstance(module, BidirectionalCrossAttention):
            module.reassociate = reassociated
    images = torch.empty(1, *input_shape, device="meta", dtype=dtype)
    kwargs = {"grid": grid} if isinstance(model, LookupViT) else {}
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        model(images, **kwargs)
    return int(counter.get_total_flops())





# Paper Table 4, "GFLOPs/view" as printed. They follow ViViT's unit, multiply-accumulates (G MACs),
# not Table 1's 2 x MACs. Keys are our compressed grids (tp, hp, wp), None for ViViT; the paper
# names the grids hp x wp x tp ("9x9x8" is (8, 9, 9)).
TABLE_4_GMACS: dict[tuple[int, int, int] | None, float] = {None: 455.1, (8, 9, 9): 226.5, (16, 8, 8): 311.2, (16, 9, 9): 375.8}
TABLE_4_TOLERANCE = 0.04  # relative; the paper's counting conventions are not fully specified


@dataclass
class Table4Row:
    label: str  # as the paper prints it, e.g. "LookupViViT 9x9x8"
    grid: tuple[int, int, int] | None
    paper_gmacs: float
    analytic_flops: int  # FLOPs = 2 x MACs
    measured_flops: int | None

    @property
    def analytic_gmacs(self) -> float:
        return self.analytic_flops / 2e9

    @property
    def relative_difference(self) -> float:
        """(ours - paper) / paper, both in multiply-accumulates."""
        return self.analytic_gmacs / self.paper_gmacs - 1


def table_4_rows(measure: bool = True) -> list[Table4Row]:
    """Our counts for the rows of Table 4 (B/16, 32 x 224 x 224 clips, tubelets 2 x 16 x 16)."""
    rows = []
    for grid, paper in TABLE_4_GMACS.items():
        if grid is None:
            label, config = "ViViT-B/16", model_config("vivit_b16")
        else:
            label, config = f"LookupViViT {grid[1]}x{grid[2]}x{grid[0]}", model_config("lookupvivit_b16")
        measured = measured_flops(config, grid=grid) if measure else None
        rows.append(Table4Row(label, grid, paper, analytic_flops(config, grid=grid), measured))
    return rows
