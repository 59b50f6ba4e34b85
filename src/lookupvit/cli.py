"""The `lookupvit` command line: `lookupvit flops`, `lookupvit bench`, ..."""

from __future__ import annotations

import argparse
import sys

import torch

from . import benchmark
from .flops import analytic_flops, measured_flops
from .models import LookupViTConfig
from .registry import list_models, model_config
from .runtime import parse_dtype, pick_device

# Paper Table 1: GFLOPs (2 x MACs) at 224 px.
TABLE_1 = {
    "B/16": ("b16", {"ViT": 35.1, 3: 12.9, 5: 16.5, 7: 21.9, 10: 33.6}),
    "L/16": ("l16", {"ViT": 123.5, 3: 46.2, 5: 58.8, 7: 77.7, 10: 118.5}),
}


def parse_grid(text: str) -> tuple[int, int]:
    """"5" -> (5, 5); "4x6" -> (4, 6)."""
    try:
        parts = [int(part) for part in text.lower().split("x")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"grid must look like 5 or 4x6, got {text!r}") from None
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2 or min(parts) < 1:
        raise argparse.ArgumentTypeError(f"grid must look like 5 or 4x6 with positive sizes, got {text!r}")
    return parts[0], parts[1]


def parse_image_size(text: str) -> tuple[int, int]:
    try:
        return parse_grid(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"image size must look like 224 or 224x320, got {text!r}") from None


def model_name(text: str) -> str:
    if text not in list_models():
        model_config(text)  # raises with close matches
    return text


def cmd_flops(args: argparse.Namespace) -> None:
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
        print("| model | image | grid | analytic GFLOPs | measured GFLOPs |")
        print("|---|---|---|---|---|")
        for name in args.model:
            config = model_config(name)
            sizes = args.image_size or [config.img_size]
            grids = (args.grid or [None]) if isinstance(config, LookupViTConfig) else [None]
            for size in sizes:
                for grid in grids:
                    shown_grid = "-" if not isinstance(config, LookupViTConfig) else "x".join(map(str, grid or config.compressed_grid))
                    try:
                        analytic = analytic_flops(config, image_size=size, grid=grid) / 1e9
                        measured = measured_flops(config, image_size=size, grid=grid) / 1e9
                    except ValueError as error:
                        print(f"| {name} | {size[0]}x{size[1]} | {shown_grid} | {error} | |")
                        continue
                    print(f"| {name} | {size[0]}x{size[1]} | {shown_grid} | {analytic:.2f} | {measured:.2f} |")


def cmd_bench(args: argparse.Namespace) -> None:
    device = pick_device(args.device)
    dtypes = [parse_dtype(name) for name in args.dtype]
    torch.set_num_threads(args.threads) if args.threads else None
    print(f"device: {device}, torch {torch.__version__}, threads {torch.get_num_threads()}")
    peaks = {dtype: benchmark.gemm_peak(device, dtype) for dtype in dtypes}
    for dtype, peak in peaks.items():
        print(f"GEMM peak ({str(dtype).removeprefix('torch.')}, 2048^3): {peak / 1e9:.0f} GFLOP/s")
    print()
    print(benchmark.TABLE_HEADER)
    for row in benchmark.inference_rows(args.size, args.image_size, args.grid, dtypes, args.batch, args.reps, device, peaks):
        print(benchmark.format_row(row), flush=True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lookupvit", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    flops = commands.add_parser("flops", help="paper Table 1 side by side with our analytic and measured FLOPs")
    flops.add_argument("--model", nargs="+", type=model_name, help="registered model names, e.g. lookupvit_b16 vit_l16")
    flops.add_argument("--image-size", nargs="+", type=parse_image_size, help="e.g. 224 384 224x320")
    flops.add_argument("--grid", nargs="+", type=parse_grid, help="compressed grids, e.g. 3 5 4x6")
    flops.set_defaults(func=cmd_flops)

    bench = commands.add_parser("bench", help="images/s of LookupViT vs ViT in one process, with FLOPs ratio and MFU")
    bench.add_argument("--size", default="b16", help="variant suffix shared by vit_* and lookupvit_*, e.g. b16, s16")
    bench.add_argument("--image-size", nargs="+", type=int, default=[224, 384])
    bench.add_argument("--grid", nargs="+", type=int, default=[3, 5, 7, 10])
    bench.add_argument("--dtype", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16", "fp16"])
    bench.add_argument("--batch", type=int, default=16)
    bench.add_argument("--reps", type=int, default=3)
    bench.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    bench.add_argument("--device", default="auto")
    bench.set_defaults(func=cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (ValueError, TypeError, FileNotFoundError) as error:
        print(f"lookupvit {args.command}: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
