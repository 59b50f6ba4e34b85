"""UCI handwritten digits (scikit-learn's `load_digits`): a second real dataset, for few-shot transfer away from
Fashion-MNIST when a backbone has learned all ten Fashion-MNIST classes.

1,797 greyscale 8x8 digits, ink on a black background as in Fashion-MNIST, with 17 grey levels (0..16). The
images ship inside scikit-learn's wheel, so this reads nothing from the network.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .datasets import ImageDataset

DIGIT_CLASSES = tuple(str(digit) for digit in range(10))


def load_digits(image_size: int = 28) -> ImageDataset:
    """All 1,797 digits as 1 x image_size x image_size uint8 images (bilinear upsampling of the 8x8 originals)."""
    try:
        from sklearn.datasets import load_digits as sklearn_digits
    except ImportError as error:  # a RuntimeError, which the CLI prints as one line
        raise RuntimeError("the digits transfer set needs scikit-learn: pip install 'lookupvit[reproduce]'") from error
    if image_size < 8:
        raise ValueError(f"image_size must be at least the digits' own 8 px, got {image_size}")
    digits = sklearn_digits()
    images = torch.from_numpy(digits.images).float().unsqueeze(1) / 16.0  # (1797, 1, 8, 8) in [0, 1]
    images = F.interpolate(images, size=(image_size, image_size), mode="bilinear", align_corners=False)
    images = (images.clamp(0, 1) * 255).round().to(torch.uint8)
    return ImageDataset(images, torch.from_numpy(digits.target).long(), DIGIT_CLASSES)


def split_digits(dataset: ImageDataset, pool_images: int, test_images: int | None, seed: int = 0) -> tuple[ImageDataset, ImageDataset]:
    """Disjoint random (pool, test) sets: `pool_images` to draw shots from, and `test_images` of the rest (None: all of it)."""
    if not 0 < pool_images < len(dataset):
        raise ValueError(f"the digits pool must hold between 1 and {len(dataset) - 1} of the {len(dataset)} images, got {pool_images}")
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))
    pool, rest = order[:pool_images], order[pool_images:]
    if test_images is not None:
        rest = rest[:test_images]
    return (ImageDataset(dataset.images[pool], dataset.labels[pool], dataset.classes),
            ImageDataset(dataset.images[rest], dataset.labels[rest], dataset.classes))  # fmt: skip
