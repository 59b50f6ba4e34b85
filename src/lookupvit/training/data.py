"""The data of a training run, as its config names it: sources, normalisation, training and evaluation batches.

Layouts (`layout`, "auto" picks by what is on disk):
- fashion-mnist and "class-folders" (root/<class>/<image>, plus val_dataset): decoded once into RAM
  at one size and augmented in batches on the training device (data/augment.py);
- "imagenet" (root/train/<class>/<image>, root/val/<class>/<image>) and "shards" (tar shards in the
  WebDataset layout): decoded and transformed image by image in DataLoader workers, so memory does
  not grow with the dataset (data/transforms.py);
- "videos" (root/train/<class>/<video>, root/val/<class>/<video>, or video shards), for the video models:
  clips of the model's num_frames, frame_stride apart, decoded and transformed in the workers too (data/video.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from ..data import ImageDataset, Normalization, check_class_names, dataset_normalization, load_fashion_mnist, load_image_folder
from ..data.datasets import channel_statistics
from ..data.loader import BatchPlan, EvalBatches, InMemoryTrainingBatches, StreamedTrainingBatches, dataset_batches, sample_seed
from ..data.sources import CorruptImage, InMemorySource, SubsetSource, open_image_tree
from ..data.transforms import NORMALIZATIONS, eval_transform, train_transform, unnormalized_eval_transform
from ..data.video import clip_transform, open_video_tree
from ..models.registry import is_video_model
from ..models.serialization import read_metadata
from .config import TrainConfig, run_model_config

STREAMED_LAYOUTS = ("imagenet", "shards", "videos")
# Images decoded to compute "dataset" normalisation statistics of a streamed training set.
STATISTICS_SAMPLE = 1000


def resolve_layout(config: TrainConfig) -> str:
    if is_video_model(config.model):
        return "videos"  # training.config refuses any other layout for a video model
    if config.dataset == "fashion-mnist":
        return "fashion-mnist"
    if config.layout != "auto":
        return config.layout
    root = Path(config.dataset)
    if (root / "train").is_dir() and (root / "val").is_dir():
        return "imagenet"
    if holds_shards(root):
        return "shards"
    return "class-folders"


def holds_shards(root: Path) -> bool:
    """Whether `root` is a folder of tar shards (train-*.tar, val-*.tar) rather than a train/ and val/ tree."""
    is_tree = (root / "train").is_dir() and (root / "val").is_dir()
    return not is_tree and root.is_dir() and any(root.glob("*.tar"))


def load_datasets(config: TrainConfig) -> tuple[ImageDataset, ImageDataset]:
    """The in-memory training and evaluation sets (Fashion-MNIST or class folders), with the same class names in the same order."""
    if config.dataset == "fashion-mnist":
        train_set = load_fashion_mnist("train", config.data_root, config.download)
        test_set = load_fashion_mnist("test", config.data_root, config.download)
    else:
        size = (config.image_size, config.image_size)
        if config.val_dataset is None:
            raise ValueError("an image-folder dataset needs val_dataset=<folder> for evaluation")
        train_set = load_image_folder(config.dataset, size)
        test_set = load_image_folder(config.val_dataset, size)
        check_class_names(train_set.classes, test_set.classes, f"the training folder {config.dataset}", f"the validation folder {config.val_dataset}")
    train_set, test_set = train_set.select_classes(config.classes), test_set.select_classes(config.classes)
    check_enough_classes(train_set.classes)
    return train_set.subset(config.train_subset, config.seed), test_set.subset(config.test_subset, config.seed)


def check_enough_classes(classes: tuple[str, ...]) -> None:
    if len(classes) < 2:
        raise ValueError(
            f"the training data has {len(classes)} class ({list(classes)}); a classifier needs at least 2 "
            "(an image folder needs one sub-folder per class)"
        )


def _subset(source, count: int | None, seed: int):
    return source if count is None or count >= len(source) else SubsetSource(source, count, seed)


def open_streamed_sources(config: TrainConfig, layout: str):
    if config.classes is not None:
        raise ValueError(f"classes= selects classes of in-memory datasets only; the {layout} layout streams every class it finds")
    if layout == "imagenet":
        train_source, test_source = open_image_tree(config.dataset)
    elif layout == "videos":
        from ..data.shards import open_video_shards

        # Both kinds of video source share one interface, so everything after this line is the same for either.
        open_videos = open_video_shards if holds_shards(Path(config.dataset)) else open_video_tree
        num_frames = run_model_config(config).num_frames
        train_source, test_source = open_videos(config.dataset, num_frames, config.frame_stride, config.video_channels)
    else:
        from ..data.shards import open_shards

        train_source, test_source = open_shards(config.dataset)
    check_enough_classes(train_source.classes)
    return _subset(train_source, config.train_subset, config.seed), _subset(test_source, config.test_subset, config.seed)


@dataclass
class RunData:
    """Sources, normalisation and input shape of a run; builds its training and evaluation batches."""

    config: TrainConfig
    layout: str
    train: object  # a source (data/sources.py)
    test: object
    normalization: Normalization
    image_shape: tuple[int, ...]  # what one input is: (C, H, W) images, or (C, T, H, W) clips for the video models

    @property
    def classes(self) -> tuple[str, ...]:
        return self.train.classes

    @property
    def streamed(self) -> bool:
        return self.layout in STREAMED_LAYOUTS

    def model_args(self) -> dict:
        """The model settings the data decides: input size, channels and classes (clip length comes from the model)."""
        return {"img_size": tuple(self.image_shape[-2:]), "in_chans": self.image_shape[0], "num_classes": len(self.classes)}

    def transform(self, training: bool):
        """The per-sample transform of a streamed layout: images (data/transforms.py) or clips (data/video.py)."""
        config, mean, std = self.config, self.normalization.mean, self.normalization.std
        if self.layout == "videos":
            return clip_transform(config.image_size, mean, std, training, flip=training and config.clip_flip, resize=config.clip_resize)
        if training:
            return train_transform(config.image_size, mean, std, tuple(config.crop_scale), config.randaugment, config.random_erasing)
        return eval_transform(config.image_size, mean, std, config.crop_pct)

    def training_batches(self, plan: BatchPlan, start_step: int, total_steps: int, device: torch.device):
        config = self.config
        if not self.streamed:
            return InMemoryTrainingBatches(self.train.dataset, self.normalization, config.augment_config(), plan, start_step, total_steps, device)
        return StreamedTrainingBatches(self.train, self.transform(training=True), plan, start_step, total_steps, config.workers, pin_memory=device.type == "cuda")

    def evaluation_batches(self, device: torch.device):
        """A fresh iterable over the evaluation set per call (a streamed one keeps its workers)."""
        config = self.config
        if not self.streamed:
            return dataset_batches(self.test.dataset, self.normalization, config.eval_batch_size)
        if not hasattr(self, "_eval_batches"):
            self._eval_batches = EvalBatches(self.test, self.transform(training=False), config.eval_batch_size, config.workers, pin_memory=device.type == "cuda")
        return self._eval_batches


# The batched augmentation's settings that also apply to streamed data: the others are in-memory only.
BATCH_MIXING = {"mixup_alpha", "cutmix_alpha"}


def init_weights_normalization(config: TrainConfig) -> Normalization | None:
    """The normalisation the init_weights file records, if any (per-channel lists)."""
    if config.init_weights is None:
        return None
    metadata = read_metadata(config.init_weights)
    if "normalization" not in metadata:
        return None
    return Normalization.from_json(json.loads(metadata["normalization"]))


def open_run_data(config: TrainConfig, normalization: Normalization | None = None) -> RunData:
    """The run's sources and normalisation (`normalization`: given, e.g. a model file's, instead of computed)."""
    layout = resolve_layout(config)
    if layout in STREAMED_LAYOUTS:
        in_memory_only = sorted(set(config.augment) - BATCH_MIXING)
        if layout == "videos":
            check_no_image_transform_settings(config)
        if in_memory_only:
            raise ValueError(
                f"augment settings {in_memory_only} apply to in-memory datasets only; the {layout} layout is augmented by "
                "crop_scale, randaugment and random_erasing (augment keeps mixup_alpha and cutmix_alpha)"
            )
        train_source, test_source = open_streamed_sources(config, layout)
        image_shape = (3, config.image_size, config.image_size)
        if layout == "videos":
            image_shape = (config.video_channels, run_model_config(config).num_frames, config.image_size, config.image_size)
    else:
        check_no_streaming_settings(config, layout)
        train_set, test_set = load_datasets(config)
        train_source, test_source = InMemorySource(train_set), InMemorySource(test_set)
        image_shape = train_set.image_shape
    normalization = normalization or run_normalization(config, train_source, image_shape[0], clips=layout == "videos")
    return RunData(config, layout, train_source, test_source, normalization, image_shape)


# Settings of streamed layouts only, at their defaults: in memory they would do nothing.
STREAMING_DEFAULTS = {"workers": 0, "randaugment": "none", "random_erasing": 0.0, "crop_scale": [0.08, 1.0], "crop_pct": 0.875}


def _changed_from(config: TrainConfig, defaults: dict) -> list[str]:
    def value(key: str):
        setting = getattr(config, key)
        return list(setting) if isinstance(setting, tuple) else setting

    return sorted(key for key, default in defaults.items() if value(key) != default)


def check_no_image_transform_settings(config: TrainConfig) -> None:
    """Clips get one crop (and, with clip_flip, a flip) for all frames; the per-image augmentations do not apply."""
    changed = _changed_from(config, {key: STREAMING_DEFAULTS[key] for key in ("randaugment", "random_erasing", "crop_scale")})
    if changed:
        raise ValueError(
            f"{changed} are image augmentations; video clips are augmented by a random crop after resizing the short side to "
            "image_size / crop_pct, clip_flip and augment.mixup_alpha / cutmix_alpha. Remove them"
        )


def check_no_streaming_settings(config: TrainConfig, layout: str) -> None:
    changed = _changed_from(config, STREAMING_DEFAULTS)
    if changed:
        raise ValueError(
            f"{changed} apply to streamed layouts (imagenet, shards) only; the {layout} data is in memory and augmented by "
            "the augment settings. Remove them, or point dataset at an ImageNet-style tree or shards"
        )


def run_normalization(config: TrainConfig, train_source, channels: int, clips: bool = False) -> Normalization:
    """Fixed statistics ("inception", "imagenet") or those of a seeded random sample of the training set ("dataset").

    A run that starts from `init_weights` normalises as that model was trained, when its file records how:
    fine-tuning on inputs scaled otherwise would start from a shifted input distribution.
    """
    recorded = init_weights_normalization(config)
    if recorded is not None and config.normalization == "dataset":
        recorded_channels = len(recorded.mean) if isinstance(recorded.mean, tuple) else channels  # one value: any channels
        if recorded_channels != channels:
            raise ValueError(f"init_weights {config.init_weights} was trained on {recorded_channels}-channel images, but the data has {channels}")
        return recorded
    if config.normalization in NORMALIZATIONS:
        mean, std = NORMALIZATIONS[config.normalization]
        if channels != len(mean):
            raise ValueError(f"normalization {config.normalization!r} is for {len(mean)}-channel images, but the data has {channels}; use normalization='dataset'")
        return Normalization(mean, std)
    if not train_source.streamed:
        return dataset_normalization(train_source.dataset, config.seed)
    if clips:  # the statistics of the clips' frames, as one crop would show them
        transform = clip_transform(config.image_size, (0.0,) * channels, (1.0,) * channels, training=False, resize=config.clip_resize)
        sample = STATISTICS_SAMPLE // 5  # a clip decodes a whole video
    else:
        transform, sample = unnormalized_eval_transform(config.image_size, config.crop_pct), STATISTICS_SAMPLE
    picks = torch.randperm(len(train_source), generator=torch.Generator().manual_seed(config.seed))[:sample]
    images = []
    # A training source may draw while reading (a clip's random start): seeded per pick, and without touching the
    # caller's RNG, so a resumed run in a fresh process computes exactly the statistics it started with.
    with torch.random.fork_rng(devices=[]):
        for index in picks.tolist():
            torch.manual_seed(sample_seed(config.seed, 0, index))
            try:
                images.append(transform(train_source.read(index)))
            except CorruptImage:
                continue  # counted and replaced when training reads it
    if not images:
        raise ValueError(f"none of {len(picks)} sampled training images decodes; the training data is damaged")
    return channel_statistics(torch.stack(images))
