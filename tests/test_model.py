import copy

import pytest
import torch
import torch.nn.functional as F

from lookupvit import LookupViT, ViT, ViTConfig, create_model, list_models, model_config
from lookupvit.layers import resize_tokens


def assert_every_parameter_is_trained(model: LookupViT) -> None:
    model.train()
    images = torch.randn(2, 3, 28, 28)
    output = model.forward_features(images, grid=4)
    loss = output.compressed_logits.logsumexp(-1).sum() + output.lookup_logits.logsumexp(-1).sum()
    loss.backward()
    assert [name for name, p in model.named_parameters() if p.grad is None] == []  # DDP-safe: all in the graph
    # and every parameter is actually trained, except the key halves of the biases: softmax is shift
    # invariant, so a key bias has an exactly-zero gradient in exact arithmetic (in any transformer)
    dim = model.config.embed_dim
    dead = []
    for name, param in model.named_parameters():
        grad = param.grad
        if name.endswith("key_value.bias"):
            assert grad[:dim].abs().max() < 1e-4 * grad[dim:].abs().max()
            grad = grad[dim:]
        elif name.endswith("attn.qkv.bias"):
            grad = torch.cat([grad[:dim], grad[2 * dim :]])
        if grad.abs().max() == 0:
            dead.append(name)
    assert dead == []


def test_every_parameter_gets_a_gradient(small_model):
    assert_every_parameter_is_trained(small_model)


@pytest.mark.parametrize("grid", [(1, 1), (2, 2), (3, 3), (5, 5), (7, 7), (10, 10), (14, 14), (3, 9), (14, 1)])
def test_any_grid_up_to_the_lookup_grid(small_model, grid):
    images = torch.randn(2, 3, 28, 28)
    with torch.no_grad():
        output = small_model.forward_features(images, grid=grid, return_attention=True)
    assert output.compressed_grid == grid and output.lookup_grid == (14, 14)
    assert output.compressed_tokens.shape == (2, grid[0] * grid[1], 32)
    assert output.lookup_tokens.shape == (2, 196, 32)
    assert len(output.attention) == 2 and output.attention[0].shape == (2, 4, grid[0] * grid[1], 196)
    assert torch.isfinite(output.logits).all()


def test_grid_changes_the_output_and_default_grid_is_used(small_model):
    images = torch.randn(2, 3, 28, 28)
    with torch.no_grad():
        default = small_model(images)
        assert torch.equal(default, small_model(images, grid=small_model.compressed_grid))
        assert not torch.allclose(small_model(images, grid=3), small_model(images, grid=7))
    assert small_model.forward_features(images).attention == []  # maps only when asked for


def test_outputs_are_batch_independent(small_model):
    images = torch.randn(5, 3, 28, 28)
    with torch.no_grad():
        batched = small_model(images, grid=(4, 6))
        single = torch.cat([small_model(images[i : i + 1], grid=(4, 6)) for i in range(5)])
    torch.testing.assert_close(batched, single, rtol=1e-5, atol=1e-5)


def test_other_and_non_square_image_sizes_resample_the_position_embedding(small_model):
    images = torch.randn(2, 3, 40, 56)  # build size is 28x28 -> lookup grid 20x28 instead of 14x14
    with torch.no_grad():
        output = small_model.forward_features(images, grid=(4, 6))
        assert output.lookup_grid == (20, 28) and output.lookup_tokens.shape[1] == 560
        # the position embedding seen at 20x28 is the bilinear resample of the learned 14x14 one
        pos = small_model.pos_embed.transpose(1, 2).reshape(1, 32, 14, 14)
        expected = F.interpolate(pos, size=(20, 28), mode="bilinear", align_corners=False).flatten(2).transpose(1, 2)
        torch.testing.assert_close(resize_tokens(small_model.pos_embed, (14, 14), (20, 28)), expected)


@pytest.mark.parametrize("reassociate", [False, True])
def test_a_model_cast_to_bfloat16_takes_float32_images(small_model, reassociate):
    """model.to(torch.bfloat16) is bf16 inference without autocast: the same images, the same answer
    to bf16 precision, in both MHBC evaluation orders and at a resampled position embedding."""
    for block in small_model.blocks:
        block.cross_attn.reassociate = reassociate
    cast = copy.deepcopy(small_model).to(torch.bfloat16)
    torch.manual_seed(1)
    for images in (torch.randn(4, 3, 28, 28), torch.randn(2, 3, 40, 56)):
        with torch.no_grad():
            expected = small_model(images, grid=(4, 6))
            got = cast(images, grid=(4, 6))
        assert got.dtype == torch.bfloat16
        assert (got.float() - expected).abs().max() < 0.05 * expected.abs().max()


def test_vit_baseline_shapes_and_pooling():
    torch.manual_seed(0)
    vit = ViT(ViTConfig(img_size=32, patch_size=4, in_chans=3, num_classes=5, embed_dim=32, depth=2, num_heads=4)).eval()
    with torch.no_grad():
        output = vit.forward_features(torch.randn(3, 3, 32, 32))
    assert output.tokens.shape == (3, 64, 32) and output.grid == (8, 8)
    torch.testing.assert_close(output.pooled, output.tokens.mean(1))
    torch.testing.assert_close(output.logits, vit.head(output.pooled))


def test_registry_covers_the_paper_variants():
    names = list_models()
    for size in ("ti", "s", "b", "l", "h"):
        for patch in (8, 14, 16, 32):
            assert f"lookupvit_{size}{patch}" in names and f"vit_{size}{patch}" in names
    b16 = model_config("lookupvit_b16")
    assert (b16.embed_dim, b16.depth, b16.num_heads, b16.patch_size, b16.img_size) == (768, 12, 12, 16, (224, 224))
    l16 = model_config("vit_l16")
    assert (l16.embed_dim, l16.depth, l16.num_heads) == (1024, 24, 16)
    assert list_models("lookupvit_nano*") == ["lookupvit_nano2", "lookupvit_nano4"]
    small = create_model("lookupvit_nano2", num_classes=3, compressed_grid=4)
    assert isinstance(small, LookupViT) and small.compressed_grid == (4, 4) and small.config.num_classes == 3


def test_registry_errors_name_the_problem():
    with pytest.raises(ValueError, match="Did you mean lookupvit_b16"):
        create_model("lookupvit_b61")
    with pytest.raises(TypeError, match="no setting"):
        create_model("vit_ti16", compressed_grid=3)  # ViT has no compressed tokens


def test_reset_classifier(small_model):
    small_model.reset_classifier(11)
    assert small_model(torch.randn(1, 3, 28, 28)).shape == (1, 11)
