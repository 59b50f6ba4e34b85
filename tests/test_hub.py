"""Hub-style folders: save_pretrained / from_pretrained (config.json + model.safetensors), read offline,
in the layout huggingface_hub's PyTorchModelHubMixin reads."""

import json

import pytest
import torch
from huggingface_hub import PyTorchModelHubMixin

import lookupvit
from lookupvit import LookupViT, LookupViTConfig, ViT, create_model, from_pretrained, save_pretrained

from .conftest import randomize_


class HubLookupViT(PyTorchModelHubMixin, LookupViT):
    """What a user writes to get push_to_hub: the mixin over our model, its config annotated as the dataclass."""

    def __init__(self, config: LookupViTConfig):
        super().__init__(config)


@pytest.fixture
def model():
    torch.manual_seed(0)
    return randomize_(create_model("lookupvit_nano4", compressed_grid=(3, 3)), seed=2).eval()


def test_a_folder_round_trips_the_model_with_its_metadata(model, tmp_path):
    folder = model.save_pretrained(tmp_path / "model", extra={"classes": json.dumps(list("abcdefghij"))})
    assert sorted(path.name for path in folder.iterdir()) == ["config.json", "model.safetensors"]
    config = json.loads((folder / "config.json").read_text())
    assert config["architecture"] == "lookupvit" and config["compressed_grid"] == [3, 3] and config["embed_dim"] == 96
    assert config["classes"] == list("abcdefghij")  # parsed, not a JSON string inside JSON
    loaded = LookupViT.from_pretrained(folder)
    images = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(loaded(images, grid=4), model(images, grid=4))
    assert lookupvit.load_model(folder).config == model.config  # every model-file reader takes the folder too
    with pytest.raises(TypeError, match="holds a LookupViT, not a ViT"):
        ViT.from_pretrained(folder)


def test_the_folder_keeps_bf16_and_any_architecture(tmp_path):
    vit = create_model("vit_nano4", class_token=True).to(torch.bfloat16)
    folder = save_pretrained(vit, tmp_path / "vit")
    assert json.loads((folder / "config.json").read_text())["dtype"] == "bfloat16"
    loaded = from_pretrained(folder)
    assert type(loaded) is ViT and loaded.pos_embed.dtype == torch.bfloat16 and loaded.config.class_token


def test_huggingface_hubs_mixin_reads_our_folder_offline(model, tmp_path):
    folder = save_pretrained(model, tmp_path / "model")
    loaded = HubLookupViT.from_pretrained(str(folder))
    images = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(loaded.eval()(images), model(images))


def test_broken_folders_are_refused_with_the_reason(model, tmp_path):
    folder = save_pretrained(model, tmp_path / "model")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "depth": 2}))
    with pytest.raises(ValueError, match="describe different models"):
        from_pretrained(folder)
    (folder / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match="has no config.json"):
        from_pretrained(folder)
    (folder / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="folder without model.safetensors"):
        lookupvit.load_model(folder)
    with pytest.raises(ValueError, match="writes a folder"):
        save_pretrained(model, tmp_path / "model.safetensors")
    data = bytearray((save_pretrained(model, tmp_path / "other") / "model.safetensors").read_bytes())
    data[-3] ^= 0xFF
    (tmp_path / "other" / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(ValueError, match="fails its checksum"):
        from_pretrained(tmp_path / "other")


@pytest.mark.parametrize("name", ["lookupvit_nano4", "vit_nano4", "perceiver_nano4", "tokenlearner_nano4"])
def test_a_headless_feature_extractor_saves_and_loads(name, tmp_path):
    """num_classes=0 (timm's convention): no classifier, forward returns the (B, D) pooled features; the file round-trips."""
    torch.manual_seed(0)
    model = create_model(name, num_classes=0).eval()
    images = torch.randn(2, 1, 28, 28)
    loaded = from_pretrained(save_pretrained(model, tmp_path / "features"))
    with torch.no_grad():
        assert model(images).shape == (2, 96) and torch.equal(loaded(images), model(images))
    with_head = create_model(name)
    with_head.reset_classifier(0)
    assert with_head.config.num_classes == 0
    with_head.load_state_dict(model.state_dict())  # strict: reset_classifier(0) leaves exactly the headless model's parameters
