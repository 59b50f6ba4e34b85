"""fp32 CPU Linear: torch's default BLAS against the oneDNN path that lookupvit.layers.Linear takes in inference.

Prints GFLOP/s of every B/16 Linear shape at batch 1 and 16 (224 px, 5x5 grid), then whole-model
inference time of ViT-B/16 and LookupViT-B/16 with the oneDNN path on and off (and the speedup
ratio each way). Weights rotate through 64 MB of copies, twice this machine's 32 MB L3, as a 550 MB
model's weights would; on a CPU with a larger cache, raise WEIGHT_BYTES. Blocks of calls
alternate between the backends, so load from elsewhere on the machine hits both.

    python benchmarks/linear_backends.py [--rounds 3]
"""

import argparse
import itertools
import statistics
import time

import torch
import torch.nn.functional as F

import lookupvit.layers
from lookupvit.cli import positive_int
from lookupvit.models.registry import create_model

DIM = 768
WEIGHT_BYTES = 64_000_000
LOOKUP_TOKENS, COMPRESSED_TOKENS = 196, 25
SHAPES = {  # name: (tokens per image, in features, out features)
    "ViT / compressed qkv": (None, DIM, 3 * DIM),
    "attention proj": (None, DIM, DIM),
    "MLP fc1": (None, DIM, 4 * DIM),
    "MLP fc2": (None, 4 * DIM, DIM),
    "lookup MLP fc1": (LOOKUP_TOKENS, DIM, DIM // 2),
    "lookup MLP fc2": (LOOKUP_TOKENS, DIM // 2, DIM),
}


def seconds_per_call(call, reps: int) -> float:
    call()
    start = time.perf_counter()
    for _ in range(reps):
        call()
    return (time.perf_counter() - start) / reps


def backend_rates(rows: int, fan_in: int, fan_out: int, rounds: int) -> dict[str, float]:
    """GFLOP/s of one Linear shape on each backend, weights rotating through copies larger than the caches."""
    inputs = torch.randn(rows, fan_in)
    weights = [torch.randn(fan_out, fan_in) for _ in range(max(2, WEIGHT_BYTES // (4 * fan_in * fan_out)))]
    bias = torch.randn(fan_out)
    calls = {
        "blas": lambda weight: F.linear(inputs, weight, bias),
        "onednn": lambda weight: torch.ops.mkldnn._linear_pointwise(inputs, weight, bias, "none", [], ""),
    }
    reps = max(3, 20_000 // rows)
    times: dict[str, list[float]] = {name: [] for name in calls}
    with torch.inference_mode():
        for _ in range(rounds):
            for name, linear in calls.items():
                rotation = itertools.cycle(weights)
                times[name].append(seconds_per_call(lambda linear=linear, rotation=rotation: linear(next(rotation)), reps))
    flops = 2 * rows * fan_in * fan_out
    return {name: flops / statistics.median(values) / 1e9 for name, values in times.items()}


def linear_rows(batch: int, rounds: int) -> None:
    for name, (tokens, fan_in, fan_out) in SHAPES.items():
        token_counts = [tokens] if tokens else [LOOKUP_TOKENS, COMPRESSED_TOKENS]  # ViT's rows, then LookupViT's
        for count in token_counts:
            rows = batch * count
            rate = backend_rates(rows, fan_in, fan_out, rounds)
            print(f"| {batch} | {name} | {rows} x {fan_in} -> {fan_out} | {rate['blas']:.0f} | {rate['onednn']:.0f} | {rate['onednn'] / rate['blas']:.2f}x |", flush=True)


def model_rows(batch: int, rounds: int) -> None:
    torch.manual_seed(0)
    images = torch.randn(batch, 3, 224, 224)
    models = {"ViT-B/16": (create_model("vit_b16").eval(), {}), "LookupViT-B/16 5x5": (create_model("lookupvit_b16").eval(), {"grid": 5})}
    reps = 10 if batch == 1 else 2
    milliseconds: dict[str, tuple[float, float]] = {}
    for name, (model, kwargs) in models.items():
        times = {True: [], False: []}
        try:
            with torch.inference_mode():
                for _ in range(rounds):
                    for use_onednn in (False, True):
                        lookupvit.layers._HAS_ONEDNN_LINEAR = use_onednn
                        times[use_onednn].append(seconds_per_call(lambda model=model, kwargs=kwargs: model(images, **kwargs), reps))
        finally:
            lookupvit.layers._HAS_ONEDNN_LINEAR = True
        blas, onednn = (1000 * statistics.median(times[key]) for key in (False, True))
        milliseconds[name] = (blas, onednn)
        print(f"| {batch} | {name} | {blas:.0f} | {onednn:.0f} | {blas / onednn:.2f}x |", flush=True)
    (vit_blas, vit_onednn), (lookup_blas, lookup_onednn) = milliseconds.values()
    print(f"| {batch} | LookupViT speedup over ViT | {vit_blas / lookup_blas:.2f}x | {vit_onednn / lookup_onednn:.2f}x | |", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=positive_int, default=3, help="alternating blocks per backend (median reported)")
    args = parser.parse_args(argv)
    if not torch.backends.mkldnn.is_available():
        raise SystemExit("this torch build has no oneDNN: there is nothing to compare")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads\n")
    print("| batch | Linear | rows x in -> out | default BLAS GFLOP/s | oneDNN GFLOP/s | oneDNN / BLAS |\n|---|---|---|---|---|---|")
    for batch in (1, 16):
        linear_rows(batch, args.rounds)
    print("\n| batch | model (224 px, fp32 inference) | default BLAS ms | oneDNN Linear ms | speedup |\n|---|---|---|---|---|")
    for batch in (1, 16):
        model_rows(batch, args.rounds)


if __name__ == "__main__":
    main()
