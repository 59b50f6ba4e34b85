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


def _empty_batch_models():
    """(id, model) for every architecture; LookupViT in both MHBC orders and with its ablations."""
    for arch in ("vit", "tokenlearner", "perceiver"):
        yield arch, create_model(f"{arch}_nano4", drop_path_rate=0.1)
    for reassociate in (True, False):
        for ablation in ({}, {"compressed_init": "learned"}, {"infuse": False}, {"use_lookup_tokens": False}):
            model = create_model("lookupvit_nano4", drop_path_rate=0.1, **ablation)
            for block in model.blocks:
                if hasattr(block, "cross_attn"):
                    block.cross_attn.reassociate = reassociate  # force the order, or the batch could pick one
            yield f"lookupvit-reassociate={reassociate}-{ablation}", model


@pytest.mark.parametrize("mode", ["eval", "train-checkpointed"])
@pytest.mark.parametrize("name,model", list(_empty_batch_models()), ids=lambda value: value if isinstance(value, str) else "")
def test_an_empty_batch_gives_empty_outputs(name, model, mode):
    """B = 0 (an empty last shard, a filtered-out batch) must give (0, ...) outputs, not a reshape error."""
    model.train(mode != "eval")
    model.set_grad_checkpointing(mode != "eval")
    images = torch.randn(0, 1, 28, 28, requires_grad=mode != "eval")
    assert model(images).shape == (0, 10)
    if name.startswith("lookupvit"):
        output = model.forward_features(images, return_attention=True)
        assert output.compressed_tokens.shape == (0, 25, 96)
        assert output.lookup_tokens.shape == ((0, 49, 96) if model.config.use_lookup_tokens else (0, 25, 96))
        expected_maps = [(0, 3, 25, 49)] * 4 if model.config.use_lookup_tokens else []
        assert [tuple(a.shape) for a in output.attention] == expected_maps
        for head in ("compressed", "lookup"):
            assert model(images, grid=3, head=head).shape == (0, 10)
    else:
        output = model.forward_features(images)
        tokens = {"vit": 49, "tokenlearner": 8, "perceiver": 25}[name]
        assert output.tokens.shape == (0, tokens, 96) and output.pooled.shape == (0, 96)
    assert output.logits.shape == (0, 10)
    if mode != "eval":
        output.logits.sum().backward()  # the backward of an empty batch runs too
        assert images.grad.shape == images.shape
