"""MHBC evaluation order: the paper's against the reassociated one, and which one the FLOPs rule picks.

`BidirectionalCrossAttention` chooses its order per call with `reassociation_is_cheaper` (a FLOPs
count with a margin that depends on the products' dtype). This times LookupViT inference (B/16 by default) with each order forced, the two
interleaved call by call, so the rule can be checked on a new machine or backend. The models run as
`lookupvit bench`, `eval` and `predict` run them: cast to each dtype (bf16 weights, not autocast) and packed
with pack_for_inference.

    python benchmarks/mhbc_order.py [--model-size b16] [--sizes 224 384] [--grids 3 5 7] [--batch 16] [--reps 3]
"""

import argparse

import torch

from lookupvit.benchmark import median_times
from lookupvit.cli import positive_int
from lookupvit.layers import BidirectionalCrossAttention, pack_for_inference, reassociation_is_cheaper
from lookupvit.models.registry import create_model
from lookupvit.runtime import pick_device


def time_orders(model: torch.nn.Module, images: torch.Tensor, grid: int, device: torch.device, reps: int) -> dict[str, float]:
    """Median seconds of one inference call with every MHBC forced to each order, the orders interleaved."""
    attentions = [module for module in model.modules() if isinstance(module, BidirectionalCrossAttention)]

    def forward(reassociate: bool):
        def call() -> None:
            for attention in attentions:
                attention.reassociate = reassociate
            with torch.inference_mode():
                model(images, grid=grid)

        return call

    try:
        return median_times({"paper": forward(False), "reassociated": forward(True)}, device, reps)
    finally:
        for attention in attentions:
            attention.reassociate = None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-size", default="b16", help="LookupViT size of the registry: ti16, s16, b16, nano4, ...")
    parser.add_argument("--sizes", type=positive_int, nargs="+", default=[224, 384])
    parser.add_argument("--grids", type=positive_int, nargs="+", default=[3, 5, 7])
    parser.add_argument("--batch", type=positive_int, default=16)
    parser.add_argument("--reps", type=positive_int, default=3)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    device = pick_device(args.device)
    print("| px | dtype | grid | paper order ms | reassociated ms | reassociated faster by | rule picks |\n|---|---|---|---|---|---|---|")
    for size in args.sizes:
        torch.manual_seed(0)
        base = create_model(f"lookupvit_{args.model_size}", img_size=size).eval()
        images = torch.randn(args.batch, base.config.in_chans, size, size, device=device)
        num_lookup = (size // base.config.patch_size) ** 2
        for dtype in (torch.float32, torch.bfloat16):
            model = pack_for_inference(base.to(device=device, dtype=dtype))  # the images stay float32: the patch embedding casts them
            for grid in args.grids:
                times = time_orders(model, images, grid, device, args.reps)
                rule = reassociation_is_cheaper(grid * grid, num_lookup, base.config.embed_dim, base.config.num_heads, dtype, device.type)
                print(
                    f"| {size} | {str(dtype).removeprefix('torch.')} | {grid}x{grid} | {1000 * times['paper']:.1f} | "
                    f"{1000 * times['reassociated']:.1f} | {times['paper'] / times['reassociated']:.2f}x | {'reassociated' if rule else 'paper'} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
