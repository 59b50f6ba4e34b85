import pytest
import torch

from lookupvit import LookupViTConfig, create_model


@pytest.mark.parametrize(
    "images,error,message",
    [
        (torch.randn(2, 1, 28, 28), ValueError, "expects 3 input channels, got 1"),
        (torch.randn(2, 28, 28, 3), ValueError, "Channels-last input"),
        (torch.randn(2, 3, 27, 28), ValueError, "not a positive multiple of the patch size 2"),
        (torch.randn(3, 28, 28), ValueError, "Add a batch dimension"),
        (torch.randn(1, 1, 3, 28, 28), ValueError, r"must have shape \(batch, 3, height, width\)"),
        (torch.zeros(2, 3, 28, 28, dtype=torch.uint8), TypeError, "must be floating point"),
        ([[0.0]], TypeError, "must be a torch.Tensor"),
    ],
)
def test_bad_images_get_clear_errors(small_model, images, error, message):
    with pytest.raises(error, match=message):
        small_model(images)


@pytest.mark.parametrize(
    "grid,error,message",
    [
        (0, ValueError, "at least 1"),
        ((3, -1), ValueError, "at least 1"),
        (15, ValueError, r"larger than the lookup grid \(14, 14\)"),
        ((3, 15), ValueError, "larger than the lookup grid"),
        ((3,), TypeError, "sequence of 2 ints"),
        (2.5, TypeError, "sequence of 2 ints"),
        ((2.0, 3), TypeError, "must contain ints"),
        (True, TypeError, "sequence of 2 ints"),
    ],
)
def test_bad_grids_get_clear_errors(small_model, grid, error, message):
    with pytest.raises(error, match=message):
        small_model(torch.randn(1, 3, 28, 28), grid=grid)


def test_grid_bound_follows_the_image_size(small_model):
    with pytest.raises(ValueError, match=r"lookup grid \(4, 4\)"):
        small_model(torch.randn(1, 3, 8, 8))  # default 5x5 does not fit 4x4 lookup tokens


def test_bad_configs_and_heads():
    with pytest.raises(ValueError, match="divisible by num_heads"):
        LookupViTConfig(embed_dim=30, num_heads=4)
    with pytest.raises(ValueError, match="divisible by patch_size"):
        LookupViTConfig(img_size=30, patch_size=4)
    with pytest.raises(ValueError, match="at least 1"):
        LookupViTConfig(compressed_grid=0)
    model = create_model("lookupvit_nano4")
    with pytest.raises(ValueError, match="head must be one of"):
        model(torch.randn(1, 1, 28, 28), head="both")
