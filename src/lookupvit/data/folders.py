"""Any root/<class_name>/<image> folder, decoded once into memory at one square size."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch
from torch import Tensor

from .datasets import ImageDataset

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


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
