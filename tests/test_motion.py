"""The motion videos (data/motion.py): real mp4 files, deterministic, labelled by motion alone."""

import itertools
import json
import math

import numpy as np
import pytest
import torch

from lookupvit.data import load_fashion_mnist
from lookupvit.data.motion import (
    MANIFEST,
    MOTION_CLASSES,
    ClipParameters,
    MotionSettings,
    make_clip,
    render_clip,
    write_motion_videos,
)
from lookupvit.data.video import PyAVReader, open_video_tree

SMALL = {"train_per_class": 2, "val_per_class": 3, "progress": False}  # 20 videos: a second or two


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    root = tmp_path_factory.mktemp("motion") / "videos"
    return root, write_motion_videos(root, **SMALL)


def displacement(a: torch.Tensor, b: torch.Tensor) -> tuple[int, int]:
    """(rows, columns) that frame b is frame a shifted by on the torus, by phase correlation (independent of the renderer)."""
    cross = torch.fft.fft2(b.double()) * torch.fft.fft2(a.double()).conj()
    surface = torch.fft.ifft2(cross / cross.abs().clamp_min(1e-9)).real
    row, column = divmod(int(surface.argmax()), surface.shape[1])
    height, width = surface.shape
    return (row - height if row > height // 2 else row), (column - width if column > width // 2 else column)


def direction_of(frames: torch.Tensor) -> str:
    """The direction read from the frames: the summed shift between consecutive frames (the whole clip would wrap around)."""
    rows = columns = 0
    for a, b in itertools.pairwise(frames):
        step = displacement(a, b)
        rows, columns = rows + step[0], columns + step[1]
    if abs(rows) > abs(columns):
        return "down" if rows > 0 else "up"
    return "right" if columns > 0 else "left"


def test_tree_layout_manifest_and_decoded_frames(written):
    root, manifest = written
    train, val = open_video_tree(root, num_frames=8, stride=2, channels=1)
    assert train.classes == val.classes == MOTION_CLASSES == tuple(manifest["classes"])
    assert len(train) == 8 and len(val) == 12 and len(manifest["files"]) == 20
    assert manifest["settings"]["seed"] == 0 and manifest["settings"]["frames"] == 16 and manifest["software"]["av"]
    settings = MotionSettings.from_json(manifest["settings"])
    items = {split: load_fashion_mnist(source) for split, source in (("train", "train"), ("val", "test"))}
    reader = PyAVReader()
    for name in manifest["files"]:
        split, direction, file = name.split("/")
        decoded = reader.read_frames(root / name, channels=1)[..., 0]
        _, rendered = make_clip(settings, split, MOTION_CLASSES.index(direction), int(file[:-4]), items[split].images, items[split].labels)
        assert decoded.shape == (16, 32, 32)
        # Lossless luma; only the grey -> limited-range YUV -> grey round trip may move a value by one.
        assert (decoded.int() - rendered.int()).abs().max() <= 1, name
        assert decoded.float().std() > 20, name  # an item, not a blank canvas


def test_same_seed_same_bytes_and_rerun_is_a_verified_no_op(written, tmp_path):
    root, manifest = written
    again = write_motion_videos(tmp_path / "again", **SMALL)
    assert again["files"] == manifest["files"]  # byte-identical: the SHA-256 of every file
    other_seed = write_motion_videos(tmp_path / "seed1", **{**SMALL, "seed": 1})
    assert not set(other_seed["files"].values()) & set(manifest["files"].values())
    before = {path: path.stat().st_mtime_ns for path in root.rglob("*")}
    assert write_motion_videos(root, **SMALL) == manifest
    assert {path: path.stat().st_mtime_ns for path in root.rglob("*")} == before  # nothing rewritten


def test_reruns_refuse_other_settings_and_damaged_files(tmp_path):
    root = tmp_path / "videos"
    write_motion_videos(root, **{**SMALL, "val_per_class": 1})
    with pytest.raises(ValueError, match=r"other settings .*'frames': \(16, 12\).*overwrite=True"):
        write_motion_videos(root, **{**SMALL, "val_per_class": 1, "frames": 12})
    rewritten = write_motion_videos(root, **{**SMALL, "val_per_class": 1, "frames": 12, "overwrite": True})
    assert rewritten["settings"]["frames"] == 12 and PyAVReader().read_frames(root / "val/up/0000.mp4", 1).shape[0] == 12
    (root / "train/left/0001.mp4").write_bytes(b"damaged")
    (root / "val/up/0000.mp4").unlink()
    with pytest.raises(ValueError, match=r"train/left/0001.mp4 has changed.*Rewrite them with overwrite=True") as error:
        write_motion_videos(root, **{**SMALL, "val_per_class": 1, "frames": 12})
    assert "val/up/0000.mp4 is missing" in str(error.value)
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "holiday.jpg").write_bytes(b"x")
    with pytest.raises(FileExistsError, match="not a motion-video folder"):
        write_motion_videos(foreign, **SMALL, overwrite=True)
    assert (foreign / "holiday.jpg").is_file()
    assert not list(tmp_path.glob(".*partial"))  # no staging folder left behind
    with pytest.raises(ValueError, match="canvas must be even"):
        write_motion_videos(tmp_path / "odd", canvas=31, **SMALL)
    with pytest.raises(ValueError, match="canvas / 2"):
        write_motion_videos(tmp_path / "fast", speed=(1.0, 16.0), **SMALL)


