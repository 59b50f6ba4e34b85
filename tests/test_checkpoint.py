import copy
import json
import os
import re
import stat
import struct
import zipfile

import pytest
import torch
from safetensors.torch import save_file

from lookupvit import LookupViT, create_model, load_model, load_weights, save_model
from lookupvit.training.checkpoint import (
    checkpoint_digest,
    has_checkpoint,
    load_checkpoint,
    previous_checkpoint_path,
    save_checkpoint,
)


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


# Damage, dtypes, modes and paths of model files


def flip_bytes(path, offset: int, count: int = 100) -> None:
    """Invert `count` bytes of the file at `offset`, as a bad disk or a broken copy would."""
    data = bytearray(path.read_bytes())
    assert offset + count <= len(data)
    data[offset : offset + count] = bytes(byte ^ 0xFF for byte in data[offset : offset + count])
    path.write_bytes(bytes(data))


def safetensors_data_start(path) -> int:
    """Offset of the tensor data: after the 8-byte little-endian header length and the JSON header."""
    return 8 + int.from_bytes(path.read_bytes()[:8], "little")


def test_flipped_bytes_in_a_model_file_are_refused(tmp_path, small_model):
    path = tmp_path / "model.safetensors"
    save_model(small_model, path)
    start, end = safetensors_data_start(path), path.stat().st_size
    flip_bytes(path, (start + end) // 2)
    with pytest.raises(ValueError, match=rf"model file {re.escape(str(path))} fails its checksum: damaged \(flipped bytes"):
        load_model(path)
    with pytest.raises(ValueError, match="fails its checksum"):
        load_weights(copy.deepcopy(small_model), path)


def test_a_changed_header_entry_is_refused(tmp_path, small_model):
    path = tmp_path / "model.safetensors"
    save_model(small_model, path, extra={"class_names": json.dumps(["cat", "dog"])})
    data = path.read_bytes()
    assert data.count(b"dog") == 1
    path.write_bytes(data.replace(b"dog", b"cow"))  # same length: the header still parses
    with pytest.raises(ValueError, match="fails its checksum"):
        load_model(path)


def test_files_without_a_checksum_still_load(tmp_path, small_model):
    state = {name: tensor.contiguous() for name, tensor in small_model.state_dict().items()}
    # as written by other tools: no metadata at all
    save_file(state, str(tmp_path / "plain.safetensors"))
    model = copy.deepcopy(small_model)
    with torch.no_grad():
        for param in model.parameters():
            param.zero_()
    load_weights(model, tmp_path / "plain.safetensors")
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), state.values()))
    # as written by lookupvit before checksums and dtypes were recorded
    metadata = {"format": "lookupvit/1", "arch": "lookupvit", "config": json.dumps(small_model.config.to_dict())}
    save_file(state, str(tmp_path / "old.safetensors"), metadata=metadata)
    loaded = load_model(tmp_path / "old.safetensors")
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), state.values()))


def test_a_bfloat16_model_round_trips_in_bfloat16(tmp_path, small_model):
    model = small_model.to(torch.bfloat16)
    path = tmp_path / "bf16.safetensors"
    save_model(model, path)
    loaded = load_model(path).eval()
    for (name, param), (_, original) in zip(loaded.state_dict().items(), model.state_dict().items()):
        assert param.dtype == torch.bfloat16, name
        assert torch.equal(param.view(torch.int16), original.view(torch.int16)), name  # bitwise
    images = torch.randn(2, 3, 28, 28)
    with torch.no_grad():
        assert torch.equal(loaded(images), model(images))
    # load_weights keeps the model's dtype: bf16 weights load exactly into a float32 model
    float_model = LookupViT(small_model.config)
    load_weights(float_model, path)
    assert all(p.dtype == torch.float32 for p in float_model.parameters())
    assert all(torch.equal(a.float(), b.float()) for a, b in zip(float_model.state_dict().values(), model.state_dict().values()))


