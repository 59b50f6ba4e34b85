"""The table behind "choose a grid for your budget": accuracy, GFLOPs and latency of one trained model per grid.

    python benchmarks/budget_table.py runs/fashion-mnist/best.safetensors

Accuracy on the Fashion-MNIST test set (averaged heads), GFLOPs per image (analytic, 2 x MACs), and
the median forward time at batch 1 and 256 on this device, measured by the same dial that
`lookupvit predict --budget-ms` uses (models/budget.py).
"""

from __future__ import annotations

import argparse

import torch

from lookupvit import analytic_flops, grid_for_milliseconds
from lookupvit.data import load_fashion_mnist
from lookupvit.data.loader import dataset_batches
from lookupvit.evaluation.accuracy import evaluate, grid_label
from lookupvit.models.budget import candidate_grids
from lookupvit.runtime import cpu_model
from lookupvit.training.report import load_trained


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="a model file written by `lookupvit train` on Fashion-MNIST")
    args = parser.parse_args()
    device = torch.device("cpu")
    model, normalization, _ = load_trained(args.model, device)
    test = load_fashion_mnist("test")
    grids = candidate_grids(model.config)
    rows = evaluate(model, dataset_batches(test, normalization, 500), grids, device)
    _, batch_1 = grid_for_milliseconds(model, normalization(test.images[:1]), milliseconds=1e9, reps=15)
    _, batch_256 = grid_for_milliseconds(model, normalization(test.images[:256]), milliseconds=1e9, reps=5)
    cpu = cpu_model()
    print(f"{args.model}, {cpu}, {torch.get_num_threads()} threads, torch {torch.__version__}\n")
    print("| grid | GFLOPs / image | ms, batch 1 | ms, batch 256 | test top-1 (%) |")
    print("|---|---|---|---|---|")
    for grid, row in zip(grids, rows):
        gflops = analytic_flops(model.config, grid=grid) / 1e9
        print(f"| {grid_label(grid)} | {gflops:.3f} | {batch_1[grid]:.2f} | {batch_256[grid]:.1f} | {100 * row['average']['top1']:.2f} |")


if __name__ == "__main__":
    main()
