"""Grad checkpointing (blocks recomputed in backward) changes memory, never the numbers."""

import pytest
import torch

from lookupvit import create_model

SMALL = {"embed_dim": 32, "depth": 3, "num_heads": 2, "num_classes": 7, "drop_path_rate": 0.3}


def loss_and_grads(model: torch.nn.Module, images: torch.Tensor, grid) -> tuple[torch.Tensor, dict, int]:
    """Loss, parameter gradients, and the bytes autograd kept for backward."""
    saved_bytes = 0

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        nonlocal saved_bytes
        saved_bytes += tensor.numel() * tensor.element_size()
        return tensor

    model.zero_grad(set_to_none=True)
    torch.manual_seed(123)  # the same stochastic-depth draws for both runs
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        logits = model(images, grid=grid) if grid else model(images)
    loss = logits.square().mean()
    loss.backward()
    grads = {name: param.grad.clone() for name, param in model.named_parameters() if param.grad is not None}
    return loss.detach(), grads, saved_bytes


@pytest.mark.parametrize("name, grid", [("lookupvit_nano4", 3), ("vit_nano4", None), ("tokenlearner_nano4", None), ("perceiver_nano4", None)])
def test_recomputed_blocks_give_the_same_loss_and_gradients_and_keep_less(name, grid):
    torch.manual_seed(0)
    model = create_model(name, **SMALL).train()
    images = torch.randn(4, 1, 28, 28)
    plain_loss, plain_grads, plain_saved = loss_and_grads(model, images, grid)
    model.set_grad_checkpointing(True)
    loss, grads, saved = loss_and_grads(model, images, grid)
    assert torch.equal(loss, plain_loss)
    assert grads.keys() == plain_grads.keys() and len(grads) == len(list(model.parameters()))
    for key in grads:
        torch.testing.assert_close(grads[key], plain_grads[key], rtol=1e-5, atol=1e-7, msg=key)
    # Only block inputs (and the stem/head) are kept; the blocks' internals are recomputed.
    assert saved < plain_saved / 2, (saved, plain_saved)


def test_attention_maps_and_gradients_are_unchanged_by_recomputation():
    # Recomputation happens in backward, so the maps a backward recomputes must match the forward's,
    # and stochastic depth must replay the same masks there (SMALL has drop_path_rate > 0).
    model = create_model("lookupvit_nano4", **SMALL).train()
    images = torch.randn(4, 1, 28, 28)

    def run(checkpointing: bool):
        model.set_grad_checkpointing(checkpointing)
        model.zero_grad(set_to_none=True)
        torch.manual_seed(5)
        output = model.forward_features(images, grid=3, return_attention=True)
        (output.logits.square().sum() + sum(a.square().sum() for a in output.attention)).backward()
        return [a.detach() for a in output.attention], {name: p.grad.clone() for name, p in model.named_parameters()}

    plain_maps, plain_grads = run(False)
    maps, grads = run(True)
    assert len(maps) == len(plain_maps) == SMALL["depth"]
    for a, b in zip(plain_maps, maps):
        assert torch.equal(a, b)
    for name, grad in grads.items():
        torch.testing.assert_close(grad, plain_grads[name], rtol=1e-5, atol=1e-7, msg=name)


def test_no_recomputation_without_gradients(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("checkpoint() called")

    monkeypatch.setattr(torch.utils.checkpoint, "checkpoint", refuse)
    model = create_model("lookupvit_nano4", **SMALL).eval()
    model.set_grad_checkpointing(True)
    images = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        model(images, grid=2)
    with torch.inference_mode():
        model(images, grid=2)
    with pytest.raises(AssertionError, match="checkpoint"):  # and with gradients it is used
        model(images, grid=2)
