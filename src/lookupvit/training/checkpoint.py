"""Training checkpoints: torch.save archives that torch.load(weights_only=True) reads, checked by a
SHA-256 checksum on load, each save keeping the one before beside it as a fallback."""

from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path

import torch

from ..files import DAMAGED, hash_value, refuse_directory, write_temporary

CHECKPOINT_FORMAT = "lookupvit-checkpoint/1"
ZIP_MAGIC = b"PK\x03\x04"  # torch.save writes a zip archive


def checkpoint_digest(state: dict) -> str:
    """SHA-256 of a training state: dict keys sorted, tensors by dtype, shape and bytes, other values by repr."""
    digest = hashlib.sha256()
    hash_value(digest, state)
    return digest.hexdigest()


def previous_checkpoint_path(path: str | os.PathLike) -> Path:
    """Where save_checkpoint keeps the checkpoint before the newest one: checkpoint.pt -> checkpoint.previous.pt."""
    path = Path(path)
    return path.with_name(f"{path.stem}.previous{path.suffix}")


def damaged_checkpoint_path(path: str | os.PathLike) -> Path:
    """Where load_checkpoint moves a damaged checkpoint when it falls back: checkpoint.pt -> checkpoint.pt.damaged."""
    path = Path(path)
    return path.with_name(f"{path.name}.damaged")


def has_checkpoint(path: str | os.PathLike) -> bool:
    """Whether load_checkpoint(path) has a file to try: `path` or, after a crash mid-save, its previous checkpoint."""
    return Path(path).exists() or previous_checkpoint_path(path).exists()


def save_checkpoint(path: str | os.PathLike, state: dict) -> None:
    """Write `state` with its checksum to `path`, keeping the checkpoint it replaces as previous_checkpoint_path(path).

    The new file is written in full under a temporary name first, so a crash leaves either both files
    or (between the two renames) only the previous one, which load_checkpoint then falls back to.
    """
    path = Path(path)
    refuse_directory(path, "checkpoint.pt")
    payload = {"format": CHECKPOINT_FORMAT, "sha256": checkpoint_digest(state), "state": state}
    tmp = write_temporary(path, lambda name: torch.save(payload, name))
    try:
        if path.exists():
            os.replace(path, previous_checkpoint_path(path))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class _UnusableCheckpoint(ValueError):
    """Why one checkpoint file cannot be used, phrased to follow its path."""


def _load_error_text(error: Exception) -> str:
    """A short account of torch.load's error, without its advice to retry with weights_only=False (unsafe here)."""
    text = str(error)
    if "weights_only" in text or "Weights only" in text:
        text = "its pickled record is damaged or holds objects a training checkpoint never does"
    lines = text.strip().splitlines()
    return f"{type(error).__name__}: {lines[0][:200] if lines else ''}"


def _read_checkpoint(path: Path) -> dict:
    """The training state in one checkpoint file, verified when it carries a checksum; FileNotFoundError if absent."""
    with open(path, "rb") as handle:
        head = handle.read(len(ZIP_MAGIC))
    if not head:
        raise _UnusableCheckpoint("is empty (truncated or corrupt: an interrupted write or copy)")
    if head != ZIP_MAGIC:
        raise _UnusableCheckpoint(f"is not a lookupvit training checkpoint (not a torch zip archive; it starts with {head!r})")
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for damaged zip archives
        raise _UnusableCheckpoint(f"is truncated or corrupt ({_load_error_text(error)})") from error
    if not isinstance(saved, dict):
        raise _UnusableCheckpoint(f"is not a lookupvit training checkpoint (it holds a {type(saved).__name__}, not a dict)")
    if "format" not in saved and "sha256" not in saved:
        return saved  # written before checksums: the bare state, nothing to verify
    if saved.get("format") != CHECKPOINT_FORMAT or not isinstance(saved.get("state"), dict):
        found = saved.get("format")
        raise _UnusableCheckpoint(f"has the format {found!r}, which this version cannot read (a newer lookupvit's, or damaged)")
    if checkpoint_digest(saved["state"]) != saved.get("sha256"):
        raise _UnusableCheckpoint(f"fails its checksum: damaged ({DAMAGED})")
    return saved["state"]


RESTART_ADVICE = "It was not overwritten; restore a copy, or move it away to start the run afresh"


def load_checkpoint(path: str | os.PathLike) -> dict:
    """The training state saved at `path`, or the previous checkpoint's if `path` is damaged or missing.

    Falling back warns, naming the damaged file, and moves that file to damaged_checkpoint_path(path)
    so that the next save does not keep it as the previous checkpoint. Raises ValueError when no
    usable checkpoint is left, FileNotFoundError when there is none at all.
    """
    path = Path(path)
    previous = previous_checkpoint_path(path)
    try:
        return _read_checkpoint(path)
    except FileNotFoundError:
        if not previous.exists():
            raise FileNotFoundError(f"no checkpoint at {path}") from None
        problem = "is missing (a crash between the two renames of a save leaves it so)"
    except _UnusableCheckpoint as error:
        if not previous.exists():
            raise ValueError(f"checkpoint {path} {error}. {RESTART_ADVICE}") from error.__cause__
        problem = str(error)
    try:
        state = _read_checkpoint(previous)
    except (_UnusableCheckpoint, FileNotFoundError) as error:
        raise ValueError(
            f"checkpoint {path} {problem}, and the previous checkpoint {previous} {error}. "
            "Neither was overwritten; restore a copy, or move both away to start the run afresh"
        ) from error
    moved = ""
    if path.exists():
        try:
            os.replace(path, damaged_checkpoint_path(path))
            moved = f" The damaged file was moved to {damaged_checkpoint_path(path)}."
        except FileNotFoundError:
            pass  # another process (a second rank resuming) moved it first
    warnings.warn(
        f"checkpoint {path} {problem}; fell back to the previous checkpoint {previous} (step {state.get('step')}), "
        f"so the steps since it will be trained again.{moved}",
        stacklevel=2,
    )
    return state
