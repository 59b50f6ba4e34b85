"""Model files: safetensors weights in their own dtype, with the JSON config, the dtype and a SHA-256
checksum in the header, so a file alone rebuilds its model and a damaged one is refused.

Hub-style folders (`save_pretrained` / `from_pretrained`) hold the same file as `model.safetensors`
next to a `config.json`: the layout huggingface_hub's PyTorchModelHubMixin writes for a model whose
`__init__` takes a dataclass `config` (its fields at the top level), plus `architecture` and the
metadata. A mixin class over our models reads these folders; `huggingface_hub.upload_folder`
publishes one. We do not use the mixin itself: it loads with strict=False by default (missing
weights pass silently), falls back to pickles, and turns any path that is not a folder into a
hub download; here a folder is read locally, checked key by key and against its checksum.
Every function that reads a model file also takes such a folder.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import safe_open, save_file
from torch import Tensor, nn

from ..files import DAMAGED, atomic_write, hash_tensor, refuse_directory
from .registry import ARCHITECTURES, arch_name, build_model

FORMAT = "lookupvit/1"
WEIGHTS_NAME = "model.safetensors"  # the file in a hub-style folder
CONFIG_NAME = "config.json"
CHECKSUM_KEY = "sha256"  # header metadata key of a model file's checksum
DTYPE_KEY = "dtype"  # header metadata key of the dtype a model file's weights were saved in



def model_file_digest(tensors: dict[str, Tensor], metadata: dict[str, str]) -> str:
    """SHA-256 over a model file's tensors (sorted by name) and its other header metadata (canonical JSON)."""
    digest = hashlib.sha256()
    others = {key: value for key, value in metadata.items() if key != CHECKSUM_KEY}
    digest.update(json.dumps(others, sort_keys=True, separators=(",", ":")).encode() + b"\n")
    for name in sorted(tensors):
        digest.update(json.dumps(name).encode() + b"\n")
        hash_tensor(digest, tensors[name])
    return digest.hexdigest()


def _model_dtype(tensors: dict[str, Tensor]) -> torch.dtype:
    dtypes = {tensor.dtype for tensor in tensors.values() if tensor.is_floating_point()}
    if len(dtypes) > 1:
        found = ", ".join(sorted(str(dtype) for dtype in dtypes))
        raise ValueError(
            f"the model mixes floating-point dtypes ({found}); save_model keeps one dtype for the whole model. "
            "Cast it first, e.g. model.to(torch.bfloat16) or model.float()"
        )
    return dtypes.pop() if dtypes else torch.float32


def save_model(model: nn.Module, path: str | os.PathLike, extra: dict[str, str] | None = None) -> None:
    """Write weights and config (plus optional string metadata, e.g. class names) to one .safetensors file, atomically.

    The weights keep their dtype (a model cast to bf16 is saved as bf16), and the header records that
    dtype and a SHA-256 checksum of weights and metadata, which load_model and load_weights verify.
    """
    path = Path(path)
    refuse_directory(path, "model.safetensors")
    config = model.config
    tensors = {name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()}
    metadata = {
        **(extra or {}),
        "format": FORMAT,
        "arch": arch_name(config),
        "config": json.dumps(config.to_dict()),
        DTYPE_KEY: str(_model_dtype(tensors)).removeprefix("torch."),
    }
    metadata[CHECKSUM_KEY] = model_file_digest(tensors, metadata)
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))


def _unreadable_model_file(path: Path, error: Exception) -> ValueError:
    return ValueError(f"{path} is not a readable safetensors file (truncated or corrupt?): {error}")


def model_file(path: str | os.PathLike) -> Path:
    """The model file a path names: the path itself, or a hub-style folder's model.safetensors."""
    path = Path(path)
    if path.is_dir():
        if not (path / WEIGHTS_NAME).is_file():
            raise FileNotFoundError(f"{path} is a folder without {WEIGHTS_NAME}; expected a folder written by save_pretrained, or a model file")
        return path / WEIGHTS_NAME
    return path


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The string metadata in a model file's header (config, and e.g. class names written by training); not verified."""
    path = model_file(path)
    if not path.is_file():
        raise FileNotFoundError(f"no model file at {path}")
    try:
        with safe_open(str(path), framework="pt") as handle:
            return handle.metadata() or {}
    except (SafetensorError, OSError, ValueError) as error:
        raise _unreadable_model_file(path, error) from error


def read_model_file(path: str | os.PathLike) -> tuple[dict[str, str], dict[str, Tensor]]:
    """Header metadata and tensors of a .safetensors file, refused if it carries a checksum that does not match.

    Files without a checksum (written by lookupvit before checksums, or by other tools) are read unverified.
    """
    path = model_file(path)
    if not path.is_file():
        raise FileNotFoundError(f"no model file at {path}")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    except (SafetensorError, OSError, ValueError) as error:
        raise _unreadable_model_file(path, error) from error
    # Files written since checksums record their dtype too: one of those without a checksum lost it.
    expects_checksum = CHECKSUM_KEY in metadata or DTYPE_KEY in metadata
    if expects_checksum and model_file_digest(tensors, metadata) != metadata.get(CHECKSUM_KEY):
        raise ValueError(
            f"model file {path} fails its checksum: damaged ({DAMAGED}); its weights cannot be trusted. "
            "Copy it again from where it came from, or save the model again"
        )
    return metadata, tensors


