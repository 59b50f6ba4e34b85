"""The paper's Table 5 ablations are config switches of LookupViT; each must compute what it claims."""

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from lookupvit import LookupViT, analytic_flops, load_model, measured_flops, save_model

from .conftest import randomize_
from .test_model import assert_every_parameter_is_trained


def build(config, **switches):
    torch.manual_seed(0)
    return randomize_(LookupViT(dataclasses.replace(config, **switches))).eval()


def interpolate_grid(tokens, grid_in, grid_out):
    """Token-grid resize through torch's own antialiased bilinear interpolation (independent of resize_tokens)."""
    batch, _, dim = tokens.shape
    image = tokens.transpose(1, 2).reshape(batch, dim, *grid_in)
    resized = F.interpolate(image, size=grid_out, mode="bilinear", antialias=True, align_corners=False)
    return resized.flatten(2).transpose(1, 2)


@pytest.mark.parametrize(
    "switches", [dict(use_lookup_tokens=False), dict(infuse=False), dict(compressed_init="learned")], ids=["no-lookup", "no-infuse", "learned"]
)
def test_every_ablation_trains_every_parameter(small_config, switches):
    assert_every_parameter_is_trained(build(small_config, **switches))


def test_no_lookup_tokens_is_a_vit_on_the_resized_patch_grid(small_config):
    model = build(small_config, use_lookup_tokens=False)
    assert not any("cross_attn" in name or "lookup" in name for name, _ in model.named_parameters())
    images = torch.randn(2, 3, 28, 28)
    with torch.no_grad():
        output = model.forward_features(images, grid=(3, 5))
        patches = model.patch_embed.proj(images).flatten(2).transpose(1, 2) + model.pos_embed
        tokens = interpolate_grid(patches, (14, 14), (3, 5))
        for block in model.blocks:
            tokens = block(tokens)
        expected = model.head_compressed(model.norm_compressed(tokens).mean(dim=1))
    torch.testing.assert_close(output.compressed_logits, expected, rtol=1e-4, atol=1e-4)
    assert torch.equal(output.logits, output.compressed_logits) and torch.equal(output.lookup_logits, output.compressed_logits)
    assert output.attention == [] and model.forward_features(images, return_attention=True).attention == []


def test_no_infuse_never_updates_the_lookup_tokens(small_config):
    model = build(small_config, infuse=False)
    assert not any("infuse" in name or "lookup_mlp" in name for name, _ in model.named_parameters())
    images = torch.randn(2, 3, 28, 28)
    with torch.no_grad():
        output = model.forward_features(images, grid=4, return_attention=True)
        patches = model.patch_embed.proj(images).flatten(2).transpose(1, 2) + model.pos_embed
        torch.testing.assert_close(output.lookup_tokens, model.norm_lookup(patches), rtol=1e-5, atol=1e-5)
    assert len(output.attention) == small_config.depth  # the compressed tokens still gather from the lookup tokens


def test_learned_compressed_tokens_replace_the_resize(small_config):
    model = build(small_config, compressed_init="learned", compressed_grid=(3, 3))
    assert model.learned_compressed_tokens.shape == (1, 9, small_config.embed_dim)
    assert "learned_compressed_tokens" in model.no_weight_decay()
    images = torch.randn(2, 3, 28, 28)
    first_block = model.blocks[0]
    seen = {}
    first_block.register_forward_hook(lambda module, args, out: seen.update(compressed=args[0]))
    with torch.no_grad():
        model(images)
        torch.testing.assert_close(seen["compressed"], model.learned_compressed_tokens.expand(2, -1, -1))
        model(images, grid=(2, 4))  # other grids resize the learned grid
        torch.testing.assert_close(seen["compressed"], interpolate_grid(model.learned_compressed_tokens, (3, 3), (2, 4)).expand(2, -1, -1))


def test_ablations_round_trip_through_checkpoints(small_config, tmp_path):
    for switches in [dict(use_lookup_tokens=False), dict(infuse=False), dict(compressed_init="learned")]:
        model = build(small_config, **switches)
        save_model(model, tmp_path / "model.safetensors")
        loaded = load_model(tmp_path / "model.safetensors")
        images = torch.randn(2, 3, 28, 28)
        with torch.no_grad():
            assert torch.equal(model(images), loaded(images))


def test_unknown_compressed_init_is_refused(small_config):
    with pytest.raises(ValueError, match="compressed_init must be one of"):
        dataclasses.replace(small_config, compressed_init="random")


@pytest.mark.parametrize(
    "switches", [dict(use_lookup_tokens=False), dict(infuse=False), dict(compressed_init="learned")], ids=["no-lookup", "no-infuse", "learned"]
)
@pytest.mark.parametrize("grid", [None, (2, 4)])
def test_ablation_flops_are_counted_exactly(small_config, switches, grid):
    config = dataclasses.replace(small_config, **switches)
    assert analytic_flops(config, grid=grid) == measured_flops(config, grid=grid)
    assert analytic_flops(config, grid=grid) < analytic_flops(small_config, grid=grid)
