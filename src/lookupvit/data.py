"""Datasets as uint8 image tensors plus int64 labels, fetched a batch at a time by index.

Fashion-MNIST is read from its IDX files (the Debian package location, a user directory, or an
optional verified download); any `root/class_name/*.png|jpg` folder works for users' own data.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import os
import shutil
import struct
import urllib.request
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

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
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


@dataclass
class ImageDataset:
    """Images (num, C, H, W) uint8 in memory, labels (num,) int64, and the class names."""

    images: Tensor
    labels: Tensor
    classes: tuple[str, ...]

    def __post_init__(self) -> None:
        if len(self.images) == 0:
            raise ValueError("the dataset is empty")
        if len(self.images) != len(self.labels):
            raise ValueError(f"{len(self.images)} images but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.images)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])

    def select_classes(self, class_ids: list[int] | None) -> ImageDataset:
        """Only the images of these classes, relabelled 0..k-1 in the given order (all for None)."""
        if class_ids is None:
            return self
        unknown = sorted(set(class_ids) - set(range(len(self.classes))))
        if unknown or len(set(class_ids)) != len(class_ids) or not class_ids:
            raise ValueError(f"classes must be distinct ids in 0..{len(self.classes) - 1}, got {class_ids}")
        relabel = torch.full((len(self.classes),), -1, dtype=torch.long)
        relabel[torch.tensor(class_ids)] = torch.arange(len(class_ids))
        keep = relabel[self.labels] >= 0
        return ImageDataset(self.images[keep], relabel[self.labels[keep]], tuple(self.classes[i] for i in class_ids))

    def subset(self, count: int | None, seed: int = 0) -> ImageDataset:
        """A class-balanced-by-chance random subset of `count` items (all of them for None)."""
        if count is None or count >= len(self):
            return self
        order = torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))[:count]
        return ImageDataset(self.images[order], self.labels[order], self.classes)


@dataclass
class Normalization:
    """Per-channel mean and std of a training set's pixels in [0, 1] (one value: the same for every channel)."""

    mean: float | tuple[float, ...]
    std: float | tuple[float, ...]

    def __call__(self, images_uint8: Tensor) -> Tensor:
        return self.normalize(images_uint8.float() / 255)

    def normalize(self, images_unit: Tensor) -> Tensor:
        """Images (..., C, H, W) in [0, 1] to model inputs."""
        mean = torch.as_tensor(self.mean, dtype=images_unit.dtype, device=images_unit.device).view(-1, 1, 1)
        std = torch.as_tensor(self.std, dtype=images_unit.dtype, device=images_unit.device).view(-1, 1, 1)
        return (images_unit - mean) / std

    def to_json(self) -> list:
        return [self.mean, self.std]

    @classmethod
    def from_json(cls, value: list) -> Normalization:
        mean, std = value  # scalars (older model files) or per-channel lists
        return cls(tuple(mean) if isinstance(mean, list) else mean, tuple(std) if isinstance(std, list) else std)


def dataset_normalization(dataset: ImageDataset, seed: int = 0, sample_size: int = 10_000) -> Normalization:
    """Per-channel pixel statistics of a seeded random sample (the first images of a sorted folder are one class)."""
    count = min(sample_size, len(dataset))
    picks = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:count]
    pixels = dataset.images[picks].float().div_(255).transpose(0, 1).flatten(1)  # (C, count * H * W)
    mean, std = pixels.mean(dim=1), pixels.std(dim=1)
    return Normalization(tuple(round(v, 4) for v in mean.tolist()), tuple(round(max(v, 1e-4), 4) for v in std.tolist()))


def check_class_names(expected: tuple[str, ...] | list[str], found: tuple[str, ...] | list[str], expected_from: str, found_from: str) -> None:
    """Refuse two label spaces that do not line up: label i must name the same class on both sides."""
    expected, found = list(expected), list(found)
    if expected == found:
        return
    if sorted(expected) == sorted(found):
        problem = "the same class names in another order"
    else:
        only_expected, only_found = sorted(set(expected) - set(found)), sorted(set(found) - set(expected))
        problem = f"only in {expected_from}: {only_expected[:8]}; only in {found_from}: {only_found[:8]}"
    raise ValueError(
        f"{found_from} has classes {found[:10]}{' ...' if len(found) > 10 else ''} but {expected_from} has {expected[:10]}"
        f"{' ...' if len(expected) > 10 else ''} ({problem}); labels would not mean the same class. "
        "Use folders with the same class sub-folders"
    )


def data_fingerprint(dataset: ImageDataset) -> dict:
    """What identifies a training set wherever it lives: class names, size and a hash of its images and labels."""
    digest = hashlib.sha256()
    digest.update(dataset.images.contiguous().numpy().data)
    digest.update(dataset.labels.contiguous().numpy().data)
    return {"classes": list(dataset.classes), "images": len(dataset), "sha256": digest.hexdigest()}


# --------------------------------------------------------------------------------------------
# Fashion-MNIST
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Image folders
# --------------------------------------------------------------------------------------------


def read_image(path: str | os.PathLike, image_size: tuple[int, int], channels: int) -> Tensor:
    """An image file as uint8 (channels, H, W), converted to grey or RGB and resized bilinearly."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image = image.convert("L" if channels == 1 else "RGB").resize(image_size[::-1], Image.BILINEAR)
            pixels = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8)
    except FileNotFoundError:
        raise FileNotFoundError(f"no image at {path}") from None
    except (UnidentifiedImageError, OSError) as error:
        raise ValueError(f"cannot read {path} as an image: {error}") from None
    return pixels.view(image_size[0], image_size[1], channels).permute(2, 0, 1)


def load_image_folder(root: str | os.PathLike, image_size: tuple[int, int], channels: int = 3) -> ImageDataset:
    """Every image under root/<class>/ resized to `image_size`; unreadable files are skipped with a warning.

    A missing or empty root, a class folder without images, or no readable image at all is an error.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} does not exist")
    class_dirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not class_dirs:
        raise ValueError(f"{root} has no class sub-folders; expected the layout {root}/<class_name>/<image>.png")
    images, labels, skipped = [], [], []
    for label, class_dir in enumerate(class_dirs):
        files = sorted(f for f in class_dir.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise ValueError(f"class folder {class_dir} has no images ({', '.join(sorted(IMAGE_SUFFIXES))}); remove it or add images")
        for file in files:
            try:
                images.append(read_image(file, image_size, channels))
            except ValueError as error:
                skipped.append(str(error))
                continue
            labels.append(label)
    if skipped:
        warnings.warn(f"skipped {len(skipped)} unreadable image(s) under {root}, e.g. {skipped[0]}", stacklevel=2)
    if not images:
        raise ValueError(f"no readable images under {root}")
    return ImageDataset(torch.stack(images), torch.tensor(labels), tuple(d.name for d in class_dirs))
