"""Warm starts: timm ViT state dicts and big_vision / AugReg .npz files into our ViT (checked against timm itself),
and our ViT into LookupViT by the documented rule (checked parameter by parameter and against naive computations)."""

import json

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer, _load_weights

from lookupvit import create_model
from lookupvit.models.lookupvit import LookupViTConfig
from lookupvit.models.warmstart import (
    lookupvit_from_vit,
    vit_config_from_timm,
    vit_from_big_vision,
    vit_from_timm,
    warm_start_config,
)

from .conftest import randomize_

WIDTH, HEADS = 192, 3  # ViT-Ti's width, so the standard-width rule gives the heads


def timm_vit(seed: int = 0, **kwargs) -> VisionTransformer:
    settings = dict(img_size=32, patch_size=8, embed_dim=WIDTH, depth=2, num_heads=HEADS, num_classes=7, mlp_ratio=2.0)
    torch.manual_seed(seed)
    return randomize_(VisionTransformer(**{**settings, **kwargs}), seed).eval()


def close(ours: torch.Tensor, theirs: torch.Tensor, tolerance: float = 1e-5) -> bool:
    return (ours - theirs).abs().max().item() <= tolerance * max(1.0, theirs.abs().max().item())


@pytest.mark.parametrize(
    "settings",
    [{}, {"no_embed_class": True}, {"class_token": False, "global_pool": "avg", "fc_norm": False}, {"qkv_bias": False}],
    ids=["class-token", "no-embed-class", "average-pool", "no-qkv-bias"],
)
def test_a_timm_vit_converts_to_the_same_logits(settings):
    theirs = timm_vit(**settings)
    ours = vit_from_timm(theirs.state_dict())
    assert ours.config.class_token == theirs.has_class_token and ours.config.num_heads == HEADS
    images = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        assert close(ours(images), theirs(images))


def test_timm_models_that_are_not_plain_vits_are_refused_with_the_reason():
    with pytest.raises(ValueError, match="normalises after pooling"):
        vit_from_timm(timm_vit(class_token=False, global_pool="avg").state_dict())  # fc_norm on by default for avg
    with pytest.raises(ValueError, match="layer scale"):
        vit_from_timm(timm_vit(init_values=1e-5).state_dict())
    with pytest.raises(ValueError, match="not a standard ViT width"):
        vit_from_timm(timm_vit(embed_dim=96).state_dict())
    state = timm_vit(embed_dim=96).state_dict()
    assert vit_config_from_timm(state, num_heads=3).num_heads == 3
    with pytest.raises(ValueError, match="strip it first"):
        vit_from_timm({f"module.{key}": value for key, value in state.items()}, num_heads=3)


def test_a_new_class_count_gets_a_new_head_and_keeps_the_rest():
    theirs = timm_vit()
    ours = vit_from_timm(theirs.state_dict(), num_classes=4)
    assert ours.head.weight.shape == (4, WIDTH)
    assert torch.equal(ours.blocks[1].mlp.fc2.weight, theirs.blocks[1].mlp.fc2.weight)
    with pytest.raises(ValueError, match="no classifier"):
        vit_from_timm(timm_vit(num_classes=0).state_dict())


# --------------------------------------------------------------------------------------------
# .npz: written here from a timm model in the JAX layouts, proved by timm's own loader
# --------------------------------------------------------------------------------------------


