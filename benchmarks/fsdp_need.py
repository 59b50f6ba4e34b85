"""Does LookupViT-L or -H need FSDP? Training memory per GPU under DDP, from parameters and measured activations.

DDP keeps on every GPU the fp32 weights, their gradients and AdamW's two moments (16 bytes per
parameter), plus the activations autograd keeps for backward for its share of the batch. This
prints the first from the parameter count and measures the second: the bytes of the distinct
tensors saved for backward by a bf16-autocast training forward at 224 px (counted with autograd's
saved-tensor hooks, so it is the same on a GPU), with and without grad checkpointing. The last
column is the per-GPU batch an 80 GB GPU holds under DDP, keeping 10 % for the allocator and the
transient buffers of the largest op.

    python benchmarks/fsdp_need.py
"""

from __future__ import annotations

import argparse

import torch

from lookupvit.models.registry import create_model

GPU_BYTES = 80e9
HEADROOM = 0.9


def saved_bytes_per_image(name: str, grid: int | None, checkpointing: bool, batch: int) -> float:
    torch.manual_seed(0)
    model = create_model(name).train()
    model.set_grad_checkpointing(checkpointing)
    storages: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    images = torch.randn(batch, 3, 224, 224)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor), torch.autocast("cpu", dtype=torch.bfloat16):
        model(images, grid=grid) if grid else model(images)
    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}  # counted with the optimizer state
    return sum(size for pointer, size in storages.items() if pointer not in weights) / batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["vit_l16", "lookupvit_l16", "vit_h14", "lookupvit_h14"])
    parser.add_argument("--grid", type=int, default=5)
    parser.add_argument("--batch", type=int, default=2)
    args = parser.parse_args()
    torch.set_grad_enabled(True)
    print("| model | grad ckpt | weights + grads + AdamW (GB) | saved for backward per image (MB) | batch per 80 GB GPU under DDP |")
    print("|---|---|---|---|---|")
    for name in args.models:
        grid = args.grid if name.startswith("lookupvit") else None
        with torch.device("meta"):
            states = 16 * sum(p.numel() for p in create_model(name).parameters())
        for checkpointing in (False, True):
            per_image = saved_bytes_per_image(name, grid, checkpointing, args.batch)
            fits = int((GPU_BYTES * HEADROOM - states) // per_image)
            label = f"{name} {grid}x{grid}" if grid else name
            print(f"| {label} | {'yes' if checkpointing else 'no'} | {states / 1e9:.1f} | {per_image / 1e6:.0f} | {fits} |", flush=True)


if __name__ == "__main__":
    main()
