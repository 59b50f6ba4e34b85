"""Training, evaluating and reporting the video models on a tree of real mp4 files."""

import json
from pathlib import Path

import pytest
import torch

from lookupvit import create_model
from lookupvit.training.config import TrainConfig, check_model_settings, load_config
from lookupvit.training.data import open_run_data
from lookupvit.training.engine import evaluation_grids, grid_for_step, train
from lookupvit.training.report import write_report

from .test_video_data import TREE_CLASSES, make_video_tree


@pytest.fixture(scope="module")
def video_tree(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("video-tree")
    make_video_tree(root, canvas=32)
    return root


def video_config(root: Path, out: Path, **settings) -> TrainConfig:
    values = dict(
        model="lookupvivit_nano4",
        model_args={"num_frames": 4, "compressed_grid": [2, 4, 4]},
        dataset=str(root),
        image_size=32,
        crop_pct=1.0,
        video_channels=1,
        epochs=2,
        batch_size=2,
        grids=[[1, 2, 2], [2, 4, 4]],
        eval_grids=[1, [2, 4, 4], [2, 8, 8]],
        eval_batch_size=3,
        out=str(out),
    )
    values.update(settings)
    config = TrainConfig(**values)
    check_model_settings(config)
    return config


def test_video_runs_refuse_image_settings_and_image_runs_video_settings(tmp_path, video_tree):
    with pytest.raises(ValueError, match="video model: it trains on videos"):
        check_model_settings(TrainConfig(model="vivit_nano4"))
    with pytest.raises(ValueError, match="video model"):
        check_model_settings(TrainConfig(model="vivit_nano4", dataset=str(video_tree), layout="imagenet"))
    with pytest.raises(ValueError, match="layout 'videos' needs a video model"):
        check_model_settings(TrainConfig(model="lookupvit_nano4", dataset=str(video_tree), layout="videos"))
    with pytest.raises(ValueError, match=r"\['clip_flip', 'frame_stride'\] apply to video models only"):
        load_config(overrides=["clip_flip=true", "frame_stride=2"])
    with pytest.raises(ValueError, match=r"video_channels must be 1 \(grey\) or 3 \(RGB\), got 2"):
        TrainConfig(video_channels=2)
    with pytest.raises(ValueError, match=r"has 2 sides, but lookupvivit_nano4 .* has a 2x8x8 lookup grid: use whole numbers or \[t, h, w\] triples"):
        video_config(video_tree, tmp_path, grids=[[2, 2]])
    with pytest.raises(ValueError, match="larger than the 2x8x8 lookup grid"):
        video_config(video_tree, tmp_path, grids=[[3, 2, 2]])
    with pytest.raises(ValueError, match=r"\['randaugment'\] are image augmentations"):
        open_run_data(video_config(video_tree, tmp_path, randaugment="light1"))


def test_run_data_of_a_video_tree(tmp_path, video_tree):
    data = open_run_data(video_config(video_tree, tmp_path))
    assert data.layout == "videos" and data.streamed
    assert data.classes == tuple(sorted(name for _, name in TREE_CLASSES))
    assert data.image_shape == (1, 4, 32, 32)  # (C, T, H, W): the clip length is the model's num_frames
    assert data.model_args() == {"img_size": (32, 32), "in_chans": 1, "num_classes": 2}
    clip = data.transform(training=False)(data.test.read(0))
    assert clip.shape == (1, 4, 32, 32) and clip.dtype == torch.float32
    # "dataset" normalisation: the statistics of sampled clips, mostly black canvas with one bright item
    assert 0 < data.normalization.mean[0] < 0.5 and data.normalization.std[0] > 0.05


def test_grids_of_video_models_are_three_dimensional(tmp_path, video_tree):
    assert grid_for_step([2], seed=0, step=0, dims=3) == (2, 2, 2)
    assert grid_for_step([[1, 2, 3]], seed=0, step=5, dims=3) == (1, 2, 3)
    model = create_model("lookupvivit_nano4", num_frames=4, img_size=32, compressed_grid=(2, 4, 4))
    config = video_config(video_tree, tmp_path, eval_grids=[1, 2, 3, [2, 8, 8], [2, 9, 9], [4, 4]])
    # 3 does not fit the 2 lookup steps in time, [2, 9, 9] is too wide and [4, 4] is an image grid: skipped
    assert evaluation_grids(config, model) == [1, 2, (2, 4, 4), (2, 8, 8)]


@pytest.mark.parametrize("model", ["lookupvivit_nano4", "vivit_nano4"])
def test_video_model_trains_resumes_and_reports(tmp_path, video_tree, model):
    out = tmp_path / model
    model_args = {"num_frames": 4, "compressed_grid": [2, 4, 4]} if model.startswith("lookup") else {"num_frames": 4}
    config = video_config(video_tree, out, model=model, model_args=model_args, workers=1, frame_stride=2)
    train(config, stop_after_steps=1, quiet=True)
    run = train(config, quiet=True)  # resumes at step 1
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    # 3 training clips per class at batch 2: 3 steps an epoch; the resumed invocation went on from step 1
    assert [r["step"] for r in records if "eval" in r] == [3, 6]
    row = [r["eval"] for r in records if "eval" in r][-1][0]
    expected_grid = [2, 4, 4] if model.startswith("lookup") else None
    assert row["grid"] == expected_grid and row["views"] == 1
    report = write_report(run, torch.device("cpu"))
    text = report.read_text()
    eval_rows = json.loads((run / "eval.json").read_text())["rows"]
    if model.startswith("lookup"):
        assert [row["grid"] for row in eval_rows] == [[1, 1, 1], [2, 4, 4], [2, 8, 8]]
        assert (run / "attention.png").stat().st_size > 0 and "over time" in text
    else:
        assert [row["grid"] for row in eval_rows] == [None]
    # The clips of a video run are cheaper at smaller grids, and the report prints the 3-D grids.
    gflops = [row["gflops"] for row in eval_rows]
    assert gflops == sorted(gflops)
    assert "x".join(map(str, eval_rows[-1]["grid"] or [])) in text


def test_eval_of_a_trained_file_reproduces_training_s_evaluation(tmp_path, video_tree, capsys):
    """The model file tells `lookupvit eval` the frame stride and the resize training used (crop_pct < 1)."""
    from lookupvit.cli import main

    config = video_config(video_tree, tmp_path / "run", crop_pct=0.875, frame_stride=2, epochs=1, eval_grids=[[2, 4, 4]])
    run = train(config, quiet=True)
    last = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if "eval" in line][-1]
    top1 = 100 * last["eval"][0]["average"]["top1"]
    assert main(["eval", str(run / "model.safetensors"), "--data", str(video_tree), "--views", "1x1", "--grid", "2x4x4"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("| 2x4x4"))
    assert f"| {top1:.2f} |" in row, (row, top1)
    # Without the file's clip_resize, eval would resize the short side to 32 instead of 37 and see other pixels.
    from lookupvit.models.serialization import read_metadata

    assert read_metadata(run / "model.safetensors")["clip_resize"] == "37" and read_metadata(run / "model.safetensors")["frame_stride"] == "2"


def test_video_normalization_does_not_depend_on_the_global_rng(tmp_path, video_tree):
    config = video_config(video_tree, tmp_path)
    torch.manual_seed(1)
    first = open_run_data(config).normalization
    torch.manual_seed(2)
    before = torch.get_rng_state()
    second = open_run_data(config).normalization
    # The sampled clips are seeded per pick, and the caller's random stream is left where it was.
    assert first == second and torch.equal(torch.get_rng_state(), before)


def test_a_video_subset_trains_and_eval_reads_video_shards(tmp_path, video_tree, capsys):
    from lookupvit.cli import main
    from lookupvit.data.shards import write_shards

    config = video_config(video_tree, tmp_path / "run", train_subset=4, epochs=1)
    data = open_run_data(config)
    assert len(data.train) == 4 and data.image_shape == (1, 4, 32, 32)
    run = train(config, quiet=True)
    shards = tmp_path / "shards"
    write_shards(video_tree, shards, images_per_shard=2, progress=False)
    tables = []
    for data_root in (video_tree, shards):  # the same validation videos, from the tree and from its shards
        assert main(["eval", str(run / "model.safetensors"), "--data", str(data_root), "--views", "2x1", "--grid", "2x4x4"]) == 0
        tables.append([line for line in capsys.readouterr().out.splitlines() if line.startswith("| 2x4x4")])
    assert len(tables[0]) == 1 and tables[0] == tables[1], tables
