import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing in the tests may wait on a hub

import pytest
import torch

from lookupvit import LookupViT, LookupViTConfig


def randomize_(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every parameter (LN scales and biases included) random values, so no term can hide behind an init of 0 or 1."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in module.parameters():
            param.copy_(torch.randn(param.shape, generator=generator, dtype=torch.float64).to(param.dtype) * 0.3)
    return module


@pytest.fixture
def small_config() -> LookupViTConfig:
    return LookupViTConfig(img_size=(28, 28), patch_size=2, in_chans=3, num_classes=7, embed_dim=32, depth=2, num_heads=4)


@pytest.fixture
def small_model(small_config) -> LookupViT:
    torch.manual_seed(0)
    return LookupViT(small_config).eval()
