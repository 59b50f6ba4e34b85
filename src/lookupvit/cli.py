"""The `lookupvit` command line: `lookupvit flops`, `lookupvit bench`, ..."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

import torch

from . import benchmark
from .evaluation.accuracy import grid_label
from .layers import pack_for_inference
from .models import LookupViT, LookupViTConfig
from .models.flops import TABLE_4_TOLERANCE, analytic_flops, measured_flops, table_4_rows
from .models.registry import list_models, model_config
from .runtime import configure_threads, device_name, parse_precision, pick_device

# Paper Table 1: GFLOPs (2 x MACs) at 224 px.
TABLE_1 = {
    "B/16": ("b16", {"ViT": 35.1, 3: 12.9, 5: 16.5, 7: 21.9, 10: 33.6}),
    "L/16": ("l16", {"ViT": 123.5, 3: 46.2, 5: 58.8, 7: 77.7, 10: 118.5}),
}


def parse_grid(text: str) -> tuple[int, ...]:
    """"5" -> (5,): one size for every dimension of the model's grid; "4x6" -> (4, 6); a video model's (t, h, w): "8x9x9"."""
    try:
        parts = [int(part) for part in text.lower().split("x")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"grid must look like 5, 4x6 or (video) 8x9x9, got {text!r}") from None
    if len(parts) > 3 or min(parts) < 1:
        raise argparse.ArgumentTypeError(f"grid must look like 5, 4x6 or (video) 8x9x9 with positive sizes, got {text!r}")
    return tuple(parts)


def model_grid(grid: tuple[int, ...] | None, dims: int) -> tuple[int, ...] | None:
    """A typed grid in a model's `dims` dimensions (2: h, w; 3: a video model's t, h, w); one number is that size in all of them."""
    if grid is None or len(grid) == dims:
        return grid
    if len(grid) == 1:
        return grid * dims
    axes = "t, h, w" if dims == 3 else "h, w"
    raise ValueError(
        f"grid {'x'.join(map(str, grid))} has {len(grid)} sizes, but this model's token grid has {dims} ({axes}); "
        f"give {dims} sizes such as {'x'.join(['4'] * dims)}, or one number for all of them"
    )


def grid_for(model, grid: tuple[int, ...] | None) -> tuple[int, ...] | None:
    """A typed grid in `model`'s dimensions; a model without a compressed grid gets it as typed, for its command to refuse."""
    return model_grid(grid, len(model.config.patch_grid)) if isinstance(model, LookupViT) else grid


def number_argument(convert: Callable[[str], float], is_allowed: Callable[[float], bool], allowed: str) -> Callable[[str], float]:
    """An argparse type: `convert` the text, then refuse values outside `allowed` (named in the message)."""

    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {allowed}, got {text!r}") from None
        if not is_allowed(value):
            raise argparse.ArgumentTypeError(f"expected {allowed}, got {value}")
        return value

    return parse


positive_int = number_argument(int, lambda value: value >= 1, "a positive whole number")
non_negative_int = number_argument(int, lambda value: value >= 0, "a whole number >= 0")
positive_number = number_argument(float, lambda value: 0 < value < float("inf"), "a positive number")
crop_fraction = number_argument(float, lambda value: 0 < value <= 1, "a number in (0, 1]")


THREADS_HELP = "torch CPU threads (default 0: automatic, the cores this process may use shared among torchrun's local processes)"


def parse_image_size(text: str) -> tuple[int, int]:
    try:
        size = model_grid(parse_grid(text), 2)
    except (argparse.ArgumentTypeError, ValueError):
        size = ()
    if len(size) != 2:
        raise argparse.ArgumentTypeError(f"image size must look like 224 or 224x320, got {text!r}")
    return size


def model_name(text: str) -> str:
    if text not in list_models():
        model_config(text)  # raises with close matches
    return text


