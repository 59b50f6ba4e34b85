"""Fashion-MNIST from its IDX files: the Debian package location, a user directory, or an optional verified download."""

from __future__ import annotations

import functools
import gzip
import hashlib
import os
import shutil
import struct
import urllib.request
from pathlib import Path

import torch
from torch import Tensor

from .datasets import ImageDataset

FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
# sha256 of the *decompressed* IDX payloads: gzip headers differ between mirrors (the Debian package
# recompresses), the images and labels do not.
FASHION_MNIST_FILES = {
    "train-images-idx3-ubyte.gz": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte.gz": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte.gz": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte.gz": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}
FASHION_MNIST_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
FASHION_MNIST_SEARCH = ("/usr/share/datasets/fashion-mnist", "~/.cache/lookupvit/fashion-mnist")


def _read_idx(path: Path, name: str) -> Tensor:
    """The array in an IDX file (gzipped or not), checked against the checksum of Fashion-MNIST file `name`."""
    raw = path.read_bytes()
    try:
        data = gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
    except (OSError, EOFError) as error:
        raise ValueError(f"{path} is a truncated or corrupt gzip file ({error}); delete it and fetch it again") from error
    if hashlib.sha256(data).hexdigest() != FASHION_MNIST_FILES[name]:
        raise ValueError(f"{path} does not have the Fashion-MNIST checksum (corrupt or another dataset); delete it and fetch it again")
    ndim = data[3]
    shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    return torch.frombuffer(bytearray(data[4 + 4 * ndim :]), dtype=torch.uint8).reshape(shape)


def _find_fashion_mnist(root: str | os.PathLike | None) -> Path | None:
    candidates = [root] if root else [os.environ.get("LOOKUPVIT_FASHION_MNIST"), *FASHION_MNIST_SEARCH]
    for candidate in filter(None, candidates):
        directory = Path(candidate).expanduser()
        if all((directory / name).is_file() or (directory / name[:-3]).is_file() for name in FASHION_MNIST_FILES):
            return directory
    return None


def download_fashion_mnist(directory: str | os.PathLike = FASHION_MNIST_SEARCH[1]) -> Path:
    """Fetch the four upstream files, verify their checksums, and move them into place."""
    directory = Path(directory).expanduser()
    directory.mkdir(parents=True, exist_ok=True)
    for name in FASHION_MNIST_FILES:
        target = directory / name
        if target.is_file():
            continue
        partial = target.with_suffix(".gz.partial")
        try:
            with urllib.request.urlopen(FASHION_MNIST_URL + name, timeout=30) as response, open(partial, "wb") as out:
                shutil.copyfileobj(response, out)
        except OSError as error:
            partial.unlink(missing_ok=True)
            raise RuntimeError(
                f"could not download {FASHION_MNIST_URL + name} ({error}). Offline? On Debian/Ubuntu run "
                "`apt-get install dataset-fashion-mnist`, or copy the four *-ubyte.gz files into a folder and pass it as the data root"
            ) from error
        _read_idx(partial, name)  # verify before the file takes its real name
        partial.rename(target)
    return directory


def load_fashion_mnist(split: str, root: str | os.PathLike | None = None, download: bool = False) -> ImageDataset:
    """The `train` (60k) or `test` (10k) split as 1x28x28 uint8 images."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    directory = _find_fashion_mnist(root)
    if directory is None and download:
        directory = download_fashion_mnist(Path(root) if root else Path(FASHION_MNIST_SEARCH[1]))
    if directory is None:
        where = f"in {root}" if root else f"in {', '.join(FASHION_MNIST_SEARCH)} or $LOOKUPVIT_FASHION_MNIST"
        raise FileNotFoundError(
            f"Fashion-MNIST not found {where}. Install it with `apt-get install dataset-fashion-mnist` (Debian/Ubuntu), "
            "or pass download=True / --download to fetch and verify the upstream files"
        )
    return _read_fashion_mnist(directory.resolve(), split)


@functools.lru_cache(maxsize=4)
def _read_fashion_mnist(directory: Path, split: str) -> ImageDataset:
    """Cached per process: decompressing and verifying 47 MB takes seconds."""
    prefix = "train" if split == "train" else "t10k"

    def read(kind: str) -> Tensor:
        name = f"{prefix}-{kind}-idx{3 if kind == 'images' else 1}-ubyte.gz"
        path = directory / name
        return _read_idx(path if path.is_file() else directory / name[:-3], name)

    images, labels = read("images"), read("labels")
    return ImageDataset(images.unsqueeze(1).contiguous(), labels.long(), FASHION_MNIST_CLASSES)
