"""What pack_for_inference buys: each model packed and unpacked, interleaved call by call in one process.

    python benchmarks/packing.py [--size b16] [--image-size 224] [--grid 3 5 7] [--batch 1 16] [--dtype bfloat16 float32] [--reps 11]

Unpacked, every Linear call re-lays out its weight for oneDNN's kernels (AMX and AVX-512 bf16 read a
blocked layout) and MHBC's p->l product copies its output projection to head-major order. Packed,
both are done once. Prints milliseconds and the packed-over-unpacked speedup of ViT and of
LookupViT at each grid, and LookupViT's speedup over ViT with both packed.
"""

from __future__ import annotations

import argparse
import copy

import torch

from lookupvit.benchmark import median_times
from lookupvit.cli import positive_int
from lookupvit.layers import pack_for_inference
from lookupvit.models.registry import create_model
from lookupvit.runtime import configure_threads, device_name


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="b16")
    parser.add_argument("--image-size", type=positive_int, default=224)
    parser.add_argument("--grid", type=positive_int, nargs="+", default=[3, 5, 7])
    parser.add_argument("--batch", type=positive_int, nargs="+", default=[1, 16])
    parser.add_argument("--dtype", nargs="+", choices=["bfloat16", "float32"], default=["bfloat16", "float32"])
    parser.add_argument("--reps", type=positive_int, default=11, help="timed calls per model at batch 1 (median); batch 16 takes a third as many")
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args(argv)
    configure_threads(args.threads)
    print(f"cpu ({device_name(torch.device('cpu'))}), torch {torch.__version__}, {torch.get_num_threads()} threads, {args.image_size} px\n")
    print("| dtype | batch | model | unpacked ms | packed ms | packed speedup | speedup over ViT, unpacked | speedup over ViT, packed |")
    print("|---|---|---|---|---|---|---|---|")
    for dtype_name in args.dtype:
        dtype = getattr(torch, dtype_name)
        torch.manual_seed(0)
        models = {name: create_model(f"{name}_{args.size}", img_size=args.image_size).eval().to(dtype) for name in ("vit", "lookupvit")}
        packed = {name: pack_for_inference(copy.deepcopy(model)) for name, model in models.items()}
        for batch in args.batch:
            images = torch.randn(batch, models["vit"].config.in_chans, args.image_size, args.image_size)
            contenders = {"ViT": {}} | {f"LookupViT {grid}x{grid}": {"grid": grid} for grid in args.grid}

            def call(model, kwargs):
                def run():
                    with torch.inference_mode():
                        model(images, **kwargs)

                return run

            calls = {}
            for label, kwargs in contenders.items():
                name = "vit" if label == "ViT" else "lookupvit"
                calls[(label, False)] = call(models[name], kwargs)
                calls[(label, True)] = call(packed[name], kwargs)
            times = median_times(calls, torch.device("cpu"), args.reps if batch == 1 else max(3, args.reps // 3))
            for label in contenders:
                unpacked_ms, packed_ms = 1000 * times[(label, False)], 1000 * times[(label, True)]
                over_vit = [times[("ViT", packed_rows)] / times[(label, packed_rows)] for packed_rows in (False, True)]
                print(
                    f"| {dtype_name} | {batch} | {label} | {unpacked_ms:.1f} | {packed_ms:.1f} | {unpacked_ms / packed_ms:.2f}x | "
                    f"{over_vit[0]:.2f}x | {over_vit[1]:.2f}x |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
