"""timm drop-in (`import lookupvit.timm`): the checks of timm's tests/test_models.py, on the nano variant."""

import pytest
import torch

timm = pytest.importorskip("timm")
import torch.fx

import lookupvit.timm  # noqa: F401  (registers the variants)
from lookupvit import LookupViT, LookupViTOutput, create_model, model_config
from lookupvit.timm import TIMM_NAMES

NANO = "lookupvit_nano_patch4_28"  # D 96, 4 blocks, 1 channel, 28 px: a 7x7 lookup grid, 5x5 compressed by default
BATCH = 2


def nano(seed: int = 0, **kwargs) -> LookupViT:
    torch.manual_seed(seed)
    return timm.create_model(NANO, **kwargs).eval()


def images(seed: int = 1) -> torch.Tensor:
    return torch.randn(BATCH, 1, 28, 28, generator=torch.Generator().manual_seed(seed))


def test_list_models_lists_every_variant():
    assert timm.list_models("lookupvit*") == sorted(TIMM_NAMES)
    required = {f"lookupvit_{size}_patch16_224" for size in ("tiny", "small", "base", "large")} | {"lookupvit_base_patch16_384"}
    assert required <= set(timm.list_models("lookupvit*"))
    assert timm.is_model(NANO) and timm.models.get_pretrained_cfg(NANO).architecture == NANO


@pytest.mark.parametrize("name", sorted(TIMM_NAMES))
def test_every_variant_matches_our_registry_and_its_cfg(name):
    ours, size = TIMM_NAMES[name]
    with torch.device("meta"):  # shapes and names only: the huge model has 1e9 parameters
        model = timm.create_model(name)
    reference = model_config(ours, img_size=size)
    assert isinstance(model, LookupViT) and model.config == reference
    cfg = model.pretrained_cfg
    for key in ("num_classes", "input_size", "mean", "std", "first_conv", "classifier", "license", "interpolation", "crop_pct"):
        assert key in cfg, key
    assert cfg["num_classes"] == reference.num_classes and cfg["input_size"] == (reference.in_chans, size, size)
    assert cfg["mean"] == cfg["std"] == (0.5,) * reference.in_chans  # inception normalisation, as big_vision's ViT
    state_dict = model.state_dict()
    assert cfg["first_conv"] + ".weight" in state_dict
    assert cfg["classifier"] == ("head_compressed", "head_lookup")  # a tuple, as timm's two-head models (e.g. deit distilled)
    assert all(head + ".weight" in state_dict for head in cfg["classifier"])
    assert not cfg["url"] and not timm.models.get_pretrained_cfg(name).has_weights


def test_forward_backward_reaches_every_parameter():
    model = nano(num_classes=3).train()
    logits = model(images())
    assert logits.shape == (BATCH, 3)
    logits.mean().backward()
    missing = [name for name, parameter in model.named_parameters() if parameter.grad is None]
    assert not missing, missing
    assert all(torch.isfinite(parameter.grad).all() for parameter in model.parameters())


def test_num_features_forward_features_and_forward_head():
    model = nano()
    assert model.num_features == model.head_hidden_size == 96 and model.num_classes == 10
    with torch.no_grad():
        features = model.forward_features(images())
        pre_logits = model.forward_head(features, pre_logits=True)
        logits = model.forward_head(features)
    assert isinstance(features, LookupViTOutput)  # two token sets, unpooled: compressed (B, M, D) and lookup (B, N, D)
    assert features.compressed_tokens.shape == (BATCH, 25, model.num_features)
    assert features.lookup_tokens.shape == (BATCH, 49, model.num_features)
    assert pre_logits.shape == (BATCH, model.head_hidden_size)
    torch.testing.assert_close(pre_logits, (features.compressed_pooled + features.lookup_pooled) / 2)
    torch.testing.assert_close(logits, model(images()))
    torch.testing.assert_close(model.forward_head(features, pre_logits=True, head="lookup"), features.lookup_pooled)
    # the average head's logits are the mean of the two heads on their own pooled vectors
    expected = (model.head_compressed(features.compressed_pooled) + model.head_lookup(features.lookup_pooled)) / 2
    torch.testing.assert_close(logits, expected)


