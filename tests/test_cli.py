"""The command line end to end on a small slice of real data: train -> report -> eval -> predict -> attention."""

import json

import pytest

from lookupvit.cli import main
from lookupvit.data import load_fashion_mnist


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("cli") / "run"
    overrides = [
        "model=lookupvit_nano4", "model_args={embed_dim=32, depth=2, num_heads=2, compressed_grid=[3, 3]}",
        "train_subset=256", "test_subset=100", "batch_size=64", "epochs=1", "amp='fp32'",
        "grids=[2, 3, 5]", "eval_grids=[1, 3, 7]", f"out='{run}'",
    ]
    assert main(["train", "--config", "configs/fashion-mnist.toml", "--set", *overrides]) == 0
    return run


def test_train_writes_report_plots_and_model_files(trained_run):
    for name in ("report.md", "accuracy_vs_flops.png", "attention.png", "eval.json", "best.safetensors", "model.safetensors", "metrics.jsonl"):
        assert (trained_run / name).is_file(), name
    report = (trained_run / "report.md").read_text()
    assert "Test top-1 at the default grid 3x3" in report and "| 7x7 |" in report
    rows = json.loads((trained_run / "eval.json").read_text())["rows"]
    assert [row["grid"] for row in rows] == [[1, 1], [3, 3], [7, 7]]
    assert rows[0]["gflops"] < rows[1]["gflops"] < rows[2]["gflops"]
    assert all(0 <= row[head]["top1"] <= row[head]["top5"] <= 1 for row in rows for head in ("compressed", "lookup", "average"))


