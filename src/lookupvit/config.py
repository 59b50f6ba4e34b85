"""Training configuration: a flat dataclass, read from a small TOML file plus `key=value` overrides."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from .augment import AugmentConfig


@dataclass
class TrainConfig:
    # model
    model: str = "lookupvit_nano2"
    model_args: dict = field(default_factory=dict)  # overrides of the registered variant, e.g. drop_path_rate
    # data
    dataset: str = "fashion-mnist"  # or the path of a root/<class>/<image> folder
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
    compile: bool = False  # torch.compile the training step: one graph per grid in `grids`, compiled on first use
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

    def __post_init__(self) -> None:
        self.betas = tuple(self.betas)
        for name in ("download", "compile", "grad_checkpointing", "tensorboard"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false, got {getattr(self, name)!r}")
        if self.amp not in ("bf16", "fp32"):
            raise ValueError(f"amp must be 'bf16' or 'fp32', got {self.amp!r}")
        if not self.grids or any(not isinstance(g, (int, list)) for g in self.grids):
            raise ValueError(f"grids must be a non-empty list of ints or [h, w] pairs, got {self.grids!r}")
        if self.batch_size % self.accum_steps:
            raise ValueError(f"batch_size {self.batch_size} must be divisible by accum_steps {self.accum_steps}")
        if self.compressed_loss_weight < 0 or self.lookup_loss_weight < 0 or self.compressed_loss_weight + self.lookup_loss_weight == 0:
            raise ValueError("loss weights must be >= 0 and not both 0")
        self.augment_config()  # validates the field names

    def augment_config(self) -> AugmentConfig:
        try:
            return AugmentConfig(**self.augment)
        except TypeError:
            names = sorted(f.name for f in dataclasses.fields(AugmentConfig))
            raise ValueError(f"unknown augment setting(s) in {sorted(self.augment)}; valid: {names}") from None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def parse_value(text: str):
    """TOML syntax for a single value (numbers, booleans, lists, inline tables); bare words are strings."""
    try:
        return tomllib.loads(f"value = {text}")["value"]
    except tomllib.TOMLDecodeError:
        return text


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
    """Read a TOML file (top-level keys = TrainConfig fields) and apply `key=value` overrides.

    Dotted keys reach into the dict fields: `model_args.drop_path_rate=0.1`, `augment.mixup_alpha=0.2`.
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
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown config key(s) {unknown}; valid keys: {sorted(known)}")
    return TrainConfig(**values)


def config_json(config: TrainConfig) -> str:
    return json.dumps(config.to_dict(), indent=2, sort_keys=True)
