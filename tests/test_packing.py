"""pack_for_inference: weights laid out once for the CPU inference kernels, and never used where they would be wrong.

Every packed result is compared with the same model unpacked (and the bf16 Linear with a float64 product);
the packed copies must follow in-place weight updates, stay out of autograd, state dicts, deep copies and
pickles, and leave training exactly as it was. Not skipped on a CPU without bf16 oneDNN kernels: the bf16 tests fail
there, rather than silently losing the fast path (the CI and session hosts all have them).
"""

import copy
import io

import pytest
import torch
from torch.profiler import ProfilerActivity, profile

from lookupvit import create_model, pack_for_inference
from lookupvit.layers import BidirectionalCrossAttention, Linear, _onednn_linear_applies
from lookupvit.models.serialization import load_model, save_model



def float64_product(layer: Linear, x: torch.Tensor) -> torch.Tensor:
    return x.double() @ layer.weight.double().T + layer.bias.double()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("rows", [0, 1, 9, 200])
def test_packed_linear_matches_a_float64_product(dtype, rows):
    torch.manual_seed(0)
    layer = Linear(64, 96).to(dtype)
    x = torch.randn(rows, 64, dtype=dtype)
    with torch.inference_mode():
        plain = layer(x)
        pack_for_inference(layer)
        assert layer._packed is not None and layer._packed.valid_for(layer.weight)
        packed = layer(x)
    assert packed.dtype == dtype and packed.shape == (rows, 96)
    tolerance = {"rtol": 1e-5, "atol": 1e-5} if dtype == torch.float32 else {"rtol": 2e-2, "atol": 5e-2}
    torch.testing.assert_close(packed.double(), float64_product(layer, x), **tolerance)
    torch.testing.assert_close(packed, plain, **tolerance)


def test_bf16_inference_runs_onednn_with_the_bias_inside():
    layer = Linear(64, 96).to(torch.bfloat16)
    x = torch.randn(5, 64, dtype=torch.bfloat16)
    assert _onednn_linear_applies(x, layer.weight) is False  # grad mode on: the plain op
    with torch.no_grad():
        assert _onednn_linear_applies(x, layer.weight)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            layer(x)
    names = {event.name for event in prof.events()}
    assert "mkldnn::_linear_pointwise" in names and "aten::addmm" not in names


def test_packed_weights_follow_in_place_updates_and_moves():
    torch.manual_seed(0)
    layer = pack_for_inference(Linear(32, 16).to(torch.bfloat16))
    x = torch.randn(4, 32, dtype=torch.bfloat16)
    with torch.no_grad():
        layer.weight.mul_(-2.0)  # what an optimizer step or load_state_dict does: bumps the version counter
        assert not layer._packed.valid_for(layer.weight)
        torch.testing.assert_close(layer(x).double(), float64_product(layer, x), rtol=2e-2, atol=5e-2)
        layer.load_state_dict({"weight": torch.ones(16, 32), "bias": torch.zeros(16)})
        torch.testing.assert_close(layer(x).float(), x.float().sum(-1, keepdim=True).expand(4, 16), rtol=2e-2, atol=5e-2)
        layer.float()  # new storage: the bf16 packing no longer applies
        torch.testing.assert_close(layer(x.float()), x.float() @ layer.weight.T + layer.bias)


def test_training_after_packing_is_the_unpacked_training():
    torch.manual_seed(0)
    model = create_model("lookupvit_nano4", num_classes=10)
    reference = copy.deepcopy(model)
    pack_for_inference(model)
    images = torch.randn(3, 1, 28, 28)
    model(images, grid=3).logsumexp(-1).sum().backward()
    reference(images, grid=3).logsumexp(-1).sum().backward()
    for (name, parameter), reference_parameter in zip(model.named_parameters(), reference.parameters()):
        torch.testing.assert_close(parameter.grad, reference_parameter.grad, msg=name)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("reassociate", [True, False])
def test_packed_lookupvit_gives_the_unpacked_logits(dtype, reassociate):
    torch.manual_seed(0)
    model = create_model("lookupvit_nano4", num_classes=10).eval().to(dtype)
    for module in model.modules():
        if isinstance(module, BidirectionalCrossAttention):
            module.reassociate = reassociate
    images = torch.randn(4, 1, 28, 28)
    with torch.inference_mode():
        plain = {grid: model(images, grid=grid) for grid in (2, 5)}
        pack_for_inference(model)
        packed = {grid: model(images, grid=grid) for grid in (2, 5)}
    tolerance = {"rtol": 1e-5, "atol": 1e-5} if dtype == torch.float32 else {"rtol": 0.0, "atol": 0.1}
    for grid in plain:
        torch.testing.assert_close(packed[grid], plain[grid], **tolerance)


def test_head_major_projection_is_the_weight_by_head_and_not_used_with_gradients():
    torch.manual_seed(0)
    attention = BidirectionalCrossAttention(48, 4)
    attention.pack_weights()
    weight = attention.infuse_proj.weight  # (D, h d)
    by_head = attention._infuse_by_head.derived  # (h, d, D)
    for head in range(4):
        torch.testing.assert_close(by_head[head], weight[:, 12 * head : 12 * head + 12].T)
    values = torch.randn(2, 48)
    assert attention._infuse_weight_by_head(values).data_ptr() == weight.data_ptr()  # grad mode: the parameter's view
    with torch.no_grad():
        assert attention._infuse_weight_by_head(values) is by_head


def test_packed_models_copy_pickle_and_save_like_unpacked_ones(tmp_path):
    torch.manual_seed(0)
    model = pack_for_inference(create_model("lookupvit_nano4", num_classes=10).eval().to(torch.bfloat16))
    images = torch.randn(2, 1, 28, 28)
    assert set(model.state_dict()) == set(create_model("lookupvit_nano4", num_classes=10).state_dict())
    duplicate = copy.deepcopy(model)
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    unpickled = torch.load(buffer, weights_only=False)
    save_model(model, tmp_path / "model.safetensors")
    loaded = load_model(tmp_path / "model.safetensors").eval()
    with torch.inference_mode():
        expected = model(images)
        for other in (duplicate, unpickled):
            assert all(layer._packed is None for layer in other.modules() if isinstance(layer, Linear))
            torch.testing.assert_close(other(images), expected, rtol=0.0, atol=0.1)
        torch.testing.assert_close(loaded.to(torch.bfloat16)(images), expected, rtol=0.0, atol=0.1)
