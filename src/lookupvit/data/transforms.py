"""The field's per-image transforms for streamed data, from torchvision.transforms.v2.

Train: Inception crop (RandomResizedCrop) -> horizontal flip -> RandAugment -> scale to [0, 1] ->
normalise -> optional random erasing. Eval: resize the short side to image_size / crop_pct, then a
centre crop. Mixup/CutMix, drawn per batch, come later (data/augment.py `mix`).

RandAugment presets are AugReg's (big_vision configs/vit_i1k.py RANDAUG_DEF): (ops, magnitude). The
magnitude is passed to torchvision as is, on its 0-30 scale, where 30 is each op's largest strength;
big_vision's TF RandAugment reads the same numbers against a nominal maximum of 10, so these
presets are gentler here than in big_vision (a known difference, see README).
"""

from __future__ import annotations

import math

import torch

RANDAUGMENT_PRESETS: dict[str, tuple[int, int] | None] = {
    "none": None,
    "light1": (2, 0),
    "light2": (2, 10),
    "medium1": (2, 15),
    "medium2": (2, 15),
    "strong1": (2, 20),
    "strong2": (2, 20),
}
# Per-channel (mean, std) of pixels in [0, 1]. "inception" maps them to [-1, 1], as big_vision's value_range(-1, 1).
NORMALIZATIONS = {
    "inception": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}


def train_transform(
    image_size: int,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    crop_scale: tuple[float, float] = (0.08, 1.0),
    randaugment: str = "none",
    random_erasing: float = 0.0,
):
    """uint8 (C, H, W) -> normalised float (C, image_size, image_size), drawing from torch's global RNG."""
    from torchvision.transforms import v2

    steps = [v2.RandomResizedCrop(image_size, scale=crop_scale, antialias=True), v2.RandomHorizontalFlip()]
    preset = RANDAUGMENT_PRESETS[randaugment]
    if preset is not None:
        steps.append(v2.RandAugment(num_ops=preset[0], magnitude=preset[1]))
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]
    if random_erasing > 0:
        steps.append(v2.RandomErasing(p=random_erasing, value=0.0))
    return v2.Compose(steps)


def eval_transform(image_size: int, mean: tuple[float, ...], std: tuple[float, ...], crop_pct: float = 0.875):
    """Resize the short side to image_size / crop_pct, centre crop image_size, normalise."""
    from torchvision.transforms import v2

    resize = math.floor(image_size / crop_pct)
    return v2.Compose(
        [
            v2.Resize(resize, antialias=True),
            v2.CenterCrop(image_size),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(list(mean), list(std)),
        ]
    )


def unnormalized_eval_transform(image_size: int, crop_pct: float = 0.875):
    """The eval geometry without normalisation: images in [0, 1], for computing normalisation statistics."""
    return eval_transform(image_size, (0.0,), (1.0,), crop_pct)
