"""FLOPs of LookupViT, ViT and the baselines: analytic (paper eq. 5-6 plus the small terms) and measured.

All counts are FLOPs = 2 x multiply-accumulates, the unit of the paper's Table 1.
"""

from __future__ import annotations

import math

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from ..layers import BidirectionalCrossAttention, reassociation_is_cheaper
from .common import ViTConfig, as_grid
from .lookupvit import LookupViT, LookupViTConfig
from .perceiver import PerceiverConfig
from .registry import build_model
from .tokenlearner import TokenLearnerConfig


def _token_counts(config: ViTConfig, image_size: int | tuple[int, int] | None) -> tuple[int, int]:
    height, width = config.img_size if image_size is None else as_grid(image_size, "image_size")
    return (height // config.patch_size) * (width // config.patch_size), math.prod(config.patch_grid)


def _vit_block_macs(tokens: int, dim: int, mlp_hidden: int) -> int:
    """qkv + output projections, QK^T and AV, the MLP: eq. 5's 2T^2 D + 12 T D^2 at mlp_ratio 4."""
    return 4 * tokens * dim**2 + 2 * tokens**2 * dim + 2 * tokens * dim * mlp_hidden


def _cross_attention_macs(queries: int, context: int, dim: int) -> int:
    """q and output projections on the queries, k/v on the context, QK^T and AV."""
    return (2 * queries + 2 * context) * dim**2 + 2 * queries * context * dim


def analytic_flops(
    config: ViTConfig, image_size: int | tuple[int, int] | None = None, grid: int | tuple[int, int] | None = None, reassociated: bool | None = False
) -> int:
    """Every matrix product of one forward pass of one image, counted by hand.

    By default LookupViT is counted in the paper's evaluation order (eq. 6, Table 1). The model
    itself runs MHBC in whichever order is cheaper for the call; `reassociated=None` counts what it
    executes, True/False force an order.

    The block terms reduce to the paper's eq. 5 (ViT: 2N^2 D + 12 N D^2) and eq. 6 (LookupViT:
    (3NM + 2M^2) D + (4N + 15M) D^2) for mlp_ratio 4 and lookup_mlp_ratio 1/2; on top come the patch
    embedding, the classifier head(s), the token resize and, at a non-native image size, the
    position-embedding resample. The baselines reuse the same terms: TokenLearner's blocks run on N
    tokens, then on S; the Perceiver's L latents gather from the N patch tokens in every block.
    """
    dim, depth = config.embed_dim, config.depth
    num_lookup, num_posemb = _token_counts(config, image_size)
    mlp_hidden = int(dim * config.mlp_ratio)
    macs = num_lookup * config.in_chans * config.patch_size**2 * dim  # patch embedding
    if num_lookup != num_posemb:
        macs += num_lookup * num_posemb * dim  # position-embedding resample
    if isinstance(config, LookupViTConfig):
        num_compressed = math.prod(config.compressed_grid if grid is None else as_grid(grid))
        lookup_hidden = int(dim * config.lookup_mlp_ratio)
        compressed_vit = _vit_block_macs(num_compressed, dim, mlp_hidden)
        if config.use_lookup_tokens:
            if reassociated is None:
                reassociated = reassociation_is_cheaper(num_compressed, num_lookup, dim, config.num_heads)
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
            macs += num_compressed * num_lookup * dim  # resize to the compressed grid
        elif grid is not None and as_grid(grid) != config.compressed_grid:
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
    else:
        macs += depth * _vit_block_macs(num_lookup, dim, mlp_hidden)
        macs += dim * config.num_classes
    return 2 * macs


def measured_flops(
    config: ViTConfig, image_size: int | tuple[int, int] | None = None, grid: int | tuple[int, int] | None = None, reassociated: bool | None = False
) -> int:
    """FLOPs counted by torch's FlopCounterMode over a real forward pass of one image.

    `reassociated` sets LookupViT's MHBC evaluation order as in `analytic_flops` (default: the paper's).

    The model runs on the meta device (shapes only, no arithmetic), so even L/16 at 384 px costs
    milliseconds. FlopCounterMode has no formula for the fused CPU attention kernel, so attention
    runs through the math backend, whose matmuls it does count.
    """
    height, width = config.img_size if image_size is None else as_grid(image_size, "image_size")
    with torch.device("meta"):
        # No parameter may require grad: FlopCounterMode's module tracker hooks the autograd graph of
        # every module input that does, and under no_grad a view of a parameter (learned latents or
        # compressed tokens expanded over the batch) has none, which it refuses.
        model = build_model(config).eval().requires_grad_(False)
    for module in model.modules():
        if isinstance(module, BidirectionalCrossAttention):
            module.reassociate = reassociated
    images = torch.empty(1, config.in_chans, height, width, device="meta")
    kwargs = {"grid": grid} if isinstance(model, LookupViT) else {}
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        model(images, **kwargs)
    return int(counter.get_total_flops())



