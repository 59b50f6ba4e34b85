import pytest
import torch
from safetensors.torch import save_file

from lookupvit import create_model, load_model, load_weights, save_model


def test_save_load_round_trip_is_exact(tmp_path, small_model):
    path = tmp_path / "model.safetensors"
    save_model(small_model, path)
    loaded = load_model(path).eval()
    assert loaded.config == small_model.config
    images = torch.randn(3, 3, 28, 28)
    with torch.no_grad():
        for grid in (2, (3, 5), 14):
            assert torch.equal(loaded(images, grid=grid), small_model(images, grid=grid))
    assert not list(tmp_path.glob(".*tmp"))  # the atomic write left no temporary file


def test_round_trip_vit(tmp_path):
    vit = create_model("vit_nano4").eval()
    save_model(vit, tmp_path / "vit.safetensors")
    images = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(load_model(tmp_path / "vit.safetensors")(images), vit(images))


def test_loading_another_architecture_names_the_keys(tmp_path):
    save_model(create_model("vit_nano2"), tmp_path / "vit.safetensors")
    with pytest.raises(ValueError, match=r"file holds a vit model.*missing: .*blocks\.0\.compressed_block.*unexpected: .*blocks\.0\.attn\."):
        load_weights(create_model("lookupvit_nano2"), tmp_path / "vit.safetensors")
    save_model(create_model("lookupvit_nano2", embed_dim=48), tmp_path / "narrow.safetensors")
    with pytest.raises(ValueError, match=r"shape mismatch: .*file \(48,\) vs model \(96,\)"):
        load_weights(create_model("lookupvit_nano2"), tmp_path / "narrow.safetensors")


def test_truncated_corrupt_or_foreign_files_fail_clearly(tmp_path, small_model):
    path = tmp_path / "model.safetensors"
    save_model(small_model, path)
    data = path.read_bytes()
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        load_model(truncated)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a model at all")
    with pytest.raises(ValueError, match="truncated or corrupt"):
        load_model(garbage)
    foreign = tmp_path / "foreign.safetensors"
    save_file({"weight": torch.zeros(2)}, str(foreign))
    with pytest.raises(ValueError, match="not a lookupvit model file"):
        load_model(foreign)
    with pytest.raises(FileNotFoundError, match="no model file"):
        load_model(tmp_path / "missing.safetensors")
