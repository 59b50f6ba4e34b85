"""What every resumable experiment suite shares: the main job's training recipe, and results written one JSON
per experiment as each finishes."""

from __future__ import annotations

import dataclasses
import json
import os
import platform
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from ..files import atomic_write
from ..runtime import cpu_model, pick_device
from ..training.config import TrainConfig

# configs/fashion-mnist.toml's augmentation: flips only (heavier augmentation costs accuracy at these budgets)
FLIPS_ONLY = {"translate": 0.0, "rotate": 0.0, "shear": 0.0, "scale": 0.0, "erase": 0.0, "brightness": 0.0, "contrast": 0.0}


def main_job_recipe(**settings) -> TrainConfig:
    """The main job's optimisation recipe (configs/fashion-mnist.toml), with the model, data and budget in `settings`,
    so every suite's models train alike and a comparison differs only in what it compares."""
    recipe = dict(batch_size=64, lr=1.5e-3, warmup_epochs=0.3, weight_decay=0.05, label_smoothing=0.0, amp="bf16", augment=dict(FLIPS_ONLY))
    return TrainConfig(**{**recipe, **settings})


def write_json(path: Path, value: object) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(value, indent=1)))


def claim_folder(out: Path, manifest: dict, what: str, defaults: dict | None = None) -> None:
    """Record the suite's settings in out/budget.json, refusing a folder that holds results of other settings.

    `defaults`: settings added after some folders were written; a folder without one ran at its default.
    """
    path = out / "budget.json"
    if path.exists():
        stored = {**(defaults or {}), **json.loads(path.read_text())}
        if json.loads(json.dumps(stored)) != json.loads(json.dumps(manifest)):
            raise ValueError(f"{out} holds results of {what} ({path}); use another --out folder")
    write_json(path, manifest)


def open_suite(budgets: dict, budget_name: str, out: str | Path, device_name: str, **settings) -> tuple[object, Path, torch.device]:
    """A suite's budget, its results folder (claimed for this budget and any other `settings`) and its device."""
    if budget_name not in budgets:
        raise ValueError(f"unknown budget {budget_name!r}; choose one of {', '.join(budgets)}")
    budget, out = budgets[budget_name], Path(out)
    out.mkdir(parents=True, exist_ok=True)
    what = "another budget" + "".join(f" or {name}" for name in settings)
    defaults = {field.name: field.default for field in dataclasses.fields(budget) if field.default is not dataclasses.MISSING}
    claim_folder(out, {"budget": budget_name, **dataclasses.asdict(budget), **settings}, what, defaults)
    return budget, out, pick_device(device_name)


def run_each(items: Sequence, results: Path, describe: Callable[[object], str], run: Callable[[object], dict], device: torch.device) -> None:
    """run(item) for every item (with a `name`) whose results/<name>.json is missing, writing it as soon as it is known,
    so a killed suite loses at most the item in flight and a rerun skips what is done."""
    results.mkdir(parents=True, exist_ok=True)
    for index, item in enumerate(items, 1):
        path = results / f"{item.name}.json"
        if path.exists():
            print(f"[{index}/{len(items)}] {item.name}: done earlier, skipped")
            continue
        print(f"[{index}/{len(items)}] {item.name}: {describe(item)}", flush=True)
        result = run(item)
        result["hardware"] = {"cpu_count": os.cpu_count(), "machine": platform.machine(), "processor": cpu_model(),
                             "torch": torch.__version__, "device": str(device)}  # fmt: skip
        write_json(path, result)


def written_by(out: Path, command: str, hardware: dict) -> str:
    """A report's last line: the command (with the folder's budget) and the machine that wrote its results."""
    budget = json.loads((out / "budget.json").read_text())["budget"]
    return f"Written by `{command} --budget {budget}` on {hardware['processor']} ({hardware['cpu_count']} cores), torch {hardware['torch']}."


def eval_row(result: dict, grid: int | None) -> dict:
    """A result's evaluation row at a compressed grid; models without one (ViT, the baselines) have a single row."""
    rows = result["eval"]
    if rows[0]["grid"] is None:
        return rows[0]
    return next(r for r in rows if r["grid"] == [grid, grid])


def top1(result: dict, grid: int | None) -> float:
    """Test top-1 in % of the head the experiment trained, at `grid`."""
    return 100 * eval_row(result, grid)[result["head"]]["top1"]