def cmd_flops(args: argparse.Namespace) -> None:
    if args.video:
        # Table 4 follows ViViT: its "GFLOPs/view" are multiply-accumulates, so compare in G MACs.
        print("Paper Table 4: B/16 video models on one 32x224x224 view, tubelets 2x16x16 (16x14x14 = 3136 lookup tokens)")
        print("The paper's \"GFLOPs/view\" are multiply-accumulates (G MACs); FLOPs = 2 x MACs would be twice as large.\n")
        print("| model | grid (t, h, w) | paper (G MACs) | analytic G MACs | analytic GFLOPs | measured GFLOPs | MACs vs paper |")
        print("|---|---|---|---|---|---|---|")
        rows = table_4_rows()
        for row in rows:
            grid = "-" if row.grid is None else grid_label(row.grid)
            print(
                f"| {row.label} | {grid} | {row.paper_gmacs:.1f} | {row.analytic_gmacs:.1f} | {row.analytic_flops / 1e9:.1f} "
                f"| {row.measured_flops / 1e9:.1f} | {100 * row.relative_difference:+.1f}% |"
            )
        worst = max(abs(row.relative_difference) for row in rows)
        verdict = "all within" if worst <= TABLE_4_TOLERANCE else "NOT all within"
        print(f"\nUnit: multiply-accumulates match the paper, {verdict} {100 * TABLE_4_TOLERANCE:.0f} % (largest difference {100 * worst:.1f} %).")
        return
    print("Paper Table 1 at 224 px, GFLOPs per image (FLOPs = 2 x multiply-accumulates)\n")
    print("| model | column | paper | analytic | measured | analytic vs paper |")
    print("|---|---|---|---|---|---|")
    for label, (size, columns) in TABLE_1.items():
        for column, paper in columns.items():
            arch, grid = ("vit", None) if column == "ViT" else ("lookupvit", column)
            config = model_config(f"{arch}_{size}")
            analytic = analytic_flops(config, grid=grid) / 1e9
            measured = measured_flops(config, grid=grid) / 1e9
            name = f"ViT-{label}" if grid is None else f"LookupViT-{label}"
            column_text = "-" if grid is None else f"{grid}x{grid}"
            print(f"| {name} | {column_text} | {paper:.1f} | {analytic:.2f} | {measured:.2f} | {100 * (analytic / paper - 1):+.1f}% |")
    if args.model:
        print("\nRequested models\n")
        print("| model | input | grid | analytic GFLOPs | measured GFLOPs |")
        print("|---|---|---|---|---|")
        for name in args.model:
            config = model_config(name)
            sizes = args.image_size or [config.img_size]
            typed_grids = (args.grid or [None]) if isinstance(config, LookupViTConfig) else [None]
            frames = (args.frames or config.num_frames) if hasattr(config, "num_frames") else None  # images have no frames
            for size in sizes:
                shown_input = f"{size[0]}x{size[1]}" if frames is None else f"{frames} x {size[0]}x{size[1]}"
                for typed in typed_grids:
                    shown_grid = grid_label(typed or config.compressed_grid) if isinstance(config, LookupViTConfig) else "-"
                    try:
                        grid = model_grid(typed, len(config.patch_grid))  # a 3-D grid does not fit an image model: a row says so
                        shown_grid = grid_label(grid or config.compressed_grid) if isinstance(config, LookupViTConfig) else "-"
                        analytic = analytic_flops(config, image_size=size, grid=grid, num_frames=frames) / 1e9
                        measured = measured_flops(config, image_size=size, grid=grid, num_frames=frames) / 1e9
                    except (TypeError, ValueError) as error:
                        print(f"| {name} | {shown_input} | {shown_grid} | {error} | |")
                        continue
                    print(f"| {name} | {shown_input} | {shown_grid} | {analytic:.2f} | {measured:.2f} |")


def cmd_bench(args: argparse.Namespace) -> None:
    device = pick_device(args.device)
    precisions = [parse_precision(name) for name in args.dtype]
    dtypes = [dtype for dtype, cast_weights in precisions if not cast_weights]  # one trains under autocast, not in a cast model
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"device: {device} ({device_name(device)}), torch {torch.__version__}, threads {torch.get_num_threads()}")
    peaks = {dtype: benchmark.gemm_peak(device, dtype) for dtype, _ in precisions}
    for dtype, peak in peaks.items():
        print(f"GEMM peak ({str(dtype).removeprefix('torch.')}, 2048^3): {peak / 1e9:.0f} GFLOP/s")
    if benchmark.timm_vit(args.size, 224) is None:
        print(f"timm's ViT ({args.size}): not importable here (timm needs torchvision), so no timm row")
    print(f"\nvit_{args.size} vs lookupvit_{args.size}; speedup and FLOPs ratio are against ViT in the same loop\n")
    print(benchmark.TABLE_HEADER)
    rows = []
    for image_size in args.image_size:
        found = benchmark.contenders(args.size, image_size, args.grid, device)
        for dtype, cast_weights in precisions:
            for batch in args.batch:
                for row in benchmark.inference_rows(found, image_size, dtype, batch, args.reps, device, peaks[dtype], cast_weights):
                    rows.append(row)
                    print(benchmark.format_row(row), flush=True)
    checkpointing_settings = [False, True] if args.grad_checkpointing else [False]
    for image_size in args.train_image_size:
        found = benchmark.contenders(args.size, image_size, args.grid, device)
        for checkpointing in checkpointing_settings:
            for dtype in dtypes:
                for row in benchmark.training_rows(found, image_size, dtype, args.batch[0], args.reps, device, peaks[dtype], checkpointing):
                    rows.append(row)
                    print(benchmark.format_row(row), flush=True)
    if len(precisions) > 1:
        base = benchmark.dtype_label(*precisions[0])
        print(f"\nThroughput over {base}, LookupViT (ViT beside it); bfloat16: autocast, bfloat16 weights: model cast\n")
        print("| pass | px | batch | grid | dtype | LookupViT | ViT |")
        print("|---|---|---|---|---|---|---|")
        speed = {(r.mode, r.image_size, r.batch, r.grid, r.dtype): r.images_per_s for r in rows}
        for (mode, image_size, batch, grid, dtype), value in speed.items():
            if dtype != base and grid != "-" and (mode, image_size, batch, grid, base) in speed:
                ratio = value / speed[(mode, image_size, batch, grid, base)]
                vit_ratio = speed[(mode, image_size, batch, "-", dtype)] / speed[(mode, image_size, batch, "-", base)]
                print(f"| {mode} | {image_size} | {batch} | {grid} | {dtype} | {ratio:.2f}x | {vit_ratio:.2f}x |")
    if args.memory_image_size and dtypes:
        print(f"\nPeak memory of one training step (batch {args.batch[0]}, AdamW; each model in a fresh process, twice)\n")
        print("grad ckpt: blocks recomputed in backward (grad checkpointing); vs ViT: against ViT without it")
        print("process: what the process holds at its peak, memory the allocator keeps after a free included (CPU: peak RSS;")
        print("CUDA: reserved); tensors: what the tensors occupy (CPU: peak RSS with freed memory unmapped at once; CUDA: allocated)\n")
        print("| px | dtype | grad ckpt | model | grid | process MiB | vs ViT | tensors MiB | vs ViT |")
        print("|---|---|---|---|---|---|---|---|---|")
    for image_size in args.memory_image_size:
        for dtype in dtypes:
            vit_peaks: dict[bool, int | None] = {}
            for checkpointing in checkpointing_settings:
                for grid in [None, *args.grid]:
                    name = f"{'lookupvit' if grid else 'vit'}_{args.size}"
                    cells = []
                    for tensors_only in (False, True):
                        peak = benchmark.peak_training_memory(name, image_size, grid, args.batch[0], dtype, device, checkpointing, tensors_only)
                        vit_peaks.setdefault(tensors_only, peak)
                        vit_peak = vit_peaks[tensors_only]
                        cells += ["n/a", "n/a"] if peak is None or vit_peak is None else [f"{peak / 2**20:.0f}", f"{peak / vit_peak:.2f}x"]
                    label = f"{grid}x{grid}" if grid else "-"
                    model = "LookupViT" if grid else "ViT"
                    print(f"| {image_size} | {str(dtype).removeprefix('torch.')} | {'yes' if checkpointing else 'no'} | {model} | {label} | {' | '.join(cells)} |", flush=True)


