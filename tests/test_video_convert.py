"""Real checkpoints (issue 15): the class-token ViT, transformers' ViViT converted, image models inflated into video models.

The references are independent: transformers' own VivitForVideoClassification, torch's interpolation,
and a class-token ViT written out with plain torch ops.
"""

import json
import math
import re

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from transformers import VivitConfig, VivitForVideoClassification

from lookupvit import ViT, ViTConfig, ViViT, ViViTConfig, create_model, load_model, model_config, save_model
from lookupvit.cli import main
from lookupvit.models.convert import (
    inflate_image_model,
    inflated_config,
    vivit_config_from_transformers,
    vivit_from_transformers,
)
from lookupvit.models.lookupvit import LookupViTConfig
from lookupvit.models.perceiver import PerceiverConfig
from lookupvit.models.registry import build_model
from lookupvit.models.serialization import read_metadata

from .conftest import randomize_

# The two GELUs move these logits by about 1e-4 (see test_the_activation_matters_at_this_tolerance), so
# a converted model must match far more closely than that; it does to under 1e-6.
MATCH = {"rtol": 1e-5, "atol": 1e-5}
SMALL_VIVIT = {
    "image_size": 32,
    "num_frames": 8,
    "tubelet_size": [2, 8, 8],
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 128,
    "num_labels": 5,
}


def transformers_vivit(hidden_act: str = "gelu_fast", seed: int = 0) -> VivitForVideoClassification:
    """A small transformers ViViT with every parameter random (its own init leaves the class token and positions at 0)."""
    return randomize_(VivitForVideoClassification(VivitConfig(**SMALL_VIVIT, hidden_act=hidden_act)), seed).eval()


def pixel_values(batch: int = 2, frames: int = 8, size: int = 32) -> torch.Tensor:
    """transformers' layout (B, T, C, H, W), values in its [-1, 1]."""
    return torch.rand(batch, frames, 3, size, size, generator=torch.Generator().manual_seed(1)) * 2 - 1


