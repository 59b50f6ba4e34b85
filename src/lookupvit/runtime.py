"""Device and CPU-thread selection shared by every command."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch
from torch import nn


def pick_device(name: str | None = None) -> torch.device:
    """`name` if given ("cpu", "cuda", "cuda:1"), else CUDA when available, else CPU."""
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} was asked for but CUDA is not available here; use --device cpu")
    return device


def available_cores() -> int:
    """CPU cores this process may run on: its affinity mask where the OS has one (Linux), else all of them."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def automatic_threads() -> int:
    """Torch threads for one process: its cores shared among the processes torchrun started on this machine.

    torchrun sets LOCAL_WORLD_SIZE; each of its processes gets an equal share, at least one thread.
    """
    local_processes = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    return max(1, available_cores() // local_processes)


def configure_threads(requested: int = 0) -> int:
    """Set torch's intra-op threads to `requested` (0: `automatic_threads()`); returns the number set.

    More threads than free cores is much slower, not faster: with another job on 2 cores a training
    step took 5.9 s at torch's default and 0.12 s with one thread.
    """
    if isinstance(requested, bool) or not isinstance(requested, int) or requested < 0:
        raise ValueError(f"threads must be a whole number >= 0 (0: automatic), got {requested!r}")
    threads = requested or automatic_threads()
    torch.set_num_threads(threads)
    return threads


def compile_model(model: nn.Module, num_grids: int = 1, backend: str = "inductor") -> nn.Module:
    """torch.compile with room for one cached graph per compressed grid.

    The grid fixes every token count, so each grid gets its own static graph (a few seconds of
    compile each, then no recompiles). Dynamo keeps 8 graphs per function by default and falls back
    to eager beyond that; multi-resolution training over more grids raises the limit instead.
    """
    limit = torch._dynamo.config.recompile_limit
    torch._dynamo.config.recompile_limit = max(limit, num_grids + 1)
    # Inductor's own random numbers differ from eager's: with this, stochastic depth draws the same
    # masks compiled or not, so compile stays an execution setting that a resumed run may change.
    torch._inductor.config.fallback_random = True
    return torch.compile(model, backend=backend)


DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def parse_dtype(name: str) -> torch.dtype:
    if name not in DTYPES:
        raise ValueError(f"unknown dtype {name!r}; choose from {', '.join(DTYPES)}")
    return DTYPES[name]


def parse_precision(name: str) -> tuple[torch.dtype, bool]:
    """"bf16" is autocast to bfloat16; "bf16-weights" the model itself cast to it. -> (dtype, cast_weights)"""
    dtype_name = name.removesuffix("-weights")
    return parse_dtype(dtype_name), dtype_name != name


def cpu_model() -> str:
    """The CPU's model name (Linux's /proc/cpuinfo), for speed figures: they mean little without it."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown CPU"


def device_name(device: torch.device) -> str:
    """The accelerator's or CPU's name, with the CPU's bf16 matrix instructions (AMX, AVX-512 bf16): bf16 speed depends on them."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpuinfo = Path("/proc/cpuinfo")
    flags = set()
    if cpuinfo.is_file():
        flags = next((set(line.split(":", 1)[1].split()) for line in cpuinfo.read_text().splitlines() if line.startswith("flags")), set())
    bf16 = "AMX bf16" if "amx_bf16" in flags else "AVX-512 bf16" if "avx512_bf16" in flags else "no bf16 instructions"
    return f"{cpu_model()}, {bf16}"
