"""Training engine on real Fashion-MNIST images, kept tiny: exact resume, DDP equivalence, checkpoints."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from lookupvit import load_model
from lookupvit.data.augment import AugmentConfig, augment
from lookupvit.training.checkpoint import load_checkpoint
from lookupvit.training.config import load_config
from lookupvit.training.engine import CHECKPOINT, build_optimizer, config_changes, lr_factor, train

TINY = [
    "model=lookupvit_nano4",
    "model_args={embed_dim=32, depth=2, num_heads=2}",
    "train_subset=192",
    "test_subset=64",
    "batch_size=32",
    "epochs=2",
    "lr=3e-3",
    "warmup_epochs=0.5",
    "amp='fp32'",
    "grids=[1, 2, 3, 5]",
    "eval_grids=[2, 5]",
    "checkpoint_every=4",
    "log_every=2",
    "eval_batch_size=64",
]


# Every random draw of a step on: mixup and cutmix (each step picks one), stochastic depth.
ALL_RANDOM = ["augment={mixup_alpha=0.4, cutmix_alpha=0.4}", "model_args={embed_dim=32, depth=2, num_heads=2, drop_path_rate=0.2}"]


# Runs that sum gradients in another order (accumulation, DDP) differ by float noise, which Adam's
# division by sqrt(v) amplifies to ~1e-5 on parameters whose gradients are near zero; a draw that
# does not line up (another mixup partner, another dropped sample) moves weights by ~1e-2.
SAME_TRAJECTORY = {"rtol": 1e-4, "atol": 5e-5}


def tiny_config(out: Path, *extra: str):
    return load_config(None, [*TINY, f"out='{out}'", *extra])


def final_weights(run: Path) -> dict:
    return load_checkpoint(run / CHECKPOINT)["model"]


def assert_same_weights(a: dict, b: dict, **tolerance) -> None:
    assert a.keys() == b.keys()
    for key in a:
        if tolerance:
            torch.testing.assert_close(a[key], b[key], **tolerance, msg=key)
        else:
            assert torch.equal(a[key], b[key]), key


def without_key_biases(state: dict, dim: int = 32) -> dict:
    """The weights minus the key halves of attention biases.

    A key bias gets an exactly-zero gradient (softmax is shift invariant), so Adam turns float noise
    into updates that depend on the reduction order; they cannot change any output. Runs that sum
    gradients in another order (DDP, accumulation) are compared without them.
    """
    stripped = dict(state)
    for key, value in state.items():
        if key.endswith("key_value.bias"):
            stripped[key] = value[dim:]
        elif key.endswith("attn.qkv.bias"):
            stripped[key] = torch.cat([value[:dim], value[2 * dim :]])
    return stripped


def test_run_stopped_and_resumed_under_other_execution_settings_reaches_identical_weights(tmp_path):
    straight = train(tiny_config(tmp_path / "straight"), quiet=True)
    interrupted = tmp_path / "interrupted"
    everything_random = ["augment={mixup_alpha=0.4, cutmix_alpha=0.4}", "model_args={embed_dim=32, depth=2, num_heads=2, drop_path_rate=0.1}", "ema_decay=0.9"]
    config = tiny_config(interrupted, *everything_random)
    reference = train(tiny_config(tmp_path / "reference", *everything_random), quiet=True)
    train(config, stop_after_steps=5, quiet=True)  # mid-epoch (6 steps per epoch), between checkpoints
    assert load_checkpoint(interrupted / CHECKPOINT)["step"] == 5
    # Across the epoch boundary, from the run folder moved elsewhere and named with a trailing slash
    # and "..", with another eval batch size.
    moved = tmp_path / "moved"
    interrupted.rename(moved)
    train(tiny_config(Path(f"{moved}/../moved/"), *everything_random, "eval_batch_size=16"), stop_after_steps=3, quiet=True)
    moved.rename(interrupted)
    # The last leg recomputes blocks in backward (as after running out of memory): same weights.
    train(tiny_config(interrupted, *everything_random, "grad_checkpointing=true"), quiet=True)
    assert_same_weights(final_weights(interrupted), final_weights(reference))
    ema = [load_checkpoint(run / CHECKPOINT)["ema"] for run in (interrupted, reference)]
    assert_same_weights(*ema)
    assert_same_weights(load_file(interrupted / "model.safetensors"), load_file(reference / "model.safetensors"))
    # and the run actually trained: weights moved and differ from a run with other settings
    assert not torch.equal(final_weights(straight)["head_lookup.weight"], final_weights(reference)["head_lookup.weight"])
    records = [json.loads(line) for line in (reference / "metrics.jsonl").read_text().splitlines()]
    assert {record["step"] for record in records if "eval" in record} == {6, 12}


def test_corrupt_checkpoint_is_refused_and_kept(tmp_path):
    config = tiny_config(tmp_path / "run", "epochs=1")
    train(config, stop_after_steps=2, quiet=True)
    checkpoint = tmp_path / "run" / CHECKPOINT
    checkpoint.write_bytes(checkpoint.read_bytes()[:1000])
    damaged = checkpoint.read_bytes()
    with pytest.raises(ValueError, match="truncated or corrupt"):
        train(config, quiet=True)
    assert checkpoint.read_bytes() == damaged  # never overwritten


def test_two_processes_match_one_process_with_mixup_cutmix_and_drop_path(tmp_path):
    single = train(tiny_config(tmp_path / "single", "epochs=1", *ALL_RANDOM), quiet=True)
    overrides = [*TINY, f"out='{tmp_path / 'ddp'}'", "epochs=1", *ALL_RANDOM]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "lookupvit.cli", "train", "--no-report", "--set", *overrides]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    ddp_weights, single_weights = without_key_biases(final_weights(tmp_path / "ddp")), without_key_biases(final_weights(single))
    assert_same_weights(ddp_weights, single_weights, **SAME_TRAJECTORY)
    models = [load_model(run / "model.safetensors").eval() for run in (single, tmp_path / "ddp")]
    images = torch.randn(4, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(models[0](images, grid=3), models[1](images, grid=3), rtol=1e-4, atol=1e-5)


def test_gradient_accumulation_matches_the_full_batch_with_mixup_cutmix_and_drop_path(tmp_path):
    full = train(tiny_config(tmp_path / "full", "epochs=1", *ALL_RANDOM), quiet=True)
    accumulated = train(tiny_config(tmp_path / "accumulated", "epochs=1", "accum_steps=4", *ALL_RANDOM), quiet=True)
    weights = [without_key_biases(final_weights(run)) for run in (full, accumulated)]
    assert_same_weights(*weights, **SAME_TRAJECTORY)
    plain = without_key_biases(final_weights(train(tiny_config(tmp_path / "plain", "epochs=1"), quiet=True)))
    assert not torch.allclose(plain["head_lookup.weight"], weights[0]["head_lookup.weight"], rtol=1e-3, atol=1e-4)  # the draws did something


def test_mixing_needs_even_micro_batches(tmp_path):
    with pytest.raises(ValueError, match=r"even number of rows; batch_size 36 / \(world_size 1 x accum_steps 4\) = 9.*multiple of 8"):
        train(tiny_config(tmp_path / "odd", "batch_size=36", "accum_steps=4", *ALL_RANDOM), quiet=True)


def test_augmentation_is_seeded_and_sliceable_across_processes():
    images = torch.rand(8, 1, 28, 28)
    config = AugmentConfig(op_prob=1.0)

    def run(seed, rows, offset):
        return augment(images[rows], config, torch.Generator().manual_seed(seed), 8, offset)

    whole = run(0, slice(0, 8), 0)
    assert torch.equal(whole, run(0, slice(0, 8), 0))
    assert not torch.equal(whole, run(1, slice(0, 8), 0))
    torch.testing.assert_close(torch.cat([run(0, slice(0, 4), 0), run(0, slice(4, 8), 4)]), whole)
    assert whole.min() >= 0 and whole.max() <= 1 and not torch.equal(whole, images)


def test_schedule_and_weight_decay_groups():
    assert lr_factor(0, 100, 10, 0.01) == pytest.approx(0.1)
    assert lr_factor(9, 100, 10, 0.01) == pytest.approx(1.0)
    assert lr_factor(55, 100, 10, 0.01) == pytest.approx(0.505)
    assert lr_factor(100, 100, 10, 0.01) == pytest.approx(0.01)
    config = load_config(None, TINY)
    from lookupvit import create_model

    model = create_model("lookupvit_nano4", embed_dim=32, depth=2, num_heads=2)
    decay, no_decay = build_optimizer(model, config).param_groups
    names = {id(p): n for n, p in model.named_parameters()}
    no_decay_names = {names[id(p)] for p in no_decay["params"]}
    assert "pos_embed" in no_decay_names and "blocks.0.gather_norm_lookup.weight" in no_decay_names
    assert "head_compressed.bias" in no_decay_names
    assert all(names[id(p)].endswith("weight") and "norm" not in names[id(p)] for p in decay["params"])
    assert decay["weight_decay"] == config.weight_decay and no_decay["weight_decay"] == 0


def test_loss_on_one_head_only_leaves_the_other_head_untrained(tmp_path):
    run = train(tiny_config(tmp_path / "run", "epochs=1", "lookup_loss_weight=0.0"), quiet=True)
    torch.manual_seed(0)
    from lookupvit import create_model

    initial = create_model("lookupvit_nano4", embed_dim=32, depth=2, num_heads=2).state_dict()
    trained = final_weights(run)
    assert torch.equal(trained["head_lookup.weight"], initial["head_lookup.weight"])
    assert not torch.equal(trained["head_compressed.weight"], initial["head_compressed.weight"])


def test_config_errors_are_clear(tmp_path):
    with pytest.raises(ValueError, match="unknown config key"):
        load_config(None, ["epoch=3"])
    with pytest.raises(ValueError, match="key=value"):
        load_config(None, ["epochs"])
    with pytest.raises(ValueError, match="unknown augment setting"):
        load_config(None, ["augment={rotation=3}"])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_config(tmp_path / "missing.toml")
    with pytest.raises(ValueError, match="grad_checkpointing must be true or false"):
        load_config(None, ["grad_checkpointing=yes"])  # a bare word parses as a (truthy) string
    with pytest.raises(ValueError, match="divisible by accum_steps"):
        train(tiny_config(tmp_path / "run", "batch_size=30", "accum_steps=4"), quiet=True)


def test_compiled_training_matches_eager_training(tmp_path, monkeypatch):
    import lookupvit.runtime
    import lookupvit.training.engine

    # aot_eager traces forward and backward like inductor does, without minutes of C++ compilation.
    monkeypatch.setattr(lookupvit.training.engine, "compile_model", lambda module, num_grids: lookupvit.runtime.compile_model(module, num_grids, backend="aot_eager"))
    torch._dynamo.reset()
    eager = train(tiny_config(tmp_path / "eager", "epochs=1", "train_subset=96"), quiet=True)
    compiled = train(tiny_config(tmp_path / "compiled", "epochs=1", "train_subset=96", "compile=true"), quiet=True)
    assert_same_weights(final_weights(eager), final_weights(compiled), rtol=1e-4, atol=1e-5)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 1


def test_tensorboard_scalars_match_the_jsonl_log(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    train(tiny_config(run, "epochs=1", "train_subset=96", "tensorboard=true"), quiet=True)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    losses = [(r["step"], r["loss"]) for r in records if "loss" in r]
    assert losses and [(e.step, round(e.value, 5)) for e in events.Scalars("train/loss")] == losses
    (evaluation,) = [r for r in records if "eval" in r]
    (row,) = evaluation["eval"]
    (event,) = events.Scalars("eval/" + "x".join(map(str, row["grid"])) + "/average_top1")
    assert event.step == evaluation["step"] and event.value == pytest.approx(row["average"]["top1"])


def test_tensorboard_without_the_package_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # makes the import fail
    with pytest.raises(ImportError, match=r"pip install 'lookupvit\[tensorboard\]'"):
        train(tiny_config(tmp_path / "run", "tensorboard=true"), quiet=True)


def test_resume_ignores_execution_settings_and_fields_a_checkpoint_predates(tmp_path):
    config = tiny_config(tmp_path)
    saved = config.to_dict()
    del saved["tensorboard"]  # a checkpoint written before the field existed
    saved.update(grad_checkpointing=True, log_every=7, device="cuda")
    assert config_changes(saved, config) == []
    saved.update(lr=1.0, grids=[3])
    assert config_changes(saved, config) == ["grids", "lr"]
    assert config_changes(saved, tiny_config(tmp_path, "tensorboard=true", "lr=1.0", "grids=[3]")) == []


def test_sigkilled_training_process_resumes_bit_identically(tmp_path):
    # A real process, killed with SIGKILL between checkpoints: the steps since the last checkpoint
    # are lost and retrained, and the result equals an uninterrupted run bit for bit.
    settings = [*TINY, *ALL_RANDOM, "train_subset=640", "checkpoint_every=100", "log_every=1", "threads=1"]  # checkpoints at steps 20, 40
    reference = train(load_config(None, [*settings, f"out='{tmp_path / 'reference'}'"]), quiet=True)
    run = tmp_path / "killed"
    command = [sys.executable, "-m", "lookupvit.cli", "train", "--no-report", "--set", *settings, f"out='{run}'"]
    process = subprocess.Popen(command, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    logged = run / "metrics.jsonl"
    try:
        deadline = time.monotonic() + 300
        while not (logged.exists() and max(json.loads(line).get("step", 0) for line in logged.read_text().splitlines() if line) >= 21):
            assert process.poll() is None, process.stderr.read().decode()[-3000:]
            assert time.monotonic() < deadline, "the run did not reach step 21"
            time.sleep(0.01)
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.wait()
    saved_step = load_checkpoint(run / CHECKPOINT)["step"]
    steps_done = max(json.loads(line).get("step", 0) for line in logged.read_text().splitlines() if line)
    assert saved_step == 20 and 21 <= steps_done < 40  # work was lost: the kill came between checkpoints
    train(load_config(None, [*settings, f"out='{run}'"]), quiet=True)
    assert_same_weights(final_weights(run), final_weights(reference))
    assert_same_weights(load_file(run / "best.safetensors"), load_file(reference / "best.safetensors"))


def write_image_folder(root: Path, classes: list[str], per_class: int = 24, seed: int = 0) -> Path:
    """Real Fashion-MNIST test images as PNG files, root/<class>/<n>.png."""
    from PIL import Image

    from lookupvit.data import load_fashion_mnist

    test_set = load_fashion_mnist("test")
    generator = torch.Generator().manual_seed(seed)
    for label, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        picks = (test_set.labels == label).nonzero().flatten()
        for n, index in enumerate(picks[torch.randperm(len(picks), generator=generator)[:per_class]].tolist()):
            Image.fromarray(test_set.images[index, 0].numpy()).save(root / name / f"{n}.png")
    return root


def folder_config(out: Path, train_root: Path, val_root: Path, *extra: str):
    folders = [f"dataset='{train_root}'", f"val_dataset='{val_root}'", "image_size=28", "batch_size=16"]  # 48 images: all of them (TINY's subsets are larger)
    return tiny_config(out, *folders, *extra)


def test_resume_refuses_changes_to_the_trajectory_and_other_data(tmp_path):
    run = tmp_path / "run"
    train(tiny_config(run, "epochs=1"), stop_after_steps=1, quiet=True)
    with pytest.raises(ValueError, match=r"different config \(changed: \['grids', 'lr'\]: grids: \[1, 2, 3, 5\] -> \[3\]; lr: 0.003 -> 0.001\)"):
        train(tiny_config(run, "epochs=1", "lr=1e-3", "grids=[3]"), quiet=True)
    # The same settings, but the folder the run trained on now holds other images.
    train_root, val_root = write_image_folder(tmp_path / "train", ["shirt", "trouser"]), write_image_folder(tmp_path / "val", ["shirt", "trouser"], seed=1)
    folder_run = tmp_path / "folder-run"
    train(folder_config(folder_run, train_root, val_root), stop_after_steps=1, quiet=True)
    next(train_root.glob("shirt/*.png")).unlink()
    with pytest.raises(ValueError, match=r"trained on other data \(48 images then, 47 now\)"):
        train(folder_config(folder_run, train_root, val_root), quiet=True)


def test_label_spaces_that_do_not_line_up_are_refused(tmp_path):
    train_root = write_image_folder(tmp_path / "train", ["shirt", "trouser"])
    renamed = write_image_folder(tmp_path / "renamed", ["shirt", "trousers"])
    with pytest.raises(ValueError, match=r"validation folder .*renamed has classes \['shirt', 'trousers'\] but the training folder .* has \['shirt', 'trouser'\]"):
        train(folder_config(tmp_path / "run", train_root, renamed), quiet=True)
    single = write_image_folder(tmp_path / "single", ["shirt"])
    with pytest.raises(ValueError, match=r"1 class \(\['shirt'\]\); a classifier needs at least 2"):
        train(folder_config(tmp_path / "run", single, single), quiet=True)
    with pytest.raises(ValueError, match=r"at least 2"):
        train(tiny_config(tmp_path / "run", "classes=[3]"), quiet=True)


def test_a_diverging_run_stops_before_non_finite_weights_are_saved(tmp_path):
    run = tmp_path / "run"
    # checkpoints every step: a non-finite step must stop the run before its weights are written
    with pytest.raises(FloatingPointError, match=r"at step \d+; lower lr \(now 1e\+30\)"):
        train(tiny_config(run, "lr=1e30", "checkpoint_every=1", "clip_grad_norm=0.0"), quiet=True)
    state = load_checkpoint(run / CHECKPOINT)
    assert all(torch.isfinite(value).all() for value in state["model"].values())
