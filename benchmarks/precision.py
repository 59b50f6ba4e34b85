"""bf16 inference two ways: autocast, and the model cast with .to(torch.bfloat16), against fp32.

`lookupvit bench` times each precision in its own loop, so its bf16/fp32 ratios compare calls made
minutes apart on a shared machine. This times the three precisions of one model interleaved call by
call, ViT and LookupViT alike:

    python benchmarks/precision.py [--model-size b16] [--sizes 224 384] [--grid 5] [--batch 16 1] [--reps 5]

Autocast keeps the weights in fp32 and casts them at every call, and keeps the residual streams,
LayerNorms and residual adds in fp32 with a cast before each GEMM; the cast model runs all of that
in bf16.
"""

import argparse
import copy

import torch

from lookupvit.benchmark import autocast, median_times
from lookupvit.cli import positive_int
from lookupvit.layers import pack_for_inference
from lookupvit.models.registry import create_model
from lookupvit.runtime import device_name, parse_precision, pick_device

PRECISIONS = ("fp32", "bf16", "bf16-weights")  # as `lookupvit bench --dtype` names them: bf16 is autocast


def time_precisions(model: torch.nn.Module, images: torch.Tensor, grid: int | None, device: torch.device, reps: int) -> dict[str, float]:
    """Median seconds of one inference call in each precision, the three interleaved."""
    cast_model = pack_for_inference(copy.deepcopy(model).to(torch.bfloat16))
    pack_for_inference(model)
    kwargs = {"grid": grid} if grid else {}

    def forward(precision: str):
        dtype, cast_weights = parse_precision(precision)

        def call() -> None:
            with torch.inference_mode(), autocast(device, torch.float32 if cast_weights else dtype):
                (cast_model if cast_weights else model)(images, **kwargs)

        return call

    return median_times({precision: forward(precision) for precision in PRECISIONS}, device, reps)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-size", default="b16", help="size of the registry shared by vit_* and lookupvit_*: b16, s16, nano4, ...")
    parser.add_argument("--sizes", type=positive_int, nargs="+", default=[224, 384])
    parser.add_argument("--grid", type=positive_int, default=5)
    parser.add_argument("--batch", type=positive_int, nargs="+", default=[16, 1])
    parser.add_argument("--reps", type=positive_int, default=5)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    device = pick_device(args.device)
    print(f"{device} ({device_name(device)}), torch {torch.__version__}, {torch.get_num_threads()} threads; weights packed for inference\n")
    print("| model | px | batch | fp32 ms | bf16 autocast ms | bf16 weights ms | autocast over fp32 | weights over fp32 | weights over autocast |")
    print("|---|---|---|---|---|---|---|---|---|")
    for size in args.sizes:
        for name, grid in ((f"vit_{args.model_size}", None), (f"lookupvit_{args.model_size}", args.grid)):
            torch.manual_seed(0)
            model = create_model(name, img_size=size).to(device).eval()
            label = f"LookupViT {grid}x{grid}" if grid else "ViT"
            for batch in args.batch:
                images = torch.randn(batch, model.config.in_chans, size, size, device=device)
                times = time_precisions(model, images, grid, device, args.reps)
                fp32, auto, cast = (times[precision] for precision in PRECISIONS)
                print(
                    f"| {label} | {size} | {batch} | {1000 * fp32:.1f} | {1000 * auto:.1f} | {1000 * cast:.1f} | "
                    f"{fp32 / auto:.2f}x | {fp32 / cast:.2f}x | {auto / cast:.2f}x |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
