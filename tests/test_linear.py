"""The Linear layer's oneDNN fast path (fp32 CPU inference) against a float64 product, and when it must stay off.

Not skipped without oneDNN: the pinned CPU torch has it, and a build that lacks it should fail here
rather than silently lose the fast path.
"""

import contextlib

import pytest
import torch
import torch.autograd.forward_ad as fwAD
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode

from lookupvit.layers import Linear, _onednn_linear_applies
from lookupvit.models.registry import create_model

# torch.func and torch.jit.trace touch torch.jit, which warns that it is deprecated; it is still in use, so still covered
pytestmark = pytest.mark.filterwarnings(r"ignore:`torch\.jit\.\w+` is deprecated:DeprecationWarning")

@contextlib.contextmanager
def onednn_switched_off():
    # torch.backends.mkldnn.flags() would also touch the TF32 switch and warn about it
    previous = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = False
    try:
        yield
    finally:
        torch.backends.mkldnn.enabled = previous


def ops_called(fn) -> set[str]:
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    return {event.name for event in prof.events()}


def reference(layer: Linear, x: torch.Tensor) -> torch.Tensor:
    out = x.double() @ layer.weight.double().T
    return out if layer.bias is None else out + layer.bias.double()


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", [(7, 24), (3, 5, 24), (2, 3, 4, 24), (0, 24)])
def test_fast_path_matches_float64_product(shape, bias):
    torch.manual_seed(0)
    layer = Linear(24, 40, bias=bias)
    x = torch.randn(shape)
    with torch.inference_mode():
        assert _onednn_linear_applies(x, layer.weight)
        out = layer(x)
    assert out.shape == (*shape[:-1], 40) and out.dtype == torch.float32
    torch.testing.assert_close(out.double(), reference(layer, x), rtol=1e-5, atol=1e-5)


def test_fast_path_takes_non_contiguous_inputs():
    torch.manual_seed(0)
    layer = Linear(24, 40)
    x = torch.randn(3, 24, 5).transpose(1, 2)  # (3, 5, 24), last dim strided
    with torch.no_grad():
        torch.testing.assert_close(layer(x).double(), reference(layer, x), rtol=1e-5, atol=1e-5)


def test_fast_path_runs_onednn_and_the_other_cases_do_not():
    layer = Linear(24, 40)
    x = torch.randn(5, 24)

    def under(context):
        def call():
            with context:
                layer(x)

        return call

    assert "mkldnn::_linear_pointwise" in ops_called(under(torch.inference_mode()))
    for name, context in {
        "grad enabled (training)": torch.enable_grad(),
        "bf16 autocast": torch.autocast("cpu", dtype=torch.bfloat16),
        "oneDNN switched off": onednn_switched_off(),
    }.items():
        with torch.no_grad() if name != "grad enabled (training)" else torch.enable_grad():
            called = ops_called(under(context))
        assert "mkldnn::_linear_pointwise" not in called, name
        assert "aten::linear" in called, name
    assert not _onednn_linear_applies(x.double(), layer.weight.double())


def test_wrong_input_width_gets_the_plain_shape_error_and_1d_inputs_work():
    layer = Linear(24, 40)
    with torch.inference_mode():
        with pytest.raises(RuntimeError, match="cannot be multiplied"):
            layer(torch.randn(5, 23))
        vector = torch.randn(24)
        torch.testing.assert_close(layer(vector).double(), reference(layer, vector), rtol=1e-5, atol=1e-5)


def test_forward_mode_ad_and_func_transforms_get_real_tangents_without_grad_mode():
    torch.manual_seed(0)
    layer = Linear(24, 40)
    x, tangent = torch.randn(5, 24), torch.randn(5, 24)
    expected = tangent @ layer.weight.T  # d(xW^T + b) = dx W^T
    with torch.no_grad():
        _, jvp_tangent = torch.func.jvp(layer, (x,), (tangent,))
        with fwAD.dual_level():
            dual_tangent = fwAD.unpack_dual(layer(fwAD.make_dual(x, tangent))).tangent
    torch.testing.assert_close(jvp_tangent, expected)
    torch.testing.assert_close(dual_tangent, expected)


def test_flop_counters_and_tracers_see_the_standard_op():
    layer = Linear(24, 40)
    x = torch.randn(5, 24)
    with torch.no_grad():
        with FlopCounterMode(display=False) as counter:
            layer(x)
        traced = torch.jit.trace(layer, (x,))
        exported = torch.export.export(layer, (x,))
    assert counter.get_total_flops() == 2 * 5 * 24 * 40
    assert "aten::linear" in str(traced.graph)
    assert "_linear_pointwise" not in str(traced.graph) and "_linear_pointwise" not in str(exported.graph)


def test_training_gradients_are_the_plain_linear_ones():
    torch.manual_seed(0)
    layer = Linear(24, 40)
    x = torch.randn(6, 24, requires_grad=True)
    layer(x).square().sum().backward()
    plain = torch.nn.Linear(24, 40)
    plain.load_state_dict(layer.state_dict())
    x_plain = x.detach().clone().requires_grad_()
    plain(x_plain).square().sum().backward()
    torch.testing.assert_close(layer.weight.grad, plain.weight.grad)
    torch.testing.assert_close(x.grad, x_plain.grad)


@pytest.mark.parametrize("name", ["lookupvit_ti16", "vit_ti16"])
def test_model_inference_matches_the_plain_path(name):
    torch.manual_seed(0)
    model = create_model(name, img_size=96).eval()
    images = torch.randn(2, 3, 96, 96)
    with torch.inference_mode():
        fast = model(images)
        with onednn_switched_off():
            plain = model(images)
    torch.testing.assert_close(fast, plain, rtol=1e-4, atol=1e-5)