def transformers_logits(model: VivitForVideoClassification, pixels: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(pixel_values=pixels).logits


def our_logits(model, pixels: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(pixels.transpose(1, 2))  # ours take (B, C, T, H, W)


# --------------------------------------------------------------------------------------------
# transformers' ViViT -> ViViT
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("hidden_act", ["gelu_fast", "gelu"])
def test_a_converted_transformers_vivit_gives_its_logits(hidden_act, tmp_path):
    reference = transformers_vivit(hidden_act)
    pixels = pixel_values()
    expected = transformers_logits(reference, pixels)
    # the in-memory state dict (transformers >= 5 renames its keys on load) ...
    converted = vivit_from_transformers(reference.state_dict(), reference.config)
    assert type(converted) is ViViT and converted.config.class_token
    assert converted.config.mlp_activation == {"gelu_fast": "gelu_tanh", "gelu": "gelu"}[hidden_act]
    torch.testing.assert_close(our_logits(converted, pixels), expected, **MATCH)
    # ... and the checkpoint files save_pretrained writes (the hub's key layout), with config.json
    reference.save_pretrained(tmp_path)
    from safetensors.torch import load_file

    files = vivit_from_transformers(load_file(tmp_path / "model.safetensors"), json.loads((tmp_path / "config.json").read_text()))
    assert any(
        key.startswith("vivit.encoder.layer.0.attention.attention.query") for key in load_file(tmp_path / "model.safetensors")
    )
    torch.testing.assert_close(our_logits(files, pixels), expected, **MATCH)


def test_the_activation_matters_at_this_tolerance():
    """The comparisons here can tell the two GELUs apart: the same weights with the other one miss by several times MATCH."""
    reference = transformers_vivit("gelu_fast")
    pixels = pixel_values()
    wrong = vivit_from_transformers(reference.state_dict(), {**reference.config.to_dict(), "hidden_act": "gelu"})
    assert (our_logits(wrong, pixels) - transformers_logits(reference, pixels)).abs().max() > 3 * MATCH["atol"]


def test_the_transformers_default_config_is_the_kinetics_checkpoint_architecture():
    config = vivit_config_from_transformers(VivitConfig(num_labels=400))
    assert isinstance(config, ViViTConfig) and config.class_token and config.mlp_activation == "gelu_tanh"
    assert (config.embed_dim, config.depth, config.num_heads, config.mlp_ratio) == (768, 12, 12, 4.0)
    assert (config.num_frames, config.tubelet_size, config.img_size, config.num_classes) == (32, (2, 16, 16), (224, 224), 400)
    # config.json leaves out what equals transformers' defaults: the dict form must fill the same values in
    assert vivit_config_from_transformers({"model_type": "vivit", "id2label": {str(i): f"c{i}" for i in range(400)}}) == config


@pytest.mark.parametrize(
    "change,message",
    [
        ({"layer_norm_eps": 1e-12}, "layer_norm_eps 1e-12 is not supported"),
        ({"hidden_act": "relu"}, "hidden_act 'relu' is not supported"),
        ({"tubelet_size": [2, 8, 4]}, "non-square patches"),
        ({"model_type": "vit"}, "model_type 'vit'"),
    ],
)
def test_configs_we_cannot_run_are_refused(change, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        vivit_config_from_transformers({**SMALL_VIVIT, **change})


def test_bad_state_dicts_name_the_keys_and_shapes():
    reference = transformers_vivit()
    state = dict(reference.state_dict())
    config = reference.config
    missing = {key: value for key, value in state.items() if key != "classifier.bias"}
    with pytest.raises(ValueError, match=re.escape("missing: classifier.bias")):
        vivit_from_transformers(missing, config)
    cut = {**state, "vivit.embeddings.position_embeddings": state["vivit.embeddings.position_embeddings"][:, :-1]}
    with pytest.raises(
        ValueError, match=re.escape("shape mismatch: vivit.embeddings.position_embeddings: got (1, 64, 64), expected (1, 65, 64)")
    ):
        vivit_from_transformers(cut, config)
    with pytest.raises(ValueError, match=re.escape("unexpected: vivit.pooler.dense.weight")):
        vivit_from_transformers({**state, "vivit.pooler.dense.weight": torch.zeros(64, 64)}, config)
    # another size than the config says: every mismatch is listed with the hint to pass the right config
    with pytest.raises(ValueError, match="shape mismatch: .*Pass the checkpoint's config"):
        vivit_from_transformers(state, {**config.to_dict(), "hidden_size": 32, "intermediate_size": 64})
    # a VivitModel's keys (no "vivit." prefix, no classifier)
    bare = {key.removeprefix("vivit."): value for key, value in state.items() if key.startswith("vivit.")}
    with pytest.raises(ValueError, match="not VivitModel ones"):
        vivit_from_transformers(bare, config)


# --------------------------------------------------------------------------------------------
# Class-token ViT
# --------------------------------------------------------------------------------------------


def naive_class_token_vit(model: ViT, images: torch.Tensor, class_score_offset: float = 0.0) -> torch.Tensor:
    """The class-token ViT forward written out with plain torch ops (tanh GELU, eps 1e-6), from the model's parameters.

    `class_score_offset` is added to every attention score of a query for the class token (a key).
    """
    p = dict(model.named_parameters())
    dim, heads = model.config.embed_dim, model.config.num_heads
    x = F.conv2d(images, p["patch_embed.proj.weight"], p["patch_embed.proj.bias"], stride=model.config.patch_size)
    x = torch.cat([p["cls_token"].expand(len(images), -1, -1), x.flatten(2).transpose(1, 2)], dim=1) + p["pos_embed"]
    offset = torch.zeros(x.shape[1])
    offset[0] = class_score_offset
    for i in range(model.config.depth):
        b = f"blocks.{i}."
        h = F.layer_norm(x, (dim,), p[b + "norm1.weight"], p[b + "norm1.bias"], 1e-6)
        q, k, v = (h @ p[b + "attn.qkv.weight"].T + p[b + "attn.qkv.bias"]).chunk(3, dim=-1)
        q, k, v = (t.unflatten(-1, (heads, dim // heads)).transpose(1, 2) for t in (q, k, v))
        weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(dim // heads) + offset, dim=-1)
        x = x + (weights @ v).transpose(1, 2).flatten(2) @ p[b + "attn.proj.weight"].T + p[b + "attn.proj.bias"]
        h = F.layer_norm(x, (dim,), p[b + "norm2.weight"], p[b + "norm2.bias"], 1e-6)
        h = F.gelu(h @ p[b + "mlp.fc1.weight"].T + p[b + "mlp.fc1.bias"], approximate="tanh")
        x = x + h @ p[b + "mlp.fc2.weight"].T + p[b + "mlp.fc2.bias"]
    x = F.layer_norm(x, (dim,), p["norm.weight"], p["norm.bias"], 1e-6)
    return x[:, 0] @ p["head.weight"].T + p["head.bias"]


def class_token_vit(**overrides) -> ViT:
    torch.manual_seed(0)
    settings = {"depth": 2, "in_chans": 3, "class_token": True, "mlp_activation": "gelu_tanh", **overrides}
    return randomize_(create_model("vit_nano4", **settings)).eval()


def test_a_class_token_vit_equals_the_forward_written_out():
    model = class_token_vit()
    images = torch.randn(2, 3, 28, 28)
    with torch.no_grad():
        output = model.forward_features(images)
        torch.testing.assert_close(output.logits, naive_class_token_vit(model, images), rtol=1e-5, atol=1e-5)
    assert model.pos_embed.shape == (1, 1 + 49, 96)
    assert output.tokens.shape == (2, 49, 96) and output.grid == (7, 7)  # the patch tokens, matching the grid
    torch.testing.assert_close(output.logits, model.head(output.pooled))  # pooled: the class token the head read
    assert not torch.allclose(output.pooled, output.tokens.mean(1))
    assert model.no_weight_decay() == {"pos_embed", "cls_token"}


def test_resampling_the_position_embedding_keeps_the_class_row():
    model = class_token_vit()
    images = torch.randn(2, 3, 36, 36)  # a 9x9 grid for a model built at 7x7
    with torch.no_grad():
        tokens, grid = model.embed_patches(images)
        patches, _ = model.patch_embed(images)
    assert grid == (9, 9) and tokens.shape == (2, 1 + 81, 96)
    class_row, patch_rows = model.pos_embed.detach()[:, :1], model.pos_embed.detach()[:, 1:]
    torch.testing.assert_close(tokens[:, 0], (model.cls_token.detach() + class_row)[:, 0].expand(2, -1))
    # upsampling: torch's bilinear interpolation is the reference for the patch rows alone
    table = patch_rows.transpose(1, 2).reshape(1, 96, 7, 7)
    expected = F.interpolate(table, size=(9, 9), mode="bilinear", align_corners=False).flatten(2).transpose(1, 2)
    torch.testing.assert_close(tokens[:, 1:] - patches, expected.expand(2, -1, -1), rtol=1e-5, atol=1e-5)


def test_class_token_and_activation_settings_are_checked():
    with pytest.raises(ValueError, match="LookupViT has no class token"):
        LookupViTConfig(img_size=28, patch_size=4, class_token=True)
    with pytest.raises(ValueError, match=re.escape("mlp_activation must be one of ('gelu', 'gelu_tanh'), got 'relu'")):
        ViTConfig(mlp_activation="relu")
    with pytest.raises(TypeError, match="class_token must be True or False"):
        ViTConfig(class_token=1)
    # the baselines have no class token and fixed GELUs: their models refuse what they would ignore
    for setting in ({"class_token": True}, {"mlp_activation": "gelu_tanh"}):
        with pytest.raises(ValueError, match=f"Perceiver does not implement {next(iter(setting))}"):
            build_model(PerceiverConfig(img_size=28, patch_size=4, embed_dim=32, depth=1, num_heads=2, **setting))
    # LookupViT does take the activation, in the compressed block's MLP and in the lookup MLP
    lookup = create_model("lookupvit_nano4", mlp_activation="gelu_tanh")
    assert lookup.blocks[0].compressed_block.mlp.approximate == lookup.blocks[0].lookup_mlp.approximate == "tanh"


def test_a_class_token_vit_exports_to_onnx_with_a_dynamic_batch(tmp_path):
    from lookupvit.export import export_onnx

    # export_onnx traces at batch 2 and checks onnxruntime at batch 3 against eager PyTorch
    assert export_onnx(class_token_vit(depth=1), tmp_path / "vit.onnx") < 1e-4


def test_class_token_models_round_trip_and_old_files_load_with_the_defaults(tmp_path):
    model = class_token_vit()
    save_model(model, tmp_path / "vit.safetensors")
    loaded = load_model(tmp_path / "vit.safetensors").eval()
    assert loaded.config == model.config
    images = torch.randn(2, 3, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(loaded(images), model(images), rtol=0, atol=0)
    # a file written before the two settings existed: its config has neither, and it builds the model it always was
    plain = create_model("vit_nano4", depth=1)
    old_config = {key: value for key, value in plain.config.to_dict().items() if key not in ("class_token", "mlp_activation")}
    metadata = {"format": "lookupvit/1", "arch": "vit", "config": json.dumps(old_config)}
    save_file(
        {name: tensor.contiguous() for name, tensor in plain.state_dict().items()},
        str(tmp_path / "old.safetensors"),
        metadata=metadata,
    )
    old = load_model(tmp_path / "old.safetensors")
    assert (old.config.class_token, old.config.mlp_activation) == (False, "gelu")


# --------------------------------------------------------------------------------------------
# Image model -> video model
# --------------------------------------------------------------------------------------------


def static_clip(images: torch.Tensor, frames: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, frames, H, W): the same image in every frame."""
    return images.unsqueeze(2).repeat(1, 1, frames, 1, 1)


def image_model(name: str, **overrides):
    torch.manual_seed(0)
    return randomize_(create_model(name, depth=2, **overrides), seed=4).eval()


@pytest.mark.parametrize("rule", ["central", "average"])
def test_an_inflated_vit_on_a_still_clip_is_the_image_model(rule):
    """Average pooling: each patch token appears t = 8 times, which splits every attention weight evenly
    between equal copies and leaves the means unchanged."""
    image = image_model("vit_nano4")
    video = inflate_image_model(image, inflated_config(image.config, "vivit_nano4"), rule)
    assert type(video) is ViViT and video.config.num_frames == 16 and not video.training
    images = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(video(static_clip(images, 16)), image(images), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("rule", ["central", "average"])
def test_an_inflated_class_token_vit_on_a_still_clip_weighs_the_class_token_by_one_over_t(rule):
    """With a class token the patch tokens appear t = 8 times but the class token once, so in every softmax
    the class token's weight against the patches drops t-fold: exactly the image model with log(1/t) added
    to each score for the class token. At t = 1 (one tubelet step) it is the image model itself."""
    image = class_token_vit(in_chans=1)
    video = inflate_image_model(image, inflated_config(image.config, "vivit_nano4"), rule)
    images = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        still = video(static_clip(images, 16))
        torch.testing.assert_close(
            still, naive_class_token_vit(image, images, class_score_offset=-math.log(8)), rtol=1e-5, atol=1e-5
        )
        assert not torch.allclose(still, image(images), rtol=1e-3, atol=1e-3)
        one_step_config = ViViTConfig(**{**inflated_config(image.config, "vivit_nano4").to_dict(), "num_frames": 2})
        one_step = inflate_image_model(image, one_step_config, rule)
        torch.testing.assert_close(one_step(static_clip(images, 2)), image(images), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("rule", ["central", "average"])
def test_an_inflated_lookupvit_on_a_still_clip_is_the_image_model_when_the_grid_keeps_every_time_step(rule):
    """tp = t (8 tubelet steps): the time axis is not resized at all, every compressed token has as many
    copies as every lookup token, and the inflated model is the image model exactly."""
    image = image_model("lookupvit_nano4")
    video = inflate_image_model(image, inflated_config(image.config, "lookupvivit_nano4"), rule)
    images = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        for image_grid in ((3, 5), (7, 7)):
            torch.testing.assert_close(
                video(static_clip(images, 16), grid=(8, *image_grid)), image(images, grid=image_grid), rtol=1e-5, atol=1e-5
            )


def test_an_inflated_lookupvit_at_fewer_time_steps_scales_the_p_to_l_updates():
    """tp < t: A spreads each compressed token's attention over the t copies of every lookup token,
    while every lookup token receives from all tp copies of every compressed token, so the p->l update
    is scaled by tp / t. That is the image model with its p->l values scaled by tp / t, exactly."""
    image = image_model("lookupvit_nano4")
    video = inflate_image_model(image, inflated_config(image.config, "lookupvivit_nano4"), "central")
    images = torch.randn(2, 1, 28, 28)
    scaled = image_model("lookupvit_nano4")
    with torch.no_grad():
        for block in scaled.blocks:
            block.cross_attn.infuse_value.weight.mul_(2 / 8)
            block.cross_attn.infuse_value.bias.mul_(2 / 8)
        still = video(static_clip(images, 16), grid=(2, 3, 5))
        torch.testing.assert_close(still, scaled(images, grid=(3, 5)), rtol=1e-5, atol=1e-5)
        assert not torch.allclose(still, image(images, grid=(3, 5)), rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("class_token", [False, True])
def test_inflated_kernel_and_position_embedding(class_token):
    image = image_model("vit_nano4", class_token=class_token)
    kernel, positions = image.patch_embed.proj.weight.detach(), image.pos_embed.detach()
    class_rows = 1 if class_token else 0
    for rule in ("central", "average"):
        video = inflate_image_model(image, inflated_config(image.config, "vivit_nano4"), rule)
        tubelet = video.patch_embed.proj.weight.detach()
        assert tubelet.shape == (96, 1, 2, 4, 4)
        if rule == "central":  # frame t // 2 = 1 carries the kernel, frame 0 nothing
            torch.testing.assert_close(tubelet[:, :, 1], kernel, rtol=0, atol=0)
            assert not tubelet[:, :, 0].any()
        else:
            torch.testing.assert_close(tubelet, kernel.unsqueeze(2).expand(-1, -1, 2, -1, -1) / 2, rtol=0, atol=0)
        tiled = video.pos_embed.detach()
        assert tiled.shape == (1, class_rows + 8 * 49, 96)
        torch.testing.assert_close(tiled[:, :class_rows], positions[:, :class_rows], rtol=0, atol=0)
        torch.testing.assert_close(
            tiled[:, class_rows:].view(8, 49, 96), positions[:, class_rows:].expand(8, -1, -1), rtol=0, atol=0
        )


def test_inflation_resamples_the_positions_to_another_frame_size():
    image = image_model("vit_nano4")
    video_config = ViViTConfig(
        **{**inflated_config(image.config, "vivit_nano4").to_dict(), "img_size": (36, 36), "num_frames": 4}
    )
    video = inflate_image_model(image, video_config)
    table = image.pos_embed.detach().transpose(1, 2).reshape(1, 96, 7, 7)
    expected = F.interpolate(table, size=(9, 9), mode="bilinear", align_corners=False).flatten(2).transpose(1, 2)
    tiled = video.pos_embed.detach()
    assert tiled.shape == (1, 2 * 81, 96)
    torch.testing.assert_close(tiled.view(2, 81, 96), expected.expand(2, -1, -1), rtol=1e-5, atol=1e-5)
    images = torch.randn(1, 1, 36, 36)
    with torch.no_grad():  # and the still clip still gives the image model's logits at that size
        torch.testing.assert_close(video(static_clip(images, 4)), image(images), rtol=1e-5, atol=1e-5)


def test_inflation_refuses_what_it_cannot_do():
    image = image_model("vit_nano4")
    with pytest.raises(ValueError, match=re.escape("embed_dim: image 96, video 192")):
        inflate_image_model(image, model_config("vivit_nano4", embed_dim=192, num_heads=3))
    with pytest.raises(ValueError, match="rule must be one of"):
        inflate_image_model(image, inflated_config(image.config, "vivit_nano4"), "random")
    with pytest.raises(TypeError, match="inflates with a ViViTConfig"):
        inflate_image_model(image, model_config("lookupvivit_nano4"))
    with pytest.raises(ValueError, match=re.escape("a ViT inflates into a vivit_* model, got 'lookupvivit_nano4'")):
        inflated_config(image.config, "lookupvivit_nano4")
    with pytest.raises(TypeError, match="only ViT and LookupViT"):
        inflate_image_model(create_model("vivit_nano4"), model_config("vivit_nano4"))
    with pytest.raises(TypeError, match="only ViT and LookupViT"):
        inflated_config(model_config("perceiver_nano4"), "vivit_nano4")


# --------------------------------------------------------------------------------------------
# lookupvit convert
# --------------------------------------------------------------------------------------------


def test_cli_converts_a_transformers_checkpoint_folder(tmp_path, capsys):
    reference = transformers_vivit()
    folder = tmp_path / "hf"
    reference.save_pretrained(folder)
    out = tmp_path / "vivit.safetensors"
    assert main(["convert", str(folder), "--out", str(out)]) == 0
    assert "ViViT for 8-frame 32x32 clips" in capsys.readouterr().out
    pixels = pixel_values()
    expected = transformers_logits(reference, pixels)
    torch.testing.assert_close(our_logits(load_model(out).eval(), pixels), expected, **MATCH)
    assert json.loads(read_metadata(out)["classes"]) == [f"LABEL_{i}" for i in range(5)]
    # The file is ready for `lookupvit eval`/`predict`: class names, and transformers' [-1, 1] input scaling.
    from lookupvit.training.report import load_trained

    _, normalization, classes = load_trained(out, torch.device("cpu"))
    assert classes == [f"LABEL_{i}" for i in range(5)] and normalization.mean == normalization.std == (0.5,) * 3
    # a pytorch_model.bin folder (read with weights_only) converts the same
    bin_folder = tmp_path / "bin"
    bin_folder.mkdir()
    (bin_folder / "config.json").write_text((folder / "config.json").read_text())
    torch.save(reference.state_dict(), bin_folder / "pytorch_model.bin")
    assert main(["convert", str(bin_folder), "--from", "transformers-vivit", "--out", str(tmp_path / "bin.safetensors")]) == 0
    torch.testing.assert_close(our_logits(load_model(tmp_path / "bin.safetensors").eval(), pixels), expected, **MATCH)


def test_cli_inflates_an_image_model_file(tmp_path, capsys):
    image = image_model("lookupvit_nano4")
    save_model(image, tmp_path / "image.safetensors", extra={"classes": json.dumps([str(i) for i in range(10)])})
    out = tmp_path / "video.safetensors"
    assert (
        main(
            [
                "convert",
                str(tmp_path / "image.safetensors"),
                "--out",
                str(out),
                "--model",
                "lookupvivit_nano4",
                "--rule",
                "average",
            ]
        )
        == 0
    )
    video = load_model(out).eval()
    expected = inflate_image_model(image, inflated_config(image.config, "lookupvivit_nano4"), "average")
    assert video.config == expected.config
    assert all(torch.equal(a, b) for a, b in zip(video.state_dict().values(), expected.state_dict().values()))
    assert json.loads(read_metadata(out)["classes"]) == [str(i) for i in range(10)]  # the image model's metadata carries over
    # misuse is an error message, not a traceback
    assert main(["convert", str(tmp_path / "image.safetensors"), "--out", str(tmp_path / "x.safetensors")]) == 2
    assert "already a lookupvit model file: pass --model" in capsys.readouterr().err
    assert main(["convert", str(tmp_path), "--out", str(tmp_path / "x.safetensors")]) == 2
    assert "a folder without a transformers ViViT or timm checkpoint" in capsys.readouterr().err