def test_eval_predict_attention_commands(trained_run, tmp_path, capsys):
    model = str(trained_run / "best.safetensors")
    assert main(["eval", model, "--grid", "2", "4x6", "--limit", "50", "--json", str(tmp_path / "e.json"), "--plot", str(tmp_path / "e.png")]) == 0
    assert "| 4x6 |" in capsys.readouterr().out and (tmp_path / "e.png").is_file()

    from PIL import Image

    test = load_fashion_mnist("test")
    image_path = tmp_path / "item.png"
    Image.fromarray(test.images[0, 0].numpy()).save(image_path)
    assert main(["predict", str(image_path), "--model", model, "--grid", "5", "--topk", "3"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3 and all("%" in line for line in lines)
    assert main(["attention", str(image_path), "--model", model, "--grid", "2", "5", "--out", str(tmp_path / "a.png")]) == 0
    assert (tmp_path / "a.png").stat().st_size > 1000


def test_cli_errors_are_one_line_not_tracebacks(trained_run, tmp_path, capsys):
    assert main(["predict", str(tmp_path / "missing.png"), "--model", str(tmp_path / "missing.safetensors")]) == 2
    assert "no model file" in capsys.readouterr().err
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG not really")
    assert main(["predict", str(broken), "--model", str(trained_run / "best.safetensors")]) == 2
    assert "cannot read" in capsys.readouterr().err
    assert main(["train", "--set", "epoch=1"]) == 2
    assert "unknown config key" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["flops", "--grid", "0"])
    assert "positive" in capsys.readouterr().err


def test_eval_in_bfloat16_agrees_with_float32(trained_run, tmp_path):
    model = str(trained_run / "best.safetensors")
    top1 = {}
    for dtype in ("fp32", "bf16", "bf16-weights"):
        assert main(["eval", model, "--grid", "2", "5", "--limit", "300", "--dtype", dtype, "--json", str(tmp_path / f"{dtype}.json")]) == 0
        top1[dtype] = [row["compressed"]["top1"] for row in json.loads((tmp_path / f"{dtype}.json").read_text())]
    assert min(top1["fp32"]) > 0.15  # above chance (0.1): a briefly trained model, so agreement below means something
    for dtype in ("bf16", "bf16-weights"):
        assert all(abs(a - b) <= 0.02 for a, b in zip(top1[dtype], top1["fp32"])), top1


@pytest.mark.parametrize("option", ["--reps", "--batch", "--grid", "--image-size"])
def test_bench_refuses_a_count_below_one(option, capsys):
    with pytest.raises(SystemExit):
        main(["bench", option, "0"])
    assert f"argument {option}: expected a positive whole number, got 0" in capsys.readouterr().err


def test_bench_prints_every_table(capsys):
    args = ["bench", "--size", "nano4", "--image-size", "28", "--grid", "3", "--batch", "4", "1", "--train-image-size", "28",
            "--memory-image-size", "28", "--reps", "1", "--dtype", "fp32", "bf16", "bf16-weights"]
    assert main(args) in (0, None)
    lines = capsys.readouterr().out.splitlines()
    assert any(line.startswith("GEMM peak (float32") for line in lines) and any(line.startswith("GEMM peak (bfloat16") for line in lines)

    def rows(prefix: str, dtype: str) -> list[str]:
        return [line for line in lines if line.startswith(prefix) and line.split("|")[3].strip() == dtype]

    for dtype in ("float32", "bfloat16", "bfloat16 weights"):
        assert len(rows("| inference | 28 |", dtype)) == 4  # 2 batches x (ViT + one grid)
    # training and memory rows run under autocast only: a model cast to bf16 is not how one trains
    for prefix in ("| train step | 28 |", "| train step, grad ckpt | 28 |"):
        assert [len(rows(prefix, dtype)) for dtype in ("float32", "bfloat16", "bfloat16 weights")] == [2, 2, 0]
    ratios = [line.split("|") for line in lines if line.startswith("| inference | 28 |") and line.count("|") == 8]
    # the ratio table: every LookupViT row over its float32 twin, for each batch and lower precision
    assert sorted((cells[3].strip(), cells[4].strip(), cells[5].strip()) for cells in ratios) == [
        ("1", "3x3", "bfloat16"), ("1", "3x3", "bfloat16 weights"), ("4", "3x3", "bfloat16"), ("4", "3x3", "bfloat16 weights")]
    assert all(float(cells[6].strip().rstrip("x")) > 0 and float(cells[7].strip().rstrip("x")) > 0 for cells in ratios)
    memory_rows = [line for line in lines if line.startswith(("| 28 | float", "| 28 | bfloat"))]
    assert len(memory_rows) == 8  # 2 autocast dtypes x 2 settings x 2 models
    # tensors' peak is mapped fresh, so it is never 0; the process's may be, at 28 px, when freed heap memory is reused
    assert all(float(line.split("|")[8]) > 0 and float(line.split("|")[6]) >= 0 for line in memory_rows)
    assert {line.split("|")[3].strip() for line in memory_rows} == {"no", "yes"}


def test_export_command_writes_a_checked_onnx_file(trained_run, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    assert main(["export", str(trained_run / "best.safetensors"), "--grid", "2", "--out", str(tmp_path / "m.onnx")]) in (0, None)
    assert "onnxruntime matches PyTorch" in capsys.readouterr().out and (tmp_path / "m.onnx").stat().st_size > 100_000



@pytest.mark.parametrize(
    "argv,option",
    [
        (["eval", "m.safetensors", "--batch-size", "0"], "--batch-size"),
        (["eval", "m.safetensors", "--limit", "0"], "--limit"),
        (["predict", "x.png", "--model", "m.safetensors", "--topk", "0"], "--topk"),
    ],
)
def test_count_options_refuse_zero(argv, option, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert f"argument {option}: expected a positive whole number, got 0" in capsys.readouterr().err


@pytest.mark.parametrize("command", [["train"], ["eval", "m.safetensors"], ["report", "run"], ["reproduce"], ["bench"]])
def test_threads_option_refuses_a_negative_count(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--threads", "-1"])
    assert exit_info.value.code == 2
    assert "argument --threads: expected a whole number >= 0, got -1" in capsys.readouterr().err


@pytest.mark.parametrize(
    "command,module",
    [(["eval", "m.safetensors"], "lookupvit.training.report.load_trained"), (["report", "run"], "lookupvit.training.report.write_report"), (["reproduce"], "lookupvit.experiments.reproduce.reproduce")],
)
def test_eval_report_and_reproduce_set_threads_first(command, module, monkeypatch, capsys):
    calls = []

    def stop(*args, **kwargs):
        calls.append(("work", kwargs.get("threads")))
        raise RuntimeError("stopped here")

    monkeypatch.setattr("lookupvit.cli.configure_threads", lambda threads: calls.append(("threads", threads)))
    monkeypatch.setattr(module, stop)
    assert main([*command, "--threads", "1"]) == 2
    assert calls[0] == ("threads", 1) and calls[1][0] == "work"
    if command == ["reproduce"]:
        assert calls[1] == ("work", 1)  # and on to every training run's config
    assert main(command) == 2
    assert calls[2] == ("threads", 0)  # 0: automatic


def test_train_threads_option_overrides_the_config(monkeypatch):
    configs = []

    def record(config):
        configs.append(config)
        raise RuntimeError("stopped here")

    monkeypatch.setattr("lookupvit.training.engine.train", record)
    assert main(["train", "--no-report", "--set", "threads=2"]) == 2
    assert main(["train", "--no-report", "--threads", "1", "--set", "threads=2"]) == 2
    assert [config.threads for config in configs] == [2, 1]


@pytest.mark.parametrize(
    "setting,message",
    [
        ("epochs=abc", "epochs must be a whole number >= 1, got 'abc' (str)"),
        ("grids=[9]", "grids entry 9 is larger than the 7x7 lookup grid of lookupvit_nano4"),
        ("batch_size=-8", "batch_size must be a whole number >= 1, got -8"),
    ],
)
def test_train_refuses_bad_settings_before_reading_data(setting, message, monkeypatch, capsys):
    def no_training(config):
        raise AssertionError("train() was called")

    monkeypatch.setattr("lookupvit.training.engine.train", no_training)
    assert main(["train", "--set", "model=lookupvit_nano4", setting]) == 2
    assert message in capsys.readouterr().err


def test_eval_refuses_data_whose_class_names_differ_from_the_model_files(trained_run, tmp_path, capsys):
    from PIL import Image

    test = load_fashion_mnist("test")
    for label, name in enumerate(["cat", "dog"]):
        (tmp_path / name).mkdir()
        for n in range(3):
            Image.fromarray(test.images[label * 3 + n, 0].numpy()).save(tmp_path / name / f"{n}.png")
    assert main(["eval", str(trained_run / "best.safetensors"), "--data", str(tmp_path)]) == 2
    error = capsys.readouterr().err
    assert "has classes ['cat', 'dog'] but the model file" in error and "'T-shirt/top'" in error and "labels would not mean the same class" in error


def test_predict_chooses_the_grid_for_a_budget(trained_run, tmp_path, capsys):
    from PIL import Image

    image_path = tmp_path / "item.png"
    Image.fromarray(load_fashion_mnist("test").images[1, 0].numpy()).save(image_path)
    from lookupvit import analytic_flops, load_model

    model = str(trained_run / "best.safetensors")
    three_by_three = analytic_flops(load_model(model).config, grid=3) / 1e9
    assert main(["predict", str(image_path), "--model", model, "--budget-gflops", str(three_by_three * 1.001)]) == 0
    assert f"grid 3x3 ({three_by_three:.3g} GFLOPs per image) fits the budget" in capsys.readouterr().out  # 4x4 costs more
    assert main(["predict", str(image_path), "--model", model, "--budget-ms", "10000"]) == 0
    out = capsys.readouterr().out
    assert "measured: 1x1" in out and "grid 7x7" in out
    with pytest.raises(SystemExit):
        main(["predict", str(image_path), "--model", model, "--grid", "3", "--budget-ms", "5"])
    assert "not allowed with argument" in capsys.readouterr().err


def test_one_number_is_a_grid_in_every_dimension_and_a_short_grid_is_refused(capsys):
    """"3" is 3x3 for an image model and 3x3x3 for a video model; "3x3" names only two of a video grid's three sizes."""
    assert main(["flops", "--model", "lookupvit_nano4", "lookupvivit_nano4", "--grid", "3", "2x2x2"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| lookupvi")]
    shown = {(row.split("|")[1].strip(), row.split("|")[3].strip()) for row in rows}
    assert {("lookupvit_nano4", "3x3"), ("lookupvivit_nano4", "3x3x3"), ("lookupvivit_nano4", "2x2x2")} <= shown
    assert any("has 3 sizes, but this model's token grid has 2 (h, w)" in row for row in rows)  # 2x2x2 for the image model
    assert main(["flops", "--model", "lookupvivit_nano4", "--grid", "3x3"]) == 0
    assert "has 2 sizes, but this model's token grid has 3 (t, h, w)" in capsys.readouterr().out
