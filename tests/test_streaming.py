"""Streamed training on an ImageNet-style tree of real JPEGs: workers, processes and a kill leave the trajectory unchanged."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from lookupvit.data.loader import TransformedImages
from lookupvit.data.sources import ImageTreeSource
from lookupvit.data.transforms import eval_transform
from lookupvit.training.checkpoint import load_checkpoint
from lookupvit.training.config import load_config
from lookupvit.training.engine import CHECKPOINT, train

CLASSES = ["trouser", "sneaker", "bag"]  # Fashion-MNIST labels 1, 7, 8
STREAMED = [
    "model=lookupvit_nano4",
    "model_args={embed_dim=32, depth=2, num_heads=2, drop_path_rate=0.2}",
    "augment={mixup_alpha=0.4, cutmix_alpha=0.4}",
    "image_size=28",
    "randaugment='light2'",
    "random_erasing=0.25",
    "batch_size=8",
    "epochs=2",
    "lr=3e-3",
    "warmup_epochs=0.5",
    "amp='fp32'",
    "grids=[1, 2, 3, 5]",
    "eval_grids=[2, 5]",
    "eval_batch_size=8",
    "checkpoint_every=100",
    "log_every=1",
    "threads=1",
]
SAME_TRAJECTORY = {"rtol": 1e-4, "atol": 5e-5}  # as in test_training.py: summation order, amplified by Adam


def write_tree(root: Path, per_class: dict[str, int], size: int = 48, classes=CLASSES) -> Path:
    """root/<split>/<class>/<n>.JPEG from real Fashion-MNIST test images, upscaled to RGB."""
    from PIL import Image

    from lookupvit.data import load_fashion_mnist

    test_set = load_fashion_mnist("test")
    labels = {"trouser": 1, "sneaker": 7, "bag": 8, "shirt": 6}
    for split, count in per_class.items():
        offset = 0 if split == "train" else 500
        for name in classes:
            folder = root / split / name
            folder.mkdir(parents=True)
            picks = (test_set.labels == labels[name]).nonzero().flatten()[offset : offset + count]
            for n, index in enumerate(picks.tolist()):
                image = Image.fromarray(test_set.images[index, 0].numpy()).convert("RGB").resize((size, size), Image.BILINEAR)
                image.save(folder / f"{n}.JPEG", quality=90)
    return root


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    # 288 images: 36 steps of 8 per epoch, enough for a kill to land between two checkpoints on a busy machine
    return write_tree(tmp_path_factory.mktemp("tree"), {"train": 96, "val": 4})


def streamed_config(tree: Path, out: Path, *extra: str):
    return load_config(None, [*STREAMED, f"dataset='{tree}'", f"out='{out}'", *extra])


def weights(run: Path) -> dict:
    state = load_checkpoint(run / CHECKPOINT)["model"]
    # Key biases get exactly-zero gradients (softmax is shift invariant); see test_training.without_key_biases.
    return {k: (v[32:] if k.endswith("key_value.bias") else torch.cat([v[:32], v[64:]]) if k.endswith("attn.qkv.bias") else v) for k, v in state.items()}


def logged_steps(run: Path) -> int:
    path = run / "metrics.jsonl"
    if not path.exists():
        return 0
    return max((json.loads(line).get("step", 0) for line in path.read_text().splitlines() if line), default=0)


def test_workers_processes_and_a_sigkill_follow_the_single_process_trajectory(tree, tmp_path):
    reference = train(streamed_config(tree, tmp_path / "reference"), quiet=True)
    with_workers = train(streamed_config(tree, tmp_path / "workers", "workers=2"), quiet=True)
    for key, value in weights(reference).items():  # same images, same order, same arithmetic: bit for bit
        assert torch.equal(value, weights(with_workers)[key]), key

    # 2 processes x 2 workers each, killed with SIGKILL between the checkpoints of steps 36 and 72, resumed.
    run = tmp_path / "ddp"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "lookupvit.cli", "train", "--no-report"]
    command += ["--set", *STREAMED, f"dataset='{tree}'", f"out='{run}'", "workers=2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while logged_steps(run) < 37:
            assert process.poll() is None, process.stderr.read().decode()[-3000:]
            assert time.monotonic() < deadline, "the run did not reach step 37"
            time.sleep(0.005)
        os.killpg(process.pid, signal.SIGKILL)  # torchrun, both ranks and their loader workers
    finally:
        process.wait()
    assert load_checkpoint(run / CHECKPOINT)["step"] == 36 and 37 <= logged_steps(run) < 72  # the kill lost work
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    resumed, single = weights(run), weights(reference)
    for key in single:
        torch.testing.assert_close(resumed[key], single[key], **SAME_TRAJECTORY, msg=key)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert {r["step"] for r in records if "eval" in r} == {36, 72}


def test_a_corrupt_jpeg_is_replaced_and_counted(tree, tmp_path):
    broken = write_tree(tmp_path / "broken", {"train": 32, "val": 4})
    victim = sorted((broken / "train" / "bag").iterdir())[0]
    victim.write_bytes(victim.read_bytes()[:200])  # a truncated JPEG
    source = ImageTreeSource(broken, "train")
    index = [i for i in range(len(source)) if source.paths[i].decode() == f"bag/{victim.name}"][0]
    images = TransformedImages(source, eval_transform(28, (0.5,) * 3, (0.5,) * 3), seed=0)
    image, label, replaced, _ = images[(0, index)]
    assert replaced == 1 and label == int(source.labels[index + 1]) and torch.equal(image, images[(0, index + 1)][0])
    run = train(streamed_config(broken, tmp_path / "run", "epochs=1"), quiet=True)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if "loss" in line]
    assert records[-1]["replaced_images"] == 1  # every image is read once per epoch


def test_bad_trees_and_settings_are_refused_with_the_fix(tree, tmp_path):
    flat = tmp_path / "flat"
    (flat / "a").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"has no train/ folder; an ImageNet-style tree is .*/train/<class>/<image>"):
        train(streamed_config(flat, tmp_path / "run", "layout='imagenet'"), quiet=True)
    mismatched = write_tree(tmp_path / "mismatched", {"train": 2}, classes=["trouser", "bag"])
    write_tree(mismatched, {"val": 2}, classes=["trouser", "shirt"])
    with pytest.raises(ValueError, match=r"val has classes \['shirt', 'trouser'\] but .*train has \['bag', 'trouser'\]"):
        train(streamed_config(mismatched, tmp_path / "run"), quiet=True)
    empty = write_tree(tmp_path / "empty", {"train": 2, "val": 2})
    for image in (empty / "train" / "bag").iterdir():
        image.unlink()
    with pytest.raises(ValueError, match=r"class folder .*train/bag has no images"):
        train(streamed_config(empty, tmp_path / "run"), quiet=True)
    with pytest.raises(ValueError, match=r"workers=64 .* Use workers <= \d"):
        train(streamed_config(tree, tmp_path / "run", "workers=64"), quiet=True)
    with pytest.raises(ValueError, match=r"augment settings \['translate'\] apply to in-memory datasets only"):
        train(streamed_config(tree, tmp_path / "run", "augment={translate=0.1}"), quiet=True)
    with pytest.raises(ValueError, match=r"classes= selects classes of in-memory datasets only"):
        train(streamed_config(tree, tmp_path / "run", "classes=[0, 1]"), quiet=True)
    in_memory = load_config(None, ["model=lookupvit_nano4", "randaugment='medium2'", "workers=2", f"out='{tmp_path / 'run'}'"])
    with pytest.raises(ValueError, match=r"\['randaugment', 'workers'\] apply to streamed layouts \(imagenet, shards\) only"):
        train(in_memory, quiet=True)


@pytest.mark.parametrize("config", ["configs/imagenet1k-lookupvit-b16.toml", "configs/imagenet1k-vit-b16.toml"])
def test_imagenet_recipes_dry_run_on_a_tree_of_real_224_px_images(config, tmp_path_factory, tmp_path):
    photos = tmp_path_factory.getbasetemp() / "tree224"
    if not photos.exists():
        write_tree(photos, {"train": 4, "val": 1}, size=256)
    run = tmp_path / "run"
    # The recipe as written, scaled down only in how much it reads: 12 images, batches of 4, one epoch.
    overrides = [f"dataset='{photos}'", f"out='{run}'", "batch_size=4", "accum_steps=1", "epochs=1", "workers=1", "eval_batch_size=3", "threads=2", "log_every=1"]
    assert load_config(config).batch_size == 4096
    train(load_config(config, overrides), quiet=True)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if "loss" in r]
    assert len(losses) == 3 and all(loss == loss and loss > 0 for loss in losses)
    assert (run / "best.safetensors").is_file()


def test_eval_command_streams_a_trees_val_split_and_checks_its_classes(tree, tmp_path, capsys):
    from lookupvit.cli import main

    run = train(streamed_config(tree, tmp_path / "run", "epochs=1"), quiet=True)
    model = str(run / "best.safetensors")
    assert main(["eval", model, "--data", str(tree), "--grid", "2", "3", "--workers", "1", "--batch-size", "5"]) == 0
    table = capsys.readouterr().out
    assert "| 2x2 |" in table and "| 3x3 |" in table
    from lookupvit.data.shards import write_shards

    write_shards(tree, tmp_path / "shards", images_per_shard=5, progress=False)
    assert main(["eval", model, "--data", str(tmp_path / "shards"), "--grid", "2", "3", "--batch-size", "5", "--json", str(tmp_path / "s.json")]) == 0
    assert capsys.readouterr().out.splitlines()[-2:] == table.splitlines()[-2:]  # the same 12 images, the same accuracies
    other = write_tree(tmp_path / "other", {"val": 2}, classes=["trouser", "shirt"])
    assert main(["eval", model, "--data", str(other)]) == 2
    assert "labels would not mean the same class" in capsys.readouterr().err