def cmd_export(args: argparse.Namespace) -> None:
    from .export import export_onnx
    from .models.serialization import load_model

    model = load_model(args.model)
    error = export_onnx(model, args.out, grid=grid_for(model, args.grid))
    checked = "onnxruntime not installed, not checked" if error is None else f"onnxruntime matches PyTorch, max relative error {error:.1e}"
    print(f"wrote {args.out} ({checked})")


def cmd_convert(args: argparse.Namespace) -> None:
    from .models.serialization import save_model
    from .models.sources import convert_to, detect_source_kind, read_source

    kind = args.source_format or detect_source_kind(args.src)
    if kind == "transformers-vivit" and args.model is not None:
        raise ValueError("--model names the model an image checkpoint becomes; a transformers ViViT converts as it is")
    if kind == "ours" and args.model is None:
        raise ValueError(f"{args.src} is already a lookupvit model file: pass --model, the variant to convert it into (lookupvit_*, vivit_*, lookupvivit_*)")
    reads_a_new_head = kind in ("timm", "big-vision")
    source, extra = read_source(kind, args.src, args.num_heads, args.num_classes if reads_a_new_head else None, args.normalization)
    overrides = {"img_size": args.image_size} if args.image_size else {}
    if args.num_classes and not reads_a_new_head:
        overrides["num_classes"] = args.num_classes
    model = convert_to(source, args.model, args.rule, args.lookup_mlp, **overrides)
    if "classes" in extra and len(json.loads(extra["classes"])) != model.config.num_classes:  # new heads: the source's class names do not apply
        extra["classes"] = json.dumps([str(index) for index in range(model.config.num_classes)])
    save_model(model, args.out, extra=extra)
    print(f"wrote {args.out}: {type(model).__name__} for {model.config.input_description()}, from {kind} {args.src}")


def cmd_reproduce(args: argparse.Namespace) -> None:
    from .experiments.reproduce import reproduce

    configure_threads(args.threads)
    print(f"report: {reproduce(args.budget, args.out, args.device, threads=args.threads, report_only=args.report_only, beside=args.beside)}")


def cmd_motion(args: argparse.Namespace) -> None:
    from .experiments.motion import run_motion

    configure_threads(args.threads)
    print(f"report: {run_motion(args.budget, args.out, args.device, threads=args.threads, seed=args.seed, download=args.download)}")


def cmd_warmstart(args: argparse.Namespace) -> None:
    from .experiments.warmstart import run_warmstart

    configure_threads(args.threads)
    print(f"report: {run_warmstart(args.budget, args.out, args.device, threads=args.threads)}")


def cmd_train(args: argparse.Namespace) -> None:
    from .training.config import load_config
    from .training.engine import train
    from .training.report import write_report

    config = load_config(args.config, args.set)
    if args.threads is not None:  # an execution setting: changing it does not make a resumed run another run
        config = dataclasses.replace(config, threads=args.threads)
    run = train(config)
    if args.report and int(os.environ.get("RANK", "0")) == 0:
        print(f"report: {write_report(run, pick_device(config.device))}")


def cmd_report(args: argparse.Namespace) -> None:
    from .training.report import write_report

    configure_threads(args.threads)
    print(f"report: {write_report(args.run, pick_device(args.device))}")


