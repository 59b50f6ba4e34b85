"""Model files: safetensors weights with the JSON config in the header, so a file alone rebuilds its model."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file
from torch import nn

from .registry import ARCHITECTURES, arch_name, build_model

FORMAT = "lookupvit/1"


def atomic_write(path: str | os.PathLike, write) -> None:
    """Call write(tmp_path) then rename over `path`, so a crash never leaves a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_model(model: nn.Module, path: str | os.PathLike, extra: dict[str, str] | None = None) -> None:
    """Write weights and config (plus optional string metadata, e.g. class names) to one .safetensors file, atomically."""
    config = model.config
    metadata = {**(extra or {}), "format": FORMAT, "arch": arch_name(config), "config": json.dumps(config.to_dict())}
    tensors = {name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()}
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The string metadata in a model file's header (config, and e.g. class names written by training)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no model file at {path}")
    try:
        with safe_open(str(path), framework="pt") as handle:
            return handle.metadata() or {}
    except (SafetensorError, OSError, ValueError) as error:
        raise ValueError(f"{path} is not a readable safetensors file (truncated or corrupt?): {error}") from error


def load_model(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> nn.Module:
    """Re-create a model saved by `save_model` from the file alone."""
    path = Path(path)
    metadata = read_metadata(path)
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
    load_weights(model, path)
    return model.to(map_location)


def load_weights(model: nn.Module, path: str | os.PathLike) -> None:
    """Load a .safetensors state dict into `model`, refusing any missing, unexpected or mis-shaped key."""
    path = Path(path)
    metadata = read_metadata(path)
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as error:
        raise ValueError(f"{path} is not a readable safetensors file (truncated or corrupt?): {error}") from error
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
    model.load_state_dict(state)


# Training checkpoints (model, optimizer, schedule and step), written by the training loop.


def save_checkpoint(path: str | os.PathLike, state: dict) -> None:
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_checkpoint(path: str | os.PathLike) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for damaged zip archives
        raise ValueError(
            f"checkpoint {path} is truncated or corrupt ({type(error).__name__}: {error}). It was not overwritten; "
            "move it away to start the run afresh, or restore a copy"
        ) from error
