"""In-memory image datasets, their normalisation, and the checks where two label spaces meet."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch
from torch import Tensor


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

    def normalize_clips(self, clips_unit: Tensor) -> Tensor:
        """Video clips (..., C, T, H, W) in [0, 1] to model inputs (channels come before time in a clip)."""
        return self.normalize(clips_unit.transpose(-4, -3)).transpose(-4, -3)

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
    return channel_statistics(dataset.images[picks].float().div_(255))


def channel_statistics(images: Tensor) -> Normalization:
    """Per-channel mean and std of images (N, C, H, W) in [0, 1], rounded to 4 decimals as model files store them."""
    pixels = images.transpose(0, 1).flatten(1)  # (C, N * H * W)
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
