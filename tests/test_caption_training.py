"""Captioning runs (training/captioning.py): a frozen encoder, tokens computed once, exact resume, the captioner file, the CLI."""

import json

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

import lookupvit
from lookupvit.cli import main
from lookupvit.data.captions import layout_caption_paths, read_coco_captions, write_layout_captions
from lookupvit.models.captioner import CaptionDecoder, FrozenEncoder, caption_decoder_config
from lookupvit.models.serialization import save_model
from lookupvit.training.captioning import (
    CAPTIONER_FILE,
    CaptionTrainConfig,
    caption_images,
    decoder_flops,
    evaluate_captioner,
    load_captioner,
    train_captioner,
)

CANVAS = 56  # a patch-4 encoder sees a 14x14 lookup grid
NORMALIZATION = json.dumps([[0.2], [0.3]])


@pytest.fixture(scope="module")
def layout(tmp_path_factory):
    root = tmp_path_factory.mktemp("layout")
    write_layout_captions(root, train_images=48, val_images=16, seed=0, canvas_size=CANVAS, progress=False)
    return root


def write_encoder(path, model_name: str, seed: int = 0):
    """A randomly initialised 1-channel classifier saved as training saves it: with normalisation and class names."""
    torch.manual_seed(seed)
    model = lookupvit.create_model(model_name, num_classes=10, img_size=28, in_chans=1, compressed_grid=(3, 3)) if model_name.startswith("lookupvit") else lookupvit.create_model(model_name, num_classes=10, img_size=28, in_chans=1)
    save_model(model, path, extra={"normalization": NORMALIZATION, "classes": json.dumps([str(index) for index in range(10)])})
    return path


@pytest.fixture(scope="module")
def encoder_file(tmp_path_factory):
    return write_encoder(tmp_path_factory.mktemp("encoder") / "lookupvit.safetensors", "lookupvit_nano4")


def run_config(layout, encoder_file, out, **overrides) -> CaptionTrainConfig:
    values = {"encoder": str(encoder_file), "data": str(layout), "grid": 3, "image_size": CANVAS, "epochs": 2, "batch_size": 16,
              "lr": 2e-3, "warmup_epochs": 0.3, "out": str(out), "device": "cpu", "threads": 1}  # fmt: skip
    return CaptionTrainConfig(**{**values, **overrides})