def cmd_eval(args: argparse.Namespace) -> None:
    from .evaluation.accuracy import evaluate, format_table
    from .evaluation.visualize import plot_accuracy_vs_flops
    from .training.report import load_trained

    configure_threads(args.threads)
    device = pick_device(args.device)
    model, normalization, classes = load_trained(args.model, device)
    dtype, cast_weights = parse_precision(args.dtype)
    if cast_weights:
        model.to(dtype)
    pack_for_inference(model)
    batches = evaluation_batches(args, model, normalization, classes)
    grids = [grid_for(model, grid) for grid in args.grid or [None]]
    rows = evaluate(model, batches, grids, device, amp=dtype == torch.bfloat16 and not cast_weights)
    print(format_table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    if args.plot:
        plot_accuracy_vs_flops(rows, args.plot, f"{Path(args.model).name} on {args.data}")


def evaluation_batches(args: argparse.Namespace, model, normalization, classes: list[str]):
    """`--data`: Fashion-MNIST's test split, the val split of an ImageNet-style tree or of shards (streamed,
    resized and centre-cropped), or class folders; for a video model, the val split of a video tree."""
    from .data import check_class_names, load_fashion_mnist, load_image_folder
    from .data.loader import EvalBatches, dataset_batches
    from .data.sources import ImageTreeSource, SubsetSource
    from .data.transforms import eval_transform
    from .models.video import VideoInput

    if isinstance(model, VideoInput):
        return video_evaluation_batches(args, model, normalization, classes)
    for option, value in (("--views", args.views), ("--frame-stride", args.frame_stride)):
        if value is not None:
            raise ValueError(f"{option} is for video models; {args.model} is a {type(model).__name__}, which takes images: leave {option} out")
    root = Path(args.data)
    if args.data != "fashion-mnist" and ((root / "val").is_dir() or any(root.glob("val-*.tar"))):
        if (root / "val").is_dir():
            source, where = ImageTreeSource(root, "val", model.config.in_chans), f"{root}/val"
        else:
            from .data.shards import open_shards

            source, where = open_shards(root)[1], f"the val shards in {root}"
        check_class_names(classes, source.classes, f"the model file {args.model}", where)
        if args.limit:
            source = SubsetSource(source, args.limit, seed=0)
        transform = eval_transform(model.config.img_size[0], normalization.mean, normalization.std, args.crop_pct or IMAGE_CROP_PCT)
        return EvalBatches(source, transform, args.batch_size or IMAGE_BATCH, args.workers)
    if args.data == "fashion-mnist":
        dataset = load_fashion_mnist("test", args.data_root)
    else:
        dataset = load_image_folder(args.data, tuple(model.config.img_size), model.config.in_chans)
    check_class_names(classes, dataset.classes, f"the model file {args.model}", f"the data {args.data}")
    return dataset_batches(dataset.subset(args.limit), normalization, args.batch_size or IMAGE_BATCH)


IMAGE_CROP_PCT = 0.875  # `eval --crop-pct` for images: the short side to size / 0.875, then the centre crop
IMAGE_BATCH, VIDEO_BATCH = 500, 8  # `eval --batch-size`: a video is views x frames images, so far fewer per forward pass


def parse_views(text: str) -> tuple[int, int]:
    """"4x3" -> (4, 3): temporal clips x spatial crops per video, ViViT's 12 views."""
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(part.strip().isdigit() for part in parts):
        raise argparse.ArgumentTypeError(f"views must look like TxS, temporal clips x spatial crops, e.g. 4x3 (ViViT) or 1x1, got {text!r}")
    temporal, spatial = int(parts[0]), int(parts[1])
    if temporal < 1:
        raise argparse.ArgumentTypeError(f"the temporal views in {text!r} must be at least 1")
    if spatial not in (1, 3):
        raise argparse.ArgumentTypeError(f"the spatial views in {text!r} must be 1 (centre crop) or 3 (start, centre, end of the long side)")
    return temporal, spatial


def video_evaluation_batches(args: argparse.Namespace, model, normalization, classes: list[str]):
    """`--data ROOT` for a video model: ROOT/val/<class>/<video> or video shards ROOT/val-*.tar, every video as
    `--views` T x S clips of the model's frames, `--frame-stride` apart (default: the model file's `frame_stride`,
    else 1), logits averaged."""
    from .data import check_class_names
    from .data.loader import EvalBatches
    from .data.shards import open_video_shards
    from .data.sources import SubsetSource
    from .data.video import MultiViewClipTransform, VideoFolderSource
    from .models.serialization import read_metadata
    from .training.data import holds_shards

    root, config = Path(args.data), model.config
    if not (root / "val").is_dir() and not holds_shards(root):
        raise FileNotFoundError(
            f"{args.model} is a video model ({type(model).__name__}); --data must be a video tree with {root}/val/<class>/<video> "
            "(e.g. one written by lookupvit.data.motion.write_motion_videos) or a folder of video shards (lookupvit shards)"
        )
    temporal, spatial = args.views or (1, 1)
    metadata = read_metadata(args.model)
    stride = args.frame_stride or int(metadata.get("frame_stride", 1))
    if holds_shards(root):
        source = open_video_shards(root, config.num_frames, stride, config.in_chans, temporal_views=temporal)[1]
    else:
        source = VideoFolderSource(root, "val", config.num_frames, stride, config.in_chans, training=False, temporal_views=temporal)
    check_class_names(classes, source.classes, f"the model file {args.model}", f"{root}/val")
    if args.limit:
        source = SubsetSource(source, args.limit, seed=0)
    size = config.img_size[0]
    # The short side goes where training put it (the file's clip_resize); without it, to the crop size (clip_transform's default).
    resize = round(size / args.crop_pct) if args.crop_pct else int(metadata.get("clip_resize", size))
    transform = MultiViewClipTransform(size, normalization.mean, normalization.std, spatial, resize)
    return EvalBatches(source, transform, args.batch_size or VIDEO_BATCH, args.workers)


def _load_image(path: str, model) -> torch.Tensor:
    """An image file as the uint8 (C, H, W) tensor the model takes: its channel count, its build size."""
    from .data import read_image

    return read_image(path, model.config.img_size, model.config.in_chans)


def cmd_predict(args: argparse.Namespace) -> None:
    from .training.report import load_trained

    device = pick_device(args.device)
    model, normalization, classes = load_trained(args.model, device)
    pack_for_inference(model)
    images = normalization(_load_image(args.image, model)[None].to(device))
    grid = grid_for(model, args.grid)
    if args.budget_gflops is not None or args.budget_ms is not None:
        grid = budget_grid(model, images, args.budget_gflops, args.budget_ms)
    with torch.no_grad():
        kwargs = {"grid": grid} if isinstance(model, LookupViT) else {}
        probabilities = model(images, **kwargs).softmax(-1)[0]
    top = probabilities.topk(min(args.topk, len(classes)))
    for probability, index in zip(top.values.tolist(), top.indices.tolist()):
        print(f"{100 * probability:6.2f}%  {classes[index]}")


def budget_grid(model, images: torch.Tensor, gflops: float | None, milliseconds: float | None) -> tuple[int, ...]:
    """The largest grid within the budget, printed with what it costs."""
    from .models.budget import grid_for_milliseconds

    if not isinstance(model, LookupViT):
        raise ValueError(f"a compute budget chooses a compressed grid; the model is a {type(model).__name__}, which has none")
    if gflops is not None:
        grid = model.grid_for_budget(gflops, tuple(images.shape[-2:]))
    else:
        grid, timings = grid_for_milliseconds(model, images, milliseconds)
        print("measured: " + ", ".join(f"{grid_label(g)} {ms:.1f} ms" for g, ms in timings.items()))
    cost = analytic_flops(model.config, tuple(images.shape[-2:]), grid) / 1e9
    print(f"grid {grid_label(grid)} ({cost:.3g} GFLOPs per image) fits the budget")
    return grid


def cmd_attention(args: argparse.Namespace) -> None:
    from .evaluation.visualize import plot_attention_maps
    from .training.report import load_trained

    device = pick_device(args.device)
    model, normalization, classes = load_trained(args.model, device)
    if not isinstance(model, LookupViT):
        raise ValueError(f"{args.model} is a {type(model).__name__}; attention maps need a LookupViT")
    pixels = torch.stack([_load_image(path, model) for path in args.image])
    grids = [grid_for(model, grid) for grid in args.grid]
    plot_attention_maps(model, normalization(pixels.to(device)), pixels.float() / 255, grids, args.out, [Path(p).name for p in args.image])
    print(f"attention maps: {args.out}")


def cmd_shards(args: argparse.Namespace) -> None:
    import shlex

    from .data.shards import write_shards

    summary = write_shards(args.tree, args.out, args.images_per_shard, args.seed)
    kind = "videos" if "videos" in summary["train"] else "images"  # what the tree held
    for split in ("train", "val"):
        print(f"{split}: {summary[split][kind]} {kind} in {summary[split]['shards']} shards")
    print(f"{summary['classes']} classes, named in {Path(args.out) / 'classes.txt'}")
    print(f"train on them with: lookupvit train --config <config.toml> --set {shlex.quote(f'dataset={args.out}')}")


def caption_train_config(args: argparse.Namespace):
    """CaptionTrainConfig from an optional TOML file (top-level keys = its fields) and KEY=VALUE settings ("none" unsets)."""
    from .training.captioning import CaptionTrainConfig
    from .training.config import read_settings

    values = read_settings(args.config, args.settings)
    # no caption setting takes the string "none": it unsets an optional one (TrainConfig's randaugment="none" is why this is not shared)
    values = {key: None if isinstance(value, str) and value.lower() == "none" else value for key, value in values.items()}
    return CaptionTrainConfig.from_dict(values)


def print_caption_rows(results: list[dict]) -> None:
    print("| grid | beam | CIDEr | BLEU-4 | ROUGE-L | GFLOPs per caption (encoder + decoder) |")
    print("|---|---|---|---|---|---|")
    for result in results:
        scores, gflops = result["scores"], result["gflops"]
        grid = "-" if result["grid"] is None else grid_label(result["grid"])
        print(
            f"| {grid} | {result['beam_size']} | {100 * scores['cider']:.1f} | {100 * scores['bleu4']:.1f} | {100 * scores['rouge_l']:.1f} "
            f"| {gflops['total']:.4g} ({gflops['encoder']:.4g} + {gflops['decoder']:.4g}) |"
        )
    print(f"\n{results[0]['num_images']} images; CIDEr-D, BLEU-4 and ROUGE-L x 100; tokenizer: {results[0]['scores']['tokenizer']}")


def cmd_caption_train(args: argparse.Namespace) -> None:
    from .training.captioning import caption_sets, evaluate_captioner, load_captioner, train_captioner

    config = caption_train_config(args)
    path = train_captioner(config)
    print(f"captioner: {path}")
    if args.eval:
        captioner = load_captioner(path, pick_device(config.device))
        print_caption_rows([evaluate_captioner(captioner, caption_sets(config)[1], beam_size=args.beam)])


def caption_eval_set(data: str, images: str | None):
    """`--data`: a layout-task root (its val split) or a COCO-format captions JSON with `--images`."""
    from .data.captions import layout_caption_paths, read_coco_captions

    if Path(data).is_dir():
        if images is not None:
            raise ValueError(f"--images is for a captions JSON; {data} is a layout-task root, whose val images it names itself")
        return read_coco_captions(*layout_caption_paths(data, "val"))
    if images is None:
        raise ValueError(f"{data} is a captions JSON: pass --images, the folder holding its images")
    return read_coco_captions(data, images)


def cmd_caption_eval(args: argparse.Namespace) -> None:
    from .training.captioning import evaluate_captioner, load_captioner

    configure_threads(args.threads)
    captioner = load_captioner(args.captioner, pick_device(args.device))
    caption_set = caption_eval_set(args.data, args.images)
    results = [
        evaluate_captioner(captioner, caption_set, grid, args.beam, batch_size=args.batch_size, metric_tokenizer=args.tokenizer)
        for grid in [grid_for(captioner.captioner.encoder.model, grid) for grid in args.grid or [None]]
    ]
    print_caption_rows(results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


def cmd_caption_predict(args: argparse.Namespace) -> None:
    from .training.captioning import caption_images, load_captioner

    captioner = load_captioner(args.captioner, pick_device(args.device))
    grids = [grid_for(captioner.captioner.encoder.model, grid) for grid in args.grid or [None]]
    for grid in grids:
        captions = caption_images(captioner, args.image, grid, args.beam)
        label = f"grid {grid_label(grid or captioner.grid)}: " if len(grids) > 1 or args.grid else ""
        for path, caption in zip(args.image, captions):
            print(f"{label}{path}: {caption}")


def cmd_caption_run(args: argparse.Namespace) -> None:
    from .experiments.captioning import run_captioning

    configure_threads(args.threads)
    print(f"report: {run_captioning(args.budget, args.out, args.device, threads=args.threads)}")


def add_suite_arguments(
    parser: argparse.ArgumentParser,
    out: str,
    budgets: list[str] = ("quick", "full"),
    default: str = "full",
    budget_help: str = "quick: a minute or so, checks the pipeline; full: the documented run",
) -> None:
    """--budget, --out, --device, --threads: what every resumable experiment suite takes."""
    parser.add_argument("--budget", choices=list(budgets), default=default, help=budget_help)
    parser.add_argument("--out", default=out, help="results folder; a rerun skips what is finished and resumes training")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=non_negative_int, default=0, help=THREADS_HELP)


def add_caption_commands(commands) -> None:
    """`lookupvit caption train|eval|predict|run`: captioning on a frozen encoder's tokens (paper Table 3)."""
    caption = commands.add_parser("caption", help="captioning on a frozen LookupViT's (or ViT's) tokens: train, eval, predict, run")
    actions = caption.add_subparsers(dest="caption_command", required=True)

    train = actions.add_parser("train", help="train (or resume) a caption decoder on a frozen classifier; writes OUT/captioner.safetensors")
    train.add_argument("settings", nargs="*", metavar="KEY=VALUE", help="CaptionTrainConfig fields, e.g. encoder=model.safetensors data=ROOT grid=3 epochs=20")
    train.add_argument("--config", help="TOML file whose top-level keys are CaptionTrainConfig fields; KEY=VALUE settings override it")
    train.add_argument("--no-eval", dest="eval", action="store_false", help="skip scoring the val split at the end")
    train.add_argument("--beam", type=positive_int, default=1, help="beam size of the final evaluation (1: greedy)")
    train.set_defaults(func=cmd_caption_train)

    evaluate = actions.add_parser("eval", help="CIDEr, BLEU-4, ROUGE-L and GFLOPs per caption of a captioner file")
    evaluate.add_argument("captioner", help="a captioner file written by `lookupvit caption train`")
    evaluate.add_argument("--data", required=True, help="a layout-task root (its val split) or a COCO-format captions JSON (with --images)")
    evaluate.add_argument("--images", help="the image folder of a captions JSON")
    evaluate.add_argument("--grid", nargs="+", type=parse_grid, help="compressed grids to read the encoder at (default: the one it was trained at)")
    evaluate.add_argument("--beam", type=positive_int, default=1, help="beam size (1: greedy)")
    evaluate.add_argument("--batch-size", type=positive_int, default=64)
    evaluate.add_argument("--tokenizer", choices=["auto", "ptb", "simple"], default="auto", help="caption tokenizer of the metrics (auto: PTB when Java is installed)")
    evaluate.add_argument("--json", help="also write the results (with example captions) as JSON here")
    evaluate.add_argument("--device", default="auto")
    evaluate.add_argument("--threads", type=non_negative_int, default=0, help=THREADS_HELP)
    evaluate.set_defaults(func=cmd_caption_eval)

    predict = actions.add_parser("predict", help="one caption per image")
    predict.add_argument("captioner", help="a captioner file written by `lookupvit caption train`")
    predict.add_argument("image", nargs="+")
    predict.add_argument("--grid", nargs="+", type=parse_grid, help="compressed grids (default: the one it was trained at); one caption per image and grid")
    predict.add_argument("--beam", type=positive_int, default=1, help="beam size (1: greedy)")
    predict.add_argument("--device", default="auto")
    predict.set_defaults(func=cmd_caption_predict)

    run = actions.add_parser("run", help="the Table 3 job: LookupViT at grids 3/5/7/10 vs ViT on the layout task, CIDEr vs GFLOPs")
    add_suite_arguments(run, "runs/captioning")
    run.set_defaults(func=cmd_caption_run)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lookupvit", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    _add_flops_command(commands)
    _add_bench_command(commands)
    _add_export_command(commands)
    _add_convert_command(commands)
    _add_reproduce_command(commands)
    _add_motion_command(commands)
    _add_warmstart_command(commands)
    _add_train_command(commands)
    _add_report_command(commands)
    _add_evaluate_command(commands)
    _add_predict_command(commands)
    _add_attention_command(commands)
    _add_shards_command(commands)
    add_caption_commands(commands)
    return parser


def _add_flops_command(commands) -> None:
    flops = commands.add_parser("flops", help="paper Table 1 side by side with our analytic and measured FLOPs")
    flops.add_argument("--model", nargs="+", type=model_name, help="registered model names, e.g. lookupvit_b16 vit_l16")
    flops.add_argument("--image-size", nargs="+", type=parse_image_size, help="e.g. 224 384 224x320")
    flops.add_argument("--grid", nargs="+", type=parse_grid, help="compressed grids, e.g. 3 5 4x6, or (t, h, w) for video models: 8x9x9")
    flops.add_argument("--frames", type=positive_int, help="clip length for video models (default: the model's num_frames)")
    flops.add_argument("--video", action="store_true", help="paper Table 4 instead: ViViT-B/16 and LookupViViT, in multiply-accumulates")
    flops.set_defaults(func=cmd_flops)


def _add_bench_command(commands) -> None:
    bench = commands.add_parser("bench", help="images/s of LookupViT vs ViT in one process, with FLOPs ratio and MFU")
    bench.add_argument("--size", default="b16", help="variant suffix shared by vit_* and lookupvit_*, e.g. b16, s16")
    bench.add_argument("--image-size", nargs="+", type=positive_int, default=[224, 384])
    bench.add_argument("--grid", nargs="+", type=positive_int, default=[3, 5, 7, 10])
    bench.add_argument(
        "--dtype",
        nargs="+",
        default=["fp32", "bf16", "bf16-weights"],
        choices=["fp32", "bf16", "fp16", "bf16-weights", "fp16-weights"],
        help="bf16/fp16: autocast; *-weights: inference with the models cast to that dtype (no training rows). The first is the baseline of the ratio table",
    )
    bench.add_argument("--batch", nargs="+", type=positive_int, default=[16, 1], help="inference batch sizes; the first is also the training batch")
    bench.add_argument("--train-image-size", nargs="*", type=positive_int, default=[224], help="image sizes for the training-step table (none: skip)")
    bench.add_argument("--memory-image-size", nargs="*", type=positive_int, default=[384], help="image sizes for peak training memory (none: skip)")
    bench.add_argument("--no-grad-checkpointing", dest="grad_checkpointing", action="store_false", help="skip the training-step and memory rows with grad checkpointing")
    bench.add_argument("--reps", type=positive_int, default=3, help="timed calls per model and row (median); small inference batches take up to 5x as many")
    bench.add_argument("--threads", type=non_negative_int, default=0, help="torch CPU threads (default 0: torch's own default, as in the recorded benchmarks)")
    bench.add_argument("--device", default="auto")
    bench.set_defaults(func=cmd_bench)


def _add_export_command(commands) -> None:
    export = commands.add_parser("export", help="ONNX file of a trained model at one compressed grid, checked with onnxruntime")
    export.add_argument("model", help="a .safetensors model file written by lookupvit")
    export.add_argument("--grid", type=parse_grid, default=None, help="compressed grid baked into the graph (default: the model's)")
    export.add_argument("--out", default="model.onnx")
    export.set_defaults(func=cmd_export)


def _add_convert_command(commands) -> None:
    convert = commands.add_parser(
        "convert", help="a timm / big_vision ViT, a transformers ViViT or a model of ours as a lookupvit model file, optionally warm-starting a LookupViT or inflating into video"
    )
    convert.add_argument(
        "src",
        help="a timm ViT (hub folder, .safetensors/.pth/.bin state dict), a big_vision/AugReg .npz, a transformers ViViT folder, or a model file of ours",
    )
    convert.add_argument("--out", required=True, help="the .safetensors model file to write")
    convert.add_argument("--from", dest="source_format", choices=["transformers-vivit", "timm", "big-vision", "ours"], help="what SRC is (default: recognised from its layout)")
    convert.add_argument(
        "--model", type=model_name, help="what to convert into: lookupvit_* (warm start from a ViT), vivit_* / lookupvivit_* (inflation); default: the source as our model"
    )
    convert.add_argument("--rule", choices=["central", "average"], default="central", help="video inflation: patch kernel at the central frame, or averaged over the tubelet")
    convert.add_argument("--lookup-mlp", choices=["largest", "first", "fresh"], default="largest", help="warm start: which ViT MLP units the lookup MLP keeps")
    convert.add_argument("--num-heads", type=positive_int, help="timm checkpoints of a non-standard width: their attention heads")
    convert.add_argument("--num-classes", type=positive_int, help="a new classifier for this many classes (fine-tuning on other labels)")
    convert.add_argument("--image-size", type=positive_int, help="warm start: the LookupViT's image size (default: the variant's); position embeddings are resampled")
    convert.add_argument("--normalization", choices=["inception", "imagenet"], help="how the source's images were normalised, when its files do not say")
    convert.set_defaults(func=cmd_convert)


def _add_reproduce_command(commands) -> None:
    reproduce = commands.add_parser("reproduce", help="the paper's claims at small scale: baselines, ablations, multi-res, robustness, few-shot")
    add_suite_arguments(
        reproduce,
        "runs/reproduce",
        budgets=["quick", "full", "paper", "paper-quick"],
        default="quick",
        budget_help="quick: minutes, checks the pipeline; full: the documented 7x7-token run (about 45 min on 2 cores); "
        "paper: the paper's 14x14 tokens and grids 3-10 (hours: run it again to continue); paper-quick: that pipeline in minutes",
    )
    reproduce.add_argument("--report-only", action="store_true", help="write report.md from the experiments finished so far and run nothing")
    reproduce.add_argument("--beside", metavar="FOLDER", help="the --out folder of a run of the other token regime: its claims go beside this run's in report.md")
    reproduce.set_defaults(func=cmd_reproduce)


def _add_motion_command(commands) -> None:
    motion = commands.add_parser("motion", help="the video job: LookupViViT vs ViViT on mp4 clips of moving items, where one frame is not enough")
    add_suite_arguments(motion, "runs/motion")
    motion.add_argument("--seed", type=non_negative_int, default=0, help="seed of the videos (the runs use seed 0)")
    motion.add_argument("--download", action="store_true", help="download Fashion-MNIST (checksums verified) if it is not installed")
    motion.set_defaults(func=cmd_motion)


def _add_warmstart_command(commands) -> None:
    warmstart = commands.add_parser("warmstart", help="a LookupViT started from a trained ViT vs from scratch, two seeds each, on Fashion-MNIST")
    add_suite_arguments(warmstart, "runs/warmstart")
    warmstart.set_defaults(func=cmd_warmstart)


def _add_train_command(commands) -> None:
    train = commands.add_parser("train", help="train (or resume) a run; runs under torchrun for several processes")
    train.add_argument("--config", help="TOML file whose top-level keys are TrainConfig fields (see configs/)")
    train.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="overrides, e.g. epochs=5 lr=2e-3 model_args.drop_path_rate=0.1")
    train.add_argument("--no-report", dest="report", action="store_false", help="skip the evaluation report at the end")
    train.add_argument("--threads", type=non_negative_int, help="torch CPU threads, overriding the config's `threads` (0: automatic, the cores this process may use shared among torchrun's local processes)")
    train.set_defaults(func=cmd_train)


