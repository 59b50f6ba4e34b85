"""Every training setting is checked when the config is loaded, before any data is read; model configs check their own fields."""

import dataclasses
import json
import os
import re

import pytest
import torch

from lookupvit import LookupViTConfig, create_model, model_config
from lookupvit.experiments.reproduce import BUDGETS, experiments, train_config
from lookupvit.runtime import automatic_threads, configure_threads
from lookupvit.training.config import FIELD_CHECKS, TrainConfig, check_model_settings, load_config

BAD_OVERRIDES = [
    # (overrides, text the message must contain: the key and the value)
    (["epochs=abc"], "epochs must be a whole number >= 1, got 'abc' (str)"),
    (["epochs=2.5"], "epochs must be a whole number >= 1, got 2.5 (float)"),
    (["epochs=0"], "epochs must be a whole number >= 1, got 0"),
    (["epochs=true"], "epochs must be a whole number >= 1, got True (bool)"),
    (["lr=fast"], "lr must be a number > 0, got 'fast' (str)"),
    (["lr=0"], "lr must be a number > 0, got 0"),
    (["lr=inf"], "lr must be a number > 0, got inf"),
    (["batch_size=-8"], "batch_size must be a whole number >= 1, got -8"),
    (["accum_steps=0"], "accum_steps must be a whole number >= 1, got 0"),
    (["min_lr_ratio=1.5"], "min_lr_ratio must be a probability in [0, 1], got 1.5"),
    (["warmup_epochs=-1"], "warmup_epochs must be a number >= 0, got -1"),
    (["weight_decay=-0.1"], "weight_decay must be a number >= 0, got -0.1"),
    (["betas=[0.9]"], "betas must be two numbers in [0, 1), e.g. [0.9, 0.999], got [0.9]"),
    (["betas=[0.9, 1.0]"], "betas must be two numbers in [0, 1), e.g. [0.9, 0.999], got [0.9, 1.0]"),
    (["clip_grad_norm=-1"], "clip_grad_norm must be a number >= 0, got -1"),
    (["label_smoothing=1"], "label_smoothing must be a number in [0, 1), got 1"),
    (["ema_decay=1.0"], "ema_decay must be a number in [0, 1), got 1.0"),
    (["grids=3"], "grids must be a non-empty list of positive whole numbers, [h, w] pairs or (video) [t, h, w] triples of them, got 3 (int)"),
    (["grids=[]"], "grids must be a non-empty list"),
    (["grids=[2.5]"], "grids must be a non-empty list of positive whole numbers, [h, w] pairs or (video) [t, h, w] triples of them, got [2.5]"),
    (["grids=[[3, 4, 5]]"], "grids entry [3, 4, 5] has 3 sides, but lookupvit_nano2 at 28x28 px (patch size 2) has a 14x14 lookup grid: use whole numbers or [h, w] pairs"),
    (["eval_grids=[[3, 0]]"], "eval_grids must be a non-empty list of positive whole numbers, [h, w] pairs or (video) [t, h, w] triples of them, got [[3, 0]]"),
    (["log_every=0"], "log_every must be a whole number >= 1, got 0"),
    (["checkpoint_every=0"], "checkpoint_every must be a whole number >= 1, got 0"),
    (["eval_batch_size=0"], "eval_batch_size must be a whole number >= 1, got 0"),
    (["train_subset=0"], "train_subset must be a whole number >= 1 or absent (none), got 0"),
    (["test_subset=-5"], "test_subset must be a whole number >= 1 or absent (none), got -5"),
    (["image_size=0"], "image_size must be a whole number >= 1, got 0"),
    (["classes=[1, 1]"], "classes must be absent (none) or a non-empty list of distinct class ids >= 0, got [1, 1]"),
    (["classes=[-1, 2]"], "classes must be absent (none) or a non-empty list of distinct class ids >= 0, got [-1, 2]"),
    (["classes=[]"], "classes must be absent (none) or a non-empty list"),
    (["device='cuda:x'"], "device must be 'auto' or a torch device such as 'cpu', 'cuda' or 'cuda:1', got 'cuda:x'"),
    (["threads=-1"], "threads must be a whole number >= 0 (0: automatic), got -1"),
    (["threads=1.5"], "threads must be a whole number >= 0 (0: automatic), got 1.5"),
    (["seed=1.5"], "seed must be a whole number with |seed| < 2**63, got 1.5"),
    (["out=''"], "out must be a non-empty string, got ''"),
    (["compressed_loss_weight=-1"], "compressed_loss_weight must be a number >= 0, got -1"),
    (["amp=fp16"], "amp must be 'bf16' or 'fp32', got 'fp16'"),
    (["tensorboard=1"], "tensorboard must be true or false, got 1 (int)"),
    (["model=lookupvit_nan4"], "unknown model 'lookupvit_nan4'. Did you mean lookupvit_nano4"),
    (["model_args.compresed_grid=3"], "model_args key(s) ['compresed_grid'] are not settings of lookupvit_nano2"),
    (["model=vit_nano4", "model_args.compressed_grid=3"], "model_args key(s) ['compressed_grid'] are not settings of vit_nano4"),
    (["augment.erase=2"], "augment.erase must be a probability in [0, 1], got 2"),
    (["augment.op_prob=-0.1"], "augment.op_prob must be a probability in [0, 1], got -0.1"),
    (["augment.rotate=-1"], "augment.rotate must be a number >= 0, got -1"),
    (["augment.scale=1.0"], "augment.scale must be a number in [0, 1), got 1.0"),
    (["augment.mixup_alpha='a'"], "augment.mixup_alpha must be a number >= 0, got 'a' (str)"),
    (["augment.flip=0"], "augment.flip must be true or false, got 0 (int)"),
    # the model the run will build, at 28 px for Fashion-MNIST: lookupvit_nano4 has a 7x7 lookup grid
    (["model=lookupvit_nano4", "grids=[9]"], "grids entry 9 is larger than the 7x7 lookup grid of lookupvit_nano4 at 28x28 px (patch size 4)"),
    (["model=lookupvit_nano4", "grids=[3, [3, 8]]"], "grids entry [3, 8] is larger than the 7x7 lookup grid"),
    (["model=lookupvit_nano4", "model_args.compressed_grid=9"], "model_args {'compressed_grid': 9}: compressed_grid (9, 9) is larger than the lookup grid (7, 7)"),
    (["model_args.num_classes=1000"], "model_args ['num_classes'] come from the data (class folders, image size, channels)"),
    (["model_args.in_chans=3", "model_args.img_size=[32, 32]"], "model_args ['img_size', 'in_chans'] come from the data"),
    (["seed=18446744073709551617"], "seed must be a whole number with |seed| < 2**63"),
    (["model_args.drop_path_rate=1.0"], "model_args {'drop_path_rate': 1.0}: drop_path_rate must be a number in [0, 1), got 1.0"),
    (["model_args.embed_dim='wide'"], "model_args {'embed_dim': 'wide'}: embed_dim must be a whole number, at least 1, got 'wide'"),
    (["dataset='folder'", "val_dataset='folder'", "model=lookupvit_nano4", "image_size=30"], "cannot be built for 30x30 images"),
]


