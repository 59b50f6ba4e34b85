"""FLOPs of LookupViT and ViT: analytic (paper eq. 5-6 plus the small terms) and measured.

All counts are FLOPs = 2 x multiply-accumulates, the unit of the paper's Table 1.
"""

from __future__ import annotations

import math

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from .models import LookupViT, LookupViTConfig, ViTConfig
from .models.common import as_grid
from .registry import build_model


def _token_counts(config: ViTConfig, image_size: int | tuple[int, int] | None) -> tuple[int, int]:
    height, width = config.img_size if image_size is None else as_grid(image_size, "image_size")
    return (height // config.patch_size) * (width // config.patch_size), math.prod(config.patch_grid)


def analytic_flops(config: ViTConfig, image_size: int | tuple[int, int] | None = None, grid: int | tuple[int, int] | None = None) -> int:
    """Every matrix product of one forward pass of one image, counted by hand.

    The block terms reduce to the paper's eq. 5 (ViT: 2N^2 D + 12 N D^2) and eq. 6 (LookupViT:
    (3NM + 2M^2) D + (4N + 15M) D^2) for mlp_ratio 4 and lookup_mlp_ratio 1/2; on top come the patch
    embedding, the classifier head(s), the token resize and, at a non-native image size, the
    position-embedding resample.
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
        gather = (2 * num_compressed + 2 * num_lookup) * dim**2 + 2 * num_compressed * num_lookup * dim
        compressed_vit = 4 * num_compressed * dim**2 + 2 * num_compressed**2 * dim + 2 * num_compressed * dim * mlp_hidden
        infuse = (num_compressed + num_lookup) * dim**2 + num_compressed * num_lookup * dim
        lookup_mlp = 2 * num_lookup * dim * lookup_hidden
        macs += depth * (gather + compressed_vit + infuse + lookup_mlp)
        macs += num_compressed * num_lookup * dim  # resize to the compressed grid
        macs += 2 * dim * config.num_classes  # two heads
    else:
        macs += depth * (4 * num_lookup * dim**2 + 2 * num_lookup**2 * dim + 2 * num_lookup * dim * mlp_hidden)
        macs += dim * config.num_classes
    return 2 * macs


def measured_flops(config: ViTConfig, image_size: int | tuple[int, int] | None = None, grid: int | tuple[int, int] | None = None) -> int:
    """FLOPs counted by torch's FlopCounterMode over a real forward pass of one image.

    The model runs on the meta device (shapes only, no arithmetic), so even L/16 at 384 px costs
    milliseconds. FlopCounterMode has no formula for the fused CPU attention kernel, so attention
    runs through the math backend, whose matmuls it does count.
    """
    height, width = config.img_size if image_size is None else as_grid(image_size, "image_size")
    with torch.device("meta"):
        model = build_model(config).eval()
    images = torch.empty(1, config.in_chans, height, width, device="meta")
    kwargs = {"grid": grid} if isinstance(model, LookupViT) else {}
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        model(images, **kwargs)
    return int(counter.get_total_flops())



