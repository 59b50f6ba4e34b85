"""Training configuration: a flat dataclass, read from a small TOML file plus `key=value` overrides."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from ..data import FASHION_MNIST_CLASSES
from ..data.augment import AugmentConfig
from ..data.transforms import RANDAUGMENT_PRESETS
from ..models import LookupViTConfig, ViTConfig
from ..models.registry import is_video_model, model_config


@dataclass
class TrainConfig:
    """Every setting of a training run (read from TOML by load_config); each value is checked when the config is built."""

    # model
    model: str = "lookupvit_nano2"
    model_args: dict = field(default_factory=dict)  # overrides of the registered variant, e.g. drop_path_rate
    # a model file whose weights start the run (fine-tuning; e.g. `lookupvit convert`'s warm start from a ViT); a resume ignores it
    init_weights: str | None = None
    # data
    dataset: str = "fashion-mnist"  # or a folder: root/<class>/<image>, an ImageNet-style tree or shards (see `layout`)
    data_root: str | None = None
    download: bool = False
    image_size: int = 28  # for image folders; Fashion-MNIST is 28
    val_dataset: str | None = None  # folder datasets: a separate folder for evaluation
    classes: list | None = None  # train and test on these class ids only, relabelled 0..k-1 (e.g. few-shot splits)
    train_subset: int | None = None  # use a random subset (quick runs, CI)
    test_subset: int | None = None
    # optimisation
    epochs: int = 10
    batch_size: int = 128  # global batch, across processes and accumulation steps
    accum_steps: int = 1
    lr: float = 1e-3
    min_lr_ratio: float = 0.01
    warmup_epochs: float = 1.0
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.999)
    clip_grad_norm: float = 1.0
    label_smoothing: float = 0.1
    ema_decay: float = 0.0  # 0 disables
    amp: str = "bf16"  # "bf16" autocast or "fp32"
    compile: bool = False  # torch.compile the training step: one graph per grid and micro-batch offset, compiled on first use
    grad_checkpointing: bool = False  # recompute each block in backward: less memory for about a third more time
    # LookupViT
    grids: list = field(default_factory=lambda: [2, 3, 4, 5, 6, 7])  # sampled uniformly per batch; one entry = fixed grid
    eval_grids: list = field(default_factory=lambda: [2, 3, 4, 5, 6, 7, 10, 14])
    compressed_loss_weight: float = 1.0
    lookup_loss_weight: float = 1.0
    augment: dict = field(default_factory=dict)  # AugmentConfig fields
    # bookkeeping
    seed: int = 0
    out: str = "runs/fashion-mnist"
    checkpoint_every: int = 500  # optimizer steps; checkpoints are also written at every epoch end
    log_every: int = 50
    tensorboard: bool = False  # also write TensorBoard scalars to out/tensorboard (needs the tensorboard extra)
    eval_batch_size: int = 500
    device: str = "auto"
    # streamed layouts (imagenet, shards): DataLoader workers and the per-image transforms (data/transforms.py)
    layout: str = "auto"  # "auto", "class-folders", "imagenet" (root/train|val/<class>/<image>), "shards" (root/{train,val}-*.tar) or "videos"
    workers: int = 0  # decoding processes per training process (0: decode in the training process)
    normalization: str = "dataset"  # "dataset" (statistics of a seeded sample; with init_weights, the file's own), "inception" ([-1, 1]) or "imagenet"
    crop_scale: list = field(default_factory=lambda: [0.08, 1.0])  # RandomResizedCrop's range of the image area
    crop_pct: float = 0.875  # evaluation: resize the short side to image_size / crop_pct, centre-crop image_size
    randaugment: str = "none"  # AugReg preset: none, light1, light2, medium1, medium2, strong1, strong2
    random_erasing: float = 0.0  # probability of erasing one rectangle (after normalisation)
    threads: int = 0  # torch CPU threads per process; 0: the cores this process may use, shared among torchrun's local processes
    # video models (lookupvivit, vivit) on the "videos" layout, root/{train,val}/<class>/<video> or video shards; clips have the model's num_frames
    frame_stride: int = 1  # frames between the clip's frames, in training and evaluation (ViViT's stride)
    video_channels: int = 3  # decode videos as RGB (3) or grey (1)
    clip_flip: bool = False  # random horizontal flips of training clips; off by default: a flip turns "moving left" into "moving right"

    def __post_init__(self) -> None:
        # Every value is checked here, before any data is read, so a typo fails at once with the key's name.
        for item in dataclasses.fields(self):
            check_value(item.name, getattr(self, item.name), FIELD_CHECKS[item.name])
        # Tuples from Python callers become lists, as they come back from config.json, so a resume compares equal.
        self.betas = tuple(self.betas)
        self.grids, self.eval_grids = as_grid_list(self.grids), as_grid_list(self.eval_grids)
        if self.classes is not None:
            self.classes = list(self.classes)
        check_model_name_and_args(self.model, self.model_args)
        self.augment_config()  # validates the field names
        check_augment_values(self.augment)
        if self.batch_size % self.accum_steps:
            raise ValueError(f"batch_size {self.batch_size} must be divisible by accum_steps {self.accum_steps}")
        if self.compressed_loss_weight + self.lookup_loss_weight == 0:
            raise ValueError("loss weights must be >= 0 and not both 0")

    def augment_config(self) -> AugmentConfig:
        try:
            return AugmentConfig(**self.augment)
        except TypeError:
            names = sorted(f.name for f in dataclasses.fields(AugmentConfig))
            raise ValueError(f"unknown augment setting(s) in {sorted(self.augment)}; valid: {names}") from None

    @property
    def clip_resize(self) -> int:
        """Video clips: the short side frames are resized to before the crop of image_size (ViViT's 256 for 224)."""
        return round(self.image_size / self.crop_pct)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------------------------
# Value checks: one (what is allowed, in words; test) pair per field
# --------------------------------------------------------------------------------------------

Check = tuple[str, Callable[[object], bool]]


def check_value(key: str, value: object, check: Check) -> None:
    allowed, is_allowed = check
    if not is_allowed(value):
        raise ValueError(f"{key} must be {allowed}, got {value!r} ({type(value).__name__})")


def is_whole(value: object) -> bool:
    """An int, not a bool (True is an int in Python) and not a float such as 2.0 or 2.5."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: object) -> bool:
    """An int or a finite float; TOML also reads inf and nan."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def is_grid(value: object) -> bool:
    """A compressed grid: a positive int (the same in every dimension), an [h, w] pair or a video's [t, h, w] triple."""
    if isinstance(value, (list, tuple)):
        return len(value) in (2, 3) and all(is_whole(side) and side >= 1 for side in value)
    return is_whole(value) and value >= 1


def is_grid_list(value: object) -> bool:
    return isinstance(value, (list, tuple)) and len(value) > 0 and all(is_grid(grid) for grid in value)


def as_grid_list(grids: list | tuple) -> list:
    return [grid if is_whole(grid) else list(grid) for grid in grids]


def is_class_list(value: object) -> bool:
    if value is None:
        return True
    if not isinstance(value, (list, tuple)) or not value:
        return False
    return all(is_whole(class_id) and class_id >= 0 for class_id in value) and len(set(value)) == len(value)


def is_device(value: object) -> bool:
    if value == "auto":
        return True
    if not isinstance(value, str):
        return False
    try:
        torch.device(value)
    except (RuntimeError, ValueError):
        return False
    return True


def whole_number(minimum: int) -> Check:
    return f"a whole number >= {minimum}", lambda value: is_whole(value) and value >= minimum


def optional_whole_number(minimum: int) -> Check:
    return f"a whole number >= {minimum} or absent (none)", lambda value: value is None or (is_whole(value) and value >= minimum)


NON_NEGATIVE: Check = ("a number >= 0", lambda value: is_number(value) and value >= 0)
POSITIVE: Check = ("a number > 0", lambda value: is_number(value) and value > 0)
BELOW_ONE: Check = ("a number in [0, 1)", lambda value: is_number(value) and 0 <= value < 1)
PROBABILITY: Check = ("a probability in [0, 1]", lambda value: is_number(value) and 0 <= value <= 1)
SWITCH: Check = ("true or false", lambda value: isinstance(value, bool))
TEXT: Check = ("a non-empty string", lambda value: isinstance(value, str) and value != "")
OPTIONAL_TEXT: Check = ("a string or absent (none)", lambda value: value is None or isinstance(value, str))
TABLE: Check = ("a table of settings, e.g. {drop_path_rate = 0.1}", lambda value: isinstance(value, dict))
LAYOUTS = ("auto", "class-folders", "imagenet", "shards", "videos")
GRIDS: Check = ("a non-empty list of positive whole numbers, [h, w] pairs or (video) [t, h, w] triples of them", is_grid_list)

FIELD_CHECKS: dict[str, Check] = {
    "model": ("a registered model name, e.g. 'lookupvit_nano4'", lambda value: isinstance(value, str)),
    "model_args": TABLE,
    "init_weights": OPTIONAL_TEXT,
    "dataset": TEXT,
    "data_root": OPTIONAL_TEXT,
    "download": SWITCH,
    "image_size": whole_number(1),
    "val_dataset": OPTIONAL_TEXT,
    "classes": ("absent (none) or a non-empty list of distinct class ids >= 0", is_class_list),
    "train_subset": optional_whole_number(1),
    "test_subset": optional_whole_number(1),
    "epochs": whole_number(1),
    "batch_size": whole_number(1),
    "accum_steps": whole_number(1),
    "lr": POSITIVE,
    "min_lr_ratio": PROBABILITY,
    "warmup_epochs": NON_NEGATIVE,
    "weight_decay": NON_NEGATIVE,
    "betas": (
        "two numbers in [0, 1), e.g. [0.9, 0.999]",
        lambda value: isinstance(value, (list, tuple)) and len(value) == 2 and all(BELOW_ONE[1](beta) for beta in value),
    ),
    "clip_grad_norm": NON_NEGATIVE,
    "label_smoothing": BELOW_ONE,
    "ema_decay": BELOW_ONE,
    "amp": ("'bf16' or 'fp32'", lambda value: value in ("bf16", "fp32")),
    "compile": SWITCH,
    "grad_checkpointing": SWITCH,
    "grids": GRIDS,
    "eval_grids": GRIDS,
    "compressed_loss_weight": NON_NEGATIVE,
    "lookup_loss_weight": NON_NEGATIVE,
    "augment": TABLE,
    "seed": ("a whole number with |seed| < 2**63", lambda value: is_whole(value) and abs(value) < 2**63),
    "out": TEXT,
    "checkpoint_every": whole_number(1),
    "log_every": whole_number(1),
    "tensorboard": SWITCH,
    "eval_batch_size": whole_number(1),
    "device": ("'auto' or a torch device such as 'cpu', 'cuda' or 'cuda:1'", is_device),
    "threads": ("a whole number >= 0 (0: automatic)", lambda value: is_whole(value) and value >= 0),
    "layout": ("one of " + ", ".join(map(repr, LAYOUTS)), lambda value: value in LAYOUTS),
    "workers": whole_number(0),
    "normalization": ("one of 'dataset', 'inception', 'imagenet'", lambda value: value in ("dataset", "inception", "imagenet")),
    "crop_scale": (
        "two numbers 0 < low <= high <= 1, e.g. [0.08, 1.0]",
        lambda value: isinstance(value, (list, tuple)) and len(value) == 2 and all(is_number(v) for v in value) and 0 < value[0] <= value[1] <= 1,
    ),
    "crop_pct": ("a number in (0, 1]", lambda value: is_number(value) and 0 < value <= 1),
    "randaugment": (f"one of {sorted(RANDAUGMENT_PRESETS)}", lambda value: value in RANDAUGMENT_PRESETS),
    "random_erasing": PROBABILITY,
    "frame_stride": whole_number(1),
    "video_channels": ("1 (grey) or 3 (RGB)", lambda value: is_whole(value) and value in (1, 3)),
    "clip_flip": SWITCH,
}

# AugmentConfig's values; a field added there without an entry here is checked against its default's type.
AUGMENT_CHECKS: dict[str, Check] = {
    "op_prob": PROBABILITY,
    "translate": NON_NEGATIVE,
    "rotate": NON_NEGATIVE,
    "shear": NON_NEGATIVE,
    "scale": BELOW_ONE,  # the zoom 1 +- scale must stay positive
    "flip": SWITCH,
    "brightness": NON_NEGATIVE,
    "contrast": NON_NEGATIVE,
    "erase": PROBABILITY,
    "mixup_alpha": NON_NEGATIVE,
    "cutmix_alpha": NON_NEGATIVE,
}


def check_augment_values(augment: dict) -> None:
    defaults = AugmentConfig()
    for name, value in augment.items():
        default_check = SWITCH if isinstance(getattr(defaults, name), bool) else NON_NEGATIVE
        check_value(f"augment.{name}", value, AUGMENT_CHECKS.get(name, default_check))


# Model settings that training takes from the data (build_model_for in training/engine.py).
DATA_MODEL_SETTINGS = {"num_classes", "img_size", "in_chans"}


def check_model_name_and_args(model: str, model_args: dict) -> None:
    """A registered model, and model_args that are settings of it (their values are checked by check_model_settings)."""
    try:
        defaults = model_config(model)
    except ValueError as error:
        raise ValueError(f"model: {error}") from None
    valid = sorted(item.name for item in dataclasses.fields(defaults))
    unknown = sorted(set(model_args) - set(valid))
    if unknown:
        raise ValueError(f"model_args key(s) {unknown} are not settings of {model}; valid settings: {valid}")
    from_data = sorted(set(model_args) & DATA_MODEL_SETTINGS)
    if from_data:
        raise ValueError(
            f"model_args {from_data} come from the data (class folders, image size, channels) and cannot be set; "
            "set image_size, or choose the data, instead"
        )


# --------------------------------------------------------------------------------------------
# The model the run will build, known without reading data
# --------------------------------------------------------------------------------------------


def run_image_size(config: TrainConfig) -> int:
    """The side of the square images (video frames) the run trains on: Fashion-MNIST is 28x28, folders are resized to image_size."""
    return 28 if config.dataset == "fashion-mnist" else config.image_size


def run_model_config(config: TrainConfig) -> ViTConfig:
    """The model config `train` will build (as training.engine.build_model_for does), or a ValueError naming the settings."""
    size = run_image_size(config)
    data_args: dict = {"img_size": (size, size)}
    if config.dataset == "fashion-mnist":
        data_args.update(in_chans=1, num_classes=len(config.classes or FASHION_MNIST_CLASSES))
    else:  # image folders are read as RGB, videos as video_channels; the class count is only known from the folder
        data_args["in_chans"] = config.video_channels if is_video_model(config.model) else 3
        if config.classes:
            data_args["num_classes"] = len(config.classes)
    try:
        return model_config(config.model, **{**data_args, **config.model_args})
    except (TypeError, ValueError) as error:
        raise ValueError(f"model {config.model!r} cannot be built for {size}x{size} images with model_args {config.model_args}: {error}") from None


# Settings of video runs only, at their defaults: an image run would silently ignore them.
VIDEO_DEFAULTS = {"frame_stride": 1, "video_channels": 3, "clip_flip": False}


def check_layout_fits_model(config: TrainConfig) -> None:
    """Video models train on videos (trees or shards) and image models on images; say so before any data is read."""
    if is_video_model(config.model):
        if config.dataset == "fashion-mnist" or config.layout not in ("auto", "videos"):
            raise ValueError(
                f"{config.model} is a video model: it trains on videos, dataset=<root> with root/train/<class>/<video> "
                f"and root/val/<class>/<video>, or a folder of video shards (layout 'videos'), not on {config.dataset!r} with layout {config.layout!r}"
            )
        return
    if config.layout == "videos":
        raise ValueError(f"layout 'videos' needs a video model (lookupvivit_*, vivit_*), got the image model {config.model!r}")
    changed = sorted(key for key, default in VIDEO_DEFAULTS.items() if getattr(config, key) != default)
    if changed:
        raise ValueError(f"{changed} apply to video models only; {config.model!r} is an image model. Remove them")


def check_grids_fit(key: str, grids: list, lookup_grid: tuple[int, ...], model_text: str) -> None:
    limit = "x".join(map(str, lookup_grid))
    for grid in grids:
        sides = (grid,) * len(lookup_grid) if is_whole(grid) else tuple(grid)
        if len(sides) != len(lookup_grid):
            shape = "[t, h, w] triples" if len(lookup_grid) == 3 else "[h, w] pairs"
            raise ValueError(f"{key} entry {grid!r} has {len(sides)} sides, but {model_text} has a {limit} lookup grid: use whole numbers or {shape}")
        if any(side > lookup for side, lookup in zip(sides, lookup_grid)):
            raise ValueError(
                f"{key} entry {grid!r} is larger than the {limit} lookup grid of {model_text}; "
                f"{key} entries must lie between 1 and {limit}, got {grids!r}"
            )


def check_model_settings(config: TrainConfig) -> None:
    """The run's model builds and every training grid fits its lookup grid; reads no data.

    eval_grids larger than the lookup grid are skipped at evaluation (training.engine.evaluation_grids), so
    they are not checked here. ViT-like models have no compressed grid and ignore grids.
    """
    check_layout_fits_model(config)
    model = run_model_config(config)
    if isinstance(model, LookupViTConfig):
        size = run_image_size(config)
        model_text = f"{config.model} at {size}x{size} px (patch size {model.patch_size})"
        check_grids_fit("grids", config.grids, model.patch_grid, model_text)


def parse_value(text: str):
    """TOML syntax for a single value (numbers, booleans, lists, inline tables); bare words are strings."""
    try:
        return tomllib.loads(f"value = {text}")["value"]
    except tomllib.TOMLDecodeError:
        return text


def read_settings(path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> dict:
    """A TOML file's top-level keys (none without a file) with `key=value` overrides applied.

    Dotted keys reach into tables: `model_args.drop_path_rate=0.1`, `augment.mixup_alpha=0.2`.
    """
    values: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file {path} does not exist")
        try:
            values = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as error:
            raise ValueError(f"{path} is not valid TOML: {error}") from error
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep:
            raise ValueError(f"override {item!r} must look like key=value, e.g. epochs=5")
        target = values
        *parents, leaf = key.strip().split(".")
        for parent in parents:
            target = target.setdefault(parent, {})
        target[leaf] = parse_value(text.strip())
    return values


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
    """Read a TOML file (top-level keys = TrainConfig fields) and apply `key=value` overrides (read_settings)."""
    values = read_settings(path, overrides)
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown config key(s) {unknown}; valid keys: {sorted(known)}")
    config = TrainConfig(**values)
    check_model_settings(config)
    return config


def config_json(config: TrainConfig) -> str:
    return json.dumps(config.to_dict(), indent=2, sort_keys=True)
