"""Caption generation speed: the decoder on M compressed tokens (LookupViT) against all N patch tokens (ViT).

Reads the captioners a caption run trained (`lookupvit caption run --out DIR`: DIR/runs/<setting>/captioner.safetensors)
and times encoder + decoder on the run's validation canvases: latency per image at batch 1 and
throughput at batch 16, greedy and beam 4, the settings interleaved call by call so load elsewhere
on a shared machine hits them alike. Real trained models, so each caption has its real length.

    python benchmarks/caption_speed.py runs/captioning
    python benchmarks/caption_speed.py runs/captioning --reps 5 --beams 1 4
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from lookupvit.benchmark import median_times
from lookupvit.data.captions import layout_caption_paths, read_coco_captions
from lookupvit.runtime import configure_threads, cpu_model, pick_device
from lookupvit.training.captioning import encoder_grid, generated_ids, load_captioner


def settings_of(run: Path) -> list[str]:
    """The run's captioner settings, the ViT baseline first (the ratios' reference)."""
    names = sorted(path.parent.name for path in (run / "runs").glob("*/captioner.safetensors"))
    if "vit" not in names:
        raise SystemExit(f"{run}/runs has no vit/captioner.safetensors: run `lookupvit caption run --out {run}` first")
    return ["vit"] + [name for name in names if name != "vit"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="a `lookupvit caption run` output folder")
    parser.add_argument("--beams", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()
    configure_threads(args.threads)
    device = pick_device(args.device)
    names = settings_of(args.run)
    captioners = {name: load_captioner(args.run / "runs" / name / "captioner.safetensors", device) for name in names}
    paths = [entry.path for entry in read_coco_captions(*layout_caption_paths(args.run / "layout", "val")).images[:16]]
    images = next(iter(captioners.values())).inputs.read(paths).to(device)
    gflops = {}
    for name in names:
        result = args.run / "results" / f"{name}.json"
        gflops[name] = json.loads(result.read_text())["gflops"]["total"] if result.exists() else float("nan")
    print(f"{device} ({cpu_model()}), torch {torch.__version__}, {torch.get_num_threads()} threads; median of {args.reps} calls, interleaved")
    print("| setting | beam | ms / image, batch 1 | images/s, batch 16 | speedup vs ViT (batch 1 / 16) | GFLOPs per greedy caption | FLOPs ratio |")
    print("|---|---|---|---|---|---|---|")
    for beam in args.beams:
        calls = {}
        for name, trained in captioners.items():
            grid = encoder_grid(trained.captioner.encoder.model, trained.grid, trained.image_size)
            for batch in (1, 16):
                calls[(name, batch)] = lambda t=trained, g=grid, b=batch: generated_ids(t.captioner, images[:b], g, beam, 0.6)
        with torch.inference_mode():
            times = median_times(calls, device, args.reps)
        for name in names:
            single, batched = times[(name, 1)], 16 / times[(name, 16)]
            vit_single, vit_batched = times[("vit", 1)], 16 / times[("vit", 16)]
            print(
                f"| {name} | {beam} | {1000 * single:.1f} | {batched:.1f} | {vit_single / single:.2f}x / {batched / vit_batched:.2f}x "
                f"| {gflops[name]:.3f} | {gflops['vit'] / gflops[name]:.2f}x |"
            )


if __name__ == "__main__":
    main()