def _add_report_command(commands) -> None:
    report = commands.add_parser("report", help="evaluate a finished run at every grid and write report.md with plots")
    report.add_argument("run", help="run folder written by `lookupvit train`")
    report.add_argument("--device", default="auto")
    report.add_argument("--threads", type=non_negative_int, default=0, help=THREADS_HELP)
    report.set_defaults(func=cmd_report)


def _add_evaluate_command(commands) -> None:
    evaluate = commands.add_parser("eval", help="top-1/top-5 of every head at every grid, with FLOPs")
    evaluate.add_argument("model", help="a .safetensors model file written by training")
    evaluate.add_argument(
        "--data",
        default="fashion-mnist",
        help="fashion-mnist, an ImageNet-style tree (its val/ split, streamed) or an image folder root/<class>/<image>; "
        "for a video model a video tree (its val/<class>/<video> split)",
    )
    evaluate.add_argument("--workers", type=non_negative_int, default=0, help="decoding processes for a streamed tree (0: in this process)")
    evaluate.add_argument(
        "--crop-pct",
        type=crop_fraction,
        help=f"streamed tree: resize the short side to size / crop-pct, then centre-crop (default {IMAGE_CROP_PCT} for images; "
        "video: to the model file's clip_resize, else to the model's size)",
    )
    evaluate.add_argument(
        "--views",
        type=parse_views,
        help="video models: TxS views per video, T clips spaced evenly in time x S = 1 (centre) or 3 spatial crops, logits averaged; "
        "ViViT evaluates 4x3 (default 1x1: the centred clip, centre crop)",
    )
    evaluate.add_argument(
        "--frame-stride", type=positive_int, help="video models: frames between a clip's frames (default: the model file's frame_stride, else 1)"
    )
    evaluate.add_argument("--data-root", help="folder holding the Fashion-MNIST files")
    evaluate.add_argument("--grid", nargs="+", type=parse_grid, help="compressed grids (default: the model's)")
    evaluate.add_argument("--batch-size", type=positive_int, help=f"images per forward pass (default {IMAGE_BATCH}), or videos (default {VIDEO_BATCH}; each runs all its views)")
    evaluate.add_argument("--limit", type=positive_int, help="evaluate a random subset of this many images (or videos)")
    evaluate.add_argument("--json", help="also write the rows as JSON here")
    evaluate.add_argument("--plot", help="also draw accuracy vs FLOPs to this PNG")
    evaluate.add_argument("--device", default="auto")
    evaluate.add_argument(
        "--dtype", default="fp32", choices=["fp32", "bf16", "bf16-weights"], help="bf16: autocast; bf16-weights: the model cast to bfloat16 (faster on CPU, see README Speed)"
    )
    evaluate.add_argument("--threads", type=non_negative_int, default=0, help=THREADS_HELP)
    evaluate.set_defaults(func=cmd_eval)