def test_mixed_dtypes_are_refused_with_the_fix(tmp_path, small_model):
    small_model.head_compressed.to(torch.bfloat16)
    with pytest.raises(ValueError, match=r"mixes floating-point dtypes .*model\.to\(torch\.bfloat16\)"):
        save_model(small_model, tmp_path / "mixed.safetensors")


def test_a_directory_is_refused_as_a_model_path(tmp_path, small_model):
    message = rf"{re.escape(str(tmp_path))} is a directory; give a file path such as .*model\.safetensors"
    with pytest.raises(ValueError, match=message):
        save_model(small_model, tmp_path)
    with pytest.raises(ValueError, match="is a directory; give a file path such as .*checkpoint.pt"):
        save_checkpoint(tmp_path, {"step": 1})


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o077, 0o600)])
def test_written_files_get_the_mode_open_would_give(tmp_path, small_model, umask, mode):
    old = os.umask(umask)
    try:
        save_model(small_model, tmp_path / "model.safetensors")
        save_checkpoint(tmp_path / "checkpoint.pt", {"step": 1})
        save_checkpoint(tmp_path / "checkpoint.pt", {"step": 2})
    finally:
        os.umask(old)
    for name in ("model.safetensors", "checkpoint.pt", "checkpoint.previous.pt"):
        assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == mode, name


# Training checkpoints


