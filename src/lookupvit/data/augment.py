"""Batched, seeded augmentation for small-data ViT training, on whatever device the batch lives on.

Every random number comes from a torch.Generator the caller seeds (per training step), and the
parameters are drawn for the whole *global* batch before a process takes its slice, so a run is
reproducible, resumable mid-epoch, and identical with one process or several.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass
class AugmentConfig:
    """A RandAugment-style policy: each op fires with probability `op_prob` at a random strength up to its maximum."""

    op_prob: float = 0.5
    translate: float = 0.1  # fraction of the image side (a random crop with padding, as an affine shift)
    rotate: float = 10.0  # degrees
    shear: float = 0.15
    scale: float = 0.1  # zoom in/out by up to this fraction
    flip: bool = True  # horizontal flip with probability 0.5
    brightness: float = 0.2
    contrast: float = 0.2
    erase: float = 0.25  # probability of erasing one random rectangle (up to 1/4 of the area)
    mixup_alpha: float = 0.0  # 0 disables
    cutmix_alpha: float = 0.0  # 0 disables; with both set, each step picks one at random


def _uniform(generator: torch.Generator, count: int, low: float, high: float) -> Tensor:
    return low + (high - low) * torch.rand(count, generator=generator)


def augment(images: Tensor, config: AugmentConfig, generator: torch.Generator, global_batch: int, offset: int) -> Tensor:
    """Augment `images` (B, C, H, W) float in [0, 1], rows offset..offset+B of a global batch."""
    rows = slice(offset, offset + images.shape[0])

    def draw(low: float, high: float, gated: bool = True) -> Tensor:
        value = _uniform(generator, global_batch, low, high)
        if gated:
            value = value * (torch.rand(global_batch, generator=generator) < config.op_prob)
        return value[rows].to(images.device)

    # Geometry: one affine warp per image (rotation, shear, zoom, shift, flip), one grid_sample.
    angle = draw(-1, 1) * math.radians(config.rotate)
    shear = draw(-1, 1) * config.shear
    zoom = 1 + draw(-1, 1) * config.scale
    shift_x, shift_y = draw(-1, 1) * 2 * config.translate, draw(-1, 1) * 2 * config.translate
    flip = torch.where(draw(0, 1, gated=False) < (0.5 if config.flip else 0.0), -1.0, 1.0)
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.stack(
        [
            torch.stack([flip * cos / zoom, (-sin + shear) / zoom, shift_x], dim=-1),
            torch.stack([flip * sin / zoom, cos / zoom, shift_y], dim=-1),
        ],
        dim=1,
    ).to(images.dtype)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    images = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

    # Photometric.
    brightness = 1 + draw(-1, 1) * config.brightness
    contrast = 1 + draw(-1, 1) * config.contrast
    mean = images.mean(dim=(1, 2, 3), keepdim=True)
    images = ((images - mean) * contrast.view(-1, 1, 1, 1) + mean) * brightness.view(-1, 1, 1, 1)
    images = images.clamp(0, 1)

    # Random erasing of one rectangle.
    height, width = images.shape[-2:]
    erase = draw(0, 1, gated=False) < config.erase
    box_h = (draw(0.1, 0.5, gated=False) * height).long().clamp(min=1)
    box_w = (draw(0.1, 0.5, gated=False) * width).long().clamp(min=1)
    top = (draw(0, 1, gated=False) * (height - box_h + 1)).long()
    left = (draw(0, 1, gated=False) * (width - box_w + 1)).long()
    ys = torch.arange(height, device=images.device).view(1, -1, 1)
    xs = torch.arange(width, device=images.device).view(1, 1, -1)
    inside = (ys >= top.view(-1, 1, 1)) & (ys < (top + box_h).view(-1, 1, 1)) & (xs >= left.view(-1, 1, 1)) & (xs < (left + box_w).view(-1, 1, 1))
    return images.masked_fill((inside & erase.view(-1, 1, 1)).unsqueeze(1), 0.0)


def mix_partners(batch: int) -> Tensor:
    """Row i of a batch is mixed with row i ^ 1: its neighbour in the pair (0, 1), (2, 3), ...

    Pairs never straddle two micro-batches or two processes as long as each local batch is even and
    starts at an even row, so accumulation and DDP mix exactly the pairs of the full batch.
    """
    if batch % 2:
        raise ValueError(f"mixup/cutmix pair rows (0, 1), (2, 3), ...: a local batch of {batch} rows is odd")
    return torch.arange(batch) ^ 1


def mix(images: Tensor, targets: Tensor, config: AugmentConfig, generator: torch.Generator) -> Tensor:
    """Mixup or CutMix of each row with its pair partner (`mix_partners`); returns soft targets.

    The choice, lambda and CutMix box are drawn once per global batch from `generator`, so every
    micro-batch of a step draws the same ones. Modifies `images` in place. `targets` are
    one-hot/soft (B, classes).
    """
    choices = [name for name, alpha in (("mixup", config.mixup_alpha), ("cutmix", config.cutmix_alpha)) if alpha > 0]
    if not choices:
        return targets
    name = choices[int(torch.randint(len(choices), (1,), generator=generator))]
    alpha = config.mixup_alpha if name == "mixup" else config.cutmix_alpha
    lam = _beta(alpha, generator)
    partners = mix_partners(images.shape[0]).to(images.device)
    partner_images = images[partners]
    if name == "mixup":
        images.mul_(lam).add_(partner_images * (1 - lam))
    else:
        height, width = images.shape[-2:]
        cut = math.sqrt(1 - lam)
        box_h, box_w = int(height * cut), int(width * cut)
        cy, cx = (int(v) for v in torch.randint(0, max(height, width), (2,), generator=generator))
        top, left = min(max(cy - box_h // 2, 0), height - box_h), min(max(cx - box_w // 2, 0), width - box_w)
        images[:, :, top : top + box_h, left : left + box_w] = partner_images[:, :, top : top + box_h, left : left + box_w]
        lam = 1 - box_h * box_w / (height * width)
    return targets * lam + targets[partners] * (1 - lam)


def _beta(alpha: float, generator: torch.Generator) -> float:
    """Beta(alpha, alpha) as a ratio of two seeded Gamma draws (torch.distributions takes no generator)."""
    first, second = _gamma(alpha, generator), _gamma(alpha, generator)
    return first / (first + second)


def _gamma(alpha: float, generator: torch.Generator) -> float:
    """Marsaglia-Tsang Gamma(alpha, 1) sampler driven by `generator`."""
    boost = 1.0
    if alpha < 1:
        boost = float(torch.rand(1, generator=generator)) ** (1 / alpha)
        alpha += 1
    d = alpha - 1 / 3
    c = 1 / math.sqrt(9 * d)
    while True:
        x = float(torch.randn(1, generator=generator))
        v = (1 + c * x) ** 3
        if v <= 0:
            continue
        u = float(torch.rand(1, generator=generator))
        if math.log(u) < 0.5 * x * x + d - d * v + d * math.log(v):
            return d * v * boost