def test_reset_classifier_zero_and_num_classes_zero_give_pooled_features():
    model = nano()
    with torch.no_grad():
        pre_logits = model.forward_head(model.forward_features(images()), pre_logits=True)
        model.reset_classifier(0)
        pooled = model(images())
    assert pooled.shape == (BATCH, model.num_features) and model.num_classes == 0
    torch.testing.assert_close(pooled, pre_logits)
    assert isinstance(model.head_compressed, torch.nn.Identity) and isinstance(model.head_lookup, torch.nn.Identity)

    headless = nano(num_classes=0)
    assert not any(key.startswith("head_") for key in headless.state_dict())
    headless.load_state_dict(model.state_dict())  # model's heads are Identity now: no head weights either
    with torch.no_grad():
        torch.testing.assert_close(headless(images()), pooled)

    model.reset_classifier(5, "avg")
    assert model(images()).shape == (BATCH, 5) and model.num_classes == 5
    with pytest.raises(ValueError, match="global_pool"):
        model.reset_classifier(0, "")  # timm's "no pooling": our heads always average-pool
    with pytest.raises(ValueError, match="at least 0"):
        model.reset_classifier(-1)


def test_set_grad_checkpointing_gives_equal_outputs_and_gradients():
    plain, checkpointed = nano(), nano()
    checkpointed.set_grad_checkpointing(True)
    x = images()
    outputs = [model(x) for model in (plain, checkpointed)]
    torch.testing.assert_close(outputs[0], outputs[1])
    for output in outputs:
        output.square().sum().backward()
    for (name, a), (_, b) in zip(plain.named_parameters(), checkpointed.named_parameters()):
        torch.testing.assert_close(a.grad, b.grad, msg=name)
    # forward_intermediates runs its blocks the same way (with grad enabled, so the blocks are checkpointed)
    intermediates = [model.forward_intermediates(x, intermediates_only=True) for model in (plain, checkpointed)]
    for a, b in zip(*intermediates):
        torch.testing.assert_close(a, b)
    intermediates[1][-1].sum().backward()
    assert checkpointed.patch_embed.proj.weight.grad is not None


