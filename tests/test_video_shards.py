"""Video shards (data/shards.py): written from a tree of real mp4 files, read as the same clips the tree gives, trained on."""

import io
import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lookupvit.cli import main
from lookupvit.data.loader import TransformedImages, collate, sample_seed
from lookupvit.data.shards import VideoShardSource, open_shards, open_video_shards, write_shards
from lookupvit.data.video import CorruptVideo, VideoFolderSource, clip_transform, open_video_tree
from lookupvit.training.data import open_run_data
from lookupvit.training.engine import train

from .test_video_data import TREE_CLASSES, make_video_tree
from .test_video_training import video_config

CLASSES = tuple(sorted(name for _, name in TREE_CLASSES))


@pytest.fixture(scope="module")
def video_tree(tmp_path_factory) -> Path:
    """root/{train,val}/{sneaker,trouser}/clip{0,1,2}.mp4: 12 frames of 32x32 each."""
    root = tmp_path_factory.mktemp("video-tree")
    make_video_tree(root, canvas=32)
    return root


@pytest.fixture(scope="module")
def written(video_tree, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("video-shards") / "out"
    return out, write_shards(video_tree, out, images_per_shard=4, seed=0, progress=False)


@pytest.fixture
def shards(written, tmp_path) -> Path:
    """A private copy of the written shards, for a test to change."""
    return Path(shutil.copytree(written[0], tmp_path / "shards"))


@pytest.fixture(scope="module")
def image_shards(tmp_path_factory) -> Path:
    """Shards of a tiny image tree: 2 classes x 2 PNGs per split."""
    root = tmp_path_factory.mktemp("image-tree")
    for split in ("train", "val"):
        for label, name in enumerate(CLASSES):
            (root / split / name).mkdir(parents=True)
            for n in range(2):
                Image.new("RGB", (8, 8), (100 * label, 50 * n, 0)).save(root / split / name / f"{n}.png")
    out = root.parent / f"{root.name}-shards"
    write_shards(root, out, progress=False)
    return out


def tree_index_of(shards: VideoShardSource, tree: VideoFolderSource) -> list[int]:
    """For each shard sample, the index of the tree video whose file it holds (the writer shuffles them)."""
    by_bytes = {(tree.root / tree.split / path.decode()).read_bytes(): index for index, path in enumerate(tree.paths)}
    return [by_bytes[shards.read_bytes(i)] for i in range(len(shards))]


def read_members(path: Path) -> list[tuple[str, bytes]]:
    with tarfile.open(path) as tar:
        return [(member.name, tar.extractfile(member).read()) for member in tar.getmembers()]


def write_members(path: Path, members: list[tuple[str, bytes]]) -> None:
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def put_in_tree_order(shards: Path, tree: Path) -> None:
    """Rewrite each split as one shard whose sample i holds tree video i: the two sources then read the same video at
    each index, so a run draws the same batches and the same per-sample seeds from either."""
    for split in ("train", "val"):
        order = {(tree / split / path.decode()).read_bytes(): i for i, path in enumerate(VideoFolderSource(tree, split, 1).paths)}
        members = [member for path in sorted(shards.glob(f"{split}-*.tar")) for member in read_members(path)]
        samples = [members[i : i + 2] for i in range(0, len(members), 2)]  # (<key>.mp4, <key>.cls) pairs, as written
        samples.sort(key=lambda sample: order[sample[0][1]])
        for path in [*shards.glob(f"{split}-*.tar"), shards / f"{split}.index.npz"]:
            path.unlink()
        write_members(shards / f"{split}-000000.tar", [member for sample in samples for member in sample])


def test_video_shards_hold_each_video_file_once_with_its_label(video_tree, written):
    out, summary = written
    assert summary == {"classes": 2, "train": {"videos": 6, "shards": 2}, "val": {"videos": 6, "shards": 2}}
    assert (out / "classes.txt").read_text().splitlines() == list(CLASSES)
    assert [name for name, _ in read_members(out / "train-000000.tar")][:2] == ["train00000000.mp4", "train00000000.cls"]
    train, val = open_video_shards(out, num_frames=4, stride=2)
    tree_train, tree_val = open_video_tree(video_tree, num_frames=4, stride=2)
    for shard_source, tree_source in ((train, tree_train), (val, tree_val)):
        assert shard_source.classes == CLASSES and shard_source.streamed and shard_source.num_frames == 4
        matches = tree_index_of(shard_source, tree_source)
        assert sorted(matches) == list(range(6))  # every video exactly once, its bytes as they were
        assert shard_source.labels.tolist() == tree_source.labels[matches].tolist()
    assert train.fingerprint()["clips"] == tree_train.fingerprint()["clips"] == {"num_frames": 4, "stride": 2, "training": True}
    assert val.fingerprint()["clips"]["training"] is False
    assert train.fingerprint() == open_video_shards(out, 4, 2)[0].fingerprint()


def test_video_shards_give_the_tree_clips(video_tree, written):
    train, val = open_video_shards(written[0], num_frames=4, stride=2, channels=1, temporal_views=3)
    tree_train, tree_val = open_video_tree(video_tree, num_frames=4, stride=2, channels=1, temporal_views=3)
    for shard_index, tree_index in enumerate(tree_index_of(train, tree_train)):
        torch.manual_seed(shard_index)  # training draws the clip's start from torch's global RNG
        clip = train.read(shard_index)
        torch.manual_seed(shard_index)
        assert clip.shape == (1, 4, 32, 32) and torch.equal(clip, tree_train.read(tree_index))
    for shard_index, tree_index in enumerate(tree_index_of(val, tree_val)):
        views = val.read(shard_index)
        assert views.shape == (3, 1, 4, 32, 32) and torch.equal(views, tree_val.read(tree_index))
    one_view = VideoShardSource(written[0], "val", num_frames=4, stride=2, channels=1, training=False)
    assert torch.equal(one_view.read(0), val.read(0)[1])  # 12 frames: views start at 0, 2, 5; the centred clip at 2


def test_a_corrupt_video_member_is_replaced_and_counted(shards):
    members = read_members(shards / "train-000001.tar")
    members[0] = (members[0][0], np.random.default_rng(0).bytes(4096))  # sample 4 (train00000004.mp4): noise
    members[2] = (members[2][0], b"")  # sample 5: empty
    write_members(shards / "train-000001.tar", members)
    train, _ = open_video_shards(shards, num_frames=4, stride=2)
    with pytest.raises(CorruptVideo, match=r"sample train00000004.mp4 of shard .*train-000001.tar does not decode as a video"):
        train.read(4)
    with pytest.raises(CorruptVideo, match=r"sample train00000005.mp4 of shard .*train-000001.tar"):
        train.read(5)
    dataset = TransformedImages(train, clip_transform(32, (0.5,) * 3, (0.5,) * 3, training=True), seed=0)
    clip, label, replaced, index = dataset[(0, 4)]
    assert replaced == 1 and index == 4 and label == int(train.labels[0]) and clip.shape == (3, 4, 32, 32)
    torch.manual_seed(sample_seed(0, 0, 4))  # the replacement (sample 0, after 4 and 5) draws what sample 4 would have
    assert torch.equal(clip, dataset.transform(train.read(0)))
    _, _, replaced_total, _ = collate([dataset[(0, i)] for i in range(6)])
    assert replaced_total == 2


def test_image_and_video_shards_are_not_read_as_each_other(written, image_shards, shards):
    with pytest.raises(
        ValueError,
        match=r"sample train00000000.png of shard .*train-000000.tar is an image, but VideoShardSource reads videos; "
        r"these are image shards: train an image model .* or write video shards from a video tree",
    ):
        open_video_shards(image_shards, num_frames=4)
    with pytest.raises(
        ValueError,
        match=r"sample train00000000.mp4 of shard .*train-000000.tar is a video, but ShardSource reads images; "
        r"these are video shards: train a video model \(lookupvivit_\*, vivit_\*\) on them",
    ):
        open_shards(written[0])
    shutil.copy(image_shards / "train-000000.tar", shards / "train-000009.tar")  # 4 image samples beside the 6 videos
    with pytest.raises(
        ValueError,
        match=r"sample train00000000.png of shard .*train-000009.tar is an image, .* the train shards mix images and videos "
        r"\(4 of 10 samples are images\); write them again from a tree of videos only",
    ):
        open_video_shards(shards, num_frames=4)


def test_the_writer_refuses_a_tree_of_images_and_videos(video_tree, tmp_path):
    mixed = Path(shutil.copytree(video_tree, tmp_path / "mixed"))
    Image.new("RGB", (8, 8)).save(mixed / "val" / "trouser" / "poster.jpg")
    with pytest.raises(
        ValueError, match=r"holds images \(e.g. .*poster.jpg\) and videos \(e.g. .*.mp4\); a shard folder holds one kind"
    ):
        write_shards(mixed, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_shards_command_on_a_video_tree(video_tree, tmp_path, capsys):
    out = tmp_path / "cli_shards"
    assert main(["shards", str(video_tree), str(out), "--images-per-shard", "5"]) == 0
    printed = capsys.readouterr().out
    assert "train: 6 videos in 2 shards" in printed and "val: 6 videos in 2 shards" in printed and f"dataset={out}" in printed
    assert len(open_video_shards(out, num_frames=2)[1]) == 6


def test_a_video_model_trains_on_video_shards_as_on_the_tree(video_tree, shards, tmp_path):
    put_in_tree_order(shards, video_tree)
    settings = {"epochs": 1, "batch_size": 3, "log_every": 1, "frame_stride": 2}  # 6 training clips: 2 steps, then evaluation
    shard_config = video_config(shards, tmp_path / "on-shards", workers=1, **settings)  # a worker reads them forked
    data = open_run_data(shard_config)
    assert data.layout == "videos" and isinstance(data.train, VideoShardSource) and data.image_shape == (1, 4, 32, 32)
    records = {}
    for name, config in (("shards", shard_config), ("tree", video_config(video_tree, tmp_path / "on-tree", **settings))):
        run = train(config, quiet=True)
        records[name] = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [[r for r in records[name] if "loss" in r] for name in ("shards", "tree")]
    assert [r["step"] for r in steps[0]] == [1, 2] and steps[0][0]["replaced_images"] == 0
    assert steps[0][0]["loss"] == steps[1][0]["loss"]  # the same clips in the same order
    evals = [[r["eval"] for r in records[name] if "eval" in r] for name in ("shards", "tree")]
    assert len(evals[0]) == 1 and 0 <= evals[0][0][0]["average"]["top1"] <= 1
