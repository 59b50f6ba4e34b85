"""Model files and training checkpoints, both written atomically and checked by a SHA-256 checksum on load.

Model files are safetensors: weights in their own dtype, with the JSON config, the dtype and the checksum
in the header, so a file alone rebuilds its model. Training checkpoints are torch.save archives that
torch.load(weights_only=True) reads; each save keeps the one before beside it as a fallback.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import stat
import warnings
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import safe_open, save_file
from torch import Tensor, nn

from .registry import ARCHITECTURES, arch_name, build_model

FORMAT = "lookupvit/1"
CHECKSUM_KEY = "sha256"  # header metadata key of a model file's checksum
DTYPE_KEY = "dtype"  # header metadata key of the dtype a model file's weights were saved in
CHECKPOINT_FORMAT = "lookupvit-checkpoint/1"
DAMAGED = "flipped bytes, a bad disk or an interrupted copy"


# Writing files


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


def _write_temporary(path: Path, write) -> Path:
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
    tmp = _write_temporary(path, write)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _refuse_directory(path: Path, example_name: str) -> None:
    if path.is_dir():
        raise ValueError(f"{path} is a directory; give a file path such as {path / example_name}")


# Checksums


def _tensor_bytes(tensor: Tensor):
    """The tensor's raw bytes as a numpy uint8 view (no copy for a contiguous CPU tensor; works for bf16 too)."""
    return tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy()


def _hash_tensor(digest, tensor: Tensor) -> None:
    # dtype and shape first: they fix how many bytes follow, so no two tensors hash alike.
    digest.update(f"tensor {tensor.dtype} {list(tensor.shape)}\n".encode())
    digest.update(_tensor_bytes(tensor))


def model_file_digest(tensors: dict[str, Tensor], metadata: dict[str, str]) -> str:
    """SHA-256 over a model file's tensors (sorted by name) and its other header metadata (canonical JSON)."""
    digest = hashlib.sha256()
    others = {key: value for key, value in metadata.items() if key != CHECKSUM_KEY}
    digest.update(json.dumps(others, sort_keys=True, separators=(",", ":")).encode() + b"\n")
    for name in sorted(tensors):
        digest.update(json.dumps(name).encode() + b"\n")
        _hash_tensor(digest, tensors[name])
    return digest.hexdigest()


def _hash_value(digest, value) -> None:
    """Feed a nested state (dicts, lists, tensors, plain values) to `digest` in an order that survives save and load."""
    if isinstance(value, Tensor):
        _hash_tensor(digest, value)
    elif isinstance(value, dict):
        digest.update(f"dict {len(value)}\n".encode())
        for key in sorted(value, key=repr):  # by repr: optimizer states mix int and str keys
            _hash_value(digest, key)
            _hash_value(digest, value[key])
    elif isinstance(value, (list, tuple)):
        digest.update(f"list {len(value)}\n".encode())
        for item in value:
            _hash_value(digest, item)
    else:  # int, float, str, bool, None: repr is exact and escapes newlines
        digest.update(f"{type(value).__name__} {value!r}\n".encode())


def checkpoint_digest(state: dict) -> str:
    """SHA-256 of a training state: dict keys sorted, tensors by dtype, shape and bytes, other values by repr."""
    digest = hashlib.sha256()
    _hash_value(digest, state)
    return digest.hexdigest()


# Model files


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
    _refuse_directory(path, "model.safetensors")
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


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The string metadata in a model file's header (config, and e.g. class names written by training); not verified."""
    path = Path(path)
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
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no model file at {path}")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    except (SafetensorError, OSError, ValueError) as error:
        raise _unreadable_model_file(path, error) from error
    if CHECKSUM_KEY in metadata and model_file_digest(tensors, metadata) != metadata[CHECKSUM_KEY]:
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
    path = Path(path)
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
    path = Path(path)
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


# Training checkpoints (model, optimizer, schedule and step), written by the training loop.

ZIP_MAGIC = b"PK\x03\x04"  # torch.save writes a zip archive


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
    _refuse_directory(path, "checkpoint.pt")
    payload = {"format": CHECKPOINT_FORMAT, "sha256": checkpoint_digest(state), "state": state}
    tmp = _write_temporary(path, lambda name: torch.save(payload, name))
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
