"""Does LookupViT-L or -H need FSDP? Training memory per GPU under DDP, from parameters and a measured step.

DDP keeps on every GPU the fp32 weights, their gradients and AdamW's two moments (16 bytes per
parameter), plus the activations of its share of the batch. This prints the first from the
parameter count and measures the second: the peak bytes the tensors of one training step occupy
(forward + backward + AdamW, bf16 autocast, grad checkpointing on and off) at two batch sizes, each
in a fresh process, on this CPU; the slope is the activation memory per image, which is the same
tensors on a GPU. The last column is the per-GPU batch an 80 GB GPU would hold under DDP.

    python benchmarks/fsdp_need.py --models lookupvit_l16 vit_l16
"""

from __future__ import annotations

import argparse

import torch

from lookupvit.benchmark import peak_training_memory
from lookupvit.models.registry import create_model

GPU_BYTES = 80 * 2**30


def state_bytes(name: str) -> int:
    with torch.device("meta"):
        model = create_model(name)
    return 16 * sum(p.numel() for p in model.parameters())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["vit_l16", "lookupvit_l16"])
    parser.add_argument("--batches", nargs=2, type=int, default=[1, 3])
    parser.add_argument("--grid", type=int, default=5)
    args = parser.parse_args()
    print("| model | grad ckpt | weights + grads + AdamW (GiB) | activations per image (MiB) | batch per 80 GB GPU under DDP |")
    print("|---|---|---|---|---|")
    for name in args.models:
        grid = args.grid if name.startswith("lookupvit") else None
        states = state_bytes(name)
        for checkpointing in (False, True):
            small, large = (
                peak_training_memory(name, 224, grid, batch, torch.bfloat16, torch.device("cpu"), checkpointing, tensors_only=True) for batch in args.batches
            )
            per_image = (large - small) / (args.batches[1] - args.batches[0])
            fits = int((GPU_BYTES - small + per_image * args.batches[0]) // per_image)
            label = f"{name} {grid}x{grid}" if grid else name
            print(f"| {label} | {'yes' if checkpointing else 'no'} | {states / 2**30:.1f} | {per_image / 2**20:.0f} | {fits} |", flush=True)


if __name__ == "__main__":
    main()