def test_the_direction_is_recoverable_from_the_decoded_frames(written):
    root, manifest = written
    reader = PyAVReader()
    names = sorted(manifest["files"])
    correct = sum(direction_of(reader.read_frames(root / name, 1)[..., 0]) == name.split("/")[1] for name in names)
    assert correct / len(names) > 0.95, (correct, len(names))


def chi_square_homogeneity(counts: np.ndarray) -> float:
    """Pearson's statistic for "every row (class) has the same distribution over the columns (bins)"."""
    expected = counts.sum(1, keepdims=True) * counts.sum(0, keepdims=True) / counts.sum()
    return float(((counts - expected) ** 2 / expected).sum())


# Pearson's chi-square with (4 classes - 1) x (4 bins - 1) = 9 degrees of freedom exceeds this with probability 0.001.
CHI_SQUARE_9_DOF_P001 = 27.88


def single_frame_statistics(clips: list[tuple[int, torch.Tensor]], frame: int, canvas: int) -> dict[str, np.ndarray]:
    """Per class, counts over 4 bins of what one frame shows: the item's circular centroid along rows and
    columns (where it is on the torus) and its total intensity (which item, how large)."""
    positions = torch.arange(canvas) * 2 * math.pi / canvas
    intensities = [float(frames[frame].float().sum()) for _, frames in clips]
    intensity_edges = np.quantile(intensities, [0.25, 0.5, 0.75])
    tables = {name: np.zeros((len(MOTION_CLASSES), 4)) for name in ("row", "column", "intensity")}
    for (label, frames), intensity in zip(clips, intensities):
        image = frames[frame].double()
        for name, profile in (("row", image.sum(1)), ("column", image.sum(0))):
            angle = math.atan2(float((profile * positions.sin()).sum()), float((profile * positions.cos()).sum())) % (2 * math.pi)
            tables[name][label, int(angle / (math.pi / 2)) % 4] += 1
        tables["intensity"][label, np.searchsorted(intensity_edges, intensity)] += 1
    return tables


@pytest.mark.parametrize("distractors", [0, 2])
def test_no_single_frame_depends_on_the_class(distractors):
    settings = MotionSettings(1, 1, seed=0, frames=16, canvas=32, scale=(12.0, 20.0), speed=(1.0, 2.5), upsample=8, fps=16, distractors=distractors)
    fashion = load_fashion_mnist("train")
    items = fashion.images
    clips = [(label, make_clip(settings, "train", label, index, items, fashion.labels)[1]) for label in range(4) for index in range(150)]
    for frame in (0, 7, 15):
        for name, table in single_frame_statistics(clips, frame, settings.canvas).items():
            assert chi_square_homogeneity(table) < CHI_SQUARE_9_DOF_P001, (frame, name, table)

    # The same test catches a renderer that lets the start depend on the direction (each item starting
    # near the edge it moves away from), though items still cover the whole canvas over the clip.
    biased = []
    for label, direction in enumerate(MOTION_CLASSES):
        rng = np.random.default_rng(label)
        for index in range(150):
            item, side, speed = int(rng.integers(len(items))), float(rng.uniform(12, 20)), float(rng.uniform(1, 2.5))
            start = [float(rng.uniform(0, 32)), float(rng.uniform(0, 32))]
            axis, sign = {"down": (0, 1), "up": (0, -1), "right": (1, 1), "left": (1, -1)}[direction]
            start[axis] = float(rng.uniform(0, 8)) if sign > 0 else float(rng.uniform(24, 32))
            velocity = tuple(sign * speed if a == axis else 0.0 for a in range(2))
            biased.append((label, render_clip(items[item, 0], ClipParameters(item, side, tuple(start), velocity), 16, 32, 8)))
    tables = single_frame_statistics(biased, 0, 32)
    assert max(chi_square_homogeneity(tables["row"]), chi_square_homogeneity(tables["column"])) > 10 * CHI_SQUARE_9_DOF_P001


def test_manifest_is_json_with_the_settings(written):
    root, manifest = written
    on_disk = json.loads((root / MANIFEST).read_text())
    assert on_disk == manifest and set(on_disk["settings"]) == {
        "train_per_class",
        "val_per_class",
        "seed",
        "frames",
        "canvas",
        "scale",
        "speed",
        "upsample",
        "fps",
        "distractors",
    }


def test_with_distractors_the_shoe_moves_as_labelled_and_clothes_move_at_random():
    settings = MotionSettings(1, 1, seed=0, frames=16, canvas=32, scale=(10.0, 16.0), speed=(1.0, 2.5), upsample=8, fps=16, distractors=2)
    fashion = load_fashion_mnist("test")
    distractor_directions = []
    for label, direction in enumerate(MOTION_CLASSES):
        for index in range(20):
            items, frames = make_clip(settings, "val", label, index, fashion.images, fashion.labels)
            target, *others = items
            assert int(fashion.labels[target.item]) in (5, 7, 9) and all(int(fashion.labels[o.item]) not in (5, 7, 9) for o in others)
            # The target alone, rendered from its parameters, moves the labelled way; the video shows all three items.
            alone = render_clip(fashion.images[target.item, 0], target, 16, 32, 8)
            assert direction_of(alone) == direction
            assert frames.shape == (16, 32, 32) and (frames >= alone).all()
            distractor_directions += [direction_of(render_clip(fashion.images[o.item, 0], o, 16, 32, 8)) for o in others]
    # The clothes' directions do not follow the label: all four occur about equally often.
    counts = np.array([distractor_directions.count(d) for d in MOTION_CLASSES])
    assert counts.min() > 0.15 * counts.sum(), counts
