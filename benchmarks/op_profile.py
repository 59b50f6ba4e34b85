"""Where inference time goes, op by op: LookupViT against ViT (issue 18's diagnosis, for hosts with or without AMX).

torch.profiler over a few inference calls of each model, both in the same process. Prints each op's
share of the model's CPU time and its calls per forward, then the GEMM / non-GEMM split: the FLOPs
savings of LookupViT reach the user only as far as its time is GEMMs, since the copies, LayerNorms,
softmaxes and residual adds on the N lookup tokens do not get faster with a faster matrix engine.

    python benchmarks/op_profile.py                         # B/16, 224 px, grid 5, batch 16, bf16 weights
    python benchmarks/op_profile.py --batch 1 --dtype float32
    python benchmarks/op_profile.py --unpacked              # weights re-laid out at every call
"""

from __future__ import annotations

import argparse
import collections

import torch
from torch.profiler import ProfilerActivity, profile

from lookupvit.layers import BidirectionalCrossAttention, pack_for_inference
from lookupvit.models.registry import create_model
from lookupvit.runtime import configure_threads, device_name

# Dense matrix products: the work a matrix engine (AMX, tensor cores) accelerates.
GEMM_OPS = {"aten::addmm", "aten::mm", "aten::bmm", "aten::baddbmm", "aten::matmul", "aten::linear", "mkldnn::_linear_pointwise",
            "aten::_scaled_dot_product_flash_attention_for_cpu", "aten::convolution", "aten::_convolution", "aten::mkldnn_convolution"}
# Composite ops whose time is their children's: counting them too would count the time twice.
COMPOSITE_OPS = {"aten::linear", "aten::matmul", "aten::convolution", "aten::_convolution", "aten::einsum", "aten::scaled_dot_product_attention"}


def op_times(model: torch.nn.Module, images: torch.Tensor, kwargs: dict, calls: int, shapes: bool = False) -> tuple[dict[str, float], dict[str, int]]:
    """Self CPU time (us) and call count per op over `calls` forwards, after one warm-up call; with `shapes`, per op and input shapes."""
    with torch.inference_mode():
        model(images, **kwargs)
        with profile(activities=[ProfilerActivity.CPU], record_shapes=shapes) as prof:
            for _ in range(calls):
                model(images, **kwargs)
    times, counts = collections.Counter(), collections.Counter()
    for event in prof.key_averages(group_by_input_shape=shapes):
        key = f"{event.key} {event.input_shapes}" if shapes else event.key
        times[key] += event.self_cpu_time_total
        counts[key] += event.count
    return dict(times), dict(counts)


def summary(name: str, times: dict[str, float], counts: dict[str, int], calls: int, top: int) -> float:
    total = sum(times.values())
    gemm = sum(value for key, value in times.items() if key.split(" ")[0] in GEMM_OPS - COMPOSITE_OPS)
    print(f"\n{name}: {total / calls / 1000:.1f} ms per forward (profiled); GEMM share {100 * gemm / total:.0f} %, non-GEMM {100 * (1 - gemm / total):.0f} %")
    print("| op | share of time | calls per forward |")
    print("|---|---|---|")
    for key, value in sorted(times.items(), key=lambda item: -item[1])[:top]:
        print(f"| {key} | {100 * value / total:.1f} % | {counts[key] / calls:.0f} |")
    return total / calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="b16")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--grid", type=int, default=5)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="bfloat16", help="bfloat16: the model cast with .to(torch.bfloat16)")
    parser.add_argument("--calls", type=int, default=3)
    parser.add_argument("--top", type=int, default=12)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--shapes", action="store_true", help="one row per op and input shapes")
    parser.add_argument("--unpacked", action="store_true", help="skip pack_for_inference: every call re-lays out the weights, as before it existed")
    parser.add_argument("--order", choices=["rule", "paper", "reassociated"], default="rule", help="MHBC evaluation order: the rule's choice per call, or one forced")
    args = parser.parse_args()
    configure_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    torch.manual_seed(0)
    vit = create_model(f"vit_{args.size}", img_size=args.image_size).eval().to(dtype)
    lookup = create_model(f"lookupvit_{args.size}", img_size=args.image_size).eval().to(dtype)
    if not args.unpacked:
        pack_for_inference(vit), pack_for_inference(lookup)
    if args.order != "rule":
        for module in lookup.modules():
            if isinstance(module, BidirectionalCrossAttention):
                module.reassociate = args.order == "reassociated"
    images = torch.randn(args.batch, vit.config.in_chans, args.image_size, args.image_size)
    packing = "unpacked" if args.unpacked else "packed (pack_for_inference)"
    print(f"cpu ({device_name(torch.device('cpu'))}), torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"{args.dtype}, batch {args.batch}, {args.image_size} px, weights {packing}, MHBC order: {args.order}")
    vit_ms = summary(f"ViT-{args.size}", *op_times(vit, images, {}, args.calls, args.shapes), args.calls, args.top)
    lookup_ms = summary(f"LookupViT-{args.size} {args.grid}x{args.grid}", *op_times(lookup, images, {"grid": args.grid}, args.calls, args.shapes), args.calls, args.top)
    print(f"\nprofiled time ratio ViT / LookupViT: {vit_ms / lookup_ms:.2f}x (profiling adds overhead per op: benchmarks/precision.py times without it)")


if __name__ == "__main__":
    main()