def _add_predict_command(commands) -> None:
    predict = commands.add_parser("predict", help="top-k classes for one image")
    predict.add_argument("image")
    predict.add_argument("--model", required=True, help="a .safetensors model file written by training")
    predict.add_argument("--topk", type=positive_int, default=3)
    choice = predict.add_mutually_exclusive_group()
    choice.add_argument("--grid", type=parse_grid, help="compressed grid (default: the model's)")
    choice.add_argument("--budget-gflops", type=positive_number, help="instead of --grid: the largest grid costing at most this many GFLOPs per image")
    choice.add_argument("--budget-ms", type=positive_number, help="instead of --grid: the largest grid whose forward takes at most this long here (measured)")
    predict.add_argument("--device", default="auto")
    predict.set_defaults(func=cmd_predict)


def _add_attention_command(commands) -> None:
    attention = commands.add_parser("attention", help="draw per-layer l->p attention maps over images")
    attention.add_argument("image", nargs="+")
    attention.add_argument("--model", required=True, help="a .safetensors model file written by training")
    attention.add_argument("--grid", nargs="+", type=parse_grid, default=[(3,), (5,)])
    attention.add_argument("--out", default="attention.png")
    attention.add_argument("--device", default="auto")
    attention.set_defaults(func=cmd_attention)


def _add_shards_command(commands) -> None:
    shards = commands.add_parser("shards", help="write an ImageNet-style tree of images or videos as tar shards (WebDataset layout)")
    shards.add_argument("tree", help="root/train/<class>/<image> and root/val/<class>/<image>, or the same of videos (.mp4, ...)")
    shards.add_argument("out", help="a new or empty folder for train-*.tar, val-*.tar and classes.txt")
    shards.add_argument("--images-per-shard", type=positive_int, default=1000, help="samples per shard (videos too)")
    shards.add_argument("--seed", type=non_negative_int, default=0, help="seed of the order of the samples in the shards")
    shards.set_defaults(func=cmd_shards)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (ValueError, TypeError, FileNotFoundError, RuntimeError) as error:
        print(f"lookupvit {args.command}: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
