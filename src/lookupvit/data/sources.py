"""Image sources: labelled images read one at a time by index, from memory or from disk.

A source knows its class names, its length and every label without decoding anything; `read(i)`
decodes image i (in a DataLoader worker for the streamed ones). Three kinds:

- `InMemorySource`: an `ImageDataset` (Fashion-MNIST, small class folders) already in RAM.
- `ImageTreeSource`: an ImageNet-style tree, root/<split>/<class>/<image>, decoded on demand.
- `ShardSource` (data/shards.py): tar shards in the WebDataset layout, decoded on demand.

The streamed sources keep their file lists in numpy arrays rather than Python objects: forked
workers then share those pages instead of copying them as reference counts change.
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .datasets import ImageDataset, check_class_names
from .folders import IMAGE_SUFFIXES


class CorruptImage(ValueError):
    """An image whose bytes do not decode; the loader counts it and reads a replacement."""


def decode_image(data: bytes, channels: int, where: str) -> Tensor:
    """Encoded bytes (JPEG, PNG, WebP, ...) as uint8 (channels, H, W), decoded by Pillow.

    Pillow rather than torchvision.io: torchvision 0.29 deprecates its decoders in favour of
    TorchCodec, and Pillow's wheels decode JPEG with libjpeg-turbo too.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            pixels = np.asarray(image.convert("L" if channels == 1 else "RGB"))
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as error:
        raise CorruptImage(f"{where} does not decode as an image ({str(error).splitlines()[0][:120]})") from None
    tensor = torch.from_numpy(pixels.copy())
    return tensor.unsqueeze(0) if channels == 1 else tensor.permute(2, 0, 1).contiguous()


class InMemorySource:
    """An ImageDataset as a source: `read` indexes its uint8 tensor."""

    streamed = False

    def __init__(self, dataset: ImageDataset):
        self.dataset = dataset
        self.classes = dataset.classes
        self.labels = dataset.labels

    def __len__(self) -> int:
        return len(self.dataset)

    def read(self, index: int) -> Tensor:
        return self.dataset.images[index]

    def fingerprint(self) -> dict:
        from .datasets import data_fingerprint

        return data_fingerprint(self.dataset)


class ImageTreeSource:
    """root/<split>/<class>/<image>: class names from the folder names, labels in sorted order."""

    streamed = True

    def __init__(self, root: str | os.PathLike, split: str, channels: int = 3):
        self.root, self.split, self.channels = Path(root), split, channels
        split_dir = self.root / split
        if not split_dir.is_dir():
            raise FileNotFoundError(
                f"{self.root} has no {split}/ folder; an ImageNet-style tree is {self.root}/train/<class>/<image> and "
                f"{self.root}/val/<class>/<image> (for class sub-folders without train/ and val/, use layout='class-folders')"
            )
        self.classes, self.paths, self.labels = list_class_tree(split_dir, IMAGE_SUFFIXES, "image")

    def __len__(self) -> int:
        return len(self.paths)

    def read(self, index: int) -> Tensor:
        path = self.root / self.split / self.paths[index].decode()
        return decode_image(path.read_bytes(), self.channels, str(path))

    def fingerprint(self) -> dict:
        """Class names, size and a hash of the file list with sizes (the files are not read)."""
        return {"classes": list(self.classes), "images": len(self), "sha256": file_list_digest(self.root / self.split, self.paths)}


def list_class_tree(split_dir: Path, suffixes: set[str], kind: str) -> tuple[tuple[str, ...], np.ndarray, Tensor]:
    """(class names, file paths relative to split_dir, labels) of split_dir/<class>/<file>, classes sorted.

    The paths are one numpy bytes array: forked workers share its pages instead of copying them.
    """
    class_dirs = sorted(d for d in split_dir.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not class_dirs:
        raise ValueError(f"{split_dir} has no class sub-folders; expected {split_dir}/<class_name>/<{kind}>")
    paths, labels = [], []
    for label, class_dir in enumerate(class_dirs):
        files = sorted(str(f.relative_to(split_dir)).encode() for f in class_dir.rglob("*") if f.suffix.lower() in suffixes)
        if not files:
            raise ValueError(f"class folder {class_dir} has no {kind}s ({', '.join(sorted(suffixes))}); remove it or add {kind}s")
        paths += files
        labels += [label] * len(files)
    return tuple(d.name for d in class_dirs), np.array(paths, dtype=np.bytes_), torch.tensor(labels)


def file_list_digest(split_dir: Path, paths: np.ndarray) -> str:
    """SHA-256 over the relative paths and sizes of a tree's files (their contents are not read)."""
    digest = hashlib.sha256()
    for relative in paths:
        digest.update(relative + b"\0" + str((split_dir / relative.decode()).stat().st_size).encode() + b"\n")
    return digest.hexdigest()


def open_image_tree(root: str | os.PathLike, channels: int = 3) -> tuple[ImageTreeSource, ImageTreeSource]:
    """The train and val splits of an ImageNet-style tree; their class lists must be identical."""
    train, val = ImageTreeSource(root, "train", channels), ImageTreeSource(root, "val", channels)
    check_class_names(train.classes, val.classes, f"{root}/train", f"{root}/val")
    return train, val


class SubsetSource:
    """A seeded random subset of a streamed source (train_subset / test_subset)."""

    streamed = True

    def __init__(self, source, count: int, seed: int):
        self.source = source
        self.indices = torch.randperm(len(source), generator=torch.Generator().manual_seed(seed))[:count].sort().values
        self.classes, self.labels = source.classes, source.labels[self.indices]

    def __len__(self) -> int:
        return len(self.indices)

    def read(self, index: int) -> Tensor:
        return self.source.read(int(self.indices[index]))

    def fingerprint(self) -> dict:
        digest = hashlib.sha256(self.indices.numpy().tobytes()).hexdigest()
        return {**self.source.fingerprint(), "images": len(self), "subset_sha256": digest}