@pytest.mark.parametrize("overrides,message", BAD_OVERRIDES, ids=[" ".join(o) for o, _ in BAD_OVERRIDES])
def test_a_bad_setting_names_the_key_and_the_value(overrides, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        load_config(None, overrides)


def test_existing_checks_still_hold():
    with pytest.raises(ValueError, match="grad_checkpointing must be true or false"):
        load_config(None, ["grad_checkpointing=yes"])
    with pytest.raises(ValueError, match="divisible by accum_steps"):
        load_config(None, ["batch_size=30", "accum_steps=4"])
    with pytest.raises(ValueError, match="not both 0"):
        load_config(None, ["compressed_loss_weight=0", "lookup_loss_weight=0"])
    with pytest.raises(ValueError, match="unknown augment setting"):
        load_config(None, ["augment.rotation=3"])


@pytest.mark.parametrize("path", ["configs/fashion-mnist.toml", "configs/fashion-mnist-long.toml", None])
def test_shipped_configs_and_the_defaults_load(path):
    config = load_config(path)
    check_model_settings(config)
    assert config.threads == 0


def test_every_field_has_a_check_that_its_default_passes():
    assert set(FIELD_CHECKS) == {item.name for item in dataclasses.fields(TrainConfig)}
    defaults = TrainConfig()
    for name, (_, is_allowed) in FIELD_CHECKS.items():
        assert is_allowed(getattr(defaults, name)), name


def test_good_values_of_every_kind_load():
    config = load_config(None, [
        "model=lookupvit_nano4", "grids=[1, [2, 3], 7]", "eval_grids=[1, 14]", "lr=1", "warmup_epochs=0", "betas=[0, 0.5]",
        "classes=[4, 0]", "train_subset=10", "device='cpu'", "threads=1", "augment.erase=1", "seed=-3", "model_args.drop_path_rate=0",
    ])
    assert config.grids == [1, [2, 3], 7] and config.eval_grids == [1, 14]  # eval grids beyond 7x7 are skipped at evaluation
    assert config.lr == 1 and config.betas == (0, 0.5) and config.classes == [4, 0]


def test_vit_like_models_ignore_grids():
    for model in ("vit_nano4", "tokenlearner_nano4", "perceiver_nano4"):
        assert load_config(None, [f"model={model}", "grids=[9]"]).grids == [9]


def test_python_callers_get_the_same_checks_and_lists_like_config_json():
    with pytest.raises(ValueError, match=re.escape("epochs must be a whole number >= 1, got 0")):
        TrainConfig(epochs=0)
    config = TrainConfig(grids=(2, (3, 4)), eval_grids=[(5, 5)], classes=(1, 2))
    assert config.grids == [2, [3, 4]] and config.eval_grids == [[5, 5]] and config.classes == [1, 2]
    assert json.loads(json.dumps(config.to_dict())) == config.to_dict() | {"betas": list(config.betas)}


def test_check_model_settings_reads_no_data(monkeypatch):
    import lookupvit.data

    def no_reading(*args, **kwargs):
        raise AssertionError("data was read")

    monkeypatch.setattr(lookupvit.data, "load_fashion_mnist", no_reading)
    monkeypatch.setattr(lookupvit.data, "load_image_folder", no_reading)
    config = TrainConfig(model="lookupvit_nano4", grids=[9])  # Python callers: train() calls check_model_settings
    with pytest.raises(ValueError, match="grids entry 9 is larger than the 7x7 lookup grid"):
        check_model_settings(config)
    check_model_settings(TrainConfig(model="lookupvit_nano4", dataset="folder", image_size=36, grids=[9]))  # 9x9 at 36 px


def test_reproduce_passes_threads_to_every_training_run(tmp_path):
    budget = BUDGETS["quick"]
    for experiment in experiments(budget):
        config = train_config(experiment, budget, tmp_path, threads=1)
        assert config.threads == 1
        check_model_settings(config)


# --------------------------------------------------------------------------------------------
# Model configs
# --------------------------------------------------------------------------------------------


def test_a_default_compressed_grid_larger_than_the_lookup_grid_is_refused():
    with pytest.raises(ValueError, match=re.escape("compressed_grid (9, 9) is larger than the lookup grid (7, 7) of 28x28 images at patch size 4")):
        create_model("lookupvit_nano4", compressed_grid=9)
    with pytest.raises(ValueError, match=re.escape("compressed_grid (3, 8) is larger than the lookup grid (7, 7)")):
        model_config("lookupvit_nano4", compressed_grid=(3, 8))
    assert model_config("lookupvit_nano4", compressed_grid=(7, 7)).compressed_grid == (7, 7)


@pytest.mark.parametrize("arch", ["lookupvit", "vit", "tokenlearner", "perceiver"])
@pytest.mark.parametrize(
    "setting,value,error,message",
    [
        ("num_classes", -1, ValueError, "num_classes must be a whole number, at least 0, got -1"),
        ("embed_dim", 0, ValueError, "embed_dim must be a whole number, at least 1, got 0"),
        ("depth", 0, ValueError, "depth must be a whole number, at least 1, got 0"),
        ("num_heads", 0, ValueError, "num_heads must be a whole number, at least 1, got 0"),
        ("patch_size", 0, ValueError, "patch_size must be a whole number, at least 1, got 0"),
        ("patch_size", 4.0, TypeError, "patch_size must be a whole number, at least 1, got 4.0 (float)"),
        ("in_chans", 0, ValueError, "in_chans must be a whole number, at least 1, got 0"),
        ("mlp_ratio", 0, ValueError, "mlp_ratio must be a number > 0, got 0"),
        ("drop_path_rate", 1.0, ValueError, "drop_path_rate must be a number in [0, 1), got 1.0"),
        ("drop_path_rate", -0.1, ValueError, "drop_path_rate must be a number in [0, 1), got -0.1"),
        ("qkv_bias", "yes", TypeError, "qkv_bias must be True or False, got 'yes' (str)"),
    ],
)
def test_model_configs_refuse_bad_sizes(arch, setting, value, error, message):
    with pytest.raises(error, match=re.escape(message)):
        model_config(f"{arch}_nano4", **{setting: value})


@pytest.mark.parametrize(
    "setting,value,error,message",
    [
        ("lookup_mlp_ratio", 0, ValueError, "lookup_mlp_ratio must be a number > 0, got 0"),
        ("use_lookup_tokens", 1, TypeError, "use_lookup_tokens must be True or False, got 1 (int)"),
        ("infuse", None, TypeError, "infuse must be True or False, got None"),
    ],
)
def test_lookupvit_config_refuses_bad_settings(setting, value, error, message):
    with pytest.raises(error, match=re.escape(message)):
        LookupViTConfig(**{setting: value})


def test_baseline_configs_refuse_non_integer_token_counts():
    with pytest.raises(TypeError, match=re.escape("num_learned_tokens must be a whole number, at least 1, got 2.5")):
        model_config("tokenlearner_nano4", num_learned_tokens=2.5)
    with pytest.raises(TypeError, match=re.escape("num_latents must be a whole number, at least 1, got '9'")):
        model_config("perceiver_nano4", num_latents="9")


# --------------------------------------------------------------------------------------------
# Threads
# --------------------------------------------------------------------------------------------


@pytest.fixture
def restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_automatic_threads_share_the_available_cores_among_local_processes(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3, 4, 5}, raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert automatic_threads() == 6
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")  # torchrun --nproc-per-node 4
    assert automatic_threads() == 1
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert automatic_threads() == 3
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")
    assert automatic_threads() == 1  # never 0


def test_automatic_threads_without_an_affinity_mask_count_every_core(monkeypatch):
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)  # macOS, Windows
    monkeypatch.setattr(os, "cpu_count", lambda: 5)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert automatic_threads() == 5
    monkeypatch.setattr(os, "cpu_count", lambda: None)
    assert automatic_threads() == 1


def test_configure_threads_sets_torch_threads(monkeypatch, restore_threads):
    assert configure_threads(1) == 1 and torch.get_num_threads() == 1
    monkeypatch.setattr("lookupvit.runtime.automatic_threads", lambda: 2)
    assert configure_threads(0) == 2 and torch.get_num_threads() == 2
    assert configure_threads() == 2
    with pytest.raises(ValueError, match="threads must be a whole number >= 0"):
        configure_threads(-1)