@pytest.fixture(scope="module")
def trained(layout, encoder_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    return train_captioner(run_config(layout, encoder_file, out))


def count_encoder_calls(monkeypatch) -> list:
    calls = []
    original = FrozenEncoder.forward

    def counted(self, images, grid=None):
        calls.append(len(images))
        return original(self, images, grid)

    monkeypatch.setattr(FrozenEncoder, "forward", counted)
    return calls


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------


def test_encoder_is_frozen_and_outside_the_optimizer(layout, encoder_file, tmp_path, monkeypatch):
    from lookupvit.training.captioning import CaptionRun

    run = CaptionRun(run_config(layout, encoder_file, tmp_path, epochs=1))
    encoder_before = {name: value.clone() for name, value in run.captioner.encoder.state_dict().items()}
    run.run(None)
    optimized = {id(param) for group in run.optimizer.param_groups for param in group["params"]}
    assert optimized == {id(param) for param in run.captioner.decoder.parameters()}
    assert all(not param.requires_grad and param.grad is None for param in run.captioner.encoder.parameters())
    assert all(torch.equal(value, encoder_before[name]) for name, value in run.captioner.encoder.state_dict().items())
    assert not run.captioner.encoder.model.training


def test_tokens_are_computed_once_and_reused_on_resume(layout, encoder_file, tmp_path, monkeypatch):
    calls = count_encoder_calls(monkeypatch)
    config = run_config(layout, encoder_file, tmp_path, epochs=3)
    train_captioner(config, stop_after_epochs=2)
    assert sum(calls) == 48 + 16  # every training and validation image once, over two epochs
    train_captioner(config)
    assert sum(calls) == 48 + 16  # the resumed run reads out/tokens.pt


def test_killed_run_resumes_to_the_uninterrupted_weights(layout, encoder_file, tmp_path):
    whole = load_captioner(train_captioner(run_config(layout, encoder_file, tmp_path / "whole", epochs=3)))
    config = run_config(layout, encoder_file, tmp_path / "killed", epochs=3)
    path = train_captioner(config, stop_after_epochs=1)
    assert not path.exists()  # no captioner file before the last epoch
    resumed = load_captioner(train_captioner(config))
    for (name, a), b in zip(whole.captioner.decoder.state_dict().items(), resumed.captioner.decoder.state_dict().values()):
        assert torch.equal(a, b), name


def test_resume_refuses_another_config(layout, encoder_file, tmp_path):
    train_captioner(run_config(layout, encoder_file, tmp_path, epochs=2), stop_after_epochs=1)
    with pytest.raises(ValueError, match="another config.*lr"):
        train_captioner(run_config(layout, encoder_file, tmp_path, epochs=2, lr=1e-2))
    other_encoder = write_encoder(tmp_path / "other.safetensors", "lookupvit_nano4", seed=1)
    with pytest.raises(ValueError, match="another encoder"):
        train_captioner(run_config(layout, other_encoder, tmp_path, epochs=2))


def test_resume_refuses_other_captions(layout, encoder_file, tmp_path):
    train_captioner(run_config(layout, encoder_file, tmp_path / "run", epochs=2), stop_after_epochs=1)
    other = tmp_path / "other-layout"
    write_layout_captions(other, train_images=48, val_images=16, seed=1, canvas_size=CANVAS, progress=False)
    with pytest.raises(ValueError, match="other images or captions"):
        train_captioner(run_config(other, encoder_file, tmp_path / "run", epochs=2))


def test_captioner_file_reloads_alone_and_captions_the_same(trained, layout):
    first, second = load_captioner(trained), load_captioner(trained)
    assert first.grid == (3, 3) and first.image_size == (CANVAS, CANVAS)
    paths = [image.path for image in read_coco_captions(*layout_caption_paths(layout, "val"))][:4]
    assert caption_images(first, paths) == caption_images(second, paths)
    assert caption_images(first, paths, beam_size=3) == caption_images(second, paths, beam_size=3)


def test_trained_decoder_beats_an_untrained_one_on_training_images(layout, encoder_file, tmp_path):
    config = run_config(layout, encoder_file, tmp_path, epochs=12, lr=3e-3)
    trained = load_captioner(train_captioner(config))
    untrained = load_captioner(tmp_path / CAPTIONER_FILE)
    torch.manual_seed(0)
    untrained.captioner.decoder = CaptionDecoder(untrained.captioner.decoder.config).eval()
    train_set = read_coco_captions(*layout_caption_paths(layout, "train"))
    learned = evaluate_captioner(trained, train_set, metric_tokenizer="simple")["scores"]["cider"]
    baseline = evaluate_captioner(untrained, train_set, metric_tokenizer="simple")["scores"]["cider"]
    assert learned > baseline + 0.2, (learned, baseline)


def test_evaluation_reports_scores_examples_and_flops(trained, layout):
    captioner = load_captioner(trained)
    val = read_coco_captions(*layout_caption_paths(layout, "val"))
    result = evaluate_captioner(captioner, val, grid=5, num_examples=3, metric_tokenizer="simple")
    assert result["grid"] == [5, 5] and result["num_images"] == 16 and len(result["examples"]) == 3
    assert {"cider", "bleu4", "rouge_l", "tokenizer"} <= set(result["scores"]) and result["scores"]["tokenizer"] == "simple"
    encoder = lookupvit.models.flops.analytic_flops(captioner.captioner.encoder.model.config, (CANVAS, CANVAS), (5, 5)) / 1e9
    assert result["gflops"]["encoder"] == pytest.approx(encoder)
    assert result["gflops"]["total"] == pytest.approx(encoder + result["gflops"]["decoder"])
    assert result["gflops"]["decoder"] > 0
    smaller = evaluate_captioner(captioner, val, grid=3, metric_tokenizer="simple")
    assert smaller["gflops"]["encoder"] < result["gflops"]["encoder"]


@pytest.mark.parametrize("encoder_dim", [64, 96])
def test_decoder_flops_match_torch_flop_counter(encoder_dim):
    config = caption_decoder_config("nano", vocab_size=37, encoder_dim=encoder_dim, max_length=16)
    decoder = CaptionDecoder(config).eval()
    tokens, memory = torch.randint(0, 37, (1, 11)), torch.randn(1, 9, encoder_dim)
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:  # it counts no fused CPU attention
        decoder(tokens, memory)
    assert decoder_flops(config, 11, 9) == counter.get_total_flops()


def test_vit_encoder_reads_all_patch_tokens(layout, tmp_path):
    encoder = write_encoder(tmp_path / "vit.safetensors", "vit_nano4")
    captioner = load_captioner(train_captioner(run_config(layout, encoder, tmp_path / "run", grid=None, epochs=1)))
    assert captioner.grid is None
    memory = captioner.captioner.encoder(torch.zeros(1, 1, CANVAS, CANVAS))
    assert memory.shape[1] == (CANVAS // 4) ** 2


# --------------------------------------------------------------------------------------------
# Bad inputs
# --------------------------------------------------------------------------------------------


def test_config_errors_are_clear():
    with pytest.raises(ValueError, match="caption data missing"):
        CaptionTrainConfig(encoder="e.safetensors")
    with pytest.raises(ValueError, match="not both"):
        CaptionTrainConfig(encoder="e.safetensors", data="root", train_captions="c.json")
    with pytest.raises(ValueError, match=r"batch_size must be a whole number >= 1, got 0 \(int\)"):
        CaptionTrainConfig(encoder="e.safetensors", data="root", batch_size=0)
    with pytest.raises(ValueError, match=r"min_lr_ratio must be a probability in \[0, 1\], got 2"):
        CaptionTrainConfig(encoder="e.safetensors", data="root", min_lr_ratio=2)
    with pytest.raises(ValueError, match=r"lr must be a number > 0, got nan"):
        CaptionTrainConfig(encoder="e.safetensors", data="root", lr=float("nan"))
    with pytest.raises(ValueError, match="decoder must be one of"):
        CaptionTrainConfig(encoder="e.safetensors", data="root", decoder="huge")


def test_grid_larger_than_the_lookup_grid_is_refused(layout, encoder_file, tmp_path):
    with pytest.raises(ValueError, match="larger than the encoder's lookup grid"):
        train_captioner(run_config(layout, encoder_file, tmp_path, grid=15))


def test_a_model_file_that_is_not_a_classifier_is_refused(layout, trained, tmp_path):
    with pytest.raises(ValueError, match="captioner file"):
        train_captioner(run_config(layout, trained, tmp_path))
    bare = tmp_path / "bare.safetensors"
    save_model(lookupvit.create_model("lookupvit_nano4"), bare)
    with pytest.raises(ValueError, match="no normalisation/class metadata"):
        train_captioner(run_config(layout, bare, tmp_path))


# --------------------------------------------------------------------------------------------
# The command line
# --------------------------------------------------------------------------------------------


def test_cli_predict_and_eval(trained, layout, capsys):
    images = [str(image.path) for image in read_coco_captions(*layout_caption_paths(layout, "val"))][:2]
    assert main(["caption", "predict", str(trained), *images, "--grid", "3", "5"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 4 and all(line.startswith(("grid 3x3", "grid 5x5")) for line in lines)
    assert main(["caption", "eval", str(trained), "--data", str(layout), "--tokenizer", "simple"]) == 0
    out = capsys.readouterr().out
    assert "CIDEr" in out and "BLEU-4" in out and "ROUGE-L" in out and "GFLOPs" in out and "tokenizer: simple" in out


def test_cli_train(layout, encoder_file, tmp_path, capsys):
    arguments = [f"encoder={encoder_file}", f"data={layout}", "image_size=56", "grid=3", "epochs=1", "batch_size=16", f"out={tmp_path}", "device=cpu", "threads=1"]
    assert main(["caption", "train", *arguments, "--no-eval"]) == 0
    assert (tmp_path / CAPTIONER_FILE).is_file()


def test_cli_bad_inputs_give_one_line_errors(trained, layout, encoder_file, tmp_path, capsys):
    empty = tmp_path / "empty.json"
    empty.write_text("")
    cases = [
        (["caption", "predict", str(trained), str(tmp_path / "missing.png")], "no image at"),
        (["caption", "eval", str(trained), "--data", str(empty), "--images", str(tmp_path)], "is empty"),
        (["caption", "predict", str(trained), str(tmp_path / "missing.png"), "--grid", "20"], "larger than the encoder's lookup grid"),
        (["caption", "predict", str(encoder_file), str(tmp_path / "missing.png")], "not a lookupvit captioner file"),
        (["caption", "train", f"encoder={trained}", f"data={layout}", f"out={tmp_path / 'run'}"], "captioner file"),
        (["caption", "train", "epochs=2"], "encoder must name"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        error = capsys.readouterr().err.strip()
        assert message in error and len(error.splitlines()) == 1, (argv, error)


# --------------------------------------------------------------------------------------------
# The Table 3 suite
# --------------------------------------------------------------------------------------------


def test_quick_captioning_suite_writes_its_report_and_skips_what_is_done(tmp_path, capsys):
    from lookupvit.experiments.captioning import SETTINGS, run_captioning

    report = run_captioning("quick", tmp_path, "cpu", threads=1)
    text = report.read_text()
    assert all(f"| {setting.name} |" in text for setting in SETTINGS)
    assert (tmp_path / "cider_vs_gflops.png").is_file() and (tmp_path / "examples.png").is_file()
    vit = json.loads((tmp_path / "results" / "vit.json").read_text())
    assert vit["memory_tokens"] == 196 and vit["grid"] is None
    capsys.readouterr()
    run_captioning("quick", tmp_path, "cpu", threads=1)
    assert capsys.readouterr().out.count("done earlier, skipped") == 2 + len(SETTINGS)
    with pytest.raises(ValueError, match="another budget"):
        run_captioning("full", tmp_path, "cpu", threads=1)


def test_captions_longer_than_max_length_are_counted_and_cut(layout, encoder_file, tmp_path):
    longest = max(len(caption.split()) for image in read_coco_captions(*layout_caption_paths(layout, "train")) for caption in image.captions)
    with pytest.warns(UserWarning, match=r"training captions are longer than max_length=6 tokens and are cut short"):
        train_captioner(run_config(layout, encoder_file, tmp_path / "short", epochs=1, max_length=6))
    record = json.loads((tmp_path / "short" / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["truncated_captions"] > 0
    train_captioner(run_config(layout, encoder_file, tmp_path / "whole", epochs=1, max_length=longest + 8))
    assert json.loads((tmp_path / "whole" / "metrics.jsonl").read_text().splitlines()[-1])["truncated_captions"] == 0