def test_forward_intermediates_are_lookup_tokens_on_the_patch_grid():
    model = nano()
    x = images()
    with torch.no_grad():
        final, every = model.forward_intermediates(x)
        nlc = model.forward_intermediates(x, output_fmt="NLC", intermediates_only=True)
        normed = model.forward_intermediates(x, indices=[-1], norm=True, output_fmt="NLC", intermediates_only=True)
        last_two = model.forward_intermediates(x, indices=2, intermediates_only=True)
        early = model.forward_intermediates(x, indices=[0, 2], stop_early=True, intermediates_only=True)
        at_grid_2 = model.forward_intermediates(x, grid=2, intermediates_only=True)
        features = model.forward_features(x)
    assert len(every) == len(model.feature_info) == 4
    for info, feature in zip(model.feature_info, every):
        assert feature.shape == (BATCH, info["num_chs"], 28 // info["reduction"], 28 // info["reduction"]) == (BATCH, 96, 7, 7)
    for chw, tokens in zip(every, nlc):
        torch.testing.assert_close(chw.flatten(2).transpose(1, 2), tokens)
    # the final output is forward_features', and the last block normed is its lookup tokens
    assert isinstance(final, LookupViTOutput)
    torch.testing.assert_close(final.logits, features.logits)
    torch.testing.assert_close(normed[0], features.lookup_tokens)
    torch.testing.assert_close(last_two[0], every[2])
    torch.testing.assert_close(last_two[1], every[3])
    torch.testing.assert_close(early[1], every[2])
    assert all(feature.shape == (BATCH, 96, 7, 7) for feature in at_grid_2)  # any compressed grid, same lookup grid
    assert not torch.allclose(at_grid_2[-1], every[-1])
    with pytest.raises(ValueError, match="out of|between|in \\["):
        model.forward_intermediates(x, indices=[4])
    with pytest.raises(ValueError, match="output_fmt"):
        model.forward_intermediates(x, output_fmt="NHWC")
    with pytest.raises(ValueError, match="use_lookup_tokens"):
        timm.create_model(NANO, use_lookup_tokens=False).forward_intermediates(x)


def test_feature_info_and_features_only():
    feature_info = timm.models.FeatureInfo(nano().feature_info, [1, 3])
    assert feature_info.channels() == [96, 96] and feature_info.reduction() == [4, 4]
    assert feature_info.module_name() == ["blocks.1", "blocks.3"]

    x = images()
    with torch.no_grad():
        reference = nano().forward_intermediates(x, intermediates_only=True)
        default = nano(features_only=True)  # the last 3 blocks, as timm's ViT
        outputs = default(x)
        chosen = nano(features_only=True, out_indices=(0, 1))
        chosen_outputs = chosen(x)
    assert default.feature_info.channels() == [96] * 3 and default.feature_info.reduction() == [4] * 3
    for output, expected in zip(outputs, reference[1:]):
        torch.testing.assert_close(output, expected)
    assert len(chosen.model.blocks) == 2  # pruned after the last block taken
    for output, expected in zip(chosen_outputs, reference[:2]):
        torch.testing.assert_close(output, expected)


def test_per_call_grid_and_config_keywords_pass_through():
    model = nano(compressed_grid=3, drop_path_rate=0.1)
    assert model.compressed_grid == (3, 3) and model.config.drop_path_rate == 0.1
    with torch.no_grad():
        assert model.forward_features(images()).compressed_grid == (3, 3)
        assert model.forward_features(images(), grid=(2, 4)).compressed_tokens.shape[1] == 8
        assert model(images(), grid=7).shape == (BATCH, 10)
    bigger = timm.create_model(NANO, img_size=56, in_chans=3, num_classes=4)
    assert bigger.pos_embed.shape[1] == 196 and bigger(torch.randn(1, 3, 56, 56)).shape == (1, 4)
    with pytest.raises(TypeError, match="no setting"):
        timm.create_model(NANO, not_a_setting=1)
    with pytest.raises(ValueError, match="no dropout"):
        timm.create_model(NANO, drop_rate=0.1)
    assert timm.create_model(NANO, drop_rate=0.0) is not None  # timm's train.py passes drop_rate=0.0 by default


def test_pretrained_fails_clearly_without_touching_the_network():
    with pytest.raises(ValueError, match="no pretrained weights exist"):
        timm.create_model("lookupvit_base_patch16_224", pretrained=True)


def test_timm_data_config_and_checkpoint_path(tmp_path):
    model = nano()
    config = timm.data.resolve_data_config({}, model=model)
    assert config["input_size"] == (1, 28, 28) and config["mean"] == config["std"] == (0.5,)
    torch.save(model.state_dict(), tmp_path / "nano.pth")
    torch.manual_seed(123)
    loaded = timm.create_model(NANO, checkpoint_path=str(tmp_path / "nano.pth")).eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(images()), model(images()))
    # the same architecture as our own create_model: state dicts are interchangeable
    ours = create_model("lookupvit_nano4")
    ours.load_state_dict(model.state_dict())


def test_fx_symbolic_trace_stops_at_the_data_dependent_grid():
    """Measured: torch.fx cannot trace LookupViT, because the token grids are Python ints read from the input.

    First the input check refuses the Proxy (it is no Tensor); past it, `tuple(features.shape[2:])`
    (the lookup grid, which sizes the resize matrices of the compressed tokens and the position
    embedding) cannot be iterated symbolically. torch.export, which keeps shapes concrete or
    symbolic, does capture the model (tests/test_export.py).
    """
    model = nano()
    with pytest.raises(TypeError, match="got Proxy"):
        torch.fx.symbolic_trace(model)
    model.check_input = lambda images: None
    with pytest.raises(torch.fx.proxy.TraceError, match="Proxy object cannot be iterated"):
        torch.fx.symbolic_trace(model)


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")
def test_torchscript_cannot_script_the_dataclass_config():
    """Measured: torch.jit.script stops at the first dataclass annotation (the model's ViTConfig); the
    forward also returns a LookupViTOutput dataclass and takes an int-or-tuple grid. torch.export
    is the supported graph capture (tests/test_export.py)."""
    with pytest.raises(Exception, match="Unknown type annotation: 'ViTConfig'"):
        torch.jit.script(nano())
