"""The folder conventions shared by the offline data sets generated from Fashion-MNIST pixels.

data/motion.py (mp4 videos) and data/captions.py (PNG canvases with COCO-layout captions) each
write a folder whose manifest.json records the format, the settings, the software and every
file's SHA-256. They follow the same rules, kept here once so the two cannot drift apart:

- the same settings again only verify the folder against its manifest (nothing is rewritten);
- other settings are refused unless overwrite=True;
- a folder without a manifest is not ours and is never deleted, not even with overwrite=True;
- a folder is written into a staging folder beside it that takes its name only when complete,
  so an interrupted run leaves no half-written tree.

Train items come from Fashion-MNIST's train split and val items from its test split (SPLITS).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

MANIFEST = "manifest.json"
SPLITS = {"train": "train", "val": "test"}  # generated split -> the Fashion-MNIST split its items come from
SHOWN = 5  # how many problems a verification error names


@dataclass(frozen=True)
class FolderKind:
    """What one generator writes, as its manifest and its error messages name it."""

    format: str  # the manifest's "format", e.g. "lookupvit-motion/1"
    what: str  # what the folder holds, e.g. "motion videos"
    folder: str  # what such a folder is called, e.g. "motion-video folder"
    items: str  # what overwrite=True writes again, e.g. "videos"
    listed_files: Callable[[Path], Iterable[Path]]  # the files under a root that its manifest must list


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def files_except_manifest(root: Path) -> Iterable[Path]:
    """Every file under root but the manifest: for a folder in which every file is generated."""
    return (path for path in root.rglob("*") if path.is_file() and path.name != MANIFEST)


def settings_json(settings) -> dict:
    """A settings dataclass as the manifest records it: tuples become lists, as JSON reads them back."""
    return {key: list(value) if isinstance(value, tuple) else value for key, value in dataclasses.asdict(settings).items()}


def check_positive_whole_numbers(settings, names: Iterable[str]) -> None:
    """Refuse a count that is not a whole number >= 1 now, not deep inside the writer (True counts as 1 in Python)."""
    for name in names:
        value = getattr(settings, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive whole number, got {value!r}")


def check_seed(seed) -> None:
    """numpy's seed sequences take whole numbers >= 0 only."""
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a whole number >= 0, got {seed!r}")


def manifest_problems(root: Path, manifest: dict, kind: FolderKind) -> list[str]:
    """What differs between the files under root and those the manifest lists: missing, extra, changed."""
    listed = set(manifest["files"])
    present = {path.relative_to(root).as_posix() for path in kind.listed_files(root)}
    problems = [f"{name} is missing" for name in sorted(listed - present)]
    problems += [f"{name} is not in the manifest" for name in sorted(present - listed)]
    problems += [
        f"{name} has changed" for name in sorted(listed & present) if sha256_file(root / name) != manifest["files"][name]
    ]
    return problems


def verify_manifest(root: Path, manifest: dict, kind: FolderKind) -> None:
    """Every file the manifest lists is there with its SHA-256, and no other file kind.listed_files finds is."""
    problems = manifest_problems(root, manifest, kind)
    if problems:
        shown = "; ".join(problems[:SHOWN]) + (f"; and {len(problems) - SHOWN} more" if len(problems) > SHOWN else "")
        raise ValueError(f"the {kind.what} in {root} do not match {root / MANIFEST}: {shown}. Rewrite them with overwrite=True")


def read_manifest(root: Path, kind: FolderKind, overwrite: bool = False) -> dict | None:
    """root's manifest; None if root is missing or empty, or (with `overwrite`) its manifest is damaged: a
    manifest file marks the folder as ours. A folder without one is refused: it is not ours to delete."""
    if not root.exists() or (root.is_dir() and not any(root.iterdir())):
        return None
    manifest_path = root / MANIFEST
    if not manifest_path.is_file():
        raise FileExistsError(f"{root} exists and holds no {MANIFEST}, so it is not a {kind.folder}; pass a new or empty folder")
    try:
        return json.loads(manifest_path.read_text())
    except json.JSONDecodeError as error:
        if overwrite:
            return None
        raise ValueError(
            f"{manifest_path} is not valid JSON ({error}); pass overwrite=True to write the {kind.items} again"
        ) from None


def check_same_settings(root: Path, manifest: dict, settings: dict, kind: FolderKind) -> None:
    """Refuse a folder of another format or other settings, naming each setting that differs (there, asked)."""
    if manifest.get("format") != kind.format or manifest.get("settings") != settings:
        theirs = manifest.get("settings", {})
        changed = {key: (theirs.get(key), value) for key, value in settings.items() if theirs.get(key) != value}
        raise ValueError(
            f"{root} holds {kind.what} written with other settings (setting: (there, asked)) {changed}; "
            "pass overwrite=True to replace them, or another root"
        )


def existing_manifest(root: Path, settings: dict, overwrite: bool, kind: FolderKind) -> dict | None:
    """The verified manifest if root already holds this output; None if root is to be (re)written.

    `settings` is the settings as the manifest records them (settings_json). A folder without a
    manifest is refused even with overwrite=True; one whose manifest is not JSON is rewritten with it.
    """
    manifest = read_manifest(root, kind, overwrite)
    if manifest is None or overwrite:
        return None
    check_same_settings(root, manifest, settings, kind)
    verify_manifest(root, manifest, kind)
    return manifest


def write_staged(root: Path, write_contents: Callable[[Path], dict]) -> dict:
    """Write a folder in place of root: write_contents(staging) fills a staging folder and returns its manifest.

    The staging folder lies beside root (same file system: a rename, not a copy) and takes
    root's name only once the manifest is written; on any error it is removed and root is left as
    it was. Call it only after existing_manifest returned None: root is then missing, empty, or
    ours (it has a manifest) with overwrite=True, so it may be replaced.
    """
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{root.name}.", suffix=".partial", dir=root.parent))
    try:
        manifest = write_contents(staging)
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
        if root.exists():
            shutil.rmtree(root)
        staging.rename(root)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return manifest


def progress_bar(kind: FolderKind, root: Path, total: int, unit: str, show: bool):
    """A tqdm bar named after what is written where; it appears only when writing takes over two seconds."""
    from tqdm import tqdm

    return tqdm(total=total, desc=f"{kind.what} -> {root}", unit=unit, delay=2, disable=not show)