def training_state(model, step: int) -> dict:
    """A state shaped like the training loop's, with optimizer moments and a bf16 EMA."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(2, 3, 28, 28)).sum().backward()
    optimizer.step()
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    ema = {name: tensor.to(torch.bfloat16) for name, tensor in model.state_dict().items()}
    return {
        "config": {"model": "lookupvit_nano2", "grids": (3, 5), "lr": 1e-3},
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "ema": ema,
        "step": step,
        "best_accuracy": 0.25,
    }


def largest_zip_record_data(path, name_part: str = "/data/") -> tuple[int, int]:
    """(offset, size) of the stored bytes of the largest record whose name contains `name_part` in a zip archive.

    torch.save stores tensors uncompressed as records ARCHIVE/data/KEY, the pickle as ARCHIVE/data.pkl.
    """
    with zipfile.ZipFile(path) as archive:
        info = max((item for item in archive.infolist() if name_part in item.filename), key=lambda item: item.file_size)
    with open(path, "rb") as handle:
        handle.seek(info.header_offset)
        local_header = handle.read(30)
    name_length, extra_length = struct.unpack("<HH", local_header[26:30])
    return info.header_offset + 30 + name_length + extra_length, info.compress_size


def damage_checkpoint(path) -> None:
    offset, size = largest_zip_record_data(path)
    assert size > 200
    flip_bytes(path, offset + size // 2 - 50)


def assert_states_equal(a, b) -> None:
    assert checkpoint_digest(a) == checkpoint_digest(b)
    assert a["step"] == b["step"] and torch.equal(a["model"]["pos_embed"], b["model"]["pos_embed"])


def test_checkpoint_round_trip_is_a_plain_torch_file(tmp_path, small_model):
    state = training_state(small_model, step=3)
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, state)
    assert_states_equal(load_checkpoint(path), state)
    saved = torch.load(path, weights_only=True)  # readable without lookupvit, and safely
    assert saved["format"] == "lookupvit-checkpoint/1" and len(saved["sha256"]) == 64
    assert_states_equal(saved["state"], state)
    assert not list(tmp_path.glob(".*tmp"))


def test_flipped_bytes_in_a_checkpoint_are_refused(tmp_path, small_model):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, training_state(small_model, step=3))
    damage_checkpoint(path)
    message = rf"checkpoint {re.escape(str(path))} fails its checksum: damaged \(flipped bytes.*move it away"
    with pytest.raises(ValueError, match=message):
        load_checkpoint(path)


def test_a_damaged_checkpoint_falls_back_to_the_previous_one(tmp_path, small_model):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, training_state(small_model, step=1))
    save_checkpoint(path, training_state(small_model, step=2))
    assert previous_checkpoint_path(path) == tmp_path / "checkpoint.previous.pt"
    assert load_checkpoint(previous_checkpoint_path(path))["step"] == 1
    damage_checkpoint(path)
    message = rf"{re.escape(str(path))} fails its checksum.*fell back to the previous checkpoint .*\(step 1\).*trained again"
    with pytest.warns(UserWarning, match=message):
        assert load_checkpoint(path)["step"] == 1
    assert (tmp_path / "checkpoint.pt.damaged").exists() and not path.exists()
    # the next save must not keep the damaged file as its fallback
    save_checkpoint(path, training_state(small_model, step=3))
    assert load_checkpoint(previous_checkpoint_path(path))["step"] == 1
    assert load_checkpoint(path)["step"] == 3


def test_a_crash_between_the_renames_falls_back_to_the_previous_one(tmp_path, small_model):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, training_state(small_model, step=1))
    save_checkpoint(path, training_state(small_model, step=2))
    path.unlink()  # what a crash after moving the current file aside leaves
    assert has_checkpoint(path)
    with pytest.warns(UserWarning, match="is missing.*fell back to the previous checkpoint"):
        assert load_checkpoint(path)["step"] == 1


def test_both_checkpoints_damaged_is_an_error_naming_both(tmp_path, small_model):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, training_state(small_model, step=1))
    save_checkpoint(path, training_state(small_model, step=2))
    damage_checkpoint(path)
    damage_checkpoint(previous_checkpoint_path(path))
    previous = re.escape(str(previous_checkpoint_path(path)))
    message = rf"{re.escape(str(path))} fails its checksum.*previous checkpoint {previous} fails its checksum"
    with pytest.raises(ValueError, match=message):
        load_checkpoint(path)
    assert not has_checkpoint(tmp_path / "other.pt")
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        load_checkpoint(tmp_path / "other.pt")


@pytest.mark.parametrize("text", ['{"a": 1}\n', "c\n", "hello world\n"])
def test_a_text_file_is_not_a_checkpoint_and_gets_no_unsafe_advice(tmp_path, text):
    path = tmp_path / "checkpoint.pt"
    path.write_text(text)
    message = r"not a lookupvit training checkpoint \(not a torch zip archive.*move it away to start the run afresh"
    with pytest.raises(ValueError, match=message) as error:
        load_checkpoint(path)
    assert "weights_only" not in str(error.value)


def test_truncated_or_damaged_archives_are_corrupt_without_unsafe_advice(tmp_path, small_model):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, training_state(small_model, step=1))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="is truncated or corrupt"):
        load_checkpoint(path)
    path.write_bytes(data)
    offset, size = largest_zip_record_data(path, "data.pkl")
    flip_bytes(path, offset + 2, min(40, size - 2))  # damage inside the pickled record
    with pytest.raises(ValueError, match="truncated or corrupt|fails its checksum") as error:
        load_checkpoint(path)
    assert "weights_only" not in str(error.value)


def test_checkpoints_written_before_checksums_still_load(tmp_path, small_model):
    state = training_state(small_model, step=4)
    torch.save(state, tmp_path / "checkpoint.pt")
    assert_states_equal(load_checkpoint(tmp_path / "checkpoint.pt"), state)


def test_a_model_file_that_lost_its_checksum_is_refused(tmp_path, small_model):
    from safetensors.torch import load_file as read_tensors

    from lookupvit.models.serialization import read_metadata

    path = tmp_path / "model.safetensors"
    save_model(small_model, path)
    metadata = read_metadata(path)
    del metadata["sha256"]  # still records its dtype: written by a version with checksums
    save_file(read_tensors(str(path)), str(tmp_path / "stripped.safetensors"), metadata=metadata)
    with pytest.raises(ValueError, match="fails its checksum"):
        load_model(tmp_path / "stripped.safetensors")
