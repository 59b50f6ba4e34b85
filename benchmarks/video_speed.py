"""Video speed: clips/s of LookupViViT at the paper's Table 4 grids against ViViT, in one process.

Each row gives the measured speedup over ViViT next to the FLOPs ratio (what the speedup would be
if time followed FLOPs) and the model FLOP utilisation against this machine's GEMM peak; the
contenders alternate call by call, so load elsewhere on a shared machine hits them alike.

    python benchmarks/video_speed.py                  # B/16, 32 x 224 x 224 clips (Table 4), batch 1
    python benchmarks/video_speed.py --size nano4     # the CPU test size, 16 x 28 x 28 clips
    python benchmarks/video_speed.py --dtype bfloat16 --batch 2
"""

from __future__ import annotations

import argparse

import torch

from lookupvit.benchmark import TABLE_HEADER, Contender, autocast, format_row, gemm_peak, lookupvit_contender, median_times, timing_rows
from lookupvit.models.flops import analytic_flops
from lookupvit.models.registry import create_model
from lookupvit.runtime import configure_threads, cpu_model, pick_device

# (t, h, w) compressed grids per size: Table 4's for B/16 (its 9x9x8, 8x8x16, 9x9x16), a spread for nano4
GRIDS = {"b16": [(8, 9, 9), (16, 8, 8), (16, 9, 9)], "nano4": [(2, 2, 2), (4, 4, 4), (8, 4, 4)]}


def video_contenders(size: str, device: torch.device) -> list[Contender]:
    torch.manual_seed(0)
    vivit = create_model(f"vivit_{size}").to(device).eval()
    lookup = create_model(f"lookupvivit_{size}").to(device).eval()
    vivit_flops = analytic_flops(vivit.config)
    found = [Contender("ViT", vivit, None, vivit_flops, vivit_flops)]  # "ViT": the baseline label timing_rows compares against
    for grid in GRIDS[size]:
        label = "x".join(map(str, grid))
        found.append(lookupvit_contender(label, lookup, grid))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=sorted(GRIDS), default="b16")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()
    configure_threads(args.threads)
    device, dtype = pick_device(args.device), getattr(torch, args.dtype)
    found = video_contenders(args.size, device)
    config = found[0].model.config
    clips = torch.randn(args.batch, config.in_chans, config.num_frames, *config.img_size, device=device)

    def forward(contender: Contender):
        kwargs = {"grid": contender.grid} if contender.grid else {}

        def call():
            with torch.inference_mode(), autocast(device, dtype):
                contender.model(clips, **kwargs)

        return call

    times = median_times({c.label: forward(c) for c in found}, device, args.reps)
    peak = gemm_peak(device, dtype)
    print(f"{device} ({cpu_model()}), torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"GEMM peak {peak / 1e9:.0f} GFLOP/s in {args.dtype}")
    print(f"{args.size}: clips of {config.num_frames} x {config.img_size[0]}x{config.img_size[1]}, median of {args.reps} calls; "
          "the 'ViT' row is ViViT, 'images/s' are clips/s, FLOPs are per clip (2 x MACs)\n")
    print(TABLE_HEADER)
    for row in timing_rows("inference", config.img_size[0], args.dtype, args.batch, found, times, peak, passes=1):
        print(format_row(row).replace("| LookupViT |", "| LookupViViT |").replace("| ViT |", "| ViViT |"))


if __name__ == "__main__":
    main()
