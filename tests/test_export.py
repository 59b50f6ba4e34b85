"""ONNX export and torch.compile: the fast deployment paths must compute what eager PyTorch computes."""

import pytest
import torch

from lookupvit import create_model
from lookupvit.runtime import compile_model

onnxruntime = pytest.importorskip("onnxruntime", reason="ONNX checks need lookupvit[onnx]")


@pytest.mark.parametrize("name,grid", [("lookupvit_nano4", (3, 3)), ("lookupvit_nano4", (2, 5)), ("vit_nano4", None)])
def test_onnx_export_matches_eager_at_any_batch(tmp_path, name, grid):
    from lookupvit.export import export_onnx

    torch.manual_seed(0)
    model = create_model(name).eval()
    path = tmp_path / "model.onnx"
    error = export_onnx(model, path, grid=grid)
    assert error is not None and error < 1e-4
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    kwargs = {"grid": grid} if grid else {}
    for batch in (1, 5):  # the batch dimension stays dynamic
        images = torch.randn(batch, 1, 28, 28)
        (logits,) = session.run(["logits"], {"images": images.numpy()})
        with torch.no_grad():
            expected = model(images, **kwargs)
        torch.testing.assert_close(torch.from_numpy(logits), expected, rtol=1e-4, atol=1e-4 * expected.abs().max().item())


def test_compiled_model_keeps_one_graph_per_grid_and_matches_eager():
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = create_model("lookupvit_nano4").eval()
    compiled = compile_model(model, num_grids=3, backend="aot_eager")
    images = torch.randn(4, 1, 28, 28)
    counters = torch._dynamo.utils.counters
    with torch.no_grad():
        for grid in (2, 3, 5, 3, 2, 5):
            torch.testing.assert_close(compiled(images, grid=grid), model(images, grid=grid), rtol=1e-5, atol=1e-5)
    assert counters["stats"]["unique_graphs"] == 3  # a graph per grid, reused on every later call
    assert not counters["graph_break"]  # the whole forward is one graph


def test_export_refuses_a_grid_for_a_model_without_one(tmp_path):
    from lookupvit.export import export_onnx

    with pytest.raises(ValueError, match="grid only applies to LookupViT"):
        export_onnx(create_model("vit_nano4"), tmp_path / "m.onnx", grid=3)