def _saved_dtype(metadata: dict[str, str], path: Path) -> torch.dtype | None:
    """The dtype a model file records, or None for files written before dtypes were recorded (they load as float32)."""
    if DTYPE_KEY not in metadata:
        return None
    dtype = getattr(torch, metadata[DTYPE_KEY], None)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"{path} records the dtype {metadata[DTYPE_KEY]!r}, which is not a floating-point torch dtype")
    return dtype


def load_model(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> nn.Module:
    """Re-create a model saved by `save_model` from the file alone, in the dtype it was saved in.

    The checksum in the header is verified first; a damaged file raises ValueError.
    """
    path = model_file(path)
    metadata, tensors = read_model_file(path)
    if metadata.get("format") != FORMAT or metadata.get("arch") not in ARCHITECTURES:
        raise ValueError(
            f"{path} is a safetensors file but not a lookupvit model file (no lookupvit config in its header); "
            "build the model yourself and use load_weights(model, path)"
        )
    config_cls = ARCHITECTURES[metadata["arch"]][1]
    try:
        config = config_cls(**json.loads(metadata["config"]))
    except (TypeError, ValueError) as error:
        raise ValueError(f"{path} holds a config this version cannot build: {error}") from error
    model = build_model(config)
    dtype = _saved_dtype(metadata, path)
    if dtype is not None:
        model.to(dtype)
    _load_state(model, tensors, metadata, path)
    return model.to(map_location)


def load_weights(model: nn.Module, path: str | os.PathLike) -> None:
    """Load a .safetensors state dict into `model`, refusing any missing, unexpected or mis-shaped key.

    A file written by save_model carries a checksum, which is verified first (a damaged file raises
    ValueError); a file without one, written by older versions or by other tools, loads unverified.
    Dtype rule: the model keeps its dtype and each tensor is cast to it, as nn.Module.load_state_dict
    does. A bf16 file loads exactly into a float32 model; a float32 file loaded into a bf16 model is
    rounded to bf16. To get the model in the dtype it was saved in, use load_model.
    """
    path = model_file(path)
    metadata, tensors = read_model_file(path)
    _load_state(model, tensors, metadata, path)


def _load_state(model: nn.Module, state: dict[str, Tensor], metadata: dict[str, str], path: Path) -> None:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = sorted(
        f"{key}: file {tuple(state[key].shape)} vs model {tuple(expected[key].shape)}"
        for key in set(state) & set(expected)
        if state[key].shape != expected[key].shape
    )
    if missing or unexpected or mismatched:
        problems = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched)):
            if keys:
                shown = ", ".join(keys[:8]) + (f", ... ({len(keys)} in all)" if len(keys) > 8 else "")
                problems.append(f"{label}: {shown}")
        holds = f"the file holds a {metadata['arch']} model with config {metadata['config']}; " if "arch" in metadata else ""
        raise ValueError(f"{path} does not match this {type(model).__name__} (another architecture or size?): {holds}" + "; ".join(problems))
    model.load_state_dict(state)  # copies each tensor into the model's parameter, casting it to the parameter's dtype


# --------------------------------------------------------------------------------------------
# Hub-style folders
# --------------------------------------------------------------------------------------------


def save_pretrained(model: nn.Module, folder: str | os.PathLike, extra: dict[str, str] | None = None) -> Path:
    """Write `folder`/config.json and `folder`/model.safetensors (the model file save_model writes); returns the folder.

    `extra`: string metadata as for save_model (class names, normalisation as JSON strings); config.json
    holds it parsed, beside the config's fields and the architecture.
    """
    folder = Path(folder)
    if folder.suffix == ".safetensors":
        raise ValueError(f"{folder} looks like a file name; save_pretrained writes a folder (use save_model for one file)")
    folder.mkdir(parents=True, exist_ok=True)
    save_model(model, folder / WEIGHTS_NAME, extra=extra)
    metadata = read_metadata(folder / WEIGHTS_NAME)
    config = {**model.config.to_dict(), "architecture": metadata["arch"], "format": FORMAT, DTYPE_KEY: metadata[DTYPE_KEY]}
    for key, value in (extra or {}).items():
        config[key] = _parsed(value)
    atomic_write(folder / CONFIG_NAME, lambda tmp: Path(tmp).write_text(json.dumps(config, indent=2) + "\n"))
    return folder


def _parsed(value: str):
    try:
        return json.loads(value)
    except ValueError:
        return value


def from_pretrained(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> nn.Module:
    """The model in a folder written by save_pretrained (or in a model file), checked against the folder's config.json."""
    path = Path(path)
    config_path = path / CONFIG_NAME
    if path.is_dir() and not config_path.is_file():
        raise FileNotFoundError(f"{path} has no {CONFIG_NAME}: not a folder written by save_pretrained (load_model reads a bare model file)")
    model = load_model(path, map_location)
    if path.is_dir():
        written = json.loads(config_path.read_text())
        fields = {key: written[key] for key in model.config.to_dict() if key in written}
        if written.get("architecture") != arch_name(model.config) or type(model.config)(**fields) != model.config:
            raise ValueError(
                f"{config_path} and {path / WEIGHTS_NAME} describe different models (edited, or copied from two places); "
                "save the model again with save_pretrained"
            )
    return model
