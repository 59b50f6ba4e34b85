"""Atomic file writes and content checksums, shared by model files and training checkpoints."""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

import torch
from torch import Tensor

DAMAGED = "flipped bytes, a bad disk or an interrupted copy"


def _create_temporary(path: Path) -> Path:
    """A new empty file beside `path`, created with the mode a plain open() gives (0o666 less the umask).

    tempfile.mkstemp would make it 0o600, so model files and checkpoints would be private while
    config.json is not. Creating it with O_EXCL ourselves lets the kernel apply the umask, without
    reading the process-wide umask (which only os.umask can, by changing it for every thread).
    """
    for _ in range(100):
        tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"could not create a temporary file beside {path}: every name tried exists")


def write_temporary(path: Path, write) -> Path:
    """Call write(tmp_path) on a new temporary file beside `path` and flush it to disk; return its path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _create_temporary(path)
    mode = stat.S_IMODE(tmp.stat().st_mode)
    try:
        write(str(tmp))
        # safetensors replaces the file with one of mode 0o600: give back the mode open() chose.
        os.chmod(tmp, mode)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def atomic_write(path: str | os.PathLike, write) -> None:
    """Call write(tmp_path) then rename over `path`, so a crash never leaves a half-written file."""
    path = Path(path)
    tmp = write_temporary(path, write)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def refuse_directory(path: Path, example_name: str) -> None:
    if path.is_dir():
        raise ValueError(f"{path} is a directory; give a file path such as {path / example_name}")


def _tensor_bytes(tensor: Tensor):
    """The tensor's raw bytes as a numpy uint8 view (no copy for a contiguous CPU tensor; works for bf16 too)."""
    return tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy()


def hash_tensor(digest, tensor: Tensor) -> None:
    # dtype and shape first: they fix how many bytes follow, so no two tensors hash alike.
    digest.update(f"tensor {tensor.dtype} {list(tensor.shape)}\n".encode())
    digest.update(_tensor_bytes(tensor))


def hash_value(digest, value) -> None:
    """Feed a nested state (dicts, lists, tensors, plain values) to `digest` in an order that survives save and load."""
    if isinstance(value, Tensor):
        hash_tensor(digest, value)
    elif isinstance(value, dict):
        digest.update(f"dict {len(value)}\n".encode())
        for key in sorted(value, key=repr):  # by repr: optimizer states mix int and str keys
            hash_value(digest, key)
            hash_value(digest, value[key])
    elif isinstance(value, (list, tuple)):
        digest.update(f"list {len(value)}\n".encode())
        for item in value:
            hash_value(digest, item)
    else:  # int, float, str, bool, None: repr is exact and escapes newlines
        digest.update(f"{type(value).__name__} {value!r}\n".encode())