def write_npz(model: VisionTransformer, path, layout: str) -> None:
    """The model's weights as a flax checkpoint: AugReg's per-block keys, or big_vision's (params/ prefix, scanned blocks)."""
    dim, heads = model.embed_dim, model.blocks[0].attn.num_heads
    if layout == "augreg":
        prefix, attention, mlp, second_norm = "", "MultiHeadDotProductAttention_1", "MlpBlock_3", "LayerNorm_2"
    else:
        prefix, attention, mlp, second_norm = "params/", "MultiHeadDotProductAttention_0", "MlpBlock_0", "LayerNorm_1"
    arrays = {
        "embedding/kernel": model.patch_embed.proj.weight.permute(2, 3, 1, 0),  # (D, C, p, p) -> (p, p, C, D)
        "embedding/bias": model.patch_embed.proj.bias,
        "Transformer/encoder_norm/scale": model.norm.weight,
        "Transformer/encoder_norm/bias": model.norm.bias,
        "head/kernel": model.head.weight.T,
        "head/bias": model.head.bias,
    }
    if model.cls_token is not None:
        arrays["cls"] = model.cls_token
    if layout == "augreg":
        arrays["Transformer/posembed_input/pos_embedding"] = model.pos_embed
    else:
        arrays["pos_embedding"] = model.pos_embed
    blocks = []
    for block in model.blocks:
        query, key, value = block.attn.qkv.weight.chunk(3)
        query_bias, key_bias, value_bias = block.attn.qkv.bias.chunk(3)
        entries = {f"{attention}/{name}/kernel": weight.T.reshape(dim, heads, dim // heads) for name, weight in zip(("query", "key", "value"), (query, key, value))}
        entries.update({f"{attention}/{name}/bias": bias.reshape(heads, dim // heads) for name, bias in zip(("query", "key", "value"), (query_bias, key_bias, value_bias))})
        entries[f"{attention}/out/kernel"] = block.attn.proj.weight.T.reshape(heads, dim // heads, dim)
        entries[f"{attention}/out/bias"] = block.attn.proj.bias
        for norm, name in ((block.norm1, "LayerNorm_0"), (block.norm2, second_norm)):
            entries[f"{name}/scale"], entries[f"{name}/bias"] = norm.weight, norm.bias
        for layer, name in ((block.mlp.fc1, "Dense_0"), (block.mlp.fc2, "Dense_1")):
            entries[f"{mlp}/{name}/kernel"], entries[f"{mlp}/{name}/bias"] = layer.weight.T, layer.bias
        blocks.append(entries)
    if layout == "augreg":
        for index, entries in enumerate(blocks):
            arrays.update({f"Transformer/encoderblock_{index}/{name}": value for name, value in entries.items()})
    else:  # scanned: one array per name with the layer axis first
        arrays.update({f"Transformer/encoderblock/{name}": torch.stack([entries[name] for entries in blocks]) for name in blocks[0]})
    np.savez(path, **{prefix + name: value.detach().numpy() for name, value in arrays.items()})


@pytest.mark.parametrize(
    "layout, settings",
    [("augreg", {}), ("big_vision", {"class_token": False, "global_pool": "avg", "fc_norm": False})],
    ids=["augreg-class-token", "big-vision-scanned-average-pool"],
)
def test_an_npz_converts_to_what_timms_own_loader_builds(tmp_path, layout, settings):
    source = timm_vit(**settings)
    write_npz(source, tmp_path / "vit.npz", layout)
    loaded_by_timm = timm_vit(seed=1, **settings)  # other weights, then overwritten by timm's loader
    _load_weights(loaded_by_timm, str(tmp_path / "vit.npz"))
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert close(loaded_by_timm(images), source(images), 1e-6)  # the npz writer above is right
        ours = vit_from_big_vision(tmp_path / "vit.npz", mlp_activation="gelu")
        assert close(ours(images), loaded_by_timm(images))
        jax_model = vit_from_big_vision(tmp_path / "vit.npz")  # default: the tanh GELU the JAX model trained with
        assert jax_model.config.mlp_activation == "gelu_tanh"
        assert not close(jax_model(images), loaded_by_timm(images), 1e-6)


def test_npz_files_that_cannot_convert_say_why(tmp_path):
    write_npz(timm_vit(), tmp_path / "vit.npz", "augreg")
    arrays = dict(np.load(tmp_path / "vit.npz"))
    del arrays["Transformer/encoderblock_1/MlpBlock_3/Dense_0/bias"], arrays["Transformer/encoder_norm/scale"]
    np.savez(tmp_path / "incomplete.npz", **arrays)
    with pytest.raises(ValueError, match="missing Transformer/encoder_norm/scale, Transformer/encoderblock_1/MlpBlock_3/Dense_0/bias"):
        vit_from_big_vision(tmp_path / "incomplete.npz")
    np.savez(tmp_path / "other.npz", weights=np.zeros(3, dtype=np.float32))
    with pytest.raises(ValueError, match="no 'embedding/kernel'"):
        vit_from_big_vision(tmp_path / "other.npz")
    np.savez(tmp_path / "pickled.npz", embedding=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError, match="pickled objects"):
        vit_from_big_vision(tmp_path / "pickled.npz")


# --------------------------------------------------------------------------------------------
# ViT -> LookupViT
# --------------------------------------------------------------------------------------------


@pytest.fixture
def vit():
    torch.manual_seed(0)
    return randomize_(create_model("vit_nano4", class_token=True, num_classes=10), seed=3).eval()


def test_the_rule_copies_each_vit_projection_where_the_docstring_says(vit):
    lookup = lookupvit_from_vit(vit, warm_start_config(vit.config, "lookupvit_nano4"))
    dim = vit.config.embed_dim
    for source, block in zip(vit.blocks, lookup.blocks):
        assert all(torch.equal(a, b) for a, b in zip(source.state_dict().values(), block.compressed_block.state_dict().values()))
        qkv, qkv_bias = source.attn.qkv.weight, source.attn.qkv.bias
        assert torch.equal(block.cross_attn.query.weight, qkv[:dim]) and torch.equal(block.cross_attn.query.bias, qkv_bias[:dim])
        assert torch.equal(block.cross_attn.key_value.weight, qkv[dim:])
        assert torch.equal(block.cross_attn.infuse_value.weight, qkv[2 * dim :]) and torch.equal(block.cross_attn.infuse_value.bias, qkv_bias[2 * dim :])
        for projection in (block.cross_attn.gather_proj, block.cross_attn.infuse_proj):
            assert torch.equal(projection.weight, source.attn.proj.weight) and torch.equal(projection.bias, source.attn.proj.bias)
        for norm in (block.gather_norm_compressed, block.gather_norm_lookup, block.infuse_norm):
            assert torch.equal(norm.weight, source.norm1.weight)
        assert torch.equal(block.lookup_mlp_norm.bias, source.norm2.bias)
        # the D/2 hidden units with the largest |fc1 row| * |fc2 column|, in their order
        sizes = [(source.mlp.fc1.weight[j].norm() * source.mlp.fc2.weight[:, j].norm()).item() for j in range(source.mlp.fc1.out_features)]
        kept = sorted(sorted(range(len(sizes)), key=lambda j: -sizes[j])[: dim // 2])
        assert torch.equal(block.lookup_mlp.fc1.weight, source.mlp.fc1.weight[kept])
        assert torch.equal(block.lookup_mlp.fc2.weight, source.mlp.fc2.weight[:, kept])
        assert torch.equal(block.lookup_mlp.fc2.bias, source.mlp.fc2.bias)
    for head in (lookup.head_compressed, lookup.head_lookup):
        assert torch.equal(head.weight, vit.head.weight)
    assert torch.equal(lookup.norm_lookup.weight, vit.norm.weight)
    assert torch.equal(lookup.pos_embed, vit.pos_embed[:, 1:])  # the class token's row dropped


def test_mhbc_gathers_with_the_vit_layers_own_attention(vit):
    """A of the converted block = softmax of the ViT layer's scaled q.k between compressed queries and lookup keys, per head."""
    lookup = lookupvit_from_vit(vit, warm_start_config(vit.config, "lookupvit_nano4"))
    compressed, lookups = torch.randn(2, 9, vit.config.embed_dim), torch.randn(2, 49, vit.config.embed_dim)
    block, source = lookup.blocks[0], vit.blocks[0]
    with torch.no_grad():
        _, attention = block.cross_attn.gather(block.gather_norm_compressed(compressed), block.gather_norm_lookup(lookups))
        heads, head_dim = vit.config.num_heads, vit.config.embed_dim // vit.config.num_heads
        q = F.linear(source.norm1(compressed), *[p[: vit.config.embed_dim] for p in (source.attn.qkv.weight, source.attn.qkv.bias)])
        k = F.linear(source.norm1(lookups), *[p[vit.config.embed_dim : 2 * vit.config.embed_dim] for p in (source.attn.qkv.weight, source.attn.qkv.bias)])
        for head in range(heads):
            part = slice(head * head_dim, (head + 1) * head_dim)
            expected = torch.softmax(q[..., part] @ k[..., part].transpose(1, 2) / head_dim**0.5, dim=-1)
            assert torch.allclose(attention[:, head], expected, atol=1e-5)


def test_without_lookup_tokens_at_the_full_grid_the_warm_start_is_the_vit():
    """Ablation (a) at the lookup grid runs the ViT's blocks on the patch tokens: an average-pool ViT's logits exactly."""
    torch.manual_seed(0)
    vit = randomize_(create_model("vit_nano4"), seed=5).eval()
    lookup = lookupvit_from_vit(vit, warm_start_config(vit.config, "lookupvit_nano4", use_lookup_tokens=False, compressed_grid=(7, 7)))
    images = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        assert close(lookup(images), vit(images))


def test_other_image_sizes_classes_and_rules(vit):
    bigger = lookupvit_from_vit(vit, warm_start_config(vit.config, "lookupvit_nano4", img_size=40))
    grid = vit.pos_embed[:, 1:].reshape(1, 7, 7, -1).permute(0, 3, 1, 2)
    resampled = F.interpolate(grid, size=(10, 10), mode="bilinear", antialias=True, align_corners=False)
    assert torch.allclose(bigger.pos_embed, resampled.flatten(2).transpose(1, 2), atol=1e-6)
    fresh_heads = lookupvit_from_vit(vit, warm_start_config(vit.config, "lookupvit_nano4", num_classes=3))
    assert fresh_heads.head_compressed.weight.shape == (3, vit.config.embed_dim)
    first = lookupvit_from_vit(vit, warm_start_config(vit.config, "lookupvit_nano4"), lookup_mlp="first")
    assert torch.equal(first.blocks[0].lookup_mlp.fc1.weight, vit.blocks[0].mlp.fc1.weight[: vit.config.embed_dim // 2])
    torch.manual_seed(0)
    fresh = lookupvit_from_vit(vit, warm_start_config(vit.config, "lookupvit_nano4"), lookup_mlp="fresh")
    torch.manual_seed(0)
    untouched = create_model("lookupvit_nano4")
    assert torch.equal(fresh.blocks[2].lookup_mlp.fc1.weight, untouched.blocks[2].lookup_mlp.fc1.weight)
    no_infusion = lookupvit_from_vit(vit, warm_start_config(vit.config, "lookupvit_nano4", infuse=False))
    assert not hasattr(no_infusion.blocks[0], "lookup_mlp")


def test_warm_start_refuses_configs_that_do_not_fit_the_vit(vit):
    with pytest.raises(ValueError, match="num_heads: ViT 3, LookupViT 4"):
        lookupvit_from_vit(vit, LookupViTConfig(**{**warm_start_config(vit.config, "lookupvit_nano4").to_dict(), "num_heads": 4}))
    with pytest.raises(ValueError, match="not enough units"):
        lookupvit_from_vit(vit, warm_start_config(vit.config, "lookupvit_nano4", lookup_mlp_ratio=8.0))
    with pytest.raises(ValueError, match="warm-starts a lookupvit_"):
        warm_start_config(vit.config, "vit_nano4")
    with pytest.raises(TypeError, match="this package's ViT"):
        lookupvit_from_vit(create_model("lookupvit_nano4"), warm_start_config(vit.config, "lookupvit_nano4"))
    with pytest.raises(ValueError, match=r"not the size lookupvit_b16 names \(embed_dim: ViT 96, lookupvit_b16 768.*use lookupvit_nano4"):
        warm_start_config(vit.config, "lookupvit_b16")
    with pytest.raises(ValueError, match="patch_size: ViT 4, lookupvit_nano2 2"):  # a patch is not resampled into another size
        warm_start_config(vit.config, "lookupvit_nano2")
    with pytest.raises(ValueError, match="lookup_mlp must be one of"):
        lookupvit_from_vit(vit, warm_start_config(vit.config, "lookupvit_nano4"), lookup_mlp="random")


def test_a_timm_vit_warm_starts_a_lookupvit_end_to_end():
    theirs = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=64, num_classes=5).eval()
    vit = vit_from_timm(theirs.state_dict())
    lookup = lookupvit_from_vit(vit, warm_start_config(vit.config, "lookupvit_ti16", img_size=64, compressed_grid=(2, 2)))
    with torch.no_grad():
        assert lookup(torch.randn(1, 3, 64, 64), grid=3).shape == (1, 5)


# --------------------------------------------------------------------------------------------
# `lookupvit convert` and training's init_weights
# --------------------------------------------------------------------------------------------


def test_cli_converts_timm_files_folders_and_npz_and_warm_starts(tmp_path, capsys):
    from safetensors.torch import save_file

    from lookupvit.cli import main
    from lookupvit.models.serialization import load_model, read_metadata
    from lookupvit.training.report import load_trained

    theirs = timm_vit(depth=12)  # ViT-Ti's width, depth and heads, as lookupvit_ti8 names them
    save_file(theirs.state_dict(), tmp_path / "timm.safetensors")
    images = torch.randn(2, 3, 32, 32)
    assert main(["convert", str(tmp_path / "timm.safetensors"), "--out", str(tmp_path / "x.safetensors")]) == 2
    assert "--normalization inception" in capsys.readouterr().err  # a bare state dict does not say how it was normalised
    assert main(["convert", str(tmp_path / "timm.safetensors"), "--normalization", "inception", "--out", str(tmp_path / "vit.safetensors")]) == 0
    vit, normalization, classes = load_trained(tmp_path / "vit.safetensors", torch.device("cpu"))
    assert normalization.mean == (0.5,) * 3 and classes == [str(i) for i in range(7)]
    with torch.no_grad():
        assert close(vit(images), theirs(images))
    # a timm hub folder says its normalisation and labels; the warm start keeps them and resamples to 48 px
    folder = tmp_path / "hub"
    folder.mkdir()
    save_file(theirs.state_dict(), folder / "model.safetensors")
    labels = [f"label{i}" for i in range(7)]
    (folder / "config.json").write_text(json.dumps({"architecture": "vit_tiny_patch8_32", "num_classes": 7, "label_names": labels, "pretrained_cfg": {"mean": [0.1] * 3, "std": [0.2] * 3}}))
    out = tmp_path / "lookup.safetensors"
    assert main(["convert", str(folder), "--model", "lookupvit_ti8", "--image-size", "48", "--out", str(out)]) == 0
    assert "LookupViT for 48x48 images" in capsys.readouterr().out
    lookup, normalization, classes = load_trained(out, torch.device("cpu"))
    assert classes == labels and normalization.std == (0.2,) * 3
    expected = lookupvit_from_vit(vit, warm_start_config(vit.config, "lookupvit_ti8", img_size=48))
    assert all(torch.equal(a, b) for a, b in zip(lookup.state_dict().values(), expected.state_dict().values()))
    # an .npz, and a new head for other labels
    write_npz(theirs, tmp_path / "vit.npz", "augreg")
    assert main(["convert", str(tmp_path / "vit.npz"), "--model", "lookupvit_ti8", "--num-classes", "3", "--out", str(tmp_path / "n.safetensors")]) == 0
    assert load_model(tmp_path / "n.safetensors").config.num_classes == 3
    assert json.loads(read_metadata(tmp_path / "n.safetensors")["classes"]) == ["0", "1", "2"]
    # our own ViT file warm-starts too; a LookupViT file cannot be the source of another LookupViT
    assert main(["convert", str(tmp_path / "vit.safetensors"), "--model", "lookupvit_ti8", "--out", str(tmp_path / "o.safetensors")]) == 0
    assert main(["convert", str(out), "--model", "lookupvit_ti8", "--out", str(tmp_path / "y.safetensors")]) == 2
    assert "warm-starts from a ViT; the source is a LookupViT" in capsys.readouterr().err


def test_training_starts_from_init_weights_and_refuses_other_models(tmp_path):
    from lookupvit.models.serialization import read_metadata, save_model
    from lookupvit.training.config import load_config
    from lookupvit.training.engine import train
    from lookupvit.training.engine import CHECKPOINT
    from lookupvit.training.checkpoint import load_checkpoint

    settings = ["model=lookupvit_nano4", "model_args={embed_dim=32, depth=2, num_heads=2}", "train_subset=64", "test_subset=32", "batch_size=32", "epochs=1", "amp='fp32'", "eval_grids=[3]"]
    torch.manual_seed(7)
    start = randomize_(create_model("lookupvit_nano4", embed_dim=32, depth=2, num_heads=2), seed=7)
    save_model(start, tmp_path / "start.safetensors")
    run = tmp_path / "run"
    save_model(start, tmp_path / "start_n.safetensors", extra={"normalization": json.dumps([[0.25], [0.5]])})
    train(load_config(None, [*settings, f"out='{run}'", f"init_weights='{tmp_path / 'start_n.safetensors'}'", "lr=1e-12", "warmup_epochs=0"]), quiet=True)
    trained = load_checkpoint(run / CHECKPOINT)["model"]
    assert all(torch.allclose(trained[key], value, atol=1e-6) for key, value in start.state_dict().items())  # lr ~ 0: still the start
    # the run normalised its images as the starting model was trained, not with its own data's statistics
    assert json.loads(read_metadata(run / "model.safetensors")["normalization"]) == [[0.25], [0.5]]
    save_model(start, tmp_path / "rgb.safetensors", extra={"normalization": json.dumps([[0.5] * 3, [0.5] * 3])})
    with pytest.raises(ValueError, match="trained on 3-channel images, but the data has 1"):
        train(load_config(None, [*settings, f"out='{tmp_path / 'rgb'}'", f"init_weights='{tmp_path / 'rgb.safetensors'}'"]), quiet=True)
    with pytest.raises(ValueError, match="embed_dim: file 32, run 96"):
        train(load_config(None, ["model=lookupvit_nano4", "train_subset=64", "epochs=1", f"out='{tmp_path / 'other'}'", f"init_weights='{tmp_path / 'start.safetensors'}'"]), quiet=True)
