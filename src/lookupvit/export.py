"""ONNX export of a model at a fixed compressed grid, checked against eager PyTorch with onnxruntime."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
from torch import Tensor, nn

from .models import LookupViT


class FixedGrid(nn.Module):
    """LookupViT with its grid (and head) frozen, so the exported graph takes images only.

    A graph serves one grid: the resize matrix and every token count are constants in it. Export one
    file per grid for several compute settings.
    """

    def __init__(self, model: LookupViT, grid: tuple[int, int], head: str = "average"):
        super().__init__()
        self.model, self.grid, self.head = model, grid, head

    def forward(self, images: Tensor) -> Tensor:
        return self.model(images, grid=self.grid, head=self.head)


def _require(module: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise RuntimeError(f"ONNX export needs the {module} package: pip install 'lookupvit[onnx]'")


def export_onnx(model: nn.Module, path: str | Path, grid: int | tuple[int, int] | None = None, image_size: tuple[int, int] | None = None, verify: bool = True) -> float | None:
    """Write `model` (eval mode, dynamic batch) to an ONNX file; returns the max relative error vs eager, when verified.

    LookupViT is exported at `grid` (default: its own default grid). With `verify` and onnxruntime
    installed, the file is run on random images and must match PyTorch to 1e-4 relative.
    """
    _require("onnx")
    _require("onnxscript")
    model, config = model.eval(), model.config
    height, width = image_size or config.img_size
    images = torch.randn(2, config.in_chans, height, width)
    if isinstance(model, LookupViT):
        model = FixedGrid(model, model.resolve_grid(grid, (height // config.patch_size, width // config.patch_size))).eval()
    elif grid is not None:
        raise ValueError(f"grid only applies to LookupViT, not {type(model).__name__}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    batch = torch.export.Dim("batch", min=1, max=4096)
    torch.onnx.export(model, (images,), str(path), input_names=["images"], output_names=["logits"], dynamic_shapes={"images": {0: batch}}, dynamo=True, verbose=False)
    if not verify or importlib.util.find_spec("onnxruntime") is None:
        return None
    return _compare_with_onnxruntime(model, path, torch.randn(3, config.in_chans, height, width))


def _compare_with_onnxruntime(model: nn.Module, path: Path, images: Tensor) -> float:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (exported,) = session.run(["logits"], {"images": images.numpy()})
    with torch.no_grad():
        expected = model(images)
    error = ((torch.from_numpy(exported) - expected).abs().max() / expected.abs().max()).item()
    if error > 1e-4:
        raise RuntimeError(f"the exported graph disagrees with PyTorch: max relative error {error:.2e} > 1e-4 ({path})")
    return error
